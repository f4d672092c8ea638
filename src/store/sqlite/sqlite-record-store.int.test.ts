import Database from 'better-sqlite3';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { canonicalBytes } from '../../crypto/index.js';
import { repoRoot } from '../../../test/helpers.js';
import {
  normalizeString,
  openSqliteRecordStore,
  termsForWrite,
  type RecordStore,
  type VersionWrite,
} from '../index.js';
import { generateSalt } from '../commitment.js';
import { VersionFactory, rejectionOf, runRecordStoreConformance, type RecordStoreHarness } from '../record-store.conformance.js';
import { importBundle, indexEntriesOf, scanFormOf } from '../../../test/synthea-store-writes.js';

interface SqliteHarness extends RecordStoreHarness {
  db: Database.Database;
  file: string;
  dir: string;
}

async function openHarness(): Promise<SqliteHarness> {
  const dir = mkdtempSync(join(tmpdir(), 'hl-store-'));
  const file = join(dir, 'node.db');
  const db = new Database(file);
  return {
    db,
    file,
    dir,
    open: async (kek, options) => openSqliteRecordStore({ db, kek, clock: options?.clock }),
    query: async (sql) => {
      const statement = db.prepare(sql);
      if (statement.reader) return statement.all() as Record<string, unknown>[];
      statement.run();
      return [];
    },
    close: async () => {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

runRecordStoreConformance('SqliteRecordStore (temp file, WAL)', openHarness);

/** The raw bytes of the database file and, when present, its -wal and -shm files: what an auditor dumps. */
function rawFiles(file: string): { name: string; bytes: Buffer }[] {
  return ['', '-wal', '-shm']
    .map((suffix) => file + suffix)
    .filter((path) => existsSync(path))
    .map((path) => ({ name: path.slice(path.lastIndexOf('/') + 1), bytes: readFileSync(path) }));
}

/** Where `needle` occurs in the raw files (file names), empty when nowhere. */
function findIn(files: { name: string; bytes: Buffer }[], needle: Uint8Array): string[] {
  return files.filter((f) => f.bytes.indexOf(needle) >= 0).map((f) => f.name);
}

/** A few 24-byte pieces of a ciphertext (past its version byte and IV): enough to recognize any copy of it. */
function piecesOf(sealed: Buffer): Buffer[] {
  const body = sealed.subarray(13);
  return [0, Math.floor(body.length / 2) - 12, body.length - 24].map((at) => Buffer.from(body.subarray(at, at + 24)));
}

describe('SqliteRecordStore at rest', () => {
  let h: SqliteHarness;
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
    await h.close();
  });

  const sealedOf = (type: string, id: string, vid: string): Buffer =>
    h.db.prepare('SELECT sealed FROM record_version WHERE resource_type = ? AND id = ? AND version_id = ?').pluck().get(type, id, vid) as Buffer;
  const setSealed = (type: string, id: string, vid: string, sealed: Buffer): void => {
    h.db.prepare('UPDATE record_version SET sealed = ? WHERE resource_type = ? AND id = ? AND version_id = ?').run(sealed, type, id, vid);
  };

  it('names its tables and indexes record_* and store_* only, beside the ledger tables', () => {
    h.db.exec('CREATE TABLE IF NOT EXISTS ledger_block (height INTEGER PRIMARY KEY)');
    const names = h.db.prepare("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name <> 'ledger_block'").pluck().all() as string[];
    expect(names.length).toBeGreaterThan(5);
    for (const name of names) expect(name).toMatch(/^(record|store)_/);
  });

  it('moves an index written before segments to the segmented layout when opened, and finds everything in it', async () => {
    await store.writeVersions([
      f.make({ id: 'o1', index: [{ param: 'code', kind: 'token', value: 'x' }] }),
      f.make({ id: 'o2', index: [{ param: 'code', kind: 'token', value: 'x' }, { param: 'code', kind: 'token', value: 'y' }] }),
    ]);
    // The layout of earlier releases: (term, seq), no segment.
    h.db.exec(`ALTER TABLE record_index RENAME TO old_index;
      CREATE TABLE record_index (term BLOB NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (term, seq)) WITHOUT ROWID;
      INSERT INTO record_index SELECT term, seq FROM old_index; DROP TABLE old_index;`);
    const rows = h.db.prepare('SELECT count(*) FROM record_index').pluck().get();
    expect(rows).toBe(3);
    const reopened = await h.open(kek);
    const columns = (h.db.prepare('PRAGMA table_info(record_index)').all() as { name: string }[]).map((c) => c.name);
    expect(columns).toEqual(['segment', 'term', 'seq']);
    expect(h.db.prepare('SELECT count(*) FROM record_index').pluck().get()).toBe(3);
    expect(await reopened.findByIndex('Observation', 'code', 'token', 'x')).toEqual(['o1', 'o2']);
    expect(await reopened.findByIndexAll('Observation', [{ param: 'code', kind: 'token', value: 'x' }, { param: 'code', kind: 'token', value: 'y' }])).toEqual(['o2']);
  });

  it('moves the pending marks of a store written before record_pending into it when opened', async () => {
    await store.writeVersions([f.make({ id: 'o1' }), f.make({ id: 'o2', status: 'pending', txId: 'tx-2' })]);
    // The layout of earlier releases: a status column, 0 while pending, and no record_pending.
    h.db.exec(`ALTER TABLE record_version ADD COLUMN status INTEGER NOT NULL DEFAULT 1;
      UPDATE record_version SET status = 0 WHERE seq IN (SELECT seq FROM record_pending);
      CREATE INDEX record_version_pending ON record_version (tx_id) WHERE status = 0;
      DROP TABLE record_pending;`);
    const reopened = await h.open(kek);
    const columns = (h.db.prepare('PRAGMA table_info(record_version)').all() as { name: string }[]).map((c) => c.name);
    expect(columns).not.toContain('status');
    expect((await reopened.pendingVersions()).map((v) => [v.id, v.txId])).toEqual([['o2', 'tx-2']]);
    expect((await reopened.readVersion('Observation', 'o1')).id).toBe('o1');
    expect((await rejectionOf(reopened.readVersion('Observation', 'o2'))).code).toBe('not-found');
    expect(await reopened.markCommitted(['tx-2'])).toBe(1);
    expect((await reopened.readVersion('Observation', 'o2')).id).toBe('o2');
    expect(await reopened.pendingVersions()).toEqual([]);
  });

  it('fails a read with integrity, naming the version and returning nothing, when one ciphertext byte is flipped', async () => {
    await store.writeVersions([f.make({ id: 'o1', body: { note: [{ text: 'secret note' }] } }), f.make({ id: 'o2' })]);
    const sealed = Buffer.from(sealedOf('Observation', 'o1', '1'));
    sealed[40] = sealed[40]! ^ 0x01;
    setSealed('Observation', 'o1', '1', sealed);
    for (const read of [store.readVersion('Observation', 'o1'), store.readVersion('Observation', 'o1', '1'), store.historySystem()]) {
      const err = await rejectionOf(read);
      expect(err.code).toBe('integrity');
      expect(err.message).toContain('Observation/o1/_history/1');
      expect(err.message).not.toContain('secret');
    }
    expect((await store.readVersion('Observation', 'o2')).id).toBe('o2');
  });

  it('fails with integrity when ciphertexts are swapped between versions of one patient (the AAD binds each to its row)', async () => {
    await store.writeVersions([f.make({ id: 'o1' }), f.make({ id: 'o2' }), f.make({ id: 'o1', versionId: '2' })]);
    const a = sealedOf('Observation', 'o1', '1');
    const b = sealedOf('Observation', 'o2', '1');
    setSealed('Observation', 'o1', '1', b);
    setSealed('Observation', 'o2', '1', a);
    expect((await rejectionOf(store.readVersion('Observation', 'o1', '1'))).message).toContain('Observation/o1/_history/1');
    expect((await rejectionOf(store.readVersion('Observation', 'o2'))).message).toContain('Observation/o2/_history/1');
    // Swapping a resource's versions (a rollback to old content) fails too.
    setSealed('Observation', 'o2', '1', b);
    setSealed('Observation', 'o1', '1', sealedOf('Observation', 'o1', '2'));
    expect((await rejectionOf(store.readVersion('Observation', 'o1', '1'))).code).toBe('integrity');
  });

  it('fails with integrity when a version id in clear is rewritten, or a ciphertext is moved to another patient', async () => {
    await store.writeVersions([f.make({ id: 'o1', patient: 'p1' }), f.make({ id: 'o2', patient: 'p2' })]);
    h.db.prepare("UPDATE record_version SET version_id = '7' WHERE id = 'o1'").run();
    expect((await rejectionOf(store.readVersion('Observation', 'o1', '7'))).code).toBe('integrity');
    h.db.prepare("UPDATE record_version SET owner = 'p1' WHERE id = 'o2'").run();
    expect((await rejectionOf(store.readVersion('Observation', 'o2', '1'))).code).toBe('integrity');
  });

  it('fails with integrity, naming the compartment, when a wrapped data key is damaged', async () => {
    await store.writeVersions([f.make({ id: 'o1', patient: 'p1' })]);
    const wrapped = Buffer.from(h.db.prepare("SELECT wrapped FROM store_dek WHERE owner = 'p1'").pluck().get() as Buffer);
    wrapped[20] = wrapped[20]! ^ 0x80;
    h.db.prepare("UPDATE store_dek SET wrapped = ? WHERE owner = 'p1'").run(wrapped);
    const fresh = await h.open(kek); // no cached key
    const err = await rejectionOf(fresh.readVersion('Observation', 'o1'));
    expect(err.code).toBe('integrity');
    expect(err.message).toContain('p1');
  });

  it('erasePatient leaves none of the patient\'s ciphertexts or its wrapped key in the database, WAL or shm', async () => {
    const big = (n: number): Record<string, unknown> => ({ note: [{ text: randomBytes(1200).toString('base64') + n }] });
    const writes: VersionWrite[] = [];
    for (let i = 0; i < 60; i++) writes.push(f.make({ id: `o${i}`, patient: i % 2 === 0 ? 'p1' : 'p2', body: big(i) }));
    // Several batches, updates and a big (overflow-page) version, so pages split, move and overflow.
    await store.writeVersions(writes.slice(0, 30));
    await store.writeVersions(writes.slice(30));
    await store.writeVersions([f.make({ id: 'o0', versionId: '2', patient: 'p1', body: { text: randomBytes(20_000).toString('base64') } })]);
    const p1Rows = h.db.prepare("SELECT sealed FROM record_version WHERE owner = 'p1'").pluck().all() as Buffer[];
    const p2Rows = h.db.prepare("SELECT sealed FROM record_version WHERE owner = 'p2'").pluck().all() as Buffer[];
    const p1Key = h.db.prepare("SELECT wrapped FROM store_dek WHERE owner = 'p1'").pluck().get() as Buffer;
    const p1Pieces = [...p1Rows.flatMap(piecesOf), Buffer.from(p1Key)];
    // Control: before erasure the scan finds every piece, so finding none afterwards means something.
    const before = rawFiles(h.file);
    for (const piece of p1Pieces) expect(findIn(before, piece)).not.toEqual([]);

    const report = await store.erasePatient('p1');
    expect(report).toEqual({ versionsErased: 31, residuePurged: true });
    const after = rawFiles(h.file);
    const leftovers = p1Pieces.filter((piece) => findIn(after, piece).length > 0);
    expect(leftovers).toHaveLength(0);
    for (const piece of p2Rows.flatMap(piecesOf)) expect(findIn(after, piece)).not.toEqual([]);
  });

  it('rotateKek re-wraps only keys: every data and index row keeps its exact bytes; old wrappings leave the files', async () => {
    await store.writeVersions([
      f.make({ resourceType: 'Patient', id: 'p1', patient: 'p1', index: [{ param: 'family', kind: 'string', value: 'Doe' }] }),
      f.make({ id: 'o1', patient: 'p1', index: [{ param: 'code', kind: 'token', value: 'x' }] }),
      f.make({ resourceType: 'Organization', id: 'org', patient: null }),
    ]);
    const dataRows = (): string =>
      JSON.stringify([
        h.db.prepare('SELECT * FROM record_version ORDER BY seq').all(),
        h.db.prepare('SELECT hex(term) AS term, seq FROM record_index ORDER BY term, seq').all(),
        h.db.prepare('SELECT * FROM record_current ORDER BY seq').all(),
      ]);
    const keyRows = (): Buffer[] => [
      ...(h.db.prepare('SELECT wrapped FROM store_dek ORDER BY owner').pluck().all() as Buffer[]),
      h.db.prepare("SELECT value FROM store_meta WHERE key = 'index-key'").pluck().get() as Buffer,
    ];
    const dataBefore = dataRows();
    const keysBefore = keyRows();
    const newKek = new Uint8Array(randomBytes(32));
    expect(await store.rotateKek(newKek)).toMatchObject({ keysRewrapped: 3, residuePurged: true });
    expect(dataRows()).toBe(dataBefore);
    const keysAfter = keyRows();
    keysAfter.forEach((k, i) => expect(k.equals(keysBefore[i]!)).toBe(false));
    const files = rawFiles(h.file);
    for (const old of keysBefore) expect(findIn(files, old)).toEqual([]);
    expect((await (await h.open(newKek)).readVersion('Observation', 'o1')).id).toBe('o1');
    expect((await rejectionOf(h.open(kek))).code).toBe('integrity');
  });

  it('keeps a batch atomic when SQLite itself fails mid-batch (the first rows are rolled back)', async () => {
    h.db.exec(`CREATE TRIGGER fail_third BEFORE INSERT ON record_version WHEN NEW.id = 'boom'
      BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
    const batch = [f.make({ id: 'a', patient: 'px' }), f.make({ id: 'b', patient: 'py' }), f.make({ id: 'boom' })];
    await expect(store.writeVersions(batch)).rejects.toThrow(/injected failure/);
    expect(h.db.prepare('SELECT count(*) FROM record_version').pluck().get()).toBe(0);
    expect(h.db.prepare('SELECT count(*) FROM store_dek').pluck().get()).toBe(0);
    h.db.exec('DROP TRIGGER fail_third');
    const retry = f.make({ id: 'a', patient: 'px' });
    await store.writeVersions([retry]);
    expect(Buffer.from((await (await h.open(kek)).readVersion('Observation', 'a')).content).equals(Buffer.from(retry.content))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------------------
// The PHI scan (issue 3 §4): import Synthea patients, then dump the raw database files, WAL included.


const syntheaDir = join(repoRoot, 'test', 'vectors', 'store', 'synthea');

describe('no plaintext PHI in the database files, WAL included (Synthea)', () => {
  it('imports 3 Synthea patients and finds none of their names, identifiers, dates, addresses, phones or free text in the raw bytes', async () => {
    const files = readdirSync(syntheaDir).filter((name) => name.endsWith('.json'));
    expect(files).toHaveLength(3);
    const patients = files.map((name, i) =>
      importBundle(JSON.parse(readFileSync(join(syntheaDir, name), 'utf8')), `2026-0${i + 1}-02T03:04:05.678Z`),
    );
    const h = await openHarness();
    try {
      const store = await h.open(new Uint8Array(randomBytes(32)));
      // The first patient goes through the pending → committed path, the others are written committed.
      const [first, ...rest] = patients;
      await store.writeVersions(first!.writes.map((w) => ({ ...w, status: 'pending' as const })));
      expect(await store.markCommitted(first!.writes.map((w) => w.txId!))).toBe(first!.writes.length);
      for (const p of rest) await store.writeVersions(p.writes);
      // An update, so an older Patient version and its replaced index entries exist too.
      const p0 = first!.writes[0]!;
      const updated = JSON.parse(Buffer.from(p0.content).toString('utf8'));
      updated.meta.versionId = '2';
      updated.telecom.push({ system: 'phone', value: '555-000-4242' });
      await store.writeVersions([{ ...p0, versionId: '2', content: canonicalBytes(updated), salt: generateSalt(), index: indexEntriesOf(updated) }]);

      // Every resource reads back byte for byte.
      for (const p of patients) {
        for (const w of p.writes) {
          const v = await store.readVersion(w.resourceType, w.id, w.versionId);
          expect(Buffer.from(v.content).equals(Buffer.from(w.content))).toBe(true);
        }
      }
      const ullrich = patients.find((p) => p.needles.includes('Ullrich'))!;
      expect(await store.findByIndex('Patient', 'family', 'string', 'ULLRICH')).toEqual([ullrich.patientId]);
      expect(await store.findByIndex('Patient', 'family', 'prefix', 'ull')).toEqual([ullrich.patientId]);
      expect(await store.findByIndex('Patient', 'birthdate', 'date', '1995-01')).toEqual([ullrich.patientId]);
      expect(await store.findByIndex('Patient', 'identifier', 'token', '999-83-2639')).toEqual([ullrich.patientId]);
      expect(await store.findByIndex('Patient', 'family', 'string', 'ullric')).toEqual([]);
      expect((await store.compartment(ullrich.patientId)).length).toBe(ullrich.writes.filter((w) => w.patient === ullrich.patientId).length);

      // Control: a store without encryption (plain JSON and plain index inputs, same SQLite settings and no
      // checkpoint either) holds every needle, so the scan below would catch a store that did not encrypt.
      const plainFile = join(h.dir, 'plain.db');
      const plain = new Database(plainFile);
      try {
        plain.pragma('journal_mode = WAL');
        plain.exec('CREATE TABLE version (content BLOB); CREATE TABLE idx (term TEXT)');
        const insertVersion = plain.prepare('INSERT INTO version (content) VALUES (?)');
        const insertTerm = plain.prepare('INSERT INTO idx (term) VALUES (?)');
        plain.transaction(() => {
          for (const w of patients.flatMap((p) => p.writes)) {
            insertVersion.run(w.content);
            for (const e of w.index ?? []) for (const t of termsForWrite(e)) insertTerm.run(`${w.resourceType}|${e.param}|${t.kind}|${t.value}`);
          }
        })();
        const plainFiles = rawFiles(plainFile);
        for (const needle of patients.flatMap((p) => p.needles)) expect(findIn(plainFiles, Buffer.from(scanFormOf(needle), 'utf8')), needle).not.toEqual([]);
      } finally {
        plain.close();
      }

      // The scan, with the store's connection still open: nothing checkpointed, data partly in the WAL.
      const dump = rawFiles(h.file);
      expect(dump.map((d) => d.name).sort()).toEqual(['node.db', 'node.db-shm', 'node.db-wal']);
      expect(dump.find((d) => d.name === 'node.db-wal')!.bytes.length).toBeGreaterThan(0);
      const needles = patients.flatMap((p) => p.needles);
      expect(needles.length).toBeGreaterThan(60);
      // Short all-hex needles (postal codes) are looked for in their JSON-quoted form: bare, they can occur by
      // chance inside the random ids stored in clear.
      const found = needles.filter((needle) => findIn(dump, Buffer.from(scanFormOf(needle), 'utf8')).length > 0);
      expect(found).toEqual([]);
    } finally {
      await h.close();
    }
  });
});
