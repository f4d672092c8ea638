/**
 * The fast path against the full validator: on every resource of the test vectors and of the synth
 * generator the verdicts agree (and the fast path vouches for them all), and on mutated resources the fast
 * path never says valid where the full path finds an issue. `FAST_VALIDATE_RUNS=200000 npx vitest run
 * src/fhir/fast-validate.test.ts` runs the mutation properties longer than CI does.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { generatePatientBundle } from '../synth/index.js';
import { loadDefinitions } from './definitions.js';
import { validateFast } from './fast-validate.js';
import { validateResource, validateResourceFully } from './validate.js';

type Json = Record<string, unknown>;

const vectorsDir = join(import.meta.dirname, '../../test/vectors');
const readJson = (path: string): Json => JSON.parse(readFileSync(path, 'utf8')) as Json;
const jsonFiles = (dir: string): string[] =>
  readdirSync(join(vectorsDir, dir))
    .filter((f) => f.endsWith('.json'))
    .map((f) => join(vectorsDir, dir, f));
const entriesOf = (bundle: Json): Json[] => (bundle['entry'] as { resource: Json }[]).map((e) => e.resource);

const examples = jsonFiles('fhir/examples').map(readJson);
const syntheaBundles = jsonFiles('fhir/synthea').map(readJson);
const syntheaResources = [...jsonFiles('synthea'), ...jsonFiles('fhir/synthea')].flatMap((f) => entriesOf(readJson(f)));
const synthBundles = Array.from({ length: 12 }, (_, i) => generatePatientBundle(20251124, i + 1) as unknown as Json);
const synthResources = synthBundles.flatMap(entriesOf);

/** Iterations of each mutation property: the CI default keeps this file well under 30 s. */
const runs = Number(process.env['FAST_VALIDATE_RUNS'] ?? 600);
/** Each property's time limit grows with the iterations asked for (the full path takes 1-10 ms a case on a busy machine). */
const propertyTimeoutMs = Math.max(60_000, runs * 30);

const clone = <T>(value: T): T => structuredClone(value);
const describeIssues = (resource: unknown): string[] =>
  validateResourceFully(clone(resource)).map((i) => `${i.expression ?? '(root)'}: ${i.message}`);

beforeAll(() => {
  loadDefinitions();
});

describe('the fast path on real resources', () => {
  const corpus: [string, Json[]][] = [
    ['official R4 examples', examples],
    ['Synthea resources (test/vectors/synthea, fhir/synthea)', syntheaResources],
    ['Synthea bundles as a whole', syntheaBundles],
    ['synth generator resources', synthResources],
    ['synth generator bundles as a whole', synthBundles],
  ];

  it.each(corpus)('vouches for every one of the %s, which the full validator finds valid too', (_name, resources) => {
    expect(resources.length).toBeGreaterThan(0);
    const disagreements: string[] = [];
    for (const resource of resources) {
      const full = describeIssues(resource);
      const fast = validateFast(clone(resource));
      const where = `${String(resource['resourceType'])}/${String(resource['id'] ?? '')}`;
      if (full.length > 0) disagreements.push(`${where}: the full path finds ${full.join('; ')}`);
      if (fast.kind !== 'valid') disagreements.push(`${where}: the fast path is undecided (${fast.reason})`);
    }
    expect(disagreements).toEqual([]);
  });

  it('covers the resource types of the ingest load', () => {
    const types = new Set([...syntheaResources, ...synthResources].map((r) => r['resourceType']));
    for (const t of ['Patient', 'Encounter', 'Observation', 'Condition', 'Claim', 'ExplanationOfBenefit', 'Immunization', 'MedicationRequest', 'Procedure', 'DiagnosticReport', 'CarePlan', 'AllergyIntolerance', 'Organization', 'Practitioner', 'Coverage']) {
      expect(types).toContain(t);
    }
  });
});

/** A place in a JSON value: the steps from the root, and what is there. */
interface Place {
  steps: (string | number)[];
  value: unknown;
}

