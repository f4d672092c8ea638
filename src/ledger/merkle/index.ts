/**
 * RFC 9162 Merkle tree: hashing, proof building from stored perfect subtrees, incremental frontier, and
 * verification. Pure (no fs, net or clock); the SHA-256 function is injected.
 */
export { createRfc9162Hasher, hashBytes, type MerkleHasher, type Sha256 } from './hasher.js';
export { ProofFailure, ProofVerificationError, RootMismatchError } from './errors.js';
export {
  bitLength,
  decomposeInclusionProof,
  popCount,
  rootFromInclusionProof,
  verifyConsistencyWith,
  verifyInclusionWith,
} from './verify.js';
export { consistencyProof, inclusionProof, largestPowerOfTwoBelow, rangeHash, rootHash, type NodeReader } from './proof.js';
export { MerkleFrontier, type MerkleNode } from './frontier.js';
