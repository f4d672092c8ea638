import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { hlErrorOf } from '../../test/hl-error.js';
import { loadDefinitions, resourceTypes, validateResource } from '../fhir/index.js';
import type { Issue } from '../kernel/index.js';
import {
  checkConsentGrantBody,
  purposesOfUse,
  sensitivityLabels,
  type ConsentActor,
  type ConsentGrantBody,
  type ConsentProvision,
  type ConsentRecord,
} from '../ledger/index.js';
import { ConsentSystem, consentFromFhir, consentProxyExtensionUrl, consentToFhir, practitionerSystem } from './index.js';

const patient = `pat-${'a'.repeat(26)}`;
const proxy = `pat-${'b'.repeat(26)}`;
const t0 = Date.parse('2025-06-01T12:00:00Z');
const id1 = 'ab'.repeat(32);

function record(body: ConsentGrantBody, extra: Partial<ConsentRecord> = {}): ConsentRecord {
  return { id: id1, patient: body.patient, body, grantedBy: body.patient, grantedAtMs: t0, revokedAtMs: null, revokedBy: null, ...extra };
}

/** One of each actor kind, nested three deep, every criterion used. */
const richBody: ConsentGrantBody = {
  patient,
  provision: {
    type: 'permit',
    period: { start: '2025-01-01T00:00:00Z', end: '2026-01-01T00:00:00.5Z' },
    actors: [
      { kind: 'org', id: 'clinic-b' },
      { kind: 'practitioner', org: 'clinic-b', id: 'dr-1' },
      { kind: 'role', role: 'clinician' },
      { kind: 'role', role: 'nurse', org: 'hosp-a' },
      { kind: 'patient', id: proxy },
    ],
    purposes: ['TREAT', 'ETREAT'],
    provisions: [
      {
        type: 'deny',
        labels: ['PSY', 'HIV'],
        provisions: [{ type: 'permit', actors: [{ kind: 'practitioner', org: 'clinic-b', id: 'dr-1' }], classes: ['Observation', 'Condition'] }],
      },
    ],
  },
};

const describeIssues = (issues: readonly Issue[]): string[] => issues.map((i) => `${i.expression ?? '(root)'}: ${i.message}`);

beforeAll(() => {
  loadDefinitions();
});