function placesOf(root: unknown): Place[] {
  const out: Place[] = [];
  const visit = (value: unknown, steps: (string | number)[]): void => {
    out.push({ steps, value });
    if (Array.isArray(value)) value.forEach((v, i) => visit(v, [...steps, i]));
    else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) visit(v, [...steps, k]);
  };
  visit(root, []);
  return out;
}

function parentOf(root: unknown, steps: readonly (string | number)[]): Record<string | number, unknown> | undefined {
  let node: unknown = root;
  for (const step of steps.slice(0, -1)) node = (node as Record<string | number, unknown>)[step];
  return node !== null && typeof node === 'object' ? (node as Record<string | number, unknown>) : undefined;
}

/** Sets an own property, even `__proto__` (as JSON.parse does). */
function setOwn(target: Record<string | number, unknown>, key: string | number, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

const extension = (fields: Json = { valueString: 'x' }): Json => ({ url: 'http://example.org/fhir/StructureDefinition/x', ...fields });

/** Values to put in: wrong JSON types, empty ones, and FHIR shapes right or wrong in one way. */
const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom<unknown>(
    '', ' ', '\u00a0', 'x', 'bogus', 'final', 'male', 0, -1, 1.5, 2 ** 53, true, false, null, [], {}, [null], [{}], [''], ['x'],
    Number.NaN, Number.POSITIVE_INFINITY,
  ),
  fc.constantFrom<unknown>(
    // Extensions: right, with both a value and extensions (ext-1), with neither, without url, nested.
    [extension()],
    [extension({ valueString: 'x', extension: [extension()] })],
    [extension({})],
    [{ valueString: 'x' }],
    [extension({ extension: [extension(), extension({ valueBoolean: true })] })],
    [extension({ valueReference: { reference: 'Patinet/1' } })],
    [extension({ valueCodeableConcept: { coding: [{ system: 'http://loinc.org', code: '1-8' }] } })],
    [extension({ valueString: 'x', valueBoolean: true })],
    [extension({ _valueString: { extension: [extension()] } })],
    // Codings, concepts, references, quantities, periods.
    { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    { coding: [{ system: 'http://loinc.org', code: 'bad code ' }] },
    { text: 'x' },
    [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }],
    { reference: 'Patient/p1' },
    { reference: 'urn:uuid:7f9d1a52-5f39-4bb5-9d4e-3c1e2f9a0b11' },
    { reference: '#c1' },
    { reference: 'Patient/p 1' },
    { reference: '' },
    { value: 1, unit: 'mg', system: 'http://unitsofmeasure.org', code: 'mg' },
    { value: 1, comparator: '~' },
    { value: 1, code: 'mg' },
    { start: '2020-01-01', end: '2019-01-01' },
    { start: '2020-13-01' },
    { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">x</div>' },
    { status: 'generated', div: '<p>x</p>' },
    { status: 'bogus', div: '<div xmlns="http://www.w3.org/1999/xhtml">x</div>' },
    // Nested resources: valid, of an unknown or abstract type, without resourceType, invalid inside.
    [{ resourceType: 'Patient', id: 'c1' }],
    [{ resourceType: 'Observation', id: 'c2', status: 'final', code: { text: 'x' } }],
    [{ resourceType: 'Observation', id: 'c3', status: 'done', code: { text: 'x' } }],
    [{ resourceType: 'Observation', id: 'c4', code: { text: 'x' } }],
    [{ resourceType: 'Patient', id: 'c5', meta: { versionId: '1' } }],
    [{ resourceType: 'Patient', id: 'c6', meta: { security: [{ code: 'R' }] } }],
    [{ resourceType: 'Patient', id: 'c7', contained: [{ resourceType: 'Patient' }] }],
    [{ resourceType: 'Nope' }],
    [{ resourceType: 'DomainResource' }],
    [{ id: 'c8' }],
    [{ resourceType: 'Patient', id: 'a_b' }],
    { resourceType: 'Patient', gender: 'girl' },
    { resourceType: 'Basic' },
  ),
);

/** Strings that break one format rule (date, dateTime, code, id, uri, reference, white space, length). */
const badStrings = [
  '', ' ', '\t', '\u00a0', 'x y', 'x  y', ' x', 'x ', 'X', 'bogus', 'a_b$', 'a'.repeat(65), '2020-13-01', '2020-02-30',
  '2020-01-01T25:00:00Z', '2020-01-01T10:00', '20200101', '1-1-1', 'yesterday', 'Patinet/1', 'Patient/a b',
  'Patient/', 'urn:uuid:1234', 'urn:oid:1.02', '#a b', '#', 'not a reference', 'http://', 'http:// x', '\u0000',
  'x\u0001', 'urn:uuid:7F9D1A52-5F39-4BB5-9D4E-3C1E2F9A0B11', '12:00', '25:00:00', '-1', '1.5', 'true', 'ZmFpbA',
  '<div>x</div>', '<div xmlns="http://www.w3.org/1999/xhtml"><script>x</script></div>',
];

/** Property names to add: unknown, reserved, literal choice, second choice types, `_name` forms, real ones. */
const addedKeys = [
  'foo', '_foo', 'resourceType', '__proto__', 'constructor', 'toString', 'value[x]', 'valueString', 'valueBoolean',
  'valueQuantity', 'valueFoo', '_valueString', 'effectivePeriod', 'effectiveDateTime', 'onsetString', 'abatementString',
  'deceasedBoolean', 'multipleBirthInteger', '_code', '_status', '_id', '_extension', 'extension', 'modifierExtension',
  'id', 'meta', 'text', 'contained', 'dataAbsentReason', 'component', 'status', 'code', 'system', 'display', 'url',
  'coding', 'reference', 'value', 'unit', 'period', 'start', 'end', 'use', 'family', 'given', 'line', 'gender',
  'birthDate', 'subject', 'patient', 'identifier', 'type', 'entry', 'resource', 'fullUrl', 'request', 'method',
  'performer', 'category', 'note', 'telecom', 'address', 'name', 'active', 'div', 'abatementDateTime', 'item',
];

/** Extensions for a primitive: as an Element object, in a pair of arrays, or the wrong shape. */
const primitiveExtensions: unknown[] = [
  { extension: [extension()] },
  { id: 'e1' },
  { id: 'e1', extension: [extension()] },
  { extension: [extension({})] },
  { extension: [extension({ valueString: 'x', extension: [extension()] })] },
  { extension: [] },
  { foo: 1 },
  { constructor: 1, extension: [extension()] },
  {},
  'x',
  1,
  [],
  [{ extension: [extension()] }],
  [null],
];

type Mutation =
  | { op: 'delete'; at: number }
  | { op: 'replace'; at: number; value: unknown }
  | { op: 'badString'; at: number; variant: number }
  | { op: 'add'; at: number; key: number; value: unknown }
  | { op: 'wrap'; at: number }
  | { op: 'unwrap'; at: number }
  | { op: 'nullItem'; at: number }
  | { op: 'primitiveExtension'; at: number; variant: number; arrayLength: number }
  | { op: 'nest'; into: number };

const index = fc.nat({ max: 1_000_000 });
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('delete' as const), at: index }),
  fc.record({ op: fc.constant('replace' as const), at: index, value: anyValue }),
  fc.record({ op: fc.constant('badString' as const), at: index, variant: fc.nat({ max: badStrings.length - 1 }) }),
  fc.record({ op: fc.constant('add' as const), at: index, key: fc.nat({ max: addedKeys.length - 1 }), value: anyValue }),
  fc.record({ op: fc.constant('wrap' as const), at: index }),
  fc.record({ op: fc.constant('unwrap' as const), at: index }),
  fc.record({ op: fc.constant('nullItem' as const), at: index }),
  fc.record({
    op: fc.constant('primitiveExtension' as const),
    at: index,
    variant: fc.nat({ max: primitiveExtensions.length - 1 }),
    arrayLength: fc.nat({ max: 3 }),
  }),
  fc.record({ op: fc.constant('nest' as const), into: fc.nat({ max: 3 }) }),
);

