/**
 * Transaction and batch Bundles (http://hl7.org/fhir/R4/http.html#transaction): each entry's request read
 * and checked for form only — method, url (`Type`, `Type/id`, `Type/id/_history/vid`, `Type?search`),
 * resource type and id, If-Match ETag, ifNoneExist, and the JSON Patch a PATCH entry carries as a Binary.
 * What the entries mean (targets, conditions, references) is the repository's business. Problems name
 * their path (`Bundle.entry[2].request.url`), never a value: urls and conditions can hold identifiers. Pure.
 */
import { HlError, fromBase64, fromUtf8, type Issue } from '../kernel/index.js';
import { isResourceType } from './resource-types.js';

/** Bundle.entry.request.method (valueset-http-verb.html). */
export const BundleMethod = { GET: 'GET', HEAD: 'HEAD', POST: 'POST', PUT: 'PUT', PATCH: 'PATCH', DELETE: 'DELETE' } as const;
export type BundleMethod = (typeof BundleMethod)[keyof typeof BundleMethod];

/** A FHIR resource as JSON. */
export type BundleResource = { resourceType: string; id?: string; meta?: Record<string, unknown> } & Record<string, unknown>;

/** One well-formed entry of a transaction or batch. */
export interface BundleEntryRequest {
  /** Position in Bundle.entry (0-based), for `Bundle.entry[i]` in messages. */
  index: number;
  fullUrl?: string;
  method: BundleMethod;
  resourceType: string;
  /** `Type/id` and `Type/id/_history/vid` urls. */
  id?: string;
  versionId?: string;
  /** `Type?search` urls: the search of a conditional PUT, PATCH or DELETE, or of a GET. */
  query?: URLSearchParams;
  /** The resource of a POST or PUT (type already checked against the url). */
  resource?: BundleResource;
  /** The RFC 6902 operations of a PATCH (a list; applied later). */
  patch?: unknown[];
  /** The versionId of request.ifMatch (PUT, PATCH, DELETE). */
  ifMatch?: string;
  /** The search of request.ifNoneExist (POST). */
  ifNoneExist?: URLSearchParams;
}

/** A parsed entry, or the problems that make it unusable (a batch answers those entry by entry). */
export type ParsedBundleEntry = { ok: true; entry: BundleEntryRequest } | { ok: false; index: number; issues: Issue[] };

const idPattern = /^[A-Za-z0-9\-.]{1,64}$/;
const methods: ReadonlySet<string> = new Set(Object.values(BundleMethod));
const maxEntries = 10_000;

/**
 * The versionId an ETag names (`W/"3"` or `"3"`, http.html#versioning); throws `invalid` naming `what`
 * (`If-Match`, `Bundle.entry[1].request.ifMatch`) on anything else.
 */
export function versionOfETag(etag: string, what = 'If-Match'): string {
  const m = /^(?:W\/)?"([A-Za-z0-9\-.]{1,64})"$/.exec(etag.trim());
  if (!m) throw new HlError('invalid', `${what} must be an ETag such as W/"1"`);
  return m[1]!;
}

/** A search (`identifier=a|b`), with an optional leading `Type?` or `?` as some clients send in ifNoneExist. */
function searchOf(text: string, resourceType: string): URLSearchParams | null {
  const q = text.startsWith(`${resourceType}?`) ? text.slice(resourceType.length + 1) : text.startsWith('?') ? text.slice(1) : text;
  const params = new URLSearchParams(q);
  return [...params.keys()].length > 0 ? params : null;
}

