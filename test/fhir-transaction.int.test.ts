/**
 * Transaction and batch Bundles over real HTTP (http://hl7.org/fhir/R4/http.html#transaction): every entry
 * method and conditional form, urn:uuid and conditional references, the spec's processing order, all-or-
 * nothing rollback (nothing stored, the ledger unchanged) on every kind of failure, batches with mixed
 * outcomes, and bad entries refused with a 4xx OperationOutcome naming `Bundle.entry[i]...`.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { committedVersions, dataLeaves, useFhirNode } from './helpers.js';

const fhir = useFhirNode('Marsh Harbour Clinic');
const { call } = fhir;

const bundle = (type: 'transaction' | 'batch', entry: unknown[]) => call('POST', '/fhir', { resourceType: 'Bundle', type, entry });
const ledgerSize = () => dataLeaves(fhir.running.node.ledger);
/** Versions committed to the ledger since it had `size` leaves (a leaf may commit several of one patient). */
const treeSize = () => fhir.running.node.ledger.treeSize;
/** Blocks after `height` that commit record versions other than AuditEvents. */
function dataBlocksSince(height: number): number {
  const ledger = fhir.running.node.ledger;
  let n = 0;
  for (let h = height + 1; h <= ledger.height; h++) {
    const hasData = ledger.store.blockTxs(h).some((t) => {
      const tx = JSON.parse(Buffer.from(t.bytes).toString('utf8'));
      return tx.type === 'record.commit' && ((tx.body.versions ?? [tx.body]) as { resourceType: string }[]).some((v) => v.resourceType !== 'AuditEvent');
    });
    if (hasData) n++;
  }
  return n;
}

/**
 * The newest version of each resource type these transactions write (system history would show the
 * AuditEvents every request adds first).
 */
async function newestData(): Promise<string[]> {
  const newest = [];
  for (const type of ['Patient', 'Observation']) newest.push((await call('GET', `/fhir/${type}/_history?_count=1`)).json.entry?.[0]?.fullUrl);
  return newest;
}
/** Record versions (AuditEvents aside) committed by the leaves from tree size `size` on. */
const versionsCommittedSince = (size: number) => committedVersions(fhir.running.node.ledger.store, size, treeSize());
/** A fresh identifier system, so each test's searches see only its own resources. */
const freshSystem = () => `urn:test:${randomUUID()}`;
const patient = (system: string, value: string, extra: Record<string, unknown> = {}) => ({
  resourceType: 'Patient',
  identifier: [{ system, value }],
  name: [{ family: 'Thistlewood', given: ['Marguerite'] }],
  ...extra,
});
const observation = (subject: string, extra: Record<string, unknown> = {}) => ({
  resourceType: 'Observation',
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
  subject: { reference: subject },
  ...extra,
});
const post = (resource: { resourceType: string } & Record<string, unknown>, fullUrl?: string, ifNoneExist?: string) => ({
  ...(fullUrl ? { fullUrl } : {}),
  resource,
  request: { method: 'POST', url: resource.resourceType, ...(ifNoneExist ? { ifNoneExist } : {}) },
});
const urn = () => `urn:uuid:${randomUUID()}`;
const statuses = (r: { json: { entry: { response: { status: string } }[] } }) => r.json.entry.map((e) => e.response.status);
const expressions = (r: { json: { issue: { expression?: string[] }[] } }) => r.json.issue.flatMap((i) => i.expression ?? []);
async function createPatient(system: string, value: string, extra: Record<string, unknown> = {}) {
  const r = await call('POST', '/fhir/Patient', patient(system, value, extra));
  expect(r.status).toBe(201);
  return r.json as { id: string; meta: { versionId: string } } & Record<string, unknown>;
}
async function searchTotal(query: string) {
  return (await call('GET', `/fhir/${query}`)).json.total as number;
}
const base64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64');

