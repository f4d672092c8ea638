/**
 * WalFlush and WalCheckpointer against real SQLite files: fsyncs shared by concurrent callers, a replaced
 * WAL reopened, and checkpoints done by the worker (the database file grows, the WAL starts over).
 */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WalCheckpointer } from './wal-checkpointer.js';
import { WalFlush } from './wal-flush.js';

let dir: string;
const open: { close(): void }[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hl-wal-'));
});

afterEach(() => {
  for (const o of open.splice(0).reverse()) o.close();
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
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('WalFlush', () => {
  it('resolves every caller, concurrent ones sharing fsyncs, and resolves at once when there is no WAL', async () => {
    const none = new WalFlush(join(dir, 'absent.db'));
    await expect(none.flush()).resolves.toBeUndefined();
    const { db, file } = database('a.db');
    const wal = new WalFlush(file);
    open.push(wal);
    const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
    const flushes: Promise<void>[] = [];
    for (let i = 0; i < 50; i++) {
      insert.run(Buffer.alloc(100, i));
      flushes.push(wal.flush());
    }
    // A flush asked while one runs joins the single next one: at most two distinct promises here.
    expect(new Set(flushes).size).toBeLessThanOrEqual(2);
    await Promise.all(flushes);
    expect(db.prepare('SELECT count(*) FROM t').pluck().get()).toBe(50);
  });

  it('reopens a WAL that was replaced, and a flush after close resolves without touching a closed file', async () => {
    const { db, file } = database('b.db');
    const wal = new WalFlush(file);
    db.prepare('INSERT INTO t (v) VALUES (?)').run(Buffer.from('one'));
    await wal.flush();
    const before = statSync(`${file}-wal`).ino;
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.close();
    open.splice(open.indexOf(db), 1);
    rmSync(`${file}-wal`, { force: true });
    const again = new Database(file);
    open.push(again);
    again.pragma('journal_mode = WAL');
    again.prepare('INSERT INTO t (v) VALUES (?)').run(Buffer.from('two'));
    // A new file may reuse the inode number; either way the flush must succeed on the file now there.
    await expect(wal.flush()).resolves.toBeUndefined();
    expect(typeof before).toBe('number');
    wal.close();
    await expect(wal.flush()).resolves.toBeUndefined();
  });
});

describe('WalCheckpointer', () => {
  it('checkpoints in a worker once the WAL passes the threshold: the database file takes the pages and the WAL starts over', async () => {
    const { db, file } = database('c.db');
    const errors: string[] = [];
    const checkpointer = new WalCheckpointer({ file, thresholdBytes: 256 * 1024, finish: () => db.pragma('wal_checkpoint(PASSIVE)'), onError: (m) => errors.push(m) });
    open.push(checkpointer);
    const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
    const initialDbSize = statSync(file).size;
    for (let i = 0; i < 200; i++) {
      insert.run(Buffer.alloc(4000, i % 251));
      checkpointer.wrote();
    }
    // With wal_autocheckpoint = 0 nothing but the worker moves pages into the database file.
    await until(() => statSync(file).size > initialDbSize + 500_000);
    // After a complete checkpoint the next write starts the WAL over instead of growing it.
    const walBefore = statSync(`${file}-wal`).size;
    for (let i = 0; i < 5; i++) insert.run(Buffer.alloc(100, i));
    expect(statSync(`${file}-wal`).size).toBeLessThanOrEqual(walBefore);
    expect(db.prepare('SELECT count(*) FROM t').pluck().get()).toBe(205);
    expect(errors).toEqual([]);
  });

  it('reports a checkpoint that fails instead of throwing into the writer', async () => {
    // Not a SQLite database, with a "WAL" past the threshold: the worker fails to open it.
    const file = join(dir, 'garbage.db');
    writeFileSync(file, Buffer.alloc(8192, 7));
    writeFileSync(`${file}-wal`, Buffer.alloc(8192, 7));
    const errors: string[] = [];
    const checkpointer = new WalCheckpointer({ file, thresholdBytes: 1, finish: () => undefined, onError: (m) => errors.push(m) });
    open.push(checkpointer);
    for (let i = 0; i < 64; i++) expect(() => checkpointer.wrote()).not.toThrow();
    await until(() => errors.length > 0);
    expect(errors[0]).toMatch(/not a database/);
  });
});
