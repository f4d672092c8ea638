/**
 * FHIR transactions and batches (http://hl7.org/fhir/R4/http.html#transaction) over the ledgered repository.
 *
 * A transaction is planned completely before anything is written: entries are taken in the spec's
 * processing order (DELETE, POST, PUT/PATCH, then GET), conditions are searched, targets resolved, fullUrl
 * and conditional references rewritten and every resulting version validated; only then are all versions
 * sealed, committed to the ledger and marked committed as one group (all or none). Any failure before that
 * stores nothing and adds nothing to the ledger. A batch plans and commits each entry on its own; the
 * successful ones still share one group commit.
 */
import jsonPatch from 'fast-json-patch';
import { HlError, isHlError, newResourceId, type Issue } from '../kernel/index.js';
import { isResourceType, matchesSearch, planSearch, type BundleEntryRequest, type SearchPlan } from '../fhir/index.js';
import type { StoredVersion } from '../store/index.js';
import type { Resource, ServedVersion } from './ledgered-repository.js';

/** A version to seal and commit. */
export interface VersionToWrite {
  version: Resource;
  patient: string | null;
  deleted: boolean;
}

/** What the processor needs from the repository. */
export interface BundleProcessorDeps {
  /** The current version as stored (versionId, deleted flag, patient); `not-found` when there is none. */
  readCurrent(resourceType: string, id: string, versionId?: string): Promise<StoredVersion>;
  /** The resource of the current version, checked against its ledger commitment. */
  readResource(resourceType: string, id: string): Promise<Resource>;
  /** FHIR search of one type (the repository's, unchanged), with the plan it made (the clock included). */
  search(resourceType: string, query: URLSearchParams): Promise<{ total: number; page: ServedVersion[]; plan: SearchPlan }>;
  /** Every validation issue of a resource. */
  validate(resource: unknown): Issue[];
  patientOf(resource: Resource): string | null;
  nowInstant(): string;
  /** Seals, commits to the ledger and marks committed, all or none; served versions in the same order. */
  commit(versions: VersionToWrite[]): Promise<ServedVersion[]>;
}

/**
 * What one entry did, for Bundle.entry.response (http.html#transaction-response): a write (or a matched
 * conditional create) with its HTTP status and version — null for a DELETE that found nothing to delete —
 * or a read that the API performs once the writes are committed (processing step 4).
 */
export type BundleEntryResult =
  | { kind: 'write'; status: 200 | 201 | 204; version: ServedVersion | null }
  | { kind: 'read'; entry: BundleEntryRequest };

/** A batch entry's result, or why it failed. */
export type BatchEntryResult = BundleEntryResult | { kind: 'error'; error: unknown };

/** What planning decided for one entry. */
interface EntryPlan {
  entry: BundleEntryRequest;
  action: 'create' | 'update' | 'delete' | 'match' | 'none' | 'read';
  /** `Type/id` the entry writes or matched. */
  ref?: string;
  current?: StoredVersion;
  /** The resource to write, before its references are rewritten. */
  body?: Resource;
  /** For a match: the stored version (absent when it matched a resource this transaction creates). */
  matched?: ServedVersion;
  /** The version to commit, once built. */
  write?: VersionToWrite;
  /** A create that depends on a condition matching nothing (ifNoneExist, conditional PUT). */
  conditionalCreate?: boolean;
}

/** What a transaction has decided so far (the state later entries and references see). */
interface TransactionState {
  /** `Type/id` → index of the entry that writes it: two entries may not touch one resource. */
  touched: Map<string, number>;
  /** `Type/id` deleted by this transaction: no longer a match for a condition. */
  deleted: Set<string>;
  /** Resources this transaction creates, for conditions that match them (ifNoneExist, conditional references). */
  created: { ref: string; resource: Resource; index: number }[];
}

