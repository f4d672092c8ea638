/**
 * WalFlush, WalCheckpointer and the LocalOrderer's use of them, against real SQLite files. node:fs is wrapped only to count (and, where a test
 * says so, hold back or fail) the fdatasync calls: the syncs themselves are real.
 */
import Database from 'better-sqlite3';
import { linkSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { fixedClock } from '../src/kernel/index.js';
import { WalCheckpointer, WalFlush } from '../src/ledger/index.js';
import { LocalOrderer } from '../src/ordering/index.js';

type SyncCallback = (err: NodeJS.ErrnoException | null) => void;

const fsControl = vi.hoisted(() => ({
  /** Inode of each fd handed to an asynchronous fdatasync, in order. */
  synced: [] as number[],
  /** When set, asynchronous fdatasyncs wait for `release()` (and fail with `failWith`, if set). */
  hold: false,
  held: [] as (() => void)[],
  failWith: null as NodeJS.ErrnoException | null,
  syncSyncCalls: 0,
}));

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const fdatasync = (fd: number, callback: SyncCallback): void => {
    fsControl.synced.push(fs.fstatSync(fd).ino);
    const run = () => (fsControl.failWith ? callback(fsControl.failWith) : fs.fdatasync(fd, callback));
    if (fsControl.hold) fsControl.held.push(run);
    else run();
  };
  const fdatasyncSync = (fd: number): void => {
    fsControl.syncSyncCalls++;
    fs.fdatasyncSync(fd);
  };
  return { ...fs, default: { ...fs, fdatasync, fdatasyncSync }, fdatasync, fdatasyncSync };
});

function release(): void {
  fsControl.hold = false;
  for (const run of fsControl.held.splice(0)) run();
}

let dir: string;
const open: { close(): unknown }[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hl-wal-'));
  fsControl.synced = [];
  fsControl.hold = false;
  fsControl.held = [];
  fsControl.failWith = null;
  fsControl.syncSyncCalls = 0;
});

afterEach(async () => {
  release();
  for (const o of open.splice(0).reverse()) await o.close();
  rmSync(dir, { recursive: true, force: true });
});

function database(name: string): { db: Database.Database; file: string } {
  const file = join(dir, name);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('wal_autocheckpoint = 0');
  db.exec('CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)');
  open.push(db);
  return { db, file };
}

