/**
 * LocalOrderer on a real SQLite log in a temp dir: group commit, ordered delivery without gaps, durability
 * across reopen, monotonic batch time, and the batch codec it stores.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HlError, fixedClock, fromUtf8, systemClock, utf8, type Clock } from '../../kernel/index.js';
import type { OrderedBatch } from '../../ledger/index.js';
import { decodeTxs, encodeTxs } from '../batch-codec.js';
import { LocalOrderer } from './local-orderer.js';

const T0 = Date.parse('2025-03-01T12:00:00.000Z');

let dir: string;
const open: LocalOrderer[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hl-orderer-'));
});

afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
  rmSync(dir, { recursive: true, force: true });
});

function makeOrderer(options: { file?: string; clock?: Clock; maxBatchTxs?: number } = {}): LocalOrderer {
  const o = new LocalOrderer({
    file: options.file ?? join(dir, 'orderer.db'),
    proposer: 'org-a',
    clock: options.clock ?? systemClock,
    ...(options.maxBatchTxs === undefined ? {} : { maxBatchTxs: options.maxBatchTxs }),
  });
  open.push(o);
  return o;
}

const tx = (label: string): Uint8Array => utf8(`{"tx":"${label}"}`);
const texts = (b: OrderedBatch): string[] => b.txs.map(fromUtf8);

/** Reads the next `n` batches from an iterator. */
async function take(iter: AsyncIterator<OrderedBatch>, n: number): Promise<OrderedBatch[]> {
  const out: OrderedBatch[] = [];
  for (let i = 0; i < n; i++) {
    const r = await iter.next();
    if (r.done) throw new Error(`iterator ended after ${i} batches`);
    out.push(r.value);
  }
  return out;
}

/** Resolves to 'pending' if `p` has not settled within `ms`. */
function settlesWithin<T>(p: Promise<T>, ms: number): Promise<T | 'pending'> {
  return Promise.race([p, new Promise<'pending'>((resolve) => setTimeout(() => resolve('pending'), ms))]);
}

async function rejection(p: Promise<unknown>): Promise<HlError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(HlError);
    return err as HlError;
  }
  throw new Error('expected the promise to reject');
}

/** Every batch currently in the log, from height 0. */
async function readAll(o: LocalOrderer): Promise<OrderedBatch[]> {
  const ac = new AbortController();
  const iter = o.blocks(0, ac.signal)[Symbol.asyncIterator]();
  const batches = await take(iter, o.lastHeight() + 1);
  ac.abort();
  expect(await iter.next()).toEqual({ done: true, value: undefined });
  return batches;
}

