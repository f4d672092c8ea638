/**
 * The only path to records (DESIGN.md §2): each write is validated, sealed into the record store as a
 * pending version, committed to the ledger (`record.commit`, salted commitment) and only then marked
 * committed and acknowledged; reads return exactly the bytes that were committed (FHIR http.html).
 * Consent and audit join this path with issue 4.
 */
import { createHash } from 'node:crypto';
import { HlError, newResourceId, type Clock, type Issue } from '../kernel/index.js';
import { commitmentOf, contentOf, generateSalt, type RecordStore, type StoredVersion } from '../store/index.js';
import { matchesSearch, parseBundleEntry, partlyIndexed, planSearch, referencesOf, searchIndexOf, sortMatches, type BundleEntryRequest, type SearchPlan } from '../fhir/index.js';
import { maxAccessEntries, maxCommitVersions, maxTxBytes, type Ledger, type ParsedTx, type StoredTx, type TxReceipt } from '../ledger/index.js';
import type { AccessEntry } from '../audit/index.js';
import { applyJsonPatch, BundleProcessor, checkIfMatch, outsideBundle, type BatchEntryResult, type BundleEntryResult } from './bundle-processor.js';

/** A FHIR resource as JSON. */
export type Resource = { resourceType: string; id?: string; meta?: Record<string, unknown> } & Record<string, unknown>;

/** One version's commitment in a `record.commit` tx (DESIGN.md §3). */
export interface VersionCommitment {
  resourceType: string;
  id: string;
  versionId: string;
  /** Hex `SHA-256(salt || RFC 8785 bytes of the version)`. */
  commitment: string;
  labels?: string[];
}

/**
 * The body of a `record.commit` tx (DESIGN.md §3), pseudonymous ids only: one version's commitment, or
 * (`versions`) the commitments of several versions of one patient written together, so that a transaction
 * Bundle pays one signature and one leaf per patient instead of one per resource.
 */
export type RecordCommitBody = { patient?: string } & (VersionCommitment | { versions: VersionCommitment[] });

/**
 * The body of a stored `record.commit` tx, or null when the bytes are not one. The ledger validated the tx
 * when it applied it, so a read only decodes it (no canonicalization or signature check on the read path);
 * bytes altered since then fail the commitment comparison or this decoding, and `verify` names them.
 */
function recordCommitBodyOf(bytes: Uint8Array): RecordCommitBody | null {
  let tx: unknown;
  try {
    tx = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    return null;
  }
  const t = tx as { type?: unknown; body?: { versions?: unknown } } | null;
  if (typeof t !== 'object' || t === null || t.type !== 'record.commit' || typeof t.body !== 'object' || t.body === null) return null;
  if (t.body.versions !== undefined && !Array.isArray(t.body.versions)) return null;
  return t.body as RecordCommitBody;
}

/** Decoded commitments a repository remembers across leaves (~200 bytes each: ~10 MB at most). */
const maxRememberedCommitments = 50_000;

/** The version commitments a `record.commit` body carries, in either form. */
export function commitmentsOf(body: RecordCommitBody): VersionCommitment[] {
  return 'versions' in body ? body.versions : [body];
}

/** Signs and orders `record.commit` txs for this node (supplied by the composition root). */
export interface RecordCommitter {
  /** Signs one tx per body (off the event loop); the tx ids are known before anything is stored. */
  sign(bodies: readonly RecordCommitBody[]): Promise<ParsedTx[]>;
  /** Signs other txs of this organization (`access.log`, `emergency.access`, `record.erase`), one per body. */
  signAs(type: string, bodies: readonly Record<string, unknown>[]): Promise<ParsedTx[]>;
  /** Orders and applies them; resolves with receipts once durable and applied. */
  submit(txs: readonly ParsedTx[]): Promise<TxReceipt[]>;
}

/** What the repository needs. */
export interface RepositoryDeps {
  store: RecordStore;
  ledger: Ledger;
  committer: RecordCommitter;
  clock: Clock;
  /** Validates a resource against the R4 definitions; returns every issue. */
  validate: (resource: unknown) => Issue[];
  /** Id of the Patient whose compartment holds the resource, or null. */
  patientOf: (resource: Resource) => string | null;
  /** The ledger pseudonym of a local patient id (keyed, so the ledger cannot be joined back to records). */
  pseudonymOf: (patientId: string) => string;
}

/** A version as served: the exact committed bytes and what they say. */
export interface ServedVersion {
  resourceType: string;
  id: string;
  versionId: string;
  lastUpdated: string;
  deleted: boolean;
  /** The RFC 8785 bytes that were committed (meta included). */
  content: Uint8Array;
  /** Local id of the Patient whose compartment holds the version, or null. */
  patient: string | null;
  /** What the version was checked against on this read: its salt and the leaf committing it. */
  committed?: { salt: Uint8Array; leafIndex: number; leaf: Uint8Array };
}

/** The pieces of a `$proof`. */
export interface VersionProof {
  leafIndex: number;
  treeSize: number;
  leaf: Uint8Array;
  salt: Uint8Array;
  proof: Uint8Array[];
  checkpoint: string;
}

const fhirId = /^[A-Za-z0-9\-.]{1,64}$/;

/** The resource JSON of a stored or served version. */
export function resourceOf(v: { content: Uint8Array }): { resourceType: string } & Record<string, unknown> {
  return JSON.parse(new TextDecoder().decode(v.content));
}

