/**
 * The mapping between a ledger consent (`consent.grant` body, DESIGN.md §6) and a FHIR R4 `Consent`
 * (http://hl7.org/fhir/R4/consent.html, scope patient-privacy). `consentToFhir` shows a ledger consent as FHIR;
 * `consentFromFhir` turns a FHIR Consent into a grant body and refuses, listing every problem, whatever the
 * ledger form cannot express — it never drops a rule silently. On grant bodies the two are inverse:
 * `consentFromFhir(consentToFhir(r, o)).body` deep-equals `r.body`.
 *
 * Actors are identified by identifier, never by literal reference (a node's local ids mean nothing on
 * another node): organizations `urn:healthledger:org`, practitioners `urn:healthledger:org:<org>:practitioner`,
 * patients and proxies `urn:healthledger:patient` (network ids). A staff-role actor carries its role as
 * `actor.role` in `urn:healthledger:role` and, when limited to one organization, that organization's
 * identifier; every other actor has the role v3-ParticipationType IRCP (information recipient).
 */
import type { Coding, Consent, ConsentProvision as FhirProvision, ConsentProvisionActor, Organization, Patient, Reference } from '@medplum/fhirtypes';
import { HlError, type Issue } from '../kernel/index.js';
import { isResourceType } from '../fhir/index.js';
import {
  checkConsentGrantBody,
  purposesOfUse,
  sensitivityLabels,
  type ConsentActor,
  type ConsentGrantBody,
  type ConsentProvision,
  type ConsentRecord,
  type PurposeOfUse,
  type SensitivityLabel,
} from '../ledger/index.js';

/** The code systems and identifier systems of a ledger consent in FHIR form. */
export const ConsentSystem = {
  consentScope: 'http://terminology.hl7.org/CodeSystem/consentscope',
  loinc: 'http://loinc.org',
  actCode: 'http://terminology.hl7.org/CodeSystem/v3-ActCode',
  actReason: 'http://terminology.hl7.org/CodeSystem/v3-ActReason',
  participationType: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType',
  resourceTypes: 'http://hl7.org/fhir/resource-types',
  patient: 'urn:healthledger:patient',
  org: 'urn:healthledger:org',
  role: 'urn:healthledger:role',
} as const;

/** The extension (valueBoolean true) on a Consent whose patient actors are proxies (`ConsentGrantBody.proxy`). */
export const consentProxyExtensionUrl = 'https://healthledger.dev/fhir/StructureDefinition/consent-proxy';

/** The identifier system of the practitioners of organization `org`. */
export function practitionerSystem(org: string): string {
  return `urn:healthledger:org:${org}:practitioner`;
}
const practitionerSystemPattern = /^urn:healthledger:org:([^:]+):practitioner$/;

/** The display of a role actor's reference when the role is not limited to one organization. */
const anyOrganization = 'any organization';

const privacyScope: Coding = { system: ConsentSystem.consentScope, code: 'patient-privacy', display: 'Privacy Consent' };
const patientConsentCategory: Coding = { system: ConsentSystem.loinc, code: '59284-0', display: 'Patient Consent' };
const recipientRole: Coding = { system: ConsentSystem.participationType, code: 'IRCP', display: 'information recipient' };
const optIn: Coding = { system: ConsentSystem.actCode, code: 'OPTIN', display: 'opt-in' };
const optOut: Coding = { system: ConsentSystem.actCode, code: 'OPTOUT', display: 'opt-out' };

const patientReference = (id: string): Reference<Patient> => ({ type: 'Patient', identifier: { system: ConsentSystem.patient, value: id } });
const orgReference = (id: string): Reference<Organization> => ({ type: 'Organization', identifier: { system: ConsentSystem.org, value: id } });

function actorToFhir(actor: ConsentActor): ConsentProvisionActor {
  switch (actor.kind) {
    case 'org':
      return { role: { coding: [recipientRole] }, reference: orgReference(actor.id) };
    case 'practitioner':
      return { role: { coding: [recipientRole] }, reference: { type: 'Practitioner', identifier: { system: practitionerSystem(actor.org), value: actor.id } } };
    case 'role':
      return {
        role: { coding: [{ system: ConsentSystem.role, code: actor.role }] },
        reference: actor.org === undefined ? { type: 'Organization', display: anyOrganization } : orgReference(actor.org),
      };
    case 'patient':
      return { role: { coding: [recipientRole] }, reference: patientReference(actor.id) };
  }
}

