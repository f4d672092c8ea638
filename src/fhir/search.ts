/**
 * FHIR search (http://hl7.org/fhir/R4/search.html) over blind indexes: at write time, the values of every
 * token, reference and string SearchParameter of a resource are extracted (FHIRPath, @medplum/core) for
 * the store to index as keyed hashes; at query time, the indexable filters pick candidates and the
 * decrypted candidates are filtered exactly, by compiled matchers here (dates, numbers, quantities and uris
 * by the rules of `search-values.ts`); only `:missing` and canonical (URL) references are left to
 * @medplum/core's `matchesSearchRequest`, whose token matching cost ~0.7 ms of CPU per candidate and whose
 * date, number, quantity and uri matching is wrong (see search-values.ts). Date, number,
 * quantity and uri parameters are not blind-indexed: a search with only those scans the current resources
 * of the type. Planning also covers the result parameters (`_sort`, `_include`, `_revinclude`, `_summary`,
 * `_elements`, `_total`, `_count`, `_offset`) and one level of chaining. Pure.
 */
import { getSearchParameter, getSearchParameters, matchesSearchRequest, parseSearchRequest, type Filter, type SearchRequest } from '@medplum/core';
import { evalPath, unionBranches } from './fhirpath.js';
import type { Resource, SearchParameter } from '@medplum/fhirtypes';
import { HlError } from '../kernel/index.js';
import { loadDefinitions } from './definitions.js';
import { isResourceType, resourceTypes } from './resource-types.js';
import {
  compareDecimal,
  decimalOf,
  isPrefix,
  matchesNumber,
  matchesQuantity,
  matchesTimeRange,
  matchesUri,
  parseSearchNumber,
  parseSearchQuantity,
  timeRangeOf,
  timeRangesOfValue,
  type Decimal,
  type Prefix,
} from './search-values.js';
import { checkElementNames, summaryModes, type SummaryMode } from './summary.js';

/** A value to blind-index for search (the store's BlindIndexEntry shape). */
export interface SearchIndexValue {
  param: string;
  kind: 'token' | 'string' | 'reference';
  value: string;
}

/** One `_sort` key (search.html#sort). */
export interface SortRule {
  code: string;
  descending: boolean;
}

/**
 * One `_include` or `_revinclude` (search.html#include): resources of `sourceType` whose reference
 * parameters `params` point at (`_include`: from the matches; `_revinclude`: to the matches), optionally only
 * targets of `targetType`.
 */
export interface IncludeSpec {
  sourceType: string;
  params: string[];
  targetType: string | undefined;
}

/**
 * One chained parameter (search.html#chaining), e.g. `subject:Patient.name=smith`: the resources of
 * `targetType` matching `inner`, and the outer resources whose reference parameter `param` points at one.
 */
export interface ChainedSearch {
  param: string;
  targetType: string;
  inner: SearchPlan;
}

/** A parsed search with the blind-index criteria that narrow it (several values of one criterion: OR). */
export interface SearchPlan {
  resourceType: string;
  /** The filters checked by @medplum/core after decryption (`:missing`, canonical references). */
  request: SearchRequest;
  /** The filters checked here after decryption (all others). */
  matchers: ((resource: Resource) => boolean)[];
  /** `prefix` for FHIR's default starts-with string search, `string` for :exact (whole normalized value). */
  criteria: { param: string; kind: 'token' | 'string' | 'prefix' | 'reference'; value: string[] }[];
  /** Ids from `_id`: candidates come straight from the primary key (intersected with `criteria`). */
  ids: string[] | null;
  chains: ChainedSearch[];
  count: number;
  offset: number;
  /** `_summary` (default `false`); `count` asks for the total only. */
  summary: SummaryMode;
  /** `_elements`, or null. */
  elements: string[] | null;
  /** `_total`: with `none` the Bundle carries no total. */
  total: 'none' | 'estimate' | 'accurate';
  /** `_sort`; empty for the default order, newest first. */
  sort: SortRule[];
  include: IncludeSpec[];
  revinclude: IncludeSpec[];
}

/** Options of {@link planSearch}. */
export interface PlanOptions {
  /** The current time (ms since the epoch), for the `ap` prefix on dates; `ap` is refused without it. */
  nowMs?: number;
}

