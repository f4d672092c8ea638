/**
 * In-process, durable ordering for one node or the one-process demo network. Its own append-only log is a
 * SQLite file (WAL). Group commit: every submit waiting when a flush starts goes into one batch; the batches
 * are committed at synchronous=NORMAL and then fsynced together off the event loop (`WalFlush`). A submit
 * resolves with its batch's height, and readers see a batch, only once it is on disk: a ledger never applies
 * a batch that a power loss could take back.
 */
import Database from 'better-sqlite3';
import { HlError, type Clock } from '../../kernel/index.js';
import { OffLoopWal, type OrderedBatch } from '../../ledger/index.js';
import { decodeTxs, encodeTxs } from '../batch-codec.js';
import type { Orderer, SubmitResult } from '../orderer.js';

interface Pending {
  txs: Uint8Array[];
  resolve: (r: SubmitResult) => void;
  reject: (err: unknown) => void;
}

/** Options of `LocalOrderer`. */
export interface LocalOrdererOptions {
  /** The log file (`:memory:` for tests that need no durability). */
  file: string;
  /** Proposer name written on every batch (the node's org id). */
  proposer: string;
  clock: Clock;
  /** Upper bounds of one batch. */
  maxBatchTxs?: number;
  maxBatchBytes?: number;
}

/** The embedded `Orderer`. */
export class LocalOrderer implements Orderer {
  private readonly db: Database.Database;
  private readonly proposer: string;
  private readonly clock: Clock;
  private readonly maxBatchTxs: number;
  private readonly maxBatchBytes: number;
  private readonly insert: Database.Statement;
  private readonly readFrom: Database.Statement;
  private queue: Pending[] = [];
  private flushScheduled = false;
  private readonly wal: OffLoopWal;
  /** The last height written, and the last one known to be on disk (what readers may see). */
  private last: number;
  private durable: number;
  private lastTimeMs: number;
  private waiters: (() => void)[] = [];
  private closed = false;
  /** Set when the log could not be synced: nothing more is ordered until a restart. */
  private failed: Error | null = null;

  constructor(options: LocalOrdererOptions) {
    this.db = new Database(options.file);
    this.db.pragma('journal_mode = WAL');
    this.wal = new OffLoopWal(this.db);
    this.db.exec(
      'CREATE TABLE IF NOT EXISTS orderer_batch (height INTEGER PRIMARY KEY, time TEXT NOT NULL, proposer TEXT NOT NULL, payload BLOB NOT NULL)',
    );
    this.proposer = options.proposer;
    this.clock = options.clock;
    this.maxBatchTxs = options.maxBatchTxs ?? 5000;
    this.maxBatchBytes = options.maxBatchBytes ?? 8 * 1024 * 1024;
    this.insert = this.db.prepare('INSERT INTO orderer_batch (height, time, proposer, payload) VALUES (?, ?, ?, ?)');
    this.readFrom = this.db.prepare('SELECT height, time, proposer, payload FROM orderer_batch WHERE height >= ? AND height <= ? ORDER BY height LIMIT 64');
    const row = this.db.prepare('SELECT height, time FROM orderer_batch ORDER BY height DESC LIMIT 1').get() as
      | { height: number; time: string }
      | undefined;
    this.last = row?.height ?? -1;
    // What a previous run wrote is durable: opening (OffLoopWal) synced what it left in the WAL.
    this.durable = this.last;
    this.lastTimeMs = row ? Date.parse(row.time) : 0;
  }

  lastHeight(): number {
    return this.durable;
  }

  submit(txs: Uint8Array[]): Promise<SubmitResult> {
    if (this.closed) return Promise.reject(new HlError('pushback', 'orderer is closed'));
    if (this.failed) return Promise.reject(new HlError('pushback', 'the ordering log could not be synced; restart the node', { cause: this.failed }));
    if (txs.length === 0) return Promise.reject(new HlError('invalid', 'a batch needs at least one tx'));
    return new Promise((resolve, reject) => {
      this.queue.push({ txs, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => void this.flush());
      }
    });
  }

  private async flush(): Promise<void> {
    this.flushScheduled = false;
    const written: { group: Pending[]; height: number }[] = [];
    while (this.queue.length > 0) {
      const group: Pending[] = [];
      const txs: Uint8Array[] = [];
      let bytes = 0;
      while (this.queue.length > 0) {
        const next = this.queue[0]!;
        const size = next.txs.reduce((s, t) => s + t.length, 0);
        if (group.length > 0 && (txs.length + next.txs.length > this.maxBatchTxs || bytes + size > this.maxBatchBytes)) break;
        this.queue.shift();
        group.push(next);
        txs.push(...next.txs);
        bytes += size;
      }
      // Batch times never go backwards, so replays and validation see a monotonic clock.
      const timeMs = Math.max(this.clock.nowMs(), this.lastTimeMs);
      const height = this.last + 1;
      try {
        this.insert.run(height, new Date(timeMs).toISOString(), this.proposer, encodeTxs(txs));
      } catch (err) {
        for (const p of group) p.reject(new HlError('pushback', 'the ordering log could not be written', { cause: err }));
        continue;
      }
      this.last = height;
      this.lastTimeMs = timeMs;
      written.push({ group, height });
      this.wal.wrote();
    }
    if (written.length === 0) return;
    try {
      await this.wal.flush();
    } catch (err) {
      // Written but perhaps not on disk, and a later fsync could succeed without the lost pages: nothing
      // written from now on is trusted. Every waiting submit is refused, and readers never see these
      // batches in this run; the next run starts from what the file then holds.
      this.failed ??= err instanceof Error ? err : new Error(String(err));
    }
    if (this.failed) {
      const refusal = new HlError('pushback', 'the ordering log could not be synced; restart the node', { cause: this.failed });
      for (const { group } of written) for (const p of group) p.reject(refusal);
      for (const p of this.queue.splice(0)) p.reject(refusal);
      return;
    }
    this.durable = Math.max(this.durable, written.at(-1)!.height);
    for (const { group, height } of written) for (const p of group) p.resolve({ height });
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  async *blocks(fromHeight: number, signal?: AbortSignal): AsyncIterable<OrderedBatch> {
    let next = fromHeight;
    while (!this.closed && !signal?.aborted) {
      const rows = this.readFrom.all(next, this.durable) as { height: number; time: string; proposer: string; payload: Buffer }[];
      for (const r of rows) {
        if (r.height !== next) throw new HlError('integrity', `ordering log has a gap at height ${next}`);
        yield { height: r.height, time: r.time, proposer: r.proposer, txs: decodeTxs(new Uint8Array(r.payload)) };
        next++;
      }
      if (rows.length > 0) continue;
      await new Promise<void>((resolve) => {
        const done = () => {
          signal?.removeEventListener('abort', done);
          resolve();
        };
        this.waiters.push(done);
        signal?.addEventListener('abort', done, { once: true });
      });
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.queue) p.reject(new HlError('pushback', 'orderer closed'));
    this.queue = [];
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
    this.wal.close();
    this.db.close();
  }
}
