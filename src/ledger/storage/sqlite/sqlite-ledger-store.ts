/**
 * SQLite ledger storage (better-sqlite3, WAL). The connection runs synchronous=NORMAL: a commit writes its WAL
 * frames, which survive a crash of the process, but does not fsync them on the event loop. What must also
 * survive a power loss is made durable by `flush()` (an fdatasync of the WAL on the thread pool, shared by
 * every commit before it; see `WalFlush`), which a writer awaits before it acknowledges: the record store
 * does so after marking versions committed, and the ordering log fsyncs its own file before a batch is
 * applied. Blocks and checkpoints need no flush of their own: the ordering log can always redo them (a block
 * applies a durable batch deterministically; Ed25519 signs deterministically, so a redone checkpoint is the
 * same bytes), and WAL frames are appended in commit order, so the next flush covers them too. Meta values
 * (the fork alarm) are rare and are committed at FULL. (An ordering log that is compacted must keep what some
 * node's ledger has not yet made durable.)
 */
import Database from 'better-sqlite3';
import { HlError } from '../../../kernel/index.js';
import type { BlockHeader, StoredTx } from '../../block.js';
import type { BlockRecord, LedgerHead, LedgerStore } from '../ledger-store.js';
import { OffLoopWal } from './off-loop-wal.js';

const schema = `
CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_block (height INTEGER PRIMARY KEY, hash TEXT NOT NULL, header TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_tx (
  height INTEGER NOT NULL, position INTEGER NOT NULL, tx_id TEXT NOT NULL, valid INTEGER NOT NULL,
  leaf_index INTEGER, error TEXT, bytes BLOB NOT NULL, PRIMARY KEY (height, position));
CREATE INDEX IF NOT EXISTS ledger_tx_by_id ON ledger_tx (tx_id);
CREATE UNIQUE INDEX IF NOT EXISTS ledger_tx_by_leaf ON ledger_tx (leaf_index) WHERE leaf_index IS NOT NULL;
CREATE TABLE IF NOT EXISTS merkle_node (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
  PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_checkpoint (tree_size INTEGER PRIMARY KEY, note TEXT NOT NULL);
`;

interface TxRow {
  height: number;
  position: number;
  tx_id: string;
  valid: number;
  leaf_index: number | null;
  error: string | null;
  bytes: Buffer;
}

function toStoredTx(r: TxRow): StoredTx {
  return {
    height: r.height,
    position: r.position,
    txId: r.tx_id,
    valid: r.valid === 1,
    leafIndex: r.leaf_index,
    error: r.error,
    bytes: new Uint8Array(r.bytes),
  };
}

/**
 * Merkle nodes at and above this level are also kept in memory (flat arrays, 32 bytes a node: about one byte
 * per leaf in all), so a proof reads at most this many levels from SQLite.
 */
const cachedFromLevel = 4;

/** A growable array of 32-byte hashes. */
class HashArray {
  private buf = new Uint8Array(32 * 64);
  length = 0;

  push(hash: Uint8Array): void {
    if ((this.length + 1) * 32 > this.buf.length) {
      const bigger = new Uint8Array(this.buf.length * 2);
      bigger.set(this.buf);
      this.buf = bigger;
    }
    this.buf.set(hash, this.length * 32);
    this.length++;
  }

  at(index: number): Uint8Array | undefined {
    return index < this.length ? this.buf.subarray(index * 32, index * 32 + 32) : undefined;
  }
}

/** The SQLite `LedgerStore`. Open with `openSqliteLedgerStore(file)`; `:memory:` works for tests. */
export class SqliteLedgerStore implements LedgerStore {
  readonly db: Database.Database;
  private readonly wal: OffLoopWal;
  private readonly stmts;
  private upperLevels: HashArray[] = [];
  /** Made once: better-sqlite3 builds a wrapper per `transaction()` call, which costs more than the reads. */
  private readonly readTransaction: (fn: () => unknown) => unknown;

