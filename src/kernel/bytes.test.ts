import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  concatBytes,
  equalBytes,
  fromBase64,
  fromBase64Url,
  fromHex,
  fromUtf8,
  readUint64BE,
  toBase64,
  toBase32,
  toBase64Url,
  toHex,
  uint64BE,
  utf8,
} from './index.js';
import { hlErrorOf } from '../../test/hl-error.js';


const ascii = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'latin1'));

// RFC 4648 §10 test vectors.
const rfc4648 = [
  ['', ''],
  ['f', 'Zg=='],
  ['fo', 'Zm8='],
  ['foo', 'Zm9v'],
  ['foob', 'Zm9vYg=='],
  ['fooba', 'Zm9vYmE='],
  ['foobar', 'Zm9vYmFy'],
] as const;

describe('utf8 / fromUtf8', () => {
  it('round-trips text including astral characters', () => {
    const text = 'Grüße, 東京, 😀, \u2014';
    expect(Buffer.from(utf8(text)).toString('hex')).toBe(Buffer.from(text, 'utf8').toString('hex'));
    expect(fromUtf8(utf8(text))).toBe(text);
  });

  it.each([
    ['a lone 0xff byte', [0xff]],
    ['an overlong encoding of NUL', [0xc0, 0x80]],
    ['an encoded UTF-16 surrogate', [0xed, 0xa0, 0x80]],
    ['a truncated 3-byte sequence', [0xe2, 0x82]],
  ])('rejects malformed UTF-8: %s', (_name, bytes) => {
    expect(hlErrorOf(() => fromUtf8(Uint8Array.from(bytes))).code).toBe('invalid');
  });
});

describe('concatBytes / equalBytes', () => {
  it('concatenates in order, including empty parts', () => {
    expect(Array.from(concatBytes(Uint8Array.of(1, 2), new Uint8Array(0), Uint8Array.of(3)))).toEqual([1, 2, 3]);
    expect(concatBytes().length).toBe(0);
  });

  it('compares content, not identity, and rejects different lengths or any differing byte', () => {
    expect(equalBytes(Uint8Array.of(1, 2, 3), Uint8Array.of(1, 2, 3))).toBe(true);
    expect(equalBytes(new Uint8Array(0), new Uint8Array(0))).toBe(true);
    expect(equalBytes(Uint8Array.of(1, 2, 3), Uint8Array.of(1, 2))).toBe(false);
    expect(equalBytes(Uint8Array.of(1, 2, 3), Uint8Array.of(1, 2, 4))).toBe(false);
    expect(equalBytes(Uint8Array.of(0, 2, 3), Uint8Array.of(1, 2, 3))).toBe(false);
  });
});

describe('hex', () => {
  it('encodes lowercase and decodes either case', () => {
    expect(toHex(Uint8Array.of(0x00, 0x0f, 0xab, 0xff))).toBe('000fabff');
    expect(Array.from(fromHex('000FabFF'))).toEqual([0x00, 0x0f, 0xab, 0xff]);
    expect(fromHex('').length).toBe(0);
  });

  it('agrees with Buffer on random bytes in both directions', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const hex = Buffer.from(bytes).toString('hex');
        expect(toHex(bytes)).toBe(hex);
        expect(Buffer.from(fromHex(hex)).equals(Buffer.from(bytes))).toBe(true);
      }),
    );
  });

  it.each(['0', 'abc', 'zz', '0x00', ' 00', '00 ', '0g', '+1', '-1', '１２'])('rejects %j', (text) => {
    expect(hlErrorOf(() => fromHex(text)).code).toBe('invalid');
  });
});

