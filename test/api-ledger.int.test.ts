/**
 * The ledger over real HTTP, checked as an outside auditor would: fetch the members' keys and the
 * checkpoint, verify it, then verify inclusion and consistency proofs and the tiles against it with the
 * public verifier alone. Bad requests get 4xx OperationOutcomes; /fhir needs a token from this node.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initNode, issueAdminToken, startNode, type RunningNode } from '../src/node.js';
import { TxType, signTx } from '../src/ledger/index.js';
import { leafHash, nodeHash, verifyCheckpoint, verifyConsistency, verifyInclusion } from '../src/ledger/verify.js';
import { issueToken } from '../src/auth/index.js';
import { generateEd25519KeyPair } from '../src/crypto/index.js';
import { commitBody, runCli, tempDir } from './helpers.js';

const work = tempDir('hl-api-');
let running: RunningNode;
let firstCheckpointSize = 0;
const b64 = (s: string) => Uint8Array.from(Buffer.from(s, 'base64'));

beforeAll(async () => {
  await initNode({ org: 'Riverside Hospital', dataDir: work.path });
  running = await startNode({ dataDir: work.path, port: 0 });
  firstCheckpointSize = running.node.ledger.treeSize;
  const { node } = running;
  for (let b = 0; b < 5; b++) {
    const txs = Array.from({ length: 60 }, (_, i) =>
      signTx({ type: TxType.recordCommit, body: commitBody(b * 100 + i), signer: { kind: 'org', id: node.config.orgId, keyId: node.keyPair.keyId } }, node.keyPair.privateKey).bytes,
    );
    await node.submit(txs);
  }
});

afterAll(async () => {
  await running.close();
  work.cleanup();
});

async function get(path: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${running.url}${path}`, { headers });
  const type = res.headers.get('content-type') ?? '';
  const body = type.includes('json') ? await res.json() : type.includes('octet-stream') ? new Uint8Array(await res.arrayBuffer()) : await res.text();
  return { status: res.status, type, body: body as any, headers: res.headers };
}

async function verifiedCheckpoint() {
  const members = await get('/ledger/members');
  const note = await get('/ledger/checkpoint');
  expect(note.type).toMatch(/^text\/plain/);
  return verifyCheckpoint(note.body, members.body.members.map((m: { verifierKey: string }) => m.verifierKey));
}

describe('/ledger as an outsider sees it', () => {
  it('serves a checkpoint signed by a member key listed at /ledger/members', async () => {
    const cp = await verifiedCheckpoint();
    expect(cp.signers).toEqual(['riverside-hospital']);
    expect(cp.treeSize).toBe(301n);
    expect(cp.origin).toBe(running.node.ledger.origin);
  });

  it('serves inclusion proofs that verify against that checkpoint, for every entry', async () => {
    const cp = await verifiedCheckpoint();
    for (let i = 0; i < Number(cp.treeSize); i += 7) {
      const r = await get(`/ledger/proof/inclusion?leafIndex=${i}`);
      expect(r.status).toBe(200);
      verifyInclusion(BigInt(i), cp.treeSize, leafHash(b64(r.body.leaf)), r.body.proof.map(b64), cp.rootHash);
    }
  });

  it('serves a consistency proof from an older tree size to the checkpoint', async () => {
    const cp = await verifiedCheckpoint();
    const old = running.node.ledger.rootAt(firstCheckpointSize);
    const r = await get(`/ledger/proof/consistency?size1=${firstCheckpointSize}`);
    verifyConsistency(BigInt(firstCheckpointSize), cp.treeSize, old, cp.rootHash, r.body.proof.map(b64));
  });

  it('serves C2SP tiles and entry bundles from which the checkpoint root is recomputed', async () => {
    const cp = await verifiedCheckpoint();
    const size = Number(cp.treeSize); // 301 = one full tile of 256 + a partial tile of 45
    const full = await get('/ledger/tile/0/000');
    const partial = await get('/ledger/tile/0/001.p/45');
    expect(full.headers.get('cache-control')).toMatch(/immutable/);
    const hashes = [...Array.from({ length: 256 }, (_, i) => full.body.subarray(i * 32, i * 32 + 32)), ...Array.from({ length: 45 }, (_, i) => partial.body.subarray(i * 32, i * 32 + 32))];
    expect(hashes).toHaveLength(size);
    // entries in the bundle hash to the tile's leaf hashes
    const bundle: Uint8Array = (await get('/ledger/tile/entries/001.p/45')).body;
    let off = 0;
    for (let i = 0; i < 45; i++) {
      const len = (bundle[off]! << 8) | bundle[off + 1]!;
      expect(Buffer.from(leafHash(bundle.subarray(off + 2, off + 2 + len)))).toEqual(Buffer.from(hashes[256 + i]!));
      off += 2 + len;
    }
    expect(off).toBe(bundle.length);
    const mth = (hs: Uint8Array[]): Uint8Array => {
      if (hs.length === 1) return hs[0]!;
      let k = 1;
      while (k * 2 < hs.length) k *= 2;
      return nodeHash(mth(hs.slice(0, k)), mth(hs.slice(k)));
    };
    expect(Buffer.from(mth(hashes))).toEqual(Buffer.from(cp.rootHash));
  });

  it('serves blocks with their txs and validity flags', async () => {
    const r = await get('/ledger/blocks/1');
    expect(r.status).toBe(200);
    expect(r.body.header.height).toBe(1);
    expect(r.body.txs[0]).toMatchObject({ position: 0, valid: true, leafIndex: 1, tx: { type: 'record.commit' } });
    const entries = await get('/ledger/entries?start=299&count=10');
    expect(entries.body.entries.map((e: { leafIndex: number }) => e.leafIndex)).toEqual([299, 300]);
  });
});

describe('/ledger given bad requests', () => {
  it.each([
    ['/ledger/proof/inclusion?leafIndex=-1', 400, /leafIndex/],
    ['/ledger/proof/inclusion?leafIndex=1e3', 400, /leafIndex/],
    ['/ledger/proof/inclusion?leafIndex=999', 400, /not below treeSize/],
    ['/ledger/proof/inclusion', 400, /"leafIndex" is required/],
    ['/ledger/proof/inclusion?leafIndex=0&treeSize=99999', 404, /beyond the ledger/],
    ['/ledger/proof/consistency?size1=0', 400, /no consistency proof/],
    ['/ledger/blocks/abc', 400, /height/],
    ['/ledger/blocks/999', 404, /no block 999/],
    ['/ledger/tile/0/9999', 400, /tile index/],
    ['/ledger/tile/0/005', 404, /no such tile/],
    ['/ledger/tile/70/000', 400, /tile level/],
    ['/nope', 404, /no route/],
  ])('GET %s → %i OperationOutcome', async (path, status, message) => {
    const r = await get(path);
    expect(r.status).toBe(status);
    expect(r.body.resourceType).toBe('OperationOutcome');
    expect(r.body.issue[0].diagnostics).toMatch(message);
  });
});

describe('/fhir access', () => {
  it('answers 401 with an OperationOutcome and WWW-Authenticate without a token', async () => {
    const r = await get('/fhir/Patient');
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(r.body.issue[0]).toMatchObject({ code: 'login' });
  });

  it.each([
    ['garbage', 'Bearer not.a.jwt', /malformed|not issued/],
    ['a token of another node', 'OTHER', /signature does not verify|not valid here|not issued/],
    ['an expired token', 'EXPIRED', /expired/],
  ])('answers 401 for %s', async (_name, header, message) => {
    let value = header;
    if (header === 'OTHER') {
      const other = generateEd25519KeyPair();
      value = `Bearer ${await issueToken({ orgId: 'riverside-hospital', privateKey: other.privateKey, keyId: other.keyId, ttlSeconds: 60, nowMs: Date.now() }, { sub: 'x', scope: 'user/*.cruds' })}`;
    }
    if (header === 'EXPIRED') {
      const { keyPair } = running.node;
      value = `Bearer ${await issueToken({ orgId: 'riverside-hospital', privateKey: keyPair.privateKey, keyId: keyPair.keyId, ttlSeconds: 60, nowMs: Date.now() - 3_600_000 }, { sub: 'x', scope: 'user/*.cruds' })}`;
    }
    const r = await get('/fhir/Patient', { authorization: value });
    expect(r.status).toBe(401);
    expect(r.body.issue[0].diagnostics).toMatch(message);
  });

  it('lets a token from `healthledger token` through the door', async () => {
    const token = runCli(['token', '--data', work.path]).stdout.trim();
    expect(token).toBe(token.split('\n')[0]);
    const r = await get('/fhir/Patient', { authorization: `Bearer ${token}` });
    expect(r.status).not.toBe(401);
    expect(await issueAdminToken({ dataDir: work.path })).toMatch(/^ey/);
  });

  it('refuses a token with an unknown scope in one line, exit 2', () => {
    const r = runCli(['token', '--data', work.path, '--scope', 'root/everything']);
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe('healthledger: unknown scope "root/everything"');
  });
});
