/**
 * The ledger on SQLite storage: blocks, validity flags, governance, proofs checked by the public verifier,
 * checkpoint safety, restart, and C2SP tiles. Roots are compared against a naive RFC 9162 tree written here
 * from the spec, so the implementation is never checked only against itself.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HlError, fixedClock, toHex, utf8 } from '../kernel/index.js';
import {
  canonicalBytes,
  exportPublicJwk,
  generateEd25519KeyPair,
  rawPublicKey,
  sha256,
  signEd25519,
  type Ed25519KeyPair,
} from '../crypto/index.js';
import { genesisPrevHash } from './block.js';
import { signApproval } from './contracts.js';
import { Ledger, type TxReceipt } from './ledger.js';
import { SignatureType, formatCheckpoint, formatSignedNote, formatVerifierKey, signNoteSignature } from './note.js';
import { openSqliteLedgerStore, type SqliteLedgerStore } from './storage/sqlite/sqlite-ledger-store.js';
import { entryBundle, formatTileIndex, parseTilePath, readTile } from './tiles.js';
import { maxTxBytes, signTx, type ParsedTx } from './tx.js';
import { leafHash, verifyCheckpoint, verifyConsistency, verifyInclusion } from './verify.js';

// ---------------------------------------------------------------------------------------------------------
// Naive RFC 9162 reference (straight from §2.1.1), independent of the code under test.

function refSha256(...parts: Uint8Array[]): Uint8Array {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}
const refLeaf = (data: Uint8Array): Uint8Array => refSha256(Uint8Array.of(0), data);
const refNode = (l: Uint8Array, r: Uint8Array): Uint8Array => refSha256(Uint8Array.of(1), l, r);
function refRootOfHashes(hashes: Uint8Array[]): Uint8Array {
  if (hashes.length === 0) return refSha256();
  if (hashes.length === 1) return hashes[0]!;
  let k = 1;
  while (k * 2 < hashes.length) k *= 2;
  return refNode(refRootOfHashes(hashes.slice(0, k)), refRootOfHashes(hashes.slice(k)));
}
const refRoot = (leaves: Uint8Array[]): Uint8Array => refRootOfHashes(leaves.map(refLeaf));

// ---------------------------------------------------------------------------------------------------------
// Fixtures.

const origin = 'healthledger.local/test';
const T0 = Date.parse('2025-03-01T12:00:00.000Z');
const iso = (ms: number): string => new Date(ms).toISOString();
/** Block h is ordered at T0 + h seconds. */
const blockTime = (height: number): number => T0 + height * 1000;

interface Org {
  id: string;
  name: string;
  keys: Ed25519KeyPair;
}

function makeOrg(id: string): Org {
  return { id, name: `Org ${id}`, keys: generateEd25519KeyPair() };
}

/** The org's C2SP verifier key string, computed here as c2sp.org/signed-note specifies. */
function vkeyOf(org: Org): string {
  return formatVerifierKey(sha256, org.id, SignatureType.ed25519, rawPublicKey(org.keys.publicKey));
}

function descriptor(org: Org): { id: string; name: string; publicKey: string } {
  return { id: org.id, name: org.name, publicKey: exportPublicJwk(org.keys.publicKey).x };
}

function orgSigner(org: Org): { kind: 'org'; id: string; keyId: string } {
  return { kind: 'org', id: org.id, keyId: org.keys.keyId };
}

function genesisTx(founder: Org, orgs: Org[], time = T0): ParsedTx {
  return signTx(
    { type: 'network.genesis', body: { origin, orgs: orgs.map(descriptor) }, signer: orgSigner(founder), time: iso(time) },
    founder.keys.privateKey,
  );
}

let commitCounter = 0;
function commitBody(extra: Record<string, unknown> = {}): Record<string, unknown> {
  commitCounter++;
  return {
    patient: 'pat-abc',
    resourceType: 'Observation',
    id: `obs-${commitCounter}`,
    versionId: '1',
    commitment: randomBytes(32).toString('hex'),
    ...extra,
  };
}

/** A commit body's version part (what a batched `record.commit` lists). */
function versionOf(body: Record<string, unknown>): Record<string, unknown> {
  const { patient: _patient, ...version } = body;
  return version;
}

function commitTx(org: Org, options: { body?: Record<string, unknown>; time?: number } = {}): ParsedTx {
  return signTx(
    { type: 'record.commit', body: options.body ?? commitBody(), signer: orgSigner(org), time: iso(options.time ?? T0) },
    org.keys.privateKey,
  );
}

/** A governance tx (org.join / org.update / org.leave) approved by `approvers`. */
function governanceTx(
  type: 'org.join' | 'org.update' | 'org.leave',
  proposal: Record<string, unknown>,
  signer: Org,
  approvers: Org[],
): ParsedTx {
  const approvals = approvers.map((a) =>
    signApproval(origin, type, proposal, { id: a.id, keyId: a.keys.keyId, privateKey: a.keys.privateKey }),
  );
  return signTx(
    { type, body: { ...proposal, approvals }, signer: orgSigner(signer), time: iso(T0) },
    signer.keys.privateKey,
  );
}

type TxInput = ParsedTx | Uint8Array;
const bytesOf = (t: TxInput): Uint8Array => (t instanceof Uint8Array ? t : t.bytes);

/** Applies the txs as the next block (at its deterministic block time). */
function applyNext(ledger: Ledger, txs: TxInput[]): TxReceipt[] {
  const height = ledger.height + 1;
  return ledger.applyBatch({ height, time: iso(blockTime(height)), proposer: 'org-a', txs: txs.map(bytesOf) });
}

function entryAt(store: SqliteLedgerStore, index: number): Uint8Array {
  const e = store.entry(index);
  if (e === null) throw new Error(`no stored entry at leaf ${index}`);
  return e;
}

function storedLeaves(store: SqliteLedgerStore, size: number): Uint8Array[] {
  return Array.from({ length: size }, (_, i) => entryAt(store, i));
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected the call to throw');
}

function expectHlError(fn: () => unknown, code: string | string[], message?: RegExp): HlError {
  const err = thrown(fn);
  expect(err).toBeInstanceOf(HlError);
  const e = err as HlError;
  if (Array.isArray(code)) expect(code).toContain(e.code);
  else expect(e.code).toBe(code);
  if (message) expect(e.message).toMatch(message);
  return e;
}

