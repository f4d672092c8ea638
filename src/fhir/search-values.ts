/**
 * Value semantics of FHIR R4 search for the parameter types @medplum/core's in-memory matcher gets wrong
 * (http://hl7.org/fhir/R4/search.html#prefix): dates as ranges with their implicit precision, numbers and
 * quantities as exact decimals with implicit precision, and uris (exact, `:below`, `:above`). Measured with
 * @medplum/core 4.5.2: `matchesSearchRequest` returned false for every `value-quantity` and every
 * `RiskAssessment?probability` query, true for `uri` prefixes without `:below` and for
 * `Observation?date=2020-01-02` against a period 2020-01-01..03, and false for
 * `_lastUpdated=eq<the exact instant>`. Pure.
 */
import { HlError } from '../kernel/index.js';

/** An exact decimal `m × 10^e` (JSON numbers are read through their shortest round-trip text). */
export interface Decimal {
  m: bigint;
  e: number;
}

/** A search value that is a number: the value and the exponent of its last significant digit. */
export interface SearchNumber {
  value: Decimal;
  /** `100` → 0, `100.00` → -2, `1e2` → 2: the implicit precision of search.html#number. */
  precision: number;
}

const decimalPattern = /^([+-]?)(\d{1,40})(?:\.(\d{1,40}))?(?:[eE]([+-]?\d{1,3}))?$/;

/** Parses a FHIR decimal (optionally with an exponent, as search values may be); undefined if it is not one. */
export function parseSearchNumber(text: string): SearchNumber | undefined {
  const m = decimalPattern.exec(text);
  if (!m) return undefined;
  const [, sign, int, frac = '', exp = '0'] = m;
  const e = Number(exp) - frac.length;
  return { value: { m: BigInt(`${sign === '-' ? '-' : ''}${int}${frac}`), e }, precision: e };
}

/** The exact decimal of a JSON number; undefined for anything else. */
export function decimalOf(value: unknown): Decimal | undefined {
  if (typeof value !== 'number' || !Number.isFinite(value)) return undefined;
  return parseSearchNumber(String(value).replace('e+', 'e'))?.value;
}

function scaled(d: Decimal, e: number): bigint {
  return d.m * 10n ** BigInt(d.e - e);
}

/** -1, 0 or 1 as `a` is less than, equal to or greater than `b` (exactly). */
export function compareDecimal(a: Decimal, b: Decimal): number {
  const e = Math.min(a.e, b.e);
  const x = scaled(a, e);
  const y = scaled(b, e);
  return x < y ? -1 : x > y ? 1 : 0;
}

function addDecimal(a: Decimal, b: Decimal): Decimal {
  const e = Math.min(a.e, b.e);
  return { m: scaled(a, e) + scaled(b, e), e };
}

function negate(d: Decimal): Decimal {
  return { m: -d.m, e: d.e };
}

/** The search prefixes of search.html#prefix. */
export const prefixes = ['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap'] as const;
export type Prefix = (typeof prefixes)[number];

/** True when `op` is one of the {@link prefixes}. */
export function isPrefix(op: string): op is Prefix {
  return (prefixes as readonly string[]).includes(op);
}

/**
 * Number comparison (search.html#number): `eq`/`ne` honour the implicit precision of the search value
 * (`100` is [99.5, 100.5)); `gt`, `lt`, `ge`, `le`, `sa`, `eb` compare with the value as given; `ap` is
 * within 10% of it.
 */
