/**
 * FHIR R4 REST at /fhir (http://hl7.org/fhir/R4/http.html): each interaction a small named handler over the
 * repository, in the manner of medplum's fhir-router. Responses carry the exact committed bytes, with
 * ETag, Last-Modified and Location as the spec asks.
 */
import { STATUS_CODES } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { HlError, toBase64 } from '../kernel/index.js';
import { parseBundle, subsetResource, versionOfETag, type BundleEntryRequest } from '../fhir/index.js';
import { resourceOf, type AccessContext, type BatchEntryResult, type GuardedRepository, type ServedVersion, type VersionProof } from '../repository/index.js';
import { intParam } from './params.js';
import { httpErrorOf, outcomeOf } from './errors.js';

const fhirJson = 'application/fhir+json; charset=utf-8';
const idPattern = /^[A-Za-z0-9\-.]{1,64}$/;

/** What the FHIR routes need. */
export interface FhirRouteDeps {
  repository: GuardedRepository;
  /** Who asks and why, from the request's verified token and headers (see server.ts). */
  accessContextOf: (req: FastifyRequest) => AccessContext;
  /** True for an R4 resource type name. */
  isResourceType: (name: string) => boolean;
  /** The CapabilityStatement served at /fhir/metadata. */
  capabilityStatement: () => Record<string, unknown>;
}

type TypeParams = { type: string };
type IdParams = TypeParams & { id: string };
type VidParams = IdParams & { vid: string };

function baseUrl(req: FastifyRequest): string {
  return `${req.protocol}://${req.host}/fhir`;
}

function checkType(deps: FhirRouteDeps, type: string): void {
  if (!deps.isResourceType(type)) throw new HlError('not-found', `unknown resource type "${type.slice(0, 64)}"`);
}

function checkId(what: string, id: string): void {
  if (!idPattern.test(id)) throw new HlError('invalid', `${what} must match [A-Za-z0-9-.]{1,64}`);
}

function sendVersion(reply: FastifyReply, v: ServedVersion, status = 200): FastifyReply {
  return reply
    .code(status)
    .type(fhirJson)
    .header('ETag', `W/"${v.versionId}"`)
    .header('Last-Modified', new Date(v.lastUpdated).toUTCString())
    .send(Buffer.from(v.content));
}

/** The query string of a request as sent (FHIR search parameters repeat and carry `:modifiers`). */
function rawQuery(req: FastifyRequest): string {
  return req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '';
}

function goneIfDeleted(v: ServedVersion): ServedVersion {
  if (v.deleted) throw new HlError('deleted', `${v.resourceType}/${v.id} was deleted (version ${v.versionId})`);
  return v;
}

/** The versionId of an If-Match header (`W/"3"` or `"3"`); throws `invalid` on anything else. */
function ifMatchVersion(header: string | undefined): string | undefined {
  return header === undefined ? undefined : versionOfETag(header);
}

