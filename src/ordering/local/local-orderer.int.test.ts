/**
 * LocalOrderer on a real SQLite log in a temp dir: the Orderer conformance suite, what only a file-backed log
 * shows (a second handle on the file), and the batch codec it stores.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HlError, systemClock } from '../../kernel/index.js';
import { decodeTxs, encodeTxs } from '../batch-codec.js';
import { describeOrdererConformance, readAll, texts, tx, type OrdererHarness } from '../orderer.conformance.js';
import { LocalOrderer } from './local-orderer.js';

describeOrdererConformance('LocalOrderer (SQLite file in a temp dir)', async (): Promise<OrdererHarness> => {
  const dir = mkdtempSync(join(tmpdir(), 'hl-orderer-'));
  const open: LocalOrderer[] = [];
  return {
    open: async (options = {}) => {
      const o = new LocalOrderer({
        file: join(dir, 'orderer.db'),
        proposer: options.proposer ?? 'org-a',
        clock: options.clock ?? systemClock,
        ...(options.maxBatchTxs === undefined ? {} : { maxBatchTxs: options.maxBatchTxs }),
      });
      open.push(o);
      return o;
    },
    close: async () => {
      for (const o of open.splice(0)) await o.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

let dir: string;
const open: LocalOrderer[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hl-orderer-'));
});

afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
  rmSync(dir, { recursive: true, force: true });
});

function makeOrderer(file: string): LocalOrderer {
  const o = new LocalOrderer({ file, proposer: 'org-a', clock: systemClock });
  open.push(o);
  return o;
}

describe('LocalOrderer', () => {
  it('resolves a submit only once its batch can be read back from the file by a second handle', async () => {
    const file = join(dir, 'orderer.db');
    const o = makeOrderer(file);
    const { height } = await o.submit([tx('durable')]);
    expect(o.lastHeight()).toBe(height);
    const reader = makeOrderer(file); // a second handle on the same file
    expect(reader.lastHeight()).toBe(height);
    const [b] = await readAll(reader);
    expect(texts(b!)).toEqual(['{"tx":"durable"}']);
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