/** The RFC 6902 operations a PATCH entry carries: a Binary with contentType application/json-patch+json (http.html#patch). */
function patchOf(resource: unknown, at: string, issues: Issue[]): unknown[] | undefined {
  const r = resource as { resourceType?: unknown; contentType?: unknown; data?: unknown } | null;
  if (typeof r !== 'object' || r === null || r.resourceType !== 'Binary') {
    const what = (r as { resourceType?: unknown } | null)?.resourceType === 'Parameters' ? ' (FHIRPath Patch is not supported)' : '';
    issues.push({ code: 'invalid', expression: `${at}.resource`, message: `a PATCH entry needs a Binary resource holding a JSON Patch${what}` });
    return undefined;
  }
  if (typeof r.contentType !== 'string' || !r.contentType.startsWith('application/json-patch+json')) {
    issues.push({ code: 'invalid', expression: `${at}.resource.contentType`, message: 'a PATCH Binary must have contentType application/json-patch+json' });
    return undefined;
  }
  let operations: unknown;
  try {
    operations = JSON.parse(fromUtf8(fromBase64(typeof r.data === 'string' ? r.data : '')));
  } catch {
    operations = undefined;
  }
  if (!Array.isArray(operations) || operations.length === 0 || operations.length > 1000) {
    issues.push({ code: 'invalid', expression: `${at}.resource.data`, message: 'a PATCH Binary must hold base64 JSON: a list of 1 to 1,000 JSON Patch operations' });
    return undefined;
  }
  return operations;
}

/**
 * Reads one entry (http.html#transaction, bundle.html#Bundle.entry.request). `base` is the server's own base
 * URL: an absolute request.url under it is taken as relative; any other absolute url is refused.
 */
export function parseBundleEntry(raw: unknown, index: number, base?: string): ParsedBundleEntry {
  const at = `Bundle.entry[${index}]`;
  const issues: Issue[] = [];
  const fail = (expression: string, message: string): ParsedBundleEntry => ({ ok: false, index, issues: [{ code: 'invalid', expression, message }] });
  const e = raw as { fullUrl?: unknown; request?: Record<string, unknown>; resource?: unknown } | null;
  if (typeof e !== 'object' || e === null || Array.isArray(e)) return fail(at, 'an entry must be an object');
  if (typeof e.request !== 'object' || e.request === null || Array.isArray(e.request)) return fail(`${at}.request`, 'request is required in a transaction or batch entry');
  const { method, url, ifMatch, ifNoneExist } = e.request;
  if (typeof method !== 'string' || !methods.has(method)) {
    return fail(`${at}.request.method`, typeof method === 'string' ? 'request.method must be one of GET, HEAD, POST, PUT, PATCH, DELETE' : 'request.method is required');
  }
  if (typeof url !== 'string' || url.length === 0) return fail(`${at}.request.url`, 'request.url is required');
  if (e.fullUrl !== undefined && (typeof e.fullUrl !== 'string' || e.fullUrl.length === 0)) return fail(`${at}.fullUrl`, 'fullUrl must be a non-empty string');

  let relative = url;
  if (base !== undefined && relative.startsWith(`${base}/`)) relative = relative.slice(base.length + 1);
  if (/^[a-z][a-z0-9+.-]*:/i.test(relative)) return fail(`${at}.request.url`, 'request.url must be relative to the server base');
  relative = relative.replace(/^\/+/, '');
  const q = relative.indexOf('?');
  const path = (q < 0 ? relative : relative.slice(0, q)).replace(/\/+$/, '');
  const segments = path.split('/');
  const resourceType = segments[0]!;
  if (!isResourceType(resourceType)) return fail(`${at}.request.url`, 'request.url does not start with a FHIR R4 resource type');
  if (segments.some((s) => s.startsWith('$'))) return fail(`${at}.request.url`, 'operations ($...) are not supported in a Bundle entry');
  const entry: BundleEntryRequest = { index, method: method as BundleMethod, resourceType, ...(typeof e.fullUrl === 'string' ? { fullUrl: e.fullUrl } : {}) };
  if (q >= 0) {
    const query = searchOf(relative.slice(q + 1), resourceType);
    if (!query && method !== 'GET' && method !== 'HEAD') return fail(`${at}.request.url`, 'request.url has an empty or malformed search');
    if (query) entry.query = query;
  }
  const shape = segments.length === 1 ? 'type' : segments.length === 2 ? 'instance' : segments.length === 4 && segments[2] === '_history' ? 'version' : 'other';
  if (shape === 'instance' || shape === 'version') {
    if (!idPattern.test(segments[1]!)) return fail(`${at}.request.url`, 'the id in request.url must match [A-Za-z0-9-.]{1,64}');
    entry.id = segments[1]!;
  }
  if (shape === 'version') {
    if (!idPattern.test(segments[3]!)) return fail(`${at}.request.url`, 'the version id in request.url must match [A-Za-z0-9-.]{1,64}');
    entry.versionId = segments[3]!;
  }
  if (entry.query && shape !== 'type') return fail(`${at}.request.url`, 'request.url may not have both an id and a search');

  switch (method) {
    case 'GET':
    case 'HEAD':
      if (shape === 'other') return fail(`${at}.request.url`, 'a GET entry may read (Type/id), vread (Type/id/_history/vid) or search (Type?...) only');
      break;
    case 'POST':
      if (shape !== 'type' || entry.query) return fail(`${at}.request.url`, 'the request.url of a POST is the resource type alone');
      break;
    case 'PUT':
    case 'PATCH':
    case 'DELETE':
      if (shape !== 'instance' && !(shape === 'type' && entry.query)) {
        return fail(`${at}.request.url`, `the request.url of a ${method} is Type/id or a conditional Type?search`);
      }
      break;
  }

  if (method === 'POST' || method === 'PUT') {
    const resource = e.resource as BundleResource | undefined;
    if (typeof resource !== 'object' || resource === null || Array.isArray(resource)) {
      issues.push({ code: 'invalid', expression: `${at}.resource`, message: `a ${method} entry needs a resource` });
    } else if (resource.resourceType !== resourceType) {
      issues.push({ code: 'invalid', expression: `${at}.resource.resourceType`, message: 'resourceType does not match the type in request.url' });
    } else {
      if (method === 'PUT' && entry.id !== undefined && resource.id !== entry.id) {
        issues.push({ code: 'invalid', expression: `${at}.resource.id`, message: 'the resource id must match the id in request.url' });
      }
      entry.resource = resource;
    }
  }
  if (method === 'PATCH') {
    const patch = patchOf(e.resource, at, issues);
    if (patch) entry.patch = patch;
  }
  if (ifMatch !== undefined) {
    if (method !== 'PUT' && method !== 'PATCH' && method !== 'DELETE') {
      issues.push({ code: 'invalid', expression: `${at}.request.ifMatch`, message: 'ifMatch applies to PUT, PATCH and DELETE only' });
    } else {
      try {
        entry.ifMatch = versionOfETag(String(ifMatch), 'request.ifMatch');
      } catch (err) {
        issues.push({ code: 'invalid', expression: `${at}.request.ifMatch`, message: (err as Error).message });
      }
    }
  }
  if (ifNoneExist !== undefined) {
    const query = method === 'POST' && typeof ifNoneExist === 'string' ? searchOf(ifNoneExist, resourceType) : null;
    if (query) entry.ifNoneExist = query;
    else issues.push({ code: 'invalid', expression: `${at}.request.ifNoneExist`, message: method === 'POST' ? 'ifNoneExist must be a search such as identifier=system|value' : 'ifNoneExist applies to POST only' });
  }
  return issues.length > 0 ? { ok: false, index, issues } : { ok: true, entry };
}