function provisionToFhir(p: ConsentProvision): FhirProvision {
  const out: FhirProvision = { type: p.type };
  if (p.period !== undefined) {
    out.period = {};
    if (p.period.start !== undefined) out.period.start = p.period.start;
    if (p.period.end !== undefined) out.period.end = p.period.end;
  }
  if (p.actors !== undefined) out.actor = p.actors.map(actorToFhir);
  if (p.labels !== undefined) out.securityLabel = p.labels.map((code) => ({ system: ConsentSystem.actCode, code }));
  if (p.purposes !== undefined) out.purpose = p.purposes.map((code) => ({ system: ConsentSystem.actReason, code }));
  if (p.classes !== undefined) out.class = p.classes.map((code) => ({ system: ConsentSystem.resourceTypes, code }));
  if (p.provisions !== undefined) out.provision = p.provisions.map(provisionToFhir);
  return out;
}

/**
 * A ledger consent as a FHIR R4 Consent. `id` is the grant's tx id (64 hex digits, a valid FHIR id); status is
 * `inactive` when the consent is revoked or its top provision's period ended before `opts.atMs` (ms since
 * epoch), else `active`; `dateTime` is the grant time; the performer is the signer (the patient or a proxy).
 * Pure; the result passes `validateResource`.
 */
export function consentToFhir(record: ConsentRecord, opts: { atMs: number }): Consent {
  const { body } = record;
  const end = body.provision.period?.end;
  const ended = end !== undefined && opts.atMs > Date.parse(end);
  const consent: Consent = {
    resourceType: 'Consent',
    id: record.id,
    status: record.revokedAtMs !== null || ended ? 'inactive' : 'active',
    scope: { coding: [privacyScope] },
    category: [{ coding: [patientConsentCategory] }],
    patient: patientReference(body.patient),
    dateTime: new Date(record.grantedAtMs).toISOString(),
    performer: [patientReference(record.grantedBy)],
    policyRule: { coding: [body.provision.type === 'permit' ? optIn : optOut] },
    provision: provisionToFhir(body.provision),
  };
  if (body.proxy === true) consent.extension = [{ url: consentProxyExtensionUrl, valueBoolean: true }];
  return consent;
}

// --- FHIR → ledger --------------------------------------------------------------------------------------

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Consent elements that carry nothing a ledger consent needs, so they are accepted and left out. */
const ignoredConsentElements = new Set(['resourceType', 'id', 'meta', 'language', 'text', 'contained', 'identifier', 'dateTime', 'status', 'extension']);
/** Consent elements whose meaning the ledger form cannot hold. */
const inexpressibleConsentElements = new Set(['implicitRules', 'modifierExtension', 'organization', 'sourceAttachment', 'sourceReference', 'policy', 'verification']);
const ignoredProvisionElements = new Set(['id', 'extension']);
const inexpressibleProvisionElements = new Set(['modifierExtension', 'action', 'code', 'dataPeriod', 'data']);
/** Recursion guard for hostile input; the ledger's own (smaller) depth limit is reported by its check. */
const maxParseDepth = 16;
/** The R4 Consent.status codes that describe a policy (not 'rejected' or 'entered-in-error'). */
const policyStatuses = ['draft', 'proposed', 'active', 'inactive'] as const;

/** Collects every problem with a FHIRPath-like expression while reading a Consent. */
class ConsentReader {
  readonly issues: Issue[] = [];

  problem(expression: string, message: string): undefined {
    this.issues.push({ code: 'invalid', expression, message });
    return undefined;
  }

  object(value: unknown, at: string): Json | undefined {
    return isObject(value) ? value : this.problem(at, 'must be a JSON object');
  }

  list(value: unknown, at: string): unknown[] | undefined {
    return Array.isArray(value) && value.length > 0 ? value : this.problem(at, 'must be a non-empty array');
  }

  /** Reports members of `obj` that are neither read, ignored nor known to be inexpressible. */
  members(obj: Json, at: string, read: readonly string[], ignored: ReadonlySet<string>, inexpressible: ReadonlySet<string>): void {
    for (const key of Object.keys(obj)) {
      if (read.includes(key) || ignored.has(key)) continue;
      if (inexpressible.has(key)) this.problem(`${at}.${key}`, `${key} cannot be expressed in a ledger consent`);
      else this.problem(`${at}.${key}`, `unknown or unsupported element "${key}"`);
    }
  }

  /** The codings of a CodeableConcept, each checked to be an object. */
  codings(value: unknown, at: string): { coding: Json; at: string }[] {
    const cc = this.object(value, at);
    if (cc === undefined) return [];
    const list = this.list(cc.coding, `${at}.coding`);
    if (list === undefined) return [];
    return list.flatMap((c, i) => {
      const coding = this.object(c, `${at}.coding[${i}]`);
      return coding === undefined ? [] : [{ coding, at: `${at}.coding[${i}]` }];
    });
  }

