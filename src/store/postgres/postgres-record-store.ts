/**
 * The PostgreSQL `RecordStore` (pg), for nodes that keep their records in a PostgreSQL server; its tables
 * are `record_*` and `store_*` (created if absent, in the connection's `search_path` schema), beside the
 * ledger's. Same tables, columns and encryption layout as the SQLite backend (`sealing.ts`): `store_meta`
 * (the wrapped blind-index key and its KEK's id), `store_dek` (wrapped DEK per compartment owner, `*`
 * node-wide, with its KEK's id),
 * `store_erasure`, `record_version` (ids and flags in clear, `sealed` = AES-256-GCM(DEK, salt || content,
 * aad = type/id/_history/vid), and the version's own blind-index terms while they are indexed),
 * `record_current` and `record_index` (term, seq).
 *
 * Differences from SQLite, because several connections (and processes) write at once and every statement
 * is a network round trip:
 * - Every method is one SQL transaction (READ COMMITTED) on a pooled connection. `writeVersions` takes a
 *   fixed number of round trips whatever the batch size: BEGIN with the locks and DEK lookup, (new DEKs,)
 *   one statement inserting every version and its index terms, one making the committed ones current, COMMIT.
 * - `seq` comes from an identity column: history order is the order rows were inserted, and a transaction
 *   that commits late can hold a lower seq than one already visible. The current version is still the
 *   committed one with the highest seq: the `record_current` upsert only moves forward, under its row lock.
 * - Duplicate versions are found with `ON CONFLICT DO NOTHING`: a concurrent writer of the same version waits
 *   for the first to commit, then gets `conflict` (or wins if the first rolls back).
 * - Writers hold a shared advisory lock per compartment owner and `erasePatient` an exclusive one, so a write
 *   racing an erasure either lands before it (and is erased) or sees the erasure (`conflict`). Writers also
 *   hold a shared KEK lock that `rotateKek` takes exclusively, so no DEK is wrapped under a retiring KEK; and
 *   a store that creates a DEK first checks that the store still names its KEK (another process may have
 *   rotated it), so no DEK is ever wrapped under a retired KEK either.
 * - Concurrent first writes into one compartment agree on one DEK (`ON CONFLICT` on store_dek).
 * - A superseded version whose successor was made current by a concurrent transaction may keep its index
 *   terms until the resource's next commit (SQLite, single-writer, always drops them at once). They never
 *   match: search joins terms through record_current. Erasure still finds and deletes them.
 * - Deadlocks and serialization failures (SQLSTATE 40P01, 40001) are retried a few times.
 * - Text columns use the "C" collation, so ids sort bytewise as in SQLite whatever the database's locale.
 * - A single-criterion search returns each id once (SELECT DISTINCT), also when several of its values match.
 *
 * Residue: PostgreSQL keeps old row versions (MVCC) until VACUUM, VACUUM does not zero the space it frees in
 * a page, and WAL segments hold full copies of written rows and pages until they are recycled and
 * overwritten. A client cannot purge these, so `erasePatient`, `eraseVersion` and `rotateKek` report
 * `residuePurged: false`: erased ciphertexts and DEKs wrapped under a retired KEK may stay in the data
 * directory (heap, TOAST, WAL) for an unbounded time. What remains cannot be decrypted without a KEK that
 * unwraps a residual DEK, so after an erasure an operator who needs the residue dead rotates the KEK and
 * destroys the old one (and keeps WAL archives and backups under the same policy).
 */
import pg from 'pg';
import type { Pool, PoolClient, QueryConfig, QueryResultRow } from 'pg';
import { HlError, isHlError, systemClock, type Clock } from '../../kernel/index.js';
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

const schema = `
CREATE TABLE store_meta (key text COLLATE "C" PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE store_dek (owner text COLLATE "C" PRIMARY KEY, wrapped bytea NOT NULL, kek_id text COLLATE "C" NOT NULL);
CREATE TABLE store_erasure (owner text COLLATE "C" PRIMARY KEY, erased_ms bigint NOT NULL);
CREATE TABLE record_version (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  resource_type text COLLATE "C" NOT NULL, id text COLLATE "C" NOT NULL, version_id text COLLATE "C" NOT NULL,
  last_updated text NOT NULL, last_updated_ms bigint NOT NULL, deleted boolean NOT NULL, owner text COLLATE "C",
  status smallint NOT NULL, tx_id text COLLATE "C", written_ms bigint NOT NULL, sealed bytea, erased_ms bigint, terms bytea);
-- Ciphertexts and HMAC terms do not compress: store them as they are instead of trying.
ALTER TABLE record_version ALTER COLUMN sealed SET STORAGE EXTERNAL, ALTER COLUMN terms SET STORAGE EXTERNAL;
CREATE UNIQUE INDEX record_version_by_vid ON record_version (resource_type, id, version_id);
CREATE INDEX record_version_by_type ON record_version (resource_type, seq);
CREATE INDEX record_version_by_owner ON record_version (owner) WHERE owner IS NOT NULL;
CREATE INDEX record_version_pending ON record_version (tx_id) WHERE status = 0;
CREATE TABLE record_current (
  resource_type text COLLATE "C" NOT NULL, id text COLLATE "C" NOT NULL, seq bigint NOT NULL, deleted boolean NOT NULL,
  PRIMARY KEY (resource_type, id));
CREATE UNIQUE INDEX record_current_by_seq ON record_current (seq);
CREATE TABLE record_index (term bytea NOT NULL, seq bigint NOT NULL, PRIMARY KEY (term, seq));
`;

