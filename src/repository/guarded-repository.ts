/**
 * The repository as requests reach it (DESIGN.md §2, §6, §7): authorize → store → commit → audit. Every
 * call names its requester and purpose (`AccessContext`); reads give only what the guard permits, a wholly
 * denied read is a 403 naming the missing consent (never the data), searches silently leave out what is
 * denied (not even its count shows), break-glass is committed to the ledger before any data is served,
 * and every interaction, denials included, leaves an IHE BALP AuditEvent at this node and a pseudonymous
 * `access.log` entry on the ledger, off the request's path: records gathered for up to 20 ms (or 128 of
 * them) are written as one group commit. A crash can lose the records of those last 20 ms.
 */
import { createHash } from 'node:crypto';
import { HlError, isHlError, randomBytes, toBase64, toHex, type Clock } from '../kernel/index.js';
import { accessEntryOf, buildAuditEvent, type AccessAction, type AuditInput } from '../audit/index.js';
import type { Decision } from '../consent/index.js';
import type { BundleEntryRequest } from '../fhir/index.js';
import { AccessGuard, isOwnStaff, labelsOf, type AccessContext } from './access.js';
import type { BatchEntryResult, BundleEntryResult } from './bundle-processor.js';
import type { LedgeredRepository, RecordCommitter, Resource, SearchResult, ServedVersion, VersionFilter, VersionProof } from './ledgered-repository.js';

/** True when a resource holds a conditional reference (`Type?search`), which a transaction resolves by searching. */
function hasConditionalReference(value: unknown): boolean {
  if (Array.isArray(value)) return value.some(hasConditionalReference);
  if (value === null || typeof value !== 'object') return false;
  for (const [k, v] of Object.entries(value)) {
    if (k === 'reference' && typeof v === 'string' && /^[A-Z][A-Za-z]+\?/.test(v)) return true;
    if (typeof v === 'object' && hasConditionalReference(v)) return true;
  }
  return false;
}

/** How long a break-glass access lasts (DESIGN.md §6). */
export const emergencyAccessMs = 24 * 60 * 60 * 1000;

/** What the guarded repository needs besides the repository and the guard. */
export interface GuardedRepositoryDeps {
  orgId: string;
  clock: Clock;
  committer: RecordCommitter;
  /** A stable pseudonym of a user at an organization, for the ledger's access entries. */
  userPseudonymOf: (org: string, user: string) => string;
  /** Where failures of the (asynchronous) audit write are reported; they never fail the request. */
  onAuditError?: (err: unknown) => void;
  /**
   * Tells the patient's apps about a break-glass access to their records (DESIGN.md §6): called with the
   * local Patient id and the AuditEvent once the `emergency.access` is committed; must not throw.
   */
  notifyEmergency?: (patient: string, event: Resource) => void;
}

const refOf = (v: { resourceType: string; id: string; versionId: string }) => `${v.resourceType}/${v.id}/_history/${v.versionId}`;

/** The repository behind authorization and audit. */
/** Audit records gathered before they are written as one group: at most this many... */
const auditBatchMax = 128;
/** ...or as many as arrive within this many ms of the first. */
const auditBatchMs = 20;

type AuditRecord = Parameters<LedgeredRepository['writeAudit']>[0][number];

