/**
 * Staff passwords: scrypt (RFC 7914, node:crypto) with a random 16-byte salt per password, compared in
 * constant time. An unknown user costs the same scrypt as a known one, so timing does not tell them apart.
 */
import { scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { HlError, fromBase64, randomBytes, toBase64 } from '../kernel/index.js';

/** A stored password hash. */
export interface PasswordHash {
  alg: 'scrypt';
  /** CPU/memory cost (a power of two), block size and parallelism. */
  N: number;
  r: number;
  p: number;
  /** base64 */
  salt: string;
  /** base64, 32 bytes */
  hash: string;
}

/** Cost of new hashes: 2^15 × 8 × 128 bytes = 32 MiB and about 0.1 s per check. */
const defaults = { N: 2 ** 15, r: 8, p: 1 };
const keyBytes = 32;
/** Shortest password accepted for a staff account. */
export const minPasswordLength = 12;

function derive(password: string, salt: Uint8Array, cost: { N: number; r: number; p: number }): Promise<Buffer> {
  const options: ScryptOptions = { N: cost.N, r: cost.r, p: cost.p, maxmem: 256 * cost.N * cost.r };
  return new Promise((resolve, reject) => scrypt(password.normalize('NFC'), salt, keyBytes, options, (err, key) => (err ? reject(err) : resolve(key))));
}

/** Hashes a new password; `invalid` when it is shorter than {@link minPasswordLength} or over 1,024 characters. */
export async function hashPassword(password: string): Promise<PasswordHash> {
  if (password.length < minPasswordLength) throw new HlError('invalid', `a password needs at least ${minPasswordLength} characters`);
  if (password.length > 1024) throw new HlError('invalid', 'a password has at most 1,024 characters');
  const salt = randomBytes(16);
  const hash = await derive(password, salt, defaults);
  return { alg: 'scrypt', ...defaults, salt: toBase64(salt), hash: toBase64(hash) };
}

/** A hash of a random password, checked against when the user is unknown so that both cost the same. */
let decoy: Promise<PasswordHash> | undefined;

function isSaneCost(h: PasswordHash): boolean {
  return h.alg === 'scrypt' && Number.isInteger(Math.log2(h.N)) && h.N >= 2 ** 14 && h.N <= 2 ** 20 && h.r >= 1 && h.r <= 32 && h.p >= 1 && h.p <= 4;
}

/**
 * Checks `password` against `stored` (undefined for an unknown user, which still pays one scrypt); throws
 * `login` ("wrong username or password", the same for both) when it does not match.
 */
export async function verifyPassword(password: string, stored: PasswordHash | undefined): Promise<void> {
  decoy ??= hashPassword(toBase64(randomBytes(24)));
  const h = stored !== undefined && isSaneCost(stored) ? stored : await decoy;
  const expected = fromBase64(h.hash);
  const actual = await derive(password.slice(0, 1024), fromBase64(h.salt), h);
  const same = expected.length === actual.length && timingSafeEqual(expected, actual);
  if (!same || stored === undefined || h !== stored) throw new HlError('login', 'wrong username or password');
}