describe('LocalOrderer', () => {
  it('starts empty: lastHeight is -1', () => {
    expect(makeOrderer().lastHeight()).toBe(-1);
  });

  it('group-commits submits made in the same tick into one batch, and gives later submits later heights', async () => {
    const o = makeOrderer();
    const same = await Promise.all([o.submit([tx('a')]), o.submit([tx('b'), tx('c')]), o.submit([tx('d')])]);
    expect(same).toEqual([{ height: 0 }, { height: 0 }, { height: 0 }]);
    const later = await o.submit([tx('e')]);
    expect(later).toEqual({ height: 1 });
    const next = await Promise.all([o.submit([tx('f')]), o.submit([tx('g')])]);
    expect(next).toEqual([{ height: 2 }, { height: 2 }]);
    expect(o.lastHeight()).toBe(2);

    const batches = await readAll(o);
    expect(batches.map((b) => b.height)).toEqual([0, 1, 2]);
    // Submission order is kept inside a batch.
    expect(texts(batches[0]!)).toEqual(['{"tx":"a"}', '{"tx":"b"}', '{"tx":"c"}', '{"tx":"d"}']);
    expect(texts(batches[1]!)).toEqual(['{"tx":"e"}']);
    expect(texts(batches[2]!)).toEqual(['{"tx":"f"}', '{"tx":"g"}']);
    expect(batches.every((b) => b.proposer === 'org-a')).toBe(true);
  });

  it('splits a group that exceeds maxBatchTxs into consecutive batches without splitting a submit', async () => {
    const o = makeOrderer({ maxBatchTxs: 2 });
    const heights = await Promise.all([
      o.submit([tx('1')]),
      o.submit([tx('2')]),
      o.submit([tx('3'), tx('4')]),
      o.submit([tx('5')]),
    ]);
    expect(heights.map((h) => h.height)).toEqual([0, 0, 1, 2]);
    const batches = await readAll(o);
    expect(batches.map(texts)).toEqual([['{"tx":"1"}', '{"tx":"2"}'], ['{"tx":"3"}', '{"tx":"4"}'], ['{"tx":"5"}']]);
  });

  it('resolves a submit only once its batch can be read back from the log', async () => {
    const o = makeOrderer();
    const { height } = await o.submit([tx('durable')]);
    expect(o.lastHeight()).toBe(height);
    const reader = makeOrderer({ file: join(dir, 'orderer.db') }); // a second handle on the same file
    expect(reader.lastHeight()).toBe(height);
    const [b] = await readAll(reader);
    expect(texts(b!)).toEqual(['{"tx":"durable"}']);
  });

  it('yields every batch from fromHeight in order with no gap, then waits for new ones', async () => {
    const o = makeOrderer();
    for (let i = 0; i < 70; i++) expect((await o.submit([tx(`n${i}`)])).height).toBe(i); // more than one read page
    const ac = new AbortController();
    const iter = o.blocks(0, ac.signal)[Symbol.asyncIterator]();
    const batches = await take(iter, 70);
    expect(batches.map((b) => b.height)).toEqual(Array.from({ length: 70 }, (_, i) => i));
    expect(batches.map((b) => texts(b)[0])).toEqual(Array.from({ length: 70 }, (_, i) => `{"tx":"n${i}"}`));

    const waiting = iter.next();
    expect(await settlesWithin(waiting, 100)).toBe('pending');
    await o.submit([tx('late')]);
    const r = await settlesWithin(waiting, 2000);
    expect(r).not.toBe('pending');
    expect(r).toMatchObject({ done: false, value: { height: 70 } });
    ac.abort();
    expect(await iter.next()).toEqual({ done: true, value: undefined });
  });

  it('starts from the requested height', async () => {
    const o = makeOrderer();
    for (let i = 0; i < 5; i++) await o.submit([tx(`n${i}`)]);
    const ac = new AbortController();
    const iter = o.blocks(3, ac.signal)[Symbol.asyncIterator]();
    const got = await take(iter, 2);
    expect(got.map((b) => b.height)).toEqual([3, 4]);
    expect(got.map((b) => texts(b)[0])).toEqual(['{"tx":"n3"}', '{"tx":"n4"}']);
    ac.abort();
    expect((await iter.next()).done).toBe(true);
  });

  it('ends a waiting blocks() iterator when its signal aborts', async () => {
    const o = makeOrderer();
    const ac = new AbortController();
    const iter = o.blocks(0, ac.signal)[Symbol.asyncIterator]();
    const waiting = iter.next();
    expect(await settlesWithin(waiting, 50)).toBe('pending');
    ac.abort();
    expect(await settlesWithin(waiting, 2000)).toEqual({ done: true, value: undefined });
  });

  it('ends a waiting blocks() iterator when the orderer closes', async () => {
    const o = makeOrderer();
    const iter = o.blocks(0)[Symbol.asyncIterator]();
    const waiting = iter.next();
    expect(await settlesWithin(waiting, 50)).toBe('pending');
    await o.close();
    expect(await settlesWithin(waiting, 2000)).toEqual({ done: true, value: undefined });
  });

  it('keeps heights and contents across close and reopen of the same file', async () => {
    const file = join(dir, 'durable.db');
    const first = makeOrderer({ file, clock: fixedClock(T0) });
    await first.submit([tx('a')]);
    await Promise.all([first.submit([tx('b')]), first.submit([tx('c')])]);
    await first.submit([tx('d')]);
    const before = await readAll(first);
    await first.close();

    const second = makeOrderer({ file, clock: fixedClock(T0 + 5000) });
    expect(second.lastHeight()).toBe(2);
    expect(await readAll(second)).toEqual(before);
    expect(await second.submit([tx('e')])).toEqual({ height: 3 });
    const after = await readAll(second);
    expect(after.map((b) => b.height)).toEqual([0, 1, 2, 3]);
    expect(texts(after[3]!)).toEqual(['{"tx":"e"}']);
  });

  it('stamps batches with the clock time and never lets batch time go backwards, even across reopen', async () => {
    const file = join(dir, 'time.db');
    const clock = fixedClock(T0);
    const o = makeOrderer({ file, clock });
    await o.submit([tx('1')]);
    clock.advance(-60_000);
    await o.submit([tx('2')]);
    clock.advance(120_000);
    await o.submit([tx('3')]);
    const times = (await readAll(o)).map((b) => b.time);
    expect(times).toEqual([new Date(T0).toISOString(), new Date(T0).toISOString(), new Date(T0 + 60_000).toISOString()]);
    await o.close();

    const reopened = makeOrderer({ file, clock: fixedClock(T0 - 3_600_000) });
    await reopened.submit([tx('4')]);
    const all = await readAll(reopened);
    expect(all[3]!.time).toBe(new Date(T0 + 60_000).toISOString());
    const ms = all.map((b) => Date.parse(b.time));
    for (let i = 1; i < ms.length; i++) expect(ms[i]!).toBeGreaterThanOrEqual(ms[i - 1]!);
  });

  it('rejects a submit after close with pushback', async () => {
    const o = makeOrderer();
    await o.submit([tx('a')]);
    await o.close();
    const err = await rejection(o.submit([tx('b')]));
    expect(err.code).toBe('pushback');
  });

  it('settles a submit still queued at close: pushback, or a height that is really in the log', async () => {
    const file = join(dir, 'closing.db');
    const o = makeOrderer({ file });
    const pending = o.submit([tx('queued')]);
    await o.close();
    const outcome = await settlesWithin(
      pending.then(
        (r) => ({ ok: true as const, height: r.height }),
        (e: unknown) => ({ ok: false as const, err: e }),
      ),
      2000,
    );
    expect(outcome).not.toBe('pending');
    if (outcome === 'pending') return;
    const reopened = makeOrderer({ file });
    if (outcome.ok) {
      const batches = await readAll(reopened);
      expect(texts(batches[outcome.height]!)).toEqual(['{"tx":"queued"}']);
    } else {
      expect(outcome.err).toBeInstanceOf(HlError);
      expect((outcome.err as HlError).code).toBe('pushback');
      expect(reopened.lastHeight()).toBe(-1);
    }
  });

  it('rejects an empty batch and orders nothing', async () => {
    const o = makeOrderer();
    const err = await rejection(o.submit([]));
    expect(err.code).toBe('invalid');
    expect(o.lastHeight()).toBe(-1);
    expect((await o.submit([tx('a')])).height).toBe(0);
  });
});