describe('transaction entries', () => {
  it('creates with POST, rewrites urn:uuid references (narrative links too) and answers a transaction-response', async () => {
    const system = freshSystem();
    const p = urn();
    const before = treeSize();
    const obs = observation(p, { text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml"><a href="${p}">the patient</a></div>` } });
    const r = await bundle('transaction', [post(obs), post(patient(system, 'A-1'), p)]);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ resourceType: 'Bundle', type: 'transaction-response' });
    expect(statuses(r)).toEqual(['201 Created', '201 Created']);
    const [o, pt] = r.json.entry;
    expect(pt.resource.resourceType).toBe('Patient');
    expect(pt.response).toEqual({
      status: '201 Created',
      location: `Patient/${pt.resource.id}/_history/1`,
      etag: 'W/"1"',
      lastModified: pt.resource.meta.lastUpdated,
    });
    expect(pt.fullUrl).toBe(`${fhir.running.url}/fhir/Patient/${pt.resource.id}`);
    const stored = (await call('GET', `/fhir/${o.response.location}`)).json;
    expect(stored.subject.reference).toBe(`Patient/${pt.resource.id}`);
    expect(stored.text.div).toContain(`href="Patient/${pt.resource.id}"`);
    expect(stored).toEqual(o.resource);
    expect(versionsCommittedSince(before)).toBe(2);
  });

  it('updates with PUT and If-Match, deletes, reads and searches; answers in request order after processing DELETE, POST, PUT, GET', async () => {
    const system = freshSystem();
    const a = await createPatient(system, 'keep');
    const b = await createPatient(system, 'drop');
    const before = treeSize();
    const r = await bundle('transaction', [
      { request: { method: 'GET', url: `Patient/${a.id}` } },
      { request: { method: 'GET', url: `Patient?identifier=${encodeURIComponent(`${system}|new`)}` } },
      { resource: { ...a, active: true }, request: { method: 'PUT', url: `Patient/${a.id}`, ifMatch: 'W/"1"' } },
      { request: { method: 'DELETE', url: `Patient/${b.id}` } },
      post(patient(system, 'new')),
    ]);
    expect(r.status).toBe(200);
    expect(statuses(r)).toEqual(['200 OK', '200 OK', '200 OK', '204 No Content', '201 Created']);
    const [read, search, put, del, created] = r.json.entry;
    // The GETs ran last: they see the update and the create of the same transaction.
    expect(read.resource).toMatchObject({ id: a.id, active: true, meta: { versionId: '2' } });
    expect(read.response.etag).toBe('W/"2"');
    expect(search.resource).toMatchObject({ resourceType: 'Bundle', type: 'searchset', total: 1 });
    expect(search.resource.entry[0].resource.id).toBe(created.resource.id);
    expect(put.response).toMatchObject({ location: `Patient/${a.id}/_history/2`, etag: 'W/"2"' });
    expect(del.response.etag).toBe('W/"2"');
    expect(del.resource).toBeUndefined();
    expect((await call('GET', `/fhir/Patient/${b.id}`)).status).toBe(410);
    expect(versionsCommittedSince(before)).toBe(3);
    // Committed in processing order: the system history (newest first) lists the PUT, then the POST, then the DELETE.
    const history = (await call('GET', '/fhir/Patient/_history?_count=3')).json;
    expect(history.entry.map((e: { request: { method: string } }) => e.request.method)).toEqual(['PUT', 'POST', 'DELETE']);
  });

  it('processes DELETE before PUT: a conditional PUT after deleting its only match creates a new resource', async () => {
    const system = freshSystem();
    const old = await createPatient(system, 'Z');
    const query = `Patient?identifier=${encodeURIComponent(`${system}|Z`)}`;
    const r = await bundle('transaction', [
      { resource: patient(system, 'Z', { active: true }), request: { method: 'PUT', url: query } },
      { request: { method: 'DELETE', url: query } },
    ]);
    expect(r.status).toBe(200);
    expect(statuses(r)).toEqual(['201 Created', '204 No Content']);
    expect(r.json.entry[0].resource.id).not.toBe(old.id);
    expect((await call('GET', `/fhir/Patient/${old.id}`)).status).toBe(410);
    expect(await searchTotal(query)).toBe(1);
  });

  it('conditional create: no match creates, one match answers 200 with it, and urn:uuid references follow either', async () => {
    const system = freshSystem();
    const existing = (await call('POST', '/fhir/Organization', { resourceType: 'Organization', identifier: [{ system, value: 'old' }], name: 'Old Lab' })).json;
    const [u1, u2] = [urn(), urn()];
    const before = treeSize();
    const r = await bundle('transaction', [
      post({ resourceType: 'Organization', identifier: [{ system, value: 'old' }], name: 'Old Lab again' }, u1, `identifier=${system}|old`),
      post({ resourceType: 'Organization', identifier: [{ system, value: 'new' }], name: 'New Lab' }, u2, `Organization?identifier=${system}|new`),
      post({ resourceType: 'Practitioner', name: [{ family: 'Okafor' }], qualification: [{ code: { text: 'MD' }, issuer: { reference: u1 } }] }),
      post({ resourceType: 'Practitioner', name: [{ family: 'Lindqvist' }], qualification: [{ code: { text: 'MD' }, issuer: { reference: u2 } }] }),
    ]);
    expect(r.status).toBe(200);
    expect(statuses(r)).toEqual(['200 OK', '201 Created', '201 Created', '201 Created']);
    expect(r.json.entry[0].resource).toMatchObject({ id: existing.id, name: 'Old Lab' });
    expect(r.json.entry[0].response.location).toBe(`Organization/${existing.id}/_history/1`);
    const newId = r.json.entry[1].resource.id;
    expect(r.json.entry[2].resource.qualification[0].issuer.reference).toBe(`Organization/${existing.id}`);
    expect(r.json.entry[3].resource.qualification[0].issuer.reference).toBe(`Organization/${newId}`);
    expect(versionsCommittedSince(before)).toBe(3);
    // A second copy of the same ifNoneExist within one transaction matches the first one's new resource.
    const twice = await bundle('transaction', [
      post({ resourceType: 'Organization', identifier: [{ system, value: 'twice' }] }, undefined, `identifier=${system}|twice`),
      post({ resourceType: 'Organization', identifier: [{ system, value: 'twice' }] }, undefined, `identifier=${system}|twice`),
    ]);
    expect(statuses(twice)).toEqual(['201 Created', '200 OK']);
    expect(twice.json.entry[1].resource.id).toBe(twice.json.entry[0].resource.id);
    expect(await searchTotal(`Organization?identifier=${encodeURIComponent(`${system}|twice`)}`)).toBe(1);
  });

  it('matches a condition with the ap (approximately) prefix against a resource the same transaction creates', async () => {
    const system = freshSystem();
    // `ap` needs the current time; a condition tested against this transaction's own creations has it too.
    const r = await bundle('transaction', [
      post(patient(system, 'ap', { birthDate: '1961-06-15' })),
      post(patient(system, 'ap', { birthDate: '1961-06-15' }), undefined, `identifier=${system}|ap&birthdate=ap1961-06-15`),
    ]);
    expect(r.status).toBe(200);
    expect(statuses(r)).toEqual(['201 Created', '200 OK']);
    expect(r.json.entry[1].resource.id).toBe(r.json.entry[0].resource.id);
    expect(await searchTotal(`Patient?identifier=${encodeURIComponent(`${system}|ap`)}`)).toBe(1);
    // And a GET entry searching with `ap` is checked with the clock before the writes, then answered.
    const search = `Patient?identifier=${encodeURIComponent(`${system}|ap`)}&birthdate=ap1961-06-15`;
    const read = await bundle('transaction', [{ request: { method: 'GET', url: search } }]);
    expect(read.status).toBe(200);
    expect(statuses(read)).toEqual(['200 OK']);
    expect(read.json.entry[0].resource.total).toBe(1);
  });

  it('creates a conditionally created resource once, however many transactions and requests race to create it', async () => {
    const system = freshSystem();
    const org = { resourceType: 'Organization', identifier: [{ system, value: 'shared' }], name: 'Shared Lab' };
    const results = await Promise.all([
      ...Array.from({ length: 6 }, () => {
        const u = urn();
        return bundle('transaction', [post(org, u, `identifier=${system}|shared`), post({ resourceType: 'Practitioner', qualification: [{ code: { text: 'MD' }, issuer: { reference: u } }] })]);
      }),
      ...Array.from({ length: 3 }, () => call('POST', '/fhir/Organization', org, { 'if-none-exist': `identifier=${system}|shared` })),
      call('PUT', `/fhir/Organization?identifier=${encodeURIComponent(`${system}|shared`)}`, org),
    ]);
    // The organization's own status: its entry's in a transaction-response, the HTTP status otherwise.
    const orgStatus = results.map((r) => (r.json.resourceType === 'Bundle' ? Number(r.json.entry[0].response.status.slice(0, 3)) : r.status));
    expect(orgStatus.filter((s) => s === 201)).toHaveLength(1);
    expect(orgStatus.filter((s) => s === 200)).toHaveLength(results.length - 1);
    const orgIds = new Set(results.map((r) => (r.json.resourceType === 'Bundle' ? r.json.entry[0].resource.id : r.json.id)));
    expect(orgIds.size).toBe(1);
    expect(await searchTotal(`Organization?identifier=${encodeURIComponent(`${system}|shared`)}`)).toBe(1);
  });

  it('conditional update: no match creates (201), one match updates it (200), and urn:uuid references point at the target', async () => {
    const system = freshSystem();
    const query = `Patient?identifier=${encodeURIComponent(`${system}|cu`)}`;
    const first = await bundle('transaction', [{ resource: patient(system, 'cu'), request: { method: 'PUT', url: query } }]);
    expect(statuses(first)).toEqual(['201 Created']);
    const id = first.json.entry[0].resource.id;
    const p = urn();
    const second = await bundle('transaction', [
      post(observation(p)),
      { fullUrl: p, resource: patient(system, 'cu', { gender: 'female' }), request: { method: 'PUT', url: query, ifMatch: 'W/"1"' } },
    ]);
    expect(statuses(second)).toEqual(['201 Created', '200 OK']);
    expect(second.json.entry[1].resource).toMatchObject({ id, gender: 'female', meta: { versionId: '2' } });
    expect(second.json.entry[0].resource.subject.reference).toBe(`Patient/${id}`);
    expect(await searchTotal(query)).toBe(1);
  });

  it('conditional delete: deletes the one match, and does nothing (204) when nothing matches', async () => {
    const system = freshSystem();
    const gone = await createPatient(system, 'cd');
    const before = treeSize();
    const r = await bundle('transaction', [
      { request: { method: 'DELETE', url: `Patient?identifier=${system}|cd` } },
      { request: { method: 'DELETE', url: `Patient?identifier=${system}|nobody` } },
    ]);
    expect(statuses(r)).toEqual(['204 No Content', '204 No Content']);
    expect(r.json.entry[0].response.etag).toBe('W/"2"');
    expect(r.json.entry[1].response).toEqual({ status: '204 No Content' });
    expect((await call('GET', `/fhir/Patient/${gone.id}`)).status).toBe(410);
    expect(versionsCommittedSince(before)).toBe(1);
  });

  it('resolves conditional references to the one match, including a resource created in the same transaction', async () => {
    const system = freshSystem();
    const stored = await createPatient(system, 'cr-stored');
    const r = await bundle('transaction', [
      post(observation(`Patient?identifier=${system}|cr-stored`)),
      post(observation(`Patient?identifier=${system}|cr-new`)),
      post(patient(system, 'cr-new'), undefined, `identifier=${system}|cr-new`),
    ]);
    expect(r.status).toBe(200);
    expect(r.json.entry[0].resource.subject.reference).toBe(`Patient/${stored.id}`);
    expect(r.json.entry[1].resource.subject.reference).toBe(`Patient/${r.json.entry[2].resource.id}`);
  });

  it('applies a JSON Patch entry (Binary, application/json-patch+json) as a new version, conditional or not', async () => {
    const system = freshSystem();
    const a = await createPatient(system, 'patch-a');
    const b = await createPatient(system, 'patch-b');
    const r = await bundle('transaction', [
      { resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: base64([{ op: 'add', path: '/active', value: true }]) }, request: { method: 'PATCH', url: `Patient/${a.id}`, ifMatch: 'W/"1"' } },
      { resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: base64([{ op: 'add', path: '/gender', value: 'other' }]) }, request: { method: 'PATCH', url: `Patient?identifier=${system}|patch-b` } },
    ]);
    expect(statuses(r)).toEqual(['200 OK', '200 OK']);
    expect((await call('GET', `/fhir/Patient/${a.id}`)).json).toMatchObject({ active: true, meta: { versionId: '2' } });
    expect((await call('GET', `/fhir/Patient/${b.id}`)).json).toMatchObject({ gender: 'other', meta: { versionId: '2' } });
  });

  it('reads with GET and vread, and HEAD gives the status without the resource', async () => {
    const system = freshSystem();
    const a = await createPatient(system, 'read');
    const r = await bundle('transaction', [
      { request: { method: 'GET', url: `Patient/${a.id}/_history/1` } },
      { request: { method: 'HEAD', url: `Patient/${a.id}` } },
    ]);
    expect(statuses(r)).toEqual(['200 OK', '200 OK']);
    expect(r.json.entry[0].resource).toEqual(a);
    expect(r.json.entry[1].resource).toBeUndefined();
    expect(r.json.entry[1].response.etag).toBe('W/"1"');
  });
});

