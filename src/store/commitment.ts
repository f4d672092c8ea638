/**
 * The ledger commitment of a record version (DESIGN.md §3): `SHA-256(salt32 || content)`, where `content` is
 * the RFC 8785 canonical JSON of the version exactly as vread returns it (meta included) and `salt` is a fresh
 * 32-byte random value stored encrypted beside the ciphertext. The salt stops anyone who sees only the
 * commitment from confirming a guessed record (names, MRNs, dates are predictable).
 */
import { HlError, concatBytes, randomBytes, toHex } from '../kernel/index.js';
import { canonicalBytes, sha256 } from '../crypto/index.js';

/** Length of a commitment salt, in bytes. */
export const saltBytes = 32;

/** A fresh random 32-byte commitment salt (one per version; never reused). */
export function generateSalt(): Uint8Array {
  return randomBytes(saltBytes);
}

/**
 * Lowercase hex `SHA-256(salt || content)` (DESIGN.md §3 "Commitment"). Throws `invalid` unless `salt` is
 * exactly 32 bytes.
 */
export function commitmentOf(salt: Uint8Array, content: Uint8Array): string {
  if (salt.length !== saltBytes) throw new HlError('invalid', 'a commitment salt is 32 bytes');
  return toHex(sha256(concatBytes(salt, content)));
}

/** The stored and committed form of a resource version: its RFC 8785 canonical JSON bytes (DESIGN.md §3). */
export function contentOf(version: unknown): Uint8Array {
  return canonicalBytes(version);
}
