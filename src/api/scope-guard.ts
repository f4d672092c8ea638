/**
 * SMART scopes enforced on every /fhir route (SMART App Launch v2, scopes-and-launch-context.html): one
 * `preHandler` hook maps the route to the (resource type, interaction) pairs it needs and refuses with a 403
 * OperationOutcome naming the missing scope, before the handler touches a record.
 *
 * - `user/` and `system/` scopes reach every resource of their types; `patient/` scopes only the compartment
 *   of the token's patient (the local Patient the signed-in patient is linked to): reads, history, `$proof`
 *   and writes check the stored resource, creates and updates the new content, and a search must itself be
 *   restricted to the patient (`patient=ID`, `subject=Patient/ID`, any compartment parameter; `_id=ID` for
 *   Patient) — it is refused otherwise, not filtered. `_include`/`_revinclude` are refused with patient/ scopes.
 * - Granular scopes (`?category=system|code`): a read or write is permitted when one of the resource's
 *   categories is granted; a search must be restricted to granted categories (`category=` values, each one
 *   granted) and is refused otherwise, so every result is within the scope without filtering pages.
 * - Anything whose data cannot be known before the handler runs (PATCH, conditional writes, type and system
 *   history) needs an unrestricted `user/` or `system/` scope.
 * - Transaction and batch Bundles: every entry is checked before any is performed; one refused entry refuses
 *   the whole Bundle (403 naming `Bundle.entry[i]`). GET entries are checked again as they run.
 *
 * Chained parameters are not checked against their target types: they select, but return, only the base type.
 */
import { getSearchParameter } from '@medplum/core';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { HlError } from '../kernel/index.js';
import { isInPatientCompartment, isResourceType, parseBundle, patientCompartmentParams, type BundleEntryRequest } from '../fhir/index.js';
import { categoriesOf, categoryRestrictionsOf, parseScopes, scopePermits, type Interaction, type ScopeContext, type SmartScope, type VerifiedToken } from '../auth/index.js';

/** A stored resource as the guard sees it (never served from here). */
export interface GuardedResource {
  resource: { resourceType: string; id?: string } & Record<string, unknown>;
  deleted: boolean;
  /** The Patient whose compartment owns the record (the store's owner), or null. */
  owner: string | null;
}

/** Reads the current (or `versionId`) version of a resource for a scope check; undefined when there is none. */
export type ResourceLoader = (resourceType: string, id: string, versionId?: string) => Promise<GuardedResource | undefined>;

/** What a check is about. */
type Target =
  /** An existing resource; `opaque` when what the request will make of it is unknown in advance (PATCH, $link). */
  | { kind: 'instance'; id: string; versionId?: string; opaque?: boolean }
  /** The content a create or update sends. */
  | { kind: 'body'; resource: unknown }
  | { kind: 'search'; query: URLSearchParams }
  /** Everything of a type (type history, conditional writes): only unrestricted user/ or system/ scopes. */
  | { kind: 'type' }
  | { kind: 'everything'; id: string }
  /** No stored data ($validate). */
  | { kind: 'none' };

interface Check {
  resourceType: string;
  interaction: Interaction;
  target: Target;
  /** For messages: `read Observation/123`. Ids only, never data. */
  what: string;
}

const staffContexts: readonly ScopeContext[] = ['user', 'system'];
const parsedScopes = new WeakMap<VerifiedToken, SmartScope[]>();
const permitsAll = new WeakMap<VerifiedToken, boolean>();

/** True when the token may do everything to every type (`user/*.cruds`, `system/*.cruds`): nothing to check. */
function isUnrestricted(token: VerifiedToken): boolean {
  let all = permitsAll.get(token);
  if (all === undefined) {
    const scopes = scopesOf(token);
    all = (['c', 'r', 'u', 'd', 's'] as const).every((interaction) => scopePermits(scopes, { context: staffContexts, resourceType: '*', interaction }).effect === 'permit');
    permitsAll.set(token, all);
  }
  return all;
}

function scopesOf(token: VerifiedToken): SmartScope[] {
  let scopes = parsedScopes.get(token);
  if (scopes === undefined) {
    try {
      scopes = parseScopes(token.scope);
    } catch {
      scopes = [];
    }
    parsedScopes.set(token, scopes);
  }
  return scopes;
}

/** Splits a search value at unescaped commas. */
function orValues(value: string): string[] {
  return value.split(/(?<!\\),/);
}

function rawQuery(req: FastifyRequest): URLSearchParams {
  return new URLSearchParams(req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '');
}