  constructor(db: Database.Database) {
    this.db = db;
    db.pragma('journal_mode = WAL');
    this.wal = new OffLoopWal(db);
    // The node's records share this file: a 64 MB page cache (not the default 2 MB) keeps the hot pages of
    // point reads (a version, its commitment leaf, index terms) in memory, bounded, unlike an mmap.
    db.pragma('cache_size = -65536');
    db.exec(schema);
    this.stmts = {
      head: db.prepare('SELECT height, hash, header FROM ledger_block ORDER BY height DESC LIMIT 1'),
      block: db.prepare('SELECT hash, header FROM ledger_block WHERE height = ?'),
      blocksFrom: db.prepare('SELECT hash, header FROM ledger_block WHERE height >= ? ORDER BY height'),
      insertBlock: db.prepare('INSERT INTO ledger_block (height, hash, header) VALUES (?, ?, ?)'),
      insertTx: db.prepare(
        'INSERT INTO ledger_tx (height, position, tx_id, valid, leaf_index, error, bytes) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      insertNode: db.prepare('INSERT INTO merkle_node (level, idx, hash) VALUES (?, ?, ?)'),
      node: db.prepare('SELECT hash FROM merkle_node WHERE level = ? AND idx = ?').pluck(),
      nodeRange: db.prepare('SELECT idx, hash FROM merkle_node WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx'),
      nodeCount: db.prepare('SELECT count(*) FROM merkle_node').pluck(),
      blockTxs: db.prepare('SELECT * FROM ledger_tx WHERE height = ? ORDER BY position'),
      allTxs: db.prepare('SELECT * FROM ledger_tx WHERE height >= ? ORDER BY height, position'),
      txById: db.prepare('SELECT * FROM ledger_tx WHERE tx_id = ? ORDER BY valid DESC, height LIMIT 1'),
      entry: db.prepare('SELECT bytes FROM ledger_tx WHERE leaf_index = ?').pluck(),
      entries: db.prepare('SELECT bytes FROM ledger_tx WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index').pluck(),
      putCheckpoint: db.prepare('INSERT OR REPLACE INTO ledger_checkpoint (tree_size, note) VALUES (?, ?)'),
      latestCheckpoint: db.prepare('SELECT tree_size, note FROM ledger_checkpoint ORDER BY tree_size DESC LIMIT 1'),
      checkpoint: db.prepare('SELECT note FROM ledger_checkpoint WHERE tree_size = ?').pluck(),
      checkpointsDescending: db.prepare('SELECT tree_size, note FROM ledger_checkpoint ORDER BY tree_size DESC LIMIT ?'),
      checkpoints: db.prepare('SELECT tree_size, note FROM ledger_checkpoint ORDER BY tree_size'),
      getMeta: db.prepare('SELECT value FROM ledger_meta WHERE key = ?').pluck(),
      setMeta: db.prepare('INSERT OR REPLACE INTO ledger_meta (key, value) VALUES (?, ?)'),
    };
    this.readTransaction = db.transaction((fn: () => unknown) => fn());
    this.loadUpperLevels();
  }

  /** (Re)loads the in-memory copy of the upper Merkle levels from the table. */
  private loadUpperLevels(): void {
    this.upperLevels = [];
    const rows = this.db
      .prepare('SELECT level, idx, hash FROM merkle_node WHERE level >= ? ORDER BY level, idx')
      .iterate(cachedFromLevel) as Iterable<{ level: number; idx: number; hash: Buffer }>;
    for (const r of rows) {
      const level = (this.upperLevels[r.level - cachedFromLevel] ??= new HashArray());
      if (r.idx !== level.length) break; // a gap: serve the rest of this level from SQLite
      level.push(r.hash);
    }
  }

  head(): LedgerHead | null {
    const row = this.stmts.head.get() as { height: number; hash: string; header: string } | undefined;
    if (!row) return null;
    const header = JSON.parse(row.header) as BlockHeader;
    return { height: row.height, hash: row.hash, treeSize: header.treeSize, root: header.root };
  }

  read<T>(fn: () => T): T {
    return this.db.inTransaction ? fn() : (this.readTransaction(fn) as T);
  }

  appendBlock(block: BlockRecord): void {
    const run = this.db.transaction((b: BlockRecord) => {
      const head = this.head();
      const expected = head === null ? 0 : head.height + 1;
      if (b.header.height !== expected) {
        throw new HlError('conflict', `block height ${b.header.height} does not follow the head (expected ${expected})`);
      }
      this.stmts.insertBlock.run(b.header.height, b.hash, JSON.stringify(b.header));
      for (const t of b.txs) {
        this.stmts.insertTx.run(t.height, t.position, t.txId, t.valid ? 1 : 0, t.leafIndex, t.error, t.bytes);
      }
      for (const n of b.nodes) this.stmts.insertNode.run(n.level, n.index, n.hash);
    });
    run.immediate(block);
    this.wal.wrote();
    for (const n of block.nodes) {
      if (n.level < cachedFromLevel) continue;
      const level = (this.upperLevels[n.level - cachedFromLevel] ??= new HashArray());
      if (n.index === level.length) level.push(n.hash);
    }
  }

  block(height: number): { header: BlockHeader; hash: string } | null {
    const row = this.stmts.block.get(height) as { hash: string; header: string } | undefined;
    return row ? { hash: row.hash, header: JSON.parse(row.header) as BlockHeader } : null;
  }

  blockTxs(height: number): StoredTx[] {
    return (this.stmts.blockTxs.all(height) as TxRow[]).map(toStoredTx);
  }

  *blocks(fromHeight = 0): Iterable<{ header: BlockHeader; hash: string }> {
    for (const row of this.stmts.blocksFrom.iterate(fromHeight) as Iterable<{ hash: string; header: string }>) {
      yield { hash: row.hash, header: JSON.parse(row.header) as BlockHeader };
    }
  }

  *allTxs(fromHeight = 0): Iterable<StoredTx> {
    for (const row of this.stmts.allTxs.iterate(fromHeight) as Iterable<TxRow>) yield toStoredTx(row);
  }

  txById(txId: string): StoredTx | null {
    const row = this.stmts.txById.get(txId) as TxRow | undefined;
    return row ? toStoredTx(row) : null;
  }

  node(level: number, index: number): Uint8Array {
    if (level >= cachedFromLevel) {
      const cached = this.upperLevels[level - cachedFromLevel]?.at(index);
      if (cached) return cached;
    }
    const hash = this.stmts.node.get(level, index) as Buffer | undefined;
    if (!hash) throw new HlError('integrity', `Merkle node ${level}/${index} is missing from storage`);
    return new Uint8Array(hash.buffer, hash.byteOffset, hash.byteLength);
  }

  nodeRange(level: number, start: number, count: number): Uint8Array {
    const rows = this.stmts.nodeRange.all(level, start, start + count) as { idx: number; hash: Buffer }[];
    const out = new Uint8Array(rows.length * 32);
    let expect = start;
    let n = 0;
    for (const r of rows) {
      if (r.idx !== expect++) break;
      out.set(r.hash, n * 32);
      n++;
    }
    return out.subarray(0, n * 32);
  }


  nodeCount(): number {
    return this.stmts.nodeCount.get() as number;
  }

  entry(leafIndex: number): Uint8Array | null {
    const bytes = this.stmts.entry.get(leafIndex) as Buffer | undefined;
    return bytes ? new Uint8Array(bytes) : null;
  }

  entries(start: number, count: number): Uint8Array[] {
    return (this.stmts.entries.all(start, start + count) as Buffer[]).map((b) => new Uint8Array(b));
  }

  putCheckpoint(treeSize: number, note: string): void {
    this.stmts.putCheckpoint.run(treeSize, note);
  }

  /** Resolves once every commit on this database so far survives a power loss (see the header). */
  flush(): Promise<void> {
    return this.wal.flush();
  }

  checkpointsDescending(limit: number): { treeSize: number; note: string }[] {
    return (this.stmts.checkpointsDescending.all(limit) as { tree_size: number; note: string }[]).map((r) => ({ treeSize: r.tree_size, note: r.note }));
  }

  checkpoint(treeSize: number): string | null {
    return (this.stmts.checkpoint.get(treeSize) as string | undefined) ?? null;
  }

  latestCheckpoint(): { treeSize: number; note: string } | null {
    const row = this.stmts.latestCheckpoint.get() as { tree_size: number; note: string } | undefined;
    return row ? { treeSize: row.tree_size, note: row.note } : null;
  }

  *checkpoints(): Iterable<{ treeSize: number; note: string }> {
    for (const r of this.stmts.checkpoints.iterate() as Iterable<{ tree_size: number; note: string }>) {
      yield { treeSize: r.tree_size, note: r.note };
    }
  }

  getMeta(key: string): string | null {
    return (this.stmts.getMeta.get(key) as string | undefined) ?? null;
  }

  setMeta(key: string, value: string): void {
    // Rare and synchronous for its callers: fsynced here, at FULL.
    this.db.pragma('synchronous = FULL');
    try {
      this.stmts.setMeta.run(key, value);
    } finally {
      this.db.pragma('synchronous = NORMAL');
    }
  }

  close(): void {
    this.wal.close();
    if (this.db.open) this.db.close();
  }
}

/** Opens (creating if needed) a SQLite ledger store at `file`. */
export function openSqliteLedgerStore(file: string): SqliteLedgerStore {
  return new SqliteLedgerStore(new Database(file));
}
