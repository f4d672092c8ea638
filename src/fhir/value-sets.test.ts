import type { CodeSystem, ValueSet } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import type { Terminology } from './definitions.js';
import { ValueSetExpander, type ValueSetExpansion } from './value-sets.js';

const cs = (url: string, concept: CodeSystem['concept'], content: CodeSystem['content'] = 'complete'): CodeSystem => ({
  resourceType: 'CodeSystem',
  url,
  status: 'active',
  content,
  concept,
});
const vs = (url: string, compose: ValueSet['compose'], expansion?: ValueSet['expansion']): ValueSet => ({
  resourceType: 'ValueSet',
  url,
  status: 'active',
  ...(compose ? { compose } : {}),
  ...(expansion ? { expansion } : {}),
});

const codeSystems = [
  cs('http://x/colours', [{ code: 'red' }, { code: 'blue', concept: [{ code: 'navy', concept: [{ code: 'midnight' }] }] }]),
  cs('http://x/sizes', [{ code: 'S' }, { code: 'M' }, { code: 'L' }]),
  cs('http://x/fragment', [{ code: 'a' }], 'fragment'),
];
const valueSets = [
  vs('http://x/vs/colours', { include: [{ system: 'http://x/colours' }] }),
  vs('http://x/vs/listed', { include: [{ system: 'http://x/sizes', concept: [{ code: 'S' }, { code: 'M' }] }, { system: 'http://x/unlisted', concept: [{ code: 'Q' }] }] }),
  vs('http://x/vs/union', { include: [{ valueSet: ['http://x/vs/colours|1.0'] }, { system: 'http://x/sizes' }], exclude: [{ system: 'http://x/colours', concept: [{ code: 'navy' }] }] }),
  vs('http://x/vs/intersection', { include: [{ system: 'http://x/sizes', valueSet: ['http://x/vs/listed'] }] }),
  vs('http://x/vs/expanded', undefined, { timestamp: '2020-01-01', contains: [{ system: 'http://x/e', code: 'one', contains: [{ system: 'http://x/e', code: 'two' }] }, { system: 'http://x/e', code: 'group', abstract: true }] }),
  vs('http://x/vs/filter', { include: [{ system: 'http://x/colours', filter: [{ property: 'concept', op: 'is-a', value: 'blue' }] }] }),
  vs('http://x/vs/missing-cs', { include: [{ system: 'http://x/nowhere' }] }),
  vs('http://x/vs/fragment', { include: [{ system: 'http://x/fragment' }] }),
  vs('http://x/vs/loop-a', { include: [{ valueSet: ['http://x/vs/loop-b'] }] }),
  vs('http://x/vs/loop-b', { include: [{ valueSet: ['http://x/vs/loop-a'] }] }),
];
const terminology: Terminology = {
  valueSet: (url) => valueSets.find((v) => v.url === url.split('|')[0]),
  codeSystem: (url) => codeSystems.find((c) => c.url === url.split('|')[0]),
};

const codesOf = (e: ValueSetExpansion): string[] => (e.kind === 'enumerated' ? [...e.codes].sort() : []);

describe('ValueSetExpander', () => {
  const expander = new ValueSetExpander(terminology);

  it('includes every concept of a whole CodeSystem, nested ones too', () => {
    const e = expander.expand('http://x/vs/colours');
    expect(codesOf(e)).toEqual(['blue', 'midnight', 'navy', 'red']);
    expect(e.kind === 'enumerated' && e.systemCodes.has('http://x/colours|navy')).toBe(true);
  });

  it('includes listed concepts only, even of a CodeSystem it does not have', () => {
    const e = expander.expand('http://x/vs/listed|4.0.1');
    expect(codesOf(e)).toEqual(['M', 'Q', 'S']);
    expect(e.kind === 'enumerated' && e.systemCodes.has('http://x/unlisted|Q')).toBe(true);
  });

  it('unions included ValueSets and systems and applies exclude', () => {
    expect(codesOf(expander.expand('http://x/vs/union'))).toEqual(['L', 'M', 'S', 'blue', 'midnight', 'red']);
  });

  it('intersects the system and valueSet parts of one include', () => {
    expect(codesOf(expander.expand('http://x/vs/intersection'))).toEqual(['M', 'S']);
  });

  it('reads an expansion, nested contains included and abstract entries left out', () => {
    expect(codesOf(expander.expand('http://x/vs/expanded'))).toEqual(['one', 'two']);
  });

  it.each([
    ['http://x/vs/filter', /filter/],
    ['http://x/vs/missing-cs', /not in the definitions/],
    ['http://x/vs/fragment', /not complete/],
    ['http://x/vs/loop-a', /includes itself/],
    ['http://x/vs/unknown', /not in the definitions/],
  ])('reports %s as not enumerable', (url, reason) => {
    const e = expander.expand(url);
    expect(e.kind).toBe('not-enumerable');
    expect(e.kind === 'not-enumerable' && reason.test(e.reason)).toBe(true);
  });

  it.each([
    ['http://hl7.org/fhir/ValueSet/mimetypes|4.0.1', ['text/plain', 'application/fhir+json', 'text/html; charset=utf-8'], ['text', 'a b/c', '', '/json']],
    ['http://hl7.org/fhir/ValueSet/currencies', ['EUR', 'USD'], ['eur', 'EURO', '€']],
  ])('checks the grammar of %s instead of listing codes', (url, good, bad) => {
    const e = expander.expand(url);
    expect(e.kind).toBe('pattern');
    if (e.kind !== 'pattern') return;
    for (const code of good) expect(e.pattern.test(code), code).toBe(true);
    for (const code of bad) expect(e.pattern.test(code), code).toBe(false);
  });

  it('caches per canonical URL, ignoring |version', () => {
    expect(expander.expand('http://x/vs/colours|9')).toBe(expander.expand('http://x/vs/colours'));
  });
});