/** A signed note for an arbitrary checkpoint, made by hand with the org's key (as a forger holding it could). */
function forgeCheckpoint(org: Org, treeSize: number, root: Uint8Array): string {
  const text = formatCheckpoint({ origin, treeSize: BigInt(treeSize), rootHash: root, extensions: [] });
  const sig = signNoteSignature(sha256, org.id, rawPublicKey(org.keys.publicKey), (m) => signEd25519(org.keys.privateKey, m), text);
  return formatSignedNote({ text, signatures: [sig] });
}

// ---------------------------------------------------------------------------------------------------------

let dir: string;
const stores: SqliteLedgerStore[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hl-ledger-'));
});

afterEach(() => {
  for (const s of stores.splice(0)) s.close();
  rmSync(dir, { recursive: true, force: true });
});

function openStore(file = ':memory:'): SqliteLedgerStore {
  const store = openSqliteLedgerStore(file);
  stores.push(store);
  return store;
}

function openLedger(store: SqliteLedgerStore, signer: Org, clockMs = T0): Ledger {
  return Ledger.open({ store, signer: { orgId: signer.id, keyPair: signer.keys }, clock: fixedClock(clockMs) });
}

describe('Ledger blocks and leaves', () => {
  it('gives genesis leaf 0 and each valid commit the next leaf, storing the canonical tx bytes', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const ledger = openLedger(store, a);
    const genesis = genesisTx(a, [a]);
    const r0 = applyNext(ledger, [genesis]);
    expect(r0).toEqual([{ txId: genesis.id, height: 0, position: 0, valid: true, leafIndex: 0, error: null }]);

    const commits1 = [commitTx(a), commitTx(a), commitTx(a)];
    const commits2 = [commitTx(a), commitTx(a)];
    const r1 = applyNext(ledger, commits1);
    const r2 = applyNext(ledger, commits2);
    expect(r1.map((r) => r.leafIndex)).toEqual([1, 2, 3]);
    expect(r2.map((r) => r.leafIndex)).toEqual([4, 5]);
    expect([...r1, ...r2].every((r) => r.valid && r.error === null)).toBe(true);

    const all = [genesis, ...commits1, ...commits2];
    expect(ledger.treeSize).toBe(6);
    expect(ledger.height).toBe(2);
    all.forEach((tx, i) => expect(toHex(entryAt(store, i))).toBe(toHex(tx.bytes)));
    expect(store.entry(6)).toBeNull();
    expect(ledger.root).toBe(toHex(refRoot(all.map((t) => t.bytes))));
    expect(ledger.origin).toBe(origin);
  });

  it('chains block headers: prevHash is the previous block hash, and each hash is SHA-256 of the JCS header', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const ledger = openLedger(store, a);
    applyNext(ledger, [genesisTx(a, [a])]);
    applyNext(ledger, [commitTx(a), commitTx(a)]);
    applyNext(ledger, [commitTx(a), utf8('not json'), commitTx(a)]);
    applyNext(ledger, [commitTx(a)]);

    const blocks = [...store.blocks(0)];
    expect(blocks.map((b) => b.header.height)).toEqual([0, 1, 2, 3]);
    expect(blocks[0]!.header.prevHash).toBe(genesisPrevHash);
    expect(genesisPrevHash).toBe('0'.repeat(64));
    for (let h = 0; h < blocks.length; h++) {
      const b = blocks[h]!;
      expect(b.hash).toBe(toHex(refSha256(canonicalBytes(b.header))));
      if (h > 0) expect(b.header.prevHash).toBe(blocks[h - 1]!.hash);
    }
    // Tree sizes and leaf ranges per block: the invalid tx in block 2 takes no leaf.
    expect(blocks.map((b) => [b.header.firstIndex, b.header.txCount, b.header.treeSize])).toEqual([
      [0, 1, 1],
      [1, 2, 3],
      [3, 3, 5],
      [5, 1, 6],
    ]);
    for (const b of blocks) {
      expect(b.header.root).toBe(toHex(refRoot(storedLeaves(store, b.header.treeSize))));
      expect(b.header.time).toBe(iso(blockTime(b.header.height)));
    }
  });

  it('refuses a batch whose height does not follow the head, storing nothing', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const ledger = openLedger(store, a);
    applyNext(ledger, [genesisTx(a, [a])]);
    expectHlError(
      () => ledger.applyBatch({ height: 2, time: iso(blockTime(2)), proposer: 'org-a', txs: [commitTx(a).bytes] }),
      'conflict',
    );
    expectHlError(
      () => ledger.applyBatch({ height: 0, time: iso(blockTime(2)), proposer: 'org-a', txs: [commitTx(a).bytes] }),
      'conflict',
    );
    expect(ledger.height).toBe(0);
    expect(store.head()?.height).toBe(0);
    expect(ledger.treeSize).toBe(1);
  });

  it('keeps the connection at synchronous=NORMAL with checkpoints handed off, after blocks, a checkpoint, a meta value and a refused append', () => {
    const a = makeOrg('org-a');
    const store = openStore(join(dir, `sync-${Date.now()}.db`));
    const ledger = openLedger(store, a);
    const normal = 1;
    expect(store.db.pragma('synchronous', { simple: true })).toBe(normal);
    expect(store.db.pragma('wal_autocheckpoint', { simple: true })).toBe(0);
    applyNext(ledger, [genesisTx(a, [a])]);
    applyNext(ledger, [commitTx(a)]);
    ledger.signCheckpoint();
    store.setMeta('k', 'v');
    expect(store.db.pragma('synchronous', { simple: true })).toBe(normal);
    const stale = store.block(0)!;
    expect(() => store.appendBlock({ header: stale.header, hash: stale.hash, txs: [], nodes: [] })).toThrow(/does not follow/);
    expect(store.db.pragma('synchronous', { simple: true })).toBe(normal);
    expect(store.db.pragma('wal_autocheckpoint', { simple: true })).toBe(0);
  });

  it('treats genesis anywhere but tx 0 of block 0 as invalid, and txs before genesis as invalid', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const ledger = openLedger(store, a);
    const receipts = applyNext(ledger, [commitTx(a), genesisTx(a, [a])]);
    expect(receipts.map((r) => r.valid)).toEqual([false, false]);
    expect(receipts[0]!.error).toMatch(/no genesis/);
    expect(receipts[1]!.error).toMatch(/genesis is only valid as the first tx of block 0/);
    expect(ledger.treeSize).toBe(0);
    expect(store.blockTxs(0)).toHaveLength(2);
    // A genesis in a later block is no better.
    const late = applyNext(ledger, [genesisTx(a, [a])]);
    expect(late[0]!.valid).toBe(false);
    expect(late[0]!.error).toMatch(/genesis is only valid as the first tx of block 0/);
    expect(ledger.treeSize).toBe(0);
  });
});