describe('base64 (RFC 4648 §4, strict)', () => {
  it.each(rfc4648)('encodes and decodes the RFC 4648 vector %j ↔ %j', (plain, encoded) => {
    expect(toBase64(ascii(plain))).toBe(encoded);
    expect(Buffer.from(fromBase64(encoded)).toString('latin1')).toBe(plain);
  });

  it('uses the standard alphabet, + and / included', () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    const encoded = Buffer.from(all).toString('base64');
    expect(encoded).toMatch(/\+/);
    expect(encoded).toMatch(/\//);
    expect(toBase64(all)).toBe(encoded);
    expect(Array.from(fromBase64(encoded))).toEqual(Array.from(all));
  });

  it('refuses non-canonical, padded-wrong and foreign-alphabet base64 in a long string as in a short one', () => {
    const bytes = Uint8Array.from({ length: 70 }, (_, i) => (i * 37) & 255);
    const good = Buffer.from(bytes).toString('base64');
    expect(good.length).toBe(96);
    expect(Buffer.from(fromBase64(good)).equals(Buffer.from(bytes))).toBe(true);
    // 70 bytes end in one byte plus '==': the last data character carries 4 bits that must be zero.
    const lastData = good.length - 3;
    const nonCanonical = `${good.slice(0, lastData)}${good[lastData] === 'A' ? 'B' : String.fromCharCode(good.charCodeAt(lastData) + 1)}==`;
    expect(() => fromBase64(nonCanonical)).toThrow(/non-canonical/);
    expect(() => fromBase64(`${good.slice(0, -4)}-_==`)).toThrow(/not a base64 string/);
    expect(() => fromBase64(`${good.slice(0, -4)} AA=`)).toThrow(/not a base64 string/);
    expect(() => fromBase64(`${good}AAA`)).toThrow(/multiple of 4/);
  });

  it('round-trips random bytes and agrees with Buffer', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), (bytes) => {
        const encoded = Buffer.from(bytes).toString('base64');
        expect(toBase64(bytes)).toBe(encoded);
        expect(Buffer.from(fromBase64(encoded)).equals(Buffer.from(bytes))).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it.each([
    ['missing padding', 'Zg'],
    ['missing one padding character', 'Zg='],
    ['missing padding after a full group', 'Zm9vYg'],
    ['too much padding', 'Zg==='],
    ['padding only', '===='],
    ['three padding characters', 'Z==='],
    ['padding in the middle', 'Zg==Zg=='],
    ['padding before data', '=Zg='],
    ['data after padding', 'Zg=a'],
    ['a padding hole', 'Z=g='],
    ['a trailing newline', 'Zm9v\n'],
    ['a leading space', ' Zm9v'],
    ['an inner space', 'Zm 9v'],
    ['a CRLF line break', 'Zm9v\r\nZm9v'],
    ['a tab', 'Zm9\t'],
    ['URL-safe "-"', 'Zm-v'],
    ['URL-safe "_"', 'Zm_v'],
    ['URL-safe chars with padding', '-_8='],
    ['non-ASCII', 'Zm9é'],
    ['non-zero trailing bits with == (Zh==)', 'Zh=='],
    ['non-zero trailing bits with == (Zv==)', 'Zv=='],
    ['non-zero trailing bits with = (Zm9=)', 'Zm9='],
    ['non-zero trailing bits with = (AAB=)', 'AAB='],
  ])('rejects %s: %j', (_why, text) => {
    expect(hlErrorOf(() => fromBase64(text)).code).toBe('invalid');
  });

  it('accepts exactly the strings that are the canonical encoding of some bytes (checked against Buffer)', () => {
    // Start from a canonical encoding and replace one character with something close to valid.
    const noise = fc.constantFrom(...'AZaz09+/=-_ \n.'.split(''), 'B', 'h', 'Q', 'w');
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 20 }), fc.nat(), noise, (bytes, pos, ch) => {
        const good = Buffer.from(bytes).toString('base64');
        const i = pos % good.length;
        const text = good.slice(0, i) + ch + good.slice(i + 1);
        // Buffer is lenient; a string is canonical when Buffer re-encodes its decoding to the same string.
        const canonical = /^[A-Za-z0-9+/=]*$/.test(text) && Buffer.from(text, 'base64').toString('base64') === text;
        if (canonical) {
          expect(Buffer.from(fromBase64(text)).equals(Buffer.from(text, 'base64'))).toBe(true);
        } else {
          expect(hlErrorOf(() => fromBase64(text)).code).toBe('invalid');
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('base64url (RFC 4648 §5, unpadded)', () => {
  it('uses - and _ and never pads', () => {
    expect(toBase64Url(Uint8Array.of(0xfb, 0xff))).toBe('-_8');
    expect(toBase64Url(ascii('f'))).toBe('Zg');
    expect(toBase64Url(ascii('fo'))).toBe('Zm8');
    expect(toBase64Url(ascii('foo'))).toBe('Zm9v');
    expect(Array.from(fromBase64Url('-_8'))).toEqual([0xfb, 0xff]);
  });

  it('round-trips random bytes and agrees with Buffer', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), (bytes) => {
        const encoded = Buffer.from(bytes).toString('base64url');
        expect(toBase64Url(bytes)).toBe(encoded);
        expect(Buffer.from(fromBase64Url(encoded)).equals(Buffer.from(bytes))).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it.each([
    ['padding', 'Zg=='],
    ['a single padding character', 'Zm8='],
    ['standard "+"', '+/8'],
    ['standard "/"', 'ab/c'],
    ['an impossible length (4n+1)', 'Zm9vY'],
    ['whitespace', 'Zm9v '],
    ['non-zero trailing bits', 'Zh'],
    ['non-zero trailing bits (3 chars)', 'Zm9'],
  ])('rejects %s: %j', (_why, text) => {
    expect(hlErrorOf(() => fromBase64Url(text)).code).toBe('invalid');
  });
});

describe('base32 (RFC 4648 §6 alphabet, lowercase, unpadded)', () => {
  it('matches the RFC 4648 §10 test vectors', () => {
    const vectors: [string, string][] = [
      ['', ''],
      ['f', 'my'],
      ['fo', 'mzxq'],
      ['foo', 'mzxw6'],
      ['foob', 'mzxw6yq'],
      ['fooba', 'mzxw6ytb'],
      ['foobar', 'mzxw6ytboi'],
    ];
    for (const [input, expected] of vectors) expect(toBase32(ascii(input))).toBe(expected);
  });

  it('encodes 5 bits per character for any input', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const text = toBase32(bytes);
        expect(text).toMatch(/^[a-z2-7]*$/);
        expect(text.length).toBe(Math.ceil((bytes.length * 8) / 5));
      }),
    );
  });
});

describe('uint64BE / readUint64BE', () => {
  it.each([
    [0n, '0000000000000000'],
    [1n, '0000000000000001'],
    [0xffn, '00000000000000ff'],
    [2n ** 32n, '0000000100000000'],
    [2n ** 32n - 1n, '00000000ffffffff'],
    [2n ** 40n + 5n, '0000010000000005'],
    [2n ** 63n, '8000000000000000'],
    [2n ** 64n - 1n, 'ffffffffffffffff'],
  ])('encodes %s as %s (no 32-bit truncation)', (value, hex) => {
    expect(toHex(uint64BE(value))).toBe(hex);
    expect(readUint64BE(fromHex(hex))).toBe(value);
  });

  it.each([-1n, 2n ** 64n, 2n ** 70n])('rejects %s as out of range', (value) => {
    expect(hlErrorOf(() => uint64BE(value)).code).toBe('invalid');
  });

  it('agrees with Buffer.writeBigUInt64BE on random values', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (value) => {
        const b = Buffer.alloc(8);
        b.writeBigUInt64BE(value);
        expect(Buffer.from(uint64BE(value)).equals(b)).toBe(true);
        expect(readUint64BE(uint64BE(value))).toBe(value);
      }),
    );
  });

  it('reads at an offset and from a subarray view (non-zero byteOffset)', () => {
    const buf = concatBytes(Uint8Array.of(0xaa, 0xbb, 0xcc), uint64BE(2n ** 40n + 5n), Uint8Array.of(0xdd));
    expect(readUint64BE(buf, 3)).toBe(2n ** 40n + 5n);
    expect(readUint64BE(buf.subarray(3))).toBe(2n ** 40n + 5n);
    expect(readUint64BE(buf.subarray(2), 1)).toBe(2n ** 40n + 5n);
  });

  it('throws instead of reading past the end', () => {
    expect(() => readUint64BE(new Uint8Array(7))).toThrow();
    expect(() => readUint64BE(new Uint8Array(12).subarray(5))).toThrow();
  });
});
