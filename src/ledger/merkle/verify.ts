/**
 * RFC 9162 §2.1.3.2 and §2.1.4.2 proof verification, as pure functions over bigint sizes and indexes (safe
 * for any uint64 tree). Compute/verify pairs: `rootFromInclusionProof` returns the root, `verifyInclusion`
 * throws a typed error; likewise for consistency. Structure after transparency-dev/merkle `proof/verify.go`.
 */
import { equalBytes } from '../../kernel/index.js';
import { ProofVerificationError, RootMismatchError } from './errors.js';
import { hashBytes, type MerkleHasher } from './hasher.js';

const maxUint64 = (1n << 64n) - 1n;

function requireSize(name: string, value: bigint): void {
  if (typeof value !== 'bigint' || value < 0n || value > maxUint64) {
    throw new ProofVerificationError('malformed', `${name} must be a bigint in the uint64 range`);
  }
}

function requireHash(name: string, value: Uint8Array): void {
  if (!(value instanceof Uint8Array) || value.length !== hashBytes) {
    throw new ProofVerificationError('hash-length', `${name} must be ${hashBytes} bytes`);
  }
}

function requireProof(proof: readonly Uint8Array[]): void {
  if (!Array.isArray(proof)) throw new ProofVerificationError('malformed', 'proof must be an array of hashes');
  proof.forEach((h, i) => requireHash(`proof[${i}]`, h));
}

/** Number of bits needed to write `x` (bits.Len64). */
export function bitLength(x: bigint): number {
  return x === 0n ? 0 : x.toString(2).length;
}

/** Number of set bits of `x` (bits.OnesCount64). */
export function popCount(x: bigint): number {
  let n = 0;
  for (const c of x.toString(2)) if (c === '1') n++;
  return n;
}

function trailingZeros(x: bigint): number {
  let n = 0;
  while (x > 0n && (x & 1n) === 0n) {
    x >>= 1n;
    n++;
  }
  return n;
}

/** Splits an inclusion proof's length into the inner part (below the split point) and the border part. */
export function decomposeInclusionProof(index: bigint, size: bigint): { inner: number; border: number } {
  const inner = bitLength(index ^ (size - 1n));
  const border = popCount(index >> BigInt(inner));
  return { inner, border };
}

function chainInner(h: MerkleHasher, seed: Uint8Array, proof: readonly Uint8Array[], index: bigint): Uint8Array {
  for (let i = 0; i < proof.length; i++) {
    seed = ((index >> BigInt(i)) & 1n) === 0n ? h.hashChildren(seed, proof[i]!) : h.hashChildren(proof[i]!, seed);
  }
  return seed;
}

function chainInnerRight(h: MerkleHasher, seed: Uint8Array, proof: readonly Uint8Array[], index: bigint): Uint8Array {
  for (let i = 0; i < proof.length; i++) {
    if (((index >> BigInt(i)) & 1n) === 1n) seed = h.hashChildren(proof[i]!, seed);
  }
  return seed;
}

function chainBorderRight(h: MerkleHasher, seed: Uint8Array, proof: readonly Uint8Array[]): Uint8Array {
  for (const p of proof) seed = h.hashChildren(p, seed);
  return seed;
}

/** RFC 9162 §2.1.3.2: the root implied by an inclusion proof for `leafHash` at `leafIndex` in a tree of `treeSize`. */
export function rootFromInclusionProof(
  h: MerkleHasher,
  leafIndex: bigint,
  treeSize: bigint,
  leafHash: Uint8Array,
  proof: readonly Uint8Array[],
): Uint8Array {
  requireSize('leafIndex', leafIndex);
  requireSize('treeSize', treeSize);
  if (leafIndex >= treeSize) {
    throw new ProofVerificationError('index-out-of-range', `leafIndex ${leafIndex} is not below treeSize ${treeSize}`);
  }
  requireHash('leafHash', leafHash);
  requireProof(proof);
  const { inner, border } = decomposeInclusionProof(leafIndex, treeSize);
  if (proof.length !== inner + border) {
    throw new ProofVerificationError(
      'proof-length',
      `inclusion proof has ${proof.length} hashes; leafIndex ${leafIndex} in treeSize ${treeSize} needs ${inner + border}`,
    );
  }
  const res = chainInner(h, leafHash, proof.slice(0, inner), leafIndex);
  return chainBorderRight(h, res, proof.slice(inner));
}

/** Verifies an inclusion proof against `root`; throws a `ProofVerificationError` naming the mismatch. */
export function verifyInclusionWith(
  h: MerkleHasher,
  leafIndex: bigint,
  treeSize: bigint,
  leafHash: Uint8Array,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): void {
  requireHash('root', root);
  const computed = rootFromInclusionProof(h, leafIndex, treeSize, leafHash, proof);
  if (!equalBytes(computed, root)) throw new RootMismatchError('inclusion proof', computed, root);
}

/**
 * RFC 9162 §2.1.4.2: verifies that the tree of `size2` with `root2` extends the tree of `size1` with `root1`.
 * Rejects size1 = 0 (nothing to be consistent with: the issue and RFC 9162 say such a proof is not
 * meaningful), size1 > size2, and for size1 = size2 demands an empty proof and equal roots.
 */
export function verifyConsistencyWith(
  h: MerkleHasher,
  size1: bigint,
  size2: bigint,
  root1: Uint8Array,
  root2: Uint8Array,
  proof: readonly Uint8Array[],
): void {
  requireSize('size1', size1);
  requireSize('size2', size2);
  requireHash('root1', root1);
  requireHash('root2', root2);
  requireProof(proof);
  if (size2 < size1) throw new ProofVerificationError('size-order', `size2 ${size2} is smaller than size1 ${size1}`);
  if (size1 === 0n) {
    throw new ProofVerificationError('empty-tree', 'a consistency proof from an empty tree (size1 = 0) is not accepted');
  }
  if (size1 === size2) {
    if (proof.length !== 0) {
      throw new ProofVerificationError('proof-length', 'a consistency proof between equal sizes must be empty');
    }
    if (!equalBytes(root1, root2)) throw new RootMismatchError('consistency proof (equal sizes)', root2, root1);
    return;
  }
  if (proof.length === 0) throw new ProofVerificationError('proof-length', 'consistency proof is empty');

  const { inner: inner0, border } = decomposeInclusionProof(size1 - 1n, size2);
  const shift = trailingZeros(size1);
  const inner = inner0 - shift;
  // The proof starts with the root of the size-2^shift subtree unless size1 is exactly that subtree.
  let seed: Uint8Array;
  let start: number;
  if (size1 === 1n << BigInt(shift)) {
    seed = root1;
    start = 0;
  } else {
    seed = proof[0]!;
    start = 1;
  }
  if (proof.length !== start + inner + border) {
    throw new ProofVerificationError(
      'proof-length',
      `consistency proof has ${proof.length} hashes; sizes ${size1} → ${size2} need ${start + inner + border}`,
    );
  }
  const rest = proof.slice(start);
  const mask = (size1 - 1n) >> BigInt(shift);
  let hash1 = chainInnerRight(h, seed, rest.slice(0, inner), mask);
  hash1 = chainBorderRight(h, hash1, rest.slice(inner));
  if (!equalBytes(hash1, root1)) throw new RootMismatchError('consistency proof (first root)', hash1, root1);
  let hash2 = chainInner(h, seed, rest.slice(0, inner), mask);
  hash2 = chainBorderRight(h, hash2, rest.slice(inner));
  if (!equalBytes(hash2, root2)) throw new RootMismatchError('consistency proof (second root)', hash2, root2);
}