const pick = <T>(items: readonly T[], at: number): T | undefined => (items.length === 0 ? undefined : items[at % items.length]);

/** Applies one mutation in place (the root may be replaced: `nest`); returns the new root. */
function mutate(root: Json, m: Mutation): Json {
  const places = placesOf(root).filter((p) => p.steps.length > 0);
  const objects = places.filter((p) => p.value !== null && typeof p.value === 'object' && !Array.isArray(p.value));
  switch (m.op) {
    case 'delete': {
      const place = pick(places, m.at);
      const parent = place && parentOf(root, place.steps);
      const last = place?.steps[place.steps.length - 1];
      if (parent && last !== undefined) {
        if (Array.isArray(parent) && typeof last === 'number') parent.splice(last, 1);
        else delete parent[last];
      }
      return root;
    }
    case 'replace':
    case 'badString': {
      const candidates = m.op === 'badString' ? places.filter((p) => typeof p.value === 'string') : places;
      const place = pick(candidates, m.at);
      const parent = place && parentOf(root, place.steps);
      if (parent && place) setOwn(parent, place.steps[place.steps.length - 1]!, m.op === 'badString' ? badStrings[m.variant] : clone(m.value));
      return root;
    }
    case 'add': {
      const target = pick([{ steps: [], value: root }, ...objects], m.at);
      if (target) setOwn(target.value as Json, addedKeys[m.key]!, clone(m.value));
      return root;
    }
    case 'wrap':
    case 'unwrap': {
      const candidates = m.op === 'unwrap' ? places.filter((p) => Array.isArray(p.value)) : places;
      const place = pick(candidates, m.at);
      const parent = place && parentOf(root, place.steps);
      if (parent && place) setOwn(parent, place.steps[place.steps.length - 1]!, m.op === 'wrap' ? [place.value] : (place.value as unknown[])[0]);
      return root;
    }
    case 'nullItem': {
      const place = pick(places.filter((p) => Array.isArray(p.value) && p.value.length > 0), m.at);
      if (place) (place.value as unknown[])[m.at % (place.value as unknown[]).length] = null;
      return root;
    }
    case 'primitiveExtension': {
      // Beside a primitive value: `_name` of an object property, or a partner array for an array item.
      const place = pick(places.filter((p) => p.value === null || typeof p.value !== 'object'), m.at);
      if (!place) return root;
      const ext = clone(primitiveExtensions[m.variant]);
      const last = place.steps[place.steps.length - 1]!;
      if (typeof last === 'string') {
        const parent = parentOf(root, place.steps)!;
        setOwn(parent, `_${last}`, ext);
      } else {
        const arraySteps = place.steps.slice(0, -1);
        const name = arraySteps[arraySteps.length - 1];
        const holder = parentOf(root, arraySteps);
        if (holder && typeof name === 'string') {
          const partner: unknown[] = Array.from({ length: m.arrayLength || (holder[name] as unknown[]).length }, () => null);
          partner[last % partner.length] = ext;
          setOwn(holder, `_${name}`, partner);
        }
      }
      return root;
    }
    case 'nest': {
      // The mutated resource inside another: a Bundle entry, a contained resource, a Parameters resource.
      if (m.into === 0) return { resourceType: 'Bundle', type: 'collection', entry: [{ resource: root }] };
      if (m.into === 1) return { resourceType: 'Bundle', type: 'transaction', entry: [{ fullUrl: 'urn:uuid:7f9d1a52-5f39-4bb5-9d4e-3c1e2f9a0b11', resource: root, request: { method: 'POST', url: String(root['resourceType']) } }] };
      if (m.into === 2) return { resourceType: 'Patient', id: 'p1', contained: [root], generalPractitioner: [{ reference: `#${String(root['id'])}` }] };
      return { resourceType: 'Parameters', parameter: [{ name: 'resource', resource: root }] };
    }
  }
}

