/**
 * Ed25519 keys (RFC 8032) on node:crypto: generate, import and export as PEM or JWK, key ids, sign, verify.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { HlError, fromBase64Url, toBase64Url } from '../kernel/index.js';
import { sha256 } from './hash.js';

/** An Ed25519 public key as a JWK (RFC 8037). */
export interface Ed25519PublicJwk {
  kty: 'OKP';
  crv: 'Ed25519';
  x: string;
}

/** An Ed25519 private key as a JWK (RFC 8037). */
export interface Ed25519PrivateJwk extends Ed25519PublicJwk {
  d: string;
}

/** An Ed25519 key pair with its key id. */
export interface Ed25519KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** RFC 7638 JWK thumbprint of the public key, base64url. */
  keyId: string;
}

/** Generates a new Ed25519 key pair. */
export function generateEd25519KeyPair(): Ed25519KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, publicKey, keyId: ed25519KeyId(publicKey) };
}

function requireEd25519(key: KeyObject, type: 'private' | 'public'): KeyObject {
  if (key.asymmetricKeyType !== 'ed25519' || key.type !== type) {
    throw new HlError('invalid', `not an Ed25519 ${type} key`);
  }
  return key;
}

/** Imports an Ed25519 private key from PKCS#8 PEM or a private JWK; returns the pair. */
export function importEd25519PrivateKey(material: string | Ed25519PrivateJwk): Ed25519KeyPair {
  let privateKey: KeyObject;
  try {
    privateKey =
      typeof material === 'string'
        ? createPrivateKey({ key: material, format: 'pem' })
        : createPrivateKey({ key: { ...material }, format: 'jwk' });
  } catch (cause) {
    throw new HlError('invalid', 'cannot read the Ed25519 private key', { cause });
  }
  requireEd25519(privateKey, 'private');
  const publicKey = createPublicKey(privateKey);
  // node:crypto ignores a JWK's `x` and derives the public key from `d`; a mismatched `x` means a damaged key file.
  if (typeof material !== 'string' && exportPublicJwk(publicKey).x !== material.x) {
    throw new HlError('invalid', 'the JWK public key x does not belong to its private key d');
  }
  return { privateKey, publicKey, keyId: ed25519KeyId(publicKey) };
}

/** Imports an Ed25519 public key from SPKI PEM, a public JWK or the raw 32 bytes. */
export function importEd25519PublicKey(material: string | Ed25519PublicJwk | Uint8Array): KeyObject {
  let key: KeyObject;
  try {
    if (material instanceof Uint8Array) {
      if (material.length !== 32) throw new HlError('invalid', 'an Ed25519 public key is 32 bytes');
      key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: toBase64Url(material) }, format: 'jwk' });
    } else if (typeof material === 'string') {
      key = createPublicKey({ key: material, format: 'pem' });
    } else {
      key = createPublicKey({ key: { kty: material.kty, crv: material.crv, x: material.x }, format: 'jwk' });
    }
  } catch (cause) {
    if (cause instanceof HlError) throw cause;
    throw new HlError('invalid', 'cannot read the Ed25519 public key', { cause });
  }
  return requireEd25519(key, 'public');
}

/** PEM export: PKCS#8 for a private key, SPKI for a public key. */
export function exportPem(key: KeyObject): string {
  return key.type === 'private'
    ? (key.export({ format: 'pem', type: 'pkcs8' }) as string)
    : (key.export({ format: 'pem', type: 'spki' }) as string);
}

/** JWK export of an Ed25519 public key. */
export function exportPublicJwk(key: KeyObject): Ed25519PublicJwk {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const jwk = requireEd25519(pub, 'public').export({ format: 'jwk' });
  return { kty: 'OKP', crv: 'Ed25519', x: jwk.x! };
}

/** JWK export of an Ed25519 private key. */
export function exportPrivateJwk(key: KeyObject): Ed25519PrivateJwk {
  const jwk = requireEd25519(key, 'private').export({ format: 'jwk' });
  return { kty: 'OKP', crv: 'Ed25519', x: jwk.x!, d: jwk.d! };
}

/** The raw 32-byte public key (RFC 8032 encoding). */
export function rawPublicKey(key: KeyObject): Uint8Array {
  return fromBase64Url(exportPublicJwk(key).x);
}

/** RFC 7638 JWK thumbprint (SHA-256, base64url) of an Ed25519 public key: the key id used on the ledger. */
export function ed25519KeyId(key: KeyObject): string {
  const { x } = exportPublicJwk(key);
  // RFC 7638 §3.2: required members only, lexicographic order, no whitespace.
  return toBase64Url(sha256(new TextEncoder().encode(`{"crv":"Ed25519","kty":"OKP","x":"${x}"}`)));
}

/** Ed25519 signature (64 bytes) of `message`. */
export function signEd25519(privateKey: KeyObject, message: Uint8Array): Uint8Array {
  return sign(null, message, requireEd25519(privateKey, 'private'));
}

/** `signEd25519` on libuv's thread pool, so the event loop goes on meanwhile. */
export function signEd25519Async(privateKey: KeyObject, message: Uint8Array): Promise<Uint8Array> {
  const key = requireEd25519(privateKey, 'private');
  return new Promise((resolve, reject) => sign(null, message, key, (err, signature) => (err ? reject(err) : resolve(signature))));
}

/** True when `signature` is a valid Ed25519 signature of `message` under `publicKey`. */
export function verifyEd25519(publicKey: KeyObject, message: Uint8Array, signature: Uint8Array): boolean {
  if (signature.length !== 64) return false;
  return verify(null, message, publicKey, signature);
}
