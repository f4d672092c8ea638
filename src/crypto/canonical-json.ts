/**
 * RFC 8785 JSON Canonicalization Scheme (JCS), via the `canonicalize` package (the RFC author's implementation).
 */
import canonicalizeImpl from 'canonicalize';
import { HlError, utf8 } from '../kernel/index.js';

const canonicalize = canonicalizeImpl as unknown as (value: unknown) => string | undefined;

/**
 * The RFC 8785 canonical form of a JSON value, as a string. Throws `invalid` for values JSON cannot carry
 * (undefined at the top, NaN, Infinity, bigint, functions).
 */
export function canonicalJson(value: unknown): string {
  let text: string | undefined;
  try {
    text = canonicalize(value);
  } catch (cause) {
    throw new HlError('invalid', 'value cannot be canonicalized as JSON', { cause });
  }
  if (text === undefined) throw new HlError('invalid', 'value cannot be canonicalized as JSON');
  // `canonicalize` writes a nested function as the bare word `undefined`, which is not JSON: refuse that output.
  if (text.includes('undefined')) {
    try {
      JSON.parse(text);
    } catch (cause) {
      throw new HlError('invalid', 'value cannot be canonicalized as JSON', { cause });
    }
  }
  return text;
}

/** UTF-8 bytes of the RFC 8785 canonical form. */
export function canonicalBytes(value: unknown): Uint8Array {
  return utf8(canonicalJson(value));
}