const statusPending = 0;
const statusCommitted = 1;
/** Advisory lock classes (the two-int4 key space): 'HLSC' schema creation, 'HLOW' compartment owner, 'HLKK' KEK. */
const schemaLockClass = 0x484c5343;
const ownerLockClass = 0x484c4f57;
const kekLockClass = 0x484c4b4b;
const maxAttempts = 5;
/** Wrapped keys per UPDATE of a rotation (and between two progress reports). */
const rotationChunk = 250;
const retryableStates: ReadonlySet<string> = new Set(['40P01', '40001']);

/** Row columns a version read needs, with the wrapped DEK of its owner and its KEK's id (null when erased). */
const versionColumns = `v.seq, v.resource_type, v.id, v.version_id, v.last_updated, v.deleted, v.owner, v.status,
  v.tx_id, v.sealed, d.wrapped, d.kek_id`;
const dekJoin = `LEFT JOIN store_dek d ON d.owner = coalesce(v.owner, '${nodeOwner}')`;

/**
 * The tail of a statement whose CTE `old (seq, terms)` lists versions whose blind-index terms go (superseded,
 * dropped or erased): clears their `terms` and deletes their record_index rows. Each version row lists its
 * own 16-byte terms, so no index on record_index.seq is needed (the same layout as SQLite). The rows are
 * found as term ∈ all their terms AND seq ∈ their seqs, which is two arrays the primary key (term, seq) is
 * probed with; the cross product adds no other row, since a (term, seq) row exists only for a term of that
 * seq. (A join against the generated (seq, term) pairs lets the planner hash-join a scan of the whole table.)
 */
const dropOldTermsSql = `, cleared AS (
    UPDATE record_version v SET terms = NULL FROM old WHERE v.seq = old.seq
  )
  DELETE FROM record_index i
  WHERE i.term = ANY (ARRAY(SELECT substring(old.terms FROM n * ${blindIndexTermBytes} + 1 FOR ${blindIndexTermBytes})
      FROM old, generate_series(0, length(old.terms) / ${blindIndexTermBytes} - 1) AS n))
    AND i.seq = ANY (ARRAY(SELECT old.seq FROM old))`;

/** Removes the blind-index terms of the `record_version v` rows that `where` selects. */
function dropTermsSql(where: string): string {
  return `WITH old AS (
    SELECT v.seq, v.terms FROM record_version v WHERE v.terms IS NOT NULL AND ${where} FOR UPDATE
  )${dropOldTermsSql}`;
}

