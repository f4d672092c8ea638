/**
 * The one conformance suite every `Orderer` runs (STYLE.md "Tests"; as honojs/hono
 * `src/router/common.case.test.ts` and trillian `storage/testonly/`): the contract of DESIGN.md §4 and
 * `orderer.ts`. Implementation tests call `describeOrdererConformance(name, createHarness)`; checks that need
 * the implementation's own storage or failure modes live beside each implementation. Test-only: nothing in
 * `src/` imports this file.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HlError, fixedClock, fromUtf8, utf8, type Clock } from '../kernel/index.js';
import type { OrderedBatch } from '../ledger/index.js';
import type { Orderer } from './orderer.js';

/** What an orderer opened by a harness may be configured with. */
export interface OrdererOpenOptions {
  /** Default `org-a`. */
  proposer?: string;
  /** Default the system clock. */
  clock?: Clock;
  maxBatchTxs?: number;
}

/** One empty ordering log, opened by any number of orderers (as the nodes of one network). */
export interface OrdererHarness {
  /** Opens an orderer on this harness's log; a second open sees the same log, as another node would. */
  open(options?: OrdererOpenOptions): Promise<Orderer>;
  /** Closes whatever `open` opened and deletes the log. */
  close(): Promise<void>;
}

const T0 = Date.parse('2025-03-01T12:00:00.000Z');

/** A tx whose bytes name it. */
export const tx = (label: string): Uint8Array => utf8(`{"tx":"${label}"}`);
/** The txs of a batch as text. */
export const texts = (b: OrderedBatch): string[] => b.txs.map(fromUtf8);

/** Reads the next `n` batches from an iterator. */
export async function take(iter: AsyncIterator<OrderedBatch>, n: number): Promise<OrderedBatch[]> {
  const out: OrderedBatch[] = [];
  for (let i = 0; i < n; i++) {
    const r = await iter.next();
    if (r.done) throw new Error(`iterator ended after ${i} batches`);
    out.push(r.value);
  }
  return out;
}

/** Resolves to 'pending' if `p` has not settled within `ms`. */
export function settlesWithin<T>(p: Promise<T>, ms: number): Promise<T | 'pending'> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<'pending'>((resolve) => {
      timer = setTimeout(() => resolve('pending'), ms);
    }),
  ]);
}

/** Awaits `p` and returns the HlError it rejects with (fails the test otherwise). */
export async function rejection(p: Promise<unknown>): Promise<HlError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(HlError);
    return err as HlError;
  }
  throw new Error('expected the promise to reject');
}

/** Batches `fromHeight` .. `toHeight` (inclusive); checks the iterator ends once aborted. */
export async function readRange(o: Orderer, fromHeight: number, toHeight: number): Promise<OrderedBatch[]> {
  const ac = new AbortController();
  const iter = o.blocks(fromHeight, ac.signal)[Symbol.asyncIterator]();
  const batches = await take(iter, toHeight - fromHeight + 1);
  ac.abort();
  expect(await iter.next()).toEqual({ done: true, value: undefined });
  return batches;
}

/** Every batch the orderer knows of, from height 0. */
export function readAll(o: Orderer): Promise<OrderedBatch[]> {
  return readRange(o, 0, o.lastHeight());
}

/** Same batches, compared with tx bytes as hex (so a mismatch names the bytes). */
export function comparable(batches: OrderedBatch[]): unknown[] {
  return batches.map((b) => ({ ...b, txs: b.txs.map((t) => Buffer.from(t).toString('hex')) }));
}

