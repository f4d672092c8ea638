/**
 * SHA-256 and HMAC-SHA-256 on node:crypto (about twice as fast as a JS implementation; LIBRARIES.md).
 */
import { createHmac, hash as nodeHash } from 'node:crypto';

/** SHA-256 of `data` (FIPS 180-4). */
export function sha256(data: Uint8Array): Uint8Array {
  return nodeHash('sha256', data, 'buffer');
}

/** HMAC-SHA-256 of `data` under `key` (RFC 2104). */
export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  return createHmac('sha256', key).update(data).digest();
}
