import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  compareDecimal,
  decimalOf,
  matchesNumber,
  matchesQuantity,
  matchesTimeRange,
  matchesUri,
  parseSearchNumber,
  parseSearchQuantity,
  timeRangeOf,
  timeRangesOfValue,
  type Prefix,
} from './search-values.js';

const n = (s: string) => parseSearchNumber(s)!;
const d = (x: number) => decimalOf(x)!;
const ms = (s: string) => Date.parse(s);

describe('numbers (search.html#number)', () => {
  it.each([
    // eq/ne use the implicit precision of the search value
    ['eq', '100', 99.5, true],
    ['eq', '100', 100.4999, true],
    ['eq', '100', 100.5, false],
    ['eq', '100', 99.4999, false],
    ['eq', '100.00', 100.004, true],
    ['eq', '100.00', 100.005, false],
    ['eq', '1e2', 140, true],
    ['eq', '1e2', 150, false],
    ['ne', '100', 100.5, true],
    ['ne', '100', 100, false],
    // the others compare with the value as given
    ['gt', '5.4', 5.4, false],
    ['gt', '5.4', 5.41, true],
    ['ge', '5.4', 5.4, true],
    ['lt', '5.4', 5.39, true],
    ['le', '5.4', 5.4, true],
    ['le', '5.4', 5.400001, false],
    ['sa', '0.1', 0.1, false],
    ['sa', '0.1', 0.30000000000000004, true],
    ['eb', '-2', -2.5, true],
    ['ap', '100', 110, true],
    ['ap', '100', 110.01, false],
    ['ap', '-100', -91, true],
  ] as const)('%s%s against %s is %s', (op, search, target, want) => {
    expect(matchesNumber(op as Prefix, n(search), d(target))).toBe(want);
  });

  it('compares JSON numbers exactly, as decimals', () => {
    expect(compareDecimal(d(0.1 + 0.2), d(0.3))).toBe(1);
    expect(compareDecimal(d(1e21), n('1000000000000000000000').value)).toBe(0);
    expect(compareDecimal(d(-5e-324), d(0))).toBe(-1);
    fc.assert(fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.double({ noNaN: true, noDefaultInfinity: true }), (a, b) => {
      const c = compareDecimal(d(a), d(b));
      expect(c).toBe(a < b ? -1 : a > b ? 1 : 0);
    }));
  });

  it('refuses what is not a decimal', () => {
    for (const bad of ['', 'abc', '1,5', '1.', '.5', '1e', '0x10', '1e1234', 'NaN']) expect(parseSearchNumber(bad)).toBeUndefined();
  });
});

