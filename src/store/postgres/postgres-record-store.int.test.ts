import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { canonicalBytes } from '../../crypto/index.js';
import { repoRoot } from '../../../test/helpers.js';
import { findNeedles, needlesFound, type RawFile } from '../../../test/byte-scan.js';
import { startPostgresCluster, type PostgresCluster } from '../../../test/postgres-cluster.js';
import { importBundle, indexEntriesOf, scanFormOf, type ImportedPatient } from '../../../test/synthea-store-writes.js';
import { HlError } from '../../kernel/index.js';
import { openPostgresRecordStore, termsForWrite, type PostgresRecordStore, type RecordStore, type VersionWrite } from '../index.js';
import { generateSalt } from '../commitment.js';
import { VersionFactory, rejectionOf, runRecordStoreConformance, type RecordStoreHarness } from '../record-store.conformance.js';

// One private PostgreSQL 15 cluster for this file (test/postgres-cluster.ts); each test gets a fresh schema.
let cluster: PostgresCluster;
let admin: pg.Pool;
/** Why the cluster did not start: every test then fails with it (a failed beforeAll would only skip them). */
let clusterError: unknown;

beforeAll(async () => {
  try {
    cluster = await startPostgresCluster();
    admin = new pg.Pool({ connectionString: cluster.connectionString(), max: 2 });
  } catch (err) {
    clusterError = err;
  }
});
beforeEach(() => {
  if (clusterError !== undefined) throw clusterError;
});
afterAll(async () => {
  await admin?.end();
  await cluster?.stop();
});

interface PgHarness extends RecordStoreHarness {
  schema: string;
  /** A connection string whose sessions use the harness's schema (for a store with its own pool). */
  url: string;
  /** Runs SQL in the harness's schema, as an operator or attacker with database access would. */
  sql<R extends pg.QueryResultRow = Record<string, unknown>>(text: string, values?: unknown[]): Promise<R[]>;
  /** Opens a store with its own pool, as another node process would. */
  openSeparate(kek: Uint8Array): Promise<PostgresRecordStore>;
}

async function openHarness(): Promise<PgHarness> {
  if (clusterError !== undefined) throw clusterError;
  const schema = `t_${randomUUID().replaceAll('-', '')}`;
  await admin.query(`CREATE SCHEMA ${schema}`);
  const url = `${cluster.connectionString()}?options=${encodeURIComponent(`-c search_path=${schema}`)}`;
  const pool = new pg.Pool({ connectionString: url, max: 8 });
  const separate: PostgresRecordStore[] = [];
  return {
    schema,
    url,
    sql: async (text, values) => (await pool.query(text, values)).rows,
    open: async (kek, options) => openPostgresRecordStore({ pool, kek, clock: options?.clock }),
    openSeparate: async (kek) => {
      const store = await openPostgresRecordStore({ connectionString: url, kek });
      separate.push(store);
      return store;
    },
    close: async () => {
      await Promise.all(separate.map((s) => s.close()));
      await pool.end();
      await admin.query(`DROP SCHEMA ${schema} CASCADE`);
    },
  };
}

runRecordStoreConformance('PostgresRecordStore (private PostgreSQL 15, a schema per test)', openHarness, { purgesResidue: false });