const processingRank: Record<string, number> = { DELETE: 0, POST: 1, PUT: 2, PATCH: 2, GET: 3, HEAD: 3 };
/** Result parameters that say nothing about which resources match a condition. */
const resultParams = ['_count', '_offset', '_summary', '_total', '_sort', '_include', '_revinclude', '_elements', '_contained', '_containedType'];
const conditionalReference = /^([A-Z][A-Za-z]+)\?(.+)$/;

/** `Bundle.entry[i]` plus a path below it. */
function at(entry: { index: number }, path = ''): string {
  return `Bundle.entry[${entry.index}]${path}`;
}

/** An HlError naming the entry (and path) it is about. */
function entryError(code: HlError['code'], entry: { index: number }, path: string, message: string): HlError {
  return new HlError(code, `${at(entry, path)}: ${message}`, { issues: [{ code, expression: at(entry, path), message }] });
}

/** Re-throws an error met while planning an entry so that it names the entry; other errors pass unchanged. */
function namingEntry(err: unknown, entry: { index: number }, path: string): unknown {
  if (!isHlError(err)) return err;
  const issues = err.issues.length > 0 ? err.issues.map((i) => ({ ...i, expression: at(entry, path) })) : [{ code: err.code, expression: at(entry, path), message: err.message }];
  return new HlError(err.code, `${at(entry, path)}: ${err.message}`, { issues, cause: err });
}

/** A validation issue of an entry's resource, its path moved under `Bundle.entry[i].resource`. */
function issueInEntry(issue: Issue, entry: { index: number }): Issue {
  const e = issue.expression;
  const dot = e?.indexOf('.') ?? -1;
  return { ...issue, expression: at(entry, `.resource${e !== undefined && dot >= 0 ? e.slice(dot) : ''}`) };
}

/**
 * An error of a one-entry transaction that stands for a plain REST request (conditional create, update or
 * delete), restated without the Bundle: `Bundle.entry[0].resource.gender` becomes `Patient.gender`, and
 * request paths (`request.url`) are dropped, since the request has no body path for them.
 */
export function outsideBundle(err: unknown, resourceType: string): unknown {
  if (!isHlError(err)) return err;
  const prefix = 'Bundle.entry[0].resource';
  const issues = err.issues.map(({ expression, ...issue }) =>
    expression?.startsWith(prefix) ? { ...issue, expression: `${resourceType}${expression.slice(prefix.length)}` } : issue,
  );
  return new HlError(err.code, err.message.replace(/^Bundle\.entry\[0\][^:]*: /, ''), { issues, cause: err });
}

/** The versionId check of If-Match (http.html#concurrency): 412 when `ifMatch` is not the current version. */
export function checkIfMatch(ifMatch: string | undefined, current: { versionId: string }): void {
  if (ifMatch !== undefined && ifMatch !== current.versionId) {
    throw new HlError('precondition', `If-Match version ${ifMatch} is not the current version ${current.versionId}`);
  }
}

/**
 * Applies RFC 6902 operations (fast-json-patch, which validates them and leaves `document` untouched) to a
 * resource (http.html#patch); the result must keep the resource's type and id. Throws `processing` naming
 * the failing operation by index, never its values.
 */
export function applyJsonPatch(document: Resource, operations: unknown[]): Resource {
  let patched: Resource;
  try {
    patched = jsonPatch.applyPatch(document, operations as jsonPatch.Operation[], true, false).newDocument as Resource;
  } catch (err) {
    const name = (err as { name?: string }).name ?? 'error';
    const index = (err as { index?: number }).index;
    throw new HlError('processing', `JSON Patch operation ${index ?? '?'} cannot be applied (${name})`);
  }
  if (patched?.resourceType !== document.resourceType || patched.id !== document.id) {
    throw new HlError('processing', 'a JSON Patch may not change the resourceType or id');
  }
  return patched;
}

/**
 * Rewrites the links of a resource (http.html#trules): every `reference` and every narrative `href`/`src`
 * (`<a href="urn:uuid:…">`) that `resolve` maps; the rest stays as it is.
 */