  /** A Coding of `system` whose code is one of `codes`. */
  code<T extends string>(value: unknown, at: string, system: string, codes: readonly T[], what: string): T | undefined {
    const coding = this.object(value, at);
    if (coding === undefined) return undefined;
    if (coding.system !== system) return this.problem(`${at}.system`, `must be ${system}`);
    if (typeof coding.code !== 'string' || !(codes as readonly string[]).includes(coding.code)) {
      return this.problem(`${at}.code`, `must be ${what} (${codes.join(', ')})`);
    }
    return coding.code as T;
  }

  /** The identifier (system, value) of a Reference that identifies by identifier only. */
  identifier(ref: Json, at: string): { system: string; value: string } | undefined {
    if (ref.reference !== undefined) return this.problem(`${at}.reference`, 'a ledger consent identifies parties by identifier, not by literal reference');
    const id = this.object(ref.identifier, `${at}.identifier`);
    if (id === undefined) return undefined;
    if (typeof id.system !== 'string') return this.problem(`${at}.identifier.system`, 'must be a string');
    if (typeof id.value !== 'string') return this.problem(`${at}.identifier.value`, 'must be a string');
    return { system: id.system, value: id.value };
  }

  /** A patient network id from a Reference by identifier in `urn:healthledger:patient`. */
  patient(value: unknown, at: string): string | undefined {
    const ref = this.object(value, at);
    if (ref === undefined) return undefined;
    if (ref.type !== undefined && ref.type !== 'Patient') this.problem(`${at}.type`, 'must be Patient');
    const id = this.identifier(ref, at);
    if (id === undefined) return undefined;
    if (id.system !== ConsentSystem.patient) return this.problem(`${at}.identifier.system`, `must be ${ConsentSystem.patient}`);
    return id.value;
  }

  actor(value: unknown, at: string): ConsentActor | undefined {
    const a = this.object(value, at);
    if (a === undefined) return undefined;
    this.members(a, at, ['role', 'reference'], ignoredProvisionElements, new Set(['modifierExtension']));
    const roles = this.codings(a.role, `${at}.role`);
    const recipient = roles.some((r) => r.coding.system === ConsentSystem.participationType && r.coding.code === 'IRCP');
    const staffRoles = roles.filter((r) => r.coding.system === ConsentSystem.role);
    const ref = this.object(a.reference, `${at}.reference`);
    if (roles.length === 0 || ref === undefined) return undefined;
    if (recipient === (staffRoles.length > 0) || staffRoles.length > 1) {
      return this.problem(`${at}.role`, `must be either ${ConsentSystem.participationType} IRCP or one staff role in ${ConsentSystem.role}`);
    }
    const type = ref.type;
    const typeIs = (expected: string): boolean => {
      if (type === undefined || type === expected) return true;
      this.problem(`${at}.reference.type`, `must be ${expected} for this identifier system`);
      return false;
    };
    if (staffRoles.length === 1) {
      const role = staffRoles[0]!;
      if (typeof role.coding.code !== 'string') return this.problem(`${role.at}.code`, 'must be a staff role code');
      if (!typeIs('Organization')) return undefined;
      if (ref.identifier === undefined && ref.reference === undefined) return { kind: 'role', role: role.coding.code };
      const id = this.identifier(ref, `${at}.reference`);
      if (id === undefined) return undefined;
      if (id.system !== ConsentSystem.org) return this.problem(`${at}.reference.identifier.system`, `must be ${ConsentSystem.org} (the organization the role is limited to)`);
      return { kind: 'role', role: role.coding.code, org: id.value };
    }
    const id = this.identifier(ref, `${at}.reference`);
    if (id === undefined) return undefined;
    if (id.system === ConsentSystem.org) return typeIs('Organization') ? { kind: 'org', id: id.value } : undefined;
    if (id.system === ConsentSystem.patient) return typeIs('Patient') ? { kind: 'patient', id: id.value } : undefined;
    const practitioner = practitionerSystemPattern.exec(id.system);
    if (practitioner) return typeIs('Practitioner') ? { kind: 'practitioner', org: practitioner[1]!, id: id.value } : undefined;
    return this.problem(`${at}.reference.identifier.system`, `must be ${ConsentSystem.org}, ${practitionerSystem('<org>')} or ${ConsentSystem.patient}`);
  }