/**
 * Mutation bases: resources of every type in the corpus (a few of each, so no type dominates), small
 * Bundles, and the official examples, which carry contained resources, `_name` extensions and narratives.
 */
const bases: Json[] = (() => {
  const byType = new Map<string, Json[]>();
  for (const r of [...syntheaResources, ...synthResources]) {
    const type = String(r['resourceType']);
    const list = byType.get(type) ?? [];
    if (list.length < 6) list.push(r);
    byType.set(type, list);
  }
  const smallBundles = synthBundles.slice(0, 3).map((b) => ({ ...b, entry: (b['entry'] as unknown[]).slice(0, 4) }));
  return [...[...byType.values()].flat(), ...smallBundles, ...examples];
})();

interface Tally {
  cases: number;
  invalid: number;
  vouched: number;
  /** Why the fast path left valid resources to the full path, and how often. */
  missed: Map<string, number>;
}

const newTally = (): Tally => ({ cases: 0, invalid: 0, vouched: 0, missed: new Map() });

function summary(tally: Tally): string {
  const missed = [...tally.missed].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([reason, n]) => `${n}× ${reason}`);
  return `${tally.cases} cases, ${tally.invalid} invalid by the full path, ${tally.vouched} vouched for by the fast path; valid ones left to the full path: ${missed.join(', ') || 'none'}`;
}