function rewriteLinks(value: unknown, resolve: (link: string) => string | undefined): unknown {
  if (Array.isArray(value)) return value.map((v) => rewriteLinks(v, resolve));
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (k === 'reference' && typeof v === 'string') out[k] = resolve(v) ?? v;
    else if (k === 'div' && typeof v === 'string') {
      out[k] = v.replace(/\b(href|src)="([^"]*)"/g, (m, attr: string, link: string) => {
        const to = resolve(link);
        return to === undefined ? m : `${attr}="${to}"`;
      });
    }
    else out[k] = rewriteLinks(v, resolve);
  }
  return out;
}

/** Every `reference` string of a resource with its path. */
function referencesOf(value: unknown, path = '', out: { path: string; reference: string }[] = []): { path: string; reference: string }[] {
  if (Array.isArray(value)) value.forEach((v, i) => referencesOf(v, `${path}[${i}]`, out));
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'reference' && typeof v === 'string') out.push({ path: `${path}.${k}`, reference: v });
      else referencesOf(v, `${path}.${k}`, out);
    }
  }
  return out;
}

/**
 * The processor; one per repository.
 *
 * Conditional creates race: two requests that both find no match would both create. So a plan that creates
 * because a condition matched nothing is thrown away and made again under a lock that every such plan
 * takes until its versions are committed (and so visible to the next one's search); plans whose
 * conditions all matched (the usual case once shared resources exist) take no lock.
 */
export class BundleProcessor {
  private readonly deps: BundleProcessorDeps;
  private conditionalCreates: Promise<unknown> = Promise.resolve();

  constructor(deps: BundleProcessorDeps) {
    this.deps = deps;
  }

  /**
   * A FHIR transaction (http.html#transaction): every entry or none. Results are in request order. Throws,
   * with nothing stored, on the first entry that cannot be done: the HlError names `Bundle.entry[i]...`.
   */
  async transaction(entries: readonly BundleEntryRequest[]): Promise<BundleEntryResult[]> {
    const plans = await this.plan(entries, true);
    if (!plans.some((p) => p.conditionalCreate)) return this.commitPlans(plans);
    return this.oneConditionalCreateAtATime(async () => this.commitPlans(await this.plan(entries, true)));
  }

  /** Runs `work` once every earlier conditional create has finished, and before any later one starts. */
  private oneConditionalCreateAtATime<T>(work: () => Promise<T>): Promise<T> {
    const run = this.conditionalCreates.then(work);
    this.conditionalCreates = run.catch(() => undefined);
    return run;
  }

  /**
   * A FHIR batch (http.html#transaction): each entry on its own, in the spec's processing order; a failed
   * entry gets its error as its result and the others go on. The writes of entries that do not touch the
   * same resource share one group commit.
   */
  async batch(entries: readonly BundleEntryRequest[]): Promise<BatchEntryResult[]> {
    const results: BatchEntryResult[] = new Array(entries.length);
    const position = new Map(entries.map((e, i) => [e, i]));
    let pending: { entry: BundleEntryRequest; plans: EntryPlan[] }[] = [];
    const pendingRefs = new Set<string>();
    const commitPending = async () => {
      await Promise.all(
        pending.map(({ entry, plans }) =>
          this.commitPlans(plans).then(
            ([r]) => void (results[position.get(entry)!] = r!),
            (error: unknown) => void (results[position.get(entry)!] = { kind: 'error', error }),
          ),
        ),
      );
      pending = [];
      pendingRefs.clear();
    };
    for (const entry of this.inProcessingOrder(entries)) {
      try {
        let plans = await this.plan([entry], false);
        if (plans.some((p) => p.conditionalCreate)) {
          const [r] = await this.oneConditionalCreateAtATime(async () => this.commitPlans(await this.plan([entry], false)));
          results[position.get(entry)!] = r!;
          continue;
        }
        // An entry touching a resource an earlier entry of this batch writes waits for that write.
        if (plans.some((p) => p.ref !== undefined && p.write !== undefined && pendingRefs.has(p.ref))) {
          await commitPending();
          plans = await this.plan([entry], false);
        }
        for (const p of plans) if (p.ref !== undefined && p.write !== undefined) pendingRefs.add(p.ref);
        pending.push({ entry, plans });
      } catch (error) {
        results[position.get(entry)!] = { kind: 'error', error };
      }
    }
    await commitPending();
    return results;
  }

