/**
 * Bad input at a running node: each is rejected with an error naming the problem, nothing is stored, and
 * the node keeps accepting good txs afterwards.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openNode, initNode, type HealthledgerNode } from '../src/node.js';
import { TxType, maxTxBytes, signTx, publicVerifier } from '../src/ledger/index.js';
import { generateEd25519KeyPair } from '../src/crypto/index.js';
import { HlError } from '../src/kernel/index.js';
import { commitBody, tempDir } from './helpers.js';

const work = tempDir('hl-bad-');
let node: HealthledgerNode;

beforeAll(async () => {
  await initNode({ org: 'Harbor Lab', dataDir: work.path });
  node = await openNode({ dataDir: work.path });
});

afterAll(async () => {
  await node.close();
  work.cleanup();
});

const enc = (s: string) => new TextEncoder().encode(s);

function goodTx(i: number) {
  return signTx(
    { type: TxType.recordCommit, body: commitBody(i), signer: { kind: 'org', id: node.config.orgId, keyId: node.keyPair.keyId } },
    node.keyPair.privateKey,
  );
}

async function expectRejected(bytes: Uint8Array, code: string, message: RegExp): Promise<void> {
  const before = { height: node.ledger.height, size: node.ledger.treeSize, ordered: node.orderer.lastHeight() };
  const err = await node.submit([bytes]).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(HlError);
  expect((err as HlError).code).toBe(code);
  expect((err as HlError).message).toMatch(message);
  expect({ height: node.ledger.height, size: node.ledger.treeSize, ordered: node.orderer.lastHeight() }).toEqual(before);
}

describe('a node given bad txs', () => {
  it('rejects malformed JSON', async () => {
    await expectRejected(enc('{"v":1,"type":'), 'invalid', /tx is not valid JSON/);
  });

  it('rejects a tx missing members, naming each', async () => {
    await expectRejected(enc('{"v":1,"type":"record.commit","body":{}}'), 'invalid', /signer: .*time: .*nonce: .*sig: /);
  });

  it('rejects a wrong signature', async () => {
    const tx = goodTx(1).envelope;
    const other = generateEd25519KeyPair();
    const forged = signTx({ type: tx.type, body: tx.body, signer: tx.signer, time: tx.time }, other.privateKey);
    await expectRejected(forged.bytes, 'forbidden', /sig: signature does not verify/);
  });

  it('rejects an unknown tx type', async () => {
    const tx = signTx({ type: 'record.teleport', body: {}, signer: { kind: 'org', id: node.config.orgId, keyId: node.keyPair.keyId } }, node.keyPair.privateKey);
    await expectRejected(tx.bytes, 'not-found', /unknown tx type "record.teleport"/);
  });

  it('rejects an oversized tx', async () => {
    const body = { ...commitBody(2), padding: 'x'.repeat(maxTxBytes) };
    const tx = signTx({ type: TxType.recordCommit, body, signer: { kind: 'org', id: node.config.orgId, keyId: node.keyPair.keyId } }, node.keyPair.privateKey);
    await expectRejected(tx.bytes, 'too-costly', /larger than 65536 bytes/);
  });

  it('rejects a replay of an accepted tx', async () => {
    const tx = goodTx(3);
    const [receipt] = await node.submit([tx.bytes]);
    expect(receipt?.valid).toBe(true);
    await expectRejected(tx.bytes, 'conflict', /duplicate tx \(replay\)/);
  });

  it('rejects a proof with garbage, naming the failure', () => {
    const size = node.ledger.treeSize;
    const proof = node.ledger.inclusionProof(0, size);
    const leaf = publicVerifier.leafHash(node.ledger.store.entry(0)!);
    const root = node.ledger.rootAt(size);
    publicVerifier.verifyInclusion(0n, BigInt(size), leaf, proof, root);
    expect(() => publicVerifier.verifyInclusion(0n, BigInt(size), leaf, [...proof, new Uint8Array(32)], root)).toThrow(/needs \d+/);
    expect(() => publicVerifier.verifyInclusion(0n, BigInt(size), leaf, [new Uint8Array(7)], root)).toThrow(/32 bytes/);
  });

  it('rejects a signature whose base64url has non-zero trailing bits, and survives it if ordered anyway', async () => {
    const tx = goodTx(20).envelope;
    // 86 base64url chars carry 516 bits; the last 4 must be zero for a 64-byte signature.
    const last = tx.sig.at(-1)!;
    const bad = { ...tx, sig: tx.sig.slice(0, -1) + (last === 'B' ? 'C' : 'B') };
    const bytes = enc(JSON.stringify(bad));
    await expectRejected(bytes, 'invalid', /sig: sig must be a base64url Ed25519 signature/);
    // A peer could still get it ordered (nothing but admission stands in its way): it must be kept, invalid.
    const { height } = await node.orderer.submit([bytes]);
    await node.waitForHeight(height);
    const [stored] = node.ledger.store.blockTxs(height);
    expect(stored).toMatchObject({ valid: false, leafIndex: null });
    expect(stored?.error).toMatch(/sig must be a base64url Ed25519 signature/);
  });

  it('keeps accepting good txs after all of that', async () => {
    const receipts = await node.submit([goodTx(10).bytes, goodTx(11).bytes]);
    expect(receipts.map((r) => r.valid)).toEqual([true, true]);
    expect(receipts[1]!.leafIndex).toBe(receipts[0]!.leafIndex! + 1);
    const note = node.ledger.latestCheckpoint()!;
    const cp = publicVerifier.verifyCheckpoint(note, [node.ledger.verifierKey()]);
    expect(cp.treeSize).toBe(BigInt(node.ledger.treeSize));
  });
});
