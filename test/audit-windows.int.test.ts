/**
 * The audit on a ledger larger than one verification window (2,048 txs): signatures are pre-verified on the
 * worker pool ahead of the replay, and a forgery deep in the ledger is still caught at the right place.
 */
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initNode, openNode, verifyDataDir } from '../src/node.js';
import { TxType, signTx } from '../src/ledger/index.js';
import { generateEd25519KeyPair } from '../src/crypto/index.js';
import { commitBody, tempDir } from './helpers.js';

const work = tempDir('hl-windows-');
const dir = join(work.path, 'node');
const total = 6000;

beforeAll(async () => {
  await initNode({ org: 'Window Hospital', dataDir: dir });
  const node = await openNode({ dataDir: dir });
  try {
    const signer = { kind: 'org' as const, id: node.config.orgId, keyId: node.keyPair.keyId };
    for (let start = 0; start < total; start += 500) {
      const txs = Array.from({ length: 500 }, (_, i) => signTx({ type: TxType.recordCommit, body: commitBody(start + i), signer }, node.keyPair.privateKey).bytes);
      const receipts = await node.submit(txs);
      expect(receipts.every((r) => r.valid)).toBe(true);
    }
  } finally {
    await node.close();
  }
}, 120_000);

afterAll(() => work.cleanup());

describe('audit across verification windows', () => {
  it('verifies a 6,001-entry ledger with signatures checked on the pool', async () => {
    const report = await verifyDataDir(dir);
    expect(report.problem).toBeUndefined();
    expect(report).toMatchObject({ ok: true, entries: total + 1, txs: total + 1 });
  });

  it('catches a tx re-signed by another key in the last window, naming its block and position', async () => {
    const copy = join(work.path, 'forged');
    cpSync(dir, copy, { recursive: true });
    const db = new Database(join(copy, 'ledger.sqlite'));
    const row = db.prepare('SELECT height, position, bytes FROM ledger_tx WHERE leaf_index = ?').get(total - 3) as {
      height: number;
      position: number;
      bytes: Buffer;
    };
    const env = JSON.parse(row.bytes.toString('utf8'));
    const forged = signTx({ type: env.type, body: env.body, signer: env.signer, time: env.time, nonce: env.nonce }, generateEd25519KeyPair().privateKey);
    db.prepare('UPDATE ledger_tx SET bytes = ?, tx_id = ? WHERE height = ? AND position = ?').run(Buffer.from(forged.bytes), forged.id, row.height, row.position);
    db.close();
    const report = await verifyDataDir(copy);
    expect(report.ok).toBe(false);
    expect(report.problem).toMatchObject({ height: row.height, position: row.position });
    expect(report.problem?.message).toMatch(/signature does not verify/);
  });
});