function hasIncludes(query: URLSearchParams): boolean {
  return [...query.keys()].some((k) => k.startsWith('_include') || k.startsWith('_revinclude'));
}

class Guard {
  private readonly loaded = new Map<string, Promise<GuardedResource | undefined>>();
  private readonly scopes: SmartScope[];

  constructor(
    private readonly token: VerifiedToken,
    private readonly load: ResourceLoader | undefined,
  ) {
    this.scopes = scopesOf(token);
  }

  private fetch(resourceType: string, id: string, versionId?: string): Promise<GuardedResource | undefined> {
    // Without a loader nothing can be checked against stored data: refuse rather than guess.
    if (this.load === undefined) return Promise.reject(new HlError('forbidden', 'this server cannot check stored resources against restricted scopes'));
    const key = `${resourceType}/${id}/${versionId ?? ''}`;
    let p = this.loaded.get(key);
    if (p === undefined) {
      p = this.load(resourceType, id, versionId);
      this.loaded.set(key, p);
    }
    return p;
  }

  /** The scope the token would need, in the token's own context. */
  private needed(check: Check): string {
    const ctx = this.token.kind === 'patient' ? 'patient' : this.token.kind === 'system' ? 'system' : 'user';
    return `${ctx}/${check.resourceType}.${check.interaction}`;
  }

  private forbidden(prefix: string, message: string, reply?: FastifyReply): HlError {
    reply?.header('WWW-Authenticate', 'Bearer realm="healthledger", error="insufficient_scope"');
    return new HlError('forbidden', `${prefix}${message}`);
  }

  /** True when restricted scopes of `contexts` grant the check for the target's categories. */
  private async categoriesPermit(contexts: readonly ScopeContext[], check: Check): Promise<boolean> {
    const permits = (category: string[]) => scopePermits(this.scopes, { context: contexts, resourceType: check.resourceType, interaction: check.interaction, category }).effect === 'permit';
    const t = check.target;
    if (t.kind === 'instance') {
      if (t.opaque) return false;
      const r = await this.fetch(check.resourceType, t.id, t.versionId);
      if (r === undefined) return true; // nothing there: the handler answers 404
      return !r.deleted && permits(categoriesOf(r.resource));
    }
    if (t.kind === 'body') return typeof t.resource === 'object' && t.resource !== null && permits(categoriesOf(t.resource as Record<string, unknown>));
    if (t.kind === 'search') return categoryRestrictionsOf(t.query).some((values) => values.every((v) => permits([v])));
    return t.kind === 'none';
  }

  /** Null when the target is in the compartment of `patient`, else why not. */
  private async outsideCompartment(check: Check, patient: string): Promise<string | null> {
    const t = check.target;
    const outside = `${check.what} is outside the patient compartment of this token`;
    switch (t.kind) {
      case 'none':
        return null;
      case 'everything':
        return t.id === patient ? null : outside;
      case 'type':
        return `${check.what} needs a user/ or system/ scope (not possible with patient/ scopes)`;
      case 'body':
        return typeof t.resource === 'object' && t.resource !== null && isInPatientCompartment(t.resource as { resourceType: string }, patient) ? null : outside;
      case 'instance': {
        if (t.opaque) return `${check.what} needs a user/ or system/ scope (not possible with patient/ scopes)`;
        if (check.resourceType === 'Patient') return t.id === patient ? null : outside;
        const r = await this.fetch(check.resourceType, t.id, t.versionId);
        if (r === undefined) return null; // nothing there: the handler answers 404
        const inside = r.deleted ? r.owner === patient : isInPatientCompartment(r.resource, patient);
        return inside ? null : outside;
      }
      case 'search': {
        if (hasIncludes(t.query)) return `${check.what}: _include and _revinclude are not available with patient/ scopes; read the referenced resources directly`;
        const restricted =
          check.resourceType === 'Patient'
            ? t.query.getAll('_id').some((v) => orValues(v).every((id) => id === patient))
            : [...new Set(t.query.keys())].some((key) => {
                const [name, modifier] = key.split(':') as [string, string | undefined];
                const params = patientCompartmentParams(check.resourceType);
                if (params.length === 0 || !(name === 'patient' || params.includes(name)) || (modifier !== undefined && modifier !== 'Patient')) return false;
                const bareIdOk = name === 'patient' || modifier === 'Patient';
                return t.query.getAll(key).some((v) => orValues(v).every((ref) => ref === `Patient/${patient}` || (bareIdOk && ref === patient)));
              });
        return restricted
          ? null
          : check.resourceType === 'Patient'
            ? `${check.what} with patient/ scopes must be restricted to this token's patient: add _id=${patient}`
            : `${check.what} with patient/ scopes must be restricted to this token's patient: add patient=${patient} (or another compartment parameter naming Patient/${patient})`;
      }
    }
  }

