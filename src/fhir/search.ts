/**
 * FHIR search (http://hl7.org/fhir/R4/search.html) over blind indexes: at write time, the values of every
 * token, reference and string SearchParameter of a resource are extracted (FHIRPath, @medplum/core) for
 * the store to index as keyed hashes; at query time, the indexable filters pick candidates and
 * @medplum/core's `matchesSearchRequest` filters the decrypted candidates exactly, so every prefix and
 * modifier it supports is honoured. Pure.
 */
import { getSearchParameter, getSearchParameters, matchesSearchRequest, parseSearchRequest, type SearchRequest } from '@medplum/core';
import { evalPath } from './fhirpath.js';
import type { Resource, SearchParameter } from '@medplum/fhirtypes';
import { HlError } from '../kernel/index.js';
import { loadDefinitions } from './definitions.js';

/** A value to blind-index for search (the store's BlindIndexEntry shape). */
export interface SearchIndexValue {
  param: string;
  kind: 'token' | 'string' | 'reference';
  value: string;
}

/** A parsed search with the blind-index criteria that narrow it (several values of one criterion: OR). */
export interface SearchPlan {
  request: SearchRequest;
  /** `prefix` for FHIR's default starts-with string search, `string` for :exact (whole normalized value). */
  criteria: { param: string; kind: 'token' | 'string' | 'prefix' | 'reference'; value: string[] }[];
  /** Ids from `_id`: candidates come straight from the primary key (intersected with `criteria`). */
  ids: string[] | null;
  count: number;
  offset: number;
  /** `_summary=count`: the total only. */
  summaryCount: boolean;
}

const maxIndexValues = 200;
const resultParams = new Set(['_count', '_offset', '_summary', '_total', '_format', '_pretty']);
/** Result parameters that exist in FHIR but are not implemented yet: refused, never silently ignored. */
const unsupportedParams = new Set(['_sort', '_elements', '_include', '_revinclude', '_contained', '_containedType', '_has', '_list', '_query', '_filter', '_text', '_content']);

/** Splits an expression at its top-level `|` (not inside parentheses or quotes). */
function unionBranches(expression: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const c = expression[i];
    if (c === "'" && expression[i - 1] !== '\\') quoted = !quoted;
    else if (!quoted && c === '(') depth++;
    else if (!quoted && c === ')') depth--;
    else if (!quoted && depth === 0 && c === '|') {
      out.push(expression.slice(start, i).trim());
      start = i + 1;
    }
  }
  out.push(expression.slice(start).trim());
  return out;
}

const specialized = new Map<string, { code: string; kind: SearchIndexValue['kind']; expression: string }[]>();

/**
 * The indexable parameters of a type with their expressions cut down to the branches about that type: R4's
 * shared parameters (patient, code, date...) are unions over dozens of types, and evaluating every branch
 * for every resource dominated ingest.
 */
