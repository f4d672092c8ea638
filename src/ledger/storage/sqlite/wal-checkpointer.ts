/**
 * WAL checkpoints off the event loop. SQLite's automatic checkpoint runs inside the commit that crosses 1,000
 * WAL pages: it copies the WAL into the database and fsyncs both, on the committing thread, which for
 * better-sqlite3 is the event loop (10–20 ms here, every hundred audited reads or so: the read p99). A
 * connection with `wal_autocheckpoint = 0` hands them to this: once the WAL has grown past `thresholdBytes`,
 * a worker thread with its own connection to the same file runs a PASSIVE checkpoint, which neither waits
 * for nor blocks readers and writers, a few times while the writer added frames meanwhile (each pass copies
 * less). The WAL only starts over after a checkpoint that copied all of it, which under a steady stream of
 * writes a concurrent one rarely does: then `finish` (a PASSIVE checkpoint on the writer's own connection,
 * which no write can overtake) copies the little that is left. No mode that waits for writers (FULL,
 * RESTART) runs in the worker: the writer is the event loop, and it would wait synchronously for it.
 */
import { statSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

// Self-contained CommonJS so it runs the same from dist/ and from the TypeScript sources under test.
const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
// better-sqlite3 resolved from this module's place, whatever the working directory.
const Database = require('node:module').createRequire(workerData.from)('better-sqlite3');
const db = new Database(workerData.file, { fileMustExist: true });
db.pragma('busy_timeout = 1000');
parentPort.on('message', (m) => {
  if (m === 'close') {
    db.close();
    parentPort.close();
    return;
  }
  let error = null;
  let complete = false;
  try {
    // Each pass copies what was written during the one before. A pass reports the WAL's length as it
    // began, so the WAL is known to be all copied (and the next write starts it over) only when a pass
    // finds no frame added since the one before, or finds the WAL already started over.
    let last = -1;
    for (let pass = 0; pass < 16 && !complete; pass++) {
      const [r] = db.pragma('wal_checkpoint(PASSIVE)');
      if (r.busy !== 0) break;
      complete = r.checkpointed >= r.log && r.log <= last;
      last = r.log;
    }
  } catch (err) {
    error = String(err && err.message);
  }
  parentPort.postMessage({ error, complete });
});
`;

/** Checks the WAL size every this many writes (a stat, a few µs). */
const checkEvery = 32;

export class WalCheckpointer {
  private readonly file: string;
  private readonly thresholdBytes: number;
  private readonly onError: (message: string) => void;
  private readonly finish: () => void;
  private worker: Worker | null = null;
  private running = false;
  private writes = 0;
  private closed = false;

  constructor(options: {
    file: string;
    /** Completes a checkpoint the worker left incomplete, on the writer's connection (outside a transaction). */
    finish: () => void;
    thresholdBytes?: number;
    onError?: (message: string) => void;
  }) {
    this.file = options.file;
    this.finish = options.finish;
    this.thresholdBytes = options.thresholdBytes ?? 4 * 1024 * 1024;
    this.onError = options.onError ?? (() => undefined);
  }

  /** Called after a write: starts a checkpoint in the worker when the WAL has grown past the threshold. */
  wrote(): void {
    if (this.closed || this.running || ++this.writes < checkEvery) return;
    this.writes = 0;
    let size: number;
    try {
      size = statSync(`${this.file}-wal`).size;
    } catch {
      return;
    }
    if (size < this.thresholdBytes) return;
    this.running = true;
    this.workerNow().postMessage('checkpoint');
  }

  private workerNow(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(workerSource, { eval: true, workerData: { from: import.meta.url, file: this.file } });
    worker.unref();
    worker.on('message', (m: { error: string | null; complete: boolean }) => {
      this.running = false;
      if (m.error !== null) this.onError(m.error);
      else if (!m.complete && !this.closed) this.finish();
    });
    worker.on('error', (err) => {
      this.running = false;
      this.worker = null;
      this.onError(err.message);
    });
    this.worker = worker;
    return worker;
  }

  /** Lets the worker finish and close its connection (the database's own close then is the last). */
  close(): void {
    this.closed = true;
    this.worker?.postMessage('close');
    this.worker = null;
  }
}
