import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sha256 } from '../../crypto/index.js';
import { consistency, mth, path as refPath } from '../../../test/reference-tree.js';
import {
  MerkleFrontier,
  consistencyProof,
  createRfc9162Hasher,
  inclusionProof,
  rootHash,
  verifyConsistencyWith,
  verifyInclusionWith,
  type NodeReader,
} from './index.js';

const h = createRfc9162Hasher(sha256);
const vectorsDir = join(import.meta.dirname, '../../../test/vectors/merkle');
const vectors = JSON.parse(readFileSync(join(vectorsDir, 'rfc6962-vectors.json'), 'utf8'));
const hex = (s: string) => Uint8Array.from(Buffer.from(s, 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** Builds a tree with the frontier and keeps every completed node, as storage does. */
function buildTree(leaves: Uint8Array[]): NodeReader & { frontier: MerkleFrontier; nodes: Map<string, Uint8Array> } {
  const frontier = new MerkleFrontier(h);
  const nodes = new Map<string, Uint8Array>();
  for (const leaf of leaves) for (const n of frontier.append(h.hashLeaf(leaf))) nodes.set(`${n.level}/${n.index}`, n.hash);
  return {
    frontier,
    nodes,
    node(level, index) {
      const v = nodes.get(`${level}/${index}`);
      if (!v) throw new Error(`missing node ${level}/${index}`);
      return v;
    },
  };
}

describe('RFC 9162 hasher', () => {
  it('matches the RFC 6962 hasher vectors', () => {
    for (const v of vectors.hasher_vectors) {
      if (v.operation === 'empty_root') expect(toHex(h.emptyRoot())).toBe(v.want_hex);
      if (v.operation === 'hash_leaf') expect(toHex(h.hashLeaf(hex(v.input_hex)))).toBe(v.want_hex);
      if (v.operation === 'hash_children') expect(toHex(h.hashChildren(hex(v.left_hex), hex(v.right_hex)))).toBe(v.want_hex);
    }
  });
});

describe('Merkle tree over the RFC 6962 8-leaf vectors', () => {
  const leaves: Uint8Array[] = vectors.tree.leaf_inputs_hex.map(hex);

  it('computes every root for sizes 0..8, incrementally and from stored nodes', () => {
    const tree = buildTree(leaves);
    vectors.tree.roots_by_size_hex.forEach((want: string, size: number) => {
      expect(toHex(rootHash(h, tree, size))).toBe(want);
      expect(toHex(buildTree(leaves.slice(0, size)).frontier.root())).toBe(want);
    });
  });

  it('stores the vector node hashes at every level', () => {
    const tree = buildTree(leaves);
    vectors.tree.node_hashes_by_level_hex.forEach((level: string[], l: number) => {
      level.forEach((want, i) => expect(toHex(tree.node(l, i))).toBe(want));
    });
  });

  it('builds and verifies the vector inclusion proofs', () => {
    for (const p of vectors.inclusion_proofs) {
      const tree = buildTree(leaves.slice(0, p.tree_size));
      const proof = inclusionProof(h, tree, p.leaf_index, p.tree_size);
      expect(proof.map(toHex)).toEqual(p.proof_hex ?? p.path_hex ?? p.proof);
      const root = hex(vectors.tree.roots_by_size_hex[p.tree_size]);
      verifyInclusionWith(h, BigInt(p.leaf_index), BigInt(p.tree_size), h.hashLeaf(leaves[p.leaf_index]!), proof, root);
    }
  });

  it('builds and verifies the vector consistency proofs', () => {
    for (const p of vectors.consistency_proofs) {
      const tree = buildTree(leaves.slice(0, p.size2));
      const proof = consistencyProof(h, tree, p.size1, p.size2);
      expect(proof.map(toHex)).toEqual(p.proof_hex ?? p.proof);
      verifyConsistencyWith(
        h,
        BigInt(p.size1),
        BigInt(p.size2),
        hex(vectors.tree.roots_by_size_hex[p.size1]),
        hex(vectors.tree.roots_by_size_hex[p.size2]),
        proof,
      );
    }
  });
});

describe('agreement with a naive reference tree', () => {
  it('roots, inclusion and consistency proofs match the spec definitions on random trees', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 12 }), { minLength: 1, maxLength: 70 }),
        fc.nat(),
        fc.nat(),
        (leaves, a, b) => {
          const n = leaves.length;
          const tree = buildTree(leaves);
          expect(toHex(tree.frontier.root())).toBe(toHex(mth(leaves)));
          expect(toHex(rootHash(h, tree, n))).toBe(toHex(mth(leaves)));
          const m = a % n;
          const proof = inclusionProof(h, tree, m, n);
          expect(proof.map(toHex)).toEqual(refPath(m, leaves).map(toHex));
          verifyInclusionWith(h, BigInt(m), BigInt(n), h.hashLeaf(leaves[m]!), proof, mth(leaves));
          const s1 = (b % n) + 1;
          const cproof = consistencyProof(h, tree, s1, n);
          expect(cproof.map(toHex)).toEqual(consistency(s1, leaves).map(toHex));
          verifyConsistencyWith(h, BigInt(s1), BigInt(n), mth(leaves.slice(0, s1)), mth(leaves), cproof);
          // the frontier restored from stored nodes continues identically
          const restored = new MerkleFrontier(h, n, (l, i) => tree.node(l, i));
          expect(toHex(restored.root())).toBe(toHex(mth(leaves)));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('rejects every proof with one flipped bit', () => {
    const leaves = Array.from({ length: 23 }, (_, i) => Uint8Array.of(i));
    const tree = buildTree(leaves);
    const root = mth(leaves);
    for (let m = 0; m < 23; m++) {
      const proof = inclusionProof(h, tree, m, 23);
      for (let j = 0; j < proof.length; j++) {
        const bad = proof.map((p) => p.slice());
        bad[j]![m % 32]! ^= 1;
        expect(() => verifyInclusionWith(h, BigInt(m), 23n, h.hashLeaf(leaves[m]!), bad, root)).toThrow(/root/);
      }
    }
  });
});

describe('transparency-dev/merkle probe files', () => {
  const b64 = (s: string) => Uint8Array.from(Buffer.from(s, 'base64'));
  // The probes encode hashes as base64; "WrongLeaf" and similar decode to non-32-byte values.
  for (const kind of ['inclusion/1', 'consistency/2']) {
    const dir = join(vectorsDir, 'transparency-dev-merkle-testdata', kind);
    for (const file of readdirSync(dir)) {
      const probe = JSON.parse(readFileSync(join(dir, file), 'utf8'));
      it(`${kind}/${file}: ${probe.wantErr ? 'rejects' : 'accepts'} (${probe.desc})`, () => {
        const run = () =>
          kind.startsWith('inclusion')
            ? verifyInclusionWith(h, BigInt(probe.leafIdx), BigInt(probe.treeSize), b64(probe.leafHash ?? ''), (probe.proof ?? []).map(b64), b64(probe.root ?? ''))
            : verifyConsistencyWith(h, BigInt(probe.size1), BigInt(probe.size2), b64(probe.root1 ?? ''), b64(probe.root2 ?? ''), (probe.proof ?? []).map(b64));
        if (probe.wantErr) expect(run).toThrow();
        else expect(run).not.toThrow();
      });
    }
  }
});