/** Checks one mutated resource: the fast path vouches only for valid ones, and validateResource is unchanged. */
function checkAgainstFullPath(resource: Json, tally: Tally): void {
  const fast = validateFast(clone(resource));
  const full = validateResourceFully(clone(resource));
  tally.cases++;
  if (full.length > 0) tally.invalid++;
  if (fast.kind === 'valid') {
    tally.vouched++;
    expect(full, 'the fast path vouched for a resource the full path rejects').toEqual([]);
  } else if (full.length === 0) {
    tally.missed.set(fast.reason, (tally.missed.get(fast.reason) ?? 0) + 1);
  }
  expect(validateResource(clone(resource))).toEqual(full);
}

describe('the fast path on mutated resources (fast-check)', () => {
  it('never vouches for a resource the full path rejects, and validateResource answers as the full path does', () => {
    const tally = newTally();
    fc.assert(
      fc.property(fc.nat({ max: bases.length - 1 }), fc.array(mutation, { minLength: 1, maxLength: 3 }), (base, mutations) => {
        let resource = clone(bases[base]!);
        for (const m of mutations) resource = mutate(resource, m);
        checkAgainstFullPath(resource, tally);
      }),
      { numRuns: runs },
    );
    console.log(`mutated resources: ${summary(tally)}`);
    // The mutations must mostly break something, and must leave some resources valid (else nothing is tested).
    expect(tally.invalid).toBeGreaterThan(tally.cases * 0.4);
    expect(tally.vouched).toBeGreaterThan(0);
  }, propertyTimeoutMs);

  it('never vouches for a resource of a real type with arbitrary properties that the full path rejects', () => {
    const tally = newTally();
    const types = ['Patient', 'Observation', 'Bundle', 'Condition', 'Encounter', 'Basic', 'Parameters', 'Binary'];
    const key = fc.oneof(fc.constantFrom(...addedKeys), fc.string({ maxLength: 8 }));
    fc.assert(
      fc.property(fc.constantFrom(...types), fc.dictionary(key, anyValue, { maxKeys: 4 }), (resourceType, body) => {
        const resource: Json = {};
        for (const [k, v] of Object.entries(body)) setOwn(resource, k, v);
        resource['resourceType'] = resourceType;
        checkAgainstFullPath(resource, tally);
      }),
      { numRuns: runs },
    );
    console.log(`arbitrary properties: ${summary(tally)}`);
    expect(tally.invalid).toBeGreaterThan(0);
    expect(tally.vouched).toBeGreaterThan(0);
  }, propertyTimeoutMs);
});