  private inProcessingOrder(entries: readonly BundleEntryRequest[]): BundleEntryRequest[] {
    return [...entries].sort((a, b) => processingRank[a.method]! - processingRank[b.method]! || a.index - b.index);
  }

  /** Plans entries (no writes): targets, conditions, references, versions, all validated. */
  private async plan(entries: readonly BundleEntryRequest[], checkReads: boolean): Promise<EntryPlan[]> {
    const fullUrls = new Map<string, number>();
    for (const e of entries) {
      if (e.fullUrl === undefined) continue;
      const earlier = fullUrls.get(e.fullUrl);
      if (earlier !== undefined) throw entryError('invalid', e, '.fullUrl', `fullUrl is not unique: Bundle.entry[${earlier}] has the same one`);
      fullUrls.set(e.fullUrl, e.index);
    }
    const state: TransactionState = { touched: new Map(), deleted: new Set(), created: [] };
    const plans: EntryPlan[] = [];
    for (const entry of this.inProcessingOrder(entries)) plans.push(await this.planEntry(entry, state));
    const resolvers = await this.linkResolvers(plans, state);
    this.buildVersions(plans, resolvers, this.deps.nowInstant());
    if (checkReads) for (const p of plans) if (p.action === 'read') await this.checkRead(p.entry, state, plans);
    return plans;
  }

