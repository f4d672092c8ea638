/**
 * Fuzzing the request parsers over real HTTP: random bodies to create, update, transaction and $validate,
 * and random query strings to search. A client mistake is never a 5xx, and nothing invalid is stored.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initNode, issueAdminToken, startNode, type RunningNode } from '../src/node.js';
import { tempDir } from './helpers.js';

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
    expect(running.node.ledger.treeSize - before).toBe(accepted);
    expect(await running.node.records.pendingVersions()).toEqual([]);
  }, 120_000);

  it('never answer 5xx to random search query strings', async () => {
    const codes = fc.constantFrom('code', 'subject', 'date', 'value-quantity', '_id', '_count', '_offset', '_summary', 'status', 'patient', 'code:text', 'subject:Patient', '_lastUpdated', 'x.y', '');
    const query = fc.array(fc.tuple(codes, fc.string({ maxLength: 40 })), { maxLength: 5 }).map((pairs) => pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&'));
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