function served(v: StoredVersion): ServedVersion {
  return {
    resourceType: v.resourceType,
    id: v.id,
    versionId: v.versionId,
    lastUpdated: v.lastUpdated,
    deleted: v.deleted,
    content: v.content,
    patient: v.patient,
  };
}

/** A version ready to seal and commit. */
interface PreparedVersion {
  version: Resource;
  patient: string | null;
  deleted: boolean;
  content: Uint8Array;
  salt: Uint8Array;
  meta: { versionId: string; lastUpdated: string };
  /** The pseudonym the commitment names, if the version is in a patient compartment. */
  pseudonym: string | null;
  commitment: VersionCommitment;
}

/** What a search found (FHIR search.html). */
export interface SearchResult {
  /** Matches in all pages. */
  total: number;
  /** This page's matches, in order, checked against the ledger. */
  page: ServedVersion[];
  /** `_include`/`_revinclude` resources for the page (search mode `include`), checked against the ledger. */
  included: ServedVersion[];
  /** The parsed search: paging, `_summary`, `_elements`, `_total`. */
  plan: SearchPlan;
}

/**
 * A chained search whose inner search finds more targets than this does not narrow the outer candidates by
 * the blind index (one bound variable per value; SQLite allows 32,766); the exact check still applies.
 */
const maxCriterionValues = 5000;

/** Most resources `_include`/`_revinclude` may add to one page. */
const maxIncluded = 5000;

/** The default search order (search.html#sort): newest first, then by id so that every order is total. */
function byNewest(a: { version: StoredVersion }, b: { version: StoredVersion }): number {
  const x = a.version;
  const y = b.version;
  return x.lastUpdated < y.lastUpdated ? 1 : x.lastUpdated > y.lastUpdated ? -1 : x.id < y.id ? -1 : x.id > y.id ? 1 : 0;
}

/** Which versions a requester may see (the repository's authorize step decides; see `access.ts`). */
export type VersionFilter = (v: { resourceType: string; patient: string | null; content: Uint8Array }) => boolean;

/** `access.log` bodies for entries: up to the ledger's entry limit each, and well inside its byte limit. */
function accessLogBodies(entries: readonly AccessEntry[]): { entries: AccessEntry[] }[] {
  const bodies: { entries: AccessEntry[] }[] = [];
  let chunk: AccessEntry[] = [];
  let bytes = 0;
  for (const e of entries) {
    const size = JSON.stringify(e).length;
    if (chunk.length > 0 && (chunk.length === maxAccessEntries || bytes + size > maxTxBytes / 2)) {
      bodies.push({ entries: chunk });
      chunk = [];
      bytes = 0;
    }
    chunk.push(e);
    bytes += size;
  }
  if (chunk.length > 0) bodies.push({ entries: chunk });
  return bodies;
}

/** Most requests one group commit serves. */
const maxGroupRequests = 256;

/**
 * Group commits under way at once. A group spends much of its time waiting for fsyncs (off the event loop);
 * a second group sealing and writing meanwhile keeps the CPU busy. Versions of one resource in two groups
 * are safe: a version id is unique (a second writer of it gets a conflict) and marking committed never lets
 * an older version replace a newer current one.
 */
const maxGroupsInFlight = 2;

/** The ledgered repository. */
export class LedgeredRepository {
  private readonly deps: RepositoryDeps;
  private queue: { prepared: PreparedVersion[]; access: AccessEntry[]; resolve: (v: ServedVersion[]) => void; reject: (e: unknown) => void }[] = [];
  private groupsInFlight = 0;
  private startScheduled = false;
  private readonly bundles: BundleProcessor;
  /** Decoded commitments of recently read leaves, by tx id, with the SHA-256 of the bytes they came from. */
  /** Commitments decoded from one read of a leaf's bytes (kept only as long as that read is). */
  private readonly decodedReads = new WeakMap<StoredTx, Map<string, string> | null>();
  private readonly leaves = new Map<string, { digest: string; commitments: Map<string, string> }>();
  private rememberedCommitments = 0;

  constructor(deps: RepositoryDeps) {
    this.deps = deps;
    this.bundles = new BundleProcessor({
      readCurrent: (type, id, versionId) => deps.store.readVersion(type, id, versionId),
      readResource: async (type, id) => resourceOf(await this.readVerified(type, id)) as Resource,
      search: (type, query) => this.search(type, query),
      validate: (resource) => deps.validate(resource),
      patientOf: (resource) => deps.patientOf(resource),
      nowInstant: () => this.nowInstant(),
      commit: (versions) => this.writeCommitted(versions),
    });
  }

