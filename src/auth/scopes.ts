/**
 * SMART App Launch v2 scopes (hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html): parsing,
 * matching a request against them, and narrowing one set by another (what a client may have, what a role
 * permits). Pure.
 *
 * Syntax: `(patient|user|system)/(Type|*).(cruds-letters)[?category=token,...]`; the v1 suffixes map to v2
 * letters (`read` → `rs`, `write` → `cud`, `*` → `cruds`). Finer-grained restrictions: only `category` is
 * enforced (the granular scopes US Core and SMART describe); a scope restricted by any other search parameter
 * is parsed but grants nothing, so nothing is granted that cannot be enforced.
 */
import { HlError } from '../kernel/index.js';
import { isResourceType, splitSearchOr } from '../fhir/index.js';

/** The scope's context: the patient in context, the signed-in user, or a backend system. */
export const ScopeContext = { patient: 'patient', user: 'user', system: 'system' } as const;
export type ScopeContext = (typeof ScopeContext)[keyof typeof ScopeContext];

/** SMART v2 permissions: create, read, update, delete, search. */
export const Interaction = { create: 'c', read: 'r', update: 'u', delete: 'd', search: 's' } as const;
export type Interaction = (typeof Interaction)[keyof typeof Interaction];

const letterOrder = 'cruds';

/** A token (`system|code`, `|code` for no system, `code` for any system) as the FHIR token search reads it. */
interface Token {
  /** null: any system. */
  system: string | null;
  code: string;
}

/** A resource scope, parsed. */
export interface ResourceScope {
  kind: 'resource';
  context: ScopeContext;
  /** A resource type, or `*` for every type. */
  resourceType: string;
  /** The permitted interactions, in `cruds` order. */
  interactions: string;
  /** `?category=` values (any of them), or null when the scope is not restricted. */
  categories: readonly string[] | null;
  /** A restriction by a parameter other than `category`: the scope grants nothing. */
  unsupportedRestriction?: string;
}

/** A scope that names no resources (`launch/patient`, `openid`, `fhirUser`, `offline_access`, ...). */
export interface OtherScope {
  kind: 'other';
  value: string;
}

export type SmartScope = ResourceScope | OtherScope;

const resourceScopePattern = /^(patient|user|system)\/(\*|[A-Z][A-Za-z]{1,63})\.([a-z*]{1,5})(?:\?(.*))?$/;
const otherScopePattern = /^(?:openid|fhirUser|profile|launch|launch\/patient|launch\/encounter|offline_access|online_access)$/;

function lettersOf(permissions: string): string | null {
  if (permissions === 'read') return 'rs';
  if (permissions === 'write') return 'cud';
  if (permissions === '*') return 'cruds';
  // v2: each of c, r, u, d, s at most once and in that order.
  let at = 0;
  for (const ch of permissions) {
    const i = letterOrder.indexOf(ch, at);
    if (i < 0) return null;
    at = i + 1;
  }
  return permissions.length > 0 ? permissions : null;
}

/**
 * Splits a search value at the commas that are not escaped (FHIR search.html#escaping), as search does,
 * and unescapes escaped backslashes; `\|` stays escaped for `parseToken`.
 */
function splitOr(value: string): string[] {
  return splitSearchOr(value).map((v) => v.replace(/\\\\/g, '\\'));
}

function parseToken(value: string): Token {
  // An escaped `\|` belongs to the code, not the separator.
  const m = /^((?:[^|\\]|\\.)*)\|(.*)$/.exec(value);
  if (!m) return { system: null, code: value };
  return { system: m[1]!, code: m[2]! };
}

/** True when the token `granted` (from a scope) covers `token` (a resource's category or a search value). */
function covers(granted: Token, token: Token): boolean {
  return granted.code === token.code && (granted.system === null || (token.system !== null && granted.system === token.system));
}

function coversAny(granted: readonly string[], value: string): boolean {
  const t = parseToken(value);
  return granted.some((g) => covers(parseToken(g), t));
}

