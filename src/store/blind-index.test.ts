import { describe, expect, it } from 'vitest';
import { hlErrorOf } from '../../test/hl-error.js';
import {
  blindIndexMac,
  blindIndexTerm,
  maxPrefixLength,
  normalizeString,
  numberBucket,
  termForQuery,
  termsForWrite,
  type IndexTerm,
} from './index.js';

const key = Uint8Array.from({ length: 32 }, (_, i) => i);
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('normalizeString (FHIR string search: case- and accent-insensitive)', () => {
  it.each([
    ['Müller', 'muller'],
    ['Mu\u0308ller', 'muller'],
    ['JOSÉ', 'jose'],
    ['Ｊｏｓé', 'jose'],
    ['Françoise  Ångström', 'francoise angstrom'],
    ['  O\u2019Brien\t', 'o\u2019brien'],
    ['Øyvind', 'øyvind'],
    ['ﬁona', 'fiona'],
  ])('%j → %j', (input, expected) => {
    expect(normalizeString(input)).toBe(expected);
  });
});

describe('numberBucket', () => {
  it.each([
    ['72.5', '7e1'],
    ['70', '7e1'],
    ['79.999', '7e1'],
    ['80', '8e1'],
    ['7.25', '7e0'],
    ['0.035', '3e-2'],
    ['-0.035', '-3e-2'],
    ['+100', '1e2'],
    ['1.5e3', '1e3'],
    ['0.0', '0'],
    ['-0', '0'],
    ['00012', '1e1'],
  ])('%s → %s', (value, bucket) => {
    expect(numberBucket(value)).toBe(bucket);
  });

  it.each(['', 'abc', '1.', '.5', '1e', 'NaN', 'Infinity', '1,5'])('rejects %j', (value) => {
    expect(numberBucket(value)).toBeUndefined();
  });
});

describe('termsForWrite', () => {
  it('indexes a string as its normalized value plus every prefix up to the cap', () => {
    const terms = termsForWrite({ param: 'family', kind: 'string', value: 'Müller' });
    expect(terms).toEqual([
      { kind: 'string', value: 'muller' },
      ...['m', 'mu', 'mul', 'mull', 'mulle', 'muller'].map((value) => ({ kind: 'prefix', value })),
    ]);
  });

  it(`caps prefixes at ${maxPrefixLength} code points (astral characters count once)`, () => {
    const long = '😀'.repeat(20);
    const terms = termsForWrite({ param: 'text', kind: 'prefix', value: long });
    expect(terms).toHaveLength(maxPrefixLength);
    expect(Array.from(terms[terms.length - 1]!.value)).toHaveLength(maxPrefixLength);
  });

  it('indexes dates by year and month only, adding the UTC month of a dateTime when it differs', () => {
    const values = (value: string): string[] => termsForWrite({ param: 'd', kind: 'date', value }).map((t) => t.value);
    expect(values('1939-01-27')).toEqual(['1939', '1939-01']);
    expect(values('1939')).toEqual(['1939']);
    expect(values('2021-12-31T23:30:00-02:00')).toEqual(['2021', '2021-12', '2022', '2022-01']);
    expect(values('2021-06-15T10:00:00.123Z')).toEqual(['2021', '2021-06']);
  });

  it('keeps tokens and references exact (case-sensitive)', () => {
    expect(termsForWrite({ param: 'identifier', kind: 'token', value: 'http://x|AbC' })).toEqual([{ kind: 'token', value: 'http://x|AbC' }]);
    expect(termsForWrite({ param: 'subject', kind: 'reference', value: 'Patient/1' })).toEqual([{ kind: 'reference', value: 'Patient/1' }]);
  });

  it.each([
    ['date', 'Jan 27 1939'],
    ['date', '1939-13'],
    ['date', '1939-01-27T10:00:00'],
    ['number', 'seventy'],
    ['string', '  '],
    ['token', ''],
  ] as const)('rejects a %s entry %j without echoing the value', (kind, value) => {
    const err = hlErrorOf(() => termsForWrite({ param: 'p', kind, value }, 'entry.value'));
    expect(err.code).toBe('invalid');
    expect(err.message).toContain('entry.value');
    if (value.trim() !== '') expect(err.message).not.toContain(value);
  });
});

describe('termForQuery', () => {
  it.each<[Parameters<typeof termForQuery>, IndexTerm]>([
    [['string', 'MÜLLER'], { kind: 'string', value: 'muller' }],
    [['prefix', 'Mü'], { kind: 'prefix', value: 'mu' }],
    [['prefix', 'Wolfeschlegelsteinhausenbergerdorff'], { kind: 'prefix', value: 'wolfeschlegelste' }],
    [['date', '1939'], { kind: 'date', value: '1939' }],
    [['date', '1939-01-27'], { kind: 'date', value: '1939-01' }],
    [['number', '72.1'], { kind: 'number', value: '7e1' }],
    [['token', 'ABC'], { kind: 'token', value: 'ABC' }],
  ])('%j → %j', (args, expected) => {
    expect(termForQuery(...args)).toEqual(expected);
  });

  it('finds what the write side stored: every written term of a string is a query term of some prefix', () => {
    const written = termsForWrite({ param: 'family', kind: 'string', value: 'Ångström' }).map((t) => `${t.kind}:${t.value}`);
    expect(written).toContain(`prefix:${termForQuery('prefix', 'ÅNG').value}`);
    expect(written).toContain(`string:${termForQuery('string', 'angstrom').value}`);
  });
});

describe('blindIndexTerm', () => {
  it('is HMAC-SHA-256(key, type|param|kind|value) truncated to 16 bytes (vector from Python hmac)', () => {
    // python3: hmac.new(bytes(range(32)), b'Patient|family|string|muller', hashlib.sha256).hexdigest()[:32]
    expect(hex(blindIndexTerm(blindIndexMac(key), 'Patient', 'family', { kind: 'string', value: 'muller' }))).toBe('0ae5f20908216d7846bc64a59edee4a7');
  });

  it('separates resource types, parameters, kinds and keys', () => {
    const base = hex(blindIndexTerm(blindIndexMac(key), 'Patient', 'family', { kind: 'string', value: 'smith' }));
    expect(hex(blindIndexTerm(blindIndexMac(key), 'Practitioner', 'family', { kind: 'string', value: 'smith' }))).not.toBe(base);
    expect(hex(blindIndexTerm(blindIndexMac(key), 'Patient', 'given', { kind: 'string', value: 'smith' }))).not.toBe(base);
    expect(hex(blindIndexTerm(blindIndexMac(key), 'Patient', 'family', { kind: 'prefix', value: 'smith' }))).not.toBe(base);
    expect(hex(blindIndexTerm(blindIndexMac(new Uint8Array(32)), 'Patient', 'family', { kind: 'string', value: 'smith' }))).not.toBe(base);
  });
});
