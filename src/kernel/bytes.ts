/**
 * Byte helpers on plain Uint8Array (browser-safe: no Buffer, no `node:` imports).
 */
import { HlError } from './errors.js';

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** UTF-8 bytes of a string. */
export function utf8(text: string): Uint8Array {
  return utf8Encoder.encode(text);
}

/** Decodes strict UTF-8; throws `invalid` on malformed input. */
export function fromUtf8(bytes: Uint8Array): string {
  try {
    return utf8Decoder.decode(bytes);
  } catch (cause) {
    throw new HlError('invalid', 'bytes are not valid UTF-8', { cause });
  }
}

/** Concatenates byte arrays. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const p of parts) length += p.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** Constant-shape equality of two byte arrays. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

const hexChars = '0123456789abcdef';

/** Lowercase hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) out += hexChars[b >> 4]! + hexChars[b & 15]!;
  return out;
}

/** Bytes of a hex string; throws `invalid` on odd length or a non-hex character. */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw new HlError('invalid', 'not a hex string');
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const b64Alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const b64Lookup = new Int16Array(128).fill(-1);
for (let i = 0; i < 64; i++) b64Lookup[b64Alphabet.charCodeAt(i)] = i;

/** Standard padded base64 (RFC 4648 §4). */
export function toBase64(bytes: Uint8Array): string {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += b64Alphabet[n >> 18]! + b64Alphabet[(n >> 12) & 63]! + b64Alphabet[(n >> 6) & 63]! + b64Alphabet[n & 63]!;
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i]! << 16;
    out += b64Alphabet[n >> 18]! + b64Alphabet[(n >> 12) & 63]! + '==';
  } else if (rest === 2) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out += b64Alphabet[n >> 18]! + b64Alphabet[(n >> 12) & 63]! + b64Alphabet[(n >> 6) & 63]! + '=';
  }
  return out;
}

/**
 * Decodes strict standard padded base64 (RFC 4648 §4): rejects missing padding, whitespace, the URL-safe
 * alphabet and non-zero trailing bits, so one value has exactly one encoding.
 */
export function fromBase64(text: string): Uint8Array {
  if (text.length % 4 !== 0) throw new HlError('invalid', 'base64 length is not a multiple of 4');
  const pad = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  const out = new Uint8Array((text.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < text.length; i += 4) {
    const last = i + 4 === text.length;
    const v: number[] = [];
    for (let j = 0; j < 4; j++) {
      const c = text.charCodeAt(i + j);
      if (last && j >= 4 - pad) {
        v.push(0);
        continue;
      }
      const x = c < 128 ? b64Lookup[c]! : -1;
      if (x < 0) throw new HlError('invalid', 'not a base64 string');
      v.push(x);
    }
    const n = (v[0]! << 18) | (v[1]! << 12) | (v[2]! << 6) | v[3]!;
    if (last && pad === 2 && (n & 0xffff) !== 0) throw new HlError('invalid', 'non-canonical base64');
    if (last && pad === 1 && (n & 0xff) !== 0) throw new HlError('invalid', 'non-canonical base64');
    out[o++] = n >> 16;
    if (o < out.length) out[o++] = (n >> 8) & 255;
    if (o < out.length) out[o++] = n & 255;
  }
  return out;
}

/** Unpadded base64url (RFC 4648 §5), as used in JWK and ids. */
export function toBase64Url(bytes: Uint8Array): string {
  return toBase64(bytes).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Decodes unpadded base64url; throws `invalid` on anything else. */
export function fromBase64Url(text: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) throw new HlError('invalid', 'not a base64url string');
  const std = text.replace(/-/g, '+').replace(/_/g, '/');
  return fromBase64(std + '='.repeat((4 - (std.length % 4)) % 4));
}

const base32Alphabet = 'abcdefghijklmnopqrstuvwxyz234567';

/** Lowercase, unpadded base32 (RFC 4648 §6 alphabet), as in patient network ids. */
export function toBase32(bytes: Uint8Array): string {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const b of bytes) {
    buffer = ((buffer << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += base32Alphabet[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += base32Alphabet[(buffer << (5 - bits)) & 31];
  return out;
}

/** Big-endian 8-byte encoding of a non-negative integer below 2^64. */
export function uint64BE(value: bigint): Uint8Array {
  if (value < 0n || value >= 1n << 64n) throw new HlError('invalid', 'value out of uint64 range');
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, value);
  return out;
}

/** Reads a big-endian uint64 at `offset`. */
export function readUint64BE(bytes: Uint8Array, offset = 0): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(offset);
}