export function matchesNumber(op: Prefix, search: SearchNumber, target: Decimal): boolean {
  const s = search.value;
  const c = compareDecimal(target, s);
  switch (op) {
    case 'eq':
    case 'ne': {
      const half: Decimal = { m: 5n, e: search.precision - 1 };
      const inside = compareDecimal(target, addDecimal(s, negate(half))) >= 0 && compareDecimal(target, addDecimal(s, half)) < 0;
      return op === 'eq' ? inside : !inside;
    }
    case 'gt':
    case 'sa':
      return c > 0;
    case 'lt':
    case 'eb':
      return c < 0;
    case 'ge':
      return c >= 0;
    case 'le':
      return c <= 0;
    case 'ap': {
      // |t - s| <= |s| / 10, i.e. 10·|t - s| <= |s|
      const diff = addDecimal(target, negate(s));
      const abs = (d: Decimal): Decimal => (d.m < 0n ? negate(d) : d);
      return compareDecimal({ m: abs(diff).m * 10n, e: diff.e }, abs(s)) <= 0;
    }
  }
}

/** A half-open time range [lo, hi) in ms since the epoch; ±Infinity for an open end. */
export interface TimeRange {
  lo: number;
  hi: number;
}

const datePattern = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/**
 * The range a FHIR date, dateTime or instant covers at its precision (search.html#date): `2020` is the whole
 * year, `2020-03-05` the whole day, `…T10:20:30Z` one second, `…T10:20:30.123Z` one millisecond. Values
 * without a time zone are read in UTC (the server's zone). Undefined if `text` is not such a value.
 */
export function timeRangeOf(text: string): TimeRange | undefined {
  const m = datePattern.exec(text);
  if (!m) return undefined;
  const [, y, mo, d, hh, mi, ss, frac, zone] = m;
  const year = Number(y);
  const month = mo === undefined ? 1 : Number(mo);
  const day = d === undefined ? 1 : Number(d);
  if (month < 1 || month > 12 || day < 1 || day > 31) return undefined;
  const base = Date.UTC(year, month - 1, day);
  const check = new Date(base);
  if (check.getUTCMonth() !== month - 1 || check.getUTCDate() !== day) return undefined;
  if (mo === undefined) return { lo: Date.UTC(year, 0, 1), hi: Date.UTC(year + 1, 0, 1) };
  if (d === undefined) return { lo: Date.UTC(year, month - 1, 1), hi: Date.UTC(year, month, 1) };
  if (hh === undefined) return { lo: base, hi: Date.UTC(year, month - 1, day + 1) };
  const h = Number(hh);
  const min = Number(mi);
  const sec = ss === undefined ? 0 : Number(ss);
  if (h > 23 || min > 59 || sec > 59) return undefined;
  let offsetMs = 0;
  if (zone !== undefined && zone !== 'Z') {
    const sign = zone[0] === '-' ? -1 : 1;
    offsetMs = sign * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6))) * 60_000;
  }
  // Milliseconds from the digits themselves (no float rounding); finer digits fall inside that millisecond.
  const ms = frac === undefined ? 0 : Number(frac.padEnd(3, '0').slice(0, 3));
  const lo = base + ((h * 60 + min) * 60 + sec) * 1000 + ms - offsetMs;
  const width = ss === undefined ? 60_000 : frac === undefined ? 1000 : 10 ** (3 - Math.min(frac.length, 3));
  return { lo, hi: lo + width };
}

/**
 * The ranges a value found by a date parameter's expression covers: a date/dateTime/instant string, a
 * Period (an absent start or end is open), or a Timing's events. Other values give none.
 */
export function timeRangesOfValue(value: unknown): TimeRange[] {
  if (typeof value === 'string') {
    const r = timeRangeOf(value);
    return r ? [r] : [];
  }
  if (typeof value !== 'object' || value === null) return [];
  const o = value as { start?: unknown; end?: unknown; event?: unknown };
  if (Array.isArray(o.event)) return o.event.flatMap(timeRangesOfValue);
  if (o.start === undefined && o.end === undefined) return [];
  const start = typeof o.start === 'string' ? timeRangeOf(o.start) : undefined;
  const end = typeof o.end === 'string' ? timeRangeOf(o.end) : undefined;
  if ((o.start !== undefined && !start) || (o.end !== undefined && !end)) return [];
  return [{ lo: start ? start.lo : -Infinity, hi: end ? end.hi : Infinity }];
}