describe('transaction rollback: any failure stores nothing and leaves the ledger as it was', () => {
  const system = freshSystem();
  let a: { id: string } & Record<string, unknown>;
  let twin: string;

  beforeAll(async () => {
    a = await createPatient(system, 'rb-a');
    await createPatient(system, 'rb-twin');
    await createPatient(system, 'rb-twin');
    twin = `${system}|rb-twin`;
    await call('PUT', `/fhir/Patient/${a.id}`, { ...a, active: true });
  });

  /**
   * Entries that would succeed on their own: a create (marked, to look for afterwards) and an update of `a`;
   * failures that are about `a` itself come after a search instead.
   */
  const good = (marker: string) => [post(patient(system, marker)), { resource: { ...a, active: false }, request: { method: 'PUT', url: `Patient/${a.id}` } }];

  it.each([
    ['a stale ifMatch on PUT', 412, 'Bundle.entry[2].request.ifMatch', () => [{ resource: { ...a }, request: { method: 'PUT', url: `Patient/${a.id}`, ifMatch: 'W/"1"' } }], false],
    ['a stale ifMatch on DELETE', 412, 'Bundle.entry[2].request.ifMatch', () => [{ request: { method: 'DELETE', url: `Patient/${a.id}`, ifMatch: 'W/"1"' } }], false],
    ['a GET of an unknown id', 404, 'Bundle.entry[2].request.url', () => [{ request: { method: 'GET', url: 'Patient/no-such-patient' } }], true],
    ['a DELETE of an unknown id', 404, 'Bundle.entry[2].request.url', () => [{ request: { method: 'DELETE', url: 'Patient/no-such-patient' } }], true],
    ['a PUT of an unknown id (no update as create)', 404, 'Bundle.entry[2].request.url', () => [{ resource: { resourceType: 'Patient', id: 'no-such-patient' }, request: { method: 'PUT', url: 'Patient/no-such-patient' } }], true],
    ['an invalid resource', 422, 'Bundle.entry[2].resource.gender', () => [post({ resourceType: 'Patient', gender: 'sometimes' })], true],
    ['an ifNoneExist matching several', 412, 'Bundle.entry[2].request.ifNoneExist', () => [post(patient(system, 'x'), undefined, `identifier=${twin}`)], true],
    ['a conditional update matching several', 412, 'Bundle.entry[2].request.url', () => [{ resource: patient(system, 'rb-twin'), request: { method: 'PUT', url: `Patient?identifier=${twin}` } }], true],
    ['a conditional delete matching several', 412, 'Bundle.entry[2].request.url', () => [{ request: { method: 'DELETE', url: `Patient?identifier=${twin}` } }], true],
    ['a conditional reference matching several', 412, 'Bundle.entry[2].resource.subject.reference', () => [post(observation(`Patient?identifier=${twin}`))], true],
    ['a conditional reference matching nothing', 400, 'Bundle.entry[2].resource.subject.reference', () => [post(observation(`Patient?identifier=${system}|nobody`))], true],
    ['a GET of a resource the transaction deletes', 410, 'Bundle.entry[3].request.url', () => [{ request: { method: 'DELETE', url: `Patient/${a.id}` } }, { request: { method: 'GET', url: `Patient/${a.id}` } }], false],
    ['a JSON Patch that cannot be applied', 422, 'Bundle.entry[2].resource.data', () => [{ resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: base64([{ op: 'replace', path: '/nothing/here', value: 1 }]) }, request: { method: 'PATCH', url: `Patient/${a.id}` } }], false],
  ])('%s: %i naming %s', async (_name, status, expression, failing, keepUpdate) => {
    const marker = `marker-${randomUUID()}`;
    const entries = keepUpdate ? [...good(marker), ...failing()] : [good(marker)[0], { request: { method: 'GET', url: `Patient?identifier=${system}|rb-a` } }, ...failing()];
    const before = { size: ledgerSize(), newest: await newestData() };
    const r = await bundle('transaction', entries);
    expect(r.status).toBe(status);
    expect(r.json.resourceType).toBe('OperationOutcome');
    expect(expressions(r)).toContain(expression);
    expect(ledgerSize()).toBe(before.size);
    expect(await newestData()).toEqual(before.newest);
    expect(await searchTotal(`Patient?identifier=${system}|${marker}`)).toBe(0);
    expect((await call('GET', `/fhir/Patient/${a.id}`)).json).toMatchObject({ active: true, meta: { versionId: '2' } });
    await fhir.running.node.access.flushAudit();
    expect(await fhir.running.node.records.pendingVersions()).toEqual([]);
  });

  it('refuses a urn:uuid reference that names no entry: 400 naming it', async () => {
    const before = ledgerSize();
    const r = await bundle('transaction', [post(patient(system, 'dangling')), post(observation(urn()))]);
    expect(r.status).toBe(400);
    expect(expressions(r)).toEqual(['Bundle.entry[1].resource.subject.reference']);
    expect(ledgerSize()).toBe(before);
  });

  it('never echoes the search of a failed condition (it can hold an identifier)', async () => {
    const r = await bundle('transaction', [post(observation('Patient?identifier=urn:mrn|MRN-5521-SECRET'))]);
    expect(r.status).toBe(400);
    expect(r.text).not.toContain('MRN-5521-SECRET');
  });
});