/**
 * Reads a transaction or batch Bundle (http.html#transaction): throws `invalid` when the body is not one at
 * all; each entry is parsed on its own (see {@link parseBundleEntry}).
 */
export function parseBundle(body: unknown, base?: string): { type: 'transaction' | 'batch'; entries: ParsedBundleEntry[] } {
  const b = body as { resourceType?: unknown; type?: unknown; entry?: unknown } | null;
  if (typeof b !== 'object' || b === null || Array.isArray(b) || b.resourceType !== 'Bundle') throw new HlError('invalid', 'POST to the base needs a Bundle');
  if (b.type !== 'transaction' && b.type !== 'batch') {
    throw new HlError('invalid', 'Bundle.type must be transaction or batch', { issues: [{ code: 'invalid', expression: 'Bundle.type', message: 'Bundle.type must be transaction or batch' }] });
  }
  const entries = b.entry === undefined ? [] : b.entry;
  if (!Array.isArray(entries)) throw new HlError('invalid', 'Bundle.entry must be a list');
  if (entries.length > maxEntries) throw new HlError('too-costly', `a Bundle may hold at most ${maxEntries.toLocaleString('en-US')} entries`);
  return { type: b.type, entries: entries.map((raw: unknown, i: number) => parseBundleEntry(raw, i, base)) };
}