describe('Ledger invalid txs', () => {
  const a = makeOrg('org-a');
  const outsider = makeOrg('org-x');

  interface Setup {
    ledger: Ledger;
    store: SqliteLedgerStore;
    /** A commit already applied in block 1. */
    applied: ParsedTx;
  }

  function setup(): Setup {
    const store = openStore();
    const ledger = openLedger(store, a, blockTime(2));
    applyNext(ledger, [genesisTx(a, [a])]);
    const applied = commitTx(a);
    applyNext(ledger, [applied]);
    return { ledger, store, applied };
  }

  const cases: { name: string; make: (s: Setup) => Uint8Array; error: RegExp; code: string }[] = [
    {
      name: 'a signature made with another key',
      make: () =>
        signTx({ type: 'record.commit', body: commitBody(), signer: orgSigner(a), time: iso(T0) }, outsider.keys.privateKey).bytes,
      error: /signature does not verify/,
      code: 'forbidden',
    },
    {
      name: 'a signature altered after signing',
      make: () => {
        const tx = commitTx(a);
        const sig = tx.envelope.sig;
        const flipped = (sig[10] === 'A' ? 'B' : 'A') + sig.slice(11);
        return utf8(JSON.stringify({ ...tx.envelope, sig: sig.slice(0, 10) + flipped }));
      },
      error: /signature does not verify/,
      code: 'forbidden',
    },
    {
      name: 'an unknown tx type',
      make: () =>
        signTx({ type: 'record.frobnicate', body: commitBody(), signer: orgSigner(a), time: iso(T0) }, a.keys.privateKey).bytes,
      error: /unknown tx type "record\.frobnicate"/,
      code: 'not-found',
    },
    {
      name: "a signer key that is not the member's key",
      make: () =>
        signTx(
          { type: 'record.commit', body: commitBody(), signer: { kind: 'org', id: 'org-a', keyId: outsider.keys.keyId }, time: iso(T0) },
          outsider.keys.privateKey,
        ).bytes,
      error: /signer is not a current member key/,
      code: 'forbidden',
    },
    {
      name: 'a signer that is not a member',
      make: () => commitTx(outsider).bytes,
      error: /signer is not a current member key/,
      code: 'forbidden',
    },
    {
      name: 'a replay of an already included tx',
      make: (s) => s.applied.bytes,
      error: /duplicate tx \(replay\)/,
      code: 'conflict',
    },
    {
      name: 'a replay of an included tx re-serialized with other whitespace',
      make: (s) => utf8(JSON.stringify(s.applied.envelope, null, 2)),
      error: /duplicate tx \(replay\)/,
      code: 'conflict',
    },
    {
      name: 'a tx time more than 5 minutes after the block time',
      make: () => commitTx(a, { time: blockTime(2) + 6 * 60 * 1000 }).bytes,
      error: /tx time is in the future of its block/,
      code: 'invalid',
    },
    {
      name: 'a tx time more than 24 hours before the block time',
      make: () => commitTx(a, { time: blockTime(2) - 25 * 60 * 60 * 1000 }).bytes,
      error: /tx is too old/,
      code: 'invalid',
    },
    {
      name: 'a second genesis',
      make: () => genesisTx(a, [a]).bytes,
      error: /genesis is only valid as the first tx of block 0/,
      code: 'conflict',
    },
    {
      name: 'bytes that are not JSON',
      make: () => utf8('{"v":1,"type":"record.commit",'),
      error: /not valid JSON/,
      code: 'invalid',
    },
    {
      name: 'an envelope missing its signature',
      make: () => {
        const { sig: _sig, ...rest } = commitTx(a).envelope;
        return utf8(JSON.stringify(rest));
      },
      error: /sig/,
      code: 'invalid',
    },
    {
      name: 'a record.commit whose commitment is not hex',
      make: () => commitTx(a, { body: commitBody({ commitment: 'z'.repeat(64) }) }).bytes,
      error: /body\.commitment: must be a hex SHA-256 commitment/,
      code: 'invalid',
    },
    {
      name: 'a record.commit whose commitment is upper-case hex',
      make: () => commitTx(a, { body: commitBody({ commitment: 'AB'.repeat(32) }) }).bytes,
      error: /body\.commitment/,
      code: 'invalid',
    },
    {
      name: 'a record.commit with an extra body member',
      make: () => commitTx(a, { body: commitBody({ extra: 'x' }) }).bytes,
      error: /unknown member "extra"/,
      code: 'invalid',
    },
    {
      name: 'a record.commit with a missing id',
      make: () => {
        const { id: _id, ...body } = commitBody();
        return commitTx(a, { body }).bytes;
      },
      error: /body\.id: must be an id/,
      code: 'invalid',
    },
    {
      name: 'a batched record.commit with no versions',
      make: () => commitTx(a, { body: { patient: 'pat-abc', versions: [] } }).bytes,
      error: /body\.versions: must be a list of 1 to 250 version commitments/,
      code: 'invalid',
    },
    {
      name: 'a batched record.commit with more versions than a tx may carry',
      make: () => commitTx(a, { body: { patient: 'pat-abc', versions: Array.from({ length: 251 }, () => versionOf(commitBody())) } }).bytes,
      error: /body\.versions: must be a list of 1 to 250/,
      code: 'invalid',
    },
    {
      name: 'a batched record.commit with one bad commitment among good ones',
      make: () => commitTx(a, { body: { versions: [versionOf(commitBody()), versionOf(commitBody({ commitment: 'AB'.repeat(32) }))] } }).bytes,
      error: /body\.versions\[1\]\.commitment: must be a hex SHA-256 commitment/,
      code: 'invalid',
    },
    {
      name: 'a batched record.commit that commits one version twice',
      make: () => {
        const v = versionOf(commitBody());
        return commitTx(a, { body: { versions: [v, { ...v, commitment: randomBytes(32).toString('hex') }] } }).bytes;
      },
      error: /body\.versions\[1\]: commits a version already committed by this tx/,
      code: 'invalid',
    },
    {
      name: 'a batched record.commit with a member beside versions',
      make: () => commitTx(a, { body: { versions: [versionOf(commitBody())], resourceType: 'Observation' } }).bytes,
      error: /unknown member "resourceType"/,
      code: 'invalid',
    },
    {
      name: 'a batched record.commit whose version has a patient of its own',
      make: () => commitTx(a, { body: { versions: [commitBody()] } }).bytes,
      error: /body\.versions\[0\]\.patient: unknown member "patient"/,
      code: 'invalid',
    },
  ];

  it.each(cases)('keeps $name in its block as invalid, with an error naming it, and gives it no leaf', ({ make, error }) => {
    const s = setup();
    const bytes = make(s);
    const sizeBefore = s.ledger.treeSize;
    const rootBefore = s.ledger.root;
    const good = commitTx(a);
    const receipts = applyNext(s.ledger, [bytes, good]);

    expect(receipts[0]!.valid).toBe(false);
    expect(receipts[0]!.leafIndex).toBeNull();
    expect(receipts[0]!.error).toMatch(error);
    // The valid tx after it takes the very next leaf: the invalid one took none.
    expect(receipts[1]).toMatchObject({ valid: true, leafIndex: sizeBefore, error: null });

    const stored = s.store.blockTxs(s.ledger.height);
    expect(stored).toHaveLength(2);
    expect(stored[0]).toMatchObject({ position: 0, valid: false, leafIndex: null });
    expect(stored[0]!.error).toMatch(error);
    expect(stored[1]).toMatchObject({ position: 1, valid: true, leafIndex: sizeBefore });
    const header = s.store.block(s.ledger.height)!.header;
    expect(header.txCount).toBe(2);
    expect(header.treeSize).toBe(sizeBefore + 1);
    expect(s.ledger.treeSize).toBe(sizeBefore + 1);
    expect(toHex(entryAt(s.store, sizeBefore))).toBe(toHex(good.bytes));
    expect(s.store.entry(sizeBefore + 1)).toBeNull();
    expect(rootBefore).not.toBe(s.ledger.root);
  });

  it.each(cases)('precheck rejects $name with an HlError naming it, and stores nothing', ({ make, error, code }) => {
    const s = setup();
    const bytes = make(s);
    const head = s.store.head();
    const err = expectHlError(() => s.ledger.precheck(bytes), code, error);
    expect(err.message).toMatch(error);
    expect(s.store.head()).toEqual(head);
    expect(s.ledger.treeSize).toBe(2);
    expect([...s.store.allTxs()]).toHaveLength(2);
  });

  it('precheck accepts a valid commit without storing it', () => {
    const s = setup();
    const tx = commitTx(a);
    expect(s.ledger.precheck(tx.bytes).id).toBe(tx.id);
    expect(s.store.txById(tx.id)).toBeNull();
    expect(s.ledger.treeSize).toBe(2);
    // Admission is not inclusion: the same tx is still accepted when its block comes.
    expect(applyNext(s.ledger, [tx])[0]!.valid).toBe(true);
  });

  it('accepts a batched record.commit of 1 and of 250 versions of one patient as one leaf each', () => {
    const s = setup();
    const one = commitTx(a, { body: { patient: 'pat-abc', versions: [versionOf(commitBody())] } });
    const many = commitTx(a, { body: { patient: 'pat-abc', versions: Array.from({ length: 250 }, () => versionOf(commitBody({ labels: ['R'] }))) } });
    const receipts = applyNext(s.ledger, [one, many]);
    expect(receipts.map((r) => [r.valid, r.leafIndex])).toEqual([
      [true, 2],
      [true, 3],
    ]);
    expect(toHex(entryAt(s.store, 3))).toBe(toHex(many.bytes));
  });

  it('accepts a tx time up to 5 minutes after the block time and rejects one a millisecond later', () => {
    const s = setup();
    const next = blockTime(s.ledger.height + 1);
    const r = applyNext(s.ledger, [commitTx(a, { time: next + 5 * 60 * 1000 }), commitTx(a, { time: next + 5 * 60 * 1000 + 1 })]);
    expect(r.map((x) => x.valid)).toEqual([true, false]);
    expect(r[1]!.error).toMatch(/future/);
  });

  it('rejects a second copy of a tx in the same block as a replay', () => {
    const s = setup();
    const tx = commitTx(a);
    const receipts = applyNext(s.ledger, [tx, tx]);
    expect(receipts.map((r) => r.valid)).toEqual([true, false]);
    expect(receipts[1]!.error).toMatch(/duplicate tx \(replay\)/);
    expect(s.ledger.treeSize).toBe(3);
  });

  it(`rejects a tx larger than maxTxBytes (${maxTxBytes}) as too-costly at precheck and keeps it invalid in a block`, () => {
    const s = setup();
    const big = commitTx(a, { body: commitBody({ labels: Array.from({ length: 1200 }, (_, i) => `label-${'x'.repeat(48)}-${i}`) }) });
    expect(big.bytes.length).toBeGreaterThan(maxTxBytes);
    expectHlError(() => s.ledger.precheck(big.bytes), 'too-costly');
    const receipts = applyNext(s.ledger, [big.bytes]);
    expect(receipts[0]).toMatchObject({ valid: false, leafIndex: null });
    expect(receipts[0]!.error).toMatch(/larger than/);
    expect(s.ledger.treeSize).toBe(2);
  });

  it('accepts a tx as large as maxTxBytes allows', () => {
    const s = setup();
    const body = commitBody();
    const withLabels = (n: number): ParsedTx =>
      commitTx(a, { body: { ...body, labels: Array.from({ length: n }, (_, i) => `l${i}-${'y'.repeat(50)}`) } });
    // Grow the labels until one more would exceed the limit.
    let n = 0;
    let tx = withLabels(0);
    for (const step of [64, 1]) {
      for (;;) {
        const candidate = withLabels(n + step);
        if (candidate.bytes.length > maxTxBytes) break;
        n += step;
        tx = candidate;
      }
    }
    expect(tx.bytes.length).toBeLessThanOrEqual(maxTxBytes);
    expect(tx.bytes.length).toBeGreaterThan(maxTxBytes - 100);
    expect(s.ledger.precheck(tx.bytes).id).toBe(tx.id);
    expect(applyNext(s.ledger, [tx])[0]!.valid).toBe(true);
  });
});

