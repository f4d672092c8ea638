import { describe, expect, it } from 'vitest';
import { categoriesOf, categoryRestrictionsOf, formatScopes, intersectScopes, parseScope, parseScopes, scopePermits, type Interaction, type ScopeContext } from './index.js';

const lab = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
const vitals = 'http://terminology.hl7.org/CodeSystem/observation-category|vital-signs';

describe('parseScope', () => {
  it.each([
    ['patient/Observation.rs', { context: 'patient', resourceType: 'Observation', interactions: 'rs', categories: null }],
    ['user/*.cruds', { context: 'user', resourceType: '*', interactions: 'cruds', categories: null }],
    ['system/*.read', { context: 'system', resourceType: '*', interactions: 'rs', categories: null }],
    ['system/Patient.write', { context: 'system', resourceType: 'Patient', interactions: 'cud', categories: null }],
    ['user/Encounter.*', { context: 'user', resourceType: 'Encounter', interactions: 'cruds', categories: null }],
    ['patient/Condition.c', { context: 'patient', resourceType: 'Condition', interactions: 'c', categories: null }],
    [`patient/Observation.rs?category=${lab}`, { context: 'patient', resourceType: 'Observation', interactions: 'rs', categories: [lab] }],
    [`user/Observation.r?category=${lab},${vitals}`, { categories: [lab, vitals] }],
    ['user/Observation.rs?category=http%3A%2F%2Fx.org%7Clab', { categories: ['http://x.org|lab'] }],
    ['patient/Observation.rs?code=http://loinc.org|1234-5', { categories: null, unsupportedRestriction: 'code' }],
  ])('parses %s', (text, expected) => {
    expect(parseScope(text)).toMatchObject({ kind: 'resource', ...expected });
  });

  it.each(['launch/patient', 'openid', 'fhirUser', 'offline_access', 'online_access', 'launch'])('keeps %s as a scope that names no resources', (text) => {
    expect(parseScope(text)).toEqual({ kind: 'other', value: text });
  });

  it.each([
    ['patient/Observation.sr', /in that order/],
    ['patient/Observation.rr', /in that order/],
    ['patient/Observation.x', /in that order/],
    ['patient/Observation.', /unknown scope/],
    ['clinic/Observation.rs', /unknown scope/],
    ['patient/Unicorn.rs', /no R4 resource type/],
    ['patient/observation.rs', /unknown scope/],
    ['patient/Observation.rs?', /empty restriction/],
    ['patient/Observation.rs?category=', /empty category/],
    ['admin', /unknown scope/],
  ])('refuses %s', (text, message) => {
    expect(() => parseScope(text)).toThrow(message);
  });

  it('formats v1 scopes in v2 letters and drops duplicates', () => {
    expect(formatScopes(parseScopes('patient/Observation.read  user/*.* patient/Observation.rs launch/patient'))).toBe('patient/Observation.rs user/*.cruds launch/patient');
    expect(formatScopes(parseScopes(`user/Observation.rs?category=${lab}`))).toBe(`user/Observation.rs?category=${lab}`);
  });
});