/** Waits until `n` sessions of the cluster wait on a lock (so concurrent transactions really overlap). */
async function waitForLockWaiters(n: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { rows } = await admin.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'");
    if (rows[0]!.n >= n) return;
    if (Date.now() > deadline) throw new Error(`expected ${n} sessions waiting on a lock, saw ${rows[0]!.n}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * Holds a lock on record_current that every committed write needs after inserting its versions, so writers
 * pile up mid-transaction (locks taken, DEKs and version rows inserted, uncommitted) until `release`.
 */
async function blockCurrentUpdates(h: PgHarness): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: h.url });
  await client.connect();
  await client.query('BEGIN');
  await client.query('LOCK TABLE record_current IN SHARE ROW EXCLUSIVE MODE');
  return {
    release: async () => {
      await client.query('COMMIT');
      await client.end();
    },
  };
}

describe('PostgresRecordStore at rest and under concurrency', () => {
  let h: PgHarness;
  let kek: Uint8Array;
  let store: RecordStore;
  let f: VersionFactory;

  beforeEach(async () => {
    h = await openHarness();
    kek = new Uint8Array(randomBytes(32));
    store = await h.open(kek);
    f = new VersionFactory();
  });
  afterEach(async () => {
    await h?.close();
  });

  const sealedOf = async (type: string, id: string, vid: string): Promise<Buffer> =>
    (await h.sql<{ sealed: Buffer }>('SELECT sealed FROM record_version WHERE resource_type = $1 AND id = $2 AND version_id = $3', [type, id, vid]))[0]!
      .sealed;
  const setSealed = async (type: string, id: string, vid: string, sealed: Buffer): Promise<void> => {
    await h.sql('UPDATE record_version SET sealed = $1 WHERE resource_type = $2 AND id = $3 AND version_id = $4', [sealed, type, id, vid]);
  };

  it('creates only record_* and store_* relations in its schema, with bytewise ("C") ordering of ids', async () => {
    const names = (await h.sql<{ relname: string }>(
      'SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1',
      [h.schema],
    )).map((r) => r.relname);
    expect(names.length).toBeGreaterThan(10);
    for (const name of names) expect(name).toMatch(/^(record|store)_/);
    const ids = ['a', 'B', 'Z', '-1', '.z', '0'];
    await store.writeVersions(ids.map((id) => f.make({ id })));
    expect(await store.currentIds('Observation')).toEqual([...ids].sort());
    const collations = await h.sql<{ collation_name: string | null }>(
      "SELECT collation_name FROM information_schema.columns WHERE table_schema = $1 AND column_name = 'id'",
      [h.schema],
    );
    expect(collations.map((c) => c.collation_name)).toEqual(['C', 'C']);
  });

  it('fails a read with integrity, naming the version and returning nothing, when one ciphertext byte is flipped', async () => {
    await store.writeVersions([f.make({ id: 'o1', body: { note: [{ text: 'secret note' }] } }), f.make({ id: 'o2' })]);
    await h.sql("UPDATE record_version SET sealed = set_byte(sealed, 40, get_byte(sealed, 40) # 1) WHERE id = 'o1'");
    // Each read starts only when awaited: a rejection that settles before its handler is attached is an unhandled rejection.
    for (const read of [() => store.readVersion('Observation', 'o1'), () => store.readVersion('Observation', 'o1', '1'), () => store.historySystem()]) {
      const err = await rejectionOf(read());
      expect(err.code).toBe('integrity');
      expect(err.message).toContain('Observation/o1/_history/1');
      expect(err.message).not.toContain('secret');
    }
    expect((await store.readVersion('Observation', 'o2')).id).toBe('o2');
  });

  it('fails with integrity when ciphertexts are swapped between versions, a version id is rewritten, or a ciphertext moves patient', async () => {
    await store.writeVersions([f.make({ id: 'o1' }), f.make({ id: 'o2' }), f.make({ id: 'o3', patient: 'p2' })]);
    const a = await sealedOf('Observation', 'o1', '1');
    const b = await sealedOf('Observation', 'o2', '1');
    await setSealed('Observation', 'o1', '1', b);
    await setSealed('Observation', 'o2', '1', a);
    expect((await rejectionOf(store.readVersion('Observation', 'o1', '1'))).message).toContain('Observation/o1/_history/1');
    expect((await rejectionOf(store.readVersion('Observation', 'o2'))).code).toBe('integrity');
    await h.sql("UPDATE record_version SET version_id = '7' WHERE id = 'o3'");
    expect((await rejectionOf(store.readVersion('Observation', 'o3', '7'))).code).toBe('integrity');
    await h.sql("UPDATE record_version SET version_id = '1', owner = 'pat1' WHERE id = 'o3'");
    expect((await rejectionOf(store.readVersion('Observation', 'o3', '1'))).code).toBe('integrity');
  });

  it('fails with integrity, naming the compartment, when a wrapped data key is damaged', async () => {
    await store.writeVersions([f.make({ id: 'o1', patient: 'p1' })]);
    await h.sql("UPDATE store_dek SET wrapped = set_byte(wrapped, 20, get_byte(wrapped, 20) # 128) WHERE owner = 'p1'");
    const fresh = await h.open(kek); // no cached key
    const err = await rejectionOf(fresh.readVersion('Observation', 'o1'));
    expect(err.code).toBe('integrity');
    expect(err.message).toContain('p1');
  });

  it('rejects opening with the wrong KEK with integrity, through a pool or a connection string, and leaves the store intact', async () => {
    await store.writeVersions([f.make({ id: 'o1' })]);
    const wrong = new Uint8Array(randomBytes(32));
    expect((await rejectionOf(h.open(wrong))).code).toBe('integrity');
    expect((await rejectionOf(openPostgresRecordStore({ connectionString: h.url, kek: wrong }))).code).toBe('integrity');
    await h.sql("UPDATE store_meta SET value = set_byte(value, 30, get_byte(value, 30) # 1) WHERE key = 'index-key'");
    expect((await rejectionOf(h.open(kek))).code).toBe('integrity');
  });

  it('rotateKek re-wraps only keys: every data and index row keeps its exact bytes, and only the new KEK opens the store', async () => {
    await store.writeVersions([
      f.make({ resourceType: 'Patient', id: 'p1', patient: 'p1', index: [{ param: 'family', kind: 'string', value: 'Doe' }] }),
      f.make({ id: 'o1', patient: 'p1', index: [{ param: 'code', kind: 'token', value: 'x' }] }),
      f.make({ resourceType: 'Organization', id: 'org', patient: null }),
    ]);
    const dataRows = async (): Promise<string> =>
      JSON.stringify([
        await h.sql("SELECT seq, resource_type, id, version_id, encode(sealed, 'hex') AS sealed, encode(terms, 'hex') AS terms, xmin::text FROM record_version ORDER BY seq"),
        await h.sql("SELECT encode(term, 'hex') AS term, seq, xmin::text FROM record_index ORDER BY term, seq"),
        await h.sql('SELECT *, xmin::text FROM record_current ORDER BY seq'),
      ]);
    const keyRows = async (): Promise<Buffer[]> => [
      ...(await h.sql<{ wrapped: Buffer }>('SELECT wrapped FROM store_dek ORDER BY owner')).map((r) => r.wrapped),
      (await h.sql<{ value: Buffer }>("SELECT value FROM store_meta WHERE key = 'index-key'"))[0]!.value,
    ];
    const dataBefore = await dataRows();
    const keysBefore = await keyRows();
    const newKek = new Uint8Array(randomBytes(32));
    expect(await store.rotateKek(newKek)).toEqual({ keysRewrapped: 3, residuePurged: false });
    // Same bytes and the same row versions (xmin): no data or index row was rewritten.
    expect(await dataRows()).toBe(dataBefore);
    (await keyRows()).forEach((k, i) => expect(k.equals(keysBefore[i]!)).toBe(false));
    expect((await (await h.open(newKek)).readVersion('Observation', 'o1')).id).toBe('o1');
    expect(await (await h.open(newKek)).findByIndex('Patient', 'family', 'string', 'doe')).toEqual(['p1']);
    expect((await rejectionOf(h.open(kek))).code).toBe('integrity');
  });

  it('erasePatient deletes the DEK, ciphertexts, salts and index entries of the patient from every live row, and says residue may remain', async () => {
    await store.writeVersions([
      f.make({ resourceType: 'Patient', id: 'p1', patient: 'p1', index: [{ param: 'family', kind: 'string', value: 'Doe' }] }),
      f.make({ id: 'o1', patient: 'p1', index: [{ param: 'code', kind: 'token', value: 'x' }] }),
      f.make({ id: 'o2', patient: 'p1', status: 'pending', txId: 'txp', index: [{ param: 'code', kind: 'token', value: 'y' }] }),
      f.make({ resourceType: 'Patient', id: 'p2', patient: 'p2', index: [{ param: 'family', kind: 'string', value: 'Doe' }] }),
    ]);
    const p1Seqs = (await h.sql<{ seq: string }>("SELECT seq FROM record_version WHERE owner = 'p1'")).map((r) => r.seq);
    expect(await h.sql('SELECT 1 FROM record_index WHERE seq = ANY($1::bigint[])', [p1Seqs])).not.toEqual([]);
    expect(await store.erasePatient('p1')).toEqual({ versionsErased: 3, residuePurged: false });
    expect(await h.sql("SELECT seq FROM record_version WHERE owner = 'p1' AND (sealed IS NOT NULL OR terms IS NOT NULL OR erased_ms IS NULL)")).toEqual([]);
    expect(await h.sql("SELECT owner FROM store_dek WHERE owner = 'p1'")).toEqual([]);
    expect(await h.sql('SELECT 1 FROM record_index WHERE seq = ANY($1::bigint[])', [p1Seqs])).toEqual([]);
    expect(await store.findByIndex('Patient', 'family', 'string', 'doe')).toEqual(['p2']);
    expect((await rejectionOf(store.writeVersions([f.make({ id: 'o9', patient: 'p1' })]))).code).toBe('conflict');
  });

  it('keeps a batch atomic when PostgreSQL itself fails mid-batch: no version, index entry or new data key remains', async () => {
    await h.sql(`CREATE FUNCTION fail_boom() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.id = 'boom' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$`);
    await h.sql('CREATE TRIGGER fail_boom BEFORE INSERT ON record_version FOR EACH ROW EXECUTE FUNCTION fail_boom()');
    const batch = [
      f.make({ id: 'a', patient: 'px', index: [{ param: 'code', kind: 'token', value: 'a' }] }),
      f.make({ id: 'b', patient: 'py' }),
      f.make({ id: 'boom' }),
    ];
    await expect(store.writeVersions(batch)).rejects.toThrow(/injected failure/);
    expect(await h.sql('SELECT seq FROM record_version')).toEqual([]);
    expect(await h.sql('SELECT owner FROM store_dek')).toEqual([]);
    expect(await h.sql('SELECT seq FROM record_index')).toEqual([]);
    await h.sql('DROP TRIGGER fail_boom ON record_version');
    const retry = f.make({ id: 'a', patient: 'px' });
    await store.writeVersions([retry]);
    expect(Buffer.from((await (await h.open(kek)).readVersion('Observation', 'a')).content).equals(Buffer.from(retry.content))).toBe(true);
  });

  it('lets exactly one of several concurrent writers of the same version win; every other gets conflict', async () => {
    const writers = await Promise.all([0, 1, 2, 3].map(() => h.openSeparate(kek)));
    const resources = ['r1', 'r2', 'r3'];
    const writes = resources.flatMap((id) =>
      writers.map((w, n) => ({
        id,
        n,
        w,
        v: f.make({ id, versionId: '2', patient: 'pc', body: { writer: n }, index: [{ param: 'code', kind: 'token', value: `${id}-writer-${n}` }] }),
      })),
    );
    await store.writeVersions(resources.map((id) => f.make({ id, patient: 'pc' })));
    // The first writer of each version inserts its row and waits at the record_current lock; the 3 others
    // wait on that uncommitted row (the case ON CONFLICT must settle): 12 waiting sessions in all.
    const block = await blockCurrentUpdates(h);
    const settled = writes.map((x) => x.w.writeVersions([x.v]).then(() => 'won', (err: unknown) => err));
    await waitForLockWaiters(writes.length);
    await block.release();
    const outcomes = await Promise.all(settled);
    for (const id of resources) {
      const mine = writes.map((x, i) => ({ ...x, outcome: outcomes[i] })).filter((x) => x.id === id);
      const winners = mine.filter((x) => x.outcome === 'won');
      expect(winners).toHaveLength(1);
      for (const loser of mine.filter((x) => x.outcome !== 'won')) {
        expect(loser.outcome).toBeInstanceOf(HlError);
        expect((loser.outcome as HlError).code).toBe('conflict');
        expect((loser.outcome as HlError).message).toContain(`Observation/${id}/_history/2`);
      }
      const winner = winners[0]!;
      const current = await (await h.open(kek)).readVersion('Observation', id);
      expect(Buffer.from(current.content).equals(Buffer.from(winner.v.content))).toBe(true);
      expect(await store.findByIndex('Observation', 'code', 'token', `${id}-writer-${winner.n}`)).toEqual([id]);
      for (const loser of mine.filter((x) => x !== winner)) {
        expect(await store.findByIndex('Observation', 'code', 'token', `${id}-writer-${loser.n}`)).toEqual([]);
      }
    }
  });

  it('gives concurrent first writes into one new compartment the same data key', async () => {
    const [a, b] = await Promise.all([h.openSeparate(kek), h.openSeparate(kek)]);
    const va = f.make({ id: 'x1', patient: 'pnew', index: [{ param: 'code', kind: 'token', value: 'x1' }] });
    const vb = f.make({ id: 'x2', patient: 'pnew', index: [{ param: 'code', kind: 'token', value: 'x2' }] });
    const block = await blockCurrentUpdates(h);
    const done = Promise.all([a!.writeVersions([va]), b!.writeVersions([vb])]);
    await waitForLockWaiters(2);
    await block.release();
    await done;
    expect(await h.sql("SELECT owner FROM store_dek WHERE owner = 'pnew'")).toHaveLength(1);
    const fresh = await h.open(kek);
    expect(Buffer.from((await fresh.readVersion('Observation', 'x1')).content).equals(Buffer.from(va.content))).toBe(true);
    expect(Buffer.from((await fresh.readVersion('Observation', 'x2')).content).equals(Buffer.from(vb.content))).toBe(true);
  });

  it('orders an erasure against concurrent writes: writes before it are erased with it, writes after it get conflict', async () => {
    await store.writeVersions([f.make({ resourceType: 'Patient', id: 'pe', patient: 'pe' })]);
    const writers = await Promise.all([0, 1, 2, 3, 4, 5].map(() => h.openSeparate(kek)));
    const eraser = await h.openSeparate(kek);
    const write = (n: number): Promise<unknown> =>
      writers[n]!.writeVersions([f.make({ id: `e${n}`, patient: 'pe', index: [{ param: 'code', kind: 'token', value: `e${n}` }] })]).then(
        () => 'written',
        (err: unknown) => err,
      );
    const block = await blockCurrentUpdates(h);
    const early = [0, 1, 2].map(write);
    await waitForLockWaiters(3);
    const erasure = eraser.erasePatient('pe');
    await waitForLockWaiters(4);
    const late = [3, 4, 5].map(write);
    await waitForLockWaiters(7);
    await block.release();
    expect(await Promise.all(early)).toEqual(['written', 'written', 'written']);
    expect((await erasure).versionsErased).toBe(4);
    for (const outcome of await Promise.all(late)) expect((outcome as HlError).code).toBe('conflict');
    for (const n of [0, 1, 2]) expect((await rejectionOf(store.readVersion('Observation', `e${n}`))).message).toMatch(/erased/);
    expect(await h.sql("SELECT owner FROM store_dek WHERE owner = 'pe'")).toEqual([]);
    expect(await h.sql("SELECT seq FROM record_version WHERE owner = 'pe' AND sealed IS NOT NULL")).toEqual([]);
  });

  it('rotates the KEK while other writers are creating data keys, leaving every key wrapped under the new KEK', async () => {
    const writers = await Promise.all([0, 1, 2].map(() => h.openSeparate(kek)));
    const block = await blockCurrentUpdates(h);
    const writes = writers.map((w, n) => w.writeVersions([f.make({ id: `k${n}`, patient: `pk${n}`, index: [{ param: 'code', kind: 'token', value: 'k' }] })]));
    await waitForLockWaiters(3);
    const newKek = new Uint8Array(randomBytes(32));
    const rotation = store.rotateKek(newKek);
    await waitForLockWaiters(4);
    await block.release();
    await Promise.all(writes);
    expect((await rotation).keysRewrapped).toBe(4); // three new patients' DEKs and the blind-index key
    const reopened = await h.open(newKek);
    for (const n of [0, 1, 2]) expect((await reopened.readVersion('Observation', `k${n}`)).id).toBe(`k${n}`);
    expect(await reopened.findByIndex('Observation', 'code', 'token', 'k')).toEqual(['k0', 'k1', 'k2']);
    // A write through the rotating store after the rotation uses the new KEK too.
    await store.writeVersions([f.make({ id: 'k9', patient: 'pk9' })]);
    expect((await (await h.open(newKek)).readVersion('Observation', 'k9')).id).toBe('k9');
  });

  it('keeps reads working while the same store rotates its KEK (no false integrity errors)', async () => {
    const writes = Array.from({ length: 40 }, (_, i) => f.make({ id: `r${i}`, patient: `pr${i % 8}` }));
    await store.writeVersions(writes);
    const reads: Promise<unknown>[] = [];
    for (let round = 0; round < 5; round++) {
      for (const w of writes) reads.push(store.readVersion('Observation', w.id));
      reads.push(store.historySystem({ limit: 50 }));
    }
    const rotation = store.rotateKek(new Uint8Array(randomBytes(32)));
    for (const w of writes) reads.push(store.readVersion('Observation', w.id));
    const outcomes = await Promise.allSettled([...reads, rotation]);
    expect(outcomes.filter((o) => o.status === 'rejected')).toEqual([]);
  });

  it('returns each id once when several values of one criterion match the same resource', async () => {
    await store.writeVersions([
      f.make({
        resourceType: 'Patient',
        id: 'p1',
        patient: 'p1',
        index: [
          { param: 'given', kind: 'string', value: 'Ann' },
          { param: 'given', kind: 'string', value: 'Hubert' },
        ],
      }),
    ]);
    expect(await store.findByIndex('Patient', 'given', 'string', ['ann', 'hubert'])).toEqual(['p1']);
  });

  it('survives concurrent first opens of an empty schema (one set of tables, one index key)', async () => {
    const other = await openHarness();
    try {
      const stores = await Promise.all([0, 1, 2, 3, 4].map(() => other.open(kek)));
      await stores[0]!.writeVersions([f.make({ id: 'o1', index: [{ param: 'code', kind: 'token', value: 'c' }] })]);
      for (const s of stores) expect(await s.findByIndex('Observation', 'code', 'token', 'c')).toEqual(['o1']);
      expect(await other.sql("SELECT key FROM store_meta")).toEqual([{ key: 'index-key' }]);
    } finally {
      await other.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
// The PHI scan: write Synthea patients, CHECKPOINT, then read every file under the data directory.

const syntheaDir = join(repoRoot, 'test', 'vectors', 'synthea');

function ratePerSecond(count: number, ms: number): number {
  return Math.round((count * 1000) / Math.max(ms, 1));
}

describe('no plaintext PHI in the PostgreSQL data directory (Synthea)', () => {
  it('writes 10 Synthea patients and finds none of their names, birth dates, addresses, identifiers, phones or free text in any file', async () => {
    const files = readdirSync(syntheaDir).filter((name) => name.endsWith('.json')).sort();
    expect(files).toHaveLength(10);
    const patients: ImportedPatient[] = files.map((name, i) =>
      importBundle(JSON.parse(readFileSync(join(syntheaDir, name), 'utf8')), `2026-0${(i % 9) + 1}-02T03:04:05.678Z`),
    );
    for (const p of patients) {
      expect(p.needles.some((n) => /^\d{4}-\d{2}-\d{2}$/.test(n)), 'a birth date').toBe(true);
    }
    const scan = (): RawFile[] => [...cluster.readDataFiles(), { name: 'postgres.log', bytes: readFileSync(cluster.logFile) }];
    // A needle that PostgreSQL's own files already hold before any patient is written (the family name
    // "Green" is in pg_description's "Danish (Greenland)") is searched in its JSON-quoted form instead, as it
    // stands in the resources. Then no needle is in the cluster before the patients are written.
    // Short all-hex needles (postal codes) are quoted too: they also occur by chance in the ids in clear.
    const rawNeedles = [...new Set(patients.flatMap((p) => p.needles))].map(scanFormOf);
    const baseline = findNeedles(scan(), rawNeedles);
    const inBaseline = rawNeedles.filter((n) => baseline.get(n)!.length > 0);
    expect(inBaseline.length).toBeLessThanOrEqual(3);
    const needles = rawNeedles.map((n) => (inBaseline.includes(n) ? JSON.stringify(n) : n));
    expect(needles.length).toBeGreaterThan(150);
    expect(needlesFound(scan(), needles)).toEqual([]);

    const h = await openHarness();
    try {
      const store = await openPostgresRecordStore({ connectionString: h.url, kek: new Uint8Array(randomBytes(32)) });
      const total = patients.reduce((n, p) => n + p.writes.length, 0);
      let t0 = performance.now();
      // The first patient goes through the pending → committed path, the others are written committed.
      const [first, ...rest] = patients;
      await store.writeVersions(first!.writes.map((w) => ({ ...w, status: 'pending' as const })));
      expect(await store.markCommitted(first!.writes.map((w) => w.txId!))).toBe(first!.writes.length);
      for (const p of rest) await store.writeVersions(p.writes);
      const batchWriteMs = performance.now() - t0;
      // An update, so an older Patient version and its replaced index entries exist too.
      const p0 = first!.writes[0]!;
      const updated = JSON.parse(Buffer.from(p0.content).toString('utf8'));
      updated.meta.versionId = '2';
      updated.telecom = [...(updated.telecom ?? []), { system: 'phone', value: '555-000-4242' }];
      await store.writeVersions([{ ...p0, versionId: '2', content: canonicalBytes(updated), salt: generateSalt(), index: indexEntriesOf(updated) }]);

      // Every resource reads back byte for byte (timed: sequential reads by id and version).
      const all = patients.flatMap((p) => p.writes);
      t0 = performance.now();
      for (const w of all) {
        const v = await store.readVersion(w.resourceType, w.id, w.versionId);
        expect(Buffer.from(v.content).equals(Buffer.from(w.content))).toBe(true);
      }
      const readMs = performance.now() - t0;
      t0 = performance.now();
      for (let at = 0; at < all.length; at += 16) {
        await Promise.all(all.slice(at, at + 16).map((w) => store.readVersion(w.resourceType, w.id)));
      }
      const parallelReadMs = performance.now() - t0;
      // Single-resource writes (one transaction each), sequential and 8 at a time.
      const singles = Array.from({ length: 400 }, (_, i) =>
        ({ ...all[i % all.length]!, id: randomUUID(), txId: randomUUID(), salt: generateSalt() }) satisfies VersionWrite,
      );
      t0 = performance.now();
      for (const w of singles.slice(0, 200)) await store.writeVersions([w]);
      const singleMs = performance.now() - t0;
      t0 = performance.now();
      for (let at = 200; at < 400; at += 8) await Promise.all(singles.slice(at, at + 8).map((w) => store.writeVersions([w])));
      const parallelSingleMs = performance.now() - t0;
      console.log(
        `PostgresRecordStore rates (test cluster: fsync off, loopback): ` +
          `${ratePerSecond(total, batchWriteMs)} resources/s written in per-patient batches (${total} resources), ` +
          `${ratePerSecond(200, singleMs)} single-resource writes/s sequential, ${ratePerSecond(200, parallelSingleMs)}/s with 8 concurrent, ` +
          `${ratePerSecond(all.length, readMs)} vreads/s sequential, ${ratePerSecond(all.length, parallelReadMs)} reads/s with 16 concurrent`,
      );

      const ullrich = patients.find((p) => p.needles.includes('Ullrich'))!;
      expect(await store.findByIndex('Patient', 'family', 'string', 'ULLRICH')).toEqual([ullrich.patientId]);
      expect(await store.findByIndex('Patient', 'family', 'prefix', 'ull')).toEqual([ullrich.patientId]);
      expect(await store.findByIndex('Patient', 'birthdate', 'date', '1995-01')).toEqual([ullrich.patientId]);
      expect(await store.findByIndex('Patient', 'identifier', 'token', '999-83-2639')).toEqual([ullrich.patientId]);
      expect((await store.compartment(ullrich.patientId)).length).toBe(ullrich.writes.filter((w) => w.patient === ullrich.patientId).length);
      await store.close();

      // Every change is now in the data files, not only in WAL and shared buffers; WAL is scanned too.
      await cluster.checkpoint();
      const dump = scan();
      expect(dump.some((d) => d.name.startsWith('pg_wal/'))).toBe(true);
      const heap = await h.sql<{ path: string }>("SELECT pg_relation_filepath('record_version') AS path");
      expect(dump.find((d) => d.name === heap[0]!.path)!.bytes.length).toBeGreaterThan(0);
      expect(needlesFound(dump, needles)).toEqual([]);

      // Control: the same resources and index inputs stored in plain (uncompressed, as a store that did not
      // encrypt would keep them) are all found by the same scan, so finding none above means something.
      await h.sql('CREATE TABLE plain_version (content bytea); ALTER TABLE plain_version ALTER COLUMN content SET STORAGE EXTERNAL');
      await h.sql('CREATE TABLE plain_term (term text)');
      await h.sql('INSERT INTO plain_version (content) SELECT * FROM unnest($1::bytea[])', [all.map((w) => Buffer.from(w.content))]);
      const plainTerms = all.flatMap((w) =>
        (w.index ?? []).flatMap((e) => termsForWrite(e).map((t) => `${w.resourceType}|${e.param}|${t.kind}|${t.value}`)),
      );
      await h.sql('INSERT INTO plain_term (term) SELECT * FROM unnest($1::text[])', [plainTerms]);
      await cluster.checkpoint();
      const control = findNeedles(scan(), needles);
      const missed = [...control].filter(([, where]) => where.length === 0).map(([needle]) => needle);
      expect(missed).toEqual([]);
    } finally {
      await h.close();
    }
  });
});
