/**
 * SMART scopes on every /fhir route, over real HTTP on 127.0.0.1: each route needs its (type, interaction)
 * and a refusal is a 403 OperationOutcome naming the missing scope; category-granular scopes; patient/
 * scopes limited to the token's patient compartment for reads, searches, writes and Bundle entries, with
 * nothing stored when a write is refused.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { issueToken, type TokenClaims } from '../src/auth/index.js';
import { useFhirNode } from './helpers.js';

const node = useFhirNode('Quayside Hospital');
const lab = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
const vitals = 'http://terminology.hl7.org/CodeSystem/observation-category|vital-signs';

/** A token of this node with the given scope (and, for patient/ scopes, the patient in context). */
async function token(scope: string, claims: Partial<TokenClaims> = {}): Promise<string> {
  const n = node.running.node;
  return issueToken(
    { orgId: n.config.orgId, privateKey: n.keyPair.privateKey, keyId: n.keyPair.keyId, ttlSeconds: 300, nowMs: Date.now() },
    { sub: 'tester', scope, kind: 'user', ...claims },
  );
}

const as = (t: string) => ({ authorization: `Bearer ${t}` });
const call = (t: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => node.call(method, path, body, { ...as(t), ...headers });

function observation(subject: string, category: string, code = '8867-4') {
  const [system, c] = category.split('|');
  return {
    resourceType: 'Observation',
    status: 'final',
    category: [{ coding: [{ system, code: c }] }],
    code: { coding: [{ system: 'http://loinc.org', code }] },
    subject: { reference: `Patient/${subject}` },
  };
}

const ids: Record<string, string> = {};

async function create(name: string, resource: Record<string, unknown>): Promise<string> {
  const r = await node.call('POST', `/fhir/${resource.resourceType as string}`, resource);
  expect(r.status, r.text).toBe(201);
  ids[name] = r.json.id;
  return r.json.id;
}

async function countOf(query: string): Promise<number> {
  return (await node.call('GET', `/fhir/${query}${query.includes('?') ? '&' : '?'}_summary=count`)).json.total;
}

beforeAll(async () => {
  await create('pa', { resourceType: 'Patient', name: [{ family: 'Andersen' }] });
  await create('pb', { resourceType: 'Patient', name: [{ family: 'Brandt' }] });
  await create('labA', observation(ids.pa!, lab));
  await create('vitalsA', observation(ids.pa!, vitals, '8310-5'));
  await create('labB', observation(ids.pb!, lab));
  await create('condA', { resourceType: 'Condition', subject: { reference: `Patient/${ids.pa}` }, code: { text: 'x' } });
  await create('pr', { resourceType: 'Practitioner', name: [{ family: 'Castillo' }] });
});

describe('each /fhir route needs its scope', () => {
  type Row = [string, string, string, () => [string, string, unknown?, Record<string, string>?]];
  const rows: Row[] = [
    ['read', 'user/Observation.r', 'user/Observation.r', () => ['GET', `/fhir/Observation/${ids.labA}`]],
    ['vread', 'user/Observation.r', 'user/Observation.r', () => ['GET', `/fhir/Observation/${ids.labA}/_history/1`]],
    ['instance history', 'user/Observation.r', 'user/Observation.r', () => ['GET', `/fhir/Observation/${ids.labA}/_history`]],
    ['$proof', 'user/Observation.r', 'user/Observation.r', () => ['GET', `/fhir/Observation/${ids.labA}/_history/1/$proof`]],
    ['search', 'user/Observation.s', 'user/Observation.s', () => ['GET', '/fhir/Observation?code=http://loinc.org|8867-4']],
    ['search by POST', 'user/Observation.s', 'user/Observation.s', () => ['POST', '/fhir/Observation/_search', 'code=http://loinc.org|8867-4', { 'content-type': 'application/x-www-form-urlencoded' }]],
    ['type history', 'user/Observation.s', 'user/Observation.s', () => ['GET', '/fhir/Observation/_history']],
    ['system history', 'user/*.s', 'user/*.s', () => ['GET', '/fhir/_history']],
    ['create', 'user/Observation.c', 'user/Observation.c', () => ['POST', '/fhir/Observation', observation(ids.pa!, lab)]],
    ['$validate', 'user/Observation.c', 'user/Observation.c', () => ['POST', '/fhir/Observation/$validate', observation(ids.pa!, lab)]],
    ['update', 'user/Condition.u', 'user/Condition.u', () => ['PUT', `/fhir/Condition/${ids.condA}`, { resourceType: 'Condition', id: ids.condA, subject: { reference: `Patient/${ids.pa}` }, code: { text: 'y' } }]],
    ['patch', 'user/Condition.u', 'user/Condition.u', () => ['PATCH', `/fhir/Condition/${ids.condA}`, '[{"op":"replace","path":"/code/text","value":"z"}]', { 'content-type': 'application/json-patch+json' }]],
    ['conditional update', 'user/Practitioner.u', 'user/Practitioner.cus', () => ['PUT', '/fhir/Practitioner?identifier=urn:x|1', { resourceType: 'Practitioner', identifier: [{ system: 'urn:x', value: '1' }] }]],
    ['conditional delete', 'user/Practitioner.d', 'user/Practitioner.ds', () => ['DELETE', '/fhir/Practitioner?identifier=urn:x|nothing']],
    ['delete', 'user/Practitioner.d', 'user/Practitioner.d', () => ['DELETE', `/fhir/Practitioner/${ids.pr}`]],
    ['$everything', 'user/Patient.r', 'user/*.r', () => ['GET', `/fhir/Patient/${ids.pa}/$everything`]],
    ['$link terms', 'user/Patient.r', 'user/Patient.r', () => ['GET', `/fhir/Patient/${ids.pa}/$link`]],
    ['a transaction entry', 'Bundle.entry[0]: insufficient scope: create Observation needs user/Observation.c', 'user/Observation.c', () => ['POST', '/fhir', { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'POST', url: 'Observation' }, resource: observation(ids.pa!, lab) }] }]],
  ];

  it.each(rows)('%s: 403 naming %s without it, allowed with %s', async (_name, needed, scope, request) => {
    const [method, path, body, headers] = request();
    const without = await call(await token('user/Encounter.cruds'), method, path, body, headers);
    expect(without.status, without.text).toBe(403);
    expect(without.json.resourceType).toBe('OperationOutcome');
    expect(without.json.issue[0].code).toBe('forbidden');
    expect(without.json.issue[0].diagnostics).toContain(needed);
    const withIt = await call(await token(scope), method, path, body, headers);
    expect(withIt.status, withIt.text).toBeLessThan(300);
  });

  it('answers an unknown type with 404, and serves metadata and the SMART configuration without a token', async () => {
    expect((await call(await token('user/Encounter.r'), 'GET', '/fhir/Unicorn/1')).status).toBe(404);
    for (const path of ['/fhir/metadata', '/fhir/.well-known/smart-configuration']) {
      expect((await node.call('GET', path, undefined, { authorization: '' })).status).toBe(200);
    }
  });

  it('needs a read scope for every type _include and _revinclude bring', async () => {
    const obsOnly = await token('user/Observation.rs');
    const include = await call(obsOnly, 'GET', `/fhir/Observation?_id=${ids.labA}&_include=Observation:subject`);
    expect(include.status).toBe(403);
    expect(include.json.issue[0].diagnostics).toMatch(/_include=Observation:subject needs user\/(Patient|Group|Device|Location)\.r/);
    const both = await call(await token('user/Observation.rs user/*.r'), 'GET', `/fhir/Observation?_id=${ids.labA}&_include=Observation:subject:Patient`);
    expect(both.status).toBe(200);
    expect(both.json.entry.map((e: any) => e.search.mode)).toEqual(['match', 'include']);
    const rev = await call(await token('user/Patient.rs'), 'GET', `/fhir/Patient?_id=${ids.pa}&_revinclude=Observation:subject`);
    expect(rev.status).toBe(403);
    expect(rev.json.issue[0].diagnostics).toMatch(/user\/Observation\.r/);
  });

  it('refuses a whole transaction for one entry outside the scope, with nothing stored', async () => {
    const before = await countOf(`Condition?subject=Patient/${ids.pa}`);
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'POST', url: 'Condition' }, resource: { resourceType: 'Condition', subject: { reference: `Patient/${ids.pa}` }, code: { text: 'a' } } },
        { request: { method: 'DELETE', url: `Observation/${ids.labB}` } },
      ],
    };
    const r = await call(await token('user/Condition.cruds user/Observation.rs'), 'POST', '/fhir', bundle);
    expect(r.status).toBe(403);
    expect(r.json.issue[0].diagnostics).toMatch(/Bundle\.entry\[1\]: insufficient scope: delete Observation\/.* needs user\/Observation\.d/);
    expect(await countOf(`Condition?subject=Patient/${ids.pa}`)).toBe(before);
    expect((await node.call('GET', `/fhir/Observation/${ids.labB}`)).status).toBe(200);
  });
});

