/**
 * The right frontier of an append-only RFC 9162 tree: the roots of its perfect subtrees (at most one per
 * level). Appending a leaf returns every perfect-subtree node it completes, which is what storage keeps so
 * proofs take O(log n) reads. Pure.
 */
import { HlError } from '../../kernel/index.js';
import type { MerkleHasher } from './hasher.js';

/** A perfect-subtree node completed by an append. */
export interface MerkleNode {
  level: number;
  index: number;
  hash: Uint8Array;
}

/** Incremental tree state: size plus the frontier hashes. */
export class MerkleFrontier {
  private readonly hasher: MerkleHasher;
  private readonly perLevel: (Uint8Array | undefined)[] = [];
  private count: number;

  /** Starts from an empty tree, or from `size` leaves whose perfect-subtree roots `nodeAt` can read. */
  constructor(hasher: MerkleHasher, size = 0, nodeAt?: (level: number, index: number) => Uint8Array) {
    this.hasher = hasher;
    if (!Number.isSafeInteger(size) || size < 0) throw new HlError('invalid', 'tree size must be a safe integer');
    this.count = size;
    if (size > 0) {
      if (!nodeAt) throw new HlError('invalid', 'a non-empty frontier needs its stored nodes');
      for (let level = 0; 2 ** level <= size; level++) {
        if (Math.floor(size / 2 ** level) % 2 === 1) {
          this.perLevel[level] = nodeAt(level, Math.floor(size / 2 ** level) - 1);
        }
      }
    }
  }

  /** Number of leaves. */
  get size(): number {
    return this.count;
  }

  /** Appends a leaf hash; returns the nodes it completes, leaf first. */
  append(leafHash: Uint8Array): MerkleNode[] {
    const index = this.count;
    const created: MerkleNode[] = [{ level: 0, index, hash: leafHash }];
    let carry = leafHash;
    let level = 0;
    let idx = index;
    while (idx % 2 === 1) {
      carry = this.hasher.hashChildren(this.perLevel[level]!, carry);
      this.perLevel[level] = undefined;
      level++;
      idx = (idx - 1) / 2;
      created.push({ level, index: idx, hash: carry });
    }
    this.perLevel[level] = carry;
    this.count++;
    return created;
  }

  /** The root hash of the current tree (RFC 9162 §2.1.1). */
  root(): Uint8Array {
    let acc: Uint8Array | undefined;
    for (let level = 0; level < this.perLevel.length; level++) {
      const node = this.perLevel[level];
      if (node === undefined) continue;
      acc = acc === undefined ? node : this.hasher.hashChildren(node, acc);
    }
    return acc ?? this.hasher.emptyRoot();
  }
}
