/**
 * The consent policy a patient signs into `consent.grant` (DESIGN.md §6): FHIR R4 Consent provision semantics
 * (scope patient-privacy) in a compact, canonical form. Its structural rules live here, beside the tx
 * contracts, because every node must judge a `consent.grant` identically; what a policy *decides* is the
 * consent module's `decide()`.
 *
 * A provision says permit or deny for the requests it matches: who (actors), why (purposes), which kinds of
 * data (classes = FHIR resource types), which sensitive categories (labels) and when (period). A criterion
 * left out matches everything. Nested provisions are exceptions to their parent, as in FHIR
 * `Consent.provision.provision`; the deepest provision that matches a request decides it.
 */
import { isOrgId, utcTimestampMs, type Issue } from '../kernel/index.js';

/** Purposes of use (HL7 v3 PurposeOfUse) a consent can name. */
export const purposesOfUse = ['TREAT', 'ETREAT', 'HPAYMT', 'HRESCH', 'PUBHLTH'] as const;
export type PurposeOfUse = (typeof purposesOfUse)[number];

/**
 * Sensitive categories (HL7 v3 ActCode InformationSensitivityPolicy): mental health (PSY), HIV, substance
 * use (ETH), sexual and reproductive health (SEX), genetic (GDIS).
 */
export const sensitivityLabels = ['PSY', 'HIV', 'ETH', 'SEX', 'GDIS'] as const;
export type SensitivityLabel = (typeof sensitivityLabels)[number];

/**
 * Who a provision is about: an organization, a practitioner at an organization, any staff of a role
 * (optionally at one organization), or another patient (a proxy such as a parent or carer).
 */
export type ConsentActor =
  | { kind: 'org'; id: string }
  | { kind: 'practitioner'; org: string; id: string }
  | { kind: 'role'; role: string; org?: string }
  | { kind: 'patient'; id: string };

/** One provision (FHIR `Consent.provision`). */
export interface ConsentProvision {
  type: 'permit' | 'deny';
  actors?: ConsentActor[];
  purposes?: PurposeOfUse[];
  /** FHIR resource types. */
  classes?: string[];
  /** Sensitivity labels the provision is about; a resource matches when it carries any of them. */
  labels?: SensitivityLabel[];
  /** RFC 3339 UTC bounds; either may be absent. */
  period?: { start?: string; end?: string };
  /** Exceptions to this provision. */
  provisions?: ConsentProvision[];
}

/** The body of `consent.grant`. */
export interface ConsentGrantBody {
  /** The network id of the patient whose data the consent is about. */
  patient: string;
  provision: ConsentProvision;
  /**
   * When true, the patient actors of the top provision are proxies: besides what the provision permits them,
   * they may sign consent grants and revocations for the patient while this consent is in force.
   */
  proxy?: boolean;
}

/** The body of `consent.revoke`. */
export interface ConsentRevokeBody {
  patient: string;
  /** The id of the `consent.grant` tx being revoked. */
  consent: string;
}

/** A patient network id: `pat-` + 26 base32 characters of SHA-256(public key) (DESIGN.md §1). */
export const patientIdPattern = /^pat-[a-z2-7]{26}$/;

const maxDepth = 4;
const maxProvisions = 64;
const maxActors = 64;
const resourceType = /^[A-Z][A-Za-z]{1,63}$/;
const fhirId = /^[A-Za-z0-9\-.]{1,64}$/;
const role = /^[a-z][a-z0-9-]{0,31}$/;

function checkList<T>(
  value: unknown,
  at: string,
  issues: Issue[],
  max: number,
  ok: (v: unknown) => v is T,
  what: string,
): void {
  if (value === undefined) return;
  if (!Array.isArray(value) || value.length === 0 || value.length > max) {
    issues.push({ code: 'invalid', expression: at, message: `must be a list of 1 to ${max} ${what}` });
    return;
  }
  value.forEach((v, i) => {
    if (!ok(v)) issues.push({ code: 'invalid', expression: `${at}[${i}]`, message: `must be ${what}` });
  });
  if (new Set(value.map((v) => JSON.stringify(v))).size !== value.length) {
    issues.push({ code: 'invalid', expression: at, message: 'must not repeat an entry' });
  }
}

function isActor(v: unknown): v is ConsentActor {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const a = v as Record<string, unknown>;
  const only = (...keys: string[]) => Object.keys(a).every((k) => keys.includes(k));
  switch (a.kind) {
    case 'org':
      return only('kind', 'id') && typeof a.id === 'string' && isOrgId(a.id);
    case 'practitioner':
      return only('kind', 'org', 'id') && typeof a.org === 'string' && isOrgId(a.org) && typeof a.id === 'string' && fhirId.test(a.id);
    case 'role':
      return only('kind', 'role', 'org') && typeof a.role === 'string' && role.test(a.role) && (a.org === undefined || (typeof a.org === 'string' && isOrgId(a.org)));
    case 'patient':
      return only('kind', 'id') && typeof a.id === 'string' && patientIdPattern.test(a.id);
    default:
      return false;
  }
}

const isPurpose = (v: unknown): v is PurposeOfUse => (purposesOfUse as readonly unknown[]).includes(v);
const isLabel = (v: unknown): v is SensitivityLabel => (sensitivityLabels as readonly unknown[]).includes(v);
const isClass = (v: unknown): v is string => typeof v === 'string' && resourceType.test(v);