describe('malformed transactions: 4xx OperationOutcome naming the entry, nothing stored', () => {
  const system = freshSystem();
  let a: { id: string } & Record<string, unknown>;

  beforeAll(async () => {
    a = await createPatient(system, 'bad');
  });

  it.each([
    ['a missing request.url', () => [{ resource: patient(system, 'x'), request: { method: 'POST' } }], 400, 'Bundle.entry[1].request.url'],
    ['a missing request', () => [{ resource: patient(system, 'x') }], 400, 'Bundle.entry[1].request'],
    ['an unknown method', () => [{ resource: patient(system, 'x'), request: { method: 'COPY', url: 'Patient' } }], 400, 'Bundle.entry[1].request.method'],
    ['a PUT whose resource id is not the url id', () => [{ resource: { ...a, id: 'someone-else' }, request: { method: 'PUT', url: `Patient/${a.id}` } }], 400, 'Bundle.entry[1].resource.id'],
    ['a resource type that is not the url type', () => [{ resource: patient(system, 'x'), request: { method: 'POST', url: 'Observation' } }], 400, 'Bundle.entry[1].resource.resourceType'],
    ['a POST to Type/id', () => [{ resource: patient(system, 'x'), request: { method: 'POST', url: `Patient/${a.id}` } }], 400, 'Bundle.entry[1].request.url'],
    ['a PUT with neither id nor search', () => [{ resource: patient(system, 'x'), request: { method: 'PUT', url: 'Patient' } }], 400, 'Bundle.entry[1].request.url'],
    ['an unknown resource type', () => [{ request: { method: 'GET', url: 'Spaceship/1' } }], 400, 'Bundle.entry[1].request.url'],
    ['an operation', () => [{ resource: { resourceType: 'Parameters' }, request: { method: 'POST', url: 'ValueSet/$lookup' } }], 400, 'Bundle.entry[1].request.url'],
    ['an absolute url on another server', () => [{ request: { method: 'GET', url: `http://elsewhere.example/fhir/Patient/${a.id}` } }], 400, 'Bundle.entry[1].request.url'],
    ['a malformed ifMatch', () => [{ request: { method: 'DELETE', url: `Patient/${a.id}`, ifMatch: 'version one' } }], 400, 'Bundle.entry[1].request.ifMatch'],
    ['ifNoneExist on a PUT', () => [{ resource: a, request: { method: 'PUT', url: `Patient/${a.id}`, ifNoneExist: 'identifier=x|y' } }], 400, 'Bundle.entry[1].request.ifNoneExist'],
    ['a PATCH without a Binary', () => [{ resource: { resourceType: 'Parameters', parameter: [] }, request: { method: 'PATCH', url: `Patient/${a.id}` } }], 400, 'Bundle.entry[1].resource'],
    ['a PATCH Binary that holds no JSON Patch', () => [{ resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: base64({ op: 'add' }) }, request: { method: 'PATCH', url: `Patient/${a.id}` } }], 400, 'Bundle.entry[1].resource.data'],
    ['two entries updating one resource', () => [{ resource: a, request: { method: 'PUT', url: `Patient/${a.id}` } }, { resource: a, request: { method: 'PUT', url: `Patient/${a.id}` } }], 400, 'Bundle.entry[2].request.url'],
    ['a DELETE and a PATCH of one resource', () => [{ request: { method: 'DELETE', url: `Patient/${a.id}` } }, { resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: base64([{ op: 'add', path: '/active', value: true }]) }, request: { method: 'PATCH', url: `Patient/${a.id}` } }], 400, 'Bundle.entry[2].request.url'],
    ['a conditional update matching a resource the transaction creates', () => [post(patient(system, 'twice-over')), { resource: patient(system, 'twice-over'), request: { method: 'PUT', url: `Patient?identifier=${system}|twice-over` } }], 400, 'Bundle.entry[2].request.url'],
    ['a repeated fullUrl', () => [post(patient(system, 'x'), 'urn:uuid:5b7e0a52-5d8e-4c55-9d6c-6a0f6f1a2b3c'), post(patient(system, 'y'), 'urn:uuid:5b7e0a52-5d8e-4c55-9d6c-6a0f6f1a2b3c')], 400, 'Bundle.entry[2].fullUrl'],
  ])('%s', async (_name, entries, status, expression) => {
    const before = ledgerSize();
    const r = await bundle('transaction', [post(patient(system, 'should-not-exist')), ...entries()]);
    expect(r.status).toBe(status);
    expect(r.json.resourceType).toBe('OperationOutcome');
    expect(expressions(r)).toContain(expression);
    expect(ledgerSize()).toBe(before);
    expect(await searchTotal(`Patient?identifier=${system}|should-not-exist`)).toBe(0);
  });

  it('lists every malformed entry at once', async () => {
    const r = await bundle('transaction', [{ request: { method: 'POST' } }, post(patient(system, 'fine')), { request: { method: 'TRACE', url: 'Patient' } }]);
    expect(r.status).toBe(400);
    expect(expressions(r)).toEqual(['Bundle.entry[0].request.url', 'Bundle.entry[2].request.method']);
  });

  it('answers an empty transaction with an empty transaction-response (no empty entry array)', async () => {
    const r = await call('POST', '/fhir', { resourceType: 'Bundle', type: 'transaction' });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ resourceType: 'Bundle', type: 'transaction-response' });
  });

  it('refuses a Bundle that is neither a transaction nor a batch', async () => {
    const r = await call('POST', '/fhir', { resourceType: 'Bundle', type: 'collection', entry: [] });
    expect(r.status).toBe(400);
    expect(expressions(r)).toEqual(['Bundle.type']);
  });
});