describe('category-granular scopes', () => {
  it('reads a resource of a granted category only', async () => {
    const t = await token(`user/Observation.rs?category=${lab}`);
    expect((await call(t, 'GET', `/fhir/Observation/${ids.labA}`)).status).toBe(200);
    const other = await call(t, 'GET', `/fhir/Observation/${ids.vitalsA}`);
    expect(other.status).toBe(403);
    expect(other.json.issue[0].diagnostics).toMatch(/user\/Observation\.r for its category/);
  });

  it('searches only when the search is restricted to granted categories', async () => {
    const t = await token(`user/Observation.rs?category=${lab}`);
    const open = await call(t, 'GET', '/fhir/Observation');
    expect(open.status).toBe(403);
    expect(open.json.issue[0].diagnostics).toMatch(/restrict the search with category=/);
    const restricted = await call(t, 'GET', `/fhir/Observation?category=${encodeURIComponent(lab)}`);
    expect(restricted.status).toBe(200);
    expect(restricted.json.total).toBeGreaterThanOrEqual(2);
    for (const e of restricted.json.entry) expect(e.resource.category[0].coding[0].code).toBe('laboratory');
    expect((await call(t, 'GET', `/fhir/Observation?category=${encodeURIComponent(`${lab},${vitals}`)}`)).status).toBe(403);
    expect((await call(t, 'GET', '/fhir/Observation?category=laboratory')).status).toBe(403);
    expect((await call(t, 'GET', `/fhir/Observation?category:not=${encodeURIComponent(vitals)}`)).status).toBe(403);
  });

  it('creates only resources of a granted category', async () => {
    const t = await token(`user/Observation.crs?category=${lab}`);
    expect((await call(t, 'POST', '/fhir/Observation', observation(ids.pb!, vitals))).status).toBe(403);
    expect((await call(t, 'POST', '/fhir/Observation', observation(ids.pb!, lab))).status).toBe(201);
  });
});