describe('consentToFhir', () => {
  it('maps every element of a ledger consent', () => {
    const fhir = consentToFhir(record(richBody, { grantedBy: proxy }), { atMs: t0 });
    expect(fhir).toMatchObject({
      resourceType: 'Consent',
      id: id1,
      status: 'active',
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
      patient: { identifier: { system: 'urn:healthledger:patient', value: patient } },
      dateTime: '2025-06-01T12:00:00.000Z',
      performer: [{ identifier: { system: 'urn:healthledger:patient', value: proxy } }],
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
    });
    expect(fhir.extension).toBeUndefined();
    const p = fhir.provision!;
    expect(p.type).toBe('permit');
    expect(p.period).toEqual({ start: '2025-01-01T00:00:00Z', end: '2026-01-01T00:00:00.5Z' });
    const ircp = { coding: [expect.objectContaining({ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' })] };
    expect(p.actor).toEqual([
      { role: ircp, reference: { type: 'Organization', identifier: { system: 'urn:healthledger:org', value: 'clinic-b' } } },
      { role: ircp, reference: { type: 'Practitioner', identifier: { system: 'urn:healthledger:org:clinic-b:practitioner', value: 'dr-1' } } },
      { role: { coding: [{ system: 'urn:healthledger:role', code: 'clinician' }] }, reference: { type: 'Organization', display: 'any organization' } },
      { role: { coding: [{ system: 'urn:healthledger:role', code: 'nurse' }] }, reference: { type: 'Organization', identifier: { system: 'urn:healthledger:org', value: 'hosp-a' } } },
      { role: ircp, reference: { type: 'Patient', identifier: { system: 'urn:healthledger:patient', value: proxy } } },
    ]);
    expect(p.purpose).toEqual([
      { system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' },
      { system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'ETREAT' },
    ]);
    const deny = p.provision![0]!;
    expect(deny.type).toBe('deny');
    expect(deny.securityLabel).toEqual([
      { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY' },
      { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'HIV' },
    ]);
    expect(deny.provision![0]!.class).toEqual([
      { system: 'http://hl7.org/fhir/resource-types', code: 'Observation' },
      { system: 'http://hl7.org/fhir/resource-types', code: 'Condition' },
    ]);
  });

  it('marks a proxy consent with the proxy extension, and reads it back', () => {
    const body: ConsentGrantBody = { patient, provision: { type: 'permit', actors: [{ kind: 'patient', id: proxy }] }, proxy: true };
    const fhir = consentToFhir(record(body), { atMs: t0 });
    expect(fhir.extension).toEqual([{ url: consentProxyExtensionUrl, valueBoolean: true }]);
    expect(consentFromFhir(JSON.parse(JSON.stringify(fhir))).body).toEqual(body);
  });

  it('uses OPTOUT for a deny at the root and leaves the proxy extension out when not a proxy consent', () => {
    const fhir = consentToFhir(record({ patient, provision: { type: 'deny', actors: [{ kind: 'org', id: 'lab-c' }] } }), { atMs: t0 });
    expect(fhir.policyRule?.coding?.[0]?.code).toBe('OPTOUT');
    expect(fhir.extension).toBeUndefined();
  });

  it.each([
    ['active while in force', {}, { end: '2025-06-02T00:00:00Z' }, 'active'],
    ['active before its period starts (granted, not yet in force)', {}, { start: '2025-07-01T00:00:00Z' }, 'active'],
    ['inactive once revoked', { revokedAtMs: t0 - 1, revokedBy: patient }, undefined, 'inactive'],
    ['inactive once its top period ended', {}, { end: '2025-06-01T11:59:59Z' }, 'inactive'],
  ] as const)('status is %s', (_name, extra, period, status) => {
    const body: ConsentGrantBody = { patient, provision: { type: 'permit', ...(period ? { period: { ...period } } : {}) } };
    expect(consentToFhir(record(body, { ...extra }), { atMs: t0 }).status).toBe(status);
  });

  it('is checked by a validator that does reject broken Consents (self-check)', () => {
    const broken = JSON.parse(JSON.stringify(consentToFhir(record(richBody), { atMs: t0 }))) as Record<string, any>;
    broken.provision.type = 'maybe';
    delete broken.policyRule; // Consent invariant ppc-1: a policy or a policyRule
    const found = validateResource(broken).map((i) => i.expression ?? '');
    expect(found).toContain('Consent.provision.type');
    expect(found.length).toBeGreaterThanOrEqual(2);
  });

  it('produces a valid FHIR R4 Consent (validateResource finds no issue)', () => {
    for (const body of [richBody, { patient, provision: { type: 'deny' } } as ConsentGrantBody]) {
      const fhir = consentToFhir(record(body, { revokedAtMs: t0, revokedBy: patient }), { atMs: t0 });
      expect(describeIssues(validateResource(JSON.parse(JSON.stringify(fhir))))).toEqual([]);
    }
  });
});

// --- Generated valid bodies ---------------------------------------------------------------------------

const orgIds = ['clinic-b', 'hosp-a', 'lab-c', 'x9'];
const actorArb: fc.Arbitrary<ConsentActor> = fc.oneof(
  fc.constantFrom(...orgIds).map((id) => ({ kind: 'org' as const, id })),
  fc.tuple(fc.constantFrom(...orgIds), fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9\-.]{0,20}$/)).map(([org, id]) => ({ kind: 'practitioner' as const, org, id })),
  fc.tuple(fc.stringMatching(/^[a-z][a-z0-9-]{0,31}$/), fc.option(fc.constantFrom(...orgIds), { nil: undefined })).map(([role, org]) =>
    org === undefined ? { kind: 'role' as const, role } : { kind: 'role' as const, role, org },
  ),
  fc.constantFrom(patient, proxy, `pat-${'234567'.repeat(4)}zz`).map((id) => ({ kind: 'patient' as const, id })),
);
const instant = fc.date({ min: new Date('1990-01-01T00:00:00Z'), max: new Date('2090-01-01T00:00:00Z'), noInvalidDate: true });
const periodArb = fc
  .tuple(fc.option(instant, { nil: undefined }), fc.option(instant, { nil: undefined }), fc.boolean())
  .filter(([s, e]) => s !== undefined || e !== undefined)
  .map(([s, e, wholeSeconds]) => {
    const [a, b] = s !== undefined && e !== undefined && s > e ? [e, s] : [s, e];
    const fmt = (d: Date) => (wholeSeconds ? d.toISOString().replace(/\.\d{3}Z$/, 'Z') : d.toISOString());
    return { ...(a !== undefined ? { start: fmt(a) } : {}), ...(b !== undefined ? { end: fmt(b) } : {}) };
  });
const uniq = <T>(arb: fc.Arbitrary<T>, max: number) => fc.option(fc.uniqueArray(arb, { minLength: 1, maxLength: max, selector: (v) => JSON.stringify(v) }), { nil: undefined });

const provisionArb: fc.Memo<ConsentProvision> = fc.memo((depth) =>
  fc
    .record(
      {
        type: fc.constantFrom<'permit' | 'deny'>('permit', 'deny'),
        period: fc.option(periodArb, { nil: undefined }),
        actors: uniq(actorArb, 4),
        purposes: uniq(fc.constantFrom(...purposesOfUse), 3),
        classes: uniq(fc.constantFrom(...resourceTypes), 3),
        labels: uniq(fc.constantFrom(...sensitivityLabels), 3),
        provisions: depth > 1 ? fc.option(fc.array(provisionArb(depth - 1), { minLength: 1, maxLength: 2 }), { nil: undefined }) : fc.constant(undefined),
      },
      { requiredKeys: ['type'] },
    )
    .map((p) => Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) as unknown as ConsentProvision),
);

const bodyArb: fc.Arbitrary<ConsentGrantBody> = fc
  .tuple(fc.constantFrom(patient, proxy), provisionArb(4), fc.boolean())
  .map(([pat, provision, asProxy]) => {
    if (!asProxy) return { patient: pat, provision };
    // A proxy consent permits at least one patient actor at its top, and is not limited by purpose, class or label.
    const actors: ConsentActor[] = [...(provision.actors ?? []).filter((a) => a.kind !== 'patient'), { kind: 'patient', id: proxy === pat ? patient : proxy }];
    const { purposes: _p, classes: _c, labels: _l, ...top } = provision;
    return { patient: pat, provision: { ...top, type: 'permit', actors }, proxy: true };
  });

const recordArb: fc.Arbitrary<ConsentRecord> = fc
  .tuple(bodyArb, fc.stringMatching(/^[0-9a-f]{64}$/), fc.boolean())
  .map(([body, id, revoked]) => record(body, { id, ...(revoked ? { revokedAtMs: t0, revokedBy: body.patient } : {}) }));

describe('consentFromFhir ∘ consentToFhir', () => {
  it('round-trips every valid grant body (checked with checkConsentGrantBody)', () => {
    fc.assert(
      fc.property(recordArb, (r) => {
        const issues: Issue[] = [];
        expect(checkConsentGrantBody(structuredClone(r.body) as unknown as Record<string, unknown>, issues), JSON.stringify(issues)).toBe(true);
        // Through JSON, as a Consent arrives over HTTP.
        const fhir = JSON.parse(JSON.stringify(consentToFhir(r, { atMs: t0 }))) as unknown;
        expect(consentFromFhir(fhir).body).toEqual(r.body);
      }),
      { numRuns: 400 },
    );
  });

  it('produces Consents that validateResource accepts', () => {
    fc.assert(
      fc.property(recordArb, (r) => {
        const fhir = JSON.parse(JSON.stringify(consentToFhir(r, { atMs: t0 }))) as unknown;
        expect(describeIssues(validateResource(fhir))).toEqual([]);
      }),
      { numRuns: 150 },
    );
  });

  it('returns the status beside the body', () => {
    const fhir = consentToFhir(record(richBody, { revokedAtMs: t0, revokedBy: patient }), { atMs: t0 });
    expect(consentFromFhir(fhir).status).toBe('inactive');
  });
});

// --- Bad input ----------------------------------------------------------------------------------------

/** Parsed JSON that each case breaks in its own way. */
type Mutable = Record<string, any>;
/** A valid Consent (the rich body) as plain JSON, to be broken by each case. */
const validJson = (): Mutable => JSON.parse(JSON.stringify(consentToFhir(record(richBody), { atMs: t0 }))) as Mutable;
const simpleJson = (): Mutable =>
  JSON.parse(JSON.stringify(consentToFhir(record({ patient, provision: { type: 'permit', actors: [{ kind: 'org', id: 'clinic-b' }], purposes: ['TREAT'] } }), { atMs: t0 }))) as Mutable;

const badCases: { name: string; input: () => unknown; code: 'invalid' | 'processing'; expressions: string[] }[] = [
  { name: 'not an object', input: () => 'Consent', code: 'invalid', expressions: ['(root)'] },
  { name: 'another resource type', input: () => ({ ...simpleJson(), resourceType: 'Patient' }), code: 'invalid', expressions: ['resourceType'] },
  { name: 'a research scope', input: () => ({ ...simpleJson(), scope: { coding: [{ system: ConsentSystem.consentScope, code: 'research' }] } }), code: 'processing', expressions: ['Consent.scope'] },
  { name: 'no patient-consent category', input: () => ({ ...simpleJson(), category: [{ coding: [{ system: 'http://loinc.org', code: '64292-6' }] }] }), code: 'processing', expressions: ['Consent.category'] },
  { name: 'status entered-in-error', input: () => ({ ...simpleJson(), status: 'entered-in-error' }), code: 'processing', expressions: ['Consent.status'] },
  { name: 'the patient by literal reference', input: () => ({ ...simpleJson(), patient: { reference: 'Patient/123' } }), code: 'processing', expressions: ['Consent.patient.reference'] },
  { name: 'a patient id that is no network id', input: () => ({ ...simpleJson(), patient: { identifier: { system: ConsentSystem.patient, value: 'pat-123' } } }), code: 'processing', expressions: ['Consent.patient.identifier.value'] },
  { name: 'no patient', input: () => { const c = simpleJson(); delete c.patient; return c; }, code: 'processing', expressions: ['Consent.patient'] },
  { name: 'a performer in another system', input: () => ({ ...simpleJson(), performer: [{ identifier: { system: 'urn:oid:1.2.3', value: 'x' } }] }), code: 'processing', expressions: ['Consent.performer[0].identifier.system'] },
  { name: 'an actor by literal reference', input: () => { const c = simpleJson(); c.provision.actor[0].reference = { reference: 'Organization/1' }; return c; }, code: 'processing', expressions: ['Consent.provision.actor[0].reference.reference'] },
  { name: 'an actor in an unknown identifier system', input: () => { const c = simpleJson(); c.provision.actor[0].reference.identifier.system = 'urn:oid:2.16.840.1'; return c; }, code: 'processing', expressions: ['Consent.provision.actor[0].reference.identifier.system'] },
  { name: 'an actor whose reference type contradicts its identifier', input: () => { const c = simpleJson(); c.provision.actor[0].reference.type = 'Patient'; return c; }, code: 'processing', expressions: ['Consent.provision.actor[0].reference.type'] },
  { name: 'an actor role that is neither IRCP nor a staff role', input: () => { const c = simpleJson(); c.provision.actor[0].role = { coding: [{ system: ConsentSystem.participationType, code: 'PRCP' }] }; return c; }, code: 'processing', expressions: ['Consent.provision.actor[0].role'] },
  { name: 'an org id the ledger does not accept', input: () => { const c = simpleJson(); c.provision.actor[0].reference.identifier.value = 'Clinic B'; return c; }, code: 'processing', expressions: ['Consent.provision.actor[0]'] },
  { name: 'an unknown purpose code', input: () => { const c = simpleJson(); c.provision.purpose[0].code = 'HMARKT'; return c; }, code: 'processing', expressions: ['Consent.provision.purpose[0].code'] },
  { name: 'a purpose in another system', input: () => { const c = simpleJson(); c.provision.purpose[0].system = 'http://example.org/purpose'; return c; }, code: 'processing', expressions: ['Consent.provision.purpose[0].system'] },
  { name: 'a repeated purpose', input: () => { const c = simpleJson(); c.provision.purpose.push({ ...c.provision.purpose[0] }); return c; }, code: 'processing', expressions: ['Consent.provision.purpose'] },
  { name: 'an unknown sensitivity label', input: () => { const c = simpleJson(); c.provision.securityLabel = [{ system: ConsentSystem.actCode, code: 'R' }]; return c; }, code: 'processing', expressions: ['Consent.provision.securityLabel[0].code'] },
  { name: 'a class that is no R4 resource type', input: () => { const c = simpleJson(); c.provision.class = [{ system: ConsentSystem.resourceTypes, code: 'Observaton' }]; return c; }, code: 'processing', expressions: ['Consent.provision.class[0].code'] },
  { name: 'a provision action', input: () => { const c = simpleJson(); c.provision.action = [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentaction', code: 'access' }] }]; return c; }, code: 'processing', expressions: ['Consent.provision.action'] },
  { name: 'provision data', input: () => { const c = simpleJson(); c.provision.data = [{ meaning: 'instance', reference: { reference: 'Observation/1' } }]; return c; }, code: 'processing', expressions: ['Consent.provision.data'] },
  { name: 'a policy', input: () => ({ ...simpleJson(), policy: [{ uri: 'https://example.org/policy' }] }), code: 'processing', expressions: ['Consent.policy'] },
  { name: 'a modifier extension', input: () => ({ ...simpleJson(), modifierExtension: [{ url: 'https://example.org/x', valueBoolean: true }] }), code: 'processing', expressions: ['Consent.modifierExtension'] },
  { name: 'an unknown element', input: () => ({ ...simpleJson(), colour: 'blue' }), code: 'processing', expressions: ['Consent.colour'] },
  { name: 'a period with a time-zone offset', input: () => { const c = simpleJson(); c.provision.period = { start: '2025-01-01T01:00:00+01:00' }; return c; }, code: 'processing', expressions: ['Consent.provision.period.start'] },
  { name: 'a period that is only a date', input: () => { const c = simpleJson(); c.provision.period = { end: '2025-12-31' }; return c; }, code: 'processing', expressions: ['Consent.provision.period.end'] },
  { name: 'a period that starts after it ends', input: () => { const c = simpleJson(); c.provision.period = { start: '2025-02-01T00:00:00Z', end: '2025-01-01T00:00:00Z' }; return c; }, code: 'processing', expressions: ['Consent.provision.period'] },
  { name: 'no provision', input: () => { const c = simpleJson(); delete c.provision; return c; }, code: 'processing', expressions: ['Consent.provision'] },
  { name: 'a nested provision without type', input: () => { const c = simpleJson(); c.provision.provision = [{ securityLabel: [{ system: ConsentSystem.actCode, code: 'PSY' }] }]; return c; }, code: 'processing', expressions: ['Consent.provision.provision[0].type'] },
  { name: 'provisions nested five deep', input: () => { const c = simpleJson(); let p = c.provision; for (let i = 0; i < 4; i++) { p.provision = [{ type: i % 2 ? 'permit' : 'deny' }]; p = p.provision[0]; } return c; }, code: 'processing', expressions: ['Consent.provision.provision[0].provision[0].provision[0].provision'] },
  { name: 'a policy rule contradicting the root provision', input: () => { const c = simpleJson(); c.policyRule.coding[0].code = 'OPTOUT'; return c; }, code: 'processing', expressions: ['Consent.policyRule.coding[0].code'] },
  { name: 'a proxy consent without a patient actor', input: () => ({ ...simpleJson(), extension: [{ url: consentProxyExtensionUrl, valueBoolean: true }] }), code: 'processing', expressions: ['Consent.extension[0]', 'Consent.provision.purpose'] },
  { name: 'a proxy extension that is not a boolean', input: () => ({ ...simpleJson(), extension: [{ url: consentProxyExtensionUrl, valueString: 'yes' }] }), code: 'processing', expressions: ['Consent.extension[0].valueBoolean'] },
  {
    name: 'several problems at once, every one listed',
    input: () => {
      const c = validJson();
      c.provision.actor[1].reference.identifier.system = 'urn:example:staff';
      c.provision.purpose[1].code = 'COVERAGE';
      c.provision.provision[0].securityLabel[0].system = 'http://example.org/labels';
      c.provision.provision[0].provision[0].class[1].code = 'Nothing';
      c.provision.provision[0].code = [{ text: 'x' }];
      c.verification = [{ verified: true }];
      return c;
    },
    code: 'processing',
    expressions: [
      'Consent.verification',
      'Consent.provision.actor[1].reference.identifier.system',
      'Consent.provision.purpose[1].code',
      'Consent.provision.provision[0].code',
      'Consent.provision.provision[0].securityLabel[0].system',
      'Consent.provision.provision[0].provision[0].class[1].code',
    ],
  },
];

describe('consentFromFhir on bad input', () => {
  it('accepts the unbroken inputs the cases start from', () => {
    expect(consentFromFhir(validJson()).body).toEqual(richBody);
    expect(consentFromFhir(simpleJson()).body.provision.actors).toEqual([{ kind: 'org', id: 'clinic-b' }]);
  });

  it.each(badCases)('rejects $name', ({ input, code, expressions }) => {
    const err = hlErrorOf(() => consentFromFhir(input()));
    expect(err.code).toBe(code);
    expect(err.issues.map((i) => i.expression ?? '(root)').sort(), describeIssues(err.issues).join('\n')).toEqual([...expressions].sort());
    // Messages name paths and codes, never the values sent.
    for (const issue of err.issues) expect(issue.message).not.toMatch(/Clinic B|HMARKT|Observaton|COVERAGE|pat-123/);
  });

  it('accepts a role actor limited to no organization, and ignores unknown plain extensions', () => {
    const c = simpleJson();
    c.provision.actor = [{ role: { coding: [{ system: ConsentSystem.role, code: 'pharmacist' }] }, reference: { display: 'anyone' } }];
    c.extension = [{ url: 'https://example.org/note', valueString: 'x' }];
    expect(consentFromFhir(c).body.provision.actors).toEqual([{ kind: 'role', role: 'pharmacist' }]);
  });

  it('reads a practitioner of an organization from its identifier system', () => {
    const c = simpleJson();
    c.provision.actor = [{ role: { coding: [{ system: ConsentSystem.participationType, code: 'IRCP' }] }, reference: { identifier: { system: practitionerSystem('lab-c'), value: 'p.42' } } }];
    expect(consentFromFhir(c).body.provision.actors).toEqual([{ kind: 'practitioner', org: 'lab-c', id: 'p.42' }]);
  });
});
