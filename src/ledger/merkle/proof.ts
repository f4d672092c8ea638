/**
 * Building RFC 9162 proofs from stored perfect-subtree hashes. `NodeReader.node(level, index)` returns the
 * hash of the perfect subtree covering leaves [index·2^level, (index+1)·2^level); the right edge of a tree
 * that is not a power of two is recomputed from those ("ephemeral" nodes). Pure: storage is passed in.
 * Sizes here are JS numbers checked to be safe integers (storage indexes); verification uses bigint.
 */
import { HlError } from '../../kernel/index.js';
import type { MerkleHasher } from './hasher.js';

/** Reads hashes of perfect subtrees. */
export interface NodeReader {
  /** Hash of the perfect subtree at (level, index); MUST exist for every subtree inside the tree. */
  node(level: number, index: number): Uint8Array;
}

function requireSafe(name: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new HlError('invalid', `${name} must be a non-negative safe integer`);
}

/** Largest power of two strictly below n (n ≥ 2). */
export function largestPowerOfTwoBelow(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** log2 of a power of two (exact: powers of two up to 2^53 are exact doubles). */
function log2(pow: number): number {
  return Math.round(Math.log2(pow));
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

/** MTH(D[start:end]) for a range that starts on a boundary of its own size class (as RFC 9162 splits produce). */
export function rangeHash(h: MerkleHasher, nodes: NodeReader, start: number, end: number): Uint8Array {
  const n = end - start;
  if (n <= 0) throw new HlError('invalid', 'empty range has no subtree hash');
  if (isPowerOfTwo(n)) {
    const level = log2(n);
    return nodes.node(level, start / n);
  }
  const k = largestPowerOfTwoBelow(n);
  return h.hashChildren(nodes.node(log2(k), start / k), rangeHash(h, nodes, start + k, end));
}

/** The root hash of the first `treeSize` leaves (RFC 9162 §2.1.1). */
export function rootHash(h: MerkleHasher, nodes: NodeReader, treeSize: number): Uint8Array {
  requireSafe('treeSize', treeSize);
  return treeSize === 0 ? h.emptyRoot() : rangeHash(h, nodes, 0, treeSize);
}

/** RFC 9162 §2.1.3.1 PATH(m, D[n]): the inclusion proof for leaf `leafIndex` in a tree of `treeSize`, leaf upward. */
export function inclusionProof(h: MerkleHasher, nodes: NodeReader, leafIndex: number, treeSize: number): Uint8Array[] {
  requireSafe('leafIndex', leafIndex);
  requireSafe('treeSize', treeSize);
  if (leafIndex >= treeSize) throw new HlError('invalid', `leafIndex ${leafIndex} is not below treeSize ${treeSize}`);
  const path: Uint8Array[] = [];
  let m = leafIndex;
  let start = 0;
  let n = treeSize;
  while (n > 1) {
    const k = largestPowerOfTwoBelow(n);
    if (m < k) {
      path.push(rangeHash(h, nodes, start + k, start + n));
      n = k;
    } else {
      path.push(rangeHash(h, nodes, start, start + k));
      m -= k;
      start += k;
      n -= k;
    }
  }
  return path.reverse();
}

/** RFC 9162 §2.1.4.1 PROOF(m, D[n]): the consistency proof from `size1` to `size2` (0 < size1 ≤ size2). */
export function consistencyProof(h: MerkleHasher, nodes: NodeReader, size1: number, size2: number): Uint8Array[] {
  requireSafe('size1', size1);
  requireSafe('size2', size2);
  if (size1 === 0 || size1 > size2) throw new HlError('invalid', `no consistency proof from size ${size1} to ${size2}`);
  const proof: Uint8Array[] = [];
  // SUBPROOF(m, D[start:start+n], b), unrolled: the recursion only ever descends one side.
  let m = size1;
  let start = 0;
  let n = size2;
  let whole = true;
  while (m !== n) {
    const k = largestPowerOfTwoBelow(n);
    if (m <= k) {
      proof.push(rangeHash(h, nodes, start + k, start + n));
      n = k;
    } else {
      proof.push(rangeHash(h, nodes, start, start + k));
      m -= k;
      start += k;
      n -= k;
      whole = false;
    }
  }
  if (!whole) proof.push(rangeHash(h, nodes, start, start + m));
  return proof.reverse();
}
