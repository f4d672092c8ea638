/**
 * Identifiers: random nonces and org ids derived from names. Browser-safe (Web Crypto `getRandomValues`).
 */
import { toBase64Url, toHex } from './bytes.js';
import { HlError } from './errors.js';

/** Random bytes drawn ahead: one `getRandomValues` call serves many salts, IVs and ids. */
const pool = new Uint8Array(8192);
let poolAt = pool.length;
/** Requests longer than this are drawn directly. */
const pooledMax = 256;

/**
 * `n` cryptographically random bytes. Short requests come from a pool drawn ahead (a system call costs more
 * than the bytes), each byte handed out once and zeroed in the pool as it leaves.
 */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  if (n > pooledMax) {
    // getRandomValues fills at most 65,536 bytes a call.
    for (let at = 0; at < n; at += 65_536) globalThis.crypto.getRandomValues(out.subarray(at, Math.min(n, at + 65_536)));
    return out;
  }
  if (poolAt + n > pool.length) {
    globalThis.crypto.getRandomValues(pool);
    poolAt = 0;
  }
  out.set(pool.subarray(poolAt, poolAt + n));
  pool.fill(0, poolAt, poolAt + n);
  poolAt += n;
  return out;
}

/** A random 128-bit nonce, base64url. */
export function newNonce(): string {
  return toBase64Url(randomBytes(16));
}

/**
 * A new resource id: an RFC 9562 version 7 UUID (48-bit Unix milliseconds, then 74 random bits). Ids made
 * later sort later, so a store's B-trees keyed by id grow at their right edge instead of taking each new row
 * on a random page. The time it shows is the version's own `meta.lastUpdated`, which the ledger's batch time
 * shows as well.
 */
export function newResourceId(nowMs: number = Date.now()): string {
  const b = randomBytes(16);
  let t = Math.floor(nowMs);
  for (let i = 5; i >= 0; i--) {
    b[i] = t % 256;
    t = Math.floor(t / 256);
  }
  b[6] = (b[6]! & 0x0f) | 0x70;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = toHex(b);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
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