describe('Ledger governance', () => {
  it('rejects org.join approved by 1 of 2 members and accepts it with 2 of 2', () => {
    const a = makeOrg('org-a');
    const b = makeOrg('org-b');
    const c = makeOrg('org-c');
    const store = openStore();
    const ledger = openLedger(store, a);
    applyNext(ledger, [genesisTx(a, [a, b])]);
    expect([...ledger.state.members.keys()].sort()).toEqual(['org-a', 'org-b']);

    const half = governanceTx('org.join', { org: descriptor(c) }, c, [a]);
    const r1 = applyNext(ledger, [half]);
    expect(r1[0]).toMatchObject({ valid: false, leafIndex: null });
    expect(r1[0]!.error).toMatch(/1 of 2 members approved; 2 needed/);
    expect(ledger.state.members.has('org-c')).toBe(false);
    expect(applyNext(ledger, [commitTx(c)])[0]!.valid).toBe(false);

    const full = governanceTx('org.join', { org: descriptor(c) }, c, [a, b]);
    const r2 = applyNext(ledger, [full]);
    expect(r2[0]).toMatchObject({ valid: true, error: null, leafIndex: 1 });
    expect(ledger.state.members.has('org-c')).toBe(true);
    // The new member can now commit records.
    expect(applyNext(ledger, [commitTx(c)])[0]!.valid).toBe(true);
  });

  it('does not count the same approver twice towards the majority', () => {
    const a = makeOrg('org-a');
    const b = makeOrg('org-b');
    const c = makeOrg('org-c');
    const ledger = openLedger(openStore(), a);
    applyNext(ledger, [genesisTx(a, [a, b])]);
    const tx = governanceTx('org.join', { org: descriptor(c) }, c, [a, a]);
    const r = applyNext(ledger, [tx]);
    expect(r[0]!.valid).toBe(false);
    expect(r[0]!.error).toMatch(/1 of 2 members approved/);
  });

  it('rejects approvals signed for a different proposal', () => {
    const a = makeOrg('org-a');
    const b = makeOrg('org-b');
    const c = makeOrg('org-c');
    const d = makeOrg('org-d');
    const ledger = openLedger(openStore(), a);
    applyNext(ledger, [genesisTx(a, [a, b])]);
    // Approvals for admitting org-d, attached to a proposal admitting org-c.
    const approvals = [a, b].map((m) =>
      signApproval(origin, 'org.join', { org: descriptor(d) }, { id: m.id, keyId: m.keys.keyId, privateKey: m.keys.privateKey }),
    );
    const tx = signTx(
      { type: 'org.join', body: { org: descriptor(c), approvals }, signer: orgSigner(c), time: iso(T0) },
      c.keys.privateKey,
    );
    const r = applyNext(ledger, [tx]);
    expect(r[0]!.valid).toBe(false);
    expect(r[0]!.error).toMatch(/does not verify/);
    expect(ledger.state.members.has('org-c')).toBe(false);
  });

  it('rejects org.join without approvals when there are members', () => {
    const a = makeOrg('org-a');
    const c = makeOrg('org-c');
    const ledger = openLedger(openStore(), a);
    applyNext(ledger, [genesisTx(a, [a])]);
    const tx = signTx({ type: 'org.join', body: { org: descriptor(c) }, signer: orgSigner(c), time: iso(T0) }, c.keys.privateKey);
    const r = applyNext(ledger, [tx]);
    expect(r[0]!.valid).toBe(false);
    expect(r[0]!.error).toMatch(/approvals/);
  });

  it('rejects org.leave of the last member', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const ledger = openLedger(store, a);
    applyNext(ledger, [genesisTx(a, [a])]);
    const r = applyNext(ledger, [governanceTx('org.leave', { orgId: 'org-a' }, a, [a])]);
    expect(r[0]).toMatchObject({ valid: false, leafIndex: null });
    expect(r[0]!.error).toMatch(/the last member cannot leave/);
    expect(ledger.state.members.has('org-a')).toBe(true);
    expect(applyNext(ledger, [commitTx(a)])[0]!.valid).toBe(true);
  });

  it('stops a member that left from signing record.commit', () => {
    const a = makeOrg('org-a');
    const b = makeOrg('org-b');
    const store = openStore();
    const ledger = openLedger(store, a, blockTime(3));
    applyNext(ledger, [genesisTx(a, [a, b])]);
    expect(applyNext(ledger, [commitTx(b)])[0]!.valid).toBe(true);

    const leave = applyNext(ledger, [governanceTx('org.leave', { orgId: 'org-b' }, a, [a, b])]);
    expect(leave[0]!.valid).toBe(true);
    expect([...ledger.state.members.keys()]).toEqual(['org-a']);

    const afterLeave = commitTx(b);
    expectHlError(() => ledger.precheck(afterLeave.bytes), 'forbidden', /signer is not a current member key/);
    const r = applyNext(ledger, [afterLeave, commitTx(a)]);
    expect(r[0]).toMatchObject({ valid: false, leafIndex: null });
    expect(r[0]!.error).toMatch(/signer is not a current member key/);
    expect(r[1]!.valid).toBe(true);
  });

  it('applies org.update: the member key changes and only the new key can sign', () => {
    const a = makeOrg('org-a');
    const b = makeOrg('org-b');
    const ledger = openLedger(openStore(), a);
    applyNext(ledger, [genesisTx(a, [a, b])]);
    const bNew: Org = { id: 'org-b', name: 'Org B renamed', keys: generateEd25519KeyPair() };
    const r = applyNext(ledger, [governanceTx('org.update', { org: descriptor(bNew) }, b, [a, b])]);
    expect(r[0]!.valid).toBe(true);
    expect(ledger.state.members.get('org-b')?.name).toBe('Org B renamed');
    const [oldKey, newKey] = applyNext(ledger, [commitTx(b), commitTx(bNew)]);
    expect(oldKey!.valid).toBe(false);
    expect(newKey!.valid).toBe(true);
  });
});