  /** Throws `forbidden` unless the token's scopes permit `check`. */
  async authorize(check: Check, prefix = '', reply?: FastifyReply): Promise<void> {
    const request = { resourceType: check.resourceType, interaction: check.interaction };
    const staff = scopePermits(this.scopes, { ...request, context: staffContexts });
    if (staff.effect === 'permit') return this.requireIncludes(check, prefix, reply);
    if (staff.restricted && (await this.categoriesPermit(staffContexts, check))) return this.requireIncludes(check, prefix, reply);
    const own = scopePermits(this.scopes, { ...request, context: 'patient' });
    if (own.effect === 'permit' || own.restricted) {
      if (this.token.patient === undefined) {
        throw this.forbidden(prefix, `${check.what}: patient/ scopes grant nothing here, as the signed-in patient is not linked to a record at this node`, reply);
      }
      const why = await this.outsideCompartment(check, this.token.patient);
      if (why !== null) throw this.forbidden(prefix, why, reply);
      if (own.effect === 'permit' || (await this.categoriesPermit(['patient'], check))) return;
      throw this.forbidden(prefix, `${check.what} needs ${this.needed(check)} for its category${check.target.kind === 'search' ? ' (restrict the search with category=)' : ''}`, reply);
    }
    if (staff.restricted) {
      throw this.forbidden(prefix, `${check.what} needs ${this.needed(check)} for its category${check.target.kind === 'search' ? ' (restrict the search with category=)' : ''}`, reply);
    }
    throw this.forbidden(prefix, `insufficient scope: ${check.what} needs ${this.needed(check)}`, reply);
  }

  /** `_include`/`_revinclude` of a search bring other types: each needs its own read scope (unrestricted). */
  private async requireIncludes(check: Check, prefix: string, reply?: FastifyReply): Promise<void> {
    if (check.target.kind !== 'search') return;
    for (const [key, value] of check.target.query) {
      const rev = key.startsWith('_revinclude');
      if (!rev && !key.startsWith('_include')) continue;
      const [source, param, target] = value.split(':') as [string, string | undefined, string | undefined];
      const types = rev
        ? [source]
        : target !== undefined
          ? [target]
          : param === undefined || param === '*'
            ? ['*']
            : (getSearchParameter(source, param)?.target ?? ['*']);
      for (const type of types) {
        if (type !== '*' && !isResourceType(type)) continue; // the search itself refuses it
        const include: Check = { resourceType: type, interaction: 'r', target: { kind: 'type' }, what: `${key}=${value.slice(0, 100)}` };
        if (scopePermits(this.scopes, { context: staffContexts, resourceType: type, interaction: 'r' }).effect !== 'permit') {
          throw this.forbidden(prefix, `insufficient scope: ${include.what} needs ${this.needed(include)}`, reply);
        }
      }
    }
  }
}

/** The checks of one Bundle entry (http.html#transaction). */
function entryChecks(e: BundleEntryRequest): Check[] {
  const type = e.resourceType;
  const ref = `${type}${e.id !== undefined ? `/${e.id}` : ''}`;
  switch (e.method) {
    case 'GET':
    case 'HEAD':
      if (e.id !== undefined) return [{ resourceType: type, interaction: 'r', target: { kind: 'instance', id: e.id, ...(e.versionId ? { versionId: e.versionId } : {}) }, what: `read ${ref}` }];
      return [{ resourceType: type, interaction: 's', target: { kind: 'search', query: e.query ?? new URLSearchParams() }, what: `search ${type}` }];
    case 'POST':
      return [
        { resourceType: type, interaction: 'c', target: { kind: 'body', resource: e.resource }, what: `create ${type}` },
        ...(e.ifNoneExist ? [{ resourceType: type, interaction: 's' as const, target: { kind: 'search' as const, query: e.ifNoneExist }, what: `conditional create ${type}` }] : []),
      ];
    case 'PUT':
      if (e.id !== undefined) {
        return [
          { resourceType: type, interaction: 'u', target: { kind: 'instance', id: e.id }, what: `update ${ref}` },
          { resourceType: type, interaction: 'u', target: { kind: 'body', resource: e.resource }, what: `update ${ref}` },
        ];
      }
      return (['u', 'c', 's'] as const).map((interaction) => ({ resourceType: type, interaction, target: { kind: 'type' }, what: `conditional update ${type}` }));
    case 'PATCH':
      if (e.id !== undefined) return [{ resourceType: type, interaction: 'u', target: { kind: 'instance', id: e.id, opaque: true }, what: `patch ${ref}` }];
      return (['u', 's'] as const).map((interaction) => ({ resourceType: type, interaction, target: { kind: 'type' }, what: `conditional patch ${type}` }));
    case 'DELETE':
      if (e.id !== undefined) return [{ resourceType: type, interaction: 'd', target: { kind: 'instance', id: e.id }, what: `delete ${ref}` }];
      return (['d', 's'] as const).map((interaction) => ({ resourceType: type, interaction, target: { kind: 'type' }, what: `conditional delete ${type}` }));
  }
}

