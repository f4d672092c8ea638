/**
 * The SQLite `RecordStore` (better-sqlite3), sharing the node's one database file with the ledger tables
 * (`ledger_*`, `merkle_node`); its own tables are `record_*` and `store_*`.
 *
 * Tables: `store_meta` (the wrapped blind-index key and the id of the KEK that wraps it), `store_dek` (wrapped
 * DEK per compartment owner, with the id of its KEK; `*` is the node-wide DEK), `store_erasure` (erased patients), `record_version` (one row per version: ids,
 * timestamps, flags in clear; `sealed` = AES-256-GCM(DEK, salt || content, aad = type/id/_history/vid)),
 * `record_pending` (the versions written but not yet committed on the ledger: a version row is never
 * rewritten to commit it, since its page holds the ciphertexts of its neighbours too), `record_current` (each resource's newest committed version) and `record_index` (blind-index terms per
 * version row; a term matches only through the current version, so pending and superseded versions never
 * match). A version row also lists its own terms (`terms`, 16-byte terms concatenated) while they are in
 * `record_index`, so removing them needs no second B-tree over `record_index`: with random HMAC keys, every
 * index on that table costs a page write per term.
 *
 * `record_index` is keyed (segment, term, seq), where the segment is `seq >> indexSegmentBits` (1,024
 * consecutive versions). HMAC terms are random, so under a plain (term, seq) key every write lands on a
 * different page of the whole index and each commit rewrites about one page per term: at 100k resources that
 * made a write cost ten times more than the rest of it together, and it kept growing. Keyed by segment first,
 * a commit's terms fall in the newest segment's few pages. A search looks a term up once per segment (a
 * probe of the same B-tree each, a few µs); a probe for a known version row goes straight to its segment.
 *
 * Durability: given `flush` (the ledger store's, whose connection runs at synchronous=NORMAL to keep fsyncs
 * off the event loop), the store awaits it after every write a caller may acknowledge: versions written,
 * marked committed, erased, keys rotated. Without one it sets the connection to synchronous=FULL, so each
 * commit is durable when it returns. The store turns on
 * `secure_delete` for the connection, so deleted cells and pages are zeroed, and checkpoints and truncates
 * the WAL after an erasure or a KEK rotation, so erased ciphertexts and keys wrapped under a retired KEK do
 * not linger in the database files. (Copies below the file system, such as SSD remapping, are out of reach.)
 *
 * The encryption layout and the argument checks are shared with the PostgreSQL backend (`../sealing.ts`,
 * `../store-input.ts`).
 */
import type Database from 'better-sqlite3';
import { HlError, systemClock, type Clock } from '../../kernel/index.js';
import { generateAesKey, kekIdOf, wrapKey } from '../../crypto/index.js';
import { blindIndexTermBytes, type BlindIndexKind } from '../blind-index.js';
import {
  BlindTermHasher,
  DekCache,
  indexKeyName,
  kekIdName,
  legacyKekId,
  nodeOwner,
  openVersion,
  requireNewKek,
  requireStoreKek,
  rewrapDataKey,
  sealVersion,
  unwrapIndexKey,
  versionRef,
} from '../sealing.js';
import { parseHistoryOptions, requireId, requireKek, requireResourceType, validateWrites } from '../store-input.js';
import type {
  ErasureReport,
  HistoryOptions,
  HistoryPage,
  IndexCriterion,
  PendingSelector,
  PendingVersion,
  RecordStore,
  ResourceRef,
  RotationOptions,
  RotationReport,
  StoredVersion,
  VersionWrite,
} from '../record-store.js';

/** Index rows counted per criterion when ranking them (search planning); more are simply "many". */
const termCountCap = 2000;
const schema = `
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS store_dek (owner TEXT PRIMARY KEY, wrapped BLOB NOT NULL, kek_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS store_erasure (owner TEXT PRIMARY KEY, erased_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS record_version (
  seq INTEGER PRIMARY KEY,
  resource_type TEXT NOT NULL, id TEXT NOT NULL, version_id TEXT NOT NULL,
  last_updated TEXT NOT NULL, last_updated_ms INTEGER NOT NULL, deleted INTEGER NOT NULL, owner TEXT,
  tx_id TEXT, written_ms INTEGER NOT NULL, sealed BLOB, erased_ms INTEGER, terms BLOB);
CREATE UNIQUE INDEX IF NOT EXISTS record_version_by_vid ON record_version (resource_type, id, version_id);
CREATE INDEX IF NOT EXISTS record_version_by_type ON record_version (resource_type, seq);
CREATE INDEX IF NOT EXISTS record_version_by_owner ON record_version (owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS record_pending (seq INTEGER PRIMARY KEY, tx_id TEXT);
CREATE INDEX IF NOT EXISTS record_pending_by_tx ON record_pending (tx_id);
CREATE TABLE IF NOT EXISTS record_current (
  resource_type TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, deleted INTEGER NOT NULL,
  PRIMARY KEY (resource_type, id)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS record_current_by_seq ON record_current (seq);
CREATE TABLE IF NOT EXISTS record_index (
  segment INTEGER NOT NULL, term BLOB NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (segment, term, seq)) WITHOUT ROWID;
`;

