/**
 * Fuzzing the request parsers over real HTTP: random bodies to create, update, transaction and $validate,
 * and random query strings to search. A client mistake is never a 5xx, and nothing invalid is stored.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initNode, issueAdminToken, startNode, type RunningNode } from '../src/node.js';
import { committedVersions, tempDir } from './helpers.js';

const work = tempDir('hl-fuzz-');
let running: RunningNode;
let auth: Record<string, string>;

beforeAll(async () => {
  await initNode({ org: 'Fuzz Clinic', dataDir: work.path });
  running = await startNode({ dataDir: work.path, port: 0 });
  auth = { authorization: `Bearer ${await issueAdminToken({ dataDir: work.path })}` };
});

afterAll(async () => {
  await running?.close();
  work.cleanup();
});

/** Text that is JSON-ish: real JSON values, truncated JSON, and plain noise. */
const bodies = fc.oneof(
  fc.json(),
  fc.json().map((j) => j.slice(0, Math.max(0, j.length - 1))),
  fc.string(),
  fc.record({ resourceType: fc.constantFrom('Patient', 'Observation', 'Bundle', 'Nope', ''), id: fc.string(), meta: fc.anything(), name: fc.anything(), status: fc.anything(), entry: fc.anything(), type: fc.anything() }).map((o) => JSON.stringify(o)),
);

describe('fuzzed requests', () => {
  it('never answer 5xx to random bodies on write endpoints, and store nothing invalid', async () => {
    const before = running.node.ledger.treeSize;
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(bodies, fc.constantFrom('/fhir/Patient', '/fhir/Observation', '/fhir', '/fhir/Patient/$validate', '/fhir/Patient/abc'), async (body, path) => {
        const method = path === '/fhir/Patient/abc' ? 'PUT' : 'POST';
        const res = await fetch(`${running.url}${path}`, { method, headers: { ...auth, 'content-type': 'application/fhir+json' }, body });
        const text = await res.text();
        expect(res.status, `${method} ${path} ${body.slice(0, 200)} → ${text.slice(0, 300)}`).toBeLessThan(500);
        if (res.status === 201) accepted++;
        if (path === '/fhir' && res.status === 200) accepted += (JSON.parse(text).entry ?? []).filter((e: { response?: { status?: string } }) => e.response?.status?.startsWith('201')).length;
        if (method === 'PUT' && res.status === 200) accepted++;
        if (res.status >= 400) expect(JSON.parse(text).resourceType).toBe('OperationOutcome');
      }),
      { numRuns: 250 },
    );
    // Exactly what was acknowledged reached the ledger: one commitment per accepted version, nothing else.
    await running.node.access.flushAudit();
    expect(committedVersions(running.node.ledger.store, before, running.node.ledger.treeSize)).toBe(accepted);
    expect(await running.node.records.pendingVersions()).toEqual([]);
  }, 120_000);

  it('never answer 5xx to random search query strings', async () => {
    // Something to match, so that the exact matchers, sorting and includes run on real candidates.
    const post = async (type: string, body: object) =>
      (await (await fetch(`${running.url}/fhir/${type}`, { method: 'POST', headers: { ...auth, 'content-type': 'application/fhir+json' }, body: JSON.stringify(body) })).json()) as { id: string };
    const patient = await post('Patient', { resourceType: 'Patient', name: [{ family: 'Fuzz' }], birthDate: '1980-02' });
    await post('Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8302-2' }], text: 'height' },
      subject: { reference: `Patient/${patient.id}` },
      effectivePeriod: { start: '2020-01-01T00:00:00Z' },
      valueQuantity: { value: 5.4, unit: 'mg', system: 'http://unitsofmeasure.org', code: 'mg' },
    });
    const codes = fc.constantFrom(
      'code', 'subject', 'date', 'value-quantity', '_id', '_count', '_offset', '_summary', 'status', 'patient', 'code:text', 'subject:Patient', '_lastUpdated', 'x.y', '',
      '_sort', '_include', '_revinclude', '_elements', '_total', 'subject:Patient.name', 'patient.identifier', 'subject.birthdate', 'code:of-type', 'code:not', 'value-quantity:missing', 'date:missing',
    );
    const values = fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('ge2020', 'Observation:subject', '-date,code', '*', 'Patient:link', 'true', 'text', 'none', 'status,value', '5.4|http://unitsofmeasure.org|mg', 'ap1e2', 'sa2020-02-30', 'http://loinc.org|', '|x'));
    const query = fc.array(fc.tuple(codes, values), { maxLength: 5 }).map((pairs) => pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&'));
    await fc.assert(
      fc.asyncProperty(fc.oneof(query, fc.string({ maxLength: 80 })), async (q) => {
        const res = await fetch(`${running.url}/fhir/Observation?${q}`, { headers: auth });
        const text = await res.text();
        expect(res.status, `GET /fhir/Observation?${q} → ${text.slice(0, 300)}`).toBeLessThan(500);
      }),
      { numRuns: 300 },
    );
  }, 120_000);
});
