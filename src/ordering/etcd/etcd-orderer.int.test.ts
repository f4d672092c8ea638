/**
 * EtcdOrderer against a real 3-member etcd 3.4 cluster (test/etcd-cluster.ts), one cluster for this file and
 * a distinct key prefix per test: the Orderer conformance suite, then what only a replicated log shows:
 * member crashes while submits are in flight, loss of quorum, values not written by an orderer, late
 * readers and competing proposers.
 */
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDelayProxy, startEtcdCluster, type EtcdCluster } from '../../../test/etcd-cluster.js';
import { encodeTxs } from '../batch-codec.js';
import { systemClock, fixedClock } from '../../kernel/index.js';
import type { OrderedBatch } from '../../ledger/index.js';
import {
  comparable,
  describeOrdererConformance,
  readAll,
  readRange,
  rejection,
  settlesWithin,
  take,
  texts,
  tx,
  type OrdererHarness,
} from '../orderer.conformance.js';
import { EtcdOrderer, malformedProposer, type EtcdOrdererOptions } from './etcd-orderer.js';

let cluster: EtcdCluster;
let prefixes = 0;
const opened: EtcdOrderer[] = [];

beforeAll(async () => {
  cluster = await startEtcdCluster({ members: 3 });
}, 60_000);

afterAll(async () => {
  for (const o of opened.splice(0)) await o.close();
  await cluster?.stop();
});

const newPrefix = (): string => `healthledger/test-${process.pid}-${++prefixes}/`;

async function openOrderer(prefix: string, options: Partial<EtcdOrdererOptions> = {}): Promise<EtcdOrderer> {
  const o = await EtcdOrderer.open({ endpoints: cluster.endpoints, prefix, proposer: 'org-a', clock: systemClock, pollMs: 250, ...options });
  opened.push(o);
  return o;
}

describeOrdererConformance('EtcdOrderer (3-member etcd cluster)', async (): Promise<OrdererHarness> => {
  const prefix = newPrefix();
  const mine: EtcdOrderer[] = [];
  return {
    open: async (options = {}) => {
      const o = await openOrderer(prefix, {
        ...(options.proposer === undefined ? {} : { proposer: options.proposer }),
        ...(options.clock === undefined ? {} : { clock: options.clock }),
        ...(options.maxBatchTxs === undefined ? {} : { maxBatchTxs: options.maxBatchTxs }),
      });
      mine.push(o);
      return o;
    },
    close: async () => {
      for (const o of mine.splice(0)) await o.close();
    },
  };
});