function checkProvision(value: unknown, at: string, depth: number, issues: Issue[], count: { n: number }): void {
  if (++count.n > maxProvisions) {
    if (count.n === maxProvisions + 1) issues.push({ code: 'too-costly', expression: at, message: `a consent may hold at most ${maxProvisions} provisions` });
    return;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    issues.push({ code: 'invalid', expression: at, message: 'must be a provision object' });
    return;
  }
  const p = value as Record<string, unknown>;
  const allowed = ['type', 'actors', 'purposes', 'classes', 'labels', 'period', 'provisions'];
  for (const k of Object.keys(p)) if (!allowed.includes(k)) issues.push({ code: 'invalid', expression: `${at}.${k}`, message: `unknown member "${k}"` });
  if (p.type !== 'permit' && p.type !== 'deny') issues.push({ code: 'invalid', expression: `${at}.type`, message: 'must be "permit" or "deny"' });
  checkList(p.actors, `${at}.actors`, issues, maxActors, isActor, 'actors (org, practitioner, role or patient)');
  checkList(p.purposes, `${at}.purposes`, issues, purposesOfUse.length, isPurpose, `purposes of use (${purposesOfUse.join(', ')})`);
  checkList(p.classes, `${at}.classes`, issues, 200, isClass, 'FHIR resource types');
  checkList(p.labels, `${at}.labels`, issues, sensitivityLabels.length, isLabel, `sensitivity labels (${sensitivityLabels.join(', ')})`);
  if (p.period !== undefined) checkPeriod(p.period, `${at}.period`, issues);
  if (p.provisions !== undefined) {
    if (depth >= maxDepth) {
      issues.push({ code: 'too-costly', expression: `${at}.provisions`, message: `provisions nest at most ${maxDepth} deep` });
    } else if (!Array.isArray(p.provisions) || p.provisions.length === 0) {
      issues.push({ code: 'invalid', expression: `${at}.provisions`, message: 'must be a non-empty list of provisions' });
    } else {
      p.provisions.forEach((c, i) => checkProvision(c, `${at}.provisions[${i}]`, depth + 1, issues, count));
    }
  }
}

function checkPeriod(value: unknown, at: string, issues: Issue[]): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    issues.push({ code: 'invalid', expression: at, message: 'must be an object with start and/or end' });
    return;
  }
  const p = value as Record<string, unknown>;
  for (const k of Object.keys(p)) if (k !== 'start' && k !== 'end') issues.push({ code: 'invalid', expression: `${at}.${k}`, message: `unknown member "${k}"` });
  for (const k of ['start', 'end'] as const) {
    const v = p[k];
    if (v !== undefined && utcTimestampMs(v) === null) {
      issues.push({ code: 'invalid', expression: `${at}.${k}`, message: 'must be an RFC 3339 UTC timestamp' });
    }
  }
  if (p.start === undefined && p.end === undefined) issues.push({ code: 'invalid', expression: at, message: 'must have a start or an end' });
  if (typeof p.start === 'string' && typeof p.end === 'string' && Date.parse(p.start) > Date.parse(p.end)) {
    issues.push({ code: 'invalid', expression: at, message: 'start must not be after end' });
  }
}

/** Structural checks of a `consent.grant` body; collects every issue. */
export function checkConsentGrantBody(body: Record<string, unknown>, issues: Issue[]): body is ConsentGrantBody & Record<string, unknown> {
  const before = issues.length;
  for (const k of Object.keys(body)) {
    if (!['patient', 'provision', 'proxy'].includes(k)) issues.push({ code: 'invalid', expression: `body.${k}`, message: `unknown member "${k}"` });
  }
  if (typeof body.patient !== 'string' || !patientIdPattern.test(body.patient)) {
    issues.push({ code: 'invalid', expression: 'body.patient', message: 'must be a patient network id' });
  }
  if (body.proxy !== undefined && body.proxy !== true) issues.push({ code: 'invalid', expression: 'body.proxy', message: 'must be true when present' });
  checkProvision(body.provision, 'body.provision', 1, issues, { n: 0 });
  if (body.proxy === true && issues.length === before) {
    const p = body.provision as ConsentProvision;
    if (p.type !== 'permit' || !p.actors?.some((a) => a.kind === 'patient')) {
      issues.push({ code: 'invalid', expression: 'body.proxy', message: 'a proxy consent must permit at least one patient actor' });
    }
    // A proxy acts for the patient in full (they may sign any grant or revocation), so a proxy consent that
    // looks narrower than that would mislead: its top provision limits only who and until when.
    for (const k of ['purposes', 'classes', 'labels'] as const) {
      if (p[k] !== undefined) issues.push({ code: 'invalid', expression: `body.provision.${k}`, message: 'a proxy consent cannot be limited by purpose, class or label' });
    }
  }
  return issues.length === before;
}

/** True when `period` (if any) contains `atMs`. */
export function periodContains(period: ConsentProvision['period'], atMs: number): boolean {
  if (!period) return true;
  if (period.start !== undefined && atMs < Date.parse(period.start)) return false;
  if (period.end !== undefined && atMs > Date.parse(period.end)) return false;
  return true;
}
