/**
 * Identifiers: random nonces and org ids derived from names. Browser-safe (Web Crypto `getRandomValues`).
 */
import { toBase64Url } from './bytes.js';
import { HlError } from './errors.js';

/** `n` cryptographically random bytes. */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  globalThis.crypto.getRandomValues(out);
  return out;
}

/** A random 128-bit nonce, base64url. */
export function newNonce(): string {
  return toBase64Url(randomBytes(16));
}

/**
 * An organization id from a display name: lowercase ASCII letters, digits and dashes, 2–63 characters.
 * It is the C2SP signed-note key name, so it never holds spaces or `+`.
 */
export function orgIdFromName(name: string): string {
  const id = name
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
  if (!isOrgId(id)) throw new HlError('invalid', 'organization name must contain at least two letters or digits');
  return id;
}

/** True for a well-formed organization id. */
export function isOrgId(id: string): boolean {
  return /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])$/.test(id);
}