describe('Ledger proofs and checkpoints', () => {
  /** A ledger with blocks of varied sizes (one with invalid txs); returns the tree size after each block. */
  function buildLedger(store: SqliteLedgerStore, a: Org): { ledger: Ledger; boundaries: number[] } {
    const ledger = openLedger(store, a);
    const boundaries: number[] = [];
    const blocks: TxInput[][] = [
      [genesisTx(a, [a])],
      [commitTx(a), commitTx(a), commitTx(a)],
      [commitTx(a), utf8('garbage'), commitTx(a)],
      [commitTx(a, { body: commitBody({ extra: 1 }) })],
      Array.from({ length: 7 }, () => commitTx(a)),
      [commitTx(a)],
      Array.from({ length: 9 }, () => commitTx(a)),
    ];
    for (const txs of blocks) {
      applyNext(ledger, txs);
      boundaries.push(ledger.treeSize);
    }
    return { ledger, boundaries };
  }

  it('serves inclusion proofs for every leaf at every block boundary that the public verifier accepts', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const { ledger, boundaries } = buildLedger(store, a);
    expect(boundaries).toEqual([1, 4, 6, 6, 13, 14, 23]);
    for (const size of new Set(boundaries)) {
      const root = ledger.rootAt(size);
      expect(toHex(root)).toBe(toHex(refRoot(storedLeaves(store, size))));
      for (let i = 0; i < size; i++) {
        const proof = ledger.inclusionProof(i, size);
        expect(() => verifyInclusion(BigInt(i), BigInt(size), leafHash(entryAt(store, i)), proof, root)).not.toThrow();
      }
    }
  });

  it('serves inclusion proofs that fail for the wrong leaf, index or root', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const { ledger } = buildLedger(store, a);
    const size = ledger.treeSize;
    const root = ledger.rootAt(size);
    const proof = ledger.inclusionProof(5, size);
    expect(() => verifyInclusion(5n, BigInt(size), leafHash(entryAt(store, 6)), proof, root)).toThrow();
    expect(() => verifyInclusion(4n, BigInt(size), leafHash(entryAt(store, 5)), proof, root)).toThrow();
    expect(() => verifyInclusion(5n, BigInt(size), leafHash(entryAt(store, 5)), proof, ledger.rootAt(size - 1))).toThrow();
  });

  it('refuses proofs for tree sizes beyond the ledger and indexes beyond the tree size', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const { ledger } = buildLedger(store, a);
    const size = ledger.treeSize;
    expectHlError(() => ledger.inclusionProof(0, size + 1), 'not-found');
    expectHlError(() => ledger.rootAt(size + 1), 'not-found');
    expectHlError(() => ledger.consistencyProof(1, size + 1), 'not-found');
    expect(() => ledger.inclusionProof(size, size)).toThrow(HlError);
  });

  it('serves consistency proofs between every pair of block boundaries that the public verifier accepts', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const { ledger, boundaries } = buildLedger(store, a);
    const sizes = [...new Set(boundaries)];
    let checked = 0;
    for (const s1 of sizes) {
      for (const s2 of sizes) {
        if (s2 < s1) continue;
        const proof = ledger.consistencyProof(s1, s2);
        const r1 = ledger.rootAt(s1);
        const r2 = ledger.rootAt(s2);
        expect(() => verifyConsistency(BigInt(s1), BigInt(s2), r1, r2, proof)).not.toThrow();
        if (s1 < s2) {
          // The same proof must not vouch for a different old root.
          expect(() => verifyConsistency(BigInt(s1), BigInt(s2), refSha256(utf8('other')), r2, proof)).toThrow();
        }
        checked++;
      }
    }
    expect(checked).toBe((sizes.length * (sizes.length + 1)) / 2);
  });

  it('signs a checkpoint the public verifier accepts, naming the current size and root', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const { ledger } = buildLedger(store, a);
    const note = ledger.signCheckpoint();
    const cp = verifyCheckpoint(note, [ledger.verifierKey()]);
    expect(cp.origin).toBe(origin);
    expect(cp.treeSize).toBe(BigInt(ledger.treeSize));
    expect(toHex(cp.rootHash)).toBe(ledger.root);
    expect(toHex(cp.rootHash)).toBe(toHex(refRoot(storedLeaves(store, ledger.treeSize))));
    expect(cp.signers).toEqual(['org-a']);
    expect(ledger.latestCheckpoint()).toBe(note);
    expect(ledger.verifierKey().startsWith('org-a+')).toBe(true);
  });

  it('verifies a checkpoint whose verifier key contains "+" in its base64 key', () => {
    // Standard base64 uses '+'; about half of all Ed25519 keys have one in their vkey (name+keyid+base64),
    // so the vkey must be split at its first two '+' only (c2sp.org/signed-note).
    let a = makeOrg('org-a');
    while (vkeyOf(a).split('+').length === 3) a = makeOrg('org-a');
    const store = openStore();
    const { ledger } = buildLedger(store, a);
    expect(ledger.verifierKey()).toBe(vkeyOf(a));
    const cp = verifyCheckpoint(ledger.signCheckpoint(), [ledger.verifierKey()]);
    expect(cp.treeSize).toBe(BigInt(ledger.treeSize));
    expect(toHex(cp.rootHash)).toBe(ledger.root);
  });

  it('signs checkpoints that another org key does not verify', () => {
    const a = makeOrg('org-a');
    const other = makeOrg('org-a'); // same name, different key
    const store = openStore();
    const { ledger } = buildLedger(store, a);
    const note = ledger.signCheckpoint();
    const otherLedger = openLedger(openStore(), other);
    expect(() => verifyCheckpoint(note, [otherLedger.verifierKey()])).toThrow();
  });

  it('returns the same checkpoint when the tree has not grown, and a consistent larger one after growth', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const { ledger } = buildLedger(store, a);
    const first = ledger.signCheckpoint();
    expect(ledger.signCheckpoint()).toBe(first);
    applyNext(ledger, [commitTx(a), commitTx(a)]);
    const second = ledger.signCheckpoint();
    const cp1 = verifyCheckpoint(first, [ledger.verifierKey()]);
    const cp2 = verifyCheckpoint(second, [ledger.verifierKey()]);
    expect(cp2.treeSize).toBe(cp1.treeSize + 2n);
    const proof = ledger.consistencyProof(Number(cp1.treeSize), Number(cp2.treeSize));
    expect(() => verifyConsistency(cp1.treeSize, cp2.treeSize, cp1.rootHash, cp2.rootHash, proof)).not.toThrow();
  });

  it('refuses to sign a checkpoint when a stored Merkle node of the current tree was corrupted', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const { ledger } = buildLedger(store, a);
    const before = ledger.signCheckpoint();
    applyNext(ledger, [commitTx(a), commitTx(a)]); // size 25: the root reads leaf node 24 from storage
    expect(ledger.treeSize % 2).toBe(1);
    const changed = store.db
      .prepare('UPDATE merkle_node SET hash = ? WHERE level = 0 AND idx = ?')
      .run(randomBytes(32), ledger.treeSize - 1).changes;
    expect(changed).toBe(1);
    expectHlError(() => ledger.signCheckpoint(), ['integrity', 'fork']);
    expect(ledger.latestCheckpoint()).toBe(before);
  });

  it('refuses to sign when a stored node of the previously checkpointed tree was corrupted', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const { ledger } = buildLedger(store, a);
    expect(ledger.treeSize).toBe(23);
    const before = ledger.signCheckpoint();
    applyNext(ledger, [commitTx(a), commitTx(a)]);
    // Leaf node 22 is not on the path of the new root (size 25) but is needed to prove size 23 → 25.
    const changed = store.db.prepare('UPDATE merkle_node SET hash = ? WHERE level = 0 AND idx = 22').run(randomBytes(32)).changes;
    expect(changed).toBe(1);
    expectHlError(() => ledger.signCheckpoint(), ['integrity', 'fork']);
    expect(ledger.latestCheckpoint()).toBe(before);
  });

  it('refuses to sign when the latest stored checkpoint has another root for the same size', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const { ledger } = buildLedger(store, a);
    const size = ledger.treeSize;
    ledger.signCheckpoint();
    const forged = forgeCheckpoint(a, size, randomBytes(32));
    // The forgery is a well-formed checkpoint under this node's key.
    expect(verifyCheckpoint(forged, [ledger.verifierKey()]).treeSize).toBe(BigInt(size));
    store.putCheckpoint(size, forged);
    expectHlError(() => ledger.signCheckpoint(), 'fork');
    expect(ledger.latestCheckpoint()).toBe(forged);
  });

  it('refuses to sign a larger checkpoint inconsistent with the latest stored one', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const { ledger } = buildLedger(store, a);
    const size = ledger.treeSize;
    store.putCheckpoint(size, forgeCheckpoint(a, size, randomBytes(32)));
    applyNext(ledger, [commitTx(a), commitTx(a), commitTx(a)]);
    expectHlError(() => ledger.signCheckpoint(), 'fork');
    expect(store.latestCheckpoint()?.treeSize).toBe(size);
  });

  it('refuses to sign when the latest stored checkpoint is ahead of the tree', () => {
    const a = makeOrg('org-a');
    const store = openStore();
    const { ledger } = buildLedger(store, a);
    store.putCheckpoint(ledger.treeSize + 5, forgeCheckpoint(a, ledger.treeSize + 5, randomBytes(32)));
    expectHlError(() => ledger.signCheckpoint(), 'fork');
  });
});