  /** A provision; entries that fail stay in their lists as `undefined`, so positions match the input. */
  provision(value: unknown, at: string, depth: number): ConsentProvision | undefined {
    const p = this.object(value, at);
    if (p === undefined) return undefined;
    const read = ['type', 'period', 'actor', 'securityLabel', 'purpose', 'class', 'provision'];
    this.members(p, at, read, ignoredProvisionElements, inexpressibleProvisionElements);
    const out: Json = {};
    if (p.type === 'permit' || p.type === 'deny') out.type = p.type;
    else this.problem(`${at}.type`, 'must be "permit" or "deny"');
    if (p.period !== undefined) out.period = this.period(p.period, `${at}.period`);
    const each = <T>(member: string, to: string, read1: (v: unknown, at1: string) => T | undefined): void => {
      if (p[member] === undefined) return;
      const list = this.list(p[member], `${at}.${member}`);
      if (list !== undefined) out[to] = list.map((v, i) => read1(v, `${at}.${member}[${i}]`));
    };
    each('actor', 'actors', (v, a) => this.actor(v, a));
    each('purpose', 'purposes', (v, a) => this.code<PurposeOfUse>(v, a, ConsentSystem.actReason, purposesOfUse, 'a purpose of use'));
    each('class', 'classes', (v, a) => this.resourceClass(v, a));
    each('securityLabel', 'labels', (v, a) => this.code<SensitivityLabel>(v, a, ConsentSystem.actCode, sensitivityLabels, 'a sensitivity label'));
    if (p.provision !== undefined) {
      if (depth >= maxParseDepth) this.problem(`${at}.provision`, `provisions nest too deep`);
      else each('provision', 'provisions', (v, a) => this.provision(v, a, depth + 1));
    }
    return out as unknown as ConsentProvision;
  }

  period(value: unknown, at: string): { start?: string; end?: string } | undefined {
    const period = this.object(value, at);
    if (period === undefined) return undefined;
    this.members(period, at, ['start', 'end'], ignoredProvisionElements, new Set());
    const out: { start?: string; end?: string } = {};
    for (const k of ['start', 'end'] as const) {
      const v = period[k];
      if (v === undefined) continue;
      if (typeof v === 'string') out[k] = v;
      else this.problem(`${at}.${k}`, 'must be a dateTime string');
    }
    return out;
  }

  resourceClass(value: unknown, at: string): string | undefined {
    const coding = this.object(value, at);
    if (coding === undefined) return undefined;
    if (coding.system !== ConsentSystem.resourceTypes) return this.problem(`${at}.system`, `must be ${ConsentSystem.resourceTypes}`);
    if (!isResourceType(coding.code)) return this.problem(`${at}.code`, 'must be an R4 resource type');
    return coding.code;
  }
}

/** Translates an expression of `checkConsentGrantBody` (`body.provision.provisions[0].actors[1]`) into FHIR. */
function fhirExpression(ledgerPath: string, proxyAt: string): string {
  if (ledgerPath === 'body.proxy') return proxyAt;
  if (ledgerPath === 'body.patient') return 'Consent.patient.identifier.value';
  const names: Record<string, string> = { body: 'Consent', provisions: 'provision', actors: 'actor', purposes: 'purpose', classes: 'class', labels: 'securityLabel' };
  return ledgerPath.replace(/[A-Za-z]+/g, (name) => names[name] ?? name);
}

/** True when one expression is the other or lies inside it. */
function related(a: string, b: string): boolean {
  const inside = (x: string, y: string) => x === y || x.startsWith(`${y}.`) || x.startsWith(`${y}[`);
  return inside(a, b) || inside(b, a);
}

/**
 * Reads a FHIR R4 Consent (parsed JSON) as a ledger `consent.grant` body — the inverse of `consentToFhir`.
 * Throws `HlError('invalid')` when `resource` is not a Consent at all, and `HlError('processing')` listing
 * every problem (each with a FHIRPath-like `expression` such as `Consent.provision.actor[0].reference`)
 * when the Consent says something a ledger consent cannot: a scope other than patient-privacy, parties named
 * by literal reference or in an unknown identifier system, codes outside the purposes of use, sensitivity
 * labels or R4 resource types, provision actions, codes or data, policies, verifications, modifier
 * extensions, periods that are not UTC date-times with seconds, and the ledger's own structural rules
 * (`checkConsentGrantBody`). `id`, `meta`, `text`, `identifier`, `dateTime`, `performer` and other
 * extensions are read for shape only: the ledger takes the grant's time and signer from the tx.
 *
 * Returns the Consent's `status` beside the body (draft, proposed, active or inactive); a caller that grants
 * MUST refuse anything but `active`. Does not run the full FHIR validation (`validateResource`), which a
 * caller accepting a Consent from outside runs first.
 */
