/**
 * `healthledger start --database postgres://…`: a node whose record store is a private PostgreSQL cluster
 * serves FHIR writes, reads and searches; the records live in PostgreSQL, sealed.
 */
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initNode, issueAdminToken, startNode, type RunningNode } from '../src/node.js';
import { startPostgresCluster, type PostgresCluster } from './postgres-cluster.js';
import { tempDir } from './helpers.js';

const work = tempDir('hl-pgnode-');
let cluster: PostgresCluster;
let running: RunningNode;
let url = '';
let auth: Record<string, string>;

beforeAll(async () => {
  cluster = await startPostgresCluster();
  url = await cluster.createDatabase('records');
  await initNode({ org: 'Harborview Postgres', dataDir: work.path });
  running = await startNode({ dataDir: work.path, port: 0, database: url });
  auth = { authorization: `Bearer ${await issueAdminToken({ dataDir: work.path })}`, 'content-type': 'application/fhir+json' };
}, 90_000);

afterAll(async () => {
  await running?.close();
  await cluster?.stop();
  work.cleanup();
});

describe('a node on PostgreSQL', () => {
  it('writes, reads and searches records that live sealed in PostgreSQL', async () => {
    const created = await fetch(`${running.url}/fhir/Patient`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ resourceType: 'Patient', name: [{ family: 'Vandermeulen', given: ['Ilse'] }], birthDate: '1958-02-17' }),
    });
    expect(created.status).toBe(201);
    const patient = (await created.json()) as { id: string };
    const read = await fetch(`${running.url}/fhir/Patient/${patient.id}`, { headers: auth });
    expect(((await read.json()) as { name: { family: string }[] }).name[0]!.family).toBe('Vandermeulen');
    const found = (await (await fetch(`${running.url}/fhir/Patient?family=vander`, { headers: auth })).json()) as { total: number };
    expect(found.total).toBe(1);

    await running.node.access.flushAudit();
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      // The Patient, sealed in PostgreSQL; the requests' AuditEvents are records there too.
      const rows = await client.query("SELECT resource_type, count(*)::int AS n FROM record_version GROUP BY resource_type ORDER BY resource_type");
      expect(rows.rows.find((r) => r.resource_type === 'Patient')?.n).toBe(1);
      expect(rows.rows.map((r) => r.resource_type).sort()).toEqual(['AuditEvent', 'Patient']);
      const dump = await client.query("SELECT string_agg(encode(sealed, 'escape'), '') AS s FROM record_version");
      expect(String(dump.rows[0].s)).not.toContain('Vandermeulen');
    } finally {
      await client.end();
    }
    // nothing of the record went into the embedded database
    const db = new Database(`${work.path}/ledger.sqlite`, { readonly: true });
    try {
      // (init created the embedded store's empty tables; no record may be in them)
      expect(db.prepare('SELECT count(*) FROM record_version').pluck().get()).toBe(0);
    } finally {
      db.close();
    }
  });

  it('refuses a database URL that is not PostgreSQL, in one line', async () => {
    await expect(startNode({ dataDir: work.path, port: 0, database: 'mysql://x' })).rejects.toThrow(/postgres:\/\/ or postgresql:\/\/ URL/);
  });
});