/** Versions per `record_index` segment: 2^10 (see the header). */
const indexSegmentBits = 10;
/** The `record_index` segment of a version row. */
function segmentOf(seq: number): number {
  return Math.floor(seq / 2 ** indexSegmentBits);
}
/** Every segment number up to the newest version's, for a term lookup that must try each. */
const allSegments = `WITH RECURSIVE segment(n) AS (SELECT 0 UNION ALL
  SELECT n + 1 FROM segment WHERE n < (SELECT ifnull(max(seq), 0) FROM record_version) >> ${indexSegmentBits})`;

/**
 * Moves the pending mark of a store from before `record_pending` (a `status` column, 0 while pending) to
 * that table, in the caller's transaction.
 */
function migrateStatusToPendingTable(db: Database.Database): void {
  const columns = (db.prepare('PRAGMA table_info(record_version)').all() as { name: string }[]).map((c) => c.name);
  if (!columns.includes('status')) return;
  db.exec(`CREATE TABLE IF NOT EXISTS record_pending (seq INTEGER PRIMARY KEY, tx_id TEXT);
    INSERT INTO record_pending (seq, tx_id) SELECT seq, tx_id FROM record_version WHERE status = 0;
    DROP INDEX IF EXISTS record_version_pending;
    ALTER TABLE record_version DROP COLUMN status;`);
}

/**
 * Moves a `record_index` from before segments, keyed (term, seq), to the (segment, term, seq) key, in the
 * caller's transaction.
 */
function migrateIndexToSegments(db: Database.Database): void {
  const columns = (db.prepare('PRAGMA table_info(record_index)').all() as { name: string }[]).map((c) => c.name);
  if (columns.length === 0 || columns.includes('segment')) return;
  db.exec(`ALTER TABLE record_index RENAME TO record_index_unsegmented;
    CREATE TABLE record_index (
      segment INTEGER NOT NULL, term BLOB NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (segment, term, seq)) WITHOUT ROWID;
    INSERT INTO record_index (segment, term, seq) SELECT seq >> ${indexSegmentBits}, term, seq FROM record_index_unsegmented ORDER BY 1, 2, 3;
    DROP TABLE record_index_unsegmented;`);
}

/** True (1) for a version row `v` written but not yet committed on the ledger. */
const isPending = 'EXISTS (SELECT 1 FROM record_pending p WHERE p.seq = v.seq)';
/** Row columns a version read needs, with the wrapped DEK of its owner and its KEK's id (null when erased). */
const versionColumns = `v.seq, v.resource_type, v.id, v.version_id, v.last_updated, v.deleted, v.owner,
  ${isPending} AS pending,
  v.tx_id, v.sealed, v.erased_ms, d.wrapped, d.kek_id`;
/** How many keys a rotation re-wraps between two progress reports. */
const progressEvery = 250;
const dekJoin = `LEFT JOIN store_dek d ON d.owner = ifnull(v.owner, '${nodeOwner}')`;

interface VersionRow {
  seq: number;
  resource_type: string;
  id: string;
  version_id: string;
  last_updated: string;
  deleted: number;
  owner: string | null;
  pending: number;
  tx_id: string | null;
  sealed: Buffer | null;
  erased_ms: number | null;
  wrapped: Buffer | null;
  kek_id: string | null;
}

interface PendingRow {
  seq: number;
  resource_type: string;
  id: string;
  deleted: number;
}

/** Options of {@link SqliteRecordStore}. */
export interface SqliteRecordStoreOptions {
  /** An open better-sqlite3 database (shared with the ledger); the store does not close it. */
  db: Database.Database;
  /** The node's 32-byte key-encryption key. */
  kek: Uint8Array;
  /** Clock for write and erasure times (default: the system clock). */
  clock?: Clock;
  /**
   * Makes every commit so far survive a power loss; required when the connection runs below
   * synchronous=FULL (the ledger store's `flush`).
   */
  flush?: () => Promise<void>;
}

