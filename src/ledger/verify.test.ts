import {
  createHash,
  createPrivateKey,
  createPublicKey,
  sign as nodeSign,
  verify as nodeVerify,
  type KeyObject,
} from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { mth, path as refPath, consistency as refConsistency, refLeafHash, refNodeHash } from '../../test/reference-tree.js';
import { parseImports, resolveRelative, stripComments } from '../../test/import-scanner.js';
import { HlError, concatBytes, toBase64, toHex, uint64BE, utf8 } from '../kernel/index.js';
import { generateEd25519KeyPair, rawPublicKey, sha256, signEd25519 } from '../crypto/index.js';
import {
  SignatureType,
  formatCheckpoint,
  formatSignedNote,
  formatVerifierKey,
  parseSignedNote,
  signCosignature,
  signNoteSignature,
  verifyNote,
  type Checkpoint,
  type NoteSignature,
} from './note.js';
import {
  ProofVerificationError,
  RootMismatchError,
  leafHash,
  nodeHash,
  parseVerifierKeyString,
  rootFromInclusionProof,
  verifyCheckpoint,
  verifyConsistency,
  verifyInclusion,
  type NoteVerifierKey,
} from './verify.js';

const vectorsDir = join(import.meta.dirname, '../../test/vectors/merkle');
const hexToBytes = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));
const b64 = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'base64'));

/** Runs `fn`, expects a ProofVerificationError (optionally of one failure kind) and returns it. */
function proofErrorOf(fn: () => unknown, failure?: string): ProofVerificationError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ProofVerificationError);
    expect(err).toBeInstanceOf(HlError);
    const e = err as ProofVerificationError;
    expect(e.code).toBe('proof-invalid');
    if (failure !== undefined) expect(e.failure, e.message).toBe(failure);
    return e;
  }
  throw new Error('expected a ProofVerificationError, nothing was thrown');
}

function flipBit(bytes: Uint8Array, byte = 0, bit = 0): Uint8Array {
  const out = Uint8Array.from(bytes); // a copy (Buffer#slice would be a view)
  out[byte % out.length]! ^= 1 << bit;
  return out;
}

interface Rfc6962Vectors {
  hasher_vectors: { operation: string; input_hex?: string; left_hex?: string; right_hex?: string; want_hex: string }[];
  tree: { leaf_inputs_hex: string[]; roots_by_size_hex: string[] };
  inclusion_proofs: { leaf_index: number; tree_size: number; proof_hex?: string[]; path_hex?: string[] }[];
  consistency_proofs: { size1: number; size2: number; proof_hex: string[] }[];
}
const vectors = JSON.parse(readFileSync(join(vectorsDir, 'rfc6962-vectors.json'), 'utf8')) as Rfc6962Vectors;

describe('leafHash / nodeHash (RFC 9162 §2.1.1)', () => {
  it('match the RFC 6962 hasher vectors', () => {
    let checked = 0;
    for (const v of vectors.hasher_vectors) {
      if (v.operation === 'hash_leaf') {
        expect(toHex(leafHash(hexToBytes(v.input_hex!)))).toBe(v.want_hex);
        checked++;
      }
      if (v.operation === 'hash_children') {
        expect(toHex(nodeHash(hexToBytes(v.left_hex!), hexToBytes(v.right_hex!)))).toBe(v.want_hex);
        checked++;
      }
    }
    expect(checked).toBeGreaterThanOrEqual(3);
  });

  it('are domain-separated: a leaf never hashes like a node of the same bytes', () => {
    const l = leafHash(utf8('a'));
    const r = leafHash(utf8('b'));
    expect(toHex(nodeHash(l, r))).toBe(toHex(refNodeHash(l, r)));
    expect(toHex(leafHash(concatBytes(l, r)))).not.toBe(toHex(nodeHash(l, r)));
  });
});

describe('RFC 6962 vectors through the public verifier', () => {
  const roots = vectors.tree.roots_by_size_hex.map(hexToBytes);
  const leaves = vectors.tree.leaf_inputs_hex.map(hexToBytes);

  it('verifies every vector inclusion proof and computes its root', () => {
    expect(vectors.inclusion_proofs.length).toBeGreaterThan(0);
    for (const p of vectors.inclusion_proofs) {
      const proof = (p.proof_hex ?? p.path_hex ?? []).map(hexToBytes);
      const leaf = leafHash(leaves[p.leaf_index]!);
      expect(toHex(rootFromInclusionProof(BigInt(p.leaf_index), BigInt(p.tree_size), leaf, proof))).toBe(
        toHex(roots[p.tree_size]!),
      );
      verifyInclusion(BigInt(p.leaf_index), BigInt(p.tree_size), leaf, proof, roots[p.tree_size]!);
    }
  });

  it('verifies every vector consistency proof', () => {
    expect(vectors.consistency_proofs.length).toBeGreaterThan(0);
    for (const p of vectors.consistency_proofs) {
      verifyConsistency(BigInt(p.size1), BigInt(p.size2), roots[p.size1]!, roots[p.size2]!, p.proof_hex.map(hexToBytes));
    }
  });
});