describe('Ledger restart', () => {
  it('restores height, tree size, root, membership and replay protection when reopened on the same file', () => {
    const a = makeOrg('org-a');
    const b = makeOrg('org-b');
    const c = makeOrg('org-c');
    const file = join(dir, 'ledger.db');
    const store1 = openStore(file);
    const ledger1 = openLedger(store1, a, blockTime(6));
    applyNext(ledger1, [genesisTx(a, [a, b])]);
    applyNext(ledger1, [governanceTx('org.join', { org: descriptor(c) }, c, [a, b])]);
    const old = commitTx(a);
    applyNext(ledger1, [old, commitTx(b), utf8('junk')]);
    applyNext(ledger1, [governanceTx('org.leave', { orgId: 'org-b' }, a, [a, b, c])]);
    const checkpoint1 = ledger1.signCheckpoint();
    const { height, treeSize, root } = ledger1;
    store1.close();

    const store2 = openStore(file);
    const ledger2 = openLedger(store2, a, blockTime(6));
    expect(ledger2.height).toBe(height);
    expect(ledger2.treeSize).toBe(treeSize);
    expect(ledger2.root).toBe(root);
    expect(ledger2.origin).toBe(origin);
    expect([...ledger2.state.members.keys()].sort()).toEqual(['org-a', 'org-c']);
    expect(ledger2.latestCheckpoint()).toBe(checkpoint1);

    // Behaviour after restart follows the rebuilt state.
    expectHlError(() => ledger2.precheck(old.bytes), 'conflict', /duplicate tx/);
    const r = applyNext(ledger2, [old, commitTx(b), commitTx(c)]);
    expect(r.map((x) => x.valid)).toEqual([false, false, true]);
    expect(r[0]!.error).toMatch(/duplicate tx \(replay\)/);
    expect(r[1]!.error).toMatch(/signer is not a current member key/);
    expect(r[2]!.leafIndex).toBe(treeSize);
    expect(store2.block(height + 1)!.header.prevHash).toBe(store2.block(height)!.hash);

    // The checkpoint after restart extends the one signed before it.
    const cp1 = verifyCheckpoint(checkpoint1, [ledger2.verifierKey()]);
    const cp2 = verifyCheckpoint(ledger2.signCheckpoint(), [ledger2.verifierKey()]);
    expect(cp2.treeSize).toBe(BigInt(treeSize + 1));
    const proof = ledger2.consistencyProof(treeSize, treeSize + 1);
    expect(() => verifyConsistency(cp1.treeSize, cp2.treeSize, cp1.rootHash, cp2.rootHash, proof)).not.toThrow();
  });

  it('refuses to open on a store whose Merkle nodes no longer give the head root', () => {
    const a = makeOrg('org-a');
    const file = join(dir, 'ledger.db');
    const store1 = openStore(file);
    const ledger1 = openLedger(store1, a);
    applyNext(ledger1, [genesisTx(a, [a])]);
    applyNext(ledger1, [commitTx(a), commitTx(a)]); // size 3: root reads leaf node 2
    store1.db.prepare('UPDATE merkle_node SET hash = ? WHERE level = 0 AND idx = 2').run(randomBytes(32));
    store1.close();
    const store2 = openStore(file);
    expectHlError(() => openLedger(store2, a), 'integrity');
  });
});