describe('the fast path on each kind of problem', () => {
  const observation = (): Json => clone(synthResources.find((r) => r['resourceType'] === 'Observation' && r['valueQuantity'])!);
  const patient = (): Json => clone(synthResources.find((r) => r['resourceType'] === 'Patient')!);
  const withChange = (make: () => Json, change: (r: Json) => void): Json => {
    const r = make();
    change(r);
    return r;
  };

  it.each<[string, Json]>([
    ['a required element dropped (Observation.status)', withChange(observation, (r) => delete r['status'])],
    ['a string for a boolean', withChange(patient, (r) => (r['active'] = 'yes'))],
    ['a bad date', withChange(patient, (r) => (r['birthDate'] = '1980-13-01'))],
    ['a bad dateTime in a choice', withChange(observation, (r) => (r['effectiveDateTime'] = 'yesterday'))],
    ['a code outside its required value set', withChange(patient, (r) => (r['gender'] = 'girl'))],
    ['a bad id', withChange(patient, (r) => (r['id'] = 'a_b$'))],
    ['a bad reference', withChange(observation, (r) => (r['subject'] = { reference: 'Patinet/1' }))],
    ['an unknown property', withChange(patient, (r) => (r['foo'] = 1))],
    ['an array for a single value', withChange(patient, (r) => (r['gender'] = ['male']))],
    ['an empty string', withChange(patient, (r) => (r['birthDate'] = ''))],
    ['an empty array', withChange(patient, (r) => (r['telecom'] = []))],
    ['an empty object in an array', withChange(patient, (r) => (r['name'] = [{}]))],
    ['two types for value[x]', withChange(observation, (r) => (r['valueString'] = 'x'))],
    ['null inside an array', withChange(patient, (r) => (r['name'] = [null]))],
    ['a primitive extension that is not an object', withChange(patient, (r) => (r['_gender'] = 'x'))],
    ['an extension with a value and extensions (ext-1)', withChange(patient, (r) => (r['extension'] = [extension({ valueString: 'x', extension: [extension()] })]))],
    ['a dataAbsentReason beside a value (obs-6)', withChange(observation, (r) => (r['dataAbsentReason'] = { text: 'x' }))],
    ['a contained resource with meta.versionId (dom-4)', withChange(patient, (r) => (r['contained'] = [{ resourceType: 'Patient', id: 'c1', meta: { versionId: '1' } }]))],
    ['a bad resource inside a contained resource', withChange(patient, (r) => (r['contained'] = [{ resourceType: 'Observation', id: 'c1', status: 'done', code: { text: 'x' } }]))],
    ['a bad resource inside a Bundle entry', { resourceType: 'Bundle', type: 'collection', entry: [{ resource: withChange(observation, (r) => delete r['code']) }] }],
  ])('%s: the full path rejects it and the fast path does not vouch', (_name, resource) => {
    expect(validateResourceFully(clone(resource)).length).toBeGreaterThan(0);
    expect(validateFast(clone(resource)).kind).toBe('undecided');
  });
});

describe('the invariants the fast path leaves out', () => {
  // The fast path skips exactly the constraint keys @medplum/core skips (ele-1, dom-3, org-1, sdf-19). Should a
  // later @medplum/core evaluate one of them, these resources would become invalid and this test would fail
  // before the fast path could vouch for a resource the full path rejects.
  it.each<[string, Json]>([
    ['ele-1 (an element with only an id)', { resourceType: 'Patient', id: 'p1', name: [{ id: 'n1' }] }],
    ['dom-3 (a contained resource nothing refers to)', { resourceType: 'Patient', id: 'p1', contained: [{ resourceType: 'Patient', id: 'c1', active: true }] }],
    ['org-1 (an Organization without name or identifier)', { resourceType: 'Organization', id: 'o1', active: true }],
  ])('%s: the full path accepts it and the fast path vouches for it', (_name, resource) => {
    expect(describeIssues(resource)).toEqual([]);
    expect(validateFast(clone(resource))).toEqual({ kind: 'valid' });
  });
});