export function consentFromFhir(resource: unknown): { body: ConsentGrantBody; status: (typeof policyStatuses)[number] } {
  if (!isObject(resource) || resource.resourceType !== 'Consent') {
    const message = 'must be a JSON object with resourceType "Consent"';
    throw new HlError('invalid', 'not a FHIR Consent resource', {
      issues: [isObject(resource) ? { code: 'invalid', expression: 'resourceType', message } : { code: 'invalid', message }],
    });
  }
  const r = new ConsentReader();
  const c = resource;
  r.members(c, 'Consent', ['scope', 'category', 'patient', 'performer', 'policyRule', 'provision'], ignoredConsentElements, inexpressibleConsentElements);

  const status = (policyStatuses as readonly unknown[]).includes(c.status) ? (c.status as (typeof policyStatuses)[number]) : undefined;
  if (status === undefined) r.problem('Consent.status', `must be one of ${policyStatuses.join(', ')}`);

  const scopes = r.codings(c.scope, 'Consent.scope');
  if (scopes.length > 0 && !scopes.some((s) => s.coding.system === ConsentSystem.consentScope && s.coding.code === 'patient-privacy')) {
    r.problem('Consent.scope', `only patient-privacy consents (${ConsentSystem.consentScope}) can be expressed`);
  }

  const categories = r.list(c.category, 'Consent.category') ?? [];
  // Read every category (map, not some) so that each malformed one is reported.
  const isPatientConsent = categories
    .map((cat, i) => r.codings(cat, `Consent.category[${i}]`).some((x) => x.coding.system === ConsentSystem.loinc && x.coding.code === '59284-0'))
    .includes(true);
  if (categories.length > 0 && !isPatientConsent) r.problem('Consent.category', `must include LOINC 59284-0 (patient consent)`);

  const patient = c.patient === undefined ? r.problem('Consent.patient', 'is required') : r.patient(c.patient, 'Consent.patient');
  if (c.performer !== undefined) (r.list(c.performer, 'Consent.performer') ?? []).forEach((p, i) => r.patient(p, `Consent.performer[${i}]`));

  let proxyAt = 'Consent.extension';
  let proxy = false;
  if (c.extension !== undefined) {
    (r.list(c.extension, 'Consent.extension') ?? []).forEach((e, i) => {
      if (!isObject(e) || e.url !== consentProxyExtensionUrl) return;
      if (proxyAt !== 'Consent.extension') r.problem(`Consent.extension[${i}]`, 'the proxy extension must not repeat');
      proxyAt = `Consent.extension[${i}]`;
      if (typeof e.valueBoolean !== 'boolean') r.problem(`${proxyAt}.valueBoolean`, 'must be a boolean');
      else proxy = e.valueBoolean;
    });
  }

  const provision = c.provision === undefined ? r.problem('Consent.provision', 'is required: a ledger consent is its provisions') : r.provision(c.provision, 'Consent.provision', 1);

  if (c.policyRule !== undefined) {
    const rules = r.codings(c.policyRule, 'Consent.policyRule').filter((x) => x.coding.system === ConsentSystem.actCode);
    const expected = provision?.type === 'deny' ? 'OPTOUT' : 'OPTIN';
    if (rules.length !== 1 || (rules[0]!.coding.code !== 'OPTIN' && rules[0]!.coding.code !== 'OPTOUT')) {
      r.problem('Consent.policyRule', `must be one ${ConsentSystem.actCode} code, OPTIN or OPTOUT`);
    } else if (provision?.type !== undefined && rules[0]!.coding.code !== expected) {
      r.problem(`${rules[0]!.at}.code`, `must be ${expected} for a ${provision.type} provision`);
    }
  }

  const body = { patient, provision, ...(proxy ? { proxy: true } : {}) } as Json;
  const ledgerIssues: Issue[] = [];
  checkConsentGrantBody(body, ledgerIssues);
  for (const issue of ledgerIssues) {
    const expression = fhirExpression(issue.expression ?? 'body', proxyAt);
    // Entries that failed to map stay as holes, which the ledger check reports again: keep only new findings.
    const scope = expression.startsWith('Consent.patient.') ? 'Consent.patient' : expression;
    if (r.issues.some((i) => i.expression !== undefined && related(i.expression, scope))) continue;
    r.issues.push({ ...issue, expression });
  }
  if (r.issues.length > 0) {
    throw new HlError('processing', `the Consent cannot be expressed as a ledger consent: ${r.issues.length} issue(s)`, { issues: r.issues });
  }
  return { body: body as unknown as ConsentGrantBody, status: status! };
}
