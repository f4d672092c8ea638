/**
 * `healthledger/verify`: the browser-safe public verifier (no `node:` imports). Anyone holding a leaf, a
 * proof and a checkpoint checks them here without trusting the node that served them.
 * SHA-256 from @noble/hashes and Ed25519 from @noble/curves (audited, pure JS).
 */
import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js';
import { ed25519 } from '@noble/curves/ed25519.js';
import { ProofVerificationError } from './merkle/errors.js';
import { createRfc9162Hasher } from './merkle/hasher.js';
import {
  rootFromInclusionProof as rootFromInclusionProofWith,
  verifyConsistencyWith,
  verifyInclusionWith,
} from './merkle/verify.js';
import { parseCheckpoint, parseVerifierKey, verifyNote, type Checkpoint, type NoteVerifierKey } from './note.js';

export { ProofFailure, ProofVerificationError, RootMismatchError } from './merkle/errors.js';
export type { Checkpoint, NoteVerifierKey } from './note.js';

/**
 * Under Node (≥ 20.16) the native SHA-256 is about three times faster; it is looked up at run time through
 * `process.getBuiltinModule`, so this file still has no `node:` import and bundles for the browser, where
 * @noble/hashes is used.
 */
type NativeHash = (algorithm: string, data: Uint8Array, encoding: 'buffer') => Uint8Array;
const nativeHash = (
  globalThis as { process?: { getBuiltinModule?: (id: string) => { hash?: NativeHash } | undefined } }
).process?.getBuiltinModule?.('node:crypto')?.hash;
const sha256 = nativeHash
  ? (data: Uint8Array): Uint8Array => nativeHash('sha256', data, 'buffer')
  : (data: Uint8Array): Uint8Array => nobleSha256(data);
const hasher = createRfc9162Hasher(sha256);

/** RFC 9162 leaf hash: SHA-256(0x00 || leaf). */
export function leafHash(leaf: Uint8Array): Uint8Array {
  return hasher.hashLeaf(leaf);
}

/** RFC 9162 interior node hash: SHA-256(0x01 || left || right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return hasher.hashChildren(left, right);
}

/** The root implied by an inclusion proof (RFC 9162 §2.1.3.2); throws on malformed input. */
export function rootFromInclusionProof(
  leafIndex: bigint,
  treeSize: bigint,
  leafHashValue: Uint8Array,
  proof: readonly Uint8Array[],
): Uint8Array {
  return rootFromInclusionProofWith(hasher, leafIndex, treeSize, leafHashValue, proof);
}

/** Verifies an inclusion proof; throws `ProofVerificationError` (or `RootMismatchError`) naming the mismatch. */
export function verifyInclusion(
  leafIndex: bigint,
  treeSize: bigint,
  leafHashValue: Uint8Array,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): void {
  verifyInclusionWith(hasher, leafIndex, treeSize, leafHashValue, proof, root);
}

/** Verifies a consistency proof (RFC 9162 §2.1.4.2); throws naming the mismatch. */
export function verifyConsistency(
  size1: bigint,
  size2: bigint,
  root1: Uint8Array,
  root2: Uint8Array,
  proof: readonly Uint8Array[],
): void {
  verifyConsistencyWith(hasher, size1, size2, root1, root2, proof);
}

function ed25519Verify(publicKey: Uint8Array, message: Uint8Array, sig: Uint8Array): boolean {
  if (sig.length !== 64) return false;
  try {
    return ed25519.verify(sig, message, publicKey);
  } catch {
    return false;
  }
}

/** Parses a C2SP verifier key string (`name+keyid+base64(type || key)`). */
export function parseVerifierKeyString(vkey: string): NoteVerifierKey {
  return parseVerifierKey(sha256, vkey);
}

/** A verified checkpoint: its body plus who signed and cosigned it. */
export interface VerifiedCheckpoint extends Checkpoint {
  signers: string[];
  cosigners: { name: string; timestamp: bigint }[];
}

/**
 * Verifies a C2SP signed checkpoint against verifier keys (vkey strings or parsed keys): at least one known
 * key must sign, and any known key's signature that fails rejects the note. Returns the parsed checkpoint.
 */
export function verifyCheckpoint(note: string, keys: readonly (string | NoteVerifierKey)[]): VerifiedCheckpoint {
  const parsedKeys = keys.map((k) => (typeof k === 'string' ? parseVerifierKey(sha256, k) : k));
  const verified = verifyNote(ed25519Verify, note, parsedKeys);
  let checkpoint: Checkpoint;
  try {
    checkpoint = parseCheckpoint(verified.text);
  } catch (err) {
    throw new ProofVerificationError('malformed', `signed note is not a checkpoint: ${err instanceof Error ? err.message : ''}`);
  }
  return { ...checkpoint, signers: verified.signers, cosigners: verified.cosigners };
}