const until = async (check: () => boolean, ms = 10_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('WalFlush', () => {
  it('syncs the WAL for each caller, one fsync serving everyone who asked while another ran', async () => {
    const { db, file } = database('a.db');
    const wal = new WalFlush(file);
    open.push(wal);
    const walIno = statSync(`${file}-wal`).ino;
    const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
    fsControl.hold = true;
    insert.run(Buffer.from('first'));
    const first = wal.flush();
    // These commits came after the first fsync began: it may not cover them, so they wait for one more.
    const later: Promise<void>[] = [];
    for (let i = 0; i < 20; i++) {
      insert.run(Buffer.alloc(100, i));
      later.push(wal.flush());
    }
    expect(new Set(later).size).toBe(1);
    expect(later[0]).not.toBe(first);
    let laterDone = false;
    void later[0]!.then(() => (laterDone = true));
    release();
    await first;
    await Promise.all(later);
    expect(laterDone).toBe(true);
    expect(fsControl.synced).toEqual([walIno, walIno]);
  });

  it('rejects the callers of an fsync that fails, and the next flush tries again', async () => {
    const { db, file } = database('f.db');
    const wal = new WalFlush(file);
    open.push(wal);
    db.prepare('INSERT INTO t (v) VALUES (?)').run(Buffer.from('x'));
    fsControl.failWith = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    await expect(wal.flush()).rejects.toThrow(/EIO/);
    fsControl.failWith = null;
    await expect(wal.flush()).resolves.toBeUndefined();
  });

  it('opens the new file when the WAL was replaced', async () => {
    const { db, file } = database('b.db');
    const wal = new WalFlush(file);
    open.push(wal);
    db.prepare('INSERT INTO t (v) VALUES (?)').run(Buffer.from('one'));
    await wal.flush();
    const oldIno = statSync(`${file}-wal`).ino;
    // Keep the old inode alive (so the new file cannot reuse its number), then let SQLite make a new WAL.
    linkSync(`${file}-wal`, join(dir, 'old-wal'));
    db.close();
    open.splice(open.indexOf(db), 1);
    rmSync(`${file}-wal`, { force: true });
    const again = new Database(file);
    open.push(again);
    again.pragma('journal_mode = WAL');
    again.prepare('INSERT INTO t (v) VALUES (?)').run(Buffer.from('two'));
    const newIno = statSync(`${file}-wal`).ino;
    expect(newIno).not.toBe(oldIno);
    await wal.flush();
    expect(fsControl.synced.at(-1)).toBe(newIno);
  });

  it('syncs at open what an earlier run left in the WAL, and at close what a waiting flush needs', async () => {
    const { db, file } = database('c.db');
    db.prepare('INSERT INTO t (v) VALUES (?)').run(Buffer.from('left by a killed run'));
    const wal = new WalFlush(file);
    expect(fsControl.syncSyncCalls).toBe(1);
    fsControl.hold = true;
    db.prepare('INSERT INTO t (v) VALUES (?)').run(Buffer.from('a'));
    const running = wal.flush();
    db.prepare('INSERT INTO t (v) VALUES (?)').run(Buffer.from('b'));
    const waiting = wal.flush();
    wal.close();
    // The commit behind `waiting` was synced by close itself.
    expect(fsControl.syncSyncCalls).toBe(2);
    release();
    await running;
    await waiting;
  });
});

describe('WalCheckpointer', () => {
  it('copies the WAL into the database in its worker, and the next write after that starts the WAL over', async () => {
    const { db, file } = database('d.db');
    const errors: string[] = [];
    const finish = vi.fn();
    const checkpointer = new WalCheckpointer({ file, checkEvery: 1, finish, onError: (m) => errors.push(m) });
    open.push(checkpointer);
    const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
    const initialDbSize = statSync(file).size;
    for (let i = 0; i < 100; i++) {
      insert.run(Buffer.alloc(4000, i % 251));
      checkpointer.wrote();
    }
    await checkpointer.settled();
    // One more, with no write running beside it.
    checkpointer.wrote();
    await checkpointer.settled();
    // `finish` does nothing here, and wal_autocheckpoint is 0: only the worker can have moved the pages.
    expect(finish).not.toHaveBeenCalled();
    expect(errors).toEqual([]);
    expect(checkpointer.lastReport).toMatchObject({ busy: 0 });
    // No write ran during the last checkpoint, so it copied everything: the next write rewinds the WAL.
    const [before] = db.pragma('wal_checkpoint(PASSIVE)') as { log: number }[];
    expect(statSync(file).size).toBeGreaterThan(initialDbSize + 350_000);
    insert.run(Buffer.from('after'));
    const [after] = db.pragma('wal_checkpoint(PASSIVE)') as { log: number }[];
    expect(after!.log).toBeLessThan(before!.log);
    expect(new Database(file, { readonly: true }).prepare('SELECT count(*) FROM t').pluck().get()).toBe(101);
  });

  it('finishes on the writer connection only when the worker leaves frames of a WAL longer than finishFrames', async () => {
    const { db, file } = database('e.db');
    const finish = vi.fn(() => db.pragma('wal_checkpoint(PASSIVE)'));
    const checkpointer = new WalCheckpointer({ file, checkEvery: 25, finishFrames: 20, finish });
    open.push(checkpointer);
    const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
    const write = (n: number) => {
      for (let i = 0; i < n; i++) {
        insert.run(Buffer.alloc(4000, i));
        checkpointer.wrote();
      }
    };
    // Nothing written while the worker runs: it copies the whole (long) WAL, and the event loop does nothing.
    write(25);
    await checkpointer.settled();
    expect(checkpointer.lastReport!.log).toBeGreaterThan(20);
    expect(checkpointer.lastReport!.checkpointed).toBe(checkpointer.lastReport!.log);
    expect(finish).not.toHaveBeenCalled();
    // A reader holding an older snapshot keeps the frames after it from being copied, whatever the passes.
    const reader = new Database(file, { readonly: true });
    reader.exec('BEGIN');
    reader.prepare('SELECT count(*) FROM t').get();
    write(25);
    await checkpointer.settled();
    expect(checkpointer.lastReport!.checkpointed).toBeLessThan(checkpointer.lastReport!.log);
    expect(finish).toHaveBeenCalledTimes(1);
    reader.exec('COMMIT');
    reader.close();
  });

  it('reports a checkpoint that fails instead of throwing into the writer', async () => {
    // Not a SQLite database: the worker fails to open it.
    const file = join(dir, 'garbage.db');
    writeFileSync(file, Buffer.alloc(8192, 7));
    const errors: string[] = [];
    const checkpointer = new WalCheckpointer({ file, checkEvery: 1, finish: () => undefined, onError: (m) => errors.push(m) });
    open.push(checkpointer);
    expect(() => checkpointer.wrote()).not.toThrow();
    await until(() => errors.length > 0);
    expect(errors[0]).toMatch(/not a database/);
  });
});

describe('LocalOrderer on a synchronous=NORMAL log', () => {
  const batch = (n: number) => [new Uint8Array([n])];

  async function firstBatches(orderer: LocalOrderer, count: number, ms: number): Promise<number[]> {
    const abort = new AbortController();
    const seen: number[] = [];
    const timer = setTimeout(() => abort.abort(), ms);
    for await (const b of orderer.blocks(0, abort.signal)) {
      seen.push(b.height);
      if (seen.length === count) break;
    }
    clearTimeout(timer);
    return seen;
  }

  it('resolves a submit, and shows the batch to readers, only once its fsync is done', async () => {
    const orderer = new LocalOrderer({ file: join(dir, 'order.sqlite'), proposer: 'org-a', clock: fixedClock(Date.parse('2026-01-01T00:00:00Z')) });
    open.push(orderer);
    fsControl.hold = true;
    let resolved = false;
    const submitted = orderer.submit(batch(1)).then((r) => ((resolved = true), r));
    await until(() => fsControl.held.length > 0);
    expect(resolved).toBe(false);
    expect(orderer.lastHeight()).toBe(-1);
    expect(await firstBatches(orderer, 1, 100)).toEqual([]);
    release();
    expect(await submitted).toEqual({ height: 0 });
    expect(orderer.lastHeight()).toBe(0);
    expect(await firstBatches(orderer, 1, 1000)).toEqual([0]);
  });

  it('refuses the batch whose fsync failed and everything after it, and never shows it', async () => {
    const orderer = new LocalOrderer({ file: join(dir, 'order-fail.sqlite'), proposer: 'org-a', clock: fixedClock(Date.parse('2026-01-01T00:00:00Z')) });
    open.push(orderer);
    fsControl.failWith = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    await expect(orderer.submit(batch(1))).rejects.toMatchObject({ code: 'pushback' });
    fsControl.failWith = null;
    await expect(orderer.submit(batch(2))).rejects.toThrow(/restart the node/);
    expect(orderer.lastHeight()).toBe(-1);
    expect(await firstBatches(orderer, 1, 100)).toEqual([]);
  });
});
