/**
 * Durability without blocking the event loop, for a SQLite database in WAL mode at synchronous=NORMAL.
 *
 * better-sqlite3 is synchronous: at synchronous=FULL every commit fsyncs the WAL on the event loop, and every
 * request in flight waits for the disk (a few milliseconds each here). At NORMAL a commit has written its WAL
 * frames (write(2), so they survive a crash of the process) but not fsynced them. `WalFlush.flush()` then
 * fdatasyncs the WAL file on libuv's thread pool and resolves once every commit made before the call is on
 * disk, so it survives a power loss too. A writer acknowledges only after that.
 *
 * Callers share fsyncs: while one runs, every caller waits for a single next one (the running one may have
 * started before their commit). Checkpoints need nothing from here: at NORMAL SQLite fsyncs the WAL before
 * copying it into the database and the database after. The WAL is reopened when its file was replaced.
 * Opening syncs what an earlier run left in the WAL (after a kill, it may still be only in the page cache),
 * and closing syncs what is left, so a flush still waiting then resolves truthfully.
 */
import { closeSync, fdatasync, fdatasyncSync, fstatSync, openSync, statSync } from 'node:fs';

export class WalFlush {
  private readonly walFile: string;
  private fd: number | null = null;
  private running: Promise<void> | null = null;
  private next: Promise<void> | null = null;
  private closed = false;

  /** `databaseFile`: the SQLite database's path (its WAL is `<path>-wal`). Syncs the WAL as it is now. */
  constructor(databaseFile: string) {
    this.walFile = `${databaseFile}-wal`;
    const fd = this.walFd();
    if (fd !== null) fdatasyncSync(fd);
  }

  /** Resolves once every commit made before this call is durable; rejects on an I/O error. */
  flush(): Promise<void> {
    if (this.next) return this.next;
    if (!this.running) return this.start();
    const after = () => {
      this.next = null;
      return this.start();
    };
    this.next = this.running.then(after, after);
    return this.next;
  }

  private start(): Promise<void> {
    const run = this.syncOnce().finally(() => {
      if (this.running === run) this.running = null;
    });
    this.running = run;
    return run;
  }

  private syncOnce(): Promise<void> {
    // After close, the final synchronous sync covered every commit.
    const fd = this.closed ? null : this.walFd();
    if (fd === null) return Promise.resolve();
    return new Promise((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())));
  }

  /** The open WAL, reopened if the path now names another file; null when there is none (nothing to sync). */
  private walFd(): number | null {
    let ino: number;
    try {
      ino = statSync(this.walFile).ino;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    if (this.fd !== null && fstatSync(this.fd).ino !== ino) {
      this.closeFd(this.fd);
      this.fd = null;
    }
    this.fd ??= openSync(this.walFile, 'r');
    return this.fd;
  }

  /** Syncs what was committed so far (before the database closes) and closes the WAL. */
  close(): void {
    if (this.closed) return;
    const fd = this.walFd();
    this.closed = true;
    if (fd !== null) fdatasyncSync(fd);
    this.fd = null;
    if (fd !== null) this.closeFd(fd);
  }

  /** Closes `fd` once no fsync on the thread pool may still be using it. */
  private closeFd(fd: number): void {
    const pending = this.next ?? this.running;
    if (pending) void pending.catch(() => undefined).finally(() => closeSync(fd));
    else closeSync(fd);
  }
}