/** Parses one scope; throws `invalid` naming it when it is not a SMART scope this server knows. */
export function parseScope(text: string): SmartScope {
  if (otherScopePattern.test(text)) return { kind: 'other', value: text };
  const m = resourceScopePattern.exec(text);
  if (!m) throw new HlError('invalid', `unknown scope "${text.slice(0, 100)}"`);
  const [, context, resourceType, permissions, query] = m as unknown as [string, ScopeContext, string, string, string | undefined];
  if (resourceType !== '*' && !isResourceType(resourceType)) throw new HlError('invalid', `scope "${text.slice(0, 100)}" names no R4 resource type`);
  const interactions = lettersOf(permissions);
  if (interactions === null) throw new HlError('invalid', `scope "${text.slice(0, 100)}" has permissions other than c, r, u, d, s (in that order), read, write or *`);
  const scope: ResourceScope = { kind: 'resource', context, resourceType, interactions, categories: null };
  if (query === undefined) return scope;
  let params: [string, string][];
  try {
    params = [...new URLSearchParams(query)];
  } catch {
    throw new HlError('invalid', `scope "${text.slice(0, 100)}" has a malformed restriction`);
  }
  if (params.length === 0) throw new HlError('invalid', `scope "${text.slice(0, 100)}" has an empty restriction`);
  const other = params.find(([k]) => k !== 'category');
  if (other !== undefined || params.length > 1) return { ...scope, unsupportedRestriction: other?.[0] ?? 'category (more than once)' };
  const values = splitOr(params[0]![1]);
  if (values.some((v) => v.length === 0 || v.endsWith('|'))) throw new HlError('invalid', `scope "${text.slice(0, 100)}" has an empty category`);
  return { ...scope, categories: values };
}

/** Parses a space-separated scope string; throws `invalid` naming the first scope it does not know. */
export function parseScopes(scope: string): SmartScope[] {
  return scope
    .trim()
    .split(/\s+/)
    .filter(Boolean)
    .map((s) => parseScope(s));
}

function encodeCategory(value: string): string {
  return encodeURIComponent(value).replace(/%7C/gi, '|').replace(/%3A/gi, ':').replace(/%2F/gi, '/').replace(/%5C/gi, '\\');
}

/** The scope in SMART v2 form (v1 suffixes come out as their letters). */
export function formatScope(scope: SmartScope): string {
  if (scope.kind === 'other') return scope.value;
  const base = `${scope.context}/${scope.resourceType}.${scope.interactions}`;
  if (scope.unsupportedRestriction !== undefined) return `${base}?${encodeURIComponent(scope.unsupportedRestriction)}=…`;
  return scope.categories === null ? base : `${base}?category=${scope.categories.map((c) => encodeCategory(c.replace(/,/g, '\\,'))).join(',')}`;
}

/** A space-separated scope string of `scopes`, each once, in order. */
export function formatScopes(scopes: readonly SmartScope[]): string {
  return [...new Set(scopes.map(formatScope))].join(' ');
}

/** What a request needs. */
export interface ScopeRequest {
  /** The contexts whose scopes count (one, or several to accept any of them). */
  context: ScopeContext | readonly ScopeContext[];
  /** The resource type, or `*` when the request reaches every type (only a `*` scope permits it). */
  resourceType: string;
  interaction: Interaction;
  /**
   * The categories of the resource (`system|code` tokens; any one matching a restricted scope suffices), or
   * of a search restricted to one category value. Absent: unknown, so only unrestricted scopes permit.
   */
  category?: readonly string[];
}

/** The decision for a request: the scope that permits it, or why not (naming the scope it needs). */
export type ScopeDecision =
  | { effect: 'permit'; scope: ResourceScope }
  | {
      effect: 'deny';
      reason: string;
      /** The scope that would permit it, e.g. `user/Observation.r`. */
      required: string;
      /** True when a category-restricted scope would permit it for the right categories. */
      restricted: boolean;
    };

/**
 * Decides whether `scopes` permit one interaction (SMART v2 scope semantics): a scope of one of the
 * request's contexts, for the type or `*`, holding the interaction's letter, and either unrestricted or
 * restricted to a category the resource has. Deny when nothing permits.
 */