/**
 * The SQLite {@link RecordStore}. Create with {@link openSqliteRecordStore}; the constructor creates the
 * tables if needed and unwraps the blind-index key, throwing `integrity` for a KEK that does not unwrap it.
 */
export class SqliteRecordStore implements RecordStore {
  private readonly db: Database.Database;
  private readonly clock: Clock;
  private readonly flush: () => Promise<void>;
  /** The store's KEK, by id (one entry: SQLite rotates inside one synchronous transaction). */
  private keks: Map<string, Uint8Array>;
  private currentKekId: string;
  private readonly terms: BlindTermHasher;
  /** Unwrapped DEKs by owner, with the wrapped bytes they came from (a changed or missing row misses the cache). */
  private readonly dekCache = new DekCache();
  private readonly stmts;
  private readonly intersectStmts = new Map<string, Database.Statement>();
  private readonly tx: {
    write: (versions: readonly VersionWrite[]) => void;
    markCommitted: (txIds: readonly string[]) => number;
    dropPending: (rows: readonly { seq: number }[]) => void;
    erasePatient: (patient: string) => number;
    eraseVersion: (seq: number) => void;
    rotate: (newKek: Uint8Array, newKekId: string, onProgress: RotationOptions['onProgress']) => number;
  };

  constructor(options: SqliteRecordStoreOptions) {
    requireKek(options.kek);
    const db = options.db;
    this.db = db;
    this.clock = options.clock ?? systemClock;
    const kek = new Uint8Array(options.kek);
    this.currentKekId = kekIdOf(kek);
    this.keks = new Map([[this.currentKekId, kek]]);
    db.pragma('journal_mode = WAL');
    db.pragma('secure_delete = ON');
    // Without a flush, every commit must be durable by itself (better-sqlite3 defaults WAL databases to NORMAL).
    if (options.flush === undefined) db.pragma('synchronous = FULL');
    this.flush = options.flush ?? (() => Promise.resolve());
    db.transaction(() => {
      migrateIndexToSegments(db);
      migrateStatusToPendingTable(db);
      db.exec(schema);
    })();
    // Stores from before key ids: add the column; the open below fills it in.
    const deksHaveKekIds = (db.prepare('PRAGMA table_info(store_dek)').all() as { name: string }[]).some((c) => c.name === 'kek_id');
    if (!deksHaveKekIds) db.exec(`ALTER TABLE store_dek ADD COLUMN kek_id TEXT NOT NULL DEFAULT '${legacyKekId}'`);
    const q = (sql: string): Database.Statement => db.prepare(sql);
    this.stmts = {
      getMeta: q('SELECT value FROM store_meta WHERE key = ?').pluck(),
      insertMeta: q('INSERT OR IGNORE INTO store_meta (key, value) VALUES (?, ?)'),
      updateMeta: q('UPDATE store_meta SET value = ? WHERE key = ?'),
      dek: q('SELECT wrapped, kek_id FROM store_dek WHERE owner = ?'),
      allDeks: q('SELECT owner, wrapped, kek_id FROM store_dek ORDER BY owner'),
      countDeks: q('SELECT count(*) FROM store_dek').pluck(),
      insertDek: q('INSERT INTO store_dek (owner, wrapped, kek_id) VALUES (?, ?, ?)'),
      updateDek: q('UPDATE store_dek SET wrapped = ?, kek_id = ? WHERE owner = ?'),
      setLegacyKekIds: q(`UPDATE store_dek SET kek_id = ? WHERE kek_id = '${legacyKekId}'`),
      deleteDek: q('DELETE FROM store_dek WHERE owner = ?'),
      isErased: q('SELECT 1 FROM store_erasure WHERE owner = ?').pluck(),
      insertErasure: q('INSERT OR IGNORE INTO store_erasure (owner, erased_ms) VALUES (?, ?)'),
      insertVersion: q(`INSERT INTO record_version (resource_type, id, version_id, last_updated, last_updated_ms, deleted,
        owner, tx_id, written_ms, sealed, terms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      insertPending: q('INSERT INTO record_pending (seq, tx_id) VALUES (?, ?)'),
      versionByVid: q(`SELECT ${versionColumns} FROM record_version v ${dekJoin}
        WHERE v.resource_type = ? AND v.id = ? AND v.version_id = ?`),
      versionCurrent: q(`SELECT ${versionColumns} FROM record_current c JOIN record_version v ON v.seq = c.seq ${dekJoin}
        WHERE c.resource_type = ? AND c.id = ?`),
      current: q('SELECT seq FROM record_current WHERE resource_type = ? AND id = ?').pluck(),
      upsertCurrent: q(`INSERT INTO record_current (resource_type, id, seq, deleted) VALUES (?, ?, ?, ?)
        ON CONFLICT (resource_type, id) DO UPDATE SET seq = excluded.seq, deleted = excluded.deleted`),
      insertTerm: q('INSERT INTO record_index (segment, term, seq) VALUES (?, ?, ?)'),
      countTerm: q(`${allSegments} SELECT count(*) FROM (SELECT 1 FROM segment s CROSS JOIN record_index d
        WHERE d.segment = s.n AND d.term = ? LIMIT ${termCountCap})`).pluck(),
      termsOf: q('SELECT terms FROM record_version WHERE seq = ?').pluck(),
      deleteTerm: q('DELETE FROM record_index WHERE segment = ? AND term = ? AND seq = ?'),
      clearTerms: q('UPDATE record_version SET terms = NULL WHERE seq = ?'),
      pendingByTx: q(`SELECT v.seq, v.resource_type, v.id, v.deleted FROM record_pending p JOIN record_version v ON v.seq = p.seq
        WHERE p.tx_id = ? ORDER BY p.seq`),
      clearPending: q('DELETE FROM record_pending WHERE seq = ?'),
      pending: q(`SELECT v.seq, v.resource_type, v.id, v.version_id, v.tx_id, v.written_ms FROM record_pending p
        JOIN record_version v ON v.seq = p.seq ORDER BY p.seq`),
      pendingBefore: q('SELECT p.seq FROM record_pending p JOIN record_version v ON v.seq = p.seq WHERE v.written_ms < ?'),
      pendingSeqsByTx: q('SELECT seq FROM record_pending WHERE tx_id = ?'),
      deleteVersion: q('DELETE FROM record_version WHERE seq = ?'),
      historyInstance: q(`SELECT ${versionColumns} FROM record_version v ${dekJoin}
        WHERE v.resource_type = ? AND v.id = ? AND NOT ${isPending} AND v.sealed IS NOT NULL AND v.seq < ? AND v.last_updated_ms >= ?
        ORDER BY v.seq DESC LIMIT ? OFFSET ?`),
      historyType: q(`SELECT ${versionColumns} FROM record_version v ${dekJoin}
        WHERE v.resource_type = ? AND NOT ${isPending} AND v.sealed IS NOT NULL AND v.seq < ? AND v.last_updated_ms >= ?
        ORDER BY v.seq DESC LIMIT ? OFFSET ?`),
      historySystem: q(`SELECT ${versionColumns} FROM record_version v ${dekJoin}
        WHERE NOT ${isPending} AND v.sealed IS NOT NULL AND v.seq < ? AND v.last_updated_ms >= ?
        ORDER BY v.seq DESC LIMIT ? OFFSET ?`),
      ownerSeqsWithTerms: q('SELECT seq FROM record_version WHERE owner = ? AND terms IS NOT NULL').pluck(),
      eraseOwnerVersions: q('UPDATE record_version SET sealed = NULL, erased_ms = ? WHERE owner = ? AND sealed IS NOT NULL'),
      seqByVid: q('SELECT seq, sealed IS NULL AS erased FROM record_version WHERE resource_type = ? AND id = ? AND version_id = ?'),
      eraseVersion: q('UPDATE record_version SET sealed = NULL, erased_ms = ? WHERE seq = ?'),
      currentIds: q(`SELECT c.id FROM record_current c JOIN record_version v ON v.seq = c.seq
        WHERE c.resource_type = ? AND c.deleted = 0 AND v.sealed IS NOT NULL ORDER BY c.id`).pluck(),
      compartment: q(`SELECT c.resource_type, c.id FROM record_version v JOIN record_current c ON c.seq = v.seq
        WHERE v.owner = ? AND c.deleted = 0 AND v.sealed IS NOT NULL ORDER BY c.resource_type, c.id`),
    };
    this.terms = new BlindTermHasher(db.transaction(() => this.loadIndexKey())());
    this.tx = {
      write: db.transaction((versions: readonly VersionWrite[]) => {
        for (const v of versions) this.writeOne(v);
      }),
      markCommitted: db.transaction((txIds: readonly string[]) => this.markCommittedNow(txIds)),
      dropPending: db.transaction((rows: readonly { seq: number }[]) => {
        for (const r of rows) {
          this.dropTerms(r.seq);
          this.stmts.deleteVersion.run(r.seq);
          this.stmts.clearPending.run(r.seq);
        }
      }),
      erasePatient: db.transaction((patient: string) => {
        const now = this.clock.nowMs();
        this.stmts.insertErasure.run(patient, now);
        for (const seq of this.stmts.ownerSeqsWithTerms.all(patient) as number[]) this.dropTerms(seq);
        const erased = this.stmts.eraseOwnerVersions.run(now, patient).changes;
        this.stmts.deleteDek.run(patient);
        return erased;
      }),
      eraseVersion: db.transaction((seq: number) => {
        this.dropTerms(seq);
        this.stmts.eraseVersion.run(this.clock.nowMs(), seq);
      }),
      rotate: db.transaction((newKek: Uint8Array, newKekId: string, onProgress: RotationOptions['onProgress']) => {
        const oldKek = this.kek();
        // A store object opened before another one on this database rotated it holds a retired KEK.
        requireStoreKek(this.stmts.getMeta.get(kekIdName) as string, this.currentKekId);
        const total = (this.stmts.countDeks.get() as number) + 1;
        onProgress?.(0, total);
        let done = 0;
        for (const r of this.stmts.allDeks.all() as { owner: string; wrapped: Buffer; kek_id: string }[]) {
          requireStoreKek(r.kek_id, this.currentKekId);
          this.stmts.updateDek.run(rewrapDataKey(oldKek, newKek, r.owner, r.wrapped), newKekId, r.owner);
          if (++done % progressEvery === 0) onProgress?.(done, total);
        }
        const wrappedIndexKey = this.stmts.getMeta.get(indexKeyName) as Buffer;
        this.stmts.updateMeta.run(rewrapDataKey(oldKek, newKek, indexKeyName, wrappedIndexKey), indexKeyName);
        this.stmts.updateMeta.run(newKekId, kekIdName);
        onProgress?.(total, total);
        return done;
      }),
    };
  }

  /** The current KEK. */
  private kek(): Uint8Array {
    return this.keks.get(this.currentKekId)!;
  }

  get kekId(): string {
    return this.currentKekId;
  }

  /**
   * Checks that the KEK is the store's (by id, then by unwrapping) and unwraps the blind-index key, creating
   * it and recording the KEK's id on first use; a store from before key ids gets them here. In a transaction.
   */
  private loadIndexKey(): Uint8Array {
    const kek = this.kek();
    const recorded = this.stmts.getMeta.get(kekIdName) as string | undefined;
    requireStoreKek(recorded, this.currentKekId);
    this.stmts.insertMeta.run(indexKeyName, wrapKey(kek, generateAesKey()));
    const indexKey = unwrapIndexKey(kek, this.stmts.getMeta.get(indexKeyName) as Buffer);
    if (recorded === undefined) {
      this.stmts.insertMeta.run(kekIdName, this.currentKekId);
      this.stmts.setLegacyKekIds.run(this.currentKekId);
    }
    return indexKey;
  }

  /** The DEK for a write into `owner`'s compartment, created (and wrapped) if this is its first version. */
  private dekForWrite(owner: string): Uint8Array {
    const row = this.stmts.dek.get(owner) as { wrapped: Buffer; kek_id: string } | undefined;
    if (row !== undefined) return this.dekCache.unwrap(this.keks, owner, row.kek_id, row.wrapped);
    if (owner !== nodeOwner && this.stmts.isErased.get(owner) !== undefined) {
      throw new HlError('conflict', `Patient/${owner} was erased; its compartment takes no new versions`);
    }
    // Never wrap a new DEK under a KEK the store no longer names (another store object rotated it).
    requireStoreKek(this.stmts.getMeta.get(kekIdName) as string, this.currentKekId);
    const dek = generateAesKey();
    const newWrapped = Buffer.from(wrapKey(this.kek(), dek));
    this.stmts.insertDek.run(owner, newWrapped, this.currentKekId);
    return this.dekCache.set(owner, newWrapped, dek);
  }

  /** Removes a version's terms from the index (it is superseded, dropped or erased). */
  private dropTerms(seq: number): void {
    const terms = this.stmts.termsOf.get(seq) as Buffer | null | undefined;
    if (terms === null || terms === undefined) return;
    const segment = segmentOf(seq);
    for (let at = 0; at < terms.length; at += blindIndexTermBytes) this.stmts.deleteTerm.run(segment, terms.subarray(at, at + blindIndexTermBytes), seq);
    this.stmts.clearTerms.run(seq);
  }

  /** Adds a version's terms to the index (one statement a row: a multi-row INSERT needs a statement journal). */
  private insertTerms(seq: number, terms: Buffer): void {
    const segment = segmentOf(seq);
    for (let at = 0; at < terms.length; at += blindIndexTermBytes) this.stmts.insertTerm.run(segment, terms.subarray(at, at + blindIndexTermBytes), seq);
  }

  private writeOne(v: VersionWrite): void {
    const owner = v.patient ?? nodeOwner;
    const dek = this.dekForWrite(owner);
    const sealed = sealVersion(dek, v);
    const terms = this.terms.termsOfWrite(v);
    let seq: number;
    try {
      seq = Number(
        this.stmts.insertVersion.run(
          v.resourceType,
          v.id,
          v.versionId,
          v.lastUpdated,
          Date.parse(v.lastUpdated),
          v.deleted ? 1 : 0,
          v.patient,
          v.txId,
          this.clock.nowMs(),
          sealed,
          terms,
        ).lastInsertRowid,
      );
    } catch (cause) {
      if ((cause as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') {
        throw new HlError('conflict', `${versionRef(v.resourceType, v.id, v.versionId)} already exists`, { cause });
      }
      throw cause;
    }
    if (terms !== null) {
      this.insertTerms(seq, terms);
    }
    if (v.status === 'pending') this.stmts.insertPending.run(seq, v.txId);
    if (v.status === 'committed') this.makeCurrent({ seq, resource_type: v.resourceType, id: v.id, deleted: v.deleted ? 1 : 0 });
  }

  /** Makes a newly committed version its resource's current one, unless a newer one already is. */
  private makeCurrent(row: PendingRow): void {
    const currentSeq = this.stmts.current.get(row.resource_type, row.id) as number | undefined;
    if (currentSeq !== undefined && currentSeq > row.seq) {
      // A newer version was committed first: this one is history only, so its terms must not match.
      this.dropTerms(row.seq);
      return;
    }
    if (currentSeq !== undefined) this.dropTerms(currentSeq);
    this.stmts.upsertCurrent.run(row.resource_type, row.id, row.seq, row.deleted);
  }

  private markCommittedNow(txIds: readonly string[]): number {
    let changed = 0;
    for (const txId of txIds) {
      for (const row of this.stmts.pendingByTx.all(txId) as PendingRow[]) {
        this.stmts.clearPending.run(row.seq);
        this.makeCurrent(row);
        changed++;
      }
    }
    return changed;
  }

  /** Decrypts a row into a version; `not-found` for pending or erased rows, `integrity` on any tampering. */
  private toVersion(row: VersionRow): StoredVersion {
    const ref = versionRef(row.resource_type, row.id, row.version_id);
    if (row.pending === 1) throw new HlError('not-found', `${ref} is not committed`);
    if (row.sealed === null) throw new HlError('not-found', `${ref} was erased`);
    if (row.wrapped === null) throw new HlError('integrity', `${ref} has no data key (its compartment's key is missing)`);
    const dek = this.dekCache.unwrap(this.keks, row.owner ?? nodeOwner, row.kek_id ?? legacyKekId, row.wrapped);
    const { salt, content } = openVersion(dek, row.sealed, row.resource_type, row.id, row.version_id);
    return {
      resourceType: row.resource_type,
      id: row.id,
      versionId: row.version_id,
      lastUpdated: row.last_updated,
      deleted: row.deleted === 1,
      patient: row.owner,
      content,
      salt,
      status: 'committed',
      txId: row.tx_id,
    };
  }

  private page(rows: VersionRow[], limit: number): HistoryPage {
    const more = rows.length > limit;
    const kept = more ? rows.slice(0, limit) : rows;
    const last = kept[kept.length - 1];
    return { versions: kept.map((r) => this.toVersion(r)), nextCursor: more && last ? String(last.seq) : null };
  }

  /**
   * Checkpoints and truncates the WAL so that bytes just deleted (zeroed in the database by secure_delete)
   * leave no older copy in the log. False when it could not: inside a caller's transaction, or another
   * connection is reading.
   */
  private async checkpointLog(): Promise<boolean> {
    if (this.db.inTransaction) return false;
    if (this.db.memory) return true;
    // Another connection's checkpoint (the ledger's checkpoint worker) makes this one busy at once, without
    // waiting: try again for up to a second.
    for (let attempt = 0; ; attempt++) {
      const result = this.db.pragma('wal_checkpoint(TRUNCATE)') as { busy: number; log: number; checkpointed: number }[];
      const first = result[0];
      // Not in WAL mode (journal_mode set elsewhere): log is -1 and there is no WAL to purge.
      const purged = first !== undefined && first.busy === 0 && (first.log === 0 || first.log === -1);
      if (purged || attempt >= 100) return purged;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /**
   * After an erasure or a rotation: purges the WAL of what was overwritten (true when it did) and makes the
   * change durable.
   */
  private async purgeLog(): Promise<boolean> {
    const purged = await this.checkpointLog();
    await this.flush();
    return purged;
  }

  async writeVersions(versions: readonly VersionWrite[]): Promise<void> {
    validateWrites(versions);
    // A DEK created in a transaction that rolls back (here or in a caller's enclosing one) stays in the cache
    // but no longer matches the table, which every write and read consults first: the next write makes a new one.
    this.tx.write(versions);
    await this.flush();
  }

  async readVersion(resourceType: string, id: string, versionId?: string): Promise<StoredVersion> {
    requireResourceType(resourceType);
    requireId(id, 'id');
    if (versionId !== undefined) {
      requireId(versionId, 'versionId');
      const row = this.stmts.versionByVid.get(resourceType, id, versionId) as VersionRow | undefined;
      if (!row) throw new HlError('not-found', `${versionRef(resourceType, id, versionId)} not found`);
      return this.toVersion(row);
    }
    const row = this.stmts.versionCurrent.get(resourceType, id) as VersionRow | undefined;
    if (!row) throw new HlError('not-found', `${resourceType}/${id} not found`);
    return this.toVersion(row);
  }

  async historyInstance(resourceType: string, id: string, options: HistoryOptions = {}): Promise<HistoryPage> {
    requireResourceType(resourceType);
    requireId(id, 'id');
    const p = parseHistoryOptions(options);
    const rows = this.stmts.historyInstance.all(resourceType, id, p.before, p.sinceMs, p.limit + 1, p.offset) as VersionRow[];
    return this.page(rows, p.limit);
  }

  async historyType(resourceType: string, options: HistoryOptions = {}): Promise<HistoryPage> {
    requireResourceType(resourceType);
    const p = parseHistoryOptions(options);
    const rows = this.stmts.historyType.all(resourceType, p.before, p.sinceMs, p.limit + 1, p.offset) as VersionRow[];
    return this.page(rows, p.limit);
  }

  async historySystem(options: HistoryOptions = {}): Promise<HistoryPage> {
    const p = parseHistoryOptions(options);
    const rows = this.stmts.historySystem.all(p.before, p.sinceMs, p.limit + 1, p.offset) as VersionRow[];
    return this.page(rows, p.limit);
  }

  async markCommitted(txIds: readonly string[]): Promise<number> {
    const changed = this.tx.markCommitted(txIds);
    await this.flush();
    return changed;
  }

  async pendingVersions(): Promise<PendingVersion[]> {
    const rows = this.stmts.pending.all() as {
      resource_type: string;
      id: string;
      version_id: string;
      tx_id: string | null;
      written_ms: number;
    }[];
    return rows.map((r) => ({ resourceType: r.resource_type, id: r.id, versionId: r.version_id, txId: r.tx_id, writtenMs: r.written_ms }));
  }

  async dropPending(which: PendingSelector): Promise<number> {
    let rows: { seq: number }[];
    if ('txIds' in which) {
      rows = which.txIds.flatMap((txId) => this.stmts.pendingSeqsByTx.all(txId) as { seq: number }[]);
    } else {
      if (!Number.isFinite(which.writtenBeforeMs)) throw new HlError('invalid', 'writtenBeforeMs is not a time');
      rows = this.stmts.pendingBefore.all(which.writtenBeforeMs) as { seq: number }[];
    }
    this.tx.dropPending(rows);
    return rows.length;
  }

  async erasePatient(patient: string): Promise<ErasureReport> {
    requireId(patient, 'patient');
    const versionsErased = this.tx.erasePatient(patient);
    this.dekCache.evict(patient);
    return { versionsErased, residuePurged: await this.purgeLog() };
  }

  async eraseVersion(resourceType: string, id: string, versionId: string): Promise<ErasureReport> {
    requireResourceType(resourceType);
    requireId(id, 'id');
    requireId(versionId, 'versionId');
    const row = this.stmts.seqByVid.get(resourceType, id, versionId) as { seq: number; erased: number } | undefined;
    if (!row) throw new HlError('not-found', `${versionRef(resourceType, id, versionId)} not found`);
    if (row.erased === 1) return { versionsErased: 0, residuePurged: await this.purgeLog() };
    this.tx.eraseVersion(row.seq);
    return { versionsErased: 1, residuePurged: await this.purgeLog() };
  }

  async rotateKek(newKek: Uint8Array, options: RotationOptions = {}): Promise<RotationReport> {
    requireKek(newKek);
    const next = new Uint8Array(newKek);
    const fromKekId = this.currentKekId;
    const toKekId = kekIdOf(next);
    requireNewKek(fromKekId, toKekId);
    const dataKeysRewrapped = this.tx.rotate(next, toKekId, options.onProgress);
    this.kek().fill(0);
    this.keks = new Map([[toKekId, next]]);
    this.currentKekId = toKekId;
    // Cached DEKs are unchanged; their wrapped bytes are not, so drop the stale entries.
    this.dekCache.clear();
    return { dataKeysRewrapped, keysRewrapped: dataKeysRewrapped + 1, fromKekId, toKekId, residuePurged: await this.purgeLog() };
  }

  async findByIndex(resourceType: string, param: string, kind: BlindIndexKind, value: string | readonly string[]): Promise<string[]> {
    return this.findByIndexAll(resourceType, [{ param, kind, value }]);
  }

  async findByIndexAll(resourceType: string, criteria: readonly IndexCriterion[]): Promise<string[]> {
    requireResourceType(resourceType);
    if (criteria.length === 0) throw new HlError('invalid', 'a search needs at least one criterion');
    const terms = criteria.map((c) => this.terms.termsOfCriterion(resourceType, c));
    // The most selective criterion drives; the others are probed per candidate through the (term, seq) key,
    // so a common code (every heart rate) costs nothing beyond the few rows of the patient's reference.
    let driver = 0;
    if (terms.length > 1) {
      const sizes = terms.map((t) => this.boundedCount(t));
      driver = sizes.indexOf(Math.min(...sizes));
    }
    const others = terms.filter((_, i) => i !== driver);
    const shape = `${terms[driver]!.length}|${others.map((t) => t.length).join(',')}`;
    let stmt = this.intersectStmts.get(shape);
    if (!stmt) {
      const list = (n: number) => Array.from({ length: n }, () => '?').join(', ');
      const probes = others.map(
        (t) => ` AND EXISTS (SELECT 1 FROM record_index x WHERE x.segment = d.segment AND x.term IN (${list(t.length)}) AND x.seq = d.seq)`,
      );
      stmt = this.db
        .prepare(
          `${allSegments} SELECT DISTINCT c.id FROM segment s CROSS JOIN record_index d JOIN record_current c ON c.seq = d.seq
          WHERE d.segment = s.n AND d.term IN (${list(terms[driver]!.length)})${probes.join('')} ORDER BY 1`,
        )
        .pluck();
      if (this.intersectStmts.size < 256) this.intersectStmts.set(shape, stmt);
    }
    return stmt.all(...terms[driver]!, ...others.flat()) as string[];
  }

  /** How many index rows match any of `terms`, counted up to a cap (enough to rank criteria cheaply). */
  private boundedCount(terms: readonly Uint8Array[]): number {
    let n = 0;
    for (const term of terms) {
      n += this.stmts.countTerm.get(term) as number;
      if (n >= termCountCap) return termCountCap;
    }
    return n;
  }


  async currentIds(resourceType: string): Promise<string[]> {
    requireResourceType(resourceType);
    return this.stmts.currentIds.all(resourceType) as string[];
  }

  async compartment(patient: string): Promise<ResourceRef[]> {
    requireId(patient, 'patient');
    const rows = this.stmts.compartment.all(patient) as { resource_type: string; id: string }[];
    return rows.map((r) => ({ resourceType: r.resource_type, id: r.id }));
  }
}

/**
 * Opens the record store in `db` (creating its tables on first use). Rejects with `integrity` when `kek`
 * does not unwrap the keys already stored there, and `invalid` when it is not 32 bytes.
 */
export async function openSqliteRecordStore(options: SqliteRecordStoreOptions): Promise<SqliteRecordStore> {
  return new SqliteRecordStore(options);
}