describe('batch', () => {
  it('answers each entry on its own: successes are stored, failures carry their status and OperationOutcome', async () => {
    const system = freshSystem();
    const a = await createPatient(system, 'batch-a');
    const b = await createPatient(system, 'batch-b');
    const before = { size: treeSize(), height: fhir.running.node.ledger.height };
    const r = await bundle('batch', [
      post(patient(system, 'batch-new')),
      post({ resourceType: 'Patient', gender: 'sometimes' }),
      { resource: { resourceType: 'Patient', id: 'no-such-patient' }, request: { method: 'PUT', url: 'Patient/no-such-patient' } },
      { request: { method: 'DELETE', url: `Patient/${b.id}` } },
      { request: { method: 'GET', url: `Patient/${a.id}` } },
      { request: { method: 'GET', url: 'Patient/no-such-patient' } },
      { resource: { ...a, active: true }, request: { method: 'PUT', url: `Patient/${a.id}`, ifMatch: 'W/"7"' } },
      { resource: patient(system, 'x'), request: { method: 'POST' } },
      { resource: { ...a, gender: 'male' }, request: { method: 'PUT', url: `Patient/${a.id}` } },
    ]);
    expect(r.status).toBe(200);
    expect(r.json.type).toBe('batch-response');
    expect(statuses(r)).toEqual([
      '201 Created',
      '422 Unprocessable Entity',
      '404 Not Found',
      '204 No Content',
      '200 OK',
      '404 Not Found',
      '412 Precondition Failed',
      '400 Bad Request',
      '200 OK',
    ]);
    for (const i of [1, 2, 5, 6, 7]) expect(r.json.entry[i].response.outcome.resourceType).toBe('OperationOutcome');
    expect(r.json.entry[1].response.outcome.issue.flatMap((i: { expression?: string[] }) => i.expression ?? [])).toContain('Bundle.entry[1].resource.gender');
    expect(r.json.entry[7].response.outcome.issue[0].expression).toEqual(['Bundle.entry[7].request.url']);
    // The GET ran after the writes: it sees the update of entry 8.
    expect(r.json.entry[4].resource).toMatchObject({ gender: 'male', meta: { versionId: '2' } });
    expect((await call('GET', `/fhir/Patient/${b.id}`)).status).toBe(410);
    expect(await searchTotal(`Patient?identifier=${system}|batch-new`)).toBe(1);
    // Exactly the three successful writes reached the ledger, in one group commit (one block; the audit
    // entries of the requests may take blocks of their own).
    expect(versionsCommittedSince(before.size)).toBe(3);
    expect(dataBlocksSince(before.height)).toBe(1);
  });

  it('lets two entries of a batch update one resource one after the other', async () => {
    const system = freshSystem();
    const a = await createPatient(system, 'batch-twice');
    const r = await bundle('batch', [
      { resource: { ...a, active: true }, request: { method: 'PUT', url: `Patient/${a.id}` } },
      { resource: { ...a, gender: 'female' }, request: { method: 'PUT', url: `Patient/${a.id}` } },
    ]);
    expect(statuses(r)).toEqual(['200 OK', '200 OK']);
    expect(r.json.entry.map((e: { response: { etag: string } }) => e.response.etag)).toEqual(['W/"2"', 'W/"3"']);
  });

  it('refuses a urn:uuid reference to another batch entry (a batch has no interdependencies), and only that entry', async () => {
    const p = urn();
    const r = await bundle('batch', [post(patient(freshSystem(), 'lonely'), p), post(observation(p))]);
    expect(statuses(r)).toEqual(['201 Created', '400 Bad Request']);
    expect(r.json.entry[1].response.outcome.issue[0].expression).toEqual(['Bundle.entry[1].resource.subject.reference']);
  });
});