/** Waits until some live member knows a leader (the cluster has quorum again). */
async function waitForLeader(timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await cluster.leader();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/** Restarts every stopped member and waits for a leader. */
async function healCluster(): Promise<void> {
  for (let i = 0; i < cluster.endpoints.length; i++) if (!cluster.isRunning(i)) await cluster.restart(i);
  await waitForLeader();
}

/** Asserts every label is delivered exactly once overall, and each acknowledged one at its resolved height. */
function expectExactlyOnce(batches: OrderedBatch[], acknowledged: Map<string, number>, mayBeOrdered: string[] = []): void {
  expect(batches.map((b) => b.height)).toEqual(batches.map((_, i) => i));
  const counts = new Map<string, number>();
  for (const t of batches.flatMap(texts)) counts.set(t, (counts.get(t) ?? 0) + 1);
  for (const [label, height] of acknowledged) {
    expect(counts.get(`{"tx":"${label}"}`), label).toBe(1);
    expect(texts(batches[height]!), label).toContain(`{"tx":"${label}"}`);
  }
  for (const label of mayBeOrdered) expect(counts.get(`{"tx":"${label}"}`) ?? 0, label).toBeLessThanOrEqual(1);
  const expected = new Set([...acknowledged.keys(), ...mayBeOrdered].map((l) => `{"tx":"${l}"}`));
  for (const t of counts.keys()) expect(expected.has(t), t).toBe(true);
}

describe('EtcdOrderer on a 3-member cluster', () => {
  it('delivers every acknowledged submit exactly once when the leader is killed while 240 submits are in flight', async () => {
    const prefix = newPrefix();
    const writer = await openOrderer(prefix);
    const reader = await openOrderer(prefix, { proposer: 'org-b' });
    const ac = new AbortController();
    const live: OrderedBatch[] = [];
    const following = (async () => {
      for await (const b of reader.blocks(0, ac.signal)) live.push(b);
    })();

    const leader = await cluster.leader();
    const acknowledged = new Map<string, number>();
    const failed: string[] = [];
    const labels = Array.from({ length: 240 }, (_, i) => `k${i}`);
    let killed = false;
    const submits = labels.map(async (label, i) => {
      await new Promise((resolve) => setTimeout(resolve, i * 8)); // spread over about 2 s
      if (i === 80) {
        await cluster.kill(leader);
        killed = true;
      }
      try {
        acknowledged.set(label, (await writer.submit([tx(label)])).height);
      } catch (err) {
        expect((err as { code?: string }).code).toBe('pushback');
        failed.push(label);
      }
    });
    await Promise.all(submits);
    expect(killed).toBe(true);
    // Writes went on after the kill: with 10 s of retries, no submit had to give up.
    expect(failed).toEqual([]);
    expect(acknowledged.size).toBe(240);
    const after = await writer.submit([tx('after-kill')]);
    acknowledged.set('after-kill', after.height);

    const batches = await readAll(writer);
    expectExactlyOnce(batches, acknowledged);
    // The follower (another node) saw the same sequence while the leader died.
    const deadline = Date.now() + 5000;
    while (live.length < batches.length && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    ac.abort();
    await following;
    expect(comparable(live)).toEqual(comparable(batches));
    await healCluster();
  }, 40_000);

  it('resolves a write whose acknowledgement was lost by reading it back, and orders it exactly once', async () => {
    const proxies = await Promise.all(cluster.endpoints.map(startDelayProxy));
    try {
      const prefix = newPrefix();
      const warnings: Record<string, unknown>[] = [];
      const o = await openOrderer(prefix, {
        endpoints: proxies.map((p) => p.url),
        callTimeoutMs: 250,
        log: { warn: (obj) => warnings.push(obj) },
      });
      expect(await o.submit([tx('first')])).toEqual({ height: 0 });
      // etcd applies the write, but every answer arrives after the deadline until the delay is lifted.
      for (const p of proxies) p.setResponseDelayMs(600);
      const lost = o.submit([tx('lost-ack')]);
      await new Promise((resolve) => setTimeout(resolve, 1200));
      for (const p of proxies) p.setResponseDelayMs(0);
      expect(await lost).toEqual({ height: 1 });
      expect(warnings.some((w) => w.unresolved === true && w.height === 1)).toBe(true);
      expect(await o.submit([tx('next')])).toEqual({ height: 2 });
      const direct = await openOrderer(prefix, { proposer: 'org-b' });
      expect(direct.lastHeight()).toBe(2);
      expect((await readAll(direct)).map(texts)).toEqual([['{"tx":"first"}'], ['{"tx":"lost-ack"}'], ['{"tx":"next"}']]);
    } finally {
      await Promise.all(proxies.map((p) => p.close()));
    }
  });

  it('rejects a submit with pushback within the bound while two of three members are dead, and orders again after restart', async () => {
    const prefix = newPrefix();
    const o = await openOrderer(prefix, { callTimeoutMs: 1000, unavailableMs: 3000 });
    expect(await o.submit([tx('before')])).toEqual({ height: 0 });
    await cluster.kill(0);
    await cluster.kill(1);

    const started = Date.now();
    const err = await rejection(o.submit([tx('during')]));
    const elapsedMs = Date.now() - started;
    expect(err.code).toBe('pushback');
    expect(elapsedMs).toBeGreaterThanOrEqual(2900);
    expect(elapsedMs).toBeLessThan(3000 + 1000 + 1500); // the bound, one call deadline, slack

    await healCluster();
    const { height } = await o.submit([tx('after')]);
    const batches = await readRange(o, 0, height);
    // 'during' had an unknown outcome: it may have been ordered once, never twice.
    expectExactlyOnce(batches, new Map([['before', 0], ['after', height]]), ['during']);
  }, 40_000);

  it('delivers a value not written by an orderer as a one-tx malformed batch, and later batches still flow', async () => {
    const prefix = newPrefix();
    const warnings: { obj: Record<string, unknown>; msg: string }[] = [];
    const o = await openOrderer(prefix, { clock: fixedClock(Date.parse('2025-03-01T12:00:00.000Z')), log: { warn: (obj, msg) => warnings.push({ obj, msg }) } });
    await o.submit([tx('first')]);
    const raw = new Etcd3({ hosts: cluster.endpoints });
    try {
      const key = (h: number): string => `${prefix}b/${String(h).padStart(16, '0')}`;
      const envelope = (fields: Record<string, unknown>): string =>
        JSON.stringify({ v: 1, id: 'ab'.repeat(16), time: '2025-03-01T11:00:00Z', proposer: 'org-z', payload: Buffer.from(encodeTxs([tx('z')])).toString('base64'), ...fields });
      const bad = [
        'secret patient text, not an envelope',
        envelope({ payload: 'not base64!' }),
        envelope({ payload: Buffer.from(encodeTxs([tx('zz')])).toString('base64').replace(/=+$/, '') }), // 19 bytes: padding dropped
        envelope({ payload: Buffer.from([0, 0, 0, 9, 1]).toString('base64') }),
        envelope({ payload: Buffer.from(encodeTxs([])).toString('base64') }),
        envelope({ v: 2 }),
        envelope({ time: 'yesterday' }),
      ];
      for (let i = 0; i < bad.length; i++) await raw.put(key(1 + i)).value(bad[i]!);
      await raw.put(`${prefix}b/junk`).value('not a height key');
      // A value written by hand with a valid envelope is an ordinary batch, at an earlier time than 'first'.
      await raw.put(key(1 + bad.length)).value(envelope({}));
    } finally {
      raw.close();
    }
    const after = await o.submit([tx('after')]);
    expect(after.height).toBe(9);

    const batches = await readAll(o);
    expect(batches.map((b) => b.height)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const t0 = '2025-03-01T12:00:00.000Z';
    for (const b of batches.slice(1, 8)) {
      expect(b.proposer).toBe(malformedProposer);
      expect(b.txs).toHaveLength(1);
      expect(b.time).toBe(t0);
    }
    expect(Buffer.from(batches[1]!.txs[0]!).toString()).toBe('secret patient text, not an envelope');
    expect(batches[8]).toMatchObject({ proposer: 'org-z', time: t0 });
    expect(texts(batches[8]!)).toEqual(['{"tx":"z"}']);
    expect(batches[9]).toMatchObject({ proposer: 'org-a', time: t0 });
    expect(texts(batches[9]!)).toEqual(['{"tx":"after"}']);
    // A reader starting in the middle derives the same batches.
    expect(comparable(await readRange(o, 4, 9))).toEqual(comparable(batches.slice(4)));
    const other = await openOrderer(prefix, { proposer: 'org-b' });
    expect(comparable(await readRange(other, 2, 9))).toEqual(comparable(batches.slice(2)));
    // Warned about each malformed value, by height, without its content.
    expect(warnings.some((w) => w.obj.height === 1 && /malformed/.test(w.msg))).toBe(true);
    expect(JSON.stringify(warnings)).not.toContain('secret');
  });

  it('lets a reader that starts after 50 batches catch up, then follow new ones', async () => {
    const prefix = newPrefix();
    const a = await openOrderer(prefix);
    for (let i = 0; i < 50; i++) await a.submit([tx(`m${i}`)]);
    const b = await openOrderer(prefix, { proposer: 'org-b' });
    expect(b.lastHeight()).toBe(49);
    const ac = new AbortController();
    const iter = b.blocks(0, ac.signal)[Symbol.asyncIterator]();
    const caughtUp = await take(iter, 50);
    expect(comparable(caughtUp)).toEqual(comparable(await readAll(a)));
    const waiting = iter.next();
    expect(await settlesWithin(waiting, 100)).toBe('pending');
    await a.submit([tx('new')]);
    const r = await settlesWithin(waiting, 2000); // the watch, or at worst the 250 ms re-read
    expect(r).toMatchObject({ done: false, value: { height: 50, proposer: 'org-a' } });
    ac.abort();
    expect((await iter.next()).done).toBe(true);
  });

  it('gives two proposers submitting concurrently one sequence that both readers agree on', async () => {
    const prefix = newPrefix();
    const a = await openOrderer(prefix, { proposer: 'org-a' });
    const b = await openOrderer(prefix, { proposer: 'org-b' });
    const acknowledged = new Map<string, number>();
    const run = async (o: EtcdOrderer, name: string): Promise<void> => {
      for (let wave = 0; wave < 15; wave++) {
        await Promise.all(
          Array.from({ length: 4 }, async (_, i) => {
            const label = `${name}${wave}.${i}`;
            acknowledged.set(label, (await o.submit([tx(label)])).height);
          }),
        );
      }
    };
    await Promise.all([run(a, 'a'), run(b, 'b')]);
    const last = Math.max(...acknowledged.values());
    const seenByA = await readRange(a, 0, last);
    const seenByB = await readRange(b, 0, last);
    expect(comparable(seenByB)).toEqual(comparable(seenByA));
    expectExactlyOnce(seenByA, acknowledged);
    expect(new Set(seenByA.map((x) => x.proposer))).toEqual(new Set(['org-a', 'org-b']));
    for (const x of seenByA) expect(texts(x).every((t) => t.startsWith(`{"tx":"${x.proposer === 'org-a' ? 'a' : 'b'}`))).toBe(true);
    const ms = seenByA.map((x) => Date.parse(x.time));
    for (let i = 1; i < ms.length; i++) expect(ms[i]!).toBeGreaterThanOrEqual(ms[i - 1]!);
  });

  it('rejects a single submit larger than one etcd request with too-costly', async () => {
    const o = await openOrderer(newPrefix());
    const err = await rejection(o.submit([new Uint8Array(1024 * 1024)]));
    expect(err.code).toBe('too-costly');
    expect(o.lastHeight()).toBe(-1);
  });
});