const maxIndexValues = 200;
const resultParams = new Set(['_count', '_offset', '_summary', '_total', '_format', '_pretty', '_sort', '_include', '_revinclude', '_elements']);
/** Parameters that exist in FHIR (or only in @medplum/core) but are not implemented: refused, never silently ignored. */
const unsupportedParams = new Set(['_contained', '_containedType', '_has', '_list', '_query', '_filter', '_text', '_content', '_compartment', '_type']);
/** Parameter types searched and sorted here; `composite` and `special` (Location `near`) are refused. */
const supportedTypes = new Set(['string', 'token', 'reference', 'date', 'number', 'quantity', 'uri']);
/** Modifiers accepted per parameter type (search.html#modifiers); a reference also takes a resource type. */
const modifiersByType: Record<string, ReadonlySet<string>> = {
  string: new Set(['exact', 'contains', 'missing']),
  token: new Set(['not', 'text', 'of-type', 'missing']),
  reference: new Set(['missing']),
  date: new Set(['missing']),
  number: new Set(['missing']),
  quantity: new Set(['missing']),
  uri: new Set(['below', 'above', 'missing']),
};

const specializedExpressions = new Map<string, string | null>();

/**
 * A parameter's expression cut down to the branches about `resourceType` (null if none is): R4's shared
 * parameters (patient, code, date...) are unions over dozens of types, and evaluating every branch for every
 * resource dominated ingest.
 */