describe('Synthea-style conditional bundles', () => {
  /**
   * A Synthea patient bundle in the form Synthea writes when organizations and practitioners are shared
   * between patients: those entries are conditional creates (ifNoneExist on their identifier), and every
   * reference to them is a conditional reference (`Organization?identifier=…`).
   */
  function conditionalSynthea(): { entry: { fullUrl: string; resource: Record<string, any>; request: Record<string, string> }[] } {
    const dir = join(import.meta.dirname, 'vectors/synthea');
    const b = JSON.parse(readFileSync(join(dir, readdirSync(dir).filter((f) => f.endsWith('.json')).sort()[0]!), 'utf8'));
    const conditional = new Map<string, string>();
    for (const e of b.entry) {
      if (e.resource.resourceType !== 'Organization' && e.resource.resourceType !== 'Practitioner') continue;
      const id = e.resource.identifier[0];
      e.request.ifNoneExist = `identifier=${id.system}|${id.value}`;
      conditional.set(e.fullUrl, `${e.resource.resourceType}?identifier=${id.system}|${id.value}`);
    }
    const rewrite = (v: unknown): unknown =>
      Array.isArray(v) ? v.map(rewrite) : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, k === 'reference' && conditional.has(x as string) ? conditional.get(x as string) : rewrite(x)])) : v;
    for (const e of b.entry) e.resource = rewrite(e.resource);
    return b;
  }

  it('imports one twice: the second time matches the same organizations and practitioners instead of duplicating them', async () => {
    const b = conditionalSynthea();
    const shared = b.entry.flatMap((e, i) => (e.request.ifNoneExist ? [i] : []));
    expect(shared.length).toBeGreaterThan(1);
    const first = await bundle('transaction', b.entry);
    expect(first.status).toBe(200);
    expect(statuses(first).every((s: string) => s === '201 Created')).toBe(true);
    const second = await bundle('transaction', conditionalSynthea().entry);
    expect(second.status).toBe(200);
    for (const i of shared) {
      expect(second.json.entry[i].response.status).toBe('200 OK');
      expect(second.json.entry[i].resource.id).toBe(first.json.entry[i].resource.id);
    }
    // Every conditional reference now names the one stored organization or practitioner.
    const ids = new Set(shared.map((i) => `${first.json.entry[i].resource.resourceType}/${first.json.entry[i].resource.id}`));
    const encounter = second.json.entry.find((e: any) => e.resource.resourceType === 'Encounter').resource;
    expect(ids.has(encounter.serviceProvider.reference)).toBe(true);
    expect(JSON.stringify(second.json)).not.toMatch(/"reference":"(Organization|Practitioner)\?/);
    for (const i of shared) {
      const r = b.entry[i]!.resource;
      expect(await searchTotal(`${r.resourceType}?identifier=${encodeURIComponent(`${r.identifier[0].system}|${r.identifier[0].value}`)}`)).toBe(1);
    }
  }, 60_000);
});

