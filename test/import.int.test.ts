/**
 * All ten Synthea patients import through `healthledger import`; every resource reads back equal to what
 * was sent apart from id, meta and the rewritten references; a transaction with one bad entry stores
 * nothing; and the node's raw database files hold none of the patients' PHI.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initNode, issueAdminToken, startNode, type RunningNode } from '../src/node.js';
import { dataLeaves, runCliAsync, tempDir } from './helpers.js';

const vectors = join(import.meta.dirname, 'vectors/synthea');
const files = readdirSync(vectors).filter((f) => f.endsWith('.json')).map((f) => join(vectors, f));
const work = tempDir('hl-import-');
let running: RunningNode;
let token: string;

beforeAll(async () => {
  await initNode({ org: 'Bayview Hospital', dataDir: work.path });
  running = await startNode({ dataDir: work.path, port: 0 });
  token = await issueAdminToken({ dataDir: work.path });
});

afterAll(async () => {
  await running?.close();
  work.cleanup();
});

async function postBundle(bundle: unknown) {
  const res = await fetch(`${running.url}/fhir`, {
    method: 'POST',
    headers: { 'content-type': 'application/fhir+json', authorization: `Bearer ${token}` },
    body: JSON.stringify(bundle),
  });
  return { status: res.status, json: (await res.json()) as any };
}

function rewrite(value: unknown, map: Map<string, string>): unknown {
  if (Array.isArray(value)) return value.map((v) => rewrite(v, map));
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, k === 'reference' && typeof v === 'string' && map.has(v) ? map.get(v) : rewrite(v, map)]));
}

describe('importing Synthea', () => {
  it('imports all ten patients with the CLI and says so', async () => {
    expect(files).toHaveLength(10);
    const r = await runCliAsync(['import', ...files, '--url', running.url], { HEALTHLEDGER_TOKEN: token });
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^imported 10 of 10 files \(1696 resources\)$/m);
    expect(r.status).toBe(0);
    await running.node.access.flushAudit();
    expect(await running.node.records.pendingVersions()).toEqual([]);
  }, 240_000);

  it('reads every resource of a bundle back equal to what was sent, apart from id, meta and rewritten references', async () => {
    const bundle = JSON.parse(readFileSync(files[0]!, 'utf8'));
    const r = await postBundle(bundle);
    expect(r.status).toBe(200);
    expect(r.json.type).toBe('transaction-response');
    const map = new Map<string, string>();
    bundle.entry.forEach((e: { fullUrl: string }, i: number) => map.set(e.fullUrl, r.json.entry[i].response.location.split('/_history')[0]));
    for (const [i, e] of bundle.entry.entries()) {
      const location = r.json.entry[i].response.location as string;
      const res = await fetch(`${running.url}/fhir/${location}`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(200);
      const { id: _id, meta: _meta, ...got } = (await res.json()) as Record<string, unknown>;
      const { id: _sid, meta: _smeta, ...sent } = rewrite(e.resource, map) as Record<string, unknown>;
      expect(got).toEqual(sent);
    }
  }, 120_000);

  it('stores nothing from a transaction with one invalid entry, and names the entry', async () => {
    const bundle = JSON.parse(readFileSync(files[1]!, 'utf8'));
    bundle.entry[5].resource.status = 'not-a-status';
    const before = dataLeaves(running.node.ledger);
    const r = await postBundle(bundle);
    expect(r.status).toBe(422);
    expect(r.json.issue.map((i: { expression?: string[] }) => i.expression?.[0])).toContain(`Bundle.entry[5].resource.status`);
    expect(dataLeaves(running.node.ledger)).toBe(before);
    await running.node.access.flushAudit();
    expect(await running.node.records.pendingVersions()).toEqual([]);
  });

  it('answers a batch entry by entry', async () => {
    const good = { resource: { resourceType: 'Organization', name: 'Batch Lab' }, request: { method: 'POST', url: 'Organization' } };
    const bad = { resource: { resourceType: 'Organization', active: 'yes' }, request: { method: 'POST', url: 'Organization' } };
    const r = await postBundle({ resourceType: 'Bundle', type: 'batch', entry: [good, bad] });
    expect(r.status).toBe(200);
    expect(r.json.entry.map((e: { response: { status: string } }) => e.response.status)).toEqual(['201 Created', '422 Unprocessable Entity']);
  });

  it('leaves no patient PHI in the raw database files, WAL included', () => {
    const raw = ['ledger.sqlite', 'ledger.sqlite-wal', 'orderer.sqlite', 'orderer.sqlite-wal']
      .map((f) => {
        try {
          return readFileSync(join(work.path, f));
        } catch {
          return Buffer.alloc(0);
        }
      });
    expect(raw[0]!.length + raw[1]!.length).toBeGreaterThan(1_000_000);
    const needles = new Set<string>();
    for (const f of files) {
      for (const e of JSON.parse(readFileSync(f, 'utf8')).entry) {
        const p = e.resource;
        if (p.resourceType !== 'Patient') continue;
        for (const n of p.name ?? []) {
          needles.add(n.family);
          for (const g of n.given ?? []) needles.add(g);
        }
        needles.add(p.birthDate);
        for (const t of p.telecom ?? []) needles.add(t.value);
        for (const a of p.address ?? []) {
          for (const l of a.line ?? []) needles.add(l);
          needles.add(a.city);
        }
        for (const id of p.identifier ?? []) if (typeof id.value === 'string' && id.value.length >= 6) needles.add(id.value);
      }
    }
    expect(needles.size).toBeGreaterThan(60);
    const found = [...needles].filter((n) => typeof n === 'string' && n.length >= 4 && raw.some((b) => b.includes(Buffer.from(n, 'utf8'))));
    expect(found).toEqual([]);
  });
});