type Params = { type?: string; id?: string; vid?: string };

/** The checks of each /fhir route, keyed by `METHOD pattern` (HEAD as GET). */
const routes: Record<string, (req: FastifyRequest, p: Params) => Check[]> = {
  'GET /fhir/:type': (req, p) => [{ resourceType: p.type!, interaction: 's', target: { kind: 'search', query: rawQuery(req) }, what: `search ${p.type}` }],
  'POST /fhir/:type/_search': (req, p) => {
    const query = rawQuery(req);
    if (typeof req.body === 'string') for (const [k, v] of new URLSearchParams(req.body)) query.append(k, v);
    return [{ resourceType: p.type!, interaction: 's', target: { kind: 'search', query }, what: `search ${p.type}` }];
  },
  'GET /fhir/:type/:id': (_req, p) => [{ resourceType: p.type!, interaction: 'r', target: { kind: 'instance', id: p.id! }, what: `read ${p.type}/${p.id}` }],
  'GET /fhir/:type/:id/_history/:vid': (_req, p) => [
    { resourceType: p.type!, interaction: 'r', target: { kind: 'instance', id: p.id!, versionId: p.vid! }, what: `vread ${p.type}/${p.id}` },
  ],
  'GET /fhir/:type/:id/_history': (_req, p) => [{ resourceType: p.type!, interaction: 'r', target: { kind: 'instance', id: p.id! }, what: `history of ${p.type}/${p.id}` }],
  'GET /fhir/:type/:id/_history/:vid/$proof': (_req, p) => [
    { resourceType: p.type!, interaction: 'r', target: { kind: 'instance', id: p.id!, versionId: p.vid! }, what: `$proof of ${p.type}/${p.id}` },
  ],
  'GET /fhir/:type/_history': (_req, p) => [{ resourceType: p.type!, interaction: 's', target: { kind: 'type' }, what: `history of ${p.type}` }],
  'GET /fhir/_history': () => [{ resourceType: '*', interaction: 's', target: { kind: 'type' }, what: 'system history' }],
  'POST /fhir/:type': (req, p) => {
    const checks: Check[] = [{ resourceType: p.type!, interaction: 'c', target: { kind: 'body', resource: req.body }, what: `create ${p.type}` }];
    const ifNoneExist = req.headers['if-none-exist'];
    if (typeof ifNoneExist === 'string') {
      const q = ifNoneExist.startsWith(`${p.type}?`) ? ifNoneExist.slice(p.type!.length + 1) : ifNoneExist.replace(/^\?/, '');
      checks.push({ resourceType: p.type!, interaction: 's', target: { kind: 'search', query: new URLSearchParams(q) }, what: `conditional create ${p.type}` });
    }
    return checks;
  },
  'POST /fhir/:type/$validate': (_req, p) => [{ resourceType: p.type!, interaction: 'c', target: { kind: 'none' }, what: `$validate ${p.type}` }],
  'PUT /fhir/:type/:id': (req, p) => [
    { resourceType: p.type!, interaction: 'u', target: { kind: 'instance', id: p.id! }, what: `update ${p.type}/${p.id}` },
    { resourceType: p.type!, interaction: 'u', target: { kind: 'body', resource: req.body }, what: `update ${p.type}/${p.id}` },
  ],
  'PUT /fhir/:type': (_req, p) =>
    (['u', 'c', 's'] as const).map((interaction) => ({ resourceType: p.type!, interaction, target: { kind: 'type' }, what: `conditional update ${p.type}` })),
  'PATCH /fhir/:type/:id': (_req, p) => [{ resourceType: p.type!, interaction: 'u', target: { kind: 'instance', id: p.id!, opaque: true }, what: `patch ${p.type}/${p.id}` }],
  'DELETE /fhir/:type/:id': (_req, p) => [{ resourceType: p.type!, interaction: 'd', target: { kind: 'instance', id: p.id! }, what: `delete ${p.type}/${p.id}` }],
  'DELETE /fhir/:type': (_req, p) =>
    (['d', 's'] as const).map((interaction) => ({ resourceType: p.type!, interaction, target: { kind: 'type' }, what: `conditional delete ${p.type}` })),
  // Everything of a patient from every custodian: only unrestricted user/ or system/ read scopes.
  'POST /fhir/Patient/$network-everything': () => [{ resourceType: '*', interaction: 'r', target: { kind: 'type' }, what: 'Patient/$network-everything' }],
  'GET /fhir/Patient/:id/$everything': (_req, p) => [
    { resourceType: 'Patient', interaction: 'r', target: { kind: 'instance', id: p.id! }, what: `Patient/${p.id}/$everything` },
    { resourceType: '*', interaction: 'r', target: { kind: 'everything', id: p.id! }, what: `Patient/${p.id}/$everything` },
  ],
  'GET /fhir/Patient/:id/$link': (_req, p) => [{ resourceType: 'Patient', interaction: 'r', target: { kind: 'instance', id: p.id! }, what: `Patient/${p.id}/$link` }],
  'GET /fhir/Patient/:id/$disclosures': (_req, p) => [
    { resourceType: 'Patient', interaction: 'r', target: { kind: 'instance', id: p.id! }, what: `Patient/${p.id}/$disclosures` },
  ],
  'POST /fhir/Patient/:id/$erase': (_req, p) => [
    { resourceType: 'Patient', interaction: 'd', target: { kind: 'instance', id: p.id!, opaque: true }, what: `Patient/${p.id}/$erase` },
  ],
  // Consents live on the ledger, not in the record store: the scope is checked, the ledger's rules do the rest.
  'GET /fhir/Consent/:id': (_req, p) => [{ resourceType: 'Consent', interaction: 'r', target: { kind: 'none' }, what: `read Consent/${p.id}` }],
  'GET /fhir/Consent': () => [{ resourceType: 'Consent', interaction: 's', target: { kind: 'none' }, what: 'search Consent' }],
  'POST /fhir/Consent': () => [{ resourceType: 'Consent', interaction: 'c', target: { kind: 'none' }, what: 'create Consent' }],
  'POST /fhir/Patient/:id/$link': (_req, p) => [
    { resourceType: 'Patient', interaction: 'u', target: { kind: 'instance', id: p.id!, opaque: true }, what: `Patient/${p.id}/$link` },
  ],
};