describe('conditional update and delete as plain REST requests', () => {
  it('PUT [type]?[search] creates when nothing matches (201, Location), updates the one match (200), and refuses several (412)', async () => {
    const system = freshSystem();
    const query = `/fhir/Patient?identifier=${encodeURIComponent(`${system}|rest`)}`;
    const created = await call('PUT', query, patient(system, 'rest'));
    expect(created.status).toBe(201);
    expect(created.headers.get('location')).toBe(`${fhir.running.url}/fhir/Patient/${created.json.id}/_history/1`);
    const updated = await call('PUT', query, patient(system, 'rest', { active: true }), { 'if-match': 'W/"1"' });
    expect(updated.status).toBe(200);
    expect(updated.json).toMatchObject({ id: created.json.id, active: true, meta: { versionId: '2' } });
    expect((await call('PUT', query, patient(system, 'rest'), { 'if-match': 'W/"1"' })).status).toBe(412);
    await createPatient(system, 'rest');
    const before = ledgerSize();
    const several = await call('PUT', query, patient(system, 'rest'));
    expect(several.status).toBe(412);
    expect(several.json.issue[0].diagnostics).toMatch(/matches 2 Patient resources/);
    expect(ledgerSize()).toBe(before);
  });

  it('reports an invalid resource of a conditional update with its own FHIRPath, not a Bundle path', async () => {
    const system = freshSystem();
    const r = await call('PUT', `/fhir/Patient?identifier=${system}|x`, { resourceType: 'Patient', gender: 'sometimes' });
    expect(r.status).toBe(422);
    expect(expressions(r)).toContain('Patient.gender');
    expect(JSON.stringify(r.json)).not.toContain('Bundle.entry');
  });

  it('DELETE [type]?[search] deletes the one match (204), does nothing when none matches, and refuses several (412)', async () => {
    const system = freshSystem();
    const one = await createPatient(system, 'del-one');
    const del = await call('DELETE', `/fhir/Patient?identifier=${system}|del-one`);
    expect(del.status).toBe(204);
    expect(del.headers.get('etag')).toBe('W/"2"');
    expect((await call('GET', `/fhir/Patient/${one.id}`)).status).toBe(410);
    expect((await call('DELETE', `/fhir/Patient?identifier=${system}|del-one`)).status).toBe(204);
    await createPatient(system, 'del-two');
    await createPatient(system, 'del-two');
    const before = ledgerSize();
    expect((await call('DELETE', `/fhir/Patient?identifier=${system}|del-two`)).status).toBe(412);
    expect((await call('DELETE', '/fhir/Patient')).status).toBe(400);
    expect(ledgerSize()).toBe(before);
  });
});

