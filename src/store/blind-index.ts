/**
 * Keyed blind indexes for searching encrypted records (DESIGN.md §5, in the manner of CipherSweet): a search
 * value never reaches the database; only `HMAC-SHA-256(indexKey, resourceType|param|kind|normalized value)`
 * truncated to 16 bytes does. This file derives the normalized values (the "terms") that get hashed, for
 * writes and for queries, and hashes them.
 *
 * What a database reader without the key learns (the leakage we accept, documented for auditors):
 * - equality: which current resources of one type share a term for one parameter (and how many do), so
 *   frequency analysis against public distributions (common family names, birth months) can guess popular
 *   values; no term can be computed or checked without the index key.
 * - strings are also indexed by every prefix of 1..{@link maxPrefixLength} code points, which reveals the
 *   prefix-equality structure of values (two names share their first k letters) and, from the number of
 *   rows, a value's length up to that cap. The cap bounds storage (at most 17 rows a string) and the
 *   structure leaked for long values such as address lines; a longer query prefix is truncated to the cap
 *   and the caller filters the candidates exactly after decryption. A minimum prefix above 1 would not
 *   hide much (the 1-letter classes are unions of the 2-letter ones) and would break FHIR's single-letter
 *   `name=J` search, so it is 1.
 * - dates are indexed only as year and year-month buckets and numbers as sign/decimal-exponent/first-digit
 *   buckets, so a reader sees coarse equality only (e.g. "born the same month"), never an exact birth date;
 *   callers filter candidates exactly after decryption.
 * Tokens (identifier values, codes) and references are exact and case-sensitive, as FHIR token search is.
 */
import { HlError, utf8 } from '../kernel/index.js';
import { hmacSha256With } from '../crypto/index.js';

/** What a blind-index entry indexes, and how its value is normalized. */
export const BlindIndexKind = {
  token: 'token',
  string: 'string',
  reference: 'reference',
  prefix: 'prefix',
  date: 'date',
  number: 'number',
} as const;
export type BlindIndexKind = (typeof BlindIndexKind)[keyof typeof BlindIndexKind];

const kinds: ReadonlySet<string> = new Set(Object.values(BlindIndexKind));

/** True when `kind` is one of the {@link BlindIndexKind}s. */
export function isBlindIndexKind(kind: unknown): kind is BlindIndexKind {
  return typeof kind === 'string' && kinds.has(kind);
}

/**
 * One value to index for a resource version, chosen by the caller (the FHIR layer extracts them from the
 * search parameters). On write, `string` indexes the normalized value and its prefixes, `prefix` only the
 * prefixes, `date` and `number` their buckets; `token` and `reference` the exact value.
 */
export interface BlindIndexEntry {
  /** The search parameter name, e.g. `family`, `identifier`, `birthdate` (no `|`). */
  param: string;
  kind: BlindIndexKind;
  value: string;
}

/** Strings are indexed by prefixes of 1..maxPrefixLength Unicode code points (after normalization). */
export const maxPrefixLength = 16;
/** Length of a stored blind-index term, in bytes (HMAC-SHA-256 truncated; 128 bits: no practical collisions). */
export const blindIndexTermBytes = 16;

/**
 * FHIR string-search normalization (http.html#string: case- and accent-insensitive): NFKD, combining marks
 * removed, lowercased, whitespace runs collapsed to one space and trimmed. `Müller` → `muller`, `ＪＯＳÉ` → `jose`.
 */
export function normalizeString(value: string): string {
  return value
    .normalize('NFKD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .replace(/\s+/gu, ' ')
    .trim();
}

/** The prefixes of a normalized string, 1..min(length, maxPrefixLength) code points. */
function prefixesOf(normalized: string): string[] {
  const points = Array.from(normalized);
  const out: string[] = [];
  for (let n = 1; n <= Math.min(points.length, maxPrefixLength); n++) out.push(points.slice(0, n).join(''));
  return out;
}

const datePattern =
  /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?)?)?$/;

interface ParsedDate {
  year: string;
  month: string | undefined;
  /** Year and month of the same instant in UTC, when the value has a time and a zone. */
  utc: { year: string; month: string } | undefined;
}

function parseDate(value: string): ParsedDate | undefined {
  const m = datePattern.exec(value);
  if (!m) return undefined;
  const [, year, month, day, hh, mm, , zone] = m;
  if (month !== undefined && (Number(month) < 1 || Number(month) > 12)) return undefined;
  if (day !== undefined && (Number(day) < 1 || Number(day) > 31)) return undefined;
  let utc: ParsedDate['utc'];
  if (hh !== undefined && mm !== undefined && zone !== undefined) {
    const ms = Date.parse(value);
    if (Number.isNaN(ms)) return undefined;
    const iso = new Date(ms).toISOString();
    utc = { year: iso.slice(0, 4), month: iso.slice(0, 7) };
  }
  return { year: year!, month: month === undefined ? undefined : `${year}-${month}`, utc };
}