function indexPlan(resourceType: string): { code: string; kind: SearchIndexValue['kind']; expression: string }[] {
  let plan = specialized.get(resourceType);
  if (plan) return plan;
  plan = [];
  for (const sp of indexableParams(resourceType)) {
    const branches = unionBranches(sp.expression!).filter((b) => {
      const head = /^\(?\s*([A-Z][A-Za-z]+)\b/.exec(b)?.[1];
      return head === undefined || head === resourceType || head === 'Resource' || head === 'DomainResource';
    });
    if (branches.length > 0) plan.push({ code: sp.code!, kind: sp.type as SearchIndexValue['kind'], expression: branches.join(' | ') });
  }
  specialized.set(resourceType, plan);
  return plan;
}

function indexableParams(resourceType: string): SearchParameter[] {
  loadDefinitions();
  // _id is the primary key (looked up directly), so it needs no blind index.
  return Object.values(getSearchParameters(resourceType) ?? {}).filter(
    (sp) => sp.code !== '_id' && (sp.type === 'token' || sp.type === 'reference' || sp.type === 'string') && typeof sp.expression === 'string',
  );
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

function referenceValues(v: unknown): string[] {
  const ref = (v as { reference?: unknown } | null)?.reference;
  if (typeof ref !== 'string') return [];
  const m = /(?:^|\/)([A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64})(?:\/_history\/.*)?$/.exec(ref);
  return m ? [m[1]!] : [];
}

/** The blind-index values of a resource version: every token, reference and string search parameter. */
export function searchIndexOf(resource: { resourceType: string }): SearchIndexValue[] {
  const out = new Map<string, SearchIndexValue>();
  for (const sp of indexPlan(resource.resourceType)) {
    let values: unknown[];
    try {
      values = evalPath(sp.expression, resource);
    } catch {
      continue;
    }
    const kind = sp.kind;
    for (const v of values) {
      const extracted = kind === 'token' ? tokenValues(v) : kind === 'reference' ? referenceValues(v) : stringValues(v);
      for (const value of extracted) {
        if (value.length === 0 || value.length > 512) continue;
        out.set(`${sp.code}\u0000${kind}\u0000${value}`, { param: sp.code, kind, value });
        if (out.size >= maxIndexValues) return [...out.values()];
      }
    }
  }
  return [...out.values()];
}

function intOf(name: string, value: string | null, fallback: number, max: number): number {
  if (value === null) return fallback;
  if (!/^\d{1,9}$/.test(value)) throw new HlError('invalid', `search parameter "${name}" must be a whole number`);
  return Math.min(Number(value), max);
}

function summaryOf(value: string | null): boolean {
  if (value === null || value === 'false') return false;
  if (value === 'count') return true;
  throw new HlError('invalid', `_summary=${value.slice(0, 20)} is not supported yet (only count)`);
}

/**
 * Parses a search query of `resourceType`; throws `invalid` naming an unknown parameter or a malformed
 * value (strict handling, so a typo is not silently ignored).
 */
export function planSearch(resourceType: string, query: URLSearchParams): SearchPlan {
  loadDefinitions();
  for (const key of query.keys()) {
    const code = key.split(':')[0]!;
    if (unsupportedParams.has(code)) throw new HlError('invalid', `search parameter "${code}" is not supported yet`);
    if (code.includes('.')) throw new HlError('invalid', `chained search ("${code.slice(0, 64)}") is not supported yet`);
    if (resultParams.has(code) || code === '_id' || code === '_lastUpdated') continue;
    if (!getSearchParameter(resourceType, code)) throw new HlError('invalid', `unknown search parameter "${code.slice(0, 64)}" for ${resourceType}`);
  }
  let request: SearchRequest;
  try {
    request = parseSearchRequest(`${resourceType}?${query.toString()}`);
  } catch (cause) {
    throw new HlError('invalid', 'the search query is malformed', { cause });
  }
  const criteria: SearchPlan['criteria'] = [];
  let ids: string[] | null = null;
  for (const f of request.filters ?? []) {
    const sp = getSearchParameter(resourceType, f.code);
    const values = f.value.split(',').filter((v) => v.length > 0);
    if (!sp || values.length === 0) continue;
    const op = String(f.operator);
    if (f.code === '_id' && op === 'eq') {
      if (!values.every((v) => /^[A-Za-z0-9\-.]{1,64}$/.test(v))) throw new HlError('invalid', 'an _id value is not a FHIR id');
      ids = ids === null ? values : ids.filter((i) => values.includes(i));
    } else if (sp.type === 'token' && op === 'eq' && values.every((v) => !v.endsWith('|'))) criteria.push({ param: f.code, kind: 'token', value: values });
    else if (sp.type === 'reference' && op === 'eq' && values.every((v) => /^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/.test(v))) {
      criteria.push({ param: f.code, kind: 'reference', value: values });
    } else if (sp.type === 'string' && op === 'exact') criteria.push({ param: f.code, kind: 'string', value: values });
    else if (sp.type === 'string' && (op === 'eq' || op === 'sw')) criteria.push({ param: f.code, kind: 'prefix', value: values });
  }
  return {
    request,
    criteria,
    ids,
    count: intOf('_count', query.get('_count'), 20, 1000),
    offset: intOf('_offset', query.get('_offset'), 0, 1_000_000),
    summaryCount: summaryOf(query.get('_summary')),
  };
}

/** FHIR string normalization for comparison: accents and case folded (search.html#string). */
function fold(value: string): string {
  return value.normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase();
}

/**
 * String filters by FHIR's rules (search.html#string): default and `:sw` start-with, `:exact` whole value
 * with case and accents, `:contains` anywhere; case and accents folded except for `:exact`.
 * @medplum/core's in-memory matcher treats all of these as a case-insensitive "contains", so they are
 * checked here.
 */
function matchesStringFilter(resource: Resource, code: string, operator: string, value: string): boolean {
  const sp = getSearchParameter(resource.resourceType, code);
  if (!sp?.expression) return false;
  const have = evalPath(sp.expression, resource).flatMap(stringValues);
  return value.split(',').some((want) =>
    have.some((h) =>
      operator === 'exact' ? h === want : operator === 'contains' ? fold(h).includes(fold(want)) : fold(h).startsWith(fold(want)),
    ),
  );
}

/** True when `resource` satisfies every filter of the plan (exact semantics, after decryption). */
export function matchesSearch(resource: { resourceType: string }, plan: SearchPlan): boolean {
  const r = resource as Resource;
  const others = [];
  for (const f of plan.request.filters ?? []) {
    const sp = getSearchParameter(r.resourceType, f.code);
    if (sp?.type === 'string' && ['eq', 'sw', 'exact', 'contains'].includes(String(f.operator))) {
      if (!matchesStringFilter(r, f.code, String(f.operator), f.value)) return false;
    } else others.push(f);
  }
  return matchesSearchRequest(r, { ...plan.request, filters: others, count: undefined, offset: undefined } as SearchRequest);
}