const sql = {
  insertDeks: `INSERT INTO store_dek (owner, wrapped, kek_id) SELECT u.owner, u.wrapped, $3 FROM unnest($1::text[], $2::bytea[]) AS u(owner, wrapped)
    ON CONFLICT (owner) DO NOTHING RETURNING owner`,
  deksByOwner: 'SELECT owner, wrapped, kek_id FROM store_dek WHERE owner = ANY($1::text[])',
  getMeta: 'SELECT value FROM store_meta WHERE key = $1',
  // Ciphertexts and terms travel as one binary blob each (pg sends a Buffer parameter in binary, but an
  // array of them as hex text), cut apart by offset and length; the version's terms also fill record_index.
  insertVersions: `WITH u AS (
      SELECT rt, id, vid, lu, lums, del, owner, st, tx, wms, ord,
        substring($11::bytea FROM so + 1 FOR sl) AS sealed, substring($12::bytea FROM tof + 1 FOR tl) AS terms
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::boolean[], $7::text[], $8::smallint[],
        $9::text[], $10::bigint[], $13::int[], $14::int[], $15::int[], $16::int[])
        WITH ORDINALITY AS u(rt, id, vid, lu, lums, del, owner, st, tx, wms, so, sl, tof, tl, ord)
    ), ins AS (
      INSERT INTO record_version (resource_type, id, version_id, last_updated, last_updated_ms, deleted, owner,
          status, tx_id, written_ms, sealed, terms)
        SELECT rt, id, vid, lu, lums, del, owner, st, tx, wms, sealed, terms FROM u ORDER BY ord
        ON CONFLICT (resource_type, id, version_id) DO NOTHING
        RETURNING seq, resource_type, id, version_id, terms
    ), idx AS (
      INSERT INTO record_index (term, seq)
        SELECT substring(ins.terms FROM n * ${blindIndexTermBytes} + 1 FOR ${blindIndexTermBytes}), ins.seq
        FROM ins, generate_series(0, length(ins.terms) / ${blindIndexTermBytes} - 1) AS n WHERE ins.terms IS NOT NULL
    )
    SELECT seq, resource_type, id, version_id FROM ins`,
  // Moves record_current forward to each candidate unless a newer version is current (under the row lock:
  // READ COMMITTED re-reads the latest row), then removes the terms of the versions that are not current: of
  // a candidate that lost, its own and older ones; of one that won, every other committed version of the resource
  // visible to this statement. (A version a concurrent transaction made current just before may keep its
  // terms until the resource's next commit; they never match, since search joins through record_current.)
  makeCurrent: `WITH cand AS (
      SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::boolean[]) AS u(resource_type, id, seq, deleted)
    ), up AS (
      INSERT INTO record_current AS c (resource_type, id, seq, deleted) SELECT * FROM cand
      ON CONFLICT (resource_type, id) DO UPDATE SET seq = excluded.seq, deleted = excluded.deleted WHERE c.seq < excluded.seq
      RETURNING c.resource_type, c.id, c.seq
    ), old AS (
      SELECT v.seq, v.terms FROM cand LEFT JOIN up ON up.resource_type = cand.resource_type AND up.id = cand.id
      CROSS JOIN LATERAL (
        SELECT v.seq, v.terms FROM record_version v
        WHERE v.resource_type = cand.resource_type AND v.id = cand.id AND v.status = ${statusCommitted} AND v.terms IS NOT NULL
          AND (CASE WHEN up.seq IS NULL THEN v.seq <= cand.seq ELSE v.seq <> up.seq END)
        FOR UPDATE
      ) v
    )${dropOldTermsSql}`,
  dropTermsOfSeqs: dropTermsSql('v.seq = ANY($1::bigint[])'),
  dropTermsOfOwner: dropTermsSql('v.owner = $1'),
  setCommitted: `UPDATE record_version SET status = ${statusCommitted}
    WHERE tx_id = ANY($1::text[]) AND status = ${statusPending} RETURNING seq, resource_type, id, deleted`,
  pending: `SELECT resource_type, id, version_id, tx_id, written_ms FROM record_version WHERE status = ${statusPending} ORDER BY seq`,
  pendingSeqsByTx: `SELECT seq FROM record_version WHERE tx_id = ANY($1::text[]) AND status = ${statusPending} FOR UPDATE`,
  pendingSeqsBefore: `SELECT seq FROM record_version WHERE status = ${statusPending} AND written_ms < $1 FOR UPDATE`,
  deleteVersions: 'DELETE FROM record_version WHERE seq = ANY($1::bigint[])',
  versionByVid: `SELECT ${versionColumns} FROM record_version v ${dekJoin}
    WHERE v.resource_type = $1 AND v.id = $2 AND v.version_id = $3`,
  versionCurrent: `SELECT ${versionColumns} FROM record_current c JOIN record_version v ON v.seq = c.seq ${dekJoin}
    WHERE c.resource_type = $1 AND c.id = $2`,
  historyInstance: `SELECT ${versionColumns} FROM record_version v ${dekJoin}
    WHERE v.resource_type = $1 AND v.id = $2 AND v.status = ${statusCommitted} AND v.sealed IS NOT NULL AND v.seq < $3
      AND v.last_updated_ms >= $4
    ORDER BY v.seq DESC LIMIT $5 OFFSET $6`,
  historyType: `SELECT ${versionColumns} FROM record_version v ${dekJoin}
    WHERE v.resource_type = $1 AND v.status = ${statusCommitted} AND v.sealed IS NOT NULL AND v.seq < $2 AND v.last_updated_ms >= $3
    ORDER BY v.seq DESC LIMIT $4 OFFSET $5`,
  historySystem: `SELECT ${versionColumns} FROM record_version v ${dekJoin}
    WHERE v.status = ${statusCommitted} AND v.sealed IS NOT NULL AND v.seq < $1 AND v.last_updated_ms >= $2
    ORDER BY v.seq DESC LIMIT $3 OFFSET $4`,
  lockOwnerExclusive: `SELECT pg_advisory_xact_lock(${ownerLockClass}, hashtext($1))`,
  deleteDek: 'DELETE FROM store_dek WHERE owner = $1',
  insertErasure: 'INSERT INTO store_erasure (owner, erased_ms) VALUES ($1, $2) ON CONFLICT (owner) DO NOTHING',
  eraseOwnerVersions: 'UPDATE record_version SET sealed = NULL, erased_ms = $1 WHERE owner = $2 AND sealed IS NOT NULL',
  seqByVid: `SELECT seq, sealed IS NULL AS erased FROM record_version WHERE resource_type = $1 AND id = $2 AND version_id = $3`,
  eraseVersion: 'UPDATE record_version SET sealed = NULL, erased_ms = $1 WHERE seq = $2 AND sealed IS NOT NULL',
  lockKekExclusive: `SELECT pg_advisory_xact_lock(${kekLockClass}, 0)`,
  allDeks: 'SELECT owner, wrapped, kek_id FROM store_dek ORDER BY owner FOR UPDATE',
  updateDeks: `UPDATE store_dek d SET wrapped = u.wrapped, kek_id = $3 FROM unnest($1::text[], $2::bytea[]) AS u(owner, wrapped)
    WHERE d.owner = u.owner`,
  getMetaForUpdate: 'SELECT value FROM store_meta WHERE key = $1 FOR UPDATE',
  updateMeta: 'UPDATE store_meta SET value = $1 WHERE key = $2',
  currentIds: `SELECT c.id FROM record_current c JOIN record_version v ON v.seq = c.seq
    WHERE c.resource_type = $1 AND NOT c.deleted AND v.sealed IS NOT NULL ORDER BY c.id`,
  compartment: `SELECT c.resource_type, c.id FROM record_version v JOIN record_current c ON c.seq = v.seq
    WHERE v.owner = $1 AND NOT c.deleted AND v.sealed IS NOT NULL ORDER BY c.resource_type, c.id`,
} as const;

/** Hot statements are prepared once per connection under these names (pg's named statements). */
const preparedNames: Partial<Record<keyof typeof sql, string>> = {
  insertVersions: 'hl_store_insert_versions',
  makeCurrent: 'hl_store_make_current',
  setCommitted: 'hl_store_set_committed',
  versionByVid: 'hl_store_version_by_vid',
  versionCurrent: 'hl_store_version_current',
  historyInstance: 'hl_store_history_instance',
  historyType: 'hl_store_history_type',
  historySystem: 'hl_store_history_system',
  currentIds: 'hl_store_current_ids',
  compartment: 'hl_store_compartment',
};