describe('patient/ scopes: the compartment of the token’s patient', () => {
  const patientToken = (scope = 'patient/*.cruds') => token(scope, { kind: 'patient', patient: ids.pa!, patientNetworkId: 'pat-aaaaaaaaaaaaaaaaaaaaaaaaaa' });

  it('reads, vreads and proves resources of the patient, and nothing of another patient', async () => {
    const t = await patientToken('patient/*.rs');
    for (const path of [`/fhir/Patient/${ids.pa}`, `/fhir/Observation/${ids.labA}`, `/fhir/Observation/${ids.labA}/_history/1`, `/fhir/Observation/${ids.labA}/_history`, `/fhir/Observation/${ids.labA}/_history/1/$proof`]) {
      expect((await call(t, 'GET', path)).status, path).toBe(200);
    }
    for (const path of [`/fhir/Patient/${ids.pb}`, `/fhir/Observation/${ids.labB}`, `/fhir/Observation/${ids.labB}/_history/1/$proof`, `/fhir/Practitioner/${ids.pr}`]) {
      const r = await call(t, 'GET', path);
      expect(r.status, path).toBe(403);
      expect(r.json.issue[0].diagnostics).toMatch(/outside the patient compartment/);
    }
  });

  it('gives $everything of the patient only', async () => {
    const t = await patientToken('patient/*.rs');
    const own = await call(t, 'GET', `/fhir/Patient/${ids.pa}/$everything`);
    expect(own.status).toBe(200);
    expect(own.json.entry.some((e: any) => e.resource.id === ids.labB)).toBe(false);
    expect(own.json.entry.some((e: any) => e.resource.id === ids.labA)).toBe(true);
    expect((await call(t, 'GET', `/fhir/Patient/${ids.pb}/$everything`)).status).toBe(403);
    expect((await call(await patientToken('patient/Observation.rs patient/Patient.rs'), 'GET', `/fhir/Patient/${ids.pa}/$everything`)).status).toBe(403);
  });

  it.each([
    [() => `Observation?patient=${ids.pa}`, 200],
    [() => `Observation?subject=Patient/${ids.pa}`, 200],
    [() => `Observation?subject:Patient=${ids.pa}&code=http://loinc.org|8867-4`, 200],
    [() => `Patient?_id=${ids.pa}`, 200],
    [() => 'Observation', 403],
    [() => `Observation?subject=${ids.pa}`, 403],
    [() => `Observation?patient=${ids.pa},${ids.pb}`, 403],
    [() => `Observation?patient=${ids.pb}`, 403],
    [() => `Observation?patient:not=${ids.pa}`, 403],
    [() => `Patient?_id=${ids.pa},${ids.pb}`, 403],
    [() => 'Patient?name=Brandt', 403],
    [() => `Observation?patient=${ids.pa}&_include=Observation:subject`, 403],
    [() => 'Observation/_history', 403],
    [() => '_history', 403],
  ])('search %s → %i', async (query, status) => {
    const r = await call(await patientToken('patient/*.rs'), 'GET', `/fhir/${query()}`);
    expect(r.status, r.text).toBe(status);
    if (status === 200) for (const e of r.json.entry ?? []) expect(JSON.stringify(e.resource)).not.toContain(ids.pb);
  });

  it('writes inside the compartment only, refuses PATCH and conditional writes, and stores nothing refused', async () => {
    const t = await patientToken();
    const beforeB = await countOf(`Observation?subject=Patient/${ids.pb}`);
    const intoB = await call(t, 'POST', '/fhir/Observation', observation(ids.pb!, vitals));
    expect(intoB.status).toBe(403);
    const own = await call(t, 'POST', '/fhir/Observation', observation(ids.pa!, vitals));
    expect(own.status).toBe(201);
    const moved = await call(t, 'PUT', `/fhir/Observation/${own.json.id}`, { ...observation(ids.pb!, vitals), id: own.json.id });
    expect(moved.status).toBe(403);
    const other = await call(t, 'PUT', `/fhir/Observation/${ids.labB}`, { ...observation(ids.pa!, lab), id: ids.labB });
    expect(other.status).toBe(403);
    expect((await call(t, 'PUT', `/fhir/Observation/${own.json.id}`, { ...observation(ids.pa!, lab), id: own.json.id })).status).toBe(200);
    const patch = await call(t, 'PATCH', `/fhir/Observation/${own.json.id}`, '[{"op":"replace","path":"/status","value":"amended"}]', { 'content-type': 'application/json-patch+json' });
    expect(patch.status).toBe(403);
    expect((await call(t, 'DELETE', `/fhir/Observation?patient=${ids.pa}&code=x`)).status).toBe(403);
    expect((await call(t, 'POST', `/fhir/Patient/${ids.pa}/$link`, { resourceType: 'Parameters' })).status).toBe(403);
    expect((await call(t, 'DELETE', `/fhir/Observation/${ids.labB}`)).status).toBe(403);
    expect((await call(t, 'DELETE', `/fhir/Observation/${own.json.id}`)).status).toBe(204);
    // Deleted, but still the patient's: the patient hears 410, not 403.
    expect((await call(t, 'GET', `/fhir/Observation/${own.json.id}`)).status).toBe(410);
    expect(await countOf(`Observation?subject=Patient/${ids.pb}`)).toBe(beforeB);
  });

  it('takes a conditional create only when its condition is restricted to the patient', async () => {
    const t = await patientToken();
    const open = await call(t, 'POST', '/fhir/Observation', observation(ids.pa!, lab, '2339-0'), { 'if-none-exist': 'code=http://loinc.org|2339-0' });
    expect(open.status).toBe(403);
    const restricted = await call(t, 'POST', '/fhir/Observation', observation(ids.pa!, lab, '2339-0'), { 'if-none-exist': `patient=${ids.pa}&code=http://loinc.org|2339-0` });
    expect(restricted.status).toBe(201);
  });

  it('checks every Bundle entry against the compartment before any runs', async () => {
    const t = await patientToken();
    const before = await countOf(`Observation?subject=Patient/${ids.pa}`);
    const tx = await call(t, 'POST', '/fhir', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'POST', url: 'Observation' }, resource: observation(ids.pa!, lab) },
        { request: { method: 'POST', url: 'Observation' }, resource: observation(ids.pb!, lab) },
      ],
    });
    expect(tx.status).toBe(403);
    expect(tx.json.issue[0].diagnostics).toMatch(/^Bundle\.entry\[1\]: create Observation is outside the patient compartment/);
    expect(await countOf(`Observation?subject=Patient/${ids.pa}`)).toBe(before);
    const batch = await call(t, 'POST', '/fhir', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [{ request: { method: 'GET', url: `Observation/${ids.labA}` } }, { request: { method: 'GET', url: `Observation?patient=${ids.pa}` } }],
    });
    expect(batch.status).toBe(200);
    expect(batch.json.entry.map((e: any) => e.response.status)).toEqual(['200 OK', '200 OK']);
    const foreign = await call(t, 'POST', '/fhir', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: `Observation/${ids.labB}` } }] });
    expect(foreign.status).toBe(403);
  });

  it('combines the compartment with category-granular patient/ scopes', async () => {
    const t = await patientToken(`patient/Observation.rs?category=${lab}`);
    expect((await call(t, 'GET', `/fhir/Observation/${ids.labA}`)).status).toBe(200);
    expect((await call(t, 'GET', `/fhir/Observation/${ids.vitalsA}`)).status).toBe(403);
    expect((await call(t, 'GET', `/fhir/Observation/${ids.labB}`)).status).toBe(403);
    expect((await call(t, 'GET', `/fhir/Observation?patient=${ids.pa}`)).status).toBe(403);
    const both = await call(t, 'GET', `/fhir/Observation?patient=${ids.pa}&category=${encodeURIComponent(lab)}`);
    expect(both.status).toBe(200);
    expect(both.json.entry.map((e: any) => e.resource.id)).toContain(ids.labA);
  });

  it('grants nothing to patient/ scopes without a patient in context', async () => {
    const t = await token('patient/*.rs', { kind: 'patient' });
    const r = await call(t, 'GET', `/fhir/Patient/${ids.pa}`);
    expect(r.status).toBe(403);
    expect(r.json.issue[0].diagnostics).toMatch(/not linked/);
  });
});