describe('batch codec', () => {
  it('round-trips tx lists, including empty txs and an empty list', () => {
    const cases: Uint8Array[][] = [[], [new Uint8Array(0)], [tx('a'), new Uint8Array(0), new Uint8Array(70_000).fill(7)]];
    for (const txs of cases) {
      const decoded = decodeTxs(encodeTxs(txs));
      expect(decoded.map((t) => Buffer.from(t).toString('hex'))).toEqual(txs.map((t) => Buffer.from(t).toString('hex')));
    }
  });

  it('round-trips arbitrary tx lists, also from a payload inside a larger buffer', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), fc.nat(16), (txs, pad) => {
        const payload = encodeTxs(txs);
        const host = new Uint8Array(pad + payload.length + 3).fill(0xee);
        host.set(payload, pad);
        const decoded = decodeTxs(host.subarray(pad, pad + payload.length));
        expect(decoded.map((t) => Array.from(t))).toEqual(txs.map((t) => Array.from(t)));
      }),
    );
  });

  it('encodes as a u32 BE count then u32 BE length-prefixed txs', () => {
    expect(Array.from(encodeTxs([Uint8Array.of(9, 8), Uint8Array.of(7)]))).toEqual([0, 0, 0, 2, 0, 0, 0, 2, 9, 8, 0, 0, 0, 1, 7]);
  });

  it('rejects every truncation of a payload', () => {
    const payload = encodeTxs([tx('first'), tx('second'), new Uint8Array(0)]);
    for (let len = 0; len < payload.length; len++) {
      expect(() => decodeTxs(payload.subarray(0, len)), `length ${len}`).toThrow(HlError);
    }
  });

  it('rejects trailing bytes after the last tx', () => {
    const payload = encodeTxs([tx('a')]);
    const extended = new Uint8Array(payload.length + 1);
    extended.set(payload);
    expect(() => decodeTxs(extended)).toThrow(/trailing/);
  });

  it('rejects a count or length larger than the payload holds', () => {
    expect(() => decodeTxs(Uint8Array.of(0, 0, 0, 1))).toThrow(/truncated/);
    expect(() => decodeTxs(Uint8Array.of(0xff, 0xff, 0xff, 0xff))).toThrow(/truncated/);
    expect(() => decodeTxs(Uint8Array.of(0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 1, 2))).toThrow(/truncated/);
  });
});