describe('Ledger tiles', () => {
  const a = makeOrg('org-a');
  let store: SqliteLedgerStore;
  let ledger: Ledger;
  let leaves: Uint8Array[];

  beforeEach(() => {
    store = openStore();
    ledger = openLedger(store, a);
    const genesis = genesisTx(a, [a]);
    applyNext(ledger, [genesis]);
    leaves = [genesis.bytes];
    for (const n of [250, 200, 149]) {
      const txs = Array.from({ length: n }, () => commitTx(a));
      applyNext(ledger, txs);
      leaves.push(...txs.map((t) => t.bytes));
    }
    expect(ledger.treeSize).toBe(600);
  });

  const leafHashesOf = (from: number, to: number): Uint8Array[] => leaves.slice(from, to).map(refLeaf);
  const concat = (parts: Uint8Array[]): string => parts.map(toHex).join('');

  it('serves the full level-0 tile as the 256 leaf hashes', () => {
    const tile = readTile(store, 600, 0, 0, 256);
    expect(tile.length).toBe(256 * 32);
    expect(toHex(tile)).toBe(concat(leafHashesOf(0, 256)));
    expect(toHex(readTile(store, 600, 0, 1, 256))).toBe(concat(leafHashesOf(256, 512)));
  });

  it('serves the partial level-0 tile of the last 88 leaves', () => {
    const tile = readTile(store, 600, 0, 2, 88);
    expect(tile.length).toBe(88 * 32);
    expect(toHex(tile)).toBe(concat(leafHashesOf(512, 600)));
  });

  it('serves a smaller partial tile as a prefix of the larger one (older tree sizes)', () => {
    expect(toHex(readTile(store, 540, 0, 2, 28))).toBe(concat(leafHashesOf(512, 540)));
  });

  it('serves the level-1 tile as the level-8 subtree hashes', () => {
    const tile = readTile(store, 600, 1, 0, 2);
    expect(tile.length).toBe(64);
    expect(toHex(tile)).toBe(toHex(refRoot(leaves.slice(0, 256))) + toHex(refRoot(leaves.slice(256, 512))));
  });

  it('reports not-found for tiles beyond the tree', () => {
    expectHlError(() => readTile(store, 600, 0, 2, 89), 'not-found');
    expectHlError(() => readTile(store, 600, 0, 2, 256), 'not-found');
    expectHlError(() => readTile(store, 600, 0, 3, 1), 'not-found');
    expectHlError(() => readTile(store, 600, 1, 0, 3), 'not-found');
    expectHlError(() => readTile(store, 600, 2, 0, 1), 'not-found');
    // Leaves that exist in storage but not in the requested (older) tree are not served.
    expectHlError(() => readTile(store, 300, 0, 1, 88), 'not-found');
    expectHlError(() => entryBundle(store, 600, 2, 89), 'not-found');
    expectHlError(() => entryBundle(store, 600, 3, 1), 'not-found');
  });

  it('serves entry bundles that decode (uint16 BE length + bytes) to the stored entries', () => {
    const decode = (bundle: Uint8Array): Uint8Array[] => {
      const out: Uint8Array[] = [];
      let off = 0;
      while (off < bundle.length) {
        const len = (bundle[off]! << 8) | bundle[off + 1]!;
        off += 2;
        expect(off + len).toBeLessThanOrEqual(bundle.length);
        out.push(bundle.slice(off, off + len));
        off += len;
      }
      return out;
    };
    const full = decode(entryBundle(store, 600, 0, 256));
    expect(full.map(toHex)).toEqual(leaves.slice(0, 256).map(toHex));
    const partial = decode(entryBundle(store, 600, 2, 88));
    expect(partial.map(toHex)).toEqual(leaves.slice(512, 600).map(toHex));
    expect(partial.map(toHex)).toEqual(store.entries(512, 88).map(toHex));
  });

  it('lets a client recompute the ledger root from the level-0 tiles alone', () => {
    const tiles = [readTile(store, 600, 0, 0, 256), readTile(store, 600, 0, 1, 256), readTile(store, 600, 0, 2, 88)];
    const hashes: Uint8Array[] = [];
    for (const t of tiles) for (let off = 0; off < t.length; off += 32) hashes.push(t.slice(off, off + 32));
    expect(hashes).toHaveLength(600);
    expect(toHex(refRootOfHashes(hashes))).toBe(ledger.root);
    expect(toHex(refRootOfHashes(hashes))).toBe(toHex(ledger.rootAt(600)));
    // And an older root from a prefix.
    expect(toHex(refRootOfHashes(hashes.slice(0, 451)))).toBe(toHex(ledger.rootAt(451)));
  });

  it('parses tile paths (c2sp.org/tlog-tiles)', () => {
    expect(parseTilePath('tile/0/x001/234')).toEqual({ kind: 'hashes', level: 0, index: 1234, width: 256 });
    expect(parseTilePath('1/005.p/17')).toEqual({ kind: 'hashes', level: 1, index: 5, width: 17 });
    expect(parseTilePath('entries/000')).toEqual({ kind: 'entries', index: 0, width: 256 });
    expect(parseTilePath('tile/entries/x001/x234/067.p/255')).toEqual({ kind: 'entries', index: 1234067, width: 255 });
    expect(parseTilePath('63/000')).toEqual({ kind: 'hashes', level: 63, index: 0, width: 256 });
  });

  it.each(['0/1234', '0/005.p/0', '64/000', '0/abc', '0/005.p/256', '0/x001', '0/1/2', '00/000', '0/', 'entries/', '0/005.p/017'])(
    'rejects the malformed tile path %j',
    (path) => {
      expectHlError(() => parseTilePath(path), 'invalid');
    },
  );

  it('formats tile indexes in x-prefixed groups of three digits and parses them back', () => {
    expect(formatTileIndex(1234067)).toBe('x001/x234/067');
    expect(formatTileIndex(0)).toBe('000');
    expect(formatTileIndex(999)).toBe('999');
    expect(formatTileIndex(1000)).toBe('x001/000');
    for (const n of [0, 7, 999, 1000, 1234067, 2 ** 40 + 3]) {
      expect(parseTilePath(`0/${formatTileIndex(n)}`)).toEqual({ kind: 'hashes', level: 0, index: n, width: 256 });
    }
  });
});