  /**
   * For each resource to write, how its links resolve (http.html#trules): a fullUrl of an entry → the
   * Type/id that entry was given (new id, matched id, update target), a relative `Type/id` against an
   * absolute fullUrl's base likewise, and a conditional reference → its one match. A urn:uuid or urn:oid
   * reference that names no entry is refused: a placeholder means nothing outside its Bundle.
   */
  private async linkResolvers(plans: EntryPlan[], state: TransactionState): Promise<Map<EntryPlan, (link: string) => string | undefined>> {
    const targets = new Map<string, string>();
    for (const p of plans) if (p.entry.fullUrl !== undefined && p.ref !== undefined) targets.set(p.entry.fullUrl, p.ref);
    const conditional = await this.resolveConditionalReferences(plans, state);
    const resolvers = new Map<EntryPlan, (link: string) => string | undefined>();
    const unresolved: Issue[] = [];
    for (const p of plans) {
      if (!p.body) continue;
      const base = p.entry.fullUrl !== undefined ? /^(https?:\/\/.+)\/[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/.exec(p.entry.fullUrl)?.[1] : undefined;
      const resolve = (link: string) =>
        targets.get(link) ?? conditional.get(link) ?? (base !== undefined && /^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/.test(link) ? targets.get(`${base}/${link}`) : undefined);
      resolvers.set(p, resolve);
      for (const { path, reference } of referencesOf(p.body)) {
        if (/^urn:(uuid|oid):/.test(reference) && resolve(reference) === undefined) {
          unresolved.push({ code: 'invalid', expression: at(p.entry, `.resource${path}`), message: 'the reference names no entry of this Bundle (a urn:uuid or urn:oid resolves only to a fullUrl of the same transaction)' });
        }
      }
    }
    if (unresolved.length > 0) throw new HlError('invalid', `${unresolved.length} unresolvable placeholder reference(s); nothing was stored`, { issues: unresolved });
    return resolvers;
  }

  /**
   * Builds every version to write — links rewritten, id and meta (versionId, one lastUpdated for the whole
   * transaction) set — and validates them all; throws `processing` listing every issue under its entry.
   */
  private buildVersions(plans: EntryPlan[], resolvers: Map<EntryPlan, (link: string) => string | undefined>, now: string): void {
    const issues: Issue[] = [];
    for (const p of plans) {
      if (p.action !== 'create' && p.action !== 'update' && p.action !== 'delete') continue;
      const id = p.ref!.slice(p.ref!.indexOf('/') + 1);
      const versionId = p.action === 'create' ? '1' : String(Number(p.current!.versionId) + 1);
      if (p.action === 'delete') {
        p.write = { version: { resourceType: p.entry.resourceType, id, meta: { versionId, lastUpdated: now } }, patient: p.current!.patient, deleted: true };
        continue;
      }
      const rewritten = rewriteLinks(p.body, resolvers.get(p)!) as Resource;
      const version: Resource = { ...rewritten, id, meta: { ...(rewritten.meta ?? {}), versionId, lastUpdated: now } };
      for (const issue of this.deps.validate(version)) issues.push(issueInEntry(issue, p.entry));
      p.write = { version, patient: p.current?.patient ?? this.deps.patientOf(version), deleted: false };
    }
    if (issues.length > 0) {
      throw new HlError('processing', `${issues.length} validation issue(s) in the Bundle's resources; nothing was stored`, { issues });
    }
  }

  /** Decides what one entry does, against the state the entries before it (in processing order) left. */
  private async planEntry(entry: BundleEntryRequest, state: TransactionState): Promise<EntryPlan> {
    const type = entry.resourceType;
    switch (entry.method) {
      case 'GET':
      case 'HEAD':
        return { entry, action: 'read' };
      case 'POST': {
        if (entry.ifNoneExist) {
          const found = await this.matches(entry, entry.ifNoneExist, state, '.request.ifNoneExist');
          if (found.count > 1) throw entryError('precondition', entry, '.request.ifNoneExist', `ifNoneExist matches ${found.count} ${type} resources`);
          if (found.count === 1) return { entry, action: 'match', ref: found.ref!, ...(found.version ? { matched: found.version } : {}) };
        }
        const ref = `${type}/${newResourceId()}`;
        state.created.push({ ref, resource: { ...entry.resource!, id: ref.slice(type.length + 1) }, index: entry.index });
        return { entry, action: 'create', ref, body: entry.resource!, ...(entry.ifNoneExist ? { conditionalCreate: true } : {}) };
      }
      case 'PUT': {
        let id = entry.id;
        if (id === undefined) {
          const found = await this.matches(entry, entry.query!, state, '.request.url');
          if (found.count > 1) throw entryError('precondition', entry, '.request.url', `the conditional update matches ${found.count} ${type} resources`);
          if (found.count === 0) {
            if (entry.resource!.id !== undefined) {
              throw entryError('invalid', entry, '.resource.id', 'the conditional update matches nothing and the resource has an id: update as create is not supported');
            }
            if (entry.ifMatch !== undefined) throw entryError('precondition', entry, '.request.ifMatch', 'the conditional update matches nothing, so ifMatch cannot hold');
            const ref = `${type}/${newResourceId()}`;
            state.created.push({ ref, resource: { ...entry.resource!, id: ref.slice(type.length + 1) }, index: entry.index });
            return { entry, action: 'create', ref, body: entry.resource!, conditionalCreate: true };
          }
          id = found.ref!.slice(type.length + 1);
          if (entry.resource!.id !== undefined && entry.resource!.id !== id) {
            throw entryError('invalid', entry, '.resource.id', 'the resource id is not the id of the resource the conditional update matches');
          }
        }
        const ref = this.touch(entry, `${type}/${id}`, state);
        const current = await this.current(entry, id);
        this.ifMatch(entry, current);
        return { entry, action: 'update', ref, current, body: entry.resource! };
      }
      case 'PATCH': {
        const id = entry.id ?? (await this.single(entry, state)).slice(type.length + 1);
        const ref = this.touch(entry, `${type}/${id}`, state);
        const current = await this.current(entry, id);
        if (current.deleted) throw entryError('deleted', entry, '.request.url', `${type}/${id} was deleted`);
        this.ifMatch(entry, current);
        const resource = await this.deps.readResource(type, id).catch((err: unknown) => Promise.reject(namingEntry(err, entry, '.request.url')));
        let patched: Resource;
        try {
          patched = applyJsonPatch(resource, entry.patch!);
        } catch (err) {
          throw namingEntry(err, entry, '.resource.data');
        }
        return { entry, action: 'update', ref, current, body: patched };
      }
      case 'DELETE': {
        let id = entry.id;
        if (id === undefined) {
          const found = await this.matches(entry, entry.query!, state, '.request.url');
          if (found.count > 1) throw entryError('precondition', entry, '.request.url', `the conditional delete matches ${found.count} ${type} resources`);
          if (found.count === 0) return { entry, action: 'none' };
          id = found.ref!.slice(type.length + 1);
        }
        const ref = this.touch(entry, `${type}/${id}`, state);
        const current = await this.current(entry, id);
        this.ifMatch(entry, current);
        if (current.deleted) return { entry, action: 'none', ref };
        state.deleted.add(ref);
        return { entry, action: 'delete', ref, current };
      }
    }
  }

  private async current(entry: BundleEntryRequest, id: string): Promise<StoredVersion> {
    try {
      return await this.deps.readCurrent(entry.resourceType, id);
    } catch (err) {
      throw namingEntry(err, entry, '.request.url');
    }
  }

  private ifMatch(entry: BundleEntryRequest, current: StoredVersion): void {
    try {
      checkIfMatch(entry.ifMatch, current);
    } catch (err) {
      throw namingEntry(err, entry, '.request.ifMatch');
    }
  }

  /** Claims `ref` for `entry`: a transaction may touch a resource once (http.html#trules). */
  private touch(entry: BundleEntryRequest, ref: string, state: TransactionState): string {
    const other = state.touched.get(ref) ?? state.created.find((c) => c.ref === ref)?.index;
    if (other !== undefined) {
      throw entryError('invalid', entry, '.request.url', `${ref} is also the target of Bundle.entry[${other}]; a transaction may touch a resource only once`);
    }
    state.touched.set(ref, entry.index);
    return ref;
  }

  /** The one resource a conditional PATCH names: none is 404, several 412. */
  private async single(entry: BundleEntryRequest, state: TransactionState): Promise<string> {
    const found = await this.matches(entry, entry.query!, state, '.request.url');
    if (found.count === 0) throw entryError('not-found', entry, '.request.url', `the conditional ${entry.method} matches no ${entry.resourceType}`);
    if (found.count > 1) throw entryError('precondition', entry, '.request.url', `the conditional ${entry.method} matches ${found.count} ${entry.resourceType} resources`);
    return found.ref!;
  }

  /**
   * How many resources of the entry's type match `query` as this transaction leaves things: stored ones
   * (the repository's search) not deleted by it, plus those it creates; and the match when there is one.
   */
  private async matches(
    entry: BundleEntryRequest,
    query: URLSearchParams,
    state: TransactionState,
    path: string,
  ): Promise<{ count: number; ref?: string; version?: ServedVersion }> {
    const type = entry.resourceType;
    const q = new URLSearchParams(query);
    for (const p of resultParams) q.delete(p);
    const deletedHere = [...state.deleted].filter((r) => r.startsWith(`${type}/`)).length;
    // Room for every match this transaction deleted plus two: enough to tell none, one and several apart.
    q.set('_count', String(Math.min(1000, deletedHere + 2)));
    try {
      const result = await this.deps.search(type, q);
      const live = result.page.filter((v) => !state.deleted.has(`${type}/${v.id}`));
      const stored = result.total - (result.page.length - live.length);
      // The resources this transaction creates are matched by the plan the search made, so a condition means
      // the same for them as for stored ones (the `ap` prefix, say, needs the clock the search planned with).
      const created = state.created.filter((c) => c.ref.startsWith(`${type}/`) && matchesSearch(c.resource, result.plan));
      const count = stored + created.length;
      if (count !== 1) return { count };
      return live[0] ? { count, ref: `${type}/${live[0].id}`, version: live[0] } : { count, ref: created[0]!.ref };
    } catch (err) {
      throw namingEntry(err, entry, path);
    }
  }

  /**
   * Resolves every conditional reference (`Patient?identifier=…`, http.html#trules) of the resources to
   * write: exactly one match, else the transaction fails (none: 400, several: 412) naming the reference's
   * path, never its search (which can hold an identifier).
   */
  private async resolveConditionalReferences(plans: EntryPlan[], state: TransactionState): Promise<Map<string, string>> {
    const resolved = new Map<string, string>();
    for (const p of plans) {
      if (!p.body) continue;
      for (const { path, reference } of referencesOf(p.body)) {
        const m = conditionalReference.exec(reference);
        if (!m || resolved.has(reference)) continue;
        if (!isResourceType(m[1])) throw entryError('invalid', p.entry, `.resource${path}`, 'the conditional reference does not start with a FHIR R4 resource type');
        const where = { ...p.entry, resourceType: m[1]! };
        const found = await this.matches(where, new URLSearchParams(m[2]!), state, `.resource${path}`);
        if (found.count === 0) throw entryError('invalid', p.entry, `.resource${path}`, `the conditional reference matches no ${m[1]}`);
        if (found.count > 1) throw entryError('precondition', p.entry, `.resource${path}`, `the conditional reference matches ${found.count} ${m[1]} resources; it must match exactly one`);
        resolved.set(reference, found.ref!);
      }
    }
    return resolved;
  }

  /**
   * Checks, before anything is written, that a GET entry will succeed once the writes are done: a read's
   * target exists and is not deleted (by this transaction or before), a vread's version exists, a search
   * parses. The API performs the read itself after the commit.
   */
  private async checkRead(entry: BundleEntryRequest, state: TransactionState, plans: EntryPlan[]): Promise<void> {
    const type = entry.resourceType;
    try {
      if (entry.id === undefined) {
        planSearch(type, entry.query ?? new URLSearchParams(), { nowMs: Date.parse(this.deps.nowInstant()) });
        return;
      }
      const ref = `${type}/${entry.id}`;
      const written = plans.find((p) => p.ref === ref && p.write !== undefined);
      if (entry.versionId !== undefined && written && written.write!.version.meta?.versionId === entry.versionId) {
        if (written.write!.deleted) throw new HlError('deleted', `${ref} is deleted by this transaction`);
        return;
      }
      if (entry.versionId === undefined && written) {
        if (state.deleted.has(ref)) throw new HlError('deleted', `${ref} is deleted by this transaction`);
        return;
      }
      const v = await this.deps.readCurrent(type, entry.id, entry.versionId);
      if (v.deleted) throw new HlError('deleted', `${ref} was deleted (version ${v.versionId})`);
    } catch (err) {
      throw namingEntry(err, entry, '.request.url');
    }
  }

  /** Commits every planned version as one group and gives each entry its result, in request order. */
  private async commitPlans(plans: EntryPlan[]): Promise<BundleEntryResult[]> {
    const writing = plans.filter((p) => p.write !== undefined);
    const served = writing.length > 0 ? await this.deps.commit(writing.map((p) => p.write!)) : [];
    const byRef = new Map(writing.map((p, i) => [p.ref!, served[i]!]));
    const results = plans.map((p): [number, BundleEntryResult] => {
      const i = p.entry.index;
      switch (p.action) {
        case 'read':
          return [i, { kind: 'read', entry: p.entry }];
        case 'create':
          return [i, { kind: 'write', status: 201, version: byRef.get(p.ref!)! }];
        case 'update':
          return [i, { kind: 'write', status: 200, version: byRef.get(p.ref!)! }];
        case 'match':
          return [i, { kind: 'write', status: 200, version: p.matched ?? byRef.get(p.ref!)! }];
        case 'delete':
          return [i, { kind: 'write', status: 204, version: byRef.get(p.ref!)! }];
        case 'none':
          return [i, { kind: 'write', status: 204, version: null }];
      }
    });
    return results.sort((a, b) => a[0] - b[0]).map(([, r]) => r);
  }
}