interface VersionRow {
  seq: string;
  resource_type: string;
  id: string;
  version_id: string;
  last_updated: string;
  deleted: boolean;
  owner: string | null;
  status: number;
  tx_id: string | null;
  sealed: Buffer | null;
  wrapped: Buffer | null;
  kek_id: string | null;
}

/** A version that just became committed (written committed, or marked), as a candidate for current. */
interface CommittedRow {
  seq: string;
  resource_type: string;
  id: string;
  deleted: boolean;
}

/** A compartment owner of a batch, with its wrapped DEK and its KEK's id (null if none) and whether it was erased. */
interface OwnerDekRow {
  owner: string;
  wrapped: Buffer | null;
  kek_id: string | null;
  erased: boolean;
}

/** Something that runs queries: the pool, or a client inside a transaction. */
type Queryable = Pick<PoolClient, 'query'>;

/** Options of {@link openPostgresRecordStore}: a pool (shared with the ledger; not ended by the store) or a URL. */
export type PostgresRecordStoreOptions = (
  | {
      /** A pg pool; the store borrows connections and never ends it. */
      pool: Pool;
      connectionString?: undefined;
    }
  | {
      /** A libpq connection string; the store makes its own pool and ends it on `close()`. */
      connectionString: string;
      pool?: undefined;
    }
) & {
  /** The node's 32-byte key-encryption key. */
  kek: Uint8Array;
  /** Clock for write and erasure times (default: the system clock). */
  clock?: Clock;
};

function isRetryable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && retryableStates.has(code);
}

/**
 * The PostgreSQL {@link RecordStore}. Create with {@link openPostgresRecordStore}, which creates the tables
 * if needed and unwraps the blind-index key, rejecting with `integrity` a KEK that does not unwrap it.
 */
export class PostgresRecordStore implements RecordStore {
  private readonly pool: Pool;
  private readonly ownsPool: boolean;
  private readonly clock: Clock;
  /** The KEKs this store holds, by id: its KEK, and during a rotation's commit also the new one. */
  private keks: Map<string, Uint8Array>;
  /** Id of the KEK that wraps the store's keys (the new one from the moment a rotation commits). */
  private currentKekId: string;
  /** Counts completed KEK rotations (see {@link readRows}). */
  private kekEpoch = 0;
  private readonly terms: BlindTermHasher;
  private readonly dekCache = new DekCache();

  private constructor(pool: Pool, ownsPool: boolean, kek: Uint8Array, indexKey: Uint8Array, clock: Clock) {
    this.pool = pool;
    this.ownsPool = ownsPool;
    this.currentKekId = kekIdOf(kek);
    this.keks = new Map([[this.currentKekId, kek]]);
    this.terms = new BlindTermHasher(indexKey);
    this.clock = clock;
  }

