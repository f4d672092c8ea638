/**
 * The WAL setup the node's SQLite files share (the ledger with its records, and the ordering log): commits at
 * synchronous=NORMAL, made durable by `flush()` off the event loop (`WalFlush`), and checkpoints in a worker
 * (`WalCheckpointer`) instead of inside a commit. Should the worker fail, SQLite's own checkpoints take over
 * again, so the WAL never grows without bound; one that grew during a burst is cut back to 64 MB when it
 * starts over. An in-memory database has no WAL: its commits are as durable as they will ever be.
 */
import type Database from 'better-sqlite3';
import { WalCheckpointer } from './wal-checkpointer.js';
import { WalFlush } from './wal-flush.js';

export class OffLoopWal {
  private readonly wal: WalFlush | null;
  private readonly checkpointer: WalCheckpointer | null;

  /** Sets `db` (a file opened in WAL mode, or `:memory:`) up; call `close()` before closing `db`. */
  constructor(db: Database.Database) {
    db.pragma('synchronous = NORMAL');
    if (db.memory) {
      this.wal = null;
      this.checkpointer = null;
      return;
    }
    this.wal = new WalFlush(db.name);
    this.checkpointer = new WalCheckpointer({
      file: db.name,
      finish: () => db.open && !db.inTransaction && db.pragma('wal_checkpoint(PASSIVE)'),
      onError: () => db.open && db.pragma('wal_autocheckpoint = 1000'),
    });
    db.pragma('wal_autocheckpoint = 0');
    db.pragma('journal_size_limit = 67108864');
  }

  /** Resolves once every commit on the database so far survives a power loss. */
  flush(): Promise<void> {
    return this.wal ? this.wal.flush() : Promise.resolve();
  }

  /** Called after a commit: paces the checkpoints. */
  wrote(): void {
    this.checkpointer?.wrote();
  }

  /** Stops the checkpoints and syncs what is left (before the database closes). */
  close(): void {
    this.checkpointer?.close();
    this.wal?.close();
  }
}
