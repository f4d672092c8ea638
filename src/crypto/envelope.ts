/**
 * AES-256-GCM envelope encryption (NIST SP 800-38D): data is sealed under a data-encryption key (DEK), and
 * DEKs are wrapped (themselves sealed) under a key-encryption key (KEK). Rotating the KEK re-wraps DEKs
 * without touching data (DESIGN.md §5).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { HlError, concatBytes, randomBytes as pooledRandomBytes, toHex } from '../kernel/index.js';
import { hmacSha256 } from './hash.js';

const version = 1;
const ivBytes = 12;
const tagBytes = 16;
/** Key length of AES-256, in bytes. */
export const aesKeyBytes = 32;

/** A fresh random 256-bit key. */
export function generateAesKey(): Uint8Array {
  return randomBytes(aesKeyBytes);
}

function requireKey(key: Uint8Array): void {
  if (key.length !== aesKeyBytes) throw new HlError('invalid', 'an AES-256 key is 32 bytes');
}

/**
 * Seals `plaintext` under `key`: `version(1) || iv(12) || ciphertext || tag(16)`. `aad` (associated data,
 * such as the record id) is authenticated but not encrypted; opening with a different aad fails.
 */
export function seal(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array = new Uint8Array(0)): Uint8Array {
  requireKey(key);
  const iv = pooledRandomBytes(ivBytes);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(aad);
  const body = cipher.update(plaintext);
  const last = cipher.final();
  const out = new Uint8Array(1 + ivBytes + body.length + last.length + tagBytes);
  out[0] = version;
  out.set(iv, 1);
  out.set(body, 1 + ivBytes);
  out.set(last, 1 + ivBytes + body.length);
  out.set(cipher.getAuthTag(), 1 + ivBytes + body.length + last.length);
  return out;
}

/** Opens a sealed box; throws `integrity` when the key, aad or any byte is wrong. */
export function open(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array = new Uint8Array(0)): Uint8Array {
  requireKey(key);
  if (sealed.length < 1 + ivBytes + tagBytes || sealed[0] !== version) {
    throw new HlError('integrity', 'sealed data is malformed or of an unknown version');
  }
  const iv = sealed.subarray(1, 1 + ivBytes);
  const tag = sealed.subarray(sealed.length - tagBytes);
  const body = sealed.subarray(1 + ivBytes, sealed.length - tagBytes);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, iv);
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    return concatBytes(decipher.update(body), decipher.final());
  } catch (cause) {
    throw new HlError('integrity', 'sealed data failed authentication', { cause });
  }
}

const wrapAad = new TextEncoder().encode('healthledger/dek-wrap/v1');

/** Wraps a DEK under a KEK. */
export function wrapKey(kek: Uint8Array, dek: Uint8Array): Uint8Array {
  requireKey(dek);
  return seal(kek, dek, wrapAad);
}

/** Unwraps a DEK; throws `integrity` with the wrong KEK or a damaged wrapped key. */
export function unwrapKey(kek: Uint8Array, wrapped: Uint8Array): Uint8Array {
  const dek = open(kek, wrapped, wrapAad);
  requireKey(dek);
  return dek;
}

const kekIdLabel = new TextEncoder().encode('healthledger/kek-id/v1');

/**
 * The public id of a KEK, `kek-` + 16 hex digits: HMAC-SHA-256(KEK, "healthledger/kek-id/v1"), first 8 bytes.
 * Stored beside every key it wraps, so a store always says which KEK it needs (and a rotation that was cut
 * short is never ambiguous); safe to print and log, since it reveals nothing about the key (a PRF output).
 * Two distinct KEKs share an id with probability 2^-64.
 */
export function kekIdOf(kek: Uint8Array): string {
  requireKey(kek);
  return `kek-${toHex(hmacSha256(kek, kekIdLabel).subarray(0, 8))}`;
}

/** Re-wraps a wrapped DEK from `oldKek` to `newKek` (key rotation: the data it protects is untouched). */
export function rewrapKey(oldKek: Uint8Array, newKek: Uint8Array, wrapped: Uint8Array): Uint8Array {
  return wrapKey(newKek, unwrapKey(oldKek, wrapped));
}

/** A data sealed under a fresh DEK, with the DEK wrapped under the KEK. */
export interface Envelope {
  wrappedKey: Uint8Array;
  sealed: Uint8Array;
}

/** Envelope-encrypts `plaintext`: a fresh DEK seals it and the KEK wraps the DEK. */
export function sealEnvelope(kek: Uint8Array, plaintext: Uint8Array, aad?: Uint8Array): Envelope {
  const dek = generateAesKey();
  return { wrappedKey: wrapKey(kek, dek), sealed: seal(dek, plaintext, aad) };
}

/** Opens an envelope made by `sealEnvelope`. */
export function openEnvelope(kek: Uint8Array, envelope: Envelope, aad?: Uint8Array): Uint8Array {
  return open(unwrapKey(kek, envelope.wrappedKey), envelope.sealed, aad);
}