describe('fuzzed transaction and batch Bundles', () => {
  it('never answer 5xx; a failed transaction changes nothing, a successful one answers every entry', async () => {
    const system = freshSystem();
    const ids = [(await createPatient(system, 'f1')).id, (await createPatient(system, 'f2')).id, 'no-such-id'];
    const fullUrls = [urn(), urn(), 'http://example.org/fhir/Patient/abc'];
    const reference = fc.constantFrom(...fullUrls, `Patient/${ids[0]}`, `Patient?identifier=${system}|f1`, `Patient?identifier=${system}|nobody`, 'Spaceship?x=1', 'urn:uuid:dangling', 'Patient?');
    const id = fc.constantFrom(...ids);
    const target = fc.oneof(
      id.map((i) => `Patient/${i}`),
      fc.constantFrom(`Patient?identifier=${system}|f1`, `Patient?identifier=${system}|f2`, `Patient?identifier=${system}|f3`, `Patient?name=Thistlewood`, 'Patient?bogus=1'),
    );
    const ifMatch = fc.option(fc.constantFrom('W/"1"', 'W/"2"', 'W/"3"'), { nil: undefined });
    const fullUrl = fc.option(fc.constantFrom(...fullUrls), { nil: undefined });
    const patchData = fc.constantFrom([{ op: 'add', path: '/active', value: true }], [{ op: 'remove', path: '/nothing' }], [{ op: 'replace', path: '/id', value: 'x' }]);
    /** Mostly well-formed entries of every method and conditional form, and some noise. */
    const entry = fc.oneof(
      fc.record({ method: fc.constantFrom('GET', 'HEAD'), url: fc.oneof(target, id.map((i) => `Patient/${i}/_history/1`), fc.constant('Patient?bogus=1')) }).map((request) => ({ request })),
      fc.record({ fullUrl, resource: fc.oneof(fc.constantFrom('f1', 'f3').map((v) => patient(system, v)), reference.map((r) => observation(r)), fc.constant({ resourceType: 'Patient', gender: 'sometimes' })), ifNoneExist: fc.option(fc.constantFrom(`identifier=${system}|f1`, `identifier=${system}|f3`, 'bogus=1'), { nil: undefined }) }).map(
        ({ fullUrl, resource, ifNoneExist }) => ({ ...(fullUrl ? { fullUrl } : {}), resource, request: { method: 'POST', url: resource.resourceType, ...(ifNoneExist ? { ifNoneExist } : {}) } }),
      ),
      fc.record({ fullUrl, url: target, ifMatch, active: fc.boolean() }).map(({ fullUrl, url, ifMatch, active }) => ({
        ...(fullUrl ? { fullUrl } : {}),
        resource: { ...patient(system, 'f1'), active, ...(url.includes('?') ? {} : { id: url.slice('Patient/'.length) }) },
        request: { method: 'PUT', url, ...(ifMatch ? { ifMatch } : {}) },
      })),
      fc.record({ url: target, ifMatch, ops: patchData }).map(({ url, ifMatch, ops }) => ({
        resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: base64(ops) },
        request: { method: 'PATCH', url, ...(ifMatch ? { ifMatch } : {}) },
      })),
      fc.record({ url: target, ifMatch }).map(({ url, ifMatch }) => ({ request: { method: 'DELETE', url, ...(ifMatch ? { ifMatch } : {}) } })),
      fc.record({ fullUrl: fc.anything(), resource: fc.anything(), request: fc.record({ method: fc.string({ maxLength: 8 }), url: fc.string({ maxLength: 30 }), ifMatch: fc.anything() }, { requiredKeys: [] }) }, { requiredKeys: [] }),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('transaction', 'batch'), fc.array(entry, { maxLength: 6 }), async (type, entries) => {
        const before = ledgerSize();
        const r = await call('POST', '/fhir', { resourceType: 'Bundle', type, entry: entries });
        const what = `${type} ${JSON.stringify(entries).slice(0, 400)} → ${r.text.slice(0, 300)}`;
        expect(r.status, what).toBeLessThan(500);
        if (r.status >= 400) {
          expect(r.json.resourceType, what).toBe('OperationOutcome');
          expect(ledgerSize(), what).toBe(before);
          return;
        }
        expect(r.json.type, what).toBe(`${type}-response`);
        expect(r.json.entry ?? [], what).toHaveLength(entries.length);
        for (const e of r.json.entry ?? []) {
          expect(e.response.status, what).toMatch(/^\d{3} [A-Za-z]/);
          expect(Number(e.response.status.slice(0, 3)), what).toBeLessThan(type === 'transaction' ? 400 : 500);
        }
      }),
      { numRuns: 150 },
    );
    await fhir.running.node.access.flushAudit();
    expect(await fhir.running.node.records.pendingVersions()).toEqual([]);
  }, 120_000);
});

describe('CapabilityStatement', () => {
  it('lists transaction and batch, conditional update and single conditional delete', async () => {
    const cs = (await (await fetch(`${fhir.running.url}/fhir/metadata`)).json()) as any;
    expect(cs.rest[0].interaction.map((i: { code: string }) => i.code)).toEqual(expect.arrayContaining(['transaction', 'batch']));
    const patientCaps = cs.rest[0].resource.find((r: { type: string }) => r.type === 'Patient');
    expect(patientCaps).toMatchObject({ conditionalCreate: true, conditionalUpdate: true, conditionalDelete: 'single', updateCreate: false });
  });
});