/**
 * Date comparison by ranges (search.html#prefix), search range S, target range T:
 * `eq` S contains T; `ne` it does not; `gt` T reaches past the end of S; `lt` T starts before S;
 * `ge` gt or eq; `le` lt or eq; `sa` T starts at or after the end of S; `eb` T ends at or before the start
 * of S; `ap` T overlaps S widened by 10% of the gap between now and S.
 */
export function matchesTimeRange(op: Prefix, s: TimeRange, t: TimeRange, nowMs: number): boolean {
  const eq = s.lo <= t.lo && t.hi <= s.hi;
  switch (op) {
    case 'eq':
      return eq;
    case 'ne':
      return !eq;
    case 'gt':
      return t.hi > s.hi;
    case 'lt':
      return t.lo < s.lo;
    case 'ge':
      return t.hi > s.hi || eq;
    case 'le':
      return t.lo < s.lo || eq;
    case 'sa':
      return t.lo >= s.hi;
    case 'eb':
      return t.hi <= s.lo;
    case 'ap': {
      const slack = Math.abs(nowMs - s.lo) / 10;
      return t.lo < s.hi + slack && t.hi > s.lo - slack;
    }
  }
}

/** A parsed quantity search value: `[number]|[system]|[code]` (search.html#quantity). */
export interface SearchQuantity {
  number: SearchNumber;
  /** Undefined: any system. */
  system: string | undefined;
  /** Undefined: any unit. With no system it matches `Quantity.code` or `Quantity.unit`. */
  code: string | undefined;
}

/** Splits at `|` not escaped with `\` and unescapes `\|`, `\,`, `\$` and `\\` (search.html#escaping). */
function splitBars(value: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === '\\' && i + 1 < value.length) cur += value[++i];
    else if (c === '|') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

/** Parses a quantity search value (without its prefix); throws `invalid` naming `param` if malformed. */
export function parseSearchQuantity(param: string, value: string): SearchQuantity {
  const parts = splitBars(value);
  const number = parseSearchNumber(parts[0] ?? '');
  if (!number || parts.length === 2 || parts.length > 3) {
    throw new HlError('invalid', `search parameter "${param}" needs a quantity: [prefix]number[|system|code]`);
  }
  return { number, system: parts[1] ? parts[1] : undefined, code: parts[2] ? parts[2] : undefined };
}

/**
 * Quantity comparison (search.html#quantity): the number as {@link matchesNumber}; a system must equal
 * `Quantity.system` and then the code `Quantity.code`; a code without a system matches `code` or `unit`.
 * Units are compared as given, not converted (no UCUM canonicalisation). A Money value counts as a
 * quantity in its currency (system urn:iso:std:iso:4217).
 */
export function matchesQuantity(op: Prefix, search: SearchQuantity, target: unknown): boolean {
  if (typeof target !== 'object' || target === null) return false;
  const q = target as { value?: unknown; system?: unknown; code?: unknown; unit?: unknown; currency?: unknown };
  const value = decimalOf(q.value);
  if (!value) return false;
  const system = typeof q.currency === 'string' ? 'urn:iso:std:iso:4217' : q.system;
  const code = typeof q.currency === 'string' ? q.currency : q.code;
  if (search.system !== undefined && system !== search.system) return false;
  if (search.code !== undefined) {
    if (search.system !== undefined ? code !== search.code : code !== search.code && q.unit !== search.code) return false;
  }
  return matchesNumber(op, search.number, value);
}

/**
 * Uri comparison (search.html#uri): exact and case-sensitive by default; `below` when the target starts with
 * the search value, `above` when the search value starts with the target.
 */
export function matchesUri(modifier: 'eq' | 'below' | 'above', search: string, target: unknown): boolean {
  if (typeof target !== 'string') return false;
  return modifier === 'eq' ? target === search : modifier === 'below' ? target.startsWith(search) : search.startsWith(target);
}