function expressionFor(resourceType: string, sp: SearchParameter): string | null {
  const key = `${resourceType}\u0000${sp.code}`;
  let expression = specializedExpressions.get(key);
  if (expression !== undefined) return expression;
  const branches = typeof sp.expression === 'string'
    ? unionBranches(sp.expression).filter((b) => {
        const head = /^\(?\s*([A-Z][A-Za-z]+)\b/.exec(b)?.[1];
        return head === undefined || head === resourceType || head === 'Resource' || head === 'DomainResource';
      })
    : [];
  expression = branches.length > 0 ? branches.join(' | ') : null;
  specializedExpressions.set(key, expression);
  return expression;
}

/** The values a parameter's expression finds in a resource (none if it does not evaluate). */
function valuesOf(resource: Resource, sp: SearchParameter): unknown[] {
  const expression = expressionFor(resource.resourceType, sp);
  if (expression === null) return [];
  try {
    return evalPath(expression, resource);
  } catch {
    return [];
  }
}

const indexPlans = new Map<string, { code: string; kind: SearchIndexValue['kind']; sp: SearchParameter }[]>();

function indexPlan(resourceType: string): { code: string; kind: SearchIndexValue['kind']; sp: SearchParameter }[] {
  let plan = indexPlans.get(resourceType);
  if (plan) return plan;
  loadDefinitions();
  // _id is the primary key (looked up directly), so it needs no blind index.
  plan = Object.values(getSearchParameters(resourceType) ?? {})
    .filter((sp) => sp.code !== '_id' && (sp.type === 'token' || sp.type === 'reference' || sp.type === 'string') && expressionFor(resourceType, sp) !== null)
    .map((sp) => ({ code: sp.code!, kind: sp.type as SearchIndexValue['kind'], sp }));
  indexPlans.set(resourceType, plan);
  return plan;
}

function tokenValues(v: unknown): string[] {
  if (typeof v === 'string' || typeof v === 'boolean') return [String(v)];
  if (typeof v !== 'object' || v === null) return [];
  const o = v as Record<string, unknown>;
  if (Array.isArray(o.coding)) return o.coding.flatMap(tokenValues);
  const code = typeof o.code === 'string' ? o.code : typeof o.value === 'string' ? o.value : undefined;
  if (code === undefined) return [];
  const system = typeof o.system === 'string' ? o.system : undefined;
  // `system|` (any code of a system) is not indexed: rare, and the exact matcher handles it on a scan.
  return system ? [code, `${system}|${code}`] : [code, `|${code}`];
}

function stringValues(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (typeof v !== 'object' || v === null) return [];
  const o = v as Record<string, unknown>;
  const parts: unknown[] = [o.text, o.family, o.given, o.prefix, o.suffix, o.line, o.city, o.district, o.state, o.postalCode, o.country];
  return parts.flat().filter((p): p is string => typeof p === 'string');
}

/**
 * The search value of a literal reference (references.html#literal), version dropped: `Type/id` for a
 * relative one, the whole URL for an absolute one, which names a resource on that server and so must not
 * match a local `Type/id` (nor the other way round).
 */
function referenceKey(reference: string): string | null {
  const m = referencePattern.exec(reference);
  return m ? (m[1] ?? '') + m[2]! : null;
}

const referencePattern = /^([a-z][a-z0-9+.-]*:\/\/[^\s?#]+\/)?([A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/;

function referenceValues(v: unknown): string[] {
  const ref = (v as { reference?: unknown } | null)?.reference;
  const key = typeof ref === 'string' ? referenceKey(ref) : null;
  return key === null ? [] : [key];
}

/**
 * The index entry of a version whose values are not all indexed (more than {@link maxIndexValues}, or one
 * longer than 512 characters): every indexed search of its type also takes it as a candidate, so the exact
 * match after decryption decides and nothing is silently missed.
 */
export const partlyIndexed: SearchIndexValue = { param: '_partly-indexed', kind: 'token', value: 'true' };

/**
 * The blind-index values of a resource version: every token, reference and string search parameter, or the
 * first {@link maxIndexValues} of them and {@link partlyIndexed}.
 */
export function searchIndexOf(resource: { resourceType: string }): SearchIndexValue[] {
  const out = new Map<string, SearchIndexValue>();
  let partly = false;
  for (const { code, kind, sp } of indexPlan(resource.resourceType)) {
    for (const v of valuesOf(resource as Resource, sp)) {
      const extracted = kind === 'token' ? tokenValues(v) : kind === 'reference' ? referenceValues(v) : stringValues(v);
      for (const value of extracted) {
        if (value.length === 0) continue;
        if (value.length > 512 || out.size >= maxIndexValues) {
          partly = true;
          continue;
        }
        out.set(`${code}\u0000${kind}\u0000${value}`, { param: code, kind, value });
      }
    }
  }
  return partly ? [...out.values(), partlyIndexed] : [...out.values()];
}

/**
 * The references a resource's reference parameter `param` holds, as {@link referenceKey} gives them
 * (`Type/id` when relative, the whole URL when absolute); contained (`#x`) and logical references give
 * none. For `_include`, `_revinclude` and chaining.
 */
export function referencesOf(resource: { resourceType: string }, param: string): string[] {
  const sp = getSearchParameter(resource.resourceType, param);
  if (sp?.type !== 'reference') return [];
  return valuesOf(resource as Resource, sp).flatMap(referenceValues);
}

function intOf(name: string, value: string | null, fallback: number, max: number): number {
  if (value === null) return fallback;
  if (!/^\d{1,9}$/.test(value)) throw new HlError('invalid', `search parameter "${name}" must be a whole number`);
  return Math.min(Number(value), max);
}

/** FHIR string normalization for comparison: accents and case folded (search.html#string). */
function fold(value: string): string {
  return value.normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase();
}

/** Splits a value at the commas that are not escaped (search.html#escaping: OR), keeping other escapes. */
export function splitOr(value: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === '\\' && i + 1 < value.length) {
      const next = value[++i]!;
      cur += next === ',' ? ',' : `\\${next}`;
    } else if (c === ',') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

function unescapeValue(value: string): string {
  return value.replace(/\\([\\|$,])/g, '$1');
}

/** The search parameter `code` of a type, if it is one this server searches by. */
function supportedParam(resourceType: string, code: string): SearchParameter | undefined {
  const sp = getSearchParameter(resourceType, code);
  if (!sp || !supportedTypes.has(sp.type!) || sp.code === 'phonetic' || unsupportedParams.has(code)) return undefined;
  return sp;
}

/** A compiled filter: its exact matcher (null: @medplum/core's) and the blind-index criterion that narrows it. */
interface CompiledFilter {
  matcher: ((r: Resource) => boolean) | null;
  criterion: SearchPlan['criteria'][number] | null;
}

const fhirId = /^[A-Za-z0-9\-.]{1,64}$/;

/** The texts a token value carries for `:text` (search.html#token): CodeableConcept.text, Coding.display, Identifier.type.text. */
function tokenTexts(v: unknown): string[] {
  if (typeof v !== 'object' || v === null) return [];
  const o = v as { text?: unknown; display?: unknown; coding?: unknown; type?: unknown };
  const out: string[] = [];
  if (typeof o.text === 'string') out.push(o.text);
  if (typeof o.display === 'string') out.push(o.display);
  if (Array.isArray(o.coding)) out.push(...o.coding.flatMap(tokenTexts));
  if (o.type !== undefined) out.push(...tokenTexts(o.type));
  return out;
}

/** `:of-type` (search.html#token): an Identifier whose type has the coding `system|code` and whose value is `value`. */
function matchesOfType(want: [string, string, string], v: unknown): boolean {
  const o = v as { type?: { coding?: { system?: unknown; code?: unknown }[] }; value?: unknown } | null;
  if (typeof o !== 'object' || o === null || o.value !== want[2]) return false;
  return (o.type?.coding ?? []).some((c) => c.system === want[0] && c.code === want[1]);
}

/**
 * Compiles one filter. Values are parsed now, so a malformed one is a 400 naming the parameter whatever the
 * data. `:missing` and canonical (URL) references are left to @medplum/core (matcher null).
 */
function compileFilter(f: Filter, sp: SearchParameter, options: PlanOptions): CompiledFilter {
  const op = String(f.operator);
  if (op === 'missing') {
    if (f.value !== 'true' && f.value !== 'false') throw new HlError('invalid', `${f.code}:missing must be true or false`);
    return { matcher: null, criterion: null };
  }
  const values = splitOr(f.value);
  if (values.some((v) => v.length === 0)) throw new HlError('invalid', `search parameter "${f.code}" has an empty value`);
  const typed = (r: Resource): unknown[] => valuesOf(r, sp);
  const code = f.code;
  switch (sp.type) {
    case 'string': {
      const plain = values.map(unescapeValue);
      const wants = op === 'exact' ? plain : plain.map(fold);
      const matcher = (r: Resource): boolean => {
        const have = typed(r).flatMap(stringValues);
        return wants.some((want) =>
          have.some((h) => (op === 'exact' ? h === want : op === 'contains' ? fold(h).includes(want) : fold(h).startsWith(want))),
        );
      };
      const kind = op === 'exact' ? 'string' : op === 'contains' ? null : 'prefix';
      return { matcher, criterion: kind ? { param: code, kind, value: plain } : null };
    }
    case 'token': {
      if (op === 'text') {
        const wants = values.map((v) => fold(unescapeValue(v)));
        return { matcher: (r) => typed(r).flatMap(tokenTexts).some((t) => wants.some((w) => fold(t).startsWith(w))), criterion: null };
      }
      if (op === 'of-type') {
        const wants = values.map((v) => {
          const parts = v.split('|');
          if (parts.length !== 3 || parts.some((p) => p.length === 0)) throw new HlError('invalid', `${code}:of-type needs system|code|value`);
          return parts.map(unescapeValue) as [string, string, string];
        });
        return { matcher: (r) => typed(r).some((v) => wants.some((w) => matchesOfType(w, v))), criterion: null };
      }
      // eq and :not, by the same terms the blind index stores (`code`, `system|code`, `|code`), so the two
      // agree; `system|` is any code of that system. Case-sensitive, as the index is.
      const wants = values.map(unescapeValue);
      const matches = (r: Resource): boolean => {
        const have = typed(r).flatMap(tokenValues);
        return wants.some((w) => (w.endsWith('|') && w.length > 1 ? have.some((t) => t.startsWith(w) && t.length > w.length) : have.includes(w)));
      };
      if (op === 'not') return { matcher: (r) => !matches(r), criterion: null };
      const indexable = code !== '_id' && wants.every((w) => !w.endsWith('|'));
      return { matcher: matches, criterion: indexable ? { param: code, kind: 'token', value: wants } : null };
    }
    case 'reference': {
      const targets = (sp.target ?? []) as string[];
      const wants: { exact?: string; id?: string }[] = [];
      for (const v of values) {
        const key = referenceKey(v);
        if (key !== null) wants.push({ exact: key });
        else if (fhirId.test(v)) wants.push(targets.length === 1 ? { exact: `${targets[0]}/${v}` } : { id: `/${v}` });
        // A canonical URL (or other non-local reference): @medplum/core compares it as written.
        else return { matcher: null, criterion: null };
      }
      const exact = wants.every((w) => w.exact !== undefined) ? wants.map((w) => w.exact!) : null;
      const matcher = (r: Resource): boolean => {
        const refs = referencesOf(r, code);
        // A bare id is a local resource's: an absolute reference names one elsewhere.
        return wants.some((w) => refs.some((ref) => (w.exact !== undefined ? ref === w.exact : !ref.includes('://') && ref.endsWith(w.id!))));
      };
      return { matcher, criterion: exact ? { param: code, kind: 'reference', value: exact } : null };
    }
    case 'date': {
      const prefix = searchPrefix(code, op);
      const ranges = values.map((v) => {
        const range = timeRangeOf(v);
        if (!range) throw new HlError('invalid', `search parameter "${code}" needs a FHIR date, dateTime or instant`);
        return range;
      });
      if (prefix === 'ap' && options.nowMs === undefined) throw new HlError('invalid', 'the ap prefix needs the current time');
      const nowMs = options.nowMs ?? 0;
      const matcher = (r: Resource): boolean => {
        const have = typed(r).flatMap(timeRangesOfValue);
        if (have.length === 0) return false;
        // ne: no value equal (the negation of eq over the resource), not "some value unequal".
        if (prefix === 'ne') return ranges.some((s) => !have.some((t) => matchesTimeRange('eq', s, t, nowMs)));
        return ranges.some((s) => have.some((t) => matchesTimeRange(prefix, s, t, nowMs)));
      };
      return { matcher, criterion: null };
    }
    case 'number': {
      const prefix = searchPrefix(code, op);
      const numbers = values.map((v) => {
        const n = parseSearchNumber(v);
        if (!n) throw new HlError('invalid', `search parameter "${code}" needs a number`);
        return n;
      });
      const matcher = (r: Resource): boolean => {
        const have = typed(r).map(decimalOf).filter((d): d is Decimal => d !== undefined);
        if (have.length === 0) return false;
        if (prefix === 'ne') return numbers.some((s) => !have.some((t) => matchesNumber('eq', s, t)));
        return numbers.some((s) => have.some((t) => matchesNumber(prefix, s, t)));
      };
      return { matcher, criterion: null };
    }
    case 'quantity': {
      const prefix = searchPrefix(code, op);
      const quantities = values.map((v) => parseSearchQuantity(code, v));
      const matcher = (r: Resource): boolean => {
        const have = typed(r);
        if (have.length === 0) return false;
        if (prefix === 'ne') return quantities.some((s) => !have.some((t) => matchesQuantity('eq', s, t)));
        return quantities.some((s) => have.some((t) => matchesQuantity(prefix, s, t)));
      };
      return { matcher, criterion: null };
    }
    case 'uri': {
      if (op !== 'eq' && op !== 'below' && op !== 'above') throw new HlError('invalid', `search parameter "${code}" takes no prefix`);
      const wants = values.map(unescapeValue);
      return { matcher: (r) => typed(r).some((t) => wants.some((w) => matchesUri(op, w, t))), criterion: null };
    }
    default:
      throw new HlError('invalid', `search parameter "${code}" (${sp.type}) is not supported`);
  }
}

function searchPrefix(code: string, op: string): Prefix {
  if (!isPrefix(op)) throw new HlError('invalid', `search parameter "${code}" does not take the modifier "${op.slice(0, 20)}"`);
  return op;
}

/** The reference search parameters of a type (for `*` in `_include`/`_revinclude` and the CapabilityStatement). */
function referenceParamsOf(resourceType: string): SearchParameter[] {
  loadDefinitions();
  return Object.values(getSearchParameters(resourceType) ?? {}).filter((sp) => sp.type === 'reference' && sp.code !== '_compartment' && expressionFor(resourceType, sp) !== null);
}

/** True when reference parameter `sp` may point at `targetType` (no target list: any type). */
function canTarget(sp: SearchParameter, targetType: string): boolean {
  return !sp.target || sp.target.length === 0 || (sp.target as string[]).includes(targetType);
}

function parseInclude(resourceType: string, name: '_include' | '_revinclude', value: string): IncludeSpec {
  const what = `${name}=${value.slice(0, 100)}`;
  if (value === '*' && name === '_include') {
    return { sourceType: resourceType, params: referenceParamsOf(resourceType).map((sp) => sp.code!), targetType: undefined };
  }
  const parts = value.split(':');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p.length === 0)) {
    throw new HlError('invalid', `${what}: must be SourceType:parameter or SourceType:parameter:TargetType${name === '_include' ? ', or *' : ''}`);
  }
  const [sourceType, param, targetType] = parts as [string, string, string | undefined];
  if (!isResourceType(sourceType)) throw new HlError('invalid', `${what}: "${sourceType}" is not a resource type`);
  if (targetType !== undefined && !isResourceType(targetType)) throw new HlError('invalid', `${what}: "${targetType}" is not a resource type`);
  if (name === '_include' && sourceType !== resourceType) {
    throw new HlError('invalid', `${what}: the source type must be the searched type ${resourceType} (_include:iterate is not supported)`);
  }
  if (name === '_revinclude' && targetType !== undefined && targetType !== resourceType) {
    throw new HlError('invalid', `${what}: the target type must be the searched type ${resourceType}`);
  }
  const pointsHere = (sp: SearchParameter): boolean => name === '_include' || canTarget(sp, resourceType);
  if (param === '*') {
    const params = referenceParamsOf(sourceType).filter((sp) => pointsHere(sp) && (targetType === undefined || canTarget(sp, targetType)));
    return { sourceType, params: params.map((sp) => sp.code!), targetType };
  }
  const sp = getSearchParameter(sourceType, param);
  if (sp?.type !== 'reference' || param === '_compartment') throw new HlError('invalid', `${what}: "${param}" is not a reference search parameter of ${sourceType}`);
  if (targetType !== undefined && !canTarget(sp, targetType)) throw new HlError('invalid', `${what}: ${sourceType}.${param} cannot reference ${targetType}`);
  if (!pointsHere(sp)) throw new HlError('invalid', `${what}: ${sourceType}.${param} cannot reference ${resourceType}`);
  return { sourceType, params: [param], targetType };
}

function parseSort(resourceType: string, value: string): SortRule[] {
  return value.split(',').map((raw) => {
    const descending = raw.startsWith('-');
    const code = descending ? raw.slice(1) : raw;
    if (code === '_id' || code === '_lastUpdated') return { code, descending };
    if (code.length === 0 || !supportedParam(resourceType, code)) {
      throw new HlError('invalid', `_sort: "${code.slice(0, 64)}" is not a search parameter of ${resourceType} this server sorts by`);
    }
    return { code, descending };
  });
}

/**
 * A chained parameter, `reference[:Type].param[:modifier]` (search.html#chaining), one level deep. The target
 * type comes from the modifier or, without one, from the types the reference may point at that define
 * `param`; when several do, the search is ambiguous and refused, naming the choices.
 */
function parseChain(resourceType: string, key: string, value: string, options: PlanOptions): ChainedSearch {
  const dot = key.indexOf('.');
  const [outer, typeModifier, ...rest] = key.slice(0, dot).split(':') as [string, string | undefined, ...string[]];
  const innerKey = key.slice(dot + 1);
  const innerCode = innerKey.split(':')[0]!;
  const shown = key.slice(0, 100);
  if (rest.length > 0 || typeModifier === '') throw new HlError('invalid', `chained parameter "${shown}" is malformed`);
  const sp = getSearchParameter(resourceType, outer);
  if (!sp || outer === '_compartment') throw new HlError('invalid', `unknown search parameter "${outer.slice(0, 64)}" for ${resourceType} in chained parameter "${shown}"`);
  if (sp.type !== 'reference') {
    throw new HlError('invalid', `chained parameter "${shown}": "${outer}" is a ${sp.type} parameter; only reference parameters can be chained`);
  }
  if (innerKey.includes('.')) throw new HlError('invalid', `chained parameter "${shown}": only one level of chaining is supported`);
  let targetType: string;
  if (typeModifier !== undefined) {
    if (!isResourceType(typeModifier) || !canTarget(sp, typeModifier)) {
      throw new HlError('invalid', `chained parameter "${shown}": ${resourceType}.${outer} cannot reference "${typeModifier.slice(0, 64)}"`);
    }
    targetType = typeModifier;
  } else {
    const targets = sp.target && sp.target.length > 0 ? (sp.target as string[]) : [...resourceTypes];
    const candidates = targets.filter((t) => innerCode === '_id' || innerCode === '_lastUpdated' || supportedParam(t, innerCode) !== undefined);
    if (candidates.length === 0) {
      throw new HlError('invalid', `chained parameter "${shown}": no type that ${resourceType}.${outer} can reference has a search parameter "${innerCode.slice(0, 64)}"`);
    }
    if (candidates.length > 1) {
      const choices = [...candidates].sort().slice(0, 6).map((t) => `${outer}:${t}.${innerKey}`);
      throw new HlError('invalid', `chained parameter "${shown}" is ambiguous: use a type modifier, e.g. ${choices.join(' or ')}${candidates.length > 6 ? ' …' : ''}`);
    }
    targetType = candidates[0]!;
  }
  if (resultParams.has(innerCode)) throw new HlError('invalid', `chained parameter "${shown}": "${innerCode}" is not a search parameter`);
  const inner = planSearch(targetType, new URLSearchParams([[innerKey, value]]), options);
  return { param: outer, targetType, inner };
}

/**
 * Parses a search query of `resourceType` (search.html); throws `invalid` naming an unknown parameter or
 * modifier, a malformed value or an unsupported feature (strict handling, so a typo is not silently
 * ignored). Messages name parameters, never their values (which may be PHI).
 */
export function planSearch(resourceType: string, query: URLSearchParams, options: PlanOptions = {}): SearchPlan {
  loadDefinitions();
  const filters: Filter[] = [];
  const chains: ChainedSearch[] = [];
  for (const [key, value] of query) {
    if (key.startsWith('_has:') || key === '_has') throw new HlError('invalid', 'search parameter "_has" (reverse chaining) is not supported yet');
    if (key.includes('.')) {
      chains.push(parseChain(resourceType, key, value, options));
      continue;
    }
    const [code, modifier, ...rest] = key.split(':') as [string, string | undefined, ...string[]];
    if (unsupportedParams.has(code)) throw new HlError('invalid', `search parameter "${code}" is not supported yet`);
    if (resultParams.has(code)) {
      if (modifier === 'iterate' && (code === '_include' || code === '_revinclude')) throw new HlError('invalid', `${code}:iterate is not supported yet`);
      if (modifier !== undefined) throw new HlError('invalid', `search parameter "${code}" takes no modifier`);
      continue;
    }
    const sp = getSearchParameter(resourceType, code);
    if (!sp) throw new HlError('invalid', `unknown search parameter "${code.slice(0, 64)}" for ${resourceType}`);
    if (!supportedParam(resourceType, code)) throw new HlError('invalid', `search parameter "${code}" (${sp.type}${code === 'phonetic' ? ', phonetic matching' : ''}) is not supported`);
    if (rest.length > 0) throw new HlError('invalid', `search parameter "${key.slice(0, 64)}" has more than one modifier`);
    if (modifier !== undefined) {
      const typeModifier = sp.type === 'reference' && isResourceType(modifier);
      if (!typeModifier && !modifiersByType[sp.type!]!.has(modifier)) {
        throw new HlError('invalid', `search parameter "${code}" does not take the modifier ":${modifier.slice(0, 32)}"`);
      }
    }
    // A type modifier on a reference (`subject:Patient=123`) is the reference `Patient/123` (search.html#reference).
    let entry: [string, string] = [key, value];
    if (sp.type === 'reference' && modifier !== undefined && isResourceType(modifier)) {
      const ids = splitOr(value);
      if (!ids.every((id) => fhirId.test(id))) throw new HlError('invalid', `search parameter "${code}:${modifier}" needs ids`);
      entry = [code, ids.map((id) => `${modifier}/${id}`).join(',')];
    }
    // Parsed one by one so that a malformed value is reported with its parameter.
    try {
      filters.push(...(parseSearchRequest(`${resourceType}?${new URLSearchParams([entry]).toString()}`).filters ?? []));
    } catch (cause) {
      const wanted = sp.type === 'date' ? 'a FHIR date, dateTime or instant' : `a ${sp.type} value`;
      throw new HlError('invalid', `search parameter "${code}" needs ${wanted}`, { cause });
    }
  }
  const parsed: SearchRequest = { resourceType: resourceType as SearchRequest['resourceType'], filters };
  const criteria: SearchPlan['criteria'] = [];
  const matchers: SearchPlan['matchers'] = [];
  const medplumFilters: Filter[] = [];
  let ids: string[] | null = null;
  for (const f of parsed.filters ?? []) {
    const sp = getSearchParameter(resourceType, f.code)!;
    const compiled = compileFilter(f, sp, options);
    if (compiled.matcher) matchers.push(compiled.matcher);
    else medplumFilters.push(f);
    if (compiled.criterion) criteria.push(compiled.criterion);
    if (f.code === '_id' && String(f.operator) === 'eq') {
      const values = f.value.split(',');
      if (!values.every((v) => fhirId.test(v))) throw new HlError('invalid', 'an _id value is not a FHIR id');
      ids = ids === null ? values : ids.filter((i) => values.includes(i));
    }
  }

  const summaryValue = query.get('_summary') ?? 'false';
  if (!(summaryModes as readonly string[]).includes(summaryValue)) {
    throw new HlError('invalid', `_summary must be one of ${summaryModes.join(', ')}`);
  }
  const summary = summaryValue as SummaryMode;
  const elementsValue = query.get('_elements');
  const elements = elementsValue === null ? null : elementsValue.split(',');
  if (elements !== null) {
    if (summary !== 'false') throw new HlError('invalid', '_elements cannot be combined with _summary');
    checkElementNames(resourceType, elements);
  }
  const total = query.get('_total') ?? 'accurate';
  if (total !== 'none' && total !== 'estimate' && total !== 'accurate') throw new HlError('invalid', '_total must be none, estimate or accurate');

  return {
    resourceType,
    request: { ...parsed, filters: medplumFilters },
    matchers,
    criteria,
    ids,
    chains,
    count: intOf('_count', query.get('_count'), 20, 1000),
    offset: intOf('_offset', query.get('_offset'), 0, 1_000_000),
    summary,
    elements,
    total,
    sort: query.getAll('_sort').flatMap((v) => parseSort(resourceType, v)),
    include: query.getAll('_include').map((v) => parseInclude(resourceType, '_include', v)),
    revinclude: query.getAll('_revinclude').map((v) => parseInclude(resourceType, '_revinclude', v)),
  };
}

/**
 * True when `resource` satisfies every filter of the plan (exact semantics, after decryption).
 * `chainTargets[i]` holds the `Type/id` of the resources matching `plan.chains[i]`; a resource matches the
 * chain when its reference parameter points at one of them.
 */
export function matchesSearch(resource: { resourceType: string }, plan: SearchPlan, chainTargets: readonly ReadonlySet<string>[] = []): boolean {
  const r = resource as Resource;
  for (const m of plan.matchers) if (!m(r)) return false;
  for (let i = 0; i < plan.chains.length; i++) {
    const targets = chainTargets[i];
    if (!targets || !referencesOf(r, plan.chains[i]!.param).some((ref) => targets.has(ref))) return false;
  }
  return plan.request.filters!.length === 0 || matchesSearchRequest(r, plan.request);
}

type SortValue = string | number | Decimal;

/** The smallest and largest sort value of a resource for a `_sort` code, or undefined when it has none. */
function sortValuesOf(resource: Resource, code: string): { min: SortValue; max: SortValue } | undefined {
  let values: SortValue[];
  let lows: SortValue[] | undefined;
  if (code === '_id') values = typeof resource.id === 'string' ? [resource.id] : [];
  else {
    const sp = getSearchParameter(resource.resourceType, code)!;
    const raw = valuesOf(resource, sp);
    switch (sp.type) {
      case 'string':
        values = raw.flatMap(stringValues).map(fold);
        break;
      case 'token':
        values = raw.flatMap((v) => tokenValues(v).filter((t) => !t.includes('|')));
        break;
      case 'reference':
        values = raw.flatMap(referenceValues);
        break;
      case 'date': {
        const ranges = raw.flatMap(timeRangesOfValue);
        lows = ranges.map((t) => t.lo);
        values = ranges.map((t) => t.hi);
        break;
      }
      case 'number':
        values = raw.map(decimalOf).filter((d): d is Decimal => d !== undefined);
        break;
      case 'quantity':
        values = raw.map((q) => decimalOf((q as { value?: unknown } | null)?.value)).filter((d): d is Decimal => d !== undefined);
        break;
      default:
        values = raw.filter((v): v is string => typeof v === 'string');
    }
  }
  if (values.length === 0) return undefined;
  const lo = lows ?? values;
  return { min: lo.reduce((a, b) => (compareSortValues(b, a) < 0 ? b : a)), max: values.reduce((a, b) => (compareSortValues(b, a) > 0 ? b : a)) };
}

function compareSortValues(a: SortValue, b: SortValue): number {
  if (typeof a === 'object' && typeof b === 'object') return compareDecimal(a, b);
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Sorts matches by `rules` (search.html#sort): ascending by each resource's smallest value, descending by its
 * largest (dates by the start and the end of their range); resources without a value come last either way;
 * ties fall to `tieBreak`, which must be a total order so that pages stay stable. `_lastUpdated` sorts by
 * `meta.lastUpdated`, `_id` by id.
 */
export function sortMatches<T>(
  items: readonly T[],
  rules: readonly SortRule[],
  resourceOf: (item: T) => { resourceType: string },
  tieBreak: (a: T, b: T) => number,
): T[] {
  const keyed = items.map((item) => {
    const resource = resourceOf(item) as Resource;
    return { item, keys: rules.map((rule) => sortValuesOf(resource, rule.code)) };
  });
  keyed.sort((a, b) => {
    for (let i = 0; i < rules.length; i++) {
      const ka = a.keys[i];
      const kb = b.keys[i];
      if (ka === undefined || kb === undefined) {
        if (ka !== kb) return ka === undefined ? 1 : -1;
        continue;
      }
      const c = rules[i]!.descending ? compareSortValues(kb.max, ka.max) : compareSortValues(ka.min, kb.min);
      if (c !== 0) return c;
    }
    return tieBreak(a.item, b.item);
  });
  return keyed.map((k) => k.item);
}

/**
 * What this server supports for searching one resource type, for its CapabilityStatement
 * (capabilitystatement.html: rest.resource.searchParam, searchInclude, searchRevInclude).
 */
export function searchCapabilitiesOf(resourceType: string): {
  searchParam: { name: string; definition: string; type: string }[];
  searchInclude: string[];
  searchRevInclude: string[];
} {
  loadDefinitions();
  const searchParam = Object.values(getSearchParameters(resourceType) ?? {})
    .filter((sp) => supportedParam(resourceType, sp.code!) && expressionFor(resourceType, sp) !== null)
    .map((sp) => ({
      name: sp.code!,
      // @medplum/core defines the Resource-level parameters without their R4 canonical URL.
      definition: sp.url ?? `http://hl7.org/fhir/SearchParameter/Resource-${sp.code!.slice(1)}`,
      type: sp.type!,
    }));
  const searchInclude = ['*', ...referenceParamsOf(resourceType).map((sp) => `${resourceType}:${sp.code}`)];
  const searchRevInclude = resourceTypes.flatMap((source) =>
    referenceParamsOf(source)
      .filter((sp) => sp.target && (sp.target as string[]).includes(resourceType))
      .map((sp) => `${source}:${sp.code}`),
  );
  return { searchParam, searchInclude, searchRevInclude };
}