describe('scopePermits', () => {
  type Row = [string, ScopeContext | ScopeContext[], string, Interaction, string[] | undefined, 'permit' | 'deny'];
  const rows: Row[] = [
    ['patient/Observation.rs', 'patient', 'Observation', 'r', undefined, 'permit'],
    ['patient/Observation.rs', 'patient', 'Observation', 's', undefined, 'permit'],
    ['patient/Observation.rs', 'patient', 'Observation', 'c', undefined, 'deny'],
    ['patient/Observation.rs', 'patient', 'Condition', 'r', undefined, 'deny'],
    ['patient/Observation.rs', 'user', 'Observation', 'r', undefined, 'deny'],
    ['patient/Observation.rs', ['user', 'patient'], 'Observation', 'r', undefined, 'permit'],
    ['user/*.cruds', 'user', 'Observation', 'd', undefined, 'permit'],
    ['user/*.cruds', 'user', '*', 's', undefined, 'permit'],
    ['user/Observation.cruds', 'user', '*', 's', undefined, 'deny'],
    ['system/*.read', 'system', 'Patient', 'r', undefined, 'permit'],
    ['system/*.read', 'system', 'Patient', 's', undefined, 'permit'],
    ['system/*.read', 'system', 'Patient', 'u', undefined, 'deny'],
    ['system/*.write', 'system', 'Patient', 'u', undefined, 'permit'],
    ['system/*.write', 'system', 'Patient', 'r', undefined, 'deny'],
    // Granular scopes: a category the resource has, in the scope's system.
    [`patient/Observation.rs?category=${lab}`, 'patient', 'Observation', 'r', undefined, 'deny'],
    [`patient/Observation.rs?category=${lab}`, 'patient', 'Observation', 'r', [lab], 'permit'],
    [`patient/Observation.rs?category=${lab}`, 'patient', 'Observation', 'r', [vitals, lab], 'permit'],
    [`patient/Observation.rs?category=${lab}`, 'patient', 'Observation', 'r', [vitals], 'deny'],
    [`patient/Observation.rs?category=${lab}`, 'patient', 'Observation', 'r', ['http://other.org|laboratory'], 'deny'],
    [`patient/Observation.rs?category=${lab}`, 'patient', 'Observation', 'r', ['laboratory'], 'deny'],
    ['patient/Observation.rs?category=laboratory', 'patient', 'Observation', 'r', ['http://other.org|laboratory'], 'permit'],
    ['patient/Observation.rs?category=|food', 'patient', 'Observation', 'r', ['|food'], 'permit'],
    ['patient/Observation.rs?category=|food', 'patient', 'Observation', 'r', ['http://x|food'], 'deny'],
    [`patient/Observation.rs?category=${lab} patient/Observation.rs`, 'patient', 'Observation', 'r', undefined, 'permit'],
    // A restriction by anything but category grants nothing.
    ['patient/Observation.rs?code=http://loinc.org|1234-5', 'patient', 'Observation', 'r', ['http://loinc.org|1234-5'], 'deny'],
    ['launch/patient openid', 'patient', 'Patient', 'r', undefined, 'deny'],
  ];
  it.each(rows)('%s in %j: %s.%s with categories %j → %s', (scope, context, resourceType, interaction, category, effect) => {
    const d = scopePermits(parseScopes(scope), { context, resourceType, interaction, ...(category ? { category } : {}) });
    expect(d.effect).toBe(effect);
  });

  it('names the scope a denied request needs, and whether a category would do', () => {
    const none = scopePermits(parseScopes('patient/Condition.rs'), { context: 'patient', resourceType: 'Observation', interaction: 'r' });
    expect(none).toMatchObject({ effect: 'deny', required: 'patient/Observation.r', restricted: false });
    const some = scopePermits(parseScopes(`user/Observation.rs?category=${lab}`), { context: 'user', resourceType: 'Observation', interaction: 's' });
    expect(some).toMatchObject({ effect: 'deny', required: 'user/Observation.s', restricted: true });
  });
});

describe('intersectScopes', () => {
  it.each([
    ['system/*.cruds', 'system/Observation.rs', 'system/Observation.rs'],
    ['system/Observation.rs', 'system/*.cruds', 'system/Observation.rs'],
    ['system/*.cruds', 'system/Observation.rs system/Condition.r', 'system/Observation.rs system/Condition.r'],
    ['user/*.cruds', 'user/*.rs', 'user/*.rs'],
    ['user/*.read', 'user/*.rs offline_access', 'user/*.rs'],
    ['user/*.rs offline_access', 'user/*.rs offline_access', 'user/*.rs offline_access'],
    ['patient/*.rs', 'user/*.cruds', ''],
    ['system/Observation.cud', 'system/Observation.rs', ''],
    ['system/Observation.rs', 'system/Condition.rs', ''],
    [`user/Observation.rs`, `user/Observation.r?category=${lab}`, `user/Observation.r?category=${lab}`],
    [`user/Observation.rs?category=${lab},${vitals}`, `user/*.rs?category=${lab}`, `user/Observation.rs?category=${lab}`],
    [`user/Observation.rs?category=${vitals}`, `user/*.rs?category=${lab}`, ''],
    ['user/Observation.rs?code=1234-5', 'user/*.cruds', ''],
  ])('%s ∩ %s = %s', (a, b, expected) => {
    expect(formatScopes(intersectScopes(parseScopes(a), parseScopes(b)))).toBe(expected);
  });
});

describe('categoriesOf and categoryRestrictionsOf', () => {
  it.each([
    [{ category: [{ coding: [{ system: 'http://s', code: 'a' }, { code: 'b' }] }, { coding: [{ system: 'http://t', code: 'c' }] }] }, ['http://s|a', '|b', 'http://t|c']],
    [{ category: { coding: [{ system: 'http://s', code: 'a' }] } }, ['http://s|a']],
    [{ category: ['food', 'medication'] }, ['|food', '|medication']],
    [{ category: [{ text: 'no coding' }] }, []],
    [{}, []],
  ])('reads the categories of %j', (resource, expected) => {
    expect(categoriesOf(resource)).toEqual(expected);
  });

  it('lists the values of each plain category parameter, ignoring modified ones', () => {
    const q = new URLSearchParams(`category=${encodeURIComponent(`${lab},${vitals}`)}&category=x&category:not=y&code=z`);
    expect(categoryRestrictionsOf(q)).toEqual([[lab, vitals], ['x']]);
    expect(categoryRestrictionsOf(new URLSearchParams('category=a\\,b'))).toEqual([['a,b']]);
  });
});