describe('transparency-dev/merkle probe files', () => {
  /** Why each probe must fail (the happy path must not). */
  const expectedFailure: Record<string, string> = {
    'inclusion/1/empty-root.json': 'root-mismatch',
    'inclusion/1/inserted-component.json': 'proof-length',
    'inclusion/1/leafIdx-XOR-@2.json': 'root-mismatch',
    'inclusion/1/leafIdx-plus-@1.json': 'root-mismatch',
    'inclusion/1/leafIdx-sub-@1.json': 'index-out-of-range',
    'inclusion/1/modified-proof[0]-bit-@3.json': 'root-mismatch',
    'inclusion/1/modified-proof[1]-bit-@3.json': 'root-mismatch',
    'inclusion/1/modified-proof[2]-bit-@3.json': 'root-mismatch',
    'inclusion/1/preceding-garbage.json': 'hash-length',
    'inclusion/1/preceding-root.json': 'proof-length',
    'inclusion/1/random-root.json': 'root-mismatch',
    'inclusion/1/removed-component.json': 'proof-length',
    'inclusion/1/trailing-garbage.json': 'hash-length',
    'inclusion/1/trailing-root.json': 'proof-length',
    'inclusion/1/treeSize-div-@2.json': 'proof-length',
    'inclusion/1/treeSize-mul-@2.json': 'proof-length',
    'inclusion/1/wrong-leaf.json': 'hash-length',
    'consistency/2/empty-proof.json': 'proof-length',
    'consistency/2/modified-proof@0-bit-@4.json': 'root-mismatch',
    'consistency/2/modified-proof@1-bit-@4.json': 'root-mismatch',
    'consistency/2/modified-proof@2-bit-@4.json': 'root-mismatch',
    'consistency/2/preceding-garbage.json': 'hash-length',
    'consistency/2/preceding-proof-@0.json': 'proof-length',
    'consistency/2/preceding-root1.json': 'proof-length',
    'consistency/2/preceding-root2.json': 'proof-length',
    'consistency/2/size1-XOR-@2.json': 'proof-length',
    'consistency/2/size1-plus-@1.json': 'proof-length',
    'consistency/2/size1-sub-@1.json': 'proof-length',
    'consistency/2/size2-div-@2.json': 'size-order',
    'consistency/2/size2-mul-@2.json': 'proof-length',
    'consistency/2/swapped-roots.json': 'root-mismatch',
    'consistency/2/trailing-garbage.json': 'hash-length',
    'consistency/2/trailing-root1.json': 'proof-length',
    'consistency/2/trailing-root2.json': 'proof-length',
    'consistency/2/truncated-proof.json': 'proof-length',
    'consistency/2/wrong-root1.json': 'hash-length',
    'consistency/2/wrong-root2.json': 'hash-length',
  };

  /** JSON.parse loses uint64 precision (leafIdx-sub-@1 holds 2^64 - 1): read sizes and indexes as exact bigints. */
  function readProbe(file: string): Record<string, unknown> {
    const text = readFileSync(file, 'utf8').replace(/("(?:leafIdx|treeSize|size1|size2)"\s*:\s*)(\d+)/g, '$1"$2"');
    return JSON.parse(text) as Record<string, unknown>;
  }

  const probes: string[] = [];
  for (const kind of ['inclusion/1', 'consistency/2']) {
    for (const file of readdirSync(join(vectorsDir, 'transparency-dev-merkle-testdata', kind))) probes.push(`${kind}/${file}`);
  }

  it('covers every probe file on disk', () => {
    expect(probes.length).toBe(39);
    expect(probes.filter((p) => p.endsWith('happy-path.json'))).toHaveLength(2);
    for (const p of probes) if (!p.endsWith('happy-path.json')) expect(expectedFailure, p).toHaveProperty([p]);
  });

  it.each(probes)('%s', (name) => {
    const probe = readProbe(join(vectorsDir, 'transparency-dev-merkle-testdata', name));
    const str = (k: string): string => (typeof probe[k] === 'string' ? (probe[k] as string) : '');
    const proof = ((probe.proof as string[] | null) ?? []).map(b64);
    const run = name.startsWith('inclusion')
      ? () => verifyInclusion(BigInt(str('leafIdx')), BigInt(str('treeSize')), b64(str('leafHash')), proof, b64(str('root')))
      : () => verifyConsistency(BigInt(str('size1')), BigInt(str('size2')), b64(str('root1')), b64(str('root2')), proof);
    if (probe.wantErr === true) {
      const err = proofErrorOf(run, expectedFailure[name]);
      if (expectedFailure[name] === 'root-mismatch') expect(err).toBeInstanceOf(RootMismatchError);
    } else {
      expect(probe.wantErr).toBe(false);
      expect(run).not.toThrow();
    }
  });
});

describe('typed errors', () => {
  const leaves = Array.from({ length: 7 }, (_, i) => utf8(`leaf ${i}`));
  const root = mth(leaves);
  const proof3 = refPath(3, leaves);
  const leaf3 = leafHash(leaves[3]!);

  it('a wrong root is a RootMismatchError carrying the computed and the expected root', () => {
    const wrong = flipBit(root, 5);
    const err = proofErrorOf(() => verifyInclusion(3n, 7n, leaf3, proof3, wrong), 'root-mismatch');
    expect(err).toBeInstanceOf(RootMismatchError);
    expect(toHex((err as RootMismatchError).computed)).toBe(toHex(root));
    expect(toHex((err as RootMismatchError).expected)).toBe(toHex(wrong));
  });

  it('a wrong leaf is a RootMismatchError', () => {
    expect(proofErrorOf(() => verifyInclusion(3n, 7n, leafHash(utf8('other')), proof3, root))).toBeInstanceOf(RootMismatchError);
  });

  it.each([
    [7n, 7n],
    [8n, 7n],
    [0n, 0n],
    [2n ** 64n - 1n, 7n],
  ])('rejects an inclusion proof for index %s >= treeSize %s as index-out-of-range', (index, size) => {
    proofErrorOf(() => verifyInclusion(index, size, leaf3, proof3, root), 'index-out-of-range');
    proofErrorOf(() => rootFromInclusionProof(index, size, leaf3, proof3), 'index-out-of-range');
  });

  it('rejects garbage appended to or a hash removed from a proof as proof-length', () => {
    proofErrorOf(() => verifyInclusion(3n, 7n, leaf3, [...proof3, sha256(utf8('garbage'))], root), 'proof-length');
    proofErrorOf(() => verifyInclusion(3n, 7n, leaf3, [sha256(utf8('garbage')), ...proof3], root), 'proof-length');
    proofErrorOf(() => verifyInclusion(3n, 7n, leaf3, proof3.slice(0, -1), root), 'proof-length');
    const c = refConsistency(3, leaves);
    proofErrorOf(() => verifyConsistency(3n, 7n, mth(leaves.slice(0, 3)), root, [...c, root]), 'proof-length');
  });

  it('rejects hashes that are not 32 bytes as hash-length', () => {
    proofErrorOf(() => verifyInclusion(3n, 7n, leaf3.subarray(0, 31), proof3, root), 'hash-length');
    proofErrorOf(() => verifyInclusion(3n, 7n, leaf3, [...proof3.slice(0, -1), new Uint8Array(33)], root), 'hash-length');
    proofErrorOf(() => verifyInclusion(3n, 7n, leaf3, proof3, new Uint8Array(0)), 'hash-length');
  });

  it('rejects sizes outside uint64 or not bigint as malformed', () => {
    proofErrorOf(() => verifyInclusion(-1n, 7n, leaf3, proof3, root), 'malformed');
    proofErrorOf(() => verifyInclusion(3n, 2n ** 64n, leaf3, proof3, root), 'malformed');
    proofErrorOf(() => verifyInclusion(3 as unknown as bigint, 7n, leaf3, proof3, root), 'malformed');
    proofErrorOf(() => verifyConsistency(1n, 2n ** 64n, root, root, []), 'malformed');
  });

  it('rejects a consistency proof from size 0 as empty-tree', () => {
    proofErrorOf(() => verifyConsistency(0n, 7n, sha256(new Uint8Array(0)), root, []), 'empty-tree');
    proofErrorOf(() => verifyConsistency(0n, 0n, sha256(new Uint8Array(0)), sha256(new Uint8Array(0)), []), 'empty-tree');
  });

  it('rejects size1 > size2 as size-order', () => {
    proofErrorOf(() => verifyConsistency(7n, 3n, root, mth(leaves.slice(0, 3)), []), 'size-order');
  });

  it('for equal sizes demands equal roots and an empty proof', () => {
    expect(() => verifyConsistency(7n, 7n, root, root, [])).not.toThrow();
    expect(proofErrorOf(() => verifyConsistency(7n, 7n, root, flipBit(root), []))).toBeInstanceOf(RootMismatchError);
    proofErrorOf(() => verifyConsistency(7n, 7n, root, root, [root]), 'proof-length');
  });

  it('rejects an empty consistency proof between different sizes', () => {
    proofErrorOf(() => verifyConsistency(3n, 7n, mth(leaves.slice(0, 3)), root, []), 'proof-length');
  });
});

