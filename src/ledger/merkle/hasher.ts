/**
 * RFC 9162 §2.1.1 domain-separated hashing: leaf = H(0x00 || data), node = H(0x01 || left || right),
 * empty tree = H(""). Pure: the SHA-256 function is passed in (node:crypto on the server, @noble/hashes in
 * the browser verifier).
 */

/** A SHA-256 function. */
export type Sha256 = (data: Uint8Array) => Uint8Array;

/** Hash size of SHA-256, in bytes. */
export const hashBytes = 32;

/** The three hashes of an RFC 9162 Merkle tree. */
export interface MerkleHasher {
  /** MTH({}) = SHA-256 of the empty string. */
  emptyRoot(): Uint8Array;
  /** MTH({d}) = SHA-256(0x00 || d). */
  hashLeaf(leaf: Uint8Array): Uint8Array;
  /** SHA-256(0x01 || left || right). */
  hashChildren(left: Uint8Array, right: Uint8Array): Uint8Array;
}

/** Builds the RFC 9162 hasher on a SHA-256 implementation. */
export function createRfc9162Hasher(sha256: Sha256): MerkleHasher {
  const empty = sha256(new Uint8Array(0));
  const nodeInput = new Uint8Array(1 + 2 * hashBytes);
  nodeInput[0] = 0x01;
  return {
    emptyRoot: () => empty.slice(),
    hashLeaf(leaf) {
      const input = new Uint8Array(1 + leaf.length);
      input.set(leaf, 1);
      return sha256(input);
    },
    hashChildren(left, right) {
      if (left.length !== hashBytes || right.length !== hashBytes) {
        const input = new Uint8Array(1 + left.length + right.length);
        input[0] = 0x01;
        input.set(left, 1);
        input.set(right, 1 + left.length);
        return sha256(input);
      }
      // One reusable buffer: both SHA-256 implementations used here finish with the input before returning.
      nodeInput.set(left, 1);
      nodeInput.set(right, 1 + hashBytes);
      return sha256(nodeInput);
    },
  };
}