export class GuardedRepository {
  private readonly pendingAudits = new Set<Promise<unknown>>();
  private auditBuffer: AuditRecord[] = [];
  private auditTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly inner: LedgeredRepository,
    readonly guard: AccessGuard,
    private readonly deps: GuardedRepositoryDeps,
  ) {}

  // --- reads ---------------------------------------------------------------------------------------------

  async read(ctx: AccessContext, resourceType: string, id: string): Promise<ServedVersion> {
    return this.servedOne(ctx, 'read', await this.inner.read(resourceType, id));
  }

  async vread(ctx: AccessContext, resourceType: string, id: string, versionId: string): Promise<ServedVersion> {
    return this.servedOne(ctx, 'vread', await this.inner.vread(resourceType, id, versionId), await this.currentLabels(ctx, resourceType, id));
  }

  async proof(ctx: AccessContext, resourceType: string, id: string, versionId: string): Promise<VersionProof> {
    // A proof reveals the version's salt and commitment: it is a read of that version.
    await this.servedOne(ctx, 'proof', await this.inner.vread(resourceType, id, versionId), await this.currentLabels(ctx, resourceType, id));
    return this.inner.proof(resourceType, id, versionId);
  }

  /** The sensitivity labels of a resource's current version (none needed for the custodian's treating staff). */
  private async currentLabels(ctx: AccessContext, resourceType: string, id: string): Promise<string[]> {
    if (this.guard.isCustodianStaff(ctx)) return [];
    try {
      return labelsOf((await this.inner.read(resourceType, id)).content);
    } catch {
      return [];
    }
  }

  async search(ctx: AccessContext, resourceType: string, query: URLSearchParams): Promise<SearchResult> {
    const { allow, emergencies, denied } = this.filterFor(ctx);
    const result = await this.inner.search(resourceType, query, allow);
    await this.commitEmergencies(ctx, emergencies);
    const served = [...result.page, ...result.included];
    this.auditServed(ctx, 'search', served, { query: query.toString() });
    this.auditWithheld(ctx, 'search', denied);
    return result;
  }

  async everything(ctx: AccessContext, patientId: string): Promise<ServedVersion[]> {
    if (!this.guard.isCustodianStaff(ctx)) {
      const whole = this.guard.decide(ctx, patientId);
      if (whole.effect === 'deny') throw this.denied(ctx, 'everything', patientId, whole);
    }
    const { allow, emergencies, denied } = this.filterFor(ctx);
    const versions = await this.inner.everything(patientId, allow);
    await this.commitEmergencies(ctx, emergencies);
    this.auditServed(ctx, 'everything', versions, { patient: patientId });
    this.auditWithheld(ctx, 'everything', denied);
    return versions;
  }

  async history(ctx: AccessContext, resourceType: string, id: string, options: { limit?: number; cursor?: string } = {}) {
    const page = await this.inner.history(resourceType, id, options);
    const labels = await this.currentLabels(ctx, resourceType, id);
    const { allow, emergencies, denied } = this.filterFor(ctx, labels);
    const versions = allow ? page.versions.filter(allow) : page.versions;
    if (versions.length === 0 && page.versions.length > 0) {
      const v = page.versions[0]!;
      throw this.denied(ctx, 'history', v.patient, this.guard.decideVersion(ctx, v, labels));
    }
    await this.commitEmergencies(ctx, emergencies);
    this.auditServed(ctx, 'history', versions);
    this.auditWithheld(ctx, 'history', denied);
    return { versions, nextCursor: page.nextCursor };
  }

  async historyOf(ctx: AccessContext, resourceType: string | null, options: { limit?: number; cursor?: string } = {}) {
    const page = await this.inner.historyOf(resourceType, options);
    const { allow, emergencies, denied } = this.filterFor(ctx);
    const versions = allow ? page.versions.filter(allow) : page.versions;
    await this.commitEmergencies(ctx, emergencies);
    this.auditServed(ctx, 'history', versions);
    this.auditWithheld(ctx, 'history', denied);
    return { versions, nextCursor: page.nextCursor };
  }

  /**
   * The patient's accounting of disclosures (HIPAA §164.528, GDPR Art. 15) at this custodian: every access
   * to their records, denials included, each AuditEvent with the proof that the ledger holds it unaltered.
   * For the patient themself (their own token) and the custodian's staff only.
   */
  async disclosures(ctx: AccessContext, patientId: string): Promise<{ event: ServedVersion; proof: VersionProof | null }[]> {
    const self = ctx.selfPatient === patientId || (ctx.requester.patient !== undefined && ctx.requester.patient === this.guard.ledgerPatientOf(patientId));
    if (!self && !isOwnStaff(ctx, this.deps.orgId)) {
      throw this.denied(ctx, 'export', patientId, { effect: 'deny', reason: "only the patient and the custodian's staff may see the accounting of disclosures", consentIds: [], obligations: [] });
    }
    const patient = await this.inner.read('Patient', patientId);
    if (patient.deleted) throw new HlError('deleted', `Patient/${patientId} was deleted`);
    // Every access so far is listed: wait for the audit writes under way to be committed.
    await this.flushAudit();
    const events = await this.inner.auditTrail(patientId);
    const out = [];
    for (const event of events) {
      try {
        out.push({ event, proof: await this.inner.proof(event.resourceType, event.id, event.versionId) });
      } catch (err) {
        // Committed, but no checkpoint a majority of the members signed covers it yet: listed as pending.
        if (!isHlError(err) || (err as HlError).code !== 'pushback') throw err;
        out.push({ event, proof: null });
      }
    }
    this.auditServed(ctx, 'export', [], { patient: patientId });
    return out;
  }

  /** Erasure of a patient (GDPR Art. 17) by the custodian's staff; see `LedgeredRepository.erasePatient`. */
  async erasePatient(ctx: AccessContext, patientId: string) {
    if (!isOwnStaff(ctx, this.deps.orgId)) throw new HlError('forbidden', "only the custodian's staff may erase a patient's records");
    const ledgerPatient = this.guard.ledgerPatientOf(patientId);
    // The audit records of earlier requests about the patient are committed before their compartment goes.
    await this.flushAudit();
    const result = await this.inner.erasePatient(patientId);
    // The AuditEvent cannot live in the erased compartment; the ledger entry still names the patient.
    this.audit(ctx, { action: 'erase', outcome: 'permit', reason: `erased ${result.versionsErased} versions (receipt ${result.txId})` }, ledgerPatient);
    return result;
  }

  // --- writes: scopes decide who may write (api); each write is audited with the versions it made --------

  async create(ctx: AccessContext, resourceType: string, body: unknown): Promise<ServedVersion> {
    return this.audited(ctx, 'create', await this.inner.create(resourceType, body));
  }

  async update(ctx: AccessContext, resourceType: string, id: string, body: unknown, ifMatch?: string): Promise<ServedVersion> {
    await this.mayChange(ctx, 'update', resourceType, id);
    return this.audited(ctx, 'update', await this.inner.update(resourceType, id, body, ifMatch));
  }

  async patch(ctx: AccessContext, resourceType: string, id: string, operations: unknown, ifMatch?: string): Promise<ServedVersion> {
    await this.mayChange(ctx, 'update', resourceType, id);
    return this.audited(ctx, 'update', await this.inner.patch(resourceType, id, operations, ifMatch));
  }

  async delete(ctx: AccessContext, resourceType: string, id: string): Promise<ServedVersion | null> {
    await this.mayChange(ctx, 'delete', resourceType, id);
    const v = await this.inner.delete(resourceType, id);
    if (v) this.auditServed(ctx, 'delete', [v]);
    return v;
  }

  async conditional(ctx: AccessContext, method: 'PUT' | 'DELETE', resourceType: string, query: string, body?: unknown, ifMatch?: string) {
    this.staffOnlyConditions(ctx);
    const r = await this.inner.conditional(method, resourceType, query, body, ifMatch);
    if (r.version) this.auditServed(ctx, method === 'DELETE' ? 'delete' : r.status === 201 ? 'create' : 'update', [r.version]);
    return r;
  }

  async createIfNoneExist(ctx: AccessContext, resourceType: string, body: unknown, ifNoneExist: string) {
    this.staffOnlyConditions(ctx);
    const r = await this.inner.createIfNoneExist(resourceType, body, ifNoneExist);
    this.auditServed(ctx, r.created ? 'create' : 'read', [r.version]);
    return r;
  }

  async transaction(ctx: AccessContext, entries: readonly BundleEntryRequest[]): Promise<BundleEntryResult[]> {
    await this.mayWriteEntries(ctx, entries);
    const results = await this.inner.transaction(entries);
    this.auditWrites(ctx, results);
    return results;
  }

  async batch(ctx: AccessContext, entries: readonly BundleEntryRequest[]): Promise<BatchEntryResult[]> {
    await this.mayWriteEntries(ctx, entries);
    const results = await this.inner.batch(entries);
    this.auditWrites(ctx, results.filter((r): r is Extract<BatchEntryResult, { kind: 'write' }> => r.kind === 'write'));
    return results;
  }

  validateOnly(resourceType: string, body: unknown) {
    return this.inner.validateOnly(resourceType, body);
  }

  /**
   * Audits a request the API refused before or outside the data (a missing or bad token, a scope it lacks,
   * a bad PKCE verifier, a forged or malformed tx, bad input): an AuditEvent (DICOM Security Alert) at this
   * node, with no patient and no data, and no ledger entry, since no one's records were disclosed.
   */
  auditRefusal(refusal: { requester: AccessContext['requester'] | null; purpose?: AccessContext['purpose']; route: string; status: number; reason: string; address?: string }): void {
    const input: AuditInput = {
      recorded: new Date(this.deps.clock.nowMs()).toISOString(),
      action: 'read',
      outcome: 'deny',
      reason: refusal.reason.slice(0, 500),
      purpose: refusal.purpose ?? 'TREAT',
      custodian: this.deps.orgId,
      requester: refusal.requester ?? { org: 'unknown' },
      refused: { route: refusal.route, status: refusal.status, ...(refusal.address ? { address: refusal.address } : {}) },
    };
    this.bufferAudit({ event: buildAuditEvent(input) as unknown as Resource, patient: null, entry: null });
  }

  /** Resolves once every audit record made so far is committed (tests, shutdown, disclosures). */
  async flushAudit(): Promise<void> {
    this.writeAuditBuffer();
    while (this.pendingAudits.size > 0) await Promise.allSettled([...this.pendingAudits]);
  }

  /**
   * Writes the gathered audit records as one group commit: one seal-and-commit round and one checkpoint for
   * many requests instead of one each.
   */
  private writeAuditBuffer(): void {
    if (this.auditTimer !== null) {
      clearTimeout(this.auditTimer);
      this.auditTimer = null;
    }
    if (this.auditBuffer.length === 0) return;
    const records = this.auditBuffer;
    this.auditBuffer = [];
    // One record that cannot be written (its patient was erased meanwhile) must not take the others with it.
    const write = this.inner.writeAudit(records).catch(async (err: unknown) => {
      if (records.length === 1) return this.deps.onAuditError?.(err);
      for (const r of records) await this.inner.writeAudit([r]).catch((e: unknown) => this.deps.onAuditError?.(e));
    });
    this.pendingAudits.add(write);
    void write.finally(() => this.pendingAudits.delete(write));
  }

  // --- authorize -----------------------------------------------------------------------------------------

  /**
   * Conditions (If-None-Exist, conditional update and delete, conditional references) search stored data
   * and answer with what they found or how many: for anyone but the custodian's staff they would reveal
   * what consent withholds, so they are the staff's only, and the patient's own (whose patient/ scopes
   * keep every condition inside their compartment).
   */
  private staffOnlyConditions(ctx: AccessContext): void {
    if (isOwnStaff(ctx, this.deps.orgId) || ctx.selfPatient !== undefined) return;
    throw new HlError('forbidden', "conditional writes (If-None-Exist, conditional update or delete, conditional references) are for the custodian's staff");
  }

  /** A change of a stored resource, for anyone but the custodian's treating staff, needs a permit to read it. */
  private async mayChange(ctx: AccessContext, action: AccessAction, resourceType: string, id: string): Promise<void> {
    if (this.guard.isCustodianStaff(ctx)) return;
    let current: ServedVersion;
    try {
      current = await this.inner.read(resourceType, id);
    } catch {
      return; // the write itself answers not-found or gone
    }
    const d = this.guard.decideVersion(ctx, current);
    if (d.effect === 'deny') throw this.denied(ctx, action, current.patient, d);
  }

  /** The checks of {@link mayChange} and {@link staffOnlyConditions} for each write entry of a Bundle. */
  private async mayWriteEntries(ctx: AccessContext, entries: readonly BundleEntryRequest[]): Promise<void> {
    if (this.guard.isCustodianStaff(ctx)) return;
    for (const e of entries) {
      if (e.method === 'GET' || e.method === 'HEAD') continue;
      if (e.ifNoneExist !== undefined || (e.method !== 'POST' && e.id === undefined) || hasConditionalReference(e.resource)) this.staffOnlyConditions(ctx);
      if (e.id !== undefined && e.method !== 'POST') await this.mayChange(ctx, e.method === 'DELETE' ? 'delete' : 'update', e.resourceType, e.id);
    }
  }

  /**
   * The filter of versions this requester may see (none for the custodian's own treating staff), and the
   * break-glass decisions it met, which must be committed before anything is served.
   */
  private filterFor(
    ctx: AccessContext,
    currentLabels: readonly string[] = [],
  ): { allow: VersionFilter | undefined; emergencies: Map<string, Decision>; denied: Map<string, Decision> } {
    const emergencies = new Map<string, Decision>();
    const denied = new Map<string, Decision>();
    if (this.guard.isCustodianStaff(ctx)) return { allow: undefined, emergencies, denied };
    const allow: VersionFilter = (v) => {
      const d = this.guard.decideVersion(ctx, v, currentLabels);
      if (d.effect === 'permit' && d.obligations.includes('record-emergency-access') && v.patient !== null) emergencies.set(v.patient, d);
      if (d.effect === 'deny' && v.patient !== null && !denied.has(v.patient)) denied.set(v.patient, d);
      return d.effect === 'permit';
    };
    return { allow, emergencies, denied };
  }

  /**
   * Audits, as a denial in each patient's trail, what a search, history or `$everything` withheld from
   * them: every attempt at a patient's data shows in their accounting of disclosures, served or not.
   */
  private auditWithheld(ctx: AccessContext, action: AccessAction, denied: ReadonlyMap<string, Decision>): void {
    for (const [patient, d] of denied) this.audit(ctx, { action, outcome: 'deny', reason: `withheld: ${d.reason}`, patient });
  }

  private async servedOne(ctx: AccessContext, action: AccessAction, v: ServedVersion, currentLabels: readonly string[] = []): Promise<ServedVersion> {
    if (this.guard.isCustodianStaff(ctx)) {
      this.auditServed(ctx, action, [v]);
      return v;
    }
    const d = this.guard.decideVersion(ctx, v, currentLabels);
    if (d.effect === 'deny') throw this.denied(ctx, action, v.patient, d, [v]);
    const emergency = d.obligations.includes('record-emergency-access') && v.patient !== null ? new Map([[v.patient, d]]) : new Map();
    await this.commitEmergencies(ctx, emergency);
    this.auditServed(ctx, action, [v]);
    return v;
  }

  /** Commits one `emergency.access` per patient for break-glass permits, before their data is served. */
  private async commitEmergencies(ctx: AccessContext, emergencies: ReadonlyMap<string, Decision>): Promise<void> {
    if (emergencies.size === 0) return;
    const now = this.deps.clock.nowMs();
    const reason = ctx.reason ?? '';
    const opened: { patient: string; body: Record<string, unknown>; salt: string }[] = [];
    for (const patient of emergencies.keys()) {
      const salt = randomBytes(32);
      const commitment = toHex(new Uint8Array(createHash('sha256').update(salt).update(reason, 'utf8').digest()));
      opened.push({
        patient,
        salt: toBase64(salt),
        body: {
          patient: this.guard.ledgerPatientOf(patient),
          org: ctx.requester.org,
          ...(ctx.requester.user !== undefined ? { practitioner: ctx.requester.user } : {}),
          reason: commitment,
          start: new Date(now).toISOString(),
          end: new Date(now + emergencyAccessMs).toISOString(),
        },
      });
    }
    const txs = await this.deps.committer.signAs('emergency.access', opened.map((o) => o.body));
    const receipts = await this.deps.committer.submit(txs);
    const rejected = receipts.find((r) => !r.valid);
    if (rejected) throw new HlError('exception', `the ledger rejected a break-glass access: ${rejected.error ?? 'unknown'}`);
    opened.forEach((o, i) => {
      const event = this.audit(ctx, {
        action: 'read',
        outcome: 'permit',
        reason: 'break-glass: emergency access opened; the patient is notified',
        patient: o.patient,
        emergency: receipts[i]!.txId,
        emergencyReason: { text: reason, salt: o.salt },
      });
      // The notice says who, when and why in codes; the written reason (PHI) stays in the node's AuditEvent.
      const notice = structuredClone(event) as { entity?: { detail?: unknown }[] };
      for (const e of notice.entity ?? []) delete e.detail;
      this.deps.notifyEmergency?.(o.patient, notice as Resource);
    });
  }

  /** A 403 naming the decision (ids and codes only), audited as a denial. */
  private denied(ctx: AccessContext, action: AccessAction, patient: string | null, d: Decision, versions: ServedVersion[] = []): HlError {
    ctx.refusalAudited = true;
    this.audit(ctx, { action, outcome: 'deny', reason: d.reason, ...(patient !== null ? { patient } : {}), resources: versions.map(refOf) });
    const consents = d.consentIds.length > 0 ? ` (consent ${d.consentIds.join(', ')})` : '';
    return new HlError('forbidden', `access denied by the patient's consent: ${d.reason}${consents}`);
  }

  // --- audit ---------------------------------------------------------------------------------------------

  private audited(ctx: AccessContext, action: AccessAction, v: ServedVersion): ServedVersion {
    this.auditServed(ctx, action, [v]);
    return v;
  }

  private auditWrites(ctx: AccessContext, results: readonly BundleEntryResult[]): void {
    const written = results.flatMap((r) => (r.kind === 'write' && r.version ? [r.version] : []));
    if (written.length > 0) this.auditServed(ctx, 'create', written);
  }

  /** One AuditEvent per patient whose data the interaction touched (one without a patient if none). */
  private auditServed(ctx: AccessContext, action: AccessAction, versions: readonly ServedVersion[], extra: { query?: string; patient?: string } = {}): void {
    const byPatient = new Map<string | null, ServedVersion[]>();
    for (const v of versions) {
      const list = byPatient.get(v.patient);
      if (list) list.push(v);
      else byPatient.set(v.patient, [v]);
    }
    if (byPatient.size === 0) byPatient.set(extra.patient ?? null, []);
    // A query can name several patients (identifier=A,B): it goes only into a trail it cannot expose others in.
    const query = extra.query !== undefined && byPatient.size === 1 ? { query: extra.query } : {};
    for (const [patient, list] of byPatient) {
      this.audit(ctx, { action, outcome: 'permit', ...(patient !== null ? { patient } : {}), resources: list.map(refOf), ...query });
    }
  }

  /** Writes the AuditEvent and access entry of an interaction (asynchronously); returns the AuditEvent. */
  private audit(ctx: AccessContext, partial: Omit<AuditInput, 'recorded' | 'purpose' | 'custodian' | 'requester'>, ledgerPatient?: string): Resource {
    const input: AuditInput = {
      ...partial,
      recorded: new Date(this.deps.clock.nowMs()).toISOString(),
      purpose: ctx.purpose,
      custodian: this.deps.orgId,
      requester: {
        org: ctx.requester.org,
        ...(ctx.requester.user !== undefined ? { user: ctx.requester.user } : {}),
        ...(ctx.requester.client !== undefined ? { client: ctx.requester.client } : {}),
        ...(ctx.requester.patient !== undefined ? { patient: ctx.requester.patient } : {}),
      },
    };
    const patient = partial.patient ?? null;
    const event = buildAuditEvent(input) as unknown as Resource;
    const pseudonyms = {
      ...(patient !== null ? { patient: this.guard.ledgerPatientOf(patient) } : ledgerPatient !== undefined ? { patient: ledgerPatient } : {}),
      ...(ctx.requester.user !== undefined ? { user: this.deps.userPseudonymOf(ctx.requester.org, ctx.requester.user) } : {}),
      count: partial.resources?.length ?? 0,
    };
    this.bufferAudit({ event, patient, entry: (commitment) => accessEntryOf(input, { ...pseudonyms, event: commitment }) });
    return event;
  }

  private bufferAudit(record: AuditRecord): void {
    this.auditBuffer.push(record);
    if (this.auditBuffer.length >= auditBatchMax) this.writeAuditBuffer();
    else this.auditTimer ??= setTimeout(() => this.writeAuditBuffer(), auditBatchMs);
  }
}