/** Registers the conformance suite for one `Orderer` implementation. */
export function describeOrdererConformance(name: string, createHarness: () => Promise<OrdererHarness>): void {
  describe(`Orderer conformance: ${name}`, () => {
    let harness: OrdererHarness;

    beforeEach(async () => {
      harness = await createHarness();
    });
    afterEach(async () => {
      await harness?.close(); // undefined when the harness could not start (its own error fails the test)
    });

    it('starts empty: lastHeight is -1', async () => {
      expect((await harness.open()).lastHeight()).toBe(-1);
    });

    it('resolves sequential submits with increasing heights 0, 1, 2, ... and tracks lastHeight', async () => {
      const o = await harness.open();
      for (let i = 0; i < 5; i++) {
        expect(await o.submit([tx(`s${i}`)])).toEqual({ height: i });
        expect(o.lastHeight()).toBe(i);
      }
      const batches = await readAll(o);
      expect(batches.map((b) => texts(b))).toEqual([0, 1, 2, 3, 4].map((i) => [`{"tx":"s${i}"}`]));
      expect(batches.every((b) => b.proposer === 'org-a')).toBe(true);
    });

    it('group-commits submits made in the same tick into one batch, and gives later submits later heights', async () => {
      const o = await harness.open();
      const same = await Promise.all([o.submit([tx('a')]), o.submit([tx('b'), tx('c')]), o.submit([tx('d')])]);
      expect(same).toEqual([{ height: 0 }, { height: 0 }, { height: 0 }]);
      expect(await o.submit([tx('e')])).toEqual({ height: 1 });
      const next = await Promise.all([o.submit([tx('f')]), o.submit([tx('g')])]);
      expect(next).toEqual([{ height: 2 }, { height: 2 }]);
      const batches = await readAll(o);
      // Submission order is kept inside a batch.
      expect(batches.map(texts)).toEqual([
        ['{"tx":"a"}', '{"tx":"b"}', '{"tx":"c"}', '{"tx":"d"}'],
        ['{"tx":"e"}'],
        ['{"tx":"f"}', '{"tx":"g"}'],
      ]);
    });

    it('splits a group that exceeds maxBatchTxs into consecutive batches without splitting a submit', async () => {
      const o = await harness.open({ maxBatchTxs: 2 });
      const heights = await Promise.all([o.submit([tx('1')]), o.submit([tx('2')]), o.submit([tx('3'), tx('4')]), o.submit([tx('5')])]);
      expect(heights.map((h) => h.height)).toEqual([0, 0, 1, 2]);
      expect((await readAll(o)).map(texts)).toEqual([['{"tx":"1"}', '{"tx":"2"}'], ['{"tx":"3"}', '{"tx":"4"}'], ['{"tx":"5"}']]);
    });

    it('orders every one of many concurrent submits exactly once, in the batch at the height it resolved with', async () => {
      const o = await harness.open();
      const labels = Array.from({ length: 150 }, (_, i) => `c${i}`);
      const results: { height: number }[] = [];
      // Submits arrive over several ticks, so some land while a write is in flight.
      for (let i = 0; i < labels.length; i += 10) {
        results.push(...(await Promise.all(labels.slice(i, i + 10).map((l) => o.submit([tx(l)])))));
        if (i % 30 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
      const batches = await readAll(o);
      expect(batches.map((b) => b.height)).toEqual(batches.map((_, i) => i));
      const all = batches.flatMap(texts);
      expect(all.slice().sort()).toEqual(labels.map((l) => `{"tx":"${l}"}`).sort());
      labels.forEach((l, i) => expect(texts(batches[results[i]!.height]!)).toContain(`{"tx":"${l}"}`));
    });

    it('orders submits from many concurrent callers, each exactly once', async () => {
      const o = await harness.open();
      const labels = Array.from({ length: 200 }, (_, i) => `p${i}`);
      const results = await Promise.all(
        labels.map(async (l, i) => {
          await new Promise((resolve) => setTimeout(resolve, i % 7));
          return o.submit([tx(l)]);
        }),
      );
      const batches = await readAll(o);
      expect(batches.flatMap(texts).sort()).toEqual(labels.map((l) => `{"tx":"${l}"}`).sort());
      labels.forEach((l, i) => expect(texts(batches[results[i]!.height]!)).toContain(`{"tx":"${l}"}`));
    });

    it('yields every batch from 0 in order with no gap or repeat, then waits for new ones', async () => {
      const o = await harness.open();
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
      expect(r).toMatchObject({ done: false, value: { height: 70 } });
      ac.abort();
      expect(await iter.next()).toEqual({ done: true, value: undefined });
    });

    it('starts from the requested height in the middle of the log', async () => {
      const o = await harness.open();
      for (let i = 0; i < 40; i++) await o.submit([tx(`n${i}`)]);
      const got = await readRange(o, 33, 39);
      expect(got.map((b) => b.height)).toEqual([33, 34, 35, 36, 37, 38, 39]);
      expect(got.map((b) => texts(b)[0])).toEqual([33, 34, 35, 36, 37, 38, 39].map((i) => `{"tx":"n${i}"}`));
      const all = await readAll(o);
      expect(comparable(got)).toEqual(comparable(all.slice(33)));
    });

    it('gives two orderers on the same log (two nodes) the identical sequence: heights, times, proposers, tx bytes', async () => {
      const a = await harness.open({ proposer: 'org-a' });
      for (let i = 0; i < 12; i++) await Promise.all([a.submit([tx(`x${i}`)]), a.submit([tx(`y${i}`), new Uint8Array([0, 255, i])])]);
      const b = await harness.open({ proposer: 'org-b' });
      expect(b.lastHeight()).toBe(a.lastHeight());
      const seenByA = await readAll(a);
      const seenByB = await readAll(b);
      expect(seenByA).toHaveLength(12);
      expect(comparable(seenByB)).toEqual(comparable(seenByA));
      expect(comparable(await readRange(b, 5, 11))).toEqual(comparable(seenByA.slice(5)));
    });

    it('keeps heights and contents across close and reopen', async () => {
      const first = await harness.open({ clock: fixedClock(T0) });
      await first.submit([tx('a')]);
      await Promise.all([first.submit([tx('b')]), first.submit([tx('c')])]);
      await first.submit([tx('d')]);
      const before = await readAll(first);
      await first.close();

      const second = await harness.open({ clock: fixedClock(T0 + 5000) });
      expect(second.lastHeight()).toBe(2);
      expect(comparable(await readAll(second))).toEqual(comparable(before));
      expect(await second.submit([tx('e')])).toEqual({ height: 3 });
      const after = await readAll(second);
      expect(after.map((b) => b.height)).toEqual([0, 1, 2, 3]);
      expect(texts(after[3]!)).toEqual(['{"tx":"e"}']);
    });

    it('stamps batches with the clock time and never lets batch time go backwards, even across reopen', async () => {
      const clock = fixedClock(T0);
      const o = await harness.open({ clock });
      await o.submit([tx('1')]);
      clock.advance(-60_000);
      await o.submit([tx('2')]);
      clock.advance(120_000);
      await o.submit([tx('3')]);
      const times = (await readAll(o)).map((b) => b.time);
      expect(times).toEqual([new Date(T0).toISOString(), new Date(T0).toISOString(), new Date(T0 + 60_000).toISOString()]);
      await o.close();

      const reopened = await harness.open({ clock: fixedClock(T0 - 3_600_000) });
      await reopened.submit([tx('4')]);
      const all = await readAll(reopened);
      expect(all[3]!.time).toBe(new Date(T0 + 60_000).toISOString());
      const ms = all.map((b) => Date.parse(b.time));
      for (let i = 1; i < ms.length; i++) expect(ms[i]!).toBeGreaterThanOrEqual(ms[i - 1]!);
    });

    it('rejects an empty batch and orders nothing', async () => {
      const o = await harness.open();
      const err = await rejection(o.submit([]));
      expect(err.code).toBe('invalid');
      expect(o.lastHeight()).toBe(-1);
      expect((await o.submit([tx('a')])).height).toBe(0);
      expect((await readAll(o)).map(texts)).toEqual([['{"tx":"a"}']]);
    });

    it('rejects a submit after close with pushback', async () => {
      const o = await harness.open();
      await o.submit([tx('a')]);
      await o.close();
      const err = await rejection(o.submit([tx('b')]));
      expect(err.code).toBe('pushback');
    });

    it('settles a submit still queued at close: pushback, or a height that is really in the log', async () => {
      const o = await harness.open();
      const pending = o.submit([tx('queued')]);
      await o.close();
      const outcome = await settlesWithin(
        pending.then(
          (r) => ({ ok: true as const, height: r.height }),
          (e: unknown) => ({ ok: false as const, err: e }),
        ),
        5000,
      );
      expect(outcome).not.toBe('pending');
      if (outcome === 'pending') return;
      const reopened = await harness.open();
      if (outcome.ok) {
        const batches = await readAll(reopened);
        expect(texts(batches[outcome.height]!)).toEqual(['{"tx":"queued"}']);
      } else {
        expect(outcome.err).toBeInstanceOf(HlError);
        expect((outcome.err as HlError).code).toBe('pushback');
        expect(reopened.lastHeight()).toBe(-1);
      }
    });

    it('ends a waiting blocks() iterator when its signal aborts', async () => {
      const o = await harness.open();
      const ac = new AbortController();
      const iter = o.blocks(0, ac.signal)[Symbol.asyncIterator]();
      const waiting = iter.next();
      expect(await settlesWithin(waiting, 50)).toBe('pending');
      ac.abort();
      expect(await settlesWithin(waiting, 2000)).toEqual({ done: true, value: undefined });
    });

    it('ends a waiting blocks() iterator when the orderer closes', async () => {
      const o = await harness.open();
      const iter = o.blocks(0)[Symbol.asyncIterator]();
      const waiting = iter.next();
      expect(await settlesWithin(waiting, 50)).toBe('pending');
      await o.close();
      expect(await settlesWithin(waiting, 2000)).toEqual({ done: true, value: undefined });
    });
  });
}