describe('agreement with the naive reference tree (test/reference-tree.ts)', () => {
  it('accepts every inclusion and consistency proof of random trees, and rejects a flipped bit or a wrong index', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 8 }), { minLength: 1, maxLength: 40 }),
        fc.nat(),
        fc.nat(),
        fc.nat({ max: 255 }),
        (leaves, a, b, bit) => {
          const n = leaves.length;
          const root = mth(leaves);
          const m = a % n;
          const proof = refPath(m, leaves);
          const leaf = refLeafHash(leaves[m]!);
          expect(toHex(leafHash(leaves[m]!))).toBe(toHex(leaf));
          verifyInclusion(BigInt(m), BigInt(n), leaf, proof, root);
          if (proof.length > 0) {
            const bad: Uint8Array[] = proof.map((p) => Uint8Array.from(p));
            bad[bit % bad.length] = flipBit(bad[bit % bad.length]!, bit, bit % 8);
            proofErrorOf(() => verifyInclusion(BigInt(m), BigInt(n), leaf, bad, root));
            const other = (m + 1 + (b % (n - 1))) % n;
            if (toHex(refLeafHash(leaves[other]!)) !== toHex(leaf) || refPath(other, leaves).length !== proof.length) {
              proofErrorOf(() => verifyInclusion(BigInt(other), BigInt(n), leaf, proof, root));
            }
          }
          const s1 = (b % n) + 1;
          const cproof = refConsistency(s1, leaves);
          const root1 = mth(leaves.slice(0, s1));
          verifyConsistency(BigInt(s1), BigInt(n), root1, root, cproof);
          if (cproof.length > 0) {
            const bad: Uint8Array[] = cproof.map((p) => Uint8Array.from(p));
            bad[bit % bad.length] = flipBit(bad[bit % bad.length]!, bit, bit % 8);
            proofErrorOf(() => verifyConsistency(BigInt(s1), BigInt(n), root1, root, bad));
            proofErrorOf(() => verifyConsistency(BigInt(s1), BigInt(n), flipBit(root1), root, cproof));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

/**
 * RFC 9162 §2.1 trees of any uint64 size, written from the spec's recursive definitions with bigint arithmetic.
 * Perfect subtrees that do not straddle a "cut" (the proven leaf, or the old tree size) get a synthetic hash
 * instead of being computed from 2^k leaves: the verifier cannot tell, since it only combines the hashes it is
 * given, and it keeps every proof O(log² n) to build.
 */
class SyntheticTree {
  constructor(private readonly cuts: readonly bigint[]) {}

  static largestPowerOfTwoBelow(n: bigint): bigint {
    let k = 1n;
    while (k * 2n < n) k *= 2n;
    return k;
  }

  static opaque(start: bigint, size: bigint): Uint8Array {
    return createHash('sha256')
      .update(Buffer.from(`synthetic ${start} ${size}`))
      .digest();
  }

  /** MTH(D[start : start + n]). */
  mth(start: bigint, n: bigint): Uint8Array {
    const perfect = (n & (n - 1n)) === 0n;
    const straddled = this.cuts.some((c) => start < c && c < start + n);
    if (n === 1n || (perfect && !straddled)) return SyntheticTree.opaque(start, n);
    const k = SyntheticTree.largestPowerOfTwoBelow(n);
    return refNodeHash(this.mth(start, k), this.mth(start + k, n - k));
  }

  /** PATH(m, D[start : start + n]) (RFC 9162 §2.1.3.1), `m` absolute. */
  path(m: bigint, start: bigint, n: bigint): Uint8Array[] {
    if (n === 1n) return [];
    const k = SyntheticTree.largestPowerOfTwoBelow(n);
    return m - start < k
      ? [...this.path(m, start, k), this.mth(start + k, n - k)]
      : [...this.path(m, start + k, n - k), this.mth(start, k)];
  }

  /** SUBPROOF(m, D[start : start + n], b) (RFC 9162 §2.1.4.1), `m` relative to `start`. */
  subproof(m: bigint, start: bigint, n: bigint, b: boolean): Uint8Array[] {
    if (m === n) return b ? [] : [this.mth(start, n)];
    const k = SyntheticTree.largestPowerOfTwoBelow(n);
    return m <= k
      ? [...this.subproof(m, start, k, b), this.mth(start + k, n - k)]
      : [...this.subproof(m - k, start + k, n - k, false), this.mth(start, k)];
  }

  static inclusion(m: bigint, n: bigint): { leaf: Uint8Array; proof: Uint8Array[]; root: Uint8Array } {
    const t = new SyntheticTree([m, m + 1n]);
    return { leaf: t.mth(m, 1n), proof: t.path(m, 0n, n), root: t.mth(0n, n) };
  }

  static consistency(size1: bigint, size2: bigint): { root1: Uint8Array; root2: Uint8Array; proof: Uint8Array[] } {
    const t = new SyntheticTree([size1]);
    return { root1: t.mth(0n, size1), root2: t.mth(0n, size2), proof: t.subproof(size1, 0n, size2, true) };
  }
}

describe('trees larger than 2^32 (no 32-bit truncation)', () => {
  it('the synthetic RFC tree agrees with the verifier on small trees too', () => {
    for (let n = 1n; n <= 17n; n++) {
      for (let m = 0n; m < n; m++) {
        const { leaf, proof, root } = SyntheticTree.inclusion(m, n);
        verifyInclusion(m, n, leaf, proof, root);
        const c = SyntheticTree.consistency(m + 1n, n);
        verifyConsistency(m + 1n, n, c.root1, c.root2, c.proof);
      }
    }
  });

  it('verifies leaf 2^40 + 5 in a tree of 2^41 leaves, and not under an index truncated to 32 bits', () => {
    const m = 2n ** 40n + 5n;
    const n = 2n ** 41n;
    const { leaf, proof, root } = SyntheticTree.inclusion(m, n);
    expect(proof).toHaveLength(41);
    expect(toHex(rootFromInclusionProof(m, n, leaf, proof))).toBe(toHex(root));
    verifyInclusion(m, n, leaf, proof, root);
    expect(proofErrorOf(() => verifyInclusion(m & 0xffffffffn, n, leaf, proof, root))).toBeInstanceOf(RootMismatchError);
    expect(proofErrorOf(() => verifyInclusion(m ^ 2n ** 33n, n, leaf, proof, root))).toBeInstanceOf(RootMismatchError);
    expect(proofErrorOf(() => verifyInclusion(m, n, leaf, proof, flipBit(root)))).toBeInstanceOf(RootMismatchError);
    proofErrorOf(() => verifyInclusion(m, n, leaf, proof.slice(1), root), 'proof-length');
    proofErrorOf(() => verifyInclusion(m, n, leaf, [...proof, root], root), 'proof-length');
  });

  it.each([
    [2n ** 40n + 5n, 2n ** 41n + 3n],
    [0n, 2n ** 32n + 1n],
    [2n ** 32n, 2n ** 32n + 1n],
    [2n ** 32n - 1n, 2n ** 32n],
    [0n, 2n ** 64n - 1n],
    [2n ** 63n + 12345n, 2n ** 64n - 1n],
    [2n ** 64n - 2n, 2n ** 64n - 1n],
  ])('verifies inclusion of leaf %s in a tree of size %s', (m, n) => {
    const { leaf, proof, root } = SyntheticTree.inclusion(m, n);
    verifyInclusion(m, n, leaf, proof, root);
    expect(proofErrorOf(() => verifyInclusion(m, n, leaf, proof, flipBit(root, 31, 7)))).toBeInstanceOf(RootMismatchError);
  });

  it('computes proof lengths without truncation: leaf 2^32 of 2^32 + 1 has a one-hash proof, leaf 0 has 33', () => {
    expect(SyntheticTree.inclusion(2n ** 32n, 2n ** 32n + 1n).proof).toHaveLength(1);
    expect(SyntheticTree.inclusion(0n, 2n ** 32n + 1n).proof).toHaveLength(33);
    const dummy = (k: number): Uint8Array[] => Array.from({ length: k }, () => new Uint8Array(32));
    // A shape error is found before any hashing, so any hashes of the right count pass the length check.
    proofErrorOf(() => rootFromInclusionProof(2n ** 32n, 2n ** 32n + 1n, new Uint8Array(32), dummy(0)), 'proof-length');
    expect(() => rootFromInclusionProof(2n ** 32n, 2n ** 32n + 1n, new Uint8Array(32), dummy(1))).not.toThrow();
    proofErrorOf(() => rootFromInclusionProof(0n, 2n ** 32n + 1n, new Uint8Array(32), dummy(32)), 'proof-length');
    expect(() => rootFromInclusionProof(0n, 2n ** 32n + 1n, new Uint8Array(32), dummy(33))).not.toThrow();
    expect(() => rootFromInclusionProof(5n, 2n ** 64n - 1n, new Uint8Array(32), dummy(64))).not.toThrow();
  });

  it.each([
    [2n ** 41n, 2n ** 41n],
    [2n ** 41n + 1n, 2n ** 41n],
    [2n ** 32n, 2n ** 32n],
    [2n ** 64n - 1n, 2n ** 64n - 1n],
  ])('rejects index %s in a tree of size %s as index-out-of-range', (m, n) => {
    proofErrorOf(() => verifyInclusion(m, n, new Uint8Array(32), [], new Uint8Array(32)), 'index-out-of-range');
  });

  it.each([
    [2n ** 40n + 5n, 2n ** 41n + 3n],
    [2n ** 32n, 2n ** 33n + 1n],
    [2n ** 32n + 1n, 2n ** 32n + 2n],
    [1n, 2n ** 64n - 1n],
    [2n ** 63n, 2n ** 64n - 1n],
    [2n ** 64n - 2n, 2n ** 64n - 1n],
  ])('verifies consistency from size %s to %s and rejects a truncated size1', (size1, size2) => {
    const { root1, root2, proof } = SyntheticTree.consistency(size1, size2);
    verifyConsistency(size1, size2, root1, root2, proof);
    expect(proofErrorOf(() => verifyConsistency(size1, size2, flipBit(root1), root2, proof))).toBeInstanceOf(RootMismatchError);
    expect(proofErrorOf(() => verifyConsistency(size1, size2, root1, flipBit(root2), proof))).toBeInstanceOf(RootMismatchError);
    const truncated = size1 & 0xffffffffn;
    if (truncated !== 0n && truncated !== size1) {
      proofErrorOf(() => verifyConsistency(truncated, size2, root1, root2, proof));
    }
  });

  it('agrees with the RFC definitions on random uint64 sizes', () => {
    const size = fc.bigInt({ min: 1n, max: 2n ** 64n - 1n });
    fc.assert(
      fc.property(size, size, fc.nat({ max: 63 }), (x, y, bit) => {
        const [lo, hi] = x <= y ? [x, y] : [y, x];
        const m = lo - 1n;
        const inc = SyntheticTree.inclusion(m, hi);
        verifyInclusion(m, hi, inc.leaf, inc.proof, inc.root);
        if (inc.proof.length > 0) {
          const bad = inc.proof.slice();
          bad[bit % bad.length] = flipBit(bad[bit % bad.length]!, bit);
          proofErrorOf(() => verifyInclusion(m, hi, inc.leaf, bad, inc.root));
        }
        const con = SyntheticTree.consistency(lo, hi);
        verifyConsistency(lo, hi, con.root1, con.root2, con.proof);
        if (con.proof.length > 0) {
          const bad = con.proof.slice();
          bad[bit % bad.length] = flipBit(bad[bit % bad.length]!, bit);
          proofErrorOf(() => verifyConsistency(lo, hi, con.root1, con.root2, bad));
        }
      }),
      { numRuns: 60 },
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Checkpoints: C2SP signed-note, tlog-checkpoint, tlog-cosignature/v1.

interface Party {
  name: string;
  privateKey: KeyObject;
  publicKey: Uint8Array;
  sign: (message: Uint8Array) => Uint8Array;
  /** vkey for note signatures (type 0x01). */
  vkey: string;
  /** vkey for cosignatures (type 0x04). */
  cosignerVkey: string;
}

function newParty(name: string): Party {
  const pair = generateEd25519KeyPair();
  const publicKey = rawPublicKey(pair.publicKey);
  return {
    name,
    privateKey: pair.privateKey,
    publicKey,
    sign: (message) => signEd25519(pair.privateKey, message),
    vkey: formatVerifierKey(sha256, name, SignatureType.ed25519, publicKey),
    cosignerVkey: formatVerifierKey(sha256, name, SignatureType.cosignatureV1, publicKey),
  };
}

const log = newParty('ledger.example/healthledger');
const witness = newParty('org-b.example/witness');
const stranger = newParty('stranger.example/log');

const checkpoint: Checkpoint = {
  origin: 'ledger.example/healthledger',
  treeSize: 20852163n,
  rootHash: sha256(utf8('root')),
  extensions: [],
};
const checkpointText = formatCheckpoint(checkpoint);
const cosignTime = 1679315147n;

function logSignature(text = checkpointText, party = log): NoteSignature {
  return signNoteSignature(sha256, party.name, party.publicKey, party.sign, text);
}
function witnessCosignature(text = checkpointText, timestamp = cosignTime, party = witness): NoteSignature {
  return signCosignature(sha256, party.name, party.publicKey, party.sign, text, timestamp);
}
function signedCheckpoint(...signatures: NoteSignature[]): string {
  return formatSignedNote({ text: checkpointText, signatures });
}

/** The note with one signature line's decoded bytes changed. */
function tamperSignatureLine(note: string, lineIndex: number, byte: number): string {
  const [text, sigs] = [note.slice(0, note.lastIndexOf('\n\n') + 2), note.slice(note.lastIndexOf('\n\n') + 2).split('\n')];
  const line = sigs[lineIndex]!;
  const [dash, name, sig] = line.split(' ') as [string, string, string];
  sigs[lineIndex] = `${dash} ${name} ${toBase64(flipBit(b64(sig), byte))}`;
  return text + sigs.join('\n');
}

/**
 * An independent signed-note implementation written from the C2SP spec text (signed-note, tlog-cosignature),
 * on node:crypto only, to check our code against.
 */
const independent = {
  keyId(name: string, type: number, publicKey: Uint8Array): Buffer {
    // key ID = SHA-256(key name || 0x0A || signature type || public key)[:4]
    return createHash('sha256')
      .update(Buffer.concat([Buffer.from(name, 'utf8'), Buffer.from([0x0a, type]), publicKey]))
      .digest()
      .subarray(0, 4);
  },
  publicKeyObject(raw: Uint8Array): KeyObject {
    // SPKI DER for Ed25519: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING raw }.
    return createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), raw]), format: 'der', type: 'spki' });
  },
  vkey(name: string, type: number, publicKey: Uint8Array): string {
    return `${name}+${independent.keyId(name, type, publicKey).toString('hex')}+${Buffer.concat([Buffer.from([type]), publicKey]).toString('base64')}`;
  },
  cosignedMessage(timestamp: bigint, text: string): Buffer {
    return Buffer.from(`cosignature/v1\ntime ${timestamp}\n${text}`, 'utf8');
  },
  signLine(text: string, name: string, privateKey: KeyObject, publicKey: Uint8Array): string {
    const sig = nodeSign(null, Buffer.from(text, 'utf8'), privateKey);
    return `\u2014 ${name} ${Buffer.concat([independent.keyId(name, 0x01, publicKey), sig]).toString('base64')}\n`;
  },
  cosignLine(text: string, name: string, privateKey: KeyObject, publicKey: Uint8Array, timestamp: bigint): string {
    const ts = Buffer.alloc(8);
    ts.writeBigUInt64BE(timestamp);
    const sig = nodeSign(null, independent.cosignedMessage(timestamp, text), privateKey);
    return `\u2014 ${name} ${Buffer.concat([independent.keyId(name, 0x04, publicKey), ts, sig]).toString('base64')}\n`;
  },
  /** Opens a note: returns the text and what verified; throws if a known key fails or none verifies. */
  open(
    note: string,
    keys: { name: string; type: number; publicKey: Uint8Array }[],
  ): { text: string; verified: { name: string; timestamp?: bigint }[] } {
    if (!note.endsWith('\n')) throw new Error('note must end in a newline');
    const split = note.lastIndexOf('\n\n');
    if (split < 0) throw new Error('no blank line');
    const text = note.slice(0, split + 1);
    const lines = note.slice(split + 2, -1).split('\n');
    const verified: { name: string; timestamp?: bigint }[] = [];
    for (const line of lines) {
      if (!line.startsWith('\u2014 ')) throw new Error(`bad signature line ${line}`);
      const [name, sigB64, extra] = line.slice(2).split(' ');
      if (name === undefined || sigB64 === undefined || extra !== undefined) throw new Error('bad signature line');
      const raw = Buffer.from(sigB64, 'base64');
      if (raw.toString('base64') !== sigB64) throw new Error('bad base64');
      const key = keys.find((k) => k.name === name && independent.keyId(k.name, k.type, k.publicKey).equals(raw.subarray(0, 4)));
      if (!key) continue;
      const pub = independent.publicKeyObject(key.publicKey);
      if (key.type === 0x01) {
        if (!nodeVerify(null, Buffer.from(text, 'utf8'), pub, raw.subarray(4))) throw new Error(`bad signature by ${name}`);
        verified.push({ name });
      } else {
        const timestamp = raw.readBigUInt64BE(4);
        if (!nodeVerify(null, independent.cosignedMessage(timestamp, text), pub, raw.subarray(12))) {
          throw new Error(`bad cosignature by ${name}`);
        }
        verified.push({ name, timestamp });
      }
    }
    if (verified.length === 0) throw new Error('no known key verified');
    return { text, verified };
  },
};

describe('verifyCheckpoint', () => {
  it('verifies a checkpoint signed by the log and cosigned by a witness', () => {
    const note = signedCheckpoint(logSignature(), witnessCosignature());
    const cp = verifyCheckpoint(note, [log.vkey, witness.cosignerVkey]);
    expect(cp.origin).toBe(checkpoint.origin);
    expect(cp.treeSize).toBe(20852163n);
    expect(toHex(cp.rootHash)).toBe(toHex(checkpoint.rootHash));
    expect(cp.extensions).toEqual([]);
    expect(cp.signers).toEqual([log.name]);
    expect(cp.cosigners).toEqual([{ name: witness.name, timestamp: cosignTime }]);
  });

  it('accepts parsed verifier keys as well as vkey strings', () => {
    const note = signedCheckpoint(logSignature());
    expect(verifyCheckpoint(note, [parseVerifierKeyString(log.vkey)]).signers).toEqual([log.name]);
  });

  it('rejects a note signed by a key it does not know (no known signature)', () => {
    const note = signedCheckpoint(logSignature());
    proofErrorOf(() => verifyCheckpoint(note, [stranger.vkey]), 'signature');
    proofErrorOf(() => verifyCheckpoint(note, []), 'signature');
  });

  it('rejects when the known key for that name and key id is a different key (wrong key)', () => {
    const note = signedCheckpoint(logSignature());
    const real = parseVerifierKeyString(log.vkey);
    const impostor: NoteVerifierKey = { ...real, publicKey: stranger.publicKey };
    proofErrorOf(() => verifyCheckpoint(note, [impostor]), 'signature');
  });

  it('rejects the whole note when a known key has a bad signature, even if another known key verifies', () => {
    const note = signedCheckpoint(logSignature(), witnessCosignature());
    for (const byte of [0, 3, 4, 40, 67]) {
      // line 0 = log signature: keyId bytes 0..3 (changing them makes the line unknown), signature 4..67.
      const bad = tamperSignatureLine(note, 0, byte);
      if (byte < 4) {
        // The line no longer names a known key: it is ignored, and the witness alone still verifies.
        expect(verifyCheckpoint(bad, [log.vkey, witness.cosignerVkey]).signers).toEqual([]);
      } else {
        proofErrorOf(() => verifyCheckpoint(bad, [log.vkey, witness.cosignerVkey]), 'signature');
      }
    }
    // A bad cosignature (timestamp or signature bytes) also rejects the note although the log signature is fine.
    for (const byte of [4, 11, 12, 75]) {
      proofErrorOf(() => verifyCheckpoint(tamperSignatureLine(note, 1, byte), [log.vkey, witness.cosignerVkey]), 'signature');
    }
  });

  it('ignores signatures from unknown keys, including ones sharing only the name or only the key id', () => {
    const known = parseVerifierKeyString(log.vkey);
    const garbage = Uint8Array.from({ length: 64 }, (_, i) => i);
    const sameNameOtherId: NoteSignature = { name: log.name, keyId: flipBit(known.keyId), signature: garbage };
    const sameIdOtherName: NoteSignature = { name: 'other.example/log', keyId: known.keyId, signature: garbage };
    const note = signedCheckpoint(
      logSignature(checkpointText, stranger),
      sameNameOtherId,
      logSignature(),
      sameIdOtherName,
      { name: 'short.example', keyId: Uint8Array.of(1, 2, 3, 4), signature: Uint8Array.of(9) },
    );
    const cp = verifyCheckpoint(note, [log.vkey]);
    expect(cp.signers).toEqual([log.name]);
  });

  it.each([
    ['the tree size', (t: string) => t.replace('\n20852163\n', '\n20852164\n')],
    ['the root hash', (t: string) => t.replace(toBase64(checkpoint.rootHash), toBase64(sha256(utf8('other root'))))],
    ['the origin', (t: string) => t.replace('ledger.example/healthledger\n', 'ledger.example/other\n')],
    ['an added extension line', (t: string) => t.replace(/(=\n)\n/, '$1extension\n\n')],
  ])('rejects a note whose %s was changed after signing', (_what, change) => {
    const note = signedCheckpoint(logSignature(), witnessCosignature());
    const changed = change(note);
    expect(changed).not.toBe(note);
    proofErrorOf(() => verifyCheckpoint(changed, [log.vkey, witness.cosignerVkey]), 'signature');
    proofErrorOf(() => verifyCheckpoint(changed, [witness.cosignerVkey]), 'signature');
  });

  it('returns extension lines of a signed checkpoint', () => {
    const text = formatCheckpoint({ ...checkpoint, extensions: ['— not a signature', 'ext two'] });
    const note = formatSignedNote({ text, signatures: [logSignature(text)] });
    expect(verifyCheckpoint(note, [log.vkey]).extensions).toEqual(['— not a signature', 'ext two']);
  });

  it('keeps signature types apart: a cosigner key is not accepted as a note-signing key and vice versa', () => {
    const cosignedOnly = signedCheckpoint(witnessCosignature());
    proofErrorOf(() => verifyCheckpoint(cosignedOnly, [witness.vkey]), 'signature');
    const signedOnly = signedCheckpoint(logSignature());
    proofErrorOf(() => verifyCheckpoint(signedOnly, [log.cosignerVkey]), 'signature');
  });

  it('accepts a cosignature timestamp of 2^63 - 1 and rejects 2^63 and above (tlog-cosignature)', () => {
    const max = 2n ** 63n - 1n;
    expect(verifyCheckpoint(signedCheckpoint(witnessCosignature(checkpointText, max)), [witness.cosignerVkey]).cosigners).toEqual([
      { name: witness.name, timestamp: max },
    ]);
    proofErrorOf(() => verifyCheckpoint(signedCheckpoint(witnessCosignature(checkpointText, 2n ** 63n)), [witness.cosignerVkey]), 'signature');
  });

  it('rejects a cosignature whose timestamp differs from the signed one', () => {
    const cos = witnessCosignature();
    const shifted = { ...cos, signature: concatBytes(uint64BE(cosignTime + 1n), cos.signature.subarray(8)) };
    proofErrorOf(() => verifyCheckpoint(signedCheckpoint(shifted), [witness.cosignerVkey]), 'signature');
  });

  it('parses tree sizes as exact uint64 bigints', () => {
    const text = formatCheckpoint({ ...checkpoint, treeSize: 2n ** 64n - 1n });
    expect(text.split('\n')[1]).toBe('18446744073709551615');
    const note = formatSignedNote({ text, signatures: [logSignature(text)] });
    expect(verifyCheckpoint(note, [log.vkey]).treeSize).toBe(2n ** 64n - 1n);
  });

  it.each([
    ['a size of 2^64', '18446744073709551616'],
    ['a size with a leading zero', '0123'],
    ['a negative size', '-1'],
    ['a size with a plus sign', '+5'],
  ])('rejects a correctly signed checkpoint with %s', (_what, size) => {
    const text = `${checkpoint.origin}\n${size}\n${toBase64(checkpoint.rootHash)}\n`;
    const note = formatSignedNote({ text, signatures: [logSignature(text)] });
    proofErrorOf(() => verifyCheckpoint(note, [log.vkey]));
  });

  it('rejects a correctly signed note that is not a checkpoint', () => {
    for (const text of ['hello\n', `${checkpoint.origin}\n5\nnot base64\n`, `${checkpoint.origin}\n5\n${toBase64(new Uint8Array(31))}\n`]) {
      const note = formatSignedNote({ text, signatures: [logSignature(text)] });
      proofErrorOf(() => verifyCheckpoint(note, [log.vkey]), 'malformed');
    }
  });

  it.each([
    ['no blank line before the signatures', (n: string) => n.replace('\n\n', '\n')],
    ['no final newline', (n: string) => n.slice(0, -1)],
    ['CRLF line endings', (n: string) => n.replace(/\n/g, '\r\n')],
    ['a hyphen instead of an em dash', (n: string) => n.replace('\u2014', '-')],
    ['an en dash instead of an em dash', (n: string) => n.replace('\u2014', '\u2013')],
    ['two spaces after the dash', (n: string) => n.replace('\u2014 ', '\u2014  ')],
    ['a tab in the text', (n: string) => n.replace('\n20852163', '\t\n20852163')],
    ['signature base64 without padding', (n: string) => n.replace(/=\n$/, '\n')],
    ['an empty signature block', (n: string) => `${n.slice(0, n.lastIndexOf('\n\n'))}\n\n`],
  ])('rejects a malformed note: %s', (_what, change) => {
    const note = signedCheckpoint(logSignature());
    const changed = change(note);
    expect(changed).not.toBe(note);
    proofErrorOf(() => verifyCheckpoint(changed, [log.vkey]));
  });

  it('binds a verified checkpoint to inclusion proofs (end to end)', () => {
    const leaves = Array.from({ length: 11 }, (_, i) => utf8(`tx ${i}`));
    const text = formatCheckpoint({ origin: checkpoint.origin, treeSize: 11n, rootHash: mth(leaves), extensions: [] });
    const cp = verifyCheckpoint(formatSignedNote({ text, signatures: [logSignature(text)] }), [log.vkey]);
    verifyInclusion(6n, cp.treeSize, leafHash(leaves[6]!), refPath(6, leaves), cp.rootHash);
    proofErrorOf(() => verifyInclusion(6n, cp.treeSize, leafHash(utf8('forged')), refPath(6, leaves), cp.rootHash));
  });
});

describe('C2SP wire formats, checked against an independent implementation and published examples', () => {
  it('writes the note as text, a blank line, then "— name base64(keyid || sig)" lines', () => {
    const note = signedCheckpoint(logSignature(), witnessCosignature());
    const lines = note.split('\n');
    expect(note.startsWith(`${checkpointText}\n`)).toBe(true);
    expect(lines[3]).toBe('');
    expect(lines[4]!.startsWith(`\u2014 ${log.name} `)).toBe(true);
    expect(lines[5]!.startsWith(`\u2014 ${witness.name} `)).toBe(true);
    expect(lines[6]).toBe('');
    expect(lines).toHaveLength(7);

    const sig = Buffer.from(lines[4]!.split(' ')[2]!, 'base64');
    expect(sig.length).toBe(4 + 64);
    expect(sig.subarray(0, 4).toString('hex')).toBe(independent.keyId(log.name, 0x01, log.publicKey).toString('hex'));

    const cos = Buffer.from(lines[5]!.split(' ')[2]!, 'base64');
    expect(cos.length).toBe(4 + 8 + 64);
    expect(cos.subarray(0, 4).toString('hex')).toBe(independent.keyId(witness.name, 0x04, witness.publicKey).toString('hex'));
    expect(cos.readBigUInt64BE(4)).toBe(cosignTime);
  });

  it('formats verifier keys as name+hex(keyid)+base64(type || key)', () => {
    expect(log.vkey).toBe(independent.vkey(log.name, 0x01, log.publicKey));
    expect(witness.cosignerVkey).toBe(independent.vkey(witness.name, 0x04, witness.publicKey));
    const parsed = parseVerifierKeyString(witness.cosignerVkey);
    expect(parsed).toMatchObject({ name: witness.name, type: SignatureType.cosignatureV1 });
    expect(toHex(parsed.publicKey)).toBe(toHex(witness.publicKey));
  });

  it('parses verifier keys whose base64 key material contains "+" (RFC 8032 §7.1 TEST 1 key)', () => {
    const seed = hexToBytes('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60');
    const privateKey = createPrivateKey({
      key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]),
      format: 'der',
      type: 'pkcs8',
    });
    const publicKey = rawPublicKey(createPublicKey(privateKey));
    expect(toHex(publicKey)).toBe('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
    const name = 'rfc8032.example/log';
    const vkey = formatVerifierKey(sha256, name, SignatureType.ed25519, publicKey);
    expect(vkey).toBe(independent.vkey(name, 0x01, publicKey));
    expect(vkey.endsWith('+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea')).toBe(true);
    const parsed = parseVerifierKeyString(vkey);
    expect(parsed.name).toBe(name);
    expect(toHex(parsed.publicKey)).toBe(toHex(publicKey));
    const sig = signNoteSignature(sha256, name, publicKey, (m) => signEd25519(privateKey, m), checkpointText);
    expect(verifyCheckpoint(formatSignedNote({ text: checkpointText, signatures: [sig] }), [vkey]).signers).toEqual([name]);
  });

  it('our notes open with the independent implementation', () => {
    const note = signedCheckpoint(logSignature(), witnessCosignature());
    const opened = independent.open(note, [
      { name: log.name, type: 0x01, publicKey: log.publicKey },
      { name: witness.name, type: 0x04, publicKey: witness.publicKey },
    ]);
    expect(opened.text).toBe(checkpointText);
    expect(opened.verified).toEqual([{ name: log.name }, { name: witness.name, timestamp: cosignTime }]);
    // And the independent verifier agrees that a changed size breaks it.
    expect(() =>
      independent.open(note.replace('\n20852163\n', '\n20852164\n'), [{ name: log.name, type: 0x01, publicKey: log.publicKey }]),
    ).toThrow(/bad signature/);
  });

  it('the independent implementation writes byte-identical notes, which verifyCheckpoint accepts', () => {
    const theirs =
      `${checkpointText}\n` +
      independent.signLine(checkpointText, log.name, log.privateKey, log.publicKey) +
      independent.cosignLine(checkpointText, witness.name, witness.privateKey, witness.publicKey, cosignTime);
    expect(theirs).toBe(signedCheckpoint(logSignature(), witnessCosignature()));
    const cp = verifyCheckpoint(theirs, [log.vkey, witness.cosignerVkey]);
    expect(cp.signers).toEqual([log.name]);
    expect(cp.cosigners).toEqual([{ name: witness.name, timestamp: cosignTime }]);
  });

  // golang.org/x/mod/sumdb/note (note_test.go), the reference implementation of signed notes.
  const go = {
    vkey: 'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW',
    skey: 'PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz',
    text: "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n",
    sigLine: '\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n',
  };
  const goNote = `${go.text}\n${go.sigLine}`;
  const nodeEd25519Verify = (publicKey: Uint8Array, message: Uint8Array, sig: Uint8Array): boolean =>
    nodeVerify(null, message, independent.publicKeyObject(publicKey), sig);

  it('parses the Go reference verifier key and verifies its note', () => {
    const key = parseVerifierKeyString(go.vkey);
    expect(key.name).toBe('PeterNeumann');
    expect(key.type).toBe(SignatureType.ed25519);
    expect(toHex(key.keyId)).toBe('c74f20a3');
    expect(verifyNote(nodeEd25519Verify, goNote, [key]).signers).toEqual(['PeterNeumann']);
    proofErrorOf(() => verifyNote(nodeEd25519Verify, goNote.replace('cryptography', 'cryptographY'), [key]), 'signature');
  });

  it('reproduces the Go reference note byte for byte from its private key', () => {
    const material = b64(go.skey.split('+').slice(4).join('+'));
    expect(material[0]).toBe(0x01);
    const seed = material.subarray(1);
    expect(seed.length).toBe(32);
    const privateKey = createPrivateKey({
      key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]),
      format: 'der',
      type: 'pkcs8',
    });
    const publicKey = rawPublicKey(createPublicKey(privateKey));
    expect(formatVerifierKey(sha256, 'PeterNeumann', SignatureType.ed25519, publicKey)).toBe(go.vkey);
    const sig = signNoteSignature(sha256, 'PeterNeumann', publicKey, (m) => signEd25519(privateKey, m), go.text);
    expect(formatSignedNote({ text: go.text, signatures: [sig] })).toBe(goNote);
  });

  it('a validly signed note that is not a checkpoint is rejected by verifyCheckpoint', () => {
    proofErrorOf(() => verifyCheckpoint(goNote, [go.vkey]), 'malformed');
  });

  it('parses the c2sp.org/tlog-cosignature example: checkpoint body and a timestamped cosignature', () => {
    const example =
      'example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n' +
      '\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n' +
      '\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n';
    const parsed = parseSignedNote(example);
    expect(parsed.text).toBe('example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n');
    expect(parsed.signatures.map((s) => s.name)).toEqual(['example.com/behind-the-sofa', 'witness.example.com/w1']);
    expect(parsed.signatures[0]!.signature.length).toBe(64);
    const cosig = parsed.signatures[1]!.signature;
    expect(cosig.length).toBe(8 + 64);
    // The spec's example message says "time 1679315147".
    expect(Buffer.from(cosig).readBigUInt64BE(0)).toBe(1679315147n);
    // We hold neither key: nothing known signed it.
    proofErrorOf(() => verifyCheckpoint(example, [log.vkey, witness.cosignerVkey]), 'signature');
  });

  it.each([
    ['a key id that does not match the key', () => log.vkey.replace(/\+([0-9a-f]{8})\+/, (_m, id: string) => `+${id === '00000000' ? '00000001' : '00000000'}+`)],
    ['an upper-case key id', () => go.vkey.replace('c74f20a3', 'C74F20A3')],
    ['an unsupported signature type (ECDSA 0x02)', () => independent.vkey('x.example', 0x02, log.publicKey)],
    ['a 31-byte key', () => independent.vkey('x.example', 0x01, log.publicKey.subarray(1))],
    ['a name with a space', () => independent.vkey('bad name', 0x01, log.publicKey)],
    ['a missing part', () => `${log.name}+${toBase64(concatBytes(Uint8Array.of(1), log.publicKey))}`],
    ['an empty name', () => independent.vkey('', 0x01, log.publicKey)],
  ])('rejects a verifier key with %s', (_what, vkey) => {
    expect(() => parseVerifierKeyString(vkey())).toThrow(HlError);
  });
});