  /** @internal Use {@link openPostgresRecordStore}. */
  static async open(options: PostgresRecordStoreOptions): Promise<PostgresRecordStore> {
    requireKek(options.kek);
    const kek = new Uint8Array(options.kek);
    const kekId = kekIdOf(kek);
    const ownsPool = options.pool === undefined;
    let pool: Pool;
    if (options.pool !== undefined) pool = options.pool;
    else if (typeof options.connectionString === 'string') {
      pool = new pg.Pool({ connectionString: options.connectionString });
      // An idle connection that breaks (server restart) is dropped by the pool; the next query gets a new
      // one or its own error. Without a listener the 'error' event would end the process.
      pool.on('error', () => undefined);
    } else throw new HlError('invalid', 'a PostgreSQL record store needs a pool or a connectionString');
    try {
      const indexKey = await withTransaction(pool, async (c) => {
        // Concurrent first opens would race CREATE TABLE; the schema is created whole or not at all.
        await c.query(`SELECT pg_advisory_xact_lock(${schemaLockClass}, 0)`);
        const exists = await c.query<{ ok: boolean }>("SELECT to_regclass('record_version') IS NOT NULL AS ok");
        if (exists.rows[0]?.ok !== true) await c.query(schema);
        // Stores from before key ids: add the column (checked first: ALTER TABLE would lock the table even
        // as a no-op); the rows get their id below.
        const hasKekIds = await c.query("SELECT 1 FROM pg_attribute WHERE attrelid = 'store_dek'::regclass AND attname = 'kek_id'");
        if (hasKekIds.rowCount === 0) {
          await c.query(`ALTER TABLE store_dek ADD COLUMN kek_id text COLLATE "C" NOT NULL DEFAULT '${legacyKekId}'`);
        }
        const recorded = await c.query<{ value: Buffer }>(sql.getMeta, [kekIdName]);
        const recordedId = recorded.rows[0]?.value.toString('utf8');
        requireStoreKek(recordedId, kekId);
        await c.query('INSERT INTO store_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [
          indexKeyName,
          Buffer.from(wrapKey(kek, generateAesKey())),
        ]);
        const wrapped = await c.query<{ value: Buffer }>(sql.getMeta, [indexKeyName]);
        const indexKey = unwrapIndexKey(kek, wrapped.rows[0]!.value);
        if (recordedId === undefined) {
          await c.query('INSERT INTO store_meta (key, value) VALUES ($1, $2)', [kekIdName, Buffer.from(kekId, 'utf8')]);
          await c.query(`UPDATE store_dek SET kek_id = $1 WHERE kek_id = '${legacyKekId}'`, [kekId]);
        }
        return indexKey;
      });
      return new PostgresRecordStore(pool, ownsPool, kek, indexKey, options.clock ?? systemClock);
    } catch (err) {
      if (ownsPool) await pool.end().catch(() => undefined);
      throw err;
    }
  }

  get kekId(): string {
    return this.currentKekId;
  }

  /**
   * The KEK the store names (as `c` sees it), by id; `integrity` when this store object does not hold it:
   * another process rotated the KEK since this one opened the store. (While this object's own rotation
   * commits, it holds both KEKs, and the store names whichever one `c` sees.)
   */
  private async storeKek(c: Queryable): Promise<{ id: string; kek: Uint8Array }> {
    const [row] = await this.query<{ value: Buffer }>(c, 'getMeta', [kekIdName]);
    const id = row?.value.toString('utf8');
    if (id === undefined) throw new HlError('integrity', 'this record store records no KEK id');
    const kek = this.keks.get(id);
    if (kek === undefined) requireStoreKek(id, this.currentKekId);
    return { id, kek: kek! };
  }

  /** Ends the pool if the store made it (from a connection string); a pool passed in is left open. */
  async close(): Promise<void> {
    this.dekCache.clear();
    if (this.ownsPool) await this.pool.end();
  }

  private async query<R extends QueryResultRow>(db: Queryable, key: keyof typeof sql, values: unknown[] = []): Promise<R[]> {
    const name = preparedNames[key];
    const config: QueryConfig = name === undefined ? { text: sql[key], values } : { name, text: sql[key], values };
    return (await db.query<R>(config)).rows;
  }

  private async transaction<T>(work: (c: PoolClient, opened: pg.QueryResult[]) => Promise<T>, prologue?: string): Promise<T> {
    return withTransaction(this.pool, work, prologue);
  }

  /**
   * The DEK of every owner of a batch (from the rows of {@link writePrologue}), creating and wrapping the
   * missing ones; `conflict` for an erased patient's compartment. The keys are copies the caller zeroes: the
   * cache zeroes the keys it evicts, which another operation may do between this call and the sealing.
   */
  private async deksForWrite(c: PoolClient, rows: readonly OwnerDekRow[]): Promise<Map<string, Uint8Array>> {
    const deks = new Map<string, Uint8Array>();
    const missing: string[] = [];
    for (const r of rows) {
      if (r.wrapped !== null) deks.set(r.owner, Uint8Array.from(this.dekCache.unwrap(this.keks, r.owner, r.kek_id ?? legacyKekId, r.wrapped)));
      else if (r.erased && r.owner !== nodeOwner) {
        throw new HlError('conflict', `Patient/${r.owner} was erased; its compartment takes no new versions`);
      } else missing.push(r.owner);
    }
    if (missing.length === 0) return deks;
    // The prologue holds the shared KEK lock, so no rotation is in flight; but another process may have
    // rotated the KEK since this store was opened, and a new DEK must be wrapped under the store's KEK.
    const { id: kekId, kek } = await this.storeKek(c);
    const fresh = missing.map((owner) => {
      const dek = generateAesKey();
      return { owner, dek, wrapped: Buffer.from(wrapKey(kek, dek)) };
    });
    const inserted = await this.query<{ owner: string }>(c, 'insertDeks', [
      fresh.map((f) => f.owner),
      fresh.map((f) => f.wrapped),
      kekId,
    ]);
    const won = new Set(inserted.map((r) => r.owner));
    for (const f of fresh) {
      if (!won.has(f.owner)) continue;
      deks.set(f.owner, Uint8Array.from(f.dek));
      this.dekCache.set(f.owner, f.wrapped, f.dek);
    }
    const lost = fresh.filter((f) => !won.has(f.owner)).map((f) => f.owner);
    if (lost.length > 0) {
      // A concurrent first write into the same compartment committed its DEK first: use that one.
      for (const r of await this.query<{ owner: string; wrapped: Buffer; kek_id: string }>(c, 'deksByOwner', [lost])) {
        deks.set(r.owner, Uint8Array.from(this.dekCache.unwrap(this.keks, r.owner, r.kek_id, r.wrapped)));
      }
    }
    return deks;
  }

  /**
   * Makes newly committed versions current, unless a newer one of the same resource already is, and removes
   * the index terms of the committed versions that are not (or no longer) current.
   */
  private async makeCurrent(c: PoolClient, rows: readonly CommittedRow[]): Promise<void> {
    if (rows.length === 0) return;
    const newest = new Map<string, CommittedRow>();
    for (const r of rows) {
      const key = `${r.resource_type}/${r.id}`;
      const seen = newest.get(key);
      if (seen === undefined || BigInt(seen.seq) < BigInt(r.seq)) newest.set(key, r);
    }
    // One lock order (type, id) for every transaction, against deadlocks between batches.
    const candidates = [...newest.values()].sort((a, b) =>
      a.resource_type === b.resource_type ? (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) : a.resource_type < b.resource_type ? -1 : 1,
    );
    await this.query(c, 'makeCurrent', [
      candidates.map((r) => r.resource_type),
      candidates.map((r) => r.id),
      candidates.map((r) => r.seq),
      candidates.map((r) => r.deleted),
    ]);
  }

  /** Decrypts a row into a version; `not-found` for pending or erased rows, `integrity` on any tampering. */
  private toVersion(row: VersionRow): StoredVersion {
    const ref = versionRef(row.resource_type, row.id, row.version_id);
    if (row.status === statusPending) throw new HlError('not-found', `${ref} is not committed`);
    if (row.sealed === null) throw new HlError('not-found', `${ref} was erased`);
    if (row.wrapped === null) throw new HlError('integrity', `${ref} has no data key (its compartment's key is missing)`);
    const dek = this.dekCache.unwrap(this.keks, row.owner ?? nodeOwner, row.kek_id ?? legacyKekId, row.wrapped);
    const { salt, content } = openVersion(dek, row.sealed, row.resource_type, row.id, row.version_id);
    return {
      resourceType: row.resource_type,
      id: row.id,
      versionId: row.version_id,
      lastUpdated: row.last_updated,
      deleted: row.deleted,
      patient: row.owner,
      content,
      salt,
      status: 'committed',
      txId: row.tx_id,
    };
  }

  /**
   * Queries version rows and decrypts them. Rows fetched just before a KEK rotation of this store committed
   * carry DEKs wrapped under the retired KEK, which is gone once it commits: such a read is run once more (a
   * fresh query sees the new wrapping) instead of failing with a false `integrity`.
   */
  private async readRows<T>(fetch: () => Promise<VersionRow[]>, decrypt: (rows: VersionRow[]) => T): Promise<T> {
    const epoch = this.kekEpoch;
    const rows = await fetch();
    try {
      return decrypt(rows);
    } catch (err) {
      if (!isHlError(err, 'integrity') || this.kekEpoch === epoch) throw err;
      return decrypt(await fetch());
    }
  }

  private page(rows: VersionRow[], limit: number): HistoryPage {
    const more = rows.length > limit;
    const kept = more ? rows.slice(0, limit) : rows;
    const last = kept[kept.length - 1];
    return { versions: kept.map((r) => this.toVersion(r)), nextCursor: more && last ? last.seq : null };
  }

  async writeVersions(versions: readonly VersionWrite[]): Promise<void> {
    validateWrites(versions);
    if (versions.length === 0) return;
    const owners = [...new Set(versions.map((v) => v.patient ?? nodeOwner))].sort();
    // Terms are computed once, outside the transaction; sealing needs the DEKs, so it happens inside.
    const terms = versions.map((v) => this.terms.termsOfWrite(v));
    const termBlob = Buffer.concat(terms.filter((t): t is Buffer => t !== null));
    const termOffsets: (number | null)[] = [];
    const termLengths: (number | null)[] = [];
    let at = 0;
    for (const t of terms) {
      termOffsets.push(t === null ? null : at);
      termLengths.push(t === null ? null : t.length);
      at += t?.length ?? 0;
    }
    await this.transaction(async (c, opened) => {
      const deks = await this.deksForWrite(c, opened[opened.length - 1]!.rows as OwnerDekRow[]);
      const sealed = versions.map((v) => sealVersion(deks.get(v.patient ?? nodeOwner)!, v));
      for (const dek of deks.values()) dek.fill(0);
      const sealedOffsets: number[] = [];
      let offset = 0;
      for (const box of sealed) {
        sealedOffsets.push(offset);
        offset += box.length;
      }
      const writtenMs = this.clock.nowMs();
      const inserted = await this.query<{ seq: string; resource_type: string; id: string; version_id: string }>(c, 'insertVersions', [
        versions.map((v) => v.resourceType),
        versions.map((v) => v.id),
        versions.map((v) => v.versionId),
        versions.map((v) => v.lastUpdated),
        versions.map((v) => Date.parse(v.lastUpdated)),
        versions.map((v) => v.deleted),
        versions.map((v) => v.patient),
        versions.map((v) => (v.status === 'committed' ? statusCommitted : statusPending)),
        versions.map((v) => v.txId),
        versions.map(() => writtenMs),
        Buffer.concat(sealed),
        termBlob,
        sealedOffsets,
        sealed.map((box) => box.length),
        termOffsets,
        termLengths,
      ]);
      const seqs = new Map(inserted.map((r) => [versionRef(r.resource_type, r.id, r.version_id), r.seq]));
      const committed: CommittedRow[] = [];
      const seen = new Set<string>();
      for (const v of versions) {
        const ref = versionRef(v.resourceType, v.id, v.versionId);
        const seq = seqs.get(ref);
        // Not inserted (it existed, or a concurrent writer committed it first), or twice in this batch.
        if (seq === undefined || seen.has(ref)) throw new HlError('conflict', `${ref} already exists`);
        seen.add(ref);
        if (v.status === 'committed') committed.push({ seq, resource_type: v.resourceType, id: v.id, deleted: v.deleted });
      }
      await this.makeCurrent(c, committed);
    }, writePrologue(owners));
  }

  async readVersion(resourceType: string, id: string, versionId?: string): Promise<StoredVersion> {
    requireResourceType(resourceType);
    requireId(id, 'id');
    if (versionId !== undefined) {
      requireId(versionId, 'versionId');
      return this.readRows(
        () => this.query<VersionRow>(this.pool, 'versionByVid', [resourceType, id, versionId]),
        ([row]) => {
          if (!row) throw new HlError('not-found', `${versionRef(resourceType, id, versionId)} not found`);
          return this.toVersion(row);
        },
      );
    }
    return this.readRows(
      () => this.query<VersionRow>(this.pool, 'versionCurrent', [resourceType, id]),
      ([row]) => {
        if (!row) throw new HlError('not-found', `${resourceType}/${id} not found`);
        return this.toVersion(row);
      },
    );
  }

  async historyInstance(resourceType: string, id: string, options: HistoryOptions = {}): Promise<HistoryPage> {
    requireResourceType(resourceType);
    requireId(id, 'id');
    const p = parseHistoryOptions(options);
    return this.readRows(
      () => this.query<VersionRow>(this.pool, 'historyInstance', [resourceType, id, p.before, p.sinceMs, p.limit + 1, p.offset]),
      (rows) => this.page(rows, p.limit),
    );
  }

  async historyType(resourceType: string, options: HistoryOptions = {}): Promise<HistoryPage> {
    requireResourceType(resourceType);
    const p = parseHistoryOptions(options);
    return this.readRows(
      () => this.query<VersionRow>(this.pool, 'historyType', [resourceType, p.before, p.sinceMs, p.limit + 1, p.offset]),
      (rows) => this.page(rows, p.limit),
    );
  }

  async historySystem(options: HistoryOptions = {}): Promise<HistoryPage> {
    const p = parseHistoryOptions(options);
    return this.readRows(
      () => this.query<VersionRow>(this.pool, 'historySystem', [p.before, p.sinceMs, p.limit + 1, p.offset]),
      (rows) => this.page(rows, p.limit),
    );
  }

  async markCommitted(txIds: readonly string[]): Promise<number> {
    if (txIds.length === 0) return 0;
    return this.transaction(async (c) => {
      const rows = await this.query<CommittedRow>(c, 'setCommitted', [[...txIds]]);
      await this.makeCurrent(c, rows);
      return rows.length;
    });
  }

  async pendingVersions(): Promise<PendingVersion[]> {
    const rows = await this.query<{ resource_type: string; id: string; version_id: string; tx_id: string | null; written_ms: string }>(
      this.pool,
      'pending',
    );
    return rows.map((r) => ({ resourceType: r.resource_type, id: r.id, versionId: r.version_id, txId: r.tx_id, writtenMs: Number(r.written_ms) }));
  }

  async dropPending(which: PendingSelector): Promise<number> {
    if (!('txIds' in which) && !Number.isFinite(which.writtenBeforeMs)) throw new HlError('invalid', 'writtenBeforeMs is not a time');
    if ('txIds' in which && which.txIds.length === 0) return 0;
    return this.transaction(async (c) => {
      const rows =
        'txIds' in which
          ? await this.query<{ seq: string }>(c, 'pendingSeqsByTx', [[...which.txIds]])
          : await this.query<{ seq: string }>(c, 'pendingSeqsBefore', [which.writtenBeforeMs]);
      if (rows.length === 0) return 0;
      const seqs = rows.map((r) => r.seq);
      await this.query(c, 'dropTermsOfSeqs', [seqs]);
      await this.query(c, 'deleteVersions', [seqs]);
      return rows.length;
    });
  }

  async erasePatient(patient: string): Promise<ErasureReport> {
    requireId(patient, 'patient');
    const versionsErased = await this.transaction(async (c) => {
      // Waits for writes in flight into this compartment; later ones see the erasure and get `conflict`.
      await this.query(c, 'lockOwnerExclusive', [patient]);
      const now = this.clock.nowMs();
      await this.query(c, 'deleteDek', [patient]);
      await this.query(c, 'insertErasure', [patient, now]);
      await this.query(c, 'dropTermsOfOwner', [patient]);
      return (await c.query({ text: sql.eraseOwnerVersions, values: [now, patient] })).rowCount ?? 0;
    });
    this.dekCache.evict(patient);
    return { versionsErased, residuePurged: false };
  }

  async eraseVersion(resourceType: string, id: string, versionId: string): Promise<ErasureReport> {
    requireResourceType(resourceType);
    requireId(id, 'id');
    requireId(versionId, 'versionId');
    const versionsErased = await this.transaction(async (c) => {
      const [row] = await this.query<{ seq: string; erased: boolean }>(c, 'seqByVid', [resourceType, id, versionId]);
      if (!row) throw new HlError('not-found', `${versionRef(resourceType, id, versionId)} not found`);
      if (row.erased) return 0;
      await this.query(c, 'dropTermsOfSeqs', [[row.seq]]);
      return (await c.query({ text: sql.eraseVersion, values: [this.clock.nowMs(), row.seq] })).rowCount ?? 0;
    });
    return { versionsErased, residuePurged: false };
  }

  async rotateKek(newKek: Uint8Array, options: RotationOptions = {}): Promise<RotationReport> {
    requireKek(newKek);
    const next = new Uint8Array(newKek);
    const fromKekId = this.currentKekId;
    const toKekId = kekIdOf(next);
    requireNewKek(fromKekId, toKekId);
    const old = this.keks.get(fromKekId)!;
    let dataKeysRewrapped: number;
    try {
      dataKeysRewrapped = await this.transaction(async (c) => {
        // Waits for DEK creations in flight (they hold the shared lock) and blocks new ones until commit.
        await this.query(c, 'lockKekExclusive');
        requireStoreKek((await this.storeKek(c)).id, fromKekId);
        const rows = await this.query<{ owner: string; wrapped: Buffer; kek_id: string }>(c, 'allDeks');
        const total = rows.length + 1;
        options.onProgress?.(0, total);
        for (let at = 0; at < rows.length; at += rotationChunk) {
          const chunk = rows.slice(at, at + rotationChunk);
          const rewrapped = chunk.map((r) => {
            requireStoreKek(r.kek_id, fromKekId);
            return Buffer.from(rewrapDataKey(old, next, r.owner, r.wrapped));
          });
          await this.query(c, 'updateDeks', [chunk.map((r) => r.owner), rewrapped, toKekId]);
          options.onProgress?.(at + chunk.length, total);
        }
        const [meta] = await this.query<{ value: Buffer }>(c, 'getMetaForUpdate', [indexKeyName]);
        await this.query(c, 'updateMeta', [Buffer.from(rewrapDataKey(old, next, indexKeyName, meta!.value)), indexKeyName]);
        await this.query(c, 'updateMeta', [Buffer.from(toKekId, 'utf8'), kekIdName]);
        options.onProgress?.(total, total);
        // From here on, reads may see either wrapping (the commit is in flight; each row names its KEK).
        this.keks = new Map([[fromKekId, old], [toKekId, next]]);
        return rows.length;
      });
    } catch (err) {
      this.keks = new Map([[fromKekId, old]]);
      throw err;
    }
    this.keks = new Map([[toKekId, next]]);
    this.currentKekId = toKekId;
    this.kekEpoch++;
    old.fill(0);
    // Cached DEKs are unchanged; their wrapped bytes are not, so drop the stale entries.
    this.dekCache.clear();
    return { dataKeysRewrapped, keysRewrapped: dataKeysRewrapped + 1, fromKekId, toKekId, residuePurged: false };
  }

  async findByIndex(resourceType: string, param: string, kind: BlindIndexKind, value: string | readonly string[]): Promise<string[]> {
    return this.findByIndexAll(resourceType, [{ param, kind, value }]);
  }

  async findByIndexAll(resourceType: string, criteria: readonly IndexCriterion[]): Promise<string[]> {
    requireResourceType(resourceType);
    if (criteria.length === 0) throw new HlError('invalid', 'a search needs at least one criterion');
    const terms = criteria.map((c) => this.terms.termsOfCriterion(resourceType, c).map((t) => Buffer.from(t)));
    // A term matches only through the current version (record_current), never a pending or superseded one.
    const selects = terms.map(
      (_, i) => `SELECT c.id FROM record_index i JOIN record_current c ON c.seq = i.seq WHERE i.term = ANY($${i + 1}::bytea[])`,
    );
    const text = terms.length === 1 ? `SELECT DISTINCT id FROM (${selects[0]}) s ORDER BY 1` : `${selects.join(' INTERSECT ')} ORDER BY 1`;
    const rows = await this.pool.query<{ id: string }>({ text, values: terms });
    return rows.rows.map((r) => r.id);
  }

  async currentIds(resourceType: string): Promise<string[]> {
    requireResourceType(resourceType);
    return (await this.query<{ id: string }>(this.pool, 'currentIds', [resourceType])).map((r) => r.id);
  }

  async compartment(patient: string): Promise<ResourceRef[]> {
    requireId(patient, 'patient');
    const rows = await this.query<{ resource_type: string; id: string }>(this.pool, 'compartment', [patient]);
    return rows.map((r) => ({ resourceType: r.resource_type, id: r.id }));
  }
}