/** Registers the FHIR interactions on `app`. */
export function registerFhirRoutes(app: FastifyInstance, deps: FhirRouteDeps): void {
  const { repository } = deps;
  const ctx = (req: FastifyRequest) => deps.accessContextOf(req);

  app.get('/fhir/metadata', async (_req, reply) => reply.type(fhirJson).send(deps.capabilityStatement()));
  registerBundleRoute(app, deps);

  app.post<{ Params: TypeParams }>('/fhir/:type', async (req, reply) => {
    checkType(deps, req.params.type);
    const ifNoneExist = req.headers['if-none-exist'];
    if (typeof ifNoneExist === 'string') {
      const { version, created } = await repository.createIfNoneExist(ctx(req), req.params.type, req.body, ifNoneExist);
      if (created) reply.header('Location', `${baseUrl(req)}/${version.resourceType}/${version.id}/_history/${version.versionId}`);
      return sendVersion(reply, version, created ? 201 : 200);
    }
    const v = await repository.create(ctx(req), req.params.type, req.body);
    reply.header('Location', `${baseUrl(req)}/${v.resourceType}/${v.id}/_history/${v.versionId}`);
    return sendVersion(reply, v, 201);
  });

  app.post<{ Params: TypeParams }>('/fhir/:type/$validate', async (req, reply) => {
    checkType(deps, req.params.type);
    const issues = repository.validateOnly(req.params.type, req.body);
    const outcome =
      issues.length > 0
        ? outcomeOf('processing', 'the resource is not valid', issues)
        : { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', diagnostics: 'the resource is valid' }] };
    return reply.code(200).type(fhirJson).send(outcome);
  });

  app.get<{ Params: { id: string } }>('/fhir/Patient/:id/$everything', async (req, reply) => {
    checkId('id', req.params.id);
    const versions = await repository.everything(ctx(req), req.params.id);
    const base = baseUrl(req);
    return reply.type(fhirJson).send({
      resourceType: 'Bundle',
      type: 'searchset',
      total: versions.length,
      entry: versions.map((v) => ({ fullUrl: `${base}/${v.resourceType}/${v.id}`, resource: resourceOf(v), search: { mode: 'match' } })),
    });
  });

  /**
   * Patient/{id}/$disclosures: the accounting of disclosures as Parameters, one `disclosure` per access
   * (its AuditEvent, and the `$proof` parts that show the ledger holds that AuditEvent unaltered).
   */
  app.get<{ Params: { id: string } }>('/fhir/Patient/:id/$disclosures', async (req, reply) => {
    checkId('id', req.params.id);
    const list = await repository.disclosures(ctx(req), req.params.id);
    return reply.type(fhirJson).send({
      resourceType: 'Parameters',
      parameter: list.map(({ event, proof }) => ({
        name: 'disclosure',
        part: [
          { name: 'event', resource: resourceOf(event) },
          ...(proof ? proofParameters(proof) : [{ name: 'pending', valueString: 'committed; not yet covered by a checkpoint a majority of the members signed' }]),
        ],
      })),
    });
  });

  /**
   * Patient/{id}/$erase (GDPR Art. 17): crypto-shreds the patient's records and answers the erasure receipt:
   * how many versions were erased, and the `record.erase` leaf with its inclusion proof and checkpoint.
   */
  app.post<{ Params: { id: string } }>('/fhir/Patient/:id/$erase', async (req, reply) => {
    checkId('id', req.params.id);
    const r = await repository.erasePatient(ctx(req), req.params.id);
    return reply.type(fhirJson).send({
      resourceType: 'Parameters',
      parameter: [
        { name: 'versionsErased', valueInteger: r.versionsErased },
        { name: 'residuePurged', valueBoolean: r.residuePurged },
        { name: 'txId', valueString: r.txId },
        // The receipt is a signed tx, not a salted record commitment: no salt.
        ...proofParameters(r.proof).filter((p) => p.name !== 'salt'),
      ],
    });
  });

  /**
   * A searchset Bundle (search.html): the page's matches (search.mode `match`) then the `_include`/
   * `_revinclude` resources (`include`, not counted in `total`); `_summary`/`_elements` subsets are tagged
   * SUBSETTED (`_elements` applies to the matches only); `_total=none` leaves `total` out; paging links
   * keep every parameter.
   */
  const search = async (req: FastifyRequest<{ Params: TypeParams }>, reply: FastifyReply, query: URLSearchParams) => {
    checkType(deps, req.params.type);
    const { total, page, included, plan } = await repository.search(ctx(req), req.params.type, query);
    const base = baseUrl(req);
    const link = (offset: number) => {
      const q = new URLSearchParams(query);
      q.set('_count', String(plan.count));
      q.set('_offset', String(offset));
      return `${base}/${req.params.type}?${q.toString()}`;
    };
    const next = plan.count > 0 && plan.offset + plan.count < total && plan.summary !== 'count';
    const entry = (v: ServedVersion, mode: 'match' | 'include') => ({
      fullUrl: `${base}/${v.resourceType}/${v.id}`,
      resource: subsetResource(resourceOf(v), plan.summary, mode === 'match' ? plan.elements : null),
      search: { mode },
    });
    return reply.type(fhirJson).send({
      resourceType: 'Bundle',
      type: 'searchset',
      ...(plan.total === 'none' && plan.summary !== 'count' ? {} : { total }),
      link: [
        { relation: 'self', url: link(plan.offset) },
        ...(next ? [{ relation: 'next', url: link(plan.offset + plan.count) }] : []),
        ...(plan.offset > 0 && plan.count > 0 ? [{ relation: 'previous', url: link(Math.max(0, plan.offset - plan.count)) }] : []),
      ],
      entry: [...page.map((v) => entry(v, 'match')), ...included.map((v) => entry(v, 'include'))],
    });
  };

  app.get<{ Params: TypeParams }>('/fhir/:type', async (req, reply) => {
    const raw = req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '';
    return search(req, reply, new URLSearchParams(raw));
  });

  app.post<{ Params: TypeParams }>('/fhir/:type/_search', async (req, reply) => {
    const raw = req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '';
    const query = new URLSearchParams(raw);
    if (typeof req.body === 'string') for (const [k, v] of new URLSearchParams(req.body)) query.append(k, v);
    return search(req, reply, query);
  });

  app.get<{ Params: IdParams }>('/fhir/:type/:id', async (req, reply) => {
    checkType(deps, req.params.type);
    checkId('id', req.params.id);
    return sendVersion(reply, goneIfDeleted(await repository.read(ctx(req), req.params.type, req.params.id)));
  });

  app.get<{ Params: VidParams }>('/fhir/:type/:id/_history/:vid', async (req, reply) => {
    checkType(deps, req.params.type);
    checkId('id', req.params.id);
    checkId('versionId', req.params.vid);
    return sendVersion(reply, goneIfDeleted(await repository.vread(ctx(req), req.params.type, req.params.id, req.params.vid)));
  });

  app.put<{ Params: IdParams }>('/fhir/:type/:id', async (req, reply) => {
    checkType(deps, req.params.type);
    checkId('id', req.params.id);
    const ifMatch = ifMatchVersion(req.headers['if-match'] as string | undefined);
    const v = await repository.update(ctx(req), req.params.type, req.params.id, req.body, ifMatch);
    return sendVersion(reply, v, 200);
  });

  app.put<{ Params: TypeParams }>('/fhir/:type', async (req, reply) => {
    checkType(deps, req.params.type);
    const query = rawQuery(req);
    if (query === '') throw new HlError('invalid', 'PUT to a type needs a search (conditional update: PUT [type]?[search])');
    const ifMatch = ifMatchVersion(req.headers['if-match'] as string | undefined);
    const { status, version } = await repository.conditional(ctx(req), 'PUT', req.params.type, query, req.body, ifMatch);
    const v = version!;
    if (status === 201) reply.header('Location', `${baseUrl(req)}/${v.resourceType}/${v.id}/_history/${v.versionId}`);
    return sendVersion(reply, v, status);
  });

  app.delete<{ Params: TypeParams }>('/fhir/:type', async (req, reply) => {
    checkType(deps, req.params.type);
    const query = rawQuery(req);
    if (query === '') throw new HlError('invalid', 'DELETE of a type needs a search (conditional delete: DELETE [type]?[search])');
    const ifMatch = ifMatchVersion(req.headers['if-match'] as string | undefined);
    const { version } = await repository.conditional(ctx(req), 'DELETE', req.params.type, query, undefined, ifMatch);
    if (version) reply.header('ETag', `W/"${version.versionId}"`);
    return reply.code(204).send();
  });

  app.patch<{ Params: IdParams }>('/fhir/:type/:id', async (req, reply) => {
    checkType(deps, req.params.type);
    checkId('id', req.params.id);
    const type = String(req.headers['content-type'] ?? '');
    if (!type.startsWith('application/json-patch+json')) throw new HlError('invalid', 'PATCH needs Content-Type application/json-patch+json');
    const ifMatch = ifMatchVersion(req.headers['if-match'] as string | undefined);
    return sendVersion(reply, await repository.patch(ctx(req), req.params.type, req.params.id, req.body, ifMatch), 200);
  });

  app.delete<{ Params: IdParams }>('/fhir/:type/:id', async (req, reply) => {
    checkType(deps, req.params.type);
    checkId('id', req.params.id);
    const v = await repository.delete(ctx(req), req.params.type, req.params.id);
    if (v) reply.header('ETag', `W/"${v.versionId}"`);
    return reply.code(204).send();
  });

  const history = async (
    req: FastifyRequest<{ Querystring: Record<string, string> }>,
    reply: FastifyReply,
    selfPath: string,
    load: (options: { limit: number; cursor?: string }) => Promise<{ versions: ServedVersion[]; nextCursor: string | null }>,
  ) => {
    const count = Math.min(intParam('_count', req.query._count, 100), 1000);
    const cursor = req.query._cursor;
    if (cursor !== undefined && !/^[A-Za-z0-9_\-.:=]{1,200}$/.test(cursor)) throw new HlError('invalid', 'parameter "_cursor" is malformed');
    const page = await load({ limit: count, ...(cursor ? { cursor } : {}) });
    const base = baseUrl(req);
    const self = `${base}${selfPath}`;
    return reply.type(fhirJson).send({
      resourceType: 'Bundle',
      type: 'history',
      link: [
        { relation: 'self', url: `${self}?_count=${count}${cursor ? `&_cursor=${encodeURIComponent(cursor)}` : ''}` },
        ...(page.nextCursor ? [{ relation: 'next', url: `${self}?_count=${count}&_cursor=${encodeURIComponent(page.nextCursor)}` }] : []),
      ],
      entry: page.versions.map((v) => ({
        fullUrl: `${base}/${v.resourceType}/${v.id}`,
        ...(v.deleted ? {} : { resource: resourceOf(v) }),
        request: {
          method: v.deleted ? 'DELETE' : v.versionId === '1' ? 'POST' : 'PUT',
          url: v.versionId === '1' && !v.deleted ? v.resourceType : `${v.resourceType}/${v.id}`,
        },
        response: {
          status: v.deleted ? '204' : v.versionId === '1' ? '201' : '200',
          etag: `W/"${v.versionId}"`,
          lastModified: v.lastUpdated,
        },
      })),
    });
  };

  app.get<{ Querystring: Record<string, string> }>('/fhir/_history', async (req, reply) =>
    history(req, reply, '/_history', (o) => repository.historyOf(ctx(req), null, o)),
  );

  app.get<{ Params: TypeParams; Querystring: Record<string, string> }>('/fhir/:type/_history', async (req, reply) => {
    checkType(deps, req.params.type);
    return history(req, reply, `/${req.params.type}/_history`, (o) => repository.historyOf(ctx(req), req.params.type, o));
  });

  app.get<{ Params: IdParams; Querystring: Record<string, string> }>('/fhir/:type/:id/_history', async (req, reply) => {
    checkType(deps, req.params.type);
    checkId('id', req.params.id);
    return history(req, reply, `/${req.params.type}/${req.params.id}/_history`, (o) => repository.history(ctx(req), req.params.type, req.params.id, o));
  });

  app.get<{ Params: VidParams }>('/fhir/:type/:id/_history/:vid/$proof', async (req, reply) => {
    checkType(deps, req.params.type);
    checkId('id', req.params.id);
    checkId('versionId', req.params.vid);
    const p = await repository.proof(ctx(req), req.params.type, req.params.id, req.params.vid);
    return reply.type(fhirJson).send({ resourceType: 'Parameters', parameter: proofParameters(p) });
  });
}

/**
 * The parameters of a `$proof` (DESIGN.md §9); leafIndex and treeSize are integer64 (FHIR R5 type name;
 * JSON string form).
 */
function proofParameters(p: VersionProof): Record<string, unknown>[] {
  return [
    { name: 'leafIndex', valueInteger64: String(p.leafIndex) },
    { name: 'treeSize', valueInteger64: String(p.treeSize) },
    { name: 'leaf', valueBase64Binary: toBase64(p.leaf) },
    { name: 'salt', valueBase64Binary: toBase64(p.salt) },
    ...p.proof.map((h) => ({ name: 'proof', valueBase64Binary: toBase64(h) })),
    { name: 'checkpoint', valueString: p.checkpoint },
  ];
}

/** `Bundle.entry.response.status`: the code and its reason phrase (bundle.html#Bundle.entry.response.status). */
function statusLine(status: number): string {
  return `${status} ${STATUS_CODES[status] ?? ''}`.trim();
}

/** The response entry of a write (or a matched conditional create): status, location, etag and the resource. */
function writeEntry(base: string, status: number, v: ServedVersion | null) {
  if (v === null) return { response: { status: statusLine(status) } };
  const etag = `W/"${v.versionId}"`;
  if (v.deleted) return { response: { status: statusLine(status), etag, lastModified: v.lastUpdated } };
  return {
    fullUrl: `${base}/${v.resourceType}/${v.id}`,
    resource: resourceOf(v),
    response: { status: statusLine(status), location: `${v.resourceType}/${v.id}/_history/${v.versionId}`, etag, lastModified: v.lastUpdated },
  };
}

/**
 * The response entry of a failed batch entry: its status and OperationOutcome (http.html#transaction-response);
 * a server fault is logged as `handleError` logs one, by code and message only.
 */
function errorEntry(req: FastifyRequest, err: unknown) {
  const { status, outcome } = httpErrorOf(err);
  if (status >= 500) req.log.error({ err: { code: (err as HlError).code, message: (err as Error).message } }, 'batch entry failed');
  return { response: { status: statusLine(status), outcome } };
}

/**
 * Performs a GET (or HEAD) entry through this server's own routes, so it answers exactly as the same request
 * would on its own (read, vread, search with paging links), with the caller's token and host.
 */
async function readEntry(app: FastifyInstance, req: FastifyRequest, base: string, entry: BundleEntryRequest) {
  const path = `${entry.resourceType}${entry.id !== undefined ? `/${entry.id}` : ''}${entry.versionId !== undefined ? `/_history/${entry.versionId}` : ''}`;
  const query = entry.query ? `?${entry.query.toString()}` : '';
  const headers: Record<string, string> = {};
  // The entry is the same requester asking for the same reason: purpose, break-glass reason and practitioner go along.
  for (const h of ['authorization', 'host', 'x-purpose-of-use', 'x-break-glass-reason', 'x-acting-practitioner'] as const) {
    const value = req.headers[h];
    if (typeof value === 'string') headers[h] = value;
  }
  const res = await app.inject({ method: 'GET', url: `/fhir/${path}${query}`, headers });
  const body = res.body.length > 0 ? (JSON.parse(res.body) as Record<string, unknown>) : undefined;
  if (res.statusCode >= 400) return { response: { status: statusLine(res.statusCode), outcome: body } };
  const meta = body?.meta as { lastUpdated?: string } | undefined;
  const etag = res.headers.etag;
  return {
    ...(entry.id !== undefined ? { fullUrl: `${base}/${entry.resourceType}/${entry.id}` } : {}),
    ...(entry.method === 'GET' && body ? { resource: body } : {}),
    response: {
      status: statusLine(res.statusCode),
      ...(typeof etag === 'string' ? { etag } : {}),
      ...(meta?.lastUpdated ? { lastModified: meta.lastUpdated } : {}),
    },
  };
}

/** The response Bundle; `entry` is left out when empty, as FHIR JSON has no empty arrays (json.html). */
function responseBundle(type: 'transaction-response' | 'batch-response', entry: unknown[]) {
  return { resourceType: 'Bundle', type, ...(entry.length > 0 ? { entry } : {}) };
}

/**
 * Registers transaction and batch Bundles at POST /fhir (http.html#transaction): a transaction is all or
 * nothing (any malformed entry, failed condition or invalid resource fails it with nothing stored) and
 * answers `transaction-response`; a batch answers `batch-response` with each entry's own status, 200
 * overall. Response entries follow the request's order; GET entries run after the writes.
 */
export function registerBundleRoute(app: FastifyInstance, deps: FhirRouteDeps): void {
  app.post('/fhir', async (req, reply) => {
    const base = baseUrl(req);
    const { type, entries } = parseBundle(req.body, base);
    const entry: unknown[] = new Array(entries.length);
    if (type === 'transaction') {
      const malformed = entries.flatMap((e) => (e.ok ? [] : e.issues));
      if (malformed.length > 0) throw new HlError('invalid', `the transaction has malformed entries; nothing was stored`, { issues: malformed });
      const results = await deps.repository.transaction(deps.accessContextOf(req), entries.flatMap((e) => (e.ok ? [e.entry] : [])));
      for (const [i, r] of results.entries()) {
        // A read can only fail here if the data changed after the transaction checked it: the writes stand.
        entry[i] = r.kind === 'read' ? await readEntry(app, req, base, r.entry) : writeEntry(base, r.status, r.version);
      }
      return reply.type(fhirJson).send(responseBundle('transaction-response', entry));
    }
    const wellFormed = entries.flatMap((e) => (e.ok ? [e.entry] : []));
    for (const e of entries) if (!e.ok) entry[e.index] = errorEntry(req, new HlError('invalid', 'malformed entry', { issues: e.issues }));
    const results: BatchEntryResult[] = await deps.repository.batch(deps.accessContextOf(req), wellFormed);
    for (const [k, r] of results.entries()) {
      const i = wellFormed[k]!.index;
      entry[i] = r.kind === 'error' ? errorEntry(req, r.error) : r.kind === 'write' ? writeEntry(base, r.status, r.version) : await readEntry(app, req, base, r.entry);
    }
    return reply.type(fhirJson).send(responseBundle('batch-response', entry));
  });
}