describe('browser safety of healthledger/verify', () => {
  it('src/ledger/verify.ts and everything it imports (transitively) import no Node builtin and use no Node globals', () => {
    const srcDir = join(import.meta.dirname, '..');
    const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
    const seen = new Set<string>();
    const queue = ['ledger/verify.ts'];
    const problems: string[] = [];
    const packages = new Set<string>();
    while (queue.length > 0) {
      const path = queue.shift()!;
      if (seen.has(path)) continue;
      seen.add(path);
      const text = readFileSync(join(srcDir, path), 'utf8');
      for (const imp of parseImports(text)) {
        const target = resolveRelative(path, imp.specifier);
        if (target !== undefined) {
          queue.push(target);
        } else if (imp.specifier.startsWith('node:') || builtins.has(imp.specifier) || imp.specifier.startsWith('<dynamic')) {
          problems.push(`src/${path}:${imp.line}: imports '${imp.specifier}'`);
        } else {
          packages.add(imp.specifier);
        }
      }
      const code = stripComments(text);
      for (const re of [/\bBuffer\b/, /\bprocess\./, /\brequire\s*\(/, /\b__dirname\b/, /\bimport\.meta\.dirname\b/]) {
        if (re.test(code)) problems.push(`src/${path}: uses ${re.source}`);
      }
    }
    // Self-check: the walk really followed the imports.
    expect([...seen]).toEqual(expect.arrayContaining(['ledger/verify.ts', 'ledger/note.ts', 'ledger/merkle/verify.ts', 'kernel/index.ts', 'kernel/bytes.ts']));
    expect([...seen].some((p) => p.startsWith('crypto/'))).toBe(false);
    expect([...packages]).toEqual(expect.arrayContaining(['@noble/hashes/sha2.js', '@noble/curves/ed25519.js']));
    expect(problems, problems.join('\n')).toEqual([]);
    expect(seen.size).toBeGreaterThan(5);
  });
});