/**
 * The statements a write transaction starts with, sent with BEGIN in one round trip (so the owners are
 * inlined as literals: each is `*` or a FHIR id, checked here again, so it can hold no quote). In order: the
 * shared KEK lock (a rotation waits for this write, or this write for the rotation), the shared lock of each
 * compartment owner (an erasure waits for this write, or this write sees the erasure), then, in a snapshot
 * taken after both, each owner's wrapped DEK and whether it was erased.
 */
function writePrologue(owners: readonly string[]): string {
  const literals = owners.map((owner) => {
    if (owner !== nodeOwner) requireId(owner, 'patient');
    return `('${owner}')`;
  });
  const values = `(VALUES ${literals.join(', ')}) AS w(owner)`;
  return `SELECT pg_advisory_xact_lock_shared(${kekLockClass}, 0);
    SELECT pg_advisory_xact_lock_shared(${ownerLockClass}, hashtext(w.owner)) FROM ${values};
    SELECT w.owner, d.wrapped, d.kek_id, e.owner IS NOT NULL AS erased FROM ${values}
      LEFT JOIN store_dek d ON d.owner = w.owner LEFT JOIN store_erasure e ON e.owner = w.owner`;
}

/**
 * Runs `work` in one transaction on a pooled connection, retrying it on a deadlock or serialization failure.
 * `prologue` (statements without parameters) runs with BEGIN in the same round trip; `work` gets its results.
 */
async function withTransaction<T>(
  pool: Pool,
  work: (c: PoolClient, opened: pg.QueryResult[]) => Promise<T>,
  prologue?: string,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const client = await pool.connect();
    let broken: Error | undefined;
    try {
      const begun = (await client.query(prologue === undefined ? 'BEGIN' : `BEGIN; ${prologue}`)) as unknown as pg.QueryResult | pg.QueryResult[];
      const result = await work(client, Array.isArray(begun) ? begun.slice(1) : []);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      try {
        await client.query('ROLLBACK');
      } catch (rollbackError) {
        // The connection is unusable; the pool must not hand it out again.
        broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
      }
      if (attempt < maxAttempts && isRetryable(err)) continue;
      throw err;
    } finally {
      client.release(broken);
    }
  }
}

/**
 * Opens the record store in the PostgreSQL database of `pool` or `connectionString` (creating its tables
 * in the connection's schema on first use). Rejects with `integrity` when `kek` does not unwrap the keys
 * already stored there, and `invalid` when it is not 32 bytes.
 */
export async function openPostgresRecordStore(options: PostgresRecordStoreOptions): Promise<PostgresRecordStore> {
  return PostgresRecordStore.open(options);
}