describe('date ranges (search.html#date)', () => {
  it('reads each precision as its range, in UTC unless zoned', () => {
    expect(timeRangeOf('2020')).toEqual({ lo: ms('2020-01-01T00:00:00Z'), hi: ms('2021-01-01T00:00:00Z') });
    expect(timeRangeOf('2020-02')).toEqual({ lo: ms('2020-02-01T00:00:00Z'), hi: ms('2020-03-01T00:00:00Z') });
    expect(timeRangeOf('2020-12-31')).toEqual({ lo: ms('2020-12-31T00:00:00Z'), hi: ms('2021-01-01T00:00:00Z') });
    expect(timeRangeOf('2020-01-02T10:20:30+02:00')).toEqual({ lo: ms('2020-01-02T08:20:30Z'), hi: ms('2020-01-02T08:20:31Z') });
    expect(timeRangeOf('2020-01-02T10:20:30.123Z')).toEqual({ lo: ms('2020-01-02T10:20:30.123Z'), hi: ms('2020-01-02T10:20:30.124Z') });
    expect(timeRangeOf('2020-01-02T10:20:30.5Z')).toEqual({ lo: ms('2020-01-02T10:20:30.500Z'), hi: ms('2020-01-02T10:20:30.600Z') });
    expect(timeRangeOf('2020-01-02T10:20Z')).toEqual({ lo: ms('2020-01-02T10:20:00Z'), hi: ms('2020-01-02T10:21:00Z') });
  });

  it('refuses impossible dates', () => {
    for (const bad of ['2020-02-30', '2020-13', '2020-00-10', '20201', '2020-01-01T25:00:00Z', '2020-01-01T10:00:00+0200', 'yesterday']) {
      expect(timeRangeOf(bad)).toBeUndefined();
    }
  });

  it('reads Periods (open ends) and Timing events', () => {
    expect(timeRangesOfValue({ start: '2020-01-01' })).toEqual([{ lo: ms('2020-01-01T00:00:00Z'), hi: Infinity }]);
    expect(timeRangesOfValue({ end: '2020-01-01' })).toEqual([{ lo: -Infinity, hi: ms('2020-01-02T00:00:00Z') }]);
    expect(timeRangesOfValue({ event: ['2020', '2021'] })).toHaveLength(2);
    expect(timeRangesOfValue({ start: 'garbage' })).toEqual([]);
  });

  const day = timeRangeOf('2020-01-02')!;
  const now = ms('2030-01-01T00:00:00Z');
  it.each([
    // target: a period from 2020-01-01T10:00Z to 2020-01-03T10:00Z overlaps the day on both sides
    ['eq', { start: '2020-01-01T10:00:00Z', end: '2020-01-03T10:00:00Z' }, false],
    ['ne', { start: '2020-01-01T10:00:00Z', end: '2020-01-03T10:00:00Z' }, true],
    ['gt', { start: '2020-01-01T10:00:00Z', end: '2020-01-03T10:00:00Z' }, true],
    ['lt', { start: '2020-01-01T10:00:00Z', end: '2020-01-03T10:00:00Z' }, true],
    ['sa', { start: '2020-01-01T10:00:00Z', end: '2020-01-03T10:00:00Z' }, false],
    ['eb', { start: '2020-01-01T10:00:00Z', end: '2020-01-03T10:00:00Z' }, false],
    // an instant inside the day
    ['eq', '2020-01-02T23:59:59.999Z', true],
    ['ge', '2020-01-02T23:59:59.999Z', true],
    ['le', '2020-01-02T00:00:00Z', true],
    ['gt', '2020-01-02T23:59:59.999Z', false],
    ['lt', '2020-01-02T00:00:00Z', false],
    // after and before the day
    ['sa', '2020-01-03', true],
    ['gt', '2020-01-03T00:00:00Z', true],
    ['eb', '2020-01-01T23:59:59Z', true],
    ['lt', '2020-01-01T23:59:59Z', true],
    ['ge', '2020-01-01T23:59:59Z', false],
    // ap: 10% of the ten years between the day and now, about a year either side
    ['ap', '2020-12-01', true],
    ['ap', '2022-01-01', false],
  ] as const)('%s 2020-01-02 against %j is %s', (op, target, want) => {
    const [t] = timeRangesOfValue(target);
    expect(matchesTimeRange(op, day, t!, now)).toBe(want);
  });
});

describe('quantities and uris', () => {
  const mg = { value: 5.4, unit: 'mg', system: 'http://unitsofmeasure.org', code: 'mg' };
  it.each([
    ['5.4', true],
    ['5.4||mg', true],
    ['5.4|http://unitsofmeasure.org|mg', true],
    ['5.4|http://unitsofmeasure.org|g', false],
    ['5.4|http://other.org|mg', false],
    ['5.4||g', false],
    ['6', false],
  ])('eq %s against 5.4 mg is %s', (value, want) => {
    expect(matchesQuantity('eq', parseSearchQuantity('value-quantity', value), mg)).toBe(want);
  });

  it('matches a code without a system against the unit too, and Money by currency', () => {
    expect(matchesQuantity('eq', parseSearchQuantity('q', '5.4||milligram'), { value: 5.4, unit: 'milligram' })).toBe(true);
    expect(matchesQuantity('gt', parseSearchQuantity('q', '10|urn:iso:std:iso:4217|EUR'), { value: 12.5, currency: 'EUR' })).toBe(true);
    expect(matchesQuantity('gt', parseSearchQuantity('q', '10|urn:iso:std:iso:4217|USD'), { value: 12.5, currency: 'EUR' })).toBe(false);
  });

  it('refuses malformed quantity values, naming the parameter', () => {
    for (const bad of ['', 'mg', '5.4|x', '5.4|a|b|c', 'five']) expect(() => parseSearchQuantity('value-quantity', bad)).toThrow(/"value-quantity"/);
  });

  it('matches uris exactly and case-sensitively, below and above as prefixes', () => {
    const url = 'http://example.org/fhir/ValueSet/abc';
    expect(matchesUri('eq', url, url)).toBe(true);
    expect(matchesUri('eq', 'http://example.org/fhir/ValueSet/ab', url)).toBe(false);
    expect(matchesUri('eq', url.toUpperCase(), url)).toBe(false);
    expect(matchesUri('below', 'http://example.org/fhir/', url)).toBe(true);
    expect(matchesUri('below', 'http://example.org/other/', url)).toBe(false);
    expect(matchesUri('above', `${url}/x/y`, url)).toBe(true);
    expect(matchesUri('above', 'http://example.org/', url)).toBe(false);
  });
});
