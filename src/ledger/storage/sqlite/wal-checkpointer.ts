/**
 * WAL checkpoints off the event loop. SQLite's automatic checkpoint runs inside the commit that crosses 1,000
 * WAL pages: it copies the WAL into the database and fsyncs both, on the committing thread, which for
 * better-sqlite3 is the event loop (10–20 ms here, every hundred audited reads or so: the read p99). A
 * connection with `wal_autocheckpoint = 0` hands them to this: every `checkEvery` writes, a worker thread with
 * its own connection to the same file runs a PASSIVE checkpoint, which neither waits for nor blocks readers
 * and writers, and copies what was written since the last one.
 *
 * The WAL starts over (the writer rewinds it) only when a write begins after a checkpoint copied all of it.
 * Under a steady stream of writes a concurrent checkpoint rarely ends in such a gap, so the worker runs up
 * to `passes` checkpoints in a row, each copying what was appended during the one before, until one copies
 * everything. Only when the WAL is still longer than `finishFrames` with frames left over does `finish` (a
 * PASSIVE checkpoint on the writer's own connection, which no write can overtake) copy the rest: that one
 * runs on the event loop with its fsync of the database file (20–40 ms here), so it is the last resort. No
 * mode that waits for writers (FULL, RESTART) runs in the worker: the writer is the event loop, and it would
 * wait synchronously for it.
 */
import { Worker } from 'node:worker_threads';

// Self-contained CommonJS so it runs the same from dist/ and from the TypeScript sources under test.
const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
// better-sqlite3 resolved from this module's place, whatever the working directory.
const Database = require('node:module').createRequire(workerData.from)('better-sqlite3');
const db = new Database(workerData.file, { fileMustExist: true });
parentPort.on('message', (m) => {
  if (m === 'close') {
    db.close();
    parentPort.close();
    return;
  }
  try {
    // Each pass copies what the writer appended during the one before, so a few end with all of it copied.
    let r;
    for (let pass = 0; pass < workerData.passes; pass++) {
      [r] = db.pragma('wal_checkpoint(PASSIVE)');
      if (r.busy || r.checkpointed >= r.log) break;
    }
    parentPort.postMessage({ error: null, busy: r.busy, log: r.log, checkpointed: r.checkpointed });
  } catch (err) {
    parentPort.postMessage({ error: String(err && err.message) });
  }
});
`;

/** What one checkpoint in the worker did (SQLite's `wal_checkpoint` row: frames in the WAL, frames copied). */
export interface CheckpointReport {
  busy: number;
  log: number;
  checkpointed: number;
}

export class WalCheckpointer {
  private readonly file: string;
  private readonly finish: () => void;
  private readonly onError: (message: string) => void;
  private readonly checkEvery: number;
  private readonly finishFrames: number;
  private readonly passes: number;
  private worker: Worker | null = null;
  private running = false;
  private writes = 0;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  /** The last report, for tests and diagnostics. */
  lastReport: CheckpointReport | null = null;

  constructor(options: {
    file: string;
    /** Completes a checkpoint the worker could not, on the writer's connection (outside a transaction). */
    finish: () => void;
    onError?: (message: string) => void;
    /** Writes (commits) between two checkpoints. */
    checkEvery?: number;
    /** A WAL longer than this many frames (4 KiB pages) with frames the worker could not copy is finished on the writer's connection. */
    finishFrames?: number;
    /** Checkpoints the worker runs in a row, at most, to copy what was written meanwhile. */
    passes?: number;
  }) {
    this.file = options.file;
    this.finish = options.finish;
    this.onError = options.onError ?? (() => undefined);
    this.checkEvery = options.checkEvery ?? 32;
    this.finishFrames = options.finishFrames ?? 4096;
    this.passes = options.passes ?? 8;
  }

  /** Called after a commit: every `checkEvery` of them, starts a checkpoint in the worker (unless one runs). */
  wrote(): void {
    if (this.closed || this.running || ++this.writes < this.checkEvery) return;
    this.writes = 0;
    this.running = true;
    this.workerNow().postMessage('checkpoint');
  }

  /** Resolves when no checkpoint is under way in the worker. */
  settled(): Promise<void> {
    if (!this.running) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private done(): void {
    this.running = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private workerNow(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(workerSource, { eval: true, workerData: { from: import.meta.url, file: this.file, passes: this.passes } });
    worker.unref();
    worker.on('message', (m: { error: string | null } & Partial<CheckpointReport>) => {
      if (m.error !== null) this.onError(m.error);
      else {
        this.lastReport = { busy: m.busy!, log: m.log!, checkpointed: m.checkpointed! };
        if (!this.closed && m.log! > this.finishFrames && m.checkpointed! < m.log!) this.finish();
      }
      this.done();
    });
    worker.on('error', (err) => {
      this.worker = null;
      this.onError(err.message);
      this.done();
    });
    this.worker = worker;
    return worker;
  }

  /** Lets the worker finish and close its connection (the database's own close then is the last). */
  close(): void {
    this.closed = true;
    this.worker?.postMessage('close');
    this.worker = null;
    this.done();
  }
}