export function scopePermits(scopes: readonly SmartScope[], request: ScopeRequest): ScopeDecision {
  const contexts: readonly ScopeContext[] = typeof request.context === 'string' ? [request.context] : request.context;
  const candidates = scopes.filter(
    (s): s is ResourceScope =>
      s.kind === 'resource' &&
      s.unsupportedRestriction === undefined &&
      contexts.includes(s.context) &&
      (s.resourceType === '*' || s.resourceType === request.resourceType) &&
      s.interactions.includes(request.interaction),
  );
  const open = candidates.find((s) => s.categories === null);
  if (open) return { effect: 'permit', scope: open };
  const category = request.category;
  if (category !== undefined) {
    const restricted = candidates.find((s) => category.some((c) => coversAny(s.categories!, c)));
    if (restricted) return { effect: 'permit', scope: restricted };
  }
  const required = `${contexts[0] ?? 'user'}/${request.resourceType}.${request.interaction}`;
  if (candidates.length === 0) return { effect: 'deny', reason: `no granted scope permits ${required}`, required, restricted: false };
  return {
    effect: 'deny',
    reason: category === undefined ? `${required} is granted only for some categories` : `${required} is not granted for this category`,
    required,
    restricted: true,
  };
}

function intersectCategories(a: readonly string[] | null, b: readonly string[] | null): readonly string[] | null | 'none' {
  if (a === null) return b;
  if (b === null) return a;
  const both = [...new Set([...a.filter((v) => coversAny(b, v)), ...b.filter((v) => coversAny(a, v))])];
  return both.length > 0 ? both : 'none';
}

function intersectPair(a: ResourceScope, b: ResourceScope): ResourceScope | null {
  if (a.context !== b.context || a.unsupportedRestriction !== undefined || b.unsupportedRestriction !== undefined) return null;
  if (a.resourceType !== '*' && b.resourceType !== '*' && a.resourceType !== b.resourceType) return null;
  const interactions = [...letterOrder].filter((l) => a.interactions.includes(l) && b.interactions.includes(l)).join('');
  if (interactions === '') return null;
  const categories = intersectCategories(a.categories, b.categories);
  if (categories === 'none') return null;
  return { kind: 'resource', context: a.context, resourceType: a.resourceType === '*' ? b.resourceType : a.resourceType, interactions, categories };
}

/**
 * The scopes permitted by both `requested` and `allowed` (each resource scope narrowed to the types,
 * interactions and categories both grant; other scopes kept when both name them), without duplicates. Used
 * to grant requested ∩ the client's allowed ∩ what the user's role permits.
 */
export function intersectScopes(requested: readonly SmartScope[], allowed: readonly SmartScope[]): SmartScope[] {
  const out: SmartScope[] = [];
  const seen = new Set<string>();
  const add = (s: SmartScope) => {
    const key = formatScope(s);
    if (!seen.has(key)) {
      seen.add(key);
      out.push(s);
    }
  };
  for (const r of requested) {
    if (r.kind === 'other') {
      if (allowed.some((a) => a.kind === 'other' && a.value === r.value)) add(r);
      continue;
    }
    for (const a of allowed) {
      if (a.kind !== 'resource') continue;
      const both = intersectPair(r, a);
      if (both) add(both);
    }
  }
  return out;
}

/** True when a scope string holds at least one resource scope. */
export function hasResourceScope(scopes: readonly SmartScope[]): boolean {
  return scopes.some((s) => s.kind === 'resource');
}

/**
 * The category tokens (`system|code`; `|code` when there is no system) of a resource's `category` element,
 * whatever its shape (CodeableConcept, a list of them, a code or a list of codes).
 */
export function categoriesOf(resource: Record<string, unknown>): string[] {
  const raw = resource.category;
  const list = Array.isArray(raw) ? raw : raw === undefined ? [] : [raw];
  const out: string[] = [];
  for (const c of list) {
    if (typeof c === 'string') out.push(`|${c}`);
    else if (typeof c === 'object' && c !== null) {
      const codings = (c as { coding?: unknown }).coding;
      const all = Array.isArray(codings) ? codings : 'code' in c ? [c] : [];
      for (const coding of all as { system?: unknown; code?: unknown }[]) {
        if (typeof coding?.code === 'string') out.push(`${typeof coding.system === 'string' ? coding.system : ''}|${coding.code}`);
      }
    }
  }
  return out;
}

/**
 * How a search restricts `category`: one list of OR'ed values per plain `category` parameter (each
 * parameter is AND'ed, so a search is within a set of categories when any one of its lists is). Modified
 * parameters (`category:not`, `:text`, ...) restrict nothing and are left out.
 */
export function categoryRestrictionsOf(query: URLSearchParams): string[][] {
  return query.getAll('category').map((v) => splitOr(v));
}