const numberPattern = /^([+-]?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/;

/**
 * The bucket of a decimal number: sign, decimal exponent and first significant digit, e.g. `72.5` → `7e1`,
 * `-0.035` → `-3e-2`, `0` → `0`. Computed on the decimal string, so `0.1` is exact. Undefined if not a number.
 */
export function numberBucket(value: string): string | undefined {
  const m = numberPattern.exec(value.trim());
  if (!m) return undefined;
  const [, sign, intPart, fracPart = '', expPart = '0'] = m;
  const digits = intPart! + fracPart;
  const first = digits.search(/[1-9]/);
  if (first < 0) return '0';
  const exponent = intPart!.length - 1 - first + Number(expPart);
  return `${sign === '-' ? '-' : ''}${digits[first]}e${exponent}`;
}

/** A normalized value under a kind, before keyed hashing. */
export interface IndexTerm {
  kind: BlindIndexKind;
  value: string;
}

/**
 * The terms a written entry is stored under. Throws `invalid` (naming `expression`, never the value) for
 * an empty value, a date that is not a FHIR date/dateTime/instant, or a number that is not a decimal.
 */
export function termsForWrite(entry: BlindIndexEntry, expression = 'value'): IndexTerm[] {
  switch (entry.kind) {
    case 'token':
    case 'reference':
      if (entry.value === '') throw new HlError('invalid', `${expression} is empty`);
      return [{ kind: entry.kind, value: entry.value }];
    case 'string':
    case 'prefix': {
      const normalized = normalizeString(entry.value);
      if (normalized === '') throw new HlError('invalid', `${expression} is empty after normalization`);
      const prefixes = prefixesOf(normalized).map((value) => ({ kind: 'prefix' as const, value }));
      return entry.kind === 'string' ? [{ kind: 'string', value: normalized }, ...prefixes] : prefixes;
    }
    case 'date': {
      const d = parseDate(entry.value);
      if (!d) throw new HlError('invalid', `${expression} is not a FHIR date, dateTime or instant`);
      const values = new Set<string>([d.year]);
      if (d.month !== undefined) values.add(d.month);
      // A dateTime near a month boundary may fall in another month in UTC; index both so either reading finds it.
      if (d.utc) values.add(d.utc.year).add(d.utc.month);
      return [...values].map((value) => ({ kind: 'date', value }));
    }
    case 'number': {
      const bucket = numberBucket(entry.value);
      if (bucket === undefined) throw new HlError('invalid', `${expression} is not a decimal number`);
      return [{ kind: 'number', value: bucket }];
    }
  }
}

/**
 * The term a query value looks up. `string` matches the whole normalized value; `prefix` values that start
 * with it (truncated to maxPrefixLength: candidates to filter); `date` a year bucket for `YYYY` and a month
 * bucket for anything finer (values written with only a year are found by the year bucket only); `number`
 * the bucket of the value. Candidates of `prefix`, `date` and `number` MUST be filtered exactly after
 * decryption.
 */
export function termForQuery(kind: BlindIndexKind, value: string): IndexTerm {
  switch (kind) {
    case 'token':
    case 'reference':
      return { kind, value };
    case 'string':
      return { kind, value: normalizeString(value) };
    case 'prefix':
      return { kind, value: Array.from(normalizeString(value)).slice(0, maxPrefixLength).join('') };
    case 'date': {
      const d = parseDate(value);
      if (!d) throw new HlError('invalid', 'a date query value is not a FHIR date, dateTime or instant');
      return { kind, value: d.month ?? d.year };
    }
    case 'number': {
      const bucket = numberBucket(value);
      if (bucket === undefined) throw new HlError('invalid', 'a number query value is not a decimal number');
      return { kind, value: bucket };
    }
  }
}

const namePattern = /^[^|]{1,128}$/;

/** True when `name` can be a resource type or parameter inside a term (non-empty, no `|`, ≤ 128 chars). */
export function isIndexName(name: string): boolean {
  return namePattern.test(name);
}

/**
 * The stored blind-index term: `HMAC-SHA-256(indexKey, resourceType|param|kind|value)` truncated to
 * {@link blindIndexTermBytes}, with `mac` the {@link blindIndexMac} of the index key. `resourceType` and
 * `param` MUST NOT contain `|` (so the input is unambiguous).
 */
export function blindIndexTerm(mac: BlindIndexMac, resourceType: string, param: string, term: IndexTerm): Uint8Array {
  return mac(utf8(`${resourceType}|${param}|${term.kind}|${term.value}`)).subarray(0, blindIndexTermBytes);
}

/** HMAC-SHA-256 under the index key, made once for many terms. */
export type BlindIndexMac = (message: Uint8Array) => Uint8Array;

/** The {@link BlindIndexMac} of an index key. */
export function blindIndexMac(indexKey: Uint8Array): BlindIndexMac {
  return hmacSha256With(indexKey);
}