/** Routes under /fhir that need no scope: the CapabilityStatement and the SMART configuration. */
const openRoutes: ReadonlySet<string> = new Set(['/fhir/metadata', '/fhir/.well-known/smart-configuration']);

/**
 * Registers the scope check on every /fhir route of `app`. A /fhir route with no rule here is refused (403),
 * so a route added later is closed until its rule is written. `load` reads stored resources for the
 * compartment and category checks; without it those checks refuse.
 */
export function registerScopeGuard(app: FastifyInstance, options: { load?: ResourceLoader } = {}): void {
  app.addHook('preHandler', async (req, reply) => {
    const pattern = req.routeOptions.url;
    if (pattern === undefined || !pattern.startsWith('/fhir') || openRoutes.has(pattern)) return;
    const token = req.token;
    if (token === undefined) throw new HlError('login', 'a bearer token is required');
    if (isUnrestricted(token)) return;
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    const guard = new Guard(token, options.load);
    if (method === 'POST' && pattern === '/fhir') return checkBundle(req, reply, guard);
    const rule = routes[`${method} ${pattern}`];
    if (rule === undefined) throw new HlError('forbidden', `no scope rule covers ${method} ${pattern}`);
    const params = req.params as Params;
    // An unknown type is the handler's 404, not a missing scope.
    if (params.type !== undefined && !isResourceType(params.type)) return;
    for (const check of rule(req, params)) await guard.authorize(check, '', reply);
  });
}

async function checkBundle(req: FastifyRequest, reply: FastifyReply, guard: Guard): Promise<void> {
  let entries;
  try {
    ({ entries } = parseBundle(req.body, `${req.protocol}://${req.host}/fhir`));
  } catch {
    return; // not a Bundle: the handler says why
  }
  for (const e of entries) {
    if (!e.ok || !isResourceType(e.entry.resourceType)) continue;
    for (const check of entryChecks(e.entry)) await guard.authorize(check, `Bundle.entry[${e.entry.index}]: `, reply);
  }
}