  private checkResource(resourceType: string, body: unknown): Resource {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new HlError('invalid', 'request body must be a FHIR resource (a JSON object)');
    }
    const resource = body as Resource;
    if (resource.resourceType !== resourceType) {
      throw new HlError('invalid', `resourceType "${String(resource.resourceType)}" does not match the URL type "${resourceType}"`, {
        issues: [{ code: 'invalid', expression: 'resourceType', message: `resourceType does not match the URL type "${resourceType}"` }],
      });
    }
    const issues = this.deps.validate(resource);
    if (issues.length > 0) {
      throw new HlError('processing', `${resourceType} is not valid: ${issues.length} issue(s)`, { issues });
    }
    return resource;
  }

  private nowInstant(): string {
    return new Date(this.deps.clock.nowMs()).toISOString();
  }

  /**
   * Seals pending, commits, marks committed; throws if the ledger did not accept the commitment. Concurrent
   * calls are grouped (group commit): one sealed write, one ledger batch and one markCommitted serve every
   * request waiting when a flush starts, so each pays a share of the disk syncs instead of all of them.
   */
  private writeCommitted(versions: { version: Resource; patient: string | null; deleted: boolean }[]): Promise<ServedVersion[]> {
    const prepared = versions.map((v) => this.prepare(v));
    return this.enqueue(prepared, []);
  }

  private enqueue(prepared: PreparedVersion[], access: AccessEntry[]): Promise<ServedVersion[]> {
    return new Promise((resolve, reject) => {
      this.queue.push({ prepared, access, resolve, reject });
      this.scheduleGroups();
    });
  }

  /**
   * Writes AuditEvents (each a new resource, in its patient's compartment) and their `access.log` entries,
   * which learn each event's commitment: they join the next group commit, so auditing costs no ordering
   * round of its own. Resolves once they are committed.
   */
  writeAudit(events: readonly { event: Resource; patient: string | null; entry: ((eventCommitment: string) => AccessEntry) | null }[]): Promise<ServedVersion[]> {
    const lastUpdated = this.nowInstant();
    const prepared = events.map(({ event, patient }) =>
      this.prepare({ version: { ...event, id: newResourceId(), meta: { versionId: '1', lastUpdated } }, patient, deleted: false }),
    );
    const entries = events.flatMap((e, i) => (e.entry === null ? [] : [e.entry(prepared[i]!.commitment.commitment)]));
    return this.enqueue(prepared, entries);
  }

  private prepare({ version, patient, deleted }: { version: Resource; patient: string | null; deleted: boolean }): PreparedVersion {
    const content = contentOf(version);
    const salt = generateSalt();
    const meta = version.meta as { versionId: string; lastUpdated: string; security?: { code?: string }[] };
    const labels = (meta.security ?? []).map((s) => s.code).filter((c): c is string => typeof c === 'string' && fhirId.test(c));
    const commitment: VersionCommitment = {
      resourceType: version.resourceType,
      id: version.id!,
      versionId: meta.versionId,
      commitment: commitmentOf(salt, content),
      ...(labels.length > 0 ? { labels } : {}),
    };
    return { version, patient, deleted, content, salt, meta, pseudonym: patient ? this.deps.pseudonymOf(patient) : null, commitment };
  }

  /** Starts group commits for the queue on the next turn, so the requests that arrive in this tick join. */
  private scheduleGroups(): void {
    if (this.startScheduled || this.groupsInFlight >= maxGroupsInFlight) return;
    this.startScheduled = true;
    setImmediate(() => {
      this.startScheduled = false;
      while (this.queue.length > 0 && this.groupsInFlight < maxGroupsInFlight) {
        const group = this.queue.splice(0, maxGroupRequests);
        this.groupsInFlight++;
        void this.runGroup(group).finally(() => {
          this.groupsInFlight--;
          if (this.queue.length > 0) this.scheduleGroups();
        });
      }
    });
  }

  private async runGroup(group: LedgeredRepository['queue']): Promise<void> {
    try {
      const served = await this.commitGroup(group.flatMap((g) => g.prepared), group.flatMap((g) => g.access));
      let at = 0;
      for (const g of group) {
        g.resolve(served.slice(at, at + g.prepared.length));
        at += g.prepared.length;
      }
    } catch (err) {
      if (group.length === 1) {
        group[0]!.reject(err);
        return;
      }
      // One request's problem (say, a version conflict) must not fail the others: retry each alone.
      for (const g of group) {
        await this.commitGroup(g.prepared, g.access).then(g.resolve, g.reject);
      }
    }
  }

  /**
   * The `record.commit` bodies of a group: its versions of one patient (or of none) share a body, up to
   * the ledger's limit; `txOf[i]` is the body that commits `prepared[i]`.
   */
  private commitBodies(prepared: readonly PreparedVersion[]): { bodies: RecordCommitBody[]; txOf: number[] } {
    const byPatient = new Map<string | null, number[]>();
    prepared.forEach((p, i) => {
      const list = byPatient.get(p.pseudonym);
      if (list) list.push(i);
      else byPatient.set(p.pseudonym, [i]);
    });
    const bodies: RecordCommitBody[] = [];
    const txOf: number[] = [];
    for (const [pseudonym, all] of byPatient) {
      const patient = pseudonym === null ? {} : { patient: pseudonym };
      let chunk: number[] = [];
      let bytes = 0;
      const close = () => {
        const versions = chunk.map((i) => prepared[i]!.commitment);
        for (const i of chunk) txOf[i] = bodies.length;
        bodies.push(versions.length === 1 ? { ...patient, ...versions[0]! } : { ...patient, versions });
        chunk = [];
        bytes = 0;
      };
      for (const i of all) {
        // Labels make a commitment longer than usual: keep each tx well inside maxTxBytes.
        const size = JSON.stringify(prepared[i]!.commitment).length;
        if (chunk.length > 0 && (chunk.length === maxCommitVersions || bytes + size > maxTxBytes / 2)) close();
        chunk.push(i);
        bytes += size;
      }
      close();
    }
    return { bodies, txOf };
  }

  private async commitGroup(prepared: PreparedVersion[], access: AccessEntry[] = []): Promise<ServedVersion[]> {
    const { bodies, txOf } = this.commitBodies(prepared);
    // The group's access entries ride in the same ordered batch, in txs after the record commitments.
    const [txs, accessTxs] = await Promise.all([this.deps.committer.sign(bodies), this.deps.committer.signAs('access.log', accessLogBodies(access))]);
    const allTxs = [...txs, ...accessTxs];
    await this.deps.store.writeVersions(
      prepared.map((p, i) => ({
        resourceType: p.version.resourceType,
        id: p.version.id!,
        versionId: p.meta.versionId,
        lastUpdated: p.meta.lastUpdated,
        deleted: p.deleted,
        patient: p.patient,
        content: p.content,
        salt: p.salt,
        status: 'pending' as const,
        txId: txs[txOf[i]!]!.id,
        ...(p.deleted ? {} : { index: searchIndexOf(p.version) }),
      })),
    );
    let receipts: TxReceipt[];
    try {
      receipts = await this.deps.committer.submit(allTxs);
    } catch (err) {
      // Not ordered: nothing was acknowledged, so the pending versions go.
      await this.deps.store.dropPending({ txIds: txs.map((t) => t.id) });
      throw err;
    }
    const rejected = receipts.filter((r) => !r.valid);
    if (rejected.length > 0) {
      await this.deps.store.dropPending({ txIds: txs.map((t) => t.id) });
      throw new HlError('exception', `the ledger rejected a record commitment: ${rejected[0]!.error ?? 'unknown'}`);
    }
    await this.deps.store.markCommitted(txs.map((t) => t.id));
    return prepared.map((p) => ({
      resourceType: p.version.resourceType,
      id: p.version.id!,
      versionId: p.meta.versionId,
      lastUpdated: p.meta.lastUpdated,
      deleted: p.deleted,
      content: p.content,
      patient: p.patient,
    }));
  }

  /**
   * FHIR transaction (http.html#transaction): all entries or none, planned in the spec's processing order
   * (DELETE, POST, PUT/PATCH, GET) with conditions searched, fullUrl and conditional references rewritten
   * and every version validated before anything is written; then every version is sealed, committed to the
   * ledger in one batch and marked committed together. Results in request order; GET entries come back as
   * `read` results for the caller to perform after the commit. Errors name `Bundle.entry[i]...`.
   */
  transaction(entries: readonly BundleEntryRequest[]): Promise<BundleEntryResult[]> {
    return this.bundles.transaction(entries);
  }

  /**
   * FHIR batch (http.html#transaction): each entry on its own, a failure becoming that entry's `error`
   * result; the successful writes share one group commit.
   */
  batch(entries: readonly BundleEntryRequest[]): Promise<BatchEntryResult[]> {
    return this.bundles.batch(entries);
  }

  /**
   * FHIR conditional update (`PUT [type]?[search]`, http.html#cond-update) and conditional delete
   * (`DELETE [type]?[search]`, http.html#cdelete), done as a one-entry transaction: update the one match
   * (200), create when there is none (201; an id in the body is refused: no update as create), several are
   * a 412; a delete of nothing is a 204 with no version. `ifMatch` (a versionId) as for update.
   */
  async conditional(
    method: 'PUT' | 'DELETE',
    resourceType: string,
    query: string,
    body?: unknown,
    ifMatch?: string,
  ): Promise<{ status: 200 | 201 | 204; version: ServedVersion | null }> {
    const request = { method, url: `${resourceType}?${query}`, ...(ifMatch !== undefined ? { ifMatch: `W/"${ifMatch}"` } : {}) };
    return this.asTransaction(resourceType, { request, ...(body !== undefined ? { resource: body } : {}) });
  }

  /** A plain REST write done as a one-entry transaction; its errors restated without the Bundle. */
  private async asTransaction(resourceType: string, entry: { request: Record<string, string>; resource?: unknown }): Promise<{ status: 200 | 201 | 204; version: ServedVersion | null }> {
    try {
      const parsed = parseBundleEntry(entry, 0);
      if (!parsed.ok) throw new HlError('invalid', parsed.issues[0]!.message, { issues: parsed.issues });
      const [result] = await this.bundles.transaction([parsed.entry]);
      if (result?.kind !== 'write') throw new HlError('exception', 'a one-entry transaction gave no write');
      return result;
    } catch (err) {
      throw outsideBundle(err, resourceType);
    }
  }

  /**
   * FHIR conditional create (http.html#ccreate): with `ifNoneExist` (a search query), no match creates, one
   * match returns it (`created: false`), several are a 412. Done as a one-entry transaction, so that it
   * takes part in the same guard against two concurrent creates both finding no match.
   */
  async createIfNoneExist(resourceType: string, body: unknown, ifNoneExist: string): Promise<{ version: ServedVersion; created: boolean }> {
    const { status, version } = await this.asTransaction(resourceType, { request: { method: 'POST', url: resourceType, ifNoneExist }, resource: body });
    return { version: version!, created: status === 201 };
  }

  /** FHIR $validate (resource-operation-validate): every issue of the resource, nothing stored. */
  validateOnly(resourceType: string, body: unknown): Issue[] {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      return [{ code: 'invalid', message: 'the body must be a FHIR resource (a JSON object)' }];
    }
    const resource = (body as { resourceType?: unknown }).resourceType === 'Parameters'
      ? ((body as { parameter?: { name?: string; resource?: unknown }[] }).parameter ?? []).find((p) => p.name === 'resource')?.resource
      : body;
    if ((resource as { resourceType?: unknown } | undefined)?.resourceType !== resourceType) {
      return [{ code: 'invalid', expression: 'resourceType', message: `resourceType does not match the URL type "${resourceType}"` }];
    }
    return this.deps.validate(resource);
  }

  /**
   * Patient/$everything (patient-operation-everything): the Patient and every current resource of its
   * compartment, each checked against its ledger commitment.
   */
  async everything(patientId: string, allow?: VersionFilter): Promise<ServedVersion[]> {
    const leaves = new Map<string, StoredTx | null>();
    const patient = await this.readVerified('Patient', patientId, undefined, leaves);
    if (patient.deleted) throw new HlError('deleted', `Patient/${patientId} was deleted`);
    const out = allow === undefined || allow(patient) ? [patient] : [];
    for (const ref of await this.deps.store.compartment(patientId)) {
      // The compartment's audit trail is not part of the record it describes.
      if ((ref.resourceType === 'Patient' && ref.id === patientId) || ref.resourceType === 'AuditEvent') continue;
      const v = await this.readVerified(ref.resourceType, ref.id, undefined, leaves);
      if (!v.deleted && (allow === undefined || allow(v))) out.push(v);
    }
    return out;
  }

  /**
   * GDPR Art. 17 erasure of a patient by crypto-shredding (DESIGN.md §3): the store deletes the patient's
   * data key, every ciphertext and salt of their compartment and their index entries; then a `record.erase`
   * (the patient's pseudonym, how many versions, when) is committed, and its inclusion proof is the
   * verifiable receipt. The ledger's leaves stay, so every proof and the full audit still verify; the data
   * is unreadable everywhere. A crash between the two leaves the data erased: erasing again commits the receipt.
   */
  async erasePatient(patientId: string): Promise<{ versionsErased: number; residuePurged: boolean; txId: string; proof: VersionProof }> {
    const patient = await this.deps.store.readVersion('Patient', patientId);
    if (patient.patient !== patientId) throw new HlError('invalid', `Patient/${patientId} is not a patient compartment`);
    const report = await this.deps.store.erasePatient(patientId);
    const [tx] = await this.deps.committer.signAs('record.erase', [{ patient: this.deps.pseudonymOf(patientId), versionsErased: report.versionsErased, at: this.nowInstant() }]);
    const [receipt] = await this.deps.committer.submit([tx!]);
    if (!receipt!.valid || receipt!.leafIndex === null) throw new HlError('exception', `the ledger rejected the erasure receipt: ${receipt!.error ?? 'unknown'}`);
    const latest = this.deps.ledger.finalCheckpoint();
    if (!latest || !(receipt!.leafIndex < latest.treeSize)) throw new HlError('pushback', 'the erasure is committed but not yet covered by a checkpoint; ask again for its proof');
    return {
      ...report,
      txId: receipt!.txId,
      proof: {
        leafIndex: receipt!.leafIndex,
        treeSize: latest.treeSize,
        leaf: tx!.bytes,
        salt: new Uint8Array(0),
        proof: this.deps.ledger.inclusionProof(receipt!.leafIndex, latest.treeSize),
        checkpoint: latest.note,
      },
    };
  }

  /** The AuditEvents in a patient's compartment (their audit trail), each checked against the ledger, oldest first. */
  async auditTrail(patientId: string): Promise<ServedVersion[]> {
    const out: ServedVersion[] = [];
    for (const ref of await this.deps.store.compartment(patientId)) {
      if (ref.resourceType !== 'AuditEvent') continue;
      const v = await this.readVerified(ref.resourceType, ref.id);
      if (!v.deleted) out.push(v);
    }
    return out.sort((a, b) => (a.lastUpdated < b.lastUpdated ? -1 : a.lastUpdated > b.lastUpdated ? 1 : a.id < b.id ? -1 : 1));
  }

  /** FHIR history of a type, or of everything (http.html#history), newest first. */
  async historyOf(resourceType: string | null, options: { limit?: number; cursor?: string } = {}) {
    const page = resourceType === null ? await this.deps.store.historySystem(options) : await this.deps.store.historyType(resourceType, options);
    return { versions: page.versions.map(served), nextCursor: page.nextCursor };
  }

  /** FHIR create (http.html#create): a new id, versionId 1; any id in the body is ignored, as the spec says. */
  async create(resourceType: string, body: unknown): Promise<ServedVersion> {
    const resource = this.checkResource(resourceType, body);
    const meta = { ...(resource.meta ?? {}), versionId: '1', lastUpdated: this.nowInstant() };
    const version: Resource = { ...resource, id: newResourceId(), meta };
    const [v] = await this.writeCommitted([{ version, patient: this.deps.patientOf(version), deleted: false }]);
    return v!;
  }

  /** FHIR read: the current version (possibly a deleted one), checked against its ledger commitment. */
  async read(resourceType: string, id: string): Promise<ServedVersion> {
    return this.readVerified(resourceType, id);
  }

  /** FHIR vread, checked against the version's ledger commitment. */
  async vread(resourceType: string, id: string, versionId: string): Promise<ServedVersion> {
    return this.readVerified(resourceType, id, versionId);
  }

  /**
   * FHIR update (http.html#update) of an existing resource; `ifMatch` (a versionId) makes it conditional on
   * the current version (409/412 otherwise). Update-as-create of unknown ids is not supported: 404.
   */
  async update(resourceType: string, id: string, body: unknown, ifMatch?: string): Promise<ServedVersion> {
    const resource = this.checkResource(resourceType, body);
    if (resource.id !== id) {
      throw new HlError('invalid', 'the resource id in the body must match the id in the URL', {
        issues: [{ code: 'invalid', expression: `${resourceType}.id`, message: 'the resource id in the body must match the id in the URL' }],
      });
    }
    const current = await this.deps.store.readVersion(resourceType, id);
    checkIfMatch(ifMatch, current);
    const versionId = String(Number(current.versionId) + 1);
    const meta = { ...(resource.meta ?? {}), versionId, lastUpdated: this.nowInstant() };
    const version: Resource = { ...resource, id, meta };
    const patient = current.patient ?? this.deps.patientOf(version);
    const [v] = await this.writeCommitted([{ version, patient, deleted: false }]);
    return v!;
  }

  /**
   * FHIR patch with JSON Patch (http.html#patch, RFC 6902, applied by fast-json-patch): the patched
   * resource must still be valid and keep its type and id; `ifMatch` as for update.
   */
  async patch(resourceType: string, id: string, operations: unknown, ifMatch?: string): Promise<ServedVersion> {
    if (!Array.isArray(operations) || operations.length === 0 || operations.length > 1000) {
      throw new HlError('invalid', 'a JSON Patch body is a list of 1 to 1,000 operations');
    }
    const current = await this.readVerified(resourceType, id);
    if (current.deleted) throw new HlError('deleted', `${resourceType}/${id} was deleted`);
    const patched = applyJsonPatch(resourceOf(current) as Resource, operations);
    return this.update(resourceType, id, patched, ifMatch ?? current.versionId);
  }

  /** FHIR delete (http.html#delete): a new, deleted version, committed like any other. */
  async delete(resourceType: string, id: string): Promise<ServedVersion | null> {
    const current = await this.deps.store.readVersion(resourceType, id);
    if (current.deleted) return null;
    const versionId = String(Number(current.versionId) + 1);
    const version: Resource = { resourceType, id, meta: { versionId, lastUpdated: this.nowInstant() } };
    const [v] = await this.writeCommitted([{ version, patient: current.patient, deleted: true }]);
    return v!;
  }

  /**
   * FHIR search (search.html) of one type: blind-index candidates for the token, reference and string
   * filters (all current ids when there are none: date, number, quantity and uri filters scan the type),
   * decrypted and matched exactly; chained parameters first run their inner search on the target type and
   * become a reference criterion. Ordered by `_sort` or newest first (ties by id, so pages are stable); the
   * page's entries and the `_include`/`_revinclude` resources are checked against their ledger commitments
   * like any read. `included` is not counted in `total`.
   */
  async search(resourceType: string, query: URLSearchParams, allow?: VersionFilter): Promise<SearchResult> {
    const plan = planSearch(resourceType, query, { nowMs: this.deps.clock.nowMs() });
    const all = await this.matchAll(resourceType, plan, plan.sort.length > 0, allow);
    // Versions the requester may not see are dropped before counting and paging: not even their number shows.
    const matches = allow ? all.filter((m) => allow(m.version)) : all;
    const ordered = plan.sort.length > 0 ? sortMatches(matches, plan.sort, (m) => m.resource!, byNewest) : matches.sort(byNewest);
    const page = plan.summary === 'count' ? [] : ordered.slice(plan.offset, plan.offset + plan.count);
    const verified = [];
    // The matches were read to be matched; each served one is checked against its commitment as it is.
    for (const m of page) {
      this.checkedCommitment(m.version);
      verified.push(served(m.version));
    }
    const included = await this.included(plan, verified, allow);
    return { total: ordered.length, page: verified, included, plan };
  }

  /**
   * Every current resource of `resourceType` matching `plan` (not paged, not yet checked against the
   * ledger), with its parsed JSON when `keepResources` (for sorting).
   */
  /** Ids the blind index gives for `criteria`, plus every version of the type it does not fully index. */
  private async indexCandidates(resourceType: string, criteria: SearchPlan['criteria']): Promise<string[]> {
    const found = await this.deps.store.findByIndexAll(resourceType, criteria);
    const partly = await this.deps.store.findByIndexAll(resourceType, [partlyIndexed]);
    return partly.length === 0 ? found : [...new Set([...found, ...partly])];
  }

  private async matchAll(resourceType: string, plan: SearchPlan, keepResources: boolean, allow?: VersionFilter): Promise<{ version: StoredVersion; resource?: Resource }[]> {
    const criteria = [...plan.criteria];
    const chainTargets: Set<string>[] = [];
    for (const chain of plan.chains) {
      // A chain matches only targets the requester may see: otherwise it answers questions about them.
      const found = await this.matchAll(chain.targetType, chain.inner, false, allow);
      const targets = allow ? found.filter((t) => allow(t.version)) : found;
      if (targets.length === 0) return [];
      const refs = new Set(targets.map((t) => `${chain.targetType}/${t.version.id}`));
      chainTargets.push(refs);
      // Narrow by the blind index when the list is small enough for one query; the exact check below decides.
      if (refs.size <= maxCriterionValues) criteria.push({ param: chain.param, kind: 'reference', value: [...refs] });
    }
    let ids: string[];
    if (plan.ids !== null) {
      const wanted = plan.ids;
      ids = criteria.length > 0 ? (await this.indexCandidates(resourceType, criteria)).filter((i) => wanted.includes(i)) : wanted;
    } else {
      ids = criteria.length > 0 ? await this.indexCandidates(resourceType, criteria) : await this.deps.store.currentIds(resourceType);
    }
    const matches: { version: StoredVersion; resource?: Resource }[] = [];
    for (const id of ids) {
      let v: StoredVersion;
      try {
        v = await this.deps.store.readVersion(resourceType, id);
      } catch (err) {
        // An _id that does not exist (or was erased) is simply not a match.
        if (plan.ids !== null && err instanceof HlError && err.code === 'not-found') continue;
        throw err;
      }
      if (v.deleted) continue;
      const resource = resourceOf(v) as Resource;
      if (matchesSearch(resource, plan, chainTargets)) matches.push(keepResources ? { version: v, resource } : { version: v });
    }
    return matches;
  }

  /**
   * The `_include` and `_revinclude` resources of a page (search.html#include), each once and none that is
   * already a match, in the order found; missing, deleted or erased targets are skipped. Throws `too-costly`
   * past {@link maxIncluded}.
   */
  private async included(plan: SearchPlan, page: readonly ServedVersion[], allow?: VersionFilter): Promise<ServedVersion[]> {
    if (page.length === 0 || (plan.include.length === 0 && plan.revinclude.length === 0)) return [];
    const seen = new Set(page.map((v) => `${v.resourceType}/${v.id}`));
    const out: ServedVersion[] = [];
    const add = async (resourceType: string, id: string, accept: (v: ServedVersion) => boolean = () => true): Promise<void> => {
      const key = `${resourceType}/${id}`;
      if (seen.has(key)) return;
      let v: ServedVersion;
      try {
        v = await this.readVerified(resourceType, id);
      } catch (err) {
        if (err instanceof HlError && err.code === 'not-found') return;
        throw err;
      }
      if (v.deleted || !accept(v) || (allow !== undefined && !allow(v))) return;
      seen.add(key);
      out.push(v);
      if (out.length > maxIncluded) {
        throw new HlError('too-costly', `_include/_revinclude would add more than ${maxIncluded} resources to one page; ask for a smaller _count`);
      }
    };
    const resources = page.map((v) => resourceOf(v));
    for (const include of plan.include) {
      for (const resource of resources) {
        for (const param of include.params) {
          for (const ref of referencesOf(resource, param)) {
            const [type, id] = ref.split('/') as [string, string];
            if (include.targetType === undefined || type === include.targetType) await add(type, id);
          }
        }
      }
    }
    for (const rev of plan.revinclude) {
      const refs = page.filter((v) => rev.targetType === undefined || v.resourceType === rev.targetType).map((v) => `${v.resourceType}/${v.id}`);
      if (refs.length === 0) continue;
      const wanted = new Set(refs);
      for (const param of rev.params) {
        const ids = await this.deps.store.findByIndexAll(rev.sourceType, [{ param, kind: 'reference', value: refs }]);
        // The blind index is exact for references; checking the decrypted resource keeps it so if it ever is not.
        for (const id of ids) await add(rev.sourceType, id, (v) => referencesOf(resourceOf(v), param).some((r) => wanted.has(r)));
      }
    }
    return out;
  }

  /** FHIR history of one resource, newest first. */
  async history(resourceType: string, id: string, options: { limit?: number; cursor?: string } = {}) {
    const page = await this.deps.store.historyInstance(resourceType, id, options);
    return { versions: page.versions.map(served), nextCursor: page.nextCursor };
  }

  /**
   * Everything needed to prove a version untampered (DESIGN.md §9 `$proof`): the leaf (the signed
   * `record.commit` tx carrying the commitment, alone or among `versions` of the same patient), the salt, an inclusion proof and the checkpoint it verifies
   * against. Checks, before answering, that the stored bytes still match the commitment.
   */
  async proof(resourceType: string, id: string, versionId: string): Promise<VersionProof> {
    const v = await this.deps.store.readVersion(resourceType, id, versionId);
    const tx = this.checkedCommitment(v);
    if (!tx) throw new HlError('not-found', `${resourceType}/${id}/_history/${versionId} has no ledger commitment`);
    const latest = this.deps.ledger.finalCheckpoint();
    if (!latest) throw new HlError('pushback', 'the ledger has not signed a checkpoint yet');
    if (!(tx.leafIndex < latest.treeSize)) throw new HlError('pushback', 'the commitment is not yet covered by a checkpoint; retry shortly');
    return {
      leafIndex: tx.leafIndex,
      treeSize: latest.treeSize,
      leaf: tx.bytes,
      salt: v.salt,
      proof: this.deps.ledger.inclusionProof(tx.leafIndex, latest.treeSize),
      checkpoint: latest.note,
    };
  }

  /**
   * Proofs of many versions against one final checkpoint (cross-organization exchange, DESIGN.md §8): for
   * each version its salt and leaf index, and for each distinct leaf (a leaf commits many versions of one
   * patient) its bytes and inclusion proof, after checking the stored bytes against the commitment.
   * `pushback` when the final checkpoint does not cover them all yet.
   */
  async proofs(versions: readonly { resourceType: string; id: string; versionId: string; committed?: ServedVersion['committed'] }[]): Promise<{
    treeSize: number;
    checkpoint: string;
    versions: { leafIndex: number; salt: Uint8Array }[];
    leaves: { leafIndex: number; leaf: Uint8Array; proof: Uint8Array[] }[];
  }> {
    const found: { leafIndex: number; salt: Uint8Array }[] = [];
    const leafBytes = new Map<number, Uint8Array>();
    for (const ref of versions) {
      // A version this repository just read and checked carries what it was checked against.
      let committed = ref.committed;
      if (!committed) {
        const v = await this.deps.store.readVersion(ref.resourceType, ref.id, ref.versionId);
        const tx = this.checkedCommitment(v);
        if (!tx) throw new HlError('not-found', `${ref.resourceType}/${ref.id}/_history/${ref.versionId} has no ledger commitment`);
        committed = { salt: v.salt, leafIndex: tx.leafIndex, leaf: tx.bytes };
      }
      found.push({ leafIndex: committed.leafIndex, salt: committed.salt });
      leafBytes.set(committed.leafIndex, committed.leaf);
    }
    const final = this.deps.ledger.finalCheckpoint();
    if (!final) throw new HlError('pushback', 'the ledger has no final checkpoint yet');
    if ([...leafBytes.keys()].some((i) => !(i < final.treeSize))) throw new HlError('pushback', 'some commitments are not yet covered by a final checkpoint');
    return {
      treeSize: final.treeSize,
      checkpoint: final.note,
      versions: found,
      leaves: [...leafBytes].map(([leafIndex, leaf]) => ({ leafIndex, leaf, proof: this.deps.ledger.inclusionProof(leafIndex, final.treeSize) })),
    };
  }

  /**
   * Reads a version and checks it against its ledger commitment, so altered data is never returned: the
   * store's AES-GCM catches changed ciphertext, this catches a changed commitment. Throws `integrity`
   * naming the version.
   */
  private async readVerified(resourceType: string, id: string, versionId?: string, leaves?: Map<string, StoredTx | null>): Promise<ServedVersion> {
    const v = await this.deps.store.readVersion(resourceType, id, versionId);
    const tx = this.checkedCommitment(v, leaves);
    return tx ? { ...served(v), committed: { salt: v.salt, leafIndex: tx.leafIndex, leaf: tx.bytes } } : served(v);
  }

  /**
   * The valid ledger tx that commits `v` (null when `v` names none), after checking that it commits exactly
   * this version: same type, id and versionId, and `SHA-256(salt || content)` equal to its commitment.
   * Throws `integrity` naming the version otherwise.
   */
  private checkedCommitment(v: StoredVersion, leaves?: Map<string, StoredTx | null>): (StoredTx & { leafIndex: number }) | null {
    if (!v.txId) return null;
    // Within one call over many versions (a patient's $everything), each leaf is read from storage once.
    let tx = leaves?.get(v.txId);
    if (tx === undefined) {
      tx = this.deps.ledger.store.txById(v.txId);
      leaves?.set(v.txId, tx);
    }
    const committed = tx?.valid ? this.commitmentsIn(tx)?.get(`${v.resourceType}/${v.id}/${v.versionId}`) : undefined;
    if (!tx || committed === undefined || tx.leafIndex === null || committed !== commitmentOf(v.salt, v.content)) {
      throw new HlError('integrity', `integrity failure: ${v.resourceType}/${v.id}/_history/${v.versionId} does not match its ledger commitment`);
    }
    return tx as StoredTx & { leafIndex: number };
  }

  /**
   * The commitments a stored `record.commit` carries, by `Type/id/vid` (null when the bytes are not one).
   * A leaf shared by a patient's versions is decoded once and remembered with the SHA-256 of its bytes,
   * which every later use recomputes from the bytes as stored, so an edit is seen at once.
   */
  private forget(txId: string): void {
    this.rememberedCommitments -= this.leaves.get(txId)?.commitments.size ?? 0;
    this.leaves.delete(txId);
  }

  private commitmentsIn(tx: StoredTx): Map<string, string> | null {
    // The same bytes read once for many versions (see `checkedCommitment`) are hashed once.
    const seen = this.decodedReads.get(tx);
    if (seen !== undefined) return seen;
    const commitments = this.decodeCommitments(tx);
    this.decodedReads.set(tx, commitments);
    return commitments;
  }

  private decodeCommitments(tx: StoredTx): Map<string, string> | null {
    const digest = createHash('sha256').update(tx.bytes).digest('base64');
    const hit = this.leaves.get(tx.txId);
    if (hit?.digest === digest) return hit.commitments;
    const body = recordCommitBodyOf(tx.bytes);
    if (!body) return null;
    const commitments = new Map<string, string>();
    for (const c of commitmentsOf(body)) {
      if (typeof c === 'object' && c !== null) commitments.set(`${c.resourceType}/${c.id}/${c.versionId}`, c.commitment);
    }
    if (hit) this.forget(tx.txId);
    while (this.leaves.size > 0 && this.rememberedCommitments + commitments.size > maxRememberedCommitments) this.forget(this.leaves.keys().next().value!);
    this.leaves.set(tx.txId, { digest, commitments });
    this.rememberedCommitments += commitments.size;
    return commitments;
  }
}
