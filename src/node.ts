/**
 * Composition root: config → keys → ledger store → ledger → orderer, and the apply loop that turns ordered
 * batches into blocks and signed checkpoints. Later issues add the record store, repository and API here.
 */
import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import pino, { type Logger } from 'pino';
import { HlError, fromBase64, fromBase64Url, isHlError, orgIdFromName, randomBytes, systemClock, toBase64, toBase64Url, toHex, type Clock } from './kernel/index.js';
import {
  Ed25519VerifierPool,
  exportPem,
  exportPrivateJwk,
  hmacSha256,
  exportPublicJwk,
  generateAesKey,
  generateEd25519KeyPair,
  importEd25519PrivateKey,
  signEd25519,
  type Ed25519KeyPair,
} from './crypto/index.js';
import {
  Ledger,
  TxType,
  auditLedger,
  type ParsedTx,
  openSqliteLedgerStore,
  parseCheckpoint,
  parseSignedNote,
  parseTx,
  patientNetworkId,
  validateTx,
  LedgerState,
  type OrgDescriptor,
  signApproval,
  signPatientLink,
  signTx,
  signTxAsync,
  type Approval,
  type AuditReport,
  type LedgerStore,
  type SqliteLedgerStore,
  type TxEnvelope,
  type TxInput,
  type TxReceipt,
} from './ledger/index.js';
import { EtcdOrderer, LocalOrderer, type EtcdOrdererOptions, type Orderer } from './ordering/index.js';
import { CheckpointGossip, MemberClient, NetworkExchange } from './exchange/index.js';
import { buildCapabilityStatement, buildServer } from './api/index.js';
import { AuthorizationServer, checkScope, FileAuthRegistry, hashPassword, issueToken, patientLoginMessage, type AuthClient, type StaffRole } from './auth/index.js';
import type { GuardedResource } from './api/index.js';
import { generatePatientBundle } from './synth/index.js';
import { openPostgresRecordStore, openSqliteRecordStore, type RecordStore, type RotationReport } from './store/index.js';
import { isResourceType, loadDefinitions, patientCompartmentOf, resourceTypes, validateResource } from './fhir/index.js';
import { AccessGuard, GuardedRepository, LedgeredRepository, resourceOf, type RecordCommitBody, type RecordCommitter, type Resource } from './repository/index.js';
import type { FastifyInstance } from 'fastify';

/** Re-exported for the CLI, which reaches the other modules only through the composition root. */
export { isHlError, isResourceType, orgIdFromName, generatePatientBundle, systemClock, type Orderer };
/** The public verifier and RFC 8785 + SHA-256, for the CLI to check proofs as an outsider. */
export { publicVerifier } from './ledger/index.js';
export { canonicalJson, sha256 } from './crypto/index.js';
export {
  patientIdPattern,
  purposesOfUse,
  sensitivityLabels,
  type ConsentActor,
  type ConsentProvision,
  type PurposeOfUse,
  type SensitivityLabel,
} from './ledger/index.js';

/** What `config.json` in a data directory holds. */
export interface NodeConfig {
  version: 1;
  orgId: string;
  name: string;
  /** Checkpoint origin line of the network. */
  origin: string;
  /** Ledger (and, later, record) database file, relative to the data directory. */
  database: string;
  /** LocalOrderer log file, relative to the data directory. */
  ordererLog: string;
}

const files = {
  config: 'config.json',
  genesis: 'genesis.json',
  orgKey: join('keys', 'org-key.pem'),
  kek: join('keys', 'kek.key'),
  /** The new KEK while a rotation is under way (see {@link openRecordStore}). */
  kekNext: join('keys', 'kek.key.next'),
  pseudonymKey: join('keys', 'pseudonym.key'),
  lock: 'node.lock',
  /** OAuth clients and staff users (`FileAuthRegistry`). */
  auth: 'auth.json',
};

function readSecret(dataDir: string, file: string, what: string, createIfMissing: boolean): Uint8Array {
  const path = join(dataDir, file);
  if (!existsSync(path)) {
    if (!createIfMissing) throw new HlError('not-found', `${what} not found at ${path}`);
    writeFileSync(path, `${toBase64(generateAesKey())}\n`, { mode: 0o600 });
  }
  let key: Uint8Array;
  try {
    key = fromBase64(readFileSync(path, 'utf8').trim());
  } catch {
    throw new HlError('invalid', `${what} at ${path} is not base64`);
  }
  if (key.length !== 32) throw new HlError('invalid', `${what} at ${path} is not a 32-byte key`);
  return key;
}

/** The default logger: structured JSON, quiet unless HEALTHLEDGER_LOG_LEVEL says otherwise. */
export function createLogger(): Logger {
  return pino({ level: process.env.HEALTHLEDGER_LOG_LEVEL ?? 'warn' });
}

function readJson<T>(file: string, what: string): T {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new HlError('not-found', `${what} not found at ${file}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new HlError('invalid', `${what} at ${file} is not valid JSON`);
  }
}

/** Reads and checks `config.json` of a data directory. */
export function readConfig(dataDir: string): NodeConfig {
  const file = join(dataDir, files.config);
  if (!existsSync(file)) throw new HlError('not-found', `no Healthledger node at ${dataDir} (run: healthledger init --org NAME --data ${dataDir})`);
  const config = readJson<NodeConfig>(file, 'node config');
  if (config.version !== 1 || typeof config.orgId !== 'string' || typeof config.origin !== 'string') {
    throw new HlError('invalid', `node config at ${file} is not a Healthledger v1 config`);
  }
  return config;
}

function readOrgKey(dataDir: string): Ed25519KeyPair {
  const file = join(dataDir, files.orgKey);
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch {
    throw new HlError('not-found', `organization key not found at ${file}`);
  }
  return importEd25519PrivateKey(pem);
}

/** The ledger pseudonym of a local patient id: HMAC-SHA-256 under the node's pseudonym key, truncated. */
export function patientPseudonym(key: Uint8Array, patientId: string): string {
  return `psn-${toHex(hmacSha256(key, new TextEncoder().encode(`patient|${patientId}`)).subarray(0, 16))}`;
}

/** The txs a patient (or proxy) submits themselves. */
const patientTxTypes: ReadonlySet<string> = new Set([TxType.patientRegister, TxType.consentGrant, TxType.consentRevoke]);

/** Membership changes, signed by an organization and approved by a majority of the members. */
const governanceTxTypes: ReadonlySet<string> = new Set([TxType.orgJoin, TxType.orgUpdate, TxType.orgLeave]);

/** A membership change: who joins (a member line), whose line changes, or who leaves. */
export type MembershipChange = { join: OrgDescriptor } | { update: OrgDescriptor } | { leave: string };

function proposalOf(change: MembershipChange): { type: string; body: Record<string, unknown> } {
  if ('join' in change) return { type: TxType.orgJoin, body: { org: change.join } };
  if ('update' in change) return { type: TxType.orgUpdate, body: { org: change.update } };
  return { type: TxType.orgLeave, body: { orgId: change.leave } };
}

/** This organization's approval of a membership change on its network (`org approve`). */
export function approveMembershipChange(dataDir: string, change: MembershipChange): Approval {
  const dir = resolve(dataDir);
  const config = readConfig(dir);
  if (config.origin === '') throw new HlError('conflict', 'this organization has no network yet');
  const keyPair = readOrgKey(dir);
  const { type, body } = proposalOf(change);
  return signApproval(config.origin, type, body, { id: config.orgId, keyId: keyPair.keyId, privateKey: keyPair.privateKey });
}

/**
 * The membership change signed by this organization with the members' approvals (`org submit`): for a join,
 * this organization must be the one joining. The node it is sent to orders it; every node validates it.
 */
export function signMembershipChange(dataDir: string, change: MembershipChange, approvals: Approval[]): TxEnvelope {
  const dir = resolve(dataDir);
  const config = readConfig(dir);
  const keyPair = readOrgKey(dir);
  if ('join' in change && change.join.id !== config.orgId) throw new HlError('invalid', `a join is signed by the organization joining (${change.join.id}), not ${config.orgId}`);
  const { type, body } = proposalOf(change);
  return signTx({ type, body: { ...body, approvals: approvals as unknown as Record<string, unknown>[] }, signer: { kind: 'org', id: config.orgId, keyId: keyPair.keyId } }, keyPair.privateKey)
    .envelope;
}

/** What a patient signs to be linked to a custodian's record (see `patientLinkMessage`). */
export interface PatientLinkTerms {
  origin: string;
  custodian: string;
  pseudonym: string;
}

/** True for Subscription criteria `AuditEvent?patient=Patient/{id}` (or `=id`) naming `patient`. */
function subscriptionCoversPatient(criteria: string | undefined, patient: string): boolean {
  if (typeof criteria !== 'string' || !criteria.startsWith('AuditEvent?')) return false;
  const value = new URLSearchParams(criteria.slice('AuditEvent?'.length)).get('patient');
  return value === `Patient/${patient}` || value === patient;
}

/** The ledger pseudonym of a user at an organization (access entries): HMAC-SHA-256, truncated. */
export function userPseudonym(key: Uint8Array, org: string, user: string): string {
  return `usr-${toHex(hmacSha256(key, new TextEncoder().encode(`user|${org}|${user}`)).subarray(0, 16))}`;
}

/** A running node: its ledger, orderer and the loop that applies ordered batches. */
export class HealthledgerNode {
  readonly config: NodeConfig;
  readonly dataDir: string;
  readonly ledger: Ledger;
  readonly orderer: Orderer;
  readonly keyPair: Ed25519KeyPair;
  readonly log: Logger;
  /** Encrypted records, in the ledger's database. */
  readonly records: RecordStore;
  /** Records: validate, seal, commit (the core the guarded repository wraps). */
  readonly repository: LedgeredRepository;
  /** The only path to records for requests: authorize → store → commit → audit. */
  readonly access: GuardedRepository;
  private readonly store: LedgerStore;
  private readonly lock: DataDirLock;
  private readonly pseudonymKey: Uint8Array;
  private readonly abort = new AbortController();
  private readonly loop: Promise<void>;
  private appliedWaiters: { height: number; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private failure: Error | null = null;
  /** Verifies signatures of large submitted batches on all cores; started on first use. */
  private pool: Ed25519VerifierPool | null = null;
  /** Closed with the node only when the node made it (a shared in-process orderer is closed by its owner). */
  private readonly ownsOrderer: boolean;
  /** Set once two different roots for one tree size were seen: writes are refused until an operator clears it. */
  private forkAlarmValue: { message: string; atMs: number } | null;
  private treeWaiters: { size: number; resolve: () => void }[] = [];
  /** Signs in at other members' nodes and calls them. */
  readonly members: MemberClient;
  readonly gossip: CheckpointGossip;
  /** Cross-organization reads, as custodian and as requester. */
  readonly exchange: NetworkExchange;
  /** Local Patient ids behind this node's ledger pseudonyms. */
  readonly localPatients: LocalPatients;

  constructor(parts: {
    config: NodeConfig;
    dataDir: string;
    ledger: Ledger;
    orderer: Orderer;
    store: LedgerStore;
    keyPair: Ed25519KeyPair;
    log: Logger;
    records: RecordStore;
    pseudonymKey: Uint8Array;
    clock: Clock;
    /** The data directory's lock, released by `close()`. */
    lock: DataDirLock;
    /** False when the orderer is shared with other nodes in this process and closed by its owner. */
    ownsOrderer?: boolean;
  }) {
    this.config = parts.config;
    this.lock = parts.lock;
    this.dataDir = parts.dataDir;
    this.ledger = parts.ledger;
    this.orderer = parts.orderer;
    this.store = parts.store;
    this.keyPair = parts.keyPair;
    this.log = parts.log;
    this.records = parts.records;
    this.pseudonymKey = parts.pseudonymKey;
    this.ownsOrderer = parts.ownsOrderer ?? true;
    const alarm = parts.store.getMeta('fork-alarm');
    this.forkAlarmValue = alarm === null ? null : (JSON.parse(alarm) as { message: string; atMs: number });
    this.members = new MemberClient({ orgId: parts.config.orgId, privateKey: parts.keyPair.privateKey, keyId: parts.keyPair.keyId, clock: parts.clock });
    this.gossip = new CheckpointGossip({
      orgId: parts.config.orgId,
      ledger: parts.ledger,
      client: this.members,
      log: parts.log,
      onFork: (message) => this.raiseForkAlarm(message),
    });
    this.repository = new LedgeredRepository({
      store: parts.records,
      ledger: parts.ledger,
      clock: parts.clock,
      validate: validateResource,
      patientOf: (r: Resource) => patientCompartmentOf(r),
      pseudonymOf: (patientId: string) => patientPseudonym(parts.pseudonymKey, patientId),
      committer: this.committer(),
    });
    this.access = new GuardedRepository(
      this.repository,
      new AccessGuard({ orgId: parts.config.orgId, ledger: parts.ledger, pseudonymOf: (id) => patientPseudonym(parts.pseudonymKey, id), nowMs: () => parts.clock.nowMs() }),
      {
        orgId: parts.config.orgId,
        clock: parts.clock,
        committer: this.committer(),
        userPseudonymOf: (org, user) => userPseudonym(parts.pseudonymKey, org, user),
        onAuditError: (err) => this.log.warn({ err: { code: (err as HlError).code, message: (err as Error).message } }, 'an audit write failed'),
        notifyEmergency: (patient, event) => this.notifyEmergency(patient, event),
      },
    );
    this.localPatients = localPatientResolver({ ledger: parts.ledger, records: parts.records, orgId: parts.config.orgId, pseudonymKey: parts.pseudonymKey });
    this.exchange = new NetworkExchange({
      orgId: parts.config.orgId,
      ledger: parts.ledger,
      access: this.access,
      repository: this.repository,
      client: this.members,
      clock: parts.clock,
      localPatientOf: (pseudonym) => this.localPatients.ofPseudonym(pseudonym),
      waitForTreeSize: (size, ms) => this.waitForTreeSize(size, ms),
      onFork: (message) => this.raiseForkAlarm(message),
    });
    this.loop = this.applyLoop();
    this.gossip.start();
  }

  /** The fork alarm, if raised (DESIGN.md §1): two different roots were seen for one tree size. */
  get forkAlarm(): { message: string; atMs: number } | null {
    return this.forkAlarmValue;
  }

  /** Raises the fork alarm: kept across restarts, logged, and every write is refused until it is cleared. */
  raiseForkAlarm(message: string): void {
    if (this.forkAlarmValue) return;
    this.forkAlarmValue = { message: message.slice(0, 500), atMs: Date.now() };
    this.store.setMeta('fork-alarm', JSON.stringify(this.forkAlarmValue));
    this.log.error({ alarm: this.forkAlarmValue }, 'FORK ALARM: two different ledger roots for one tree size; writes are refused until an operator clears the alarm');
  }

  /** Clears the fork alarm (an operator's decision, after investigating). */
  clearForkAlarm(): void {
    this.forkAlarmValue = null;
    this.store.setMeta('fork-alarm', 'null');
  }

  /**
   * Cosigns a member's checkpoint (`POST /exchange/v1/checkpoint`), first waiting up to 2 s for this node
   * to apply as much of the ledger. On a fork, raises the alarm and answers 409 with this node's own note.
   */
  async receiveCheckpoint(note: string): Promise<{ status: 200 | 409; note: string }> {
    // Only asked once `cosign` has parsed and verified the note.
    const sizeOf = () => Number(parseCheckpoint(parseSignedNote(note).text).treeSize);
    for (let attempt = 0; ; attempt++) {
      try {
        return { status: 200, note: this.ledger.cosign(note).note };
      } catch (err) {
        if (isHlError(err) && (err as HlError).code === 'pushback' && attempt === 0) {
          await this.waitForTreeSize(sizeOf(), 2000);
          continue;
        }
        if (isHlError(err) && (err as HlError).code === 'fork') {
          this.raiseForkAlarm((err as Error).message);
          return { status: 409, note: this.ledger.ownCheckpointAt(sizeOf()) };
        }
        throw err;
      }
    }
  }

  /** Resolves once the tree has `size` entries; `pushback` after `ms`. */
  waitForTreeSize(size: number, ms: number): Promise<void> {
    if (this.ledger.treeSize >= size) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = { size, resolve: () => (clearTimeout(timer), resolve()) };
      const timer = setTimeout(() => {
        this.treeWaiters = this.treeWaiters.filter((w) => w !== waiter);
        reject(new HlError('pushback', `this node has applied ${this.ledger.treeSize} ledger entries, not yet ${size}; retry shortly`));
      }, ms);
      this.treeWaiters.push(waiter);
    });
  }

  private async applyLoop(): Promise<void> {
    try {
      for await (const batch of this.orderer.blocks(this.ledger.height + 1, this.abort.signal)) {
        const receipts = this.ledger.applyBatch(batch);
        const invalid = receipts.filter((r) => !r.valid).length;
        this.log.debug({ height: batch.height, txs: receipts.length, invalid }, 'block applied');
        // Sign once the orderer has nothing more queued, so a burst of blocks costs one signature.
        if (this.orderer.lastHeight() === batch.height) {
          this.ledger.signCheckpoint();
          this.gossip.announce();
        }
        this.releaseWaiters();
      }
    } catch (err) {
      if (this.abort.signal.aborted) return;
      this.failure = err instanceof Error ? err : new Error(String(err));
      this.log.error({ err: { code: (err as HlError).code, message: this.failure.message } }, 'ledger apply loop stopped');
      for (const w of this.appliedWaiters) w.reject(new HlError('pushback', 'the ledger stopped applying blocks', { cause: err }));
      this.appliedWaiters = [];
    }
  }

  private releaseWaiters(): void {
    if (this.treeWaiters.length > 0) {
      const grown = this.treeWaiters.filter((w) => w.size <= this.ledger.treeSize);
      this.treeWaiters = this.treeWaiters.filter((w) => w.size > this.ledger.treeSize);
      for (const w of grown) w.resolve();
    }
    const ready = this.appliedWaiters.filter((w) => w.height <= this.ledger.height);
    this.appliedWaiters = this.appliedWaiters.filter((w) => w.height > this.ledger.height);
    for (const w of ready) w.resolve();
  }

  /** Resolves once the block at `height` is applied. */
  waitForHeight(height: number): Promise<void> {
    if (this.failure) return Promise.reject(new HlError('pushback', 'the ledger stopped applying blocks', { cause: this.failure }));
    if (height <= this.ledger.height) return Promise.resolve();
    return new Promise((resolve, reject) => this.appliedWaiters.push({ height, resolve, reject }));
  }

  /**
   * Checks, orders and applies txs; resolves with each tx's receipt once its block is durable and applied.
   * A tx that fails the admission check is rejected before ordering (nothing is stored).
   */
  async submit(txs: Uint8Array[]): Promise<TxReceipt[]> {
    if (this.forkAlarmValue) {
      throw new HlError('fork', `writes are refused: fork alarm (${this.forkAlarmValue.message}); an operator must investigate and clear it`);
    }
    if (txs.length >= 16) this.pool ??= new Ed25519VerifierPool();
    const parsed = await this.ledger.precheckAll(txs, this.pool ?? undefined);
    const { height } = await this.orderer.submit(parsed.map((p) => p.bytes));
    await this.waitForHeight(height);
    const ids = new Set(parsed.map((p) => p.id));
    const stored = this.store.blockTxs(height).filter((t) => ids.has(t.txId));
    return parsed.map((p) => {
      const t = stored.find((s) => s.txId === p.id);
      if (!t) throw new HlError('exception', 'an ordered tx is missing from its block');
      return { txId: t.txId, height: t.height, position: t.position, valid: t.valid, leafIndex: t.leafIndex, error: t.error };
    });
  }

  /** A tx of `type` with `body` to be signed by this organization. */
  private orgTx(type: string, body: RecordCommitBody | Record<string, unknown>): TxInput {
    return { type, body: body as unknown as Record<string, unknown>, signer: { kind: 'org', id: this.config.orgId, keyId: this.keyPair.keyId } };
  }

  /** Signs a tx as this organization, telling the ledger the signature is its own (no re-verification). */
  private signOwn(type: string, body: RecordCommitBody | Record<string, unknown>): ParsedTx {
    const tx = signTx(this.orgTx(type, body), this.keyPair.privateKey);
    this.ledger.trustOwnSignature(tx);
    return tx;
  }

  /** `signOwn` with the signature made off the event loop. */
  private async signOwnAsync(type: string, body: RecordCommitBody | Record<string, unknown>): Promise<ParsedTx> {
    const tx = await signTxAsync(this.orgTx(type, body), this.keyPair.privateKey);
    this.ledger.trustOwnSignature(tx);
    return tx;
  }

  /**
   * Break-glass notification (DESIGN.md §6): POSTs the AuditEvent to every active rest-hook Subscription
   * whose criteria are `AuditEvent?patient=Patient/{id}` for this patient (FHIR R4 subscription.html), with
   * the channel's headers; best effort, off the request's path, failures logged without PHI.
   */
  private notifyEmergency(patient: string, event: Resource): void {
    const run = async () => {
      const found = await this.repository.search('Subscription', new URLSearchParams({ status: 'active', _count: '1000' }));
      for (const v of found.page) {
        const sub = resourceOf(v) as { criteria?: string; channel?: { type?: string; endpoint?: string; payload?: string; header?: string[] } };
        if (sub.channel?.type !== 'rest-hook' || typeof sub.channel.endpoint !== 'string' || !subscriptionCoversPatient(sub.criteria, patient)) continue;
        const headers: Record<string, string> = {};
        for (const h of sub.channel.header ?? []) {
          const at = h.indexOf(':');
          if (at > 0) headers[h.slice(0, at).trim()] = h.slice(at + 1).trim();
        }
        if (sub.channel.payload) headers['content-type'] = sub.channel.payload;
        try {
          const res = await fetch(sub.channel.endpoint, {
            method: 'POST',
            headers,
            ...(sub.channel.payload ? { body: JSON.stringify(event) } : {}),
            signal: AbortSignal.timeout(5000),
          });
          if (!res.ok) this.log.warn({ subscription: v.id, status: res.status }, 'break-glass notification refused');
        } catch (err) {
          this.log.warn({ subscription: v.id, err: { message: (err as Error).message } }, 'break-glass notification failed');
        }
      }
    };
    void run().catch((err: unknown) => this.log.warn({ err: { message: (err as Error).message } }, 'break-glass notification failed'));
  }

  /** Signs and orders this organization's record, access and break-glass txs. */
  private committer(): RecordCommitter {
    return {
      sign: (bodies) => Promise.all(bodies.map((b) => this.signOwnAsync(TxType.recordCommit, b))),
      signAs: (type, bodies) => Promise.all(bodies.map((b) => this.signOwnAsync(type, b))),
      submit: (txs) => this.submitParsed(txs),
    };
  }

  /** Submits txs this node signed itself. */
  private submitParsed(txs: readonly ParsedTx[]): Promise<TxReceipt[]> {
    return this.submit(txs.map((t) => t.bytes));
  }

  /**
   * Orders a tx that a patient or their proxy signed (`patient.register`, `consent.grant`,
   * `consent.revoke`) and resolves with its receipt once applied. Anything else, or a tx the ledger would
   * reject, is refused before ordering; nothing is stored.
   */
  async submitPatientTx(bytes: Uint8Array): Promise<TxReceipt> {
    const tx = parseTx(bytes);
    const patientTx = patientTxTypes.has(tx.envelope.type) && tx.envelope.signer.kind === 'patient';
    // Membership changes carry a majority of the members' approvals: their signatures are their authentication.
    const governance = governanceTxTypes.has(tx.envelope.type) && tx.envelope.signer.kind === 'org';
    if (!patientTx && !governance) {
      throw new HlError('forbidden', `only patient-signed ${[...patientTxTypes].join(', ')} and member-approved ${[...governanceTxTypes].join(', ')} txs are accepted here`);
    }
    const [receipt] = await this.submit([tx.bytes]);
    if (!receipt!.valid) throw new HlError('conflict', `the tx was ordered but the ledger rejected it: ${receipt!.error}`);
    return receipt!;
  }

  /** What a patient signs to be linked to this custodian's local Patient `id` (which must exist). */
  async patientLinkTerms(id: string): Promise<PatientLinkTerms> {
    const current = await this.repository.read('Patient', id);
    if (current.deleted) throw new HlError('deleted', `Patient/${id} was deleted`);
    return { origin: this.ledger.origin ?? this.config.origin, custodian: this.config.orgId, pseudonym: patientPseudonym(this.pseudonymKey, id) };
  }

  /**
   * Links a registered patient's network id to the local Patient `id`: a `patient.link` signed by this
   * organization and carrying the patient's approval (`patientSig` over {@link patientLinkTerms}).
   */
  async linkPatient(id: string, patient: string, patientSig: string): Promise<TxReceipt> {
    const terms = await this.patientLinkTerms(id);
    const tx = this.signOwn(TxType.patientLink, { patient, pseudonym: terms.pseudonym, patientSig });
    const [receipt] = await this.submitParsed([tx]);
    if (!receipt!.valid) throw new HlError('conflict', `the link was ordered but the ledger rejected it: ${receipt!.error}`);
    return receipt!;
  }

  /**
   * Crash recovery of the record write protocol: a pending version whose commitment made it onto the
   * ledger is marked committed; any other was never acknowledged and is dropped.
   */
  async recoverPendingRecords(): Promise<{ committed: number; dropped: number }> {
    const pending = await this.records.pendingVersions();
    const onLedger = pending.filter((p) => p.txId !== null && this.store.txById(p.txId)?.valid === true).map((p) => p.txId!);
    const dropped = pending.filter((p) => p.txId === null || !onLedger.includes(p.txId)).map((p) => p.txId).filter((t): t is string => t !== null);
    const committed = onLedger.length > 0 ? await this.records.markCommitted(onLedger) : 0;
    if (dropped.length > 0) await this.records.dropPending({ txIds: dropped });
    return { committed, dropped: pending.length - onLedger.length };
  }

  /** Signs a tx as this organization. */
  signAsOrg(type: string, body: Record<string, unknown>): TxEnvelope {
    return signTx(this.orgTx(type, body), this.keyPair.privateKey).envelope;
  }

  async close(): Promise<void> {
    // Audit entries of the last requests are committed before the node stops.
    await this.access.flushAudit();
    await this.gossip.stop();
    this.abort.abort();
    if (this.ownsOrderer) await this.orderer.close();
    await this.loop;
    await this.pool?.close();
    await closeRecordStore(this.records);
    this.store.close();
    this.lock.release();
  }
}

/** Closes a record store that holds resources of its own (the PostgreSQL pool); SQLite's is the ledger's. */
async function closeRecordStore(records: RecordStore): Promise<void> {
  await (records as RecordStore & { close?: () => Promise<void> }).close?.();
}

/**
 * Opens the node in `dataDir` and starts applying ordered batches (catching up on any not yet applied).
 * Holds the data directory's lock until `close()`: `conflict` if a node or a key rotation already uses it.
 */
export async function openNode(options: {
  dataDir: string;
  clock?: Clock;
  log?: Logger;
  database?: string;
  /** An orderer shared by several nodes of this process (the demo network); by default the node's own LocalOrderer. */
  orderer?: Orderer;
  /** Order through this etcd cluster instead (`start --etcd URLS`). */
  etcd?: EtcdSettings;
}): Promise<HealthledgerNode> {
  const dataDir = resolve(options.dataDir);
  const config = readConfig(dataDir);
  const keyPair = readOrgKey(dataDir);
  const clock = options.clock ?? systemClock;
  const log = options.log ?? createLogger();
  requireDatabaseUrl(options.database);
  const lock = lockDataDir(dataDir);
  let store: SqliteLedgerStore;
  let ledger: Ledger;
  try {
    store = openSqliteLedgerStore(join(dataDir, config.database));
    try {
      ledger = Ledger.open({ store, signer: { orgId: config.orgId, keyPair }, clock });
    } catch (err) {
      store.close();
      throw err;
    }
  } catch (err) {
    lock.release();
    throw err;
  }
  let records: RecordStore;
  try {
    const opened = await openRecordStore({ dataDir, ledger: store, database: options.database, clock });
    records = opened.records;
    if (opened.finishedRotation) {
      log.warn({ kekId: records.kekId }, 'finished a KEK rotation that was interrupted after its store transaction: keys/kek.key is now the new KEK');
    }
  } catch (err) {
    store.close();
    lock.release();
    throw err;
  }
  let pseudonymKey: Uint8Array;
  let orderer: Orderer;
  try {
    pseudonymKey = readSecret(dataDir, files.pseudonymKey, 'pseudonym key', true);
    orderer =
      options.orderer ??
      (options.etcd
        ? await openEtcdOrderer(options.etcd, config, clock, log)
        : new LocalOrderer({ file: join(dataDir, config.ordererLog), proposer: config.orgId, clock }));
  } catch (err) {
    await closeRecordStore(records);
    store.close();
    lock.release();
    throw err;
  }
  const node = new HealthledgerNode({
    config,
    dataDir,
    ledger,
    orderer,
    store,
    keyPair,
    log,
    records,
    pseudonymKey,
    clock,
    lock,
    ownsOrderer: options.orderer === undefined,
  });
  try {
    await node.waitForHeight(orderer.lastHeight());
    await startFromGenesis(node, readGenesisTx(dataDir));
    await node.recoverPendingRecords();
  } catch (err) {
    await node.close();
    throw err;
  }
  return node;
}

/** How a node reaches its etcd cluster. */
export interface EtcdSettings {
  /** Client URLs of the members, e.g. https://etcd1.example.org:2379. */
  endpoints: string[];
  tls?: EtcdOrdererOptions['tls'];
  auth?: EtcdOrdererOptions['auth'];
  /** How long writes are retried while etcd has no quorum before they get 503 (default 10 s). */
  unavailableMs?: number;
}

/** Throws `invalid` unless `endpoints` is a non-empty list of http(s)://host:port URLs (`start --etcd URLS`). */
export function checkEtcdEndpoints(endpoints: readonly string[]): void {
  if (endpoints.length === 0 || endpoints.some((e) => !/^https?:\/\/[^\s/?#]+$/.test(e))) {
    throw new HlError('invalid', '--etcd must be comma-separated http(s)://host:port URLs');
  }
}

/** The node's EtcdOrderer: its network's log is every key under `healthledger/<origin>/`. */
export async function openEtcdOrderer(settings: EtcdSettings, config: NodeConfig, clock: Clock, log?: Logger): Promise<EtcdOrderer> {
  checkEtcdEndpoints(settings.endpoints);
  if (config.origin === '') throw new HlError('conflict', 'this node has no network yet: start it once with --genesis FILE');
  return EtcdOrderer.open({
    endpoints: settings.endpoints,
    prefix: `healthledger/${config.origin}/`,
    proposer: config.orgId,
    clock,
    ...(settings.tls ? { tls: settings.tls } : {}),
    ...(settings.auth ? { auth: settings.auth } : {}),
    ...(settings.unavailableMs ? { unavailableMs: settings.unavailableMs } : {}),
    ...(log ? { log } : {}),
  });
}

/** Throws `invalid` unless `database` (when given) is a PostgreSQL URL, the only database a node takes. */
function requireDatabaseUrl(database: string | undefined): void {
  if (database !== undefined && !/^postgres(ql)?:\/\//.test(database)) {
    throw new HlError('invalid', '--database must be a postgres:// or postgresql:// URL');
  }
}

/** An exclusive hold on a data directory (see {@link lockDataDir}). */
export interface DataDirLock {
  release(): void;
}

/**
 * Takes the data directory's lock, held by a running node and by a key rotation: `node.lock`, a SQLite file
 * kept in EXCLUSIVE locking mode. The lock is the operating system's file lock, so it dies with the process
 * (kill -9 and power loss included) and never goes stale, unlike a pid file. `conflict` when another holder,
 * in this process or any other, has it.
 */
export function lockDataDir(dataDir: string): DataDirLock {
  const file = join(resolve(dataDir), files.lock);
  const db = new Database(file, { timeout: 0 });
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE; COMMIT');
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code === 'SQLITE_BUSY') {
      throw new HlError('conflict', `${resolve(dataDir)} is in use by a running node or key rotation (${files.lock} is locked); stop it first`, {
        cause: err,
      });
    }
    throw err;
  }
  return { release: () => db.close() };
}

/** Reads a 32-byte key file if it exists. */
function readKekFile(dataDir: string, file: string): Uint8Array | undefined {
  return existsSync(join(dataDir, file)) ? readSecret(dataDir, file, 'key-encryption key', false) : undefined;
}

/** Makes the renames and creations in a directory durable (POSIX: fsync the directory itself). */
function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Writes a new key file (mode 0600; never over an existing file) and makes it durable before returning. */
function writeKeyFileDurably(path: string, key: Uint8Array): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    writeSync(fd, `${toBase64(key)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  syncDir(join(path, '..'));
}

/**
 * Makes `keys/kek.key.next` the KEK: renames `keys/kek.key` (if any) to `keys/kek.key.retired-<UTC time>`
 * and the new one into its place, durably. Returns the retired file's path (null when there was none: a
 * crash between the two renames left only the new key).
 */
function promoteNextKek(dataDir: string, clock: Clock): string | null {
  const keysDir = join(dataDir, 'keys');
  let retired: string | null = null;
  if (existsSync(join(dataDir, files.kek))) {
    const stamp = new Date(clock.nowMs()).toISOString().replace(/[-:.]/g, '');
    retired = join(dataDir, `${files.kek}.retired-${stamp}`);
    for (let n = 2; existsSync(retired); n++) retired = join(dataDir, `${files.kek}.retired-${stamp}-${n}`);
    renameSync(join(dataDir, files.kek), retired);
  }
  renameSync(join(dataDir, files.kekNext), join(dataDir, files.kek));
  syncDir(keysDir);
  return retired;
}

/**
 * Opens the node's record store (SQLite in the ledger's database, or PostgreSQL at `database`) with the KEK
 * of the data directory, finishing a KEK rotation that a crash interrupted (DESIGN.md §5).
 *
 * A rotation ({@link rotateNodeKek}) writes the new KEK durably to `keys/kek.key.next` before its one store
 * transaction and renames the files after it commits. The store records the id (`kekIdOf`) of the KEK that
 * wraps its keys and accepts only that KEK, so exactly one of `kek.key` and `kek.key.next` opens it, whatever
 * moment the crash hit: `kek.key` (the transaction did not commit: `kek.key.next` is left for the next
 * rotation to use, since it may be the KEK of another database this data directory was used with), or
 * `kek.key.next` (it committed: `kek.key.next` then becomes `kek.key` and the old one is retired). No key
 * file is ever deleted or overwritten here. When neither opens it: `integrity`, naming the file and both ids.
 */
async function openRecordStore(options: {
  dataDir: string;
  /** The ledger's SQLite store, whose database holds the embedded record store. */
  ledger: SqliteLedgerStore;
  /** A PostgreSQL URL (default: the embedded SQLite store). */
  database?: string;
  clock?: Clock;
}): Promise<{ records: RecordStore; finishedRotation: boolean; retiredKekFile: string | null }> {
  const { dataDir, database } = options;
  const clock = options.clock ?? systemClock;
  requireDatabaseUrl(database);
  const open = async (kek: Uint8Array): Promise<RecordStore> => {
    try {
      if (database === undefined) return await openSqliteRecordStore({ db: options.ledger.db, kek, clock, flush: () => options.ledger.flush() });
      return await openPostgresRecordStore({ connectionString: database, kek, clock });
    } catch (err) {
      if (isHlError(err)) throw err;
      // Connection failures name the server, never credentials from the URL.
      throw new HlError('pushback', `cannot open the record database: ${(err as Error).message}`, { cause: err });
    }
  };
  const current = readKekFile(dataDir, files.kek);
  const next = readKekFile(dataDir, files.kekNext);
  if (current === undefined && next === undefined) {
    throw new HlError('not-found', `key-encryption key not found at ${join(dataDir, files.kek)}`);
  }
  let failure: HlError | undefined;
  if (current !== undefined) {
    try {
      return { records: await open(current), finishedRotation: false, retiredKekFile: null };
    } catch (err) {
      if (!isHlError(err, 'integrity')) throw err;
      failure = new HlError('integrity', `cannot open the record store with ${join(dataDir, files.kek)}: ${err.message}`, {
        cause: err,
      });
      if (next === undefined) throw failure;
    }
  }
  let records: RecordStore;
  try {
    records = await open(next!);
  } catch (err) {
    if (failure !== undefined || !isHlError(err, 'integrity')) throw failure ?? err;
    throw new HlError('integrity', `cannot open the record store with ${join(dataDir, files.kekNext)}: ${err.message}`, { cause: err });
  }
  try {
    return { records, finishedRotation: true, retiredKekFile: promoteNextKek(dataDir, clock) };
  } catch (err) {
    await closeRecordStore(records);
    throw err;
  }
}

/** What {@link rotateNodeKek} did. */
export interface NodeKekRotation extends RotationReport {
  /** The KEK file, now holding the new KEK. */
  kekFile: string;
  /** Where the old KEK was moved: the operator destroys it once no backup needs it. */
  retiredKekFile: string | null;
  /** Which record store was rotated. */
  backend: 'sqlite' | 'postgresql';
  /**
   * Set when opening the store first finished an earlier rotation that a crash had interrupted after its
   * transaction (the store was already under `keys/kek.key.next`): the id of that KEK and the file it retired.
   */
  finishedEarlier: { kekId: string; retiredKekFile: string | null } | null;
}

/** The steps of {@link rotateNodeKek}, in order, for progress output (and crash tests). */
export type KekRotationStep = 'store-opened' | 'new-kek-written' | 'store-rotated' | 'kek-files-swapped';

/**
 * Rotates the key-encryption key of a node's record store (DESIGN.md §5), with the node stopped: takes the
 * data directory's lock (`conflict` while a node runs on it), opens the store as {@link openRecordStore} does,
 * writes a new random KEK durably to `keys/kek.key.next` (or reuses one a rotation left there that does not
 * open this store), re-wraps every DEK and the blind-index key in one store transaction
 * (`RecordStore.rotateKek`; no resource ciphertext, index term or ledger entry changes), then renames
 * `keys/kek.key` to `keys/kek.key.retired-<UTC time>` and the new key into its place. A crash at any point
 * leaves a state that {@link openRecordStore} opens with the right key. The retired KEK is kept, not
 * deleted: the operator decides when no backup made before the rotation still needs it, and destroys it.
 * The blind-index key and the pseudonym key are not rotated: the first would need every index term
 * recomputed (a reindex), the second every ledger pseudonym re-derived.
 * With `database`, only the PostgreSQL store is rotated; the embedded SQLite store of the data directory
 * (empty when the node runs on PostgreSQL) stays under the old KEK.
 */
export async function rotateNodeKek(options: {
  dataDir: string;
  database?: string;
  clock?: Clock;
  onProgress?: (done: number, total: number) => void;
  onStep?: (step: KekRotationStep) => void;
}): Promise<NodeKekRotation> {
  const dataDir = resolve(options.dataDir);
  const config = readConfig(dataDir);
  const clock = options.clock ?? systemClock;
  requireDatabaseUrl(options.database);
  const lock = lockDataDir(dataDir);
  let ledgerStore: SqliteLedgerStore | undefined;
  let records: RecordStore | undefined;
  try {
    ledgerStore = openSqliteLedgerStore(join(dataDir, config.database));
    const opened = await openRecordStore({ dataDir, ledger: ledgerStore, database: options.database, clock });
    records = opened.records;
    const finishedEarlier = opened.finishedRotation ? { kekId: records.kekId, retiredKekFile: opened.retiredKekFile } : null;
    options.onStep?.('store-opened');
    // A key left by an interrupted rotation of this store never wrapped anything here; it may wrap another
    // database's keys, so it is used rather than replaced.
    let newKek = readKekFile(dataDir, files.kekNext);
    if (newKek === undefined) {
      newKek = generateAesKey();
      writeKeyFileDurably(join(dataDir, files.kekNext), newKek);
    }
    options.onStep?.('new-kek-written');
    const report = await records.rotateKek(newKek, options.onProgress ? { onProgress: options.onProgress } : {});
    options.onStep?.('store-rotated');
    const retiredKekFile = promoteNextKek(dataDir, clock);
    options.onStep?.('kek-files-swapped');
    return {
      ...report,
      kekFile: join(dataDir, files.kek),
      retiredKekFile,
      backend: options.database === undefined ? 'sqlite' : 'postgresql',
      finishedEarlier,
    };
  } finally {
    if (records !== undefined) await closeRecordStore(records);
    ledgerStore?.close();
    lock.release();
  }
}

/** What `initNode` made. */
export interface InitResult {
  config: NodeConfig;
  dataDir: string;
  keyId: string;
  checkpoint: string;
  verifierKey: string;
}

/** Creates an organization's keys and config in `dataDir` (no ledger yet). */
function createOrgDir(org: string, dataDir: string, origin: string): { config: NodeConfig; keyPair: Ed25519KeyPair } {
  const orgId = orgIdFromName(org);
  if (existsSync(join(dataDir, files.config))) {
    throw new HlError('conflict', `${dataDir} already holds a Healthledger node; refusing to overwrite its keys`);
  }
  mkdirSync(join(dataDir, 'keys'), { recursive: true, mode: 0o700 });
  const keyPair = generateEd25519KeyPair();
  writeFileSync(join(dataDir, files.orgKey), exportPem(keyPair.privateKey), { mode: 0o600 });
  chmodSync(join(dataDir, files.orgKey), 0o600);
  writeFileSync(join(dataDir, files.kek), `${toBase64(generateAesKey())}\n`, { mode: 0o600 });
  const config: NodeConfig = { version: 1, orgId, name: org, origin, database: 'ledger.sqlite', ordererLog: 'orderer.sqlite' };
  writeFileSync(join(dataDir, files.config), `${JSON.stringify(config, null, 2)}\n`);
  return { config, keyPair };
}

/**
 * Creates a new organization and single-member network in `dataDir`: org key, key-encryption key, config,
 * the signed genesis tx, and block 0 with its first checkpoint. Refuses a directory that already holds a node.
 * With `join`, only the keys and config: the node waits for a network genesis (`createGenesis`, then
 * `start --genesis FILE`).
 */
export async function initNode(options: { org: string; dataDir: string; clock?: Clock; join?: boolean }): Promise<InitResult> {
  const dataDir = resolve(options.dataDir);
  const clock = options.clock ?? systemClock;
  const origin = `healthledger.local/net-${toHex(randomBytes(8))}`;
  const { config, keyPair } = createOrgDir(options.org, dataDir, options.join ? '' : origin);
  if (options.join) return { config, dataDir, keyId: keyPair.keyId, checkpoint: '', verifierKey: '' };
  const genesis = signGenesis(keyPair, config, origin, [memberDescriptorOf(config, keyPair)], clock);
  writeFileSync(join(dataDir, files.genesis), `${JSON.stringify(genesis.envelope, null, 2)}\n`);
  const node = await openNode({ dataDir, clock });
  try {
    const checkpoint = node.ledger.finalCheckpoint()!.note;
    return { config, dataDir, keyId: keyPair.keyId, checkpoint, verifierKey: node.ledger.verifierKey() };
  } finally {
    await node.close();
  }
}

function memberDescriptorOf(config: NodeConfig, keyPair: Ed25519KeyPair, url?: string): OrgDescriptor {
  return { id: config.orgId, name: config.name, publicKey: exportPublicJwk(keyPair.publicKey).x, ...(url ? { url } : {}) };
}

function signGenesis(keyPair: Ed25519KeyPair, config: NodeConfig, origin: string, orgs: OrgDescriptor[], clock: Clock): ParsedTx {
  return signTx(
    {
      type: TxType.networkGenesis,
      body: { origin, orgs: orgs as unknown as Record<string, unknown>[] },
      signer: { kind: 'org', id: config.orgId, keyId: keyPair.keyId },
      time: new Date(clock.nowMs()).toISOString(),
    },
    keyPair.privateKey,
  );
}

/** This organization as a network genesis lists it: id, name, public key and (optionally) its node's URL. */
export function memberDescriptor(dataDir: string, url?: string): OrgDescriptor {
  const config = readConfig(dataDir);
  if (url !== undefined && !/^https?:\/\/[^\s/?#]+(\/[^\s?#]*[^\s?#/])?$/.test(url)) throw new HlError('invalid', '--url must be an http(s) base URL without a trailing slash');
  return memberDescriptorOf(config, readOrgKey(resolve(dataDir)), url);
}

/**
 * A network genesis (DESIGN.md §1): founded by the organization of `dataDir` (listed first, signing it)
 * with the other `members`; `origin` names the network in every checkpoint. Every node starts from it
 * (`start --genesis FILE`).
 */
export function createGenesis(options: { dataDir: string; origin: string; url?: string; members: OrgDescriptor[]; clock?: Clock }): TxEnvelope {
  const dataDir = resolve(options.dataDir);
  const config = readConfig(dataDir);
  const keyPair = readOrgKey(dataDir);
  if (!/^[\x21-\x7e]{1,200}$/.test(options.origin)) throw new HlError('invalid', 'the network origin must be printable ASCII without spaces');
  const orgs = [memberDescriptorOf(config, keyPair, options.url), ...options.members.filter((m) => m.id !== config.orgId)];
  const tx = signGenesis(keyPair, config, options.origin, orgs, options.clock ?? systemClock);
  // The ledger's own rules decide whether it is a valid genesis, now rather than at first start.
  const probe = new LedgerState();
  const issues = validateTx(tx, probe, { height: 0, position: 0, blockTimeMs: Date.parse(tx.envelope.time) });
  if (issues.length > 0) throw new HlError('invalid', `not a valid genesis: ${issues.map((i) => `${i.expression}: ${i.message}`).join('; ')}`, { issues });
  return tx.envelope;
}

/**
 * Makes `genesis` this node's network: it must list this organization with its key, and the node must not
 * have a ledger yet (or already have this very genesis). Writes `genesis.json` and the origin into the config.
 */
export function adoptGenesis(dataDir: string, genesis: TxEnvelope): void {
  const dir = resolve(dataDir);
  const config = readConfig(dir);
  const tx = parseTx(JSON.stringify(genesis));
  if (tx.envelope.type !== TxType.networkGenesis) throw new HlError('invalid', 'the genesis file does not hold a network.genesis tx');
  const orgs = (tx.envelope.body.orgs ?? []) as OrgDescriptor[];
  const self = Array.isArray(orgs) ? orgs.find((o) => o?.id === config.orgId) : undefined;
  // An organization that joined later (org.join) is not in the genesis; one that is must have this key.
  if (self && self.publicKey !== exportPublicJwk(readOrgKey(dir).publicKey).x) {
    throw new HlError('forbidden', `the genesis lists ${config.orgId} with another key than this node's`);
  }
  const genesisFile = join(dir, files.genesis);
  if (existsSync(genesisFile)) {
    const current = parseTx(JSON.stringify(readJson<TxEnvelope>(genesisFile, 'genesis file')));
    if (current.id === tx.id) return;
    if (existsSync(join(dir, config.database))) throw new HlError('conflict', `${dir} already belongs to another network (its genesis differs)`);
  }
  writeFileSync(genesisFile, `${JSON.stringify(tx.envelope, null, 2)}\n`);
  writeFileSync(join(dir, files.config), `${JSON.stringify({ ...config, origin: tx.envelope.body.origin as string }, null, 2)}\n`);
}

/**
 * Block 0 must be the network's genesis: the founder (its signer) orders it when the ordering service is
 * empty; every other node waits for it. `conflict` when the ordering service holds another network's.
 */
async function startFromGenesis(node: HealthledgerNode, genesis: ParsedTx): Promise<void> {
  if (node.ledger.height < 0) {
    if (node.orderer.lastHeight() < 0 && genesis.envelope.signer.id === node.config.orgId) {
      const [receipt] = await node.submit([genesis.bytes]);
      if (!receipt?.valid) throw new HlError('invalid', `the genesis was not accepted: ${receipt?.error ?? 'unknown'}`);
    } else {
      node.log.warn({ founder: genesis.envelope.signer.id }, 'waiting for the network genesis (block 0) from the ordering service');
      await node.waitForHeight(0);
    }
  }
  const first = node.ledger.store.blockTxs(0)[0];
  if (first?.txId !== genesis.id) throw new HlError('conflict', "the ordering service holds another network's genesis than this node's genesis.json");
}

function readGenesisTx(dataDir: string): ParsedTx {
  const file = join(resolve(dataDir), files.genesis);
  if (!existsSync(file)) throw new HlError('not-found', `no network genesis at ${file}: start with --genesis FILE`);
  return parseTx(JSON.stringify(readJson<TxEnvelope>(file, 'genesis file')));
}

/** Reads the genesis tx distributed with the node. */
export function readGenesis(dataDir: string): TxEnvelope {
  const envelope = readJson<TxEnvelope>(join(resolve(dataDir), files.genesis), 'genesis file');
  return parseTx(JSON.stringify(envelope)).envelope;
}

/**
 * Full verification of a node's data directory against its genesis file (and optional checkpoints obtained
 * elsewhere). Opens storage directly; does not start the node.
 */
export async function verifyDataDir(
  dataDir: string,
  options: { trustedCheckpoints?: string[]; onProgress?: (done: number, total: number) => void } = {},
): Promise<AuditReport> {
  const config = readConfig(dataDir);
  const genesis = readGenesis(dataDir);
  const dbFile = join(resolve(dataDir), config.database);
  if (!existsSync(dbFile)) throw new HlError('not-found', `ledger database not found at ${dbFile}`);
  const store = openSqliteLedgerStore(dbFile);
  const pool = new Ed25519VerifierPool();
  try {
    return await auditLedger(store, { genesis, trustedCheckpoints: options.trustedCheckpoints, onProgress: options.onProgress, pool });
  } finally {
    await pool.close();
    store.close();
  }
}

/** A node serving HTTP. */
export interface RunningNode {
  node: HealthledgerNode;
  server: FastifyInstance;
  /** Base URL, e.g. http://127.0.0.1:8080 */
  url: string;
  close(): Promise<void>;
}

/** Opens the node in `dataDir` and serves its HTTP API on `host:port` (port 0 picks a free one). */
export async function startNode(options: {
  dataDir: string;
  port?: number;
  host?: string;
  clock?: Clock;
  log?: Logger;
  /** A PostgreSQL URL for the record store (default: the embedded SQLite database). */
  database?: string;
  /**
   * The URL clients reach the node at (default: the address it listens on): the SMART endpoints it
   * advertises, the `aud` a client assertion must name and the origin a patient's login signature names.
   */
  publicUrl?: string;
  /** An orderer shared with other nodes of this process (the demo network). */
  orderer?: Orderer;
  /** Order through an etcd cluster. */
  etcd?: EtcdSettings;
}): Promise<RunningNode> {
  const clock = options.clock ?? systemClock;
  const log = options.log ?? createLogger();
  // Index the R4 definitions now (about a second) rather than on the first request.
  loadDefinitions();
  const node = await openNode({
    dataDir: options.dataDir,
    clock,
    log,
    ...(options.database ? { database: options.database } : {}),
    ...(options.orderer ? { orderer: options.orderer } : {}),
    ...(options.etcd ? { etcd: options.etcd } : {}),
  });
  let server: FastifyInstance;
  let publicUrl = options.publicUrl?.replace(/\/+$/, '');
  try {
    if (publicUrl !== undefined && !/^https?:\/\/[^\s/?#]+$/.test(publicUrl)) throw new HlError('invalid', '--public-url must be an http(s) origin such as https://node.example.org');
    const capability = buildCapabilityStatement({
      resourceTypes,
      software: { name: 'Healthledger', version: '0.1.0' },
      date: new Date(clock.nowMs()).toISOString(),
    });
    server = await buildServer({
      orgId: node.config.orgId,
      ledger: node.ledger,
      publicKey: node.keyPair.publicKey,
      clock,
      log,
      fhir: { repository: node.access, isResourceType, capabilityStatement: () => capability },
      patients: {
        submitPatientTx: (bytes) => node.submitPatientTx(bytes),
        patientLinkTerms: (id) => node.patientLinkTerms(id),
        linkPatient: (id, patient, sig) => node.linkPatient(id, patient, sig),
      },
      consents: { ledger: node.ledger, nowMs: () => clock.nowMs(), submitPatientTx: (bytes) => node.submitPatientTx(bytes) },
      auditRefusal: (refusal) => node.access.auditRefusal(refusal),
      auth: smartAuthOf(node, clock, () => publicUrl!),
      status: () => ({ forkAlarm: node.forkAlarm }),
      exchange: {
        receiveCheckpoint: (note) => node.receiveCheckpoint(note),
        isOtherMember: (org) => org !== node.config.orgId && node.ledger.state.members.has(org),
        everything: (request, ctx) => node.exchange.everythingAsCustodian(request, ctx),
        networkEverything: (ctx, patient) => node.exchange.networkEverything(ctx, patient),
      },
    });
    await server.listen({ port: options.port ?? 8080, host: options.host ?? '127.0.0.1' });
  } catch (err) {
    await node.close();
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new HlError('conflict', `port ${options.port} is already in use; choose another with --port`);
    }
    throw err;
  }
  const address = server.server.address();
  if (address === null || typeof address === 'string') throw new HlError('exception', 'server is not listening on TCP');
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  publicUrl ??= `http://${host}:${address.port}`;
  return {
    node,
    server,
    url: `http://${host}:${address.port}`,
    async close() {
      // Requests in flight get 3 s to finish; a client that never reads its answer does not hold the stop.
      const force = setTimeout(() => server.server.closeAllConnections(), 3000);
      await server.close();
      clearTimeout(force);
      await node.close();
    },
  };
}

/** Default lifetime of `healthledger token` tokens: long enough for an administrator's working day. */
export const adminTokenTtlSeconds = 12 * 60 * 60;

/** A bearer token for local administration, signed by the node's organization key. */
export async function issueAdminToken(options: { dataDir: string; scope?: string; clock?: Clock }): Promise<string> {
  const config = readConfig(options.dataDir);
  const keyPair = readOrgKey(options.dataDir);
  return issueToken(
    {
      orgId: config.orgId,
      privateKey: keyPair.privateKey,
      keyId: keyPair.keyId,
      ttlSeconds: adminTokenTtlSeconds,
      nowMs: (options.clock ?? systemClock).nowMs(),
    },
    { sub: 'admin', scope: checkScope(options.scope ?? 'user/*.cruds') },
  );
}

/**
 * Writes `patients` deterministic synthetic patients as FHIR transaction bundles, one file each
 * (`patient-000001.json`, ...), into `outDir`. Returns the number of resources written.
 */
export function writeSynthBundles(options: {
  patients: number;
  seed: number;
  outDir: string;
  onProgress?: (done: number, total: number) => void;
}): { files: number; resources: number } {
  if (!Number.isSafeInteger(options.patients) || options.patients < 1 || options.patients > 1_000_000) {
    throw new HlError('invalid', '--patients must be a whole number from 1 to 1,000,000');
  }
  if (!Number.isSafeInteger(options.seed) || options.seed < 0 || options.seed > 0xffffffff) {
    throw new HlError('invalid', '--seed must be a whole number from 0 to 4294967295');
  }
  mkdirSync(options.outDir, { recursive: true });
  let resources = 0;
  for (let i = 1; i <= options.patients; i++) {
    const bundle = generatePatientBundle(options.seed, i);
    resources += bundle.entry.length;
    writeFileSync(join(options.outDir, `patient-${String(i).padStart(6, '0')}.json`), `${JSON.stringify(bundle, null, 1)}\n`);
    options.onProgress?.(i, options.patients);
  }
  return { files: options.patients, resources };
}

/** A patient's signing key as a key file holds it (DESIGN.md §1: patients hold their keys). */
export interface PatientKey {
  /** Network id, `pat-` + base32(SHA-256(public key))[0..26]. */
  patient: string;
  /** RFC 7638 thumbprint of the public key. */
  keyId: string;
  /** base64url raw Ed25519 public key. */
  publicKey: string;
  privateKey: import('node:crypto').KeyObject;
}

const patientKeyFileType = 'healthledger-patient-key';

/** Makes a new patient key. */
export function createPatientKey(): PatientKey {
  const pair = generateEd25519KeyPair();
  const publicKey = exportPublicJwk(pair.publicKey).x;
  return { patient: patientNetworkId(fromBase64Url(publicKey)), keyId: pair.keyId, publicKey, privateKey: pair.privateKey };
}

/**
 * Writes a patient key file (JSON with the private JWK; mode 0600), durably. Never replaces an existing file:
 * `conflict` if `file` exists, so a key is never lost by a second `patient new`.
 */
export function writePatientKeyFile(file: string, key: PatientKey): void {
  const body = { type: patientKeyFileType, version: 1, patient: key.patient, keyId: key.keyId, jwk: exportPrivateJwk(key.privateKey) };
  let fd: number;
  try {
    fd = openSync(file, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new HlError('conflict', `${file} already exists; a key file is never overwritten`);
    throw new HlError('invalid', `cannot create ${file}: ${(err as Error).message}`);
  }
  try {
    writeSync(fd, `${JSON.stringify(body, null, 2)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Reads and checks a patient key file; `invalid` naming the problem otherwise. */
export function readPatientKeyFile(file: string): PatientKey {
  const data = readJson<Record<string, unknown>>(file, 'patient key file');
  const jwk = data.jwk as Record<string, unknown> | undefined;
  if (data.type !== patientKeyFileType || data.version !== 1 || typeof jwk !== 'object' || jwk === null) {
    throw new HlError('invalid', `${file} is not a Healthledger patient key file`);
  }
  let pair: Ed25519KeyPair;
  try {
    pair = importEd25519PrivateKey({ kty: 'OKP', crv: 'Ed25519', x: String(jwk.x), d: String(jwk.d) });
  } catch {
    throw new HlError('invalid', `${file} does not hold a valid Ed25519 private key`);
  }
  const publicKey = exportPublicJwk(pair.publicKey).x;
  const patient = patientNetworkId(fromBase64Url(publicKey));
  if (data.patient !== patient) throw new HlError('invalid', `${file}: its network id does not match its key`);
  return { patient, keyId: pair.keyId, publicKey, privateKey: pair.privateKey };
}

/** Signs a tx as a patient (or as a proxy acting for the patient named in `body`). */
export function signPatientTx(key: PatientKey, type: string, body: Record<string, unknown>): { bytes: Uint8Array; id: string } {
  const tx = signTx({ type, body, signer: { kind: 'patient', id: key.patient, keyId: key.keyId } }, key.privateKey);
  return { bytes: tx.bytes, id: tx.id };
}

/** The patient's approval (base64url signature) of being linked to a custodian's record on these terms. */
export function approvePatientLink(key: PatientKey, terms: PatientLinkTerms): string {
  return signPatientLink(terms.origin, { patient: key.patient, custodian: terms.custodian, pseudonym: terms.pseudonym }, key.privateKey);
}

/**
 * Links a patient key held in this process (the demo's patients, benchmarks, tests) to the local Patient
 * `localId` at `node`: the patient approves the node's link terms and the node commits the `patient.link`.
 */
export async function linkPatientKey(node: HealthledgerNode, localId: string, key: PatientKey): Promise<TxReceipt> {
  return node.linkPatient(localId, key.patient, approvePatientLink(key, await node.patientLinkTerms(localId)));
}

/** Local Patient ids behind this node's ledger pseudonyms (see {@link localPatientResolver}). */
export interface LocalPatients {
  /** The local Patient id a pseudonym names, if any. */
  ofPseudonym(pseudonym: string): Promise<string | undefined>;
  /** The local Patient id of a patient network id linked to this node (`patient.link` with this custodian). */
  ofNetworkId(networkId: string): Promise<string | undefined>;
}

/**
 * The ledger names a custodian's record by pseudonym only, so the pseudonyms of local Patients are computed
 * and remembered, and computed for Patients created since on a miss.
 */
function localPatientResolver(deps: { ledger: Ledger; records: RecordStore; orgId: string; pseudonymKey: Uint8Array }): LocalPatients {
  const byPseudonym = new Map<string, string>();
  const known = new Set<string>();
  const learnNew = async () => {
    for (const patientId of await deps.records.currentIds('Patient')) {
      if (known.has(patientId)) continue;
      known.add(patientId);
      byPseudonym.set(patientPseudonym(deps.pseudonymKey, patientId), patientId);
    }
  };
  return {
    async ofPseudonym(pseudonym) {
      if (!byPseudonym.has(pseudonym)) await learnNew();
      return byPseudonym.get(pseudonym);
    },
    async ofNetworkId(networkId) {
      const pseudonyms = (deps.ledger.state.links.get(networkId) ?? []).filter((l) => l.custodian === deps.orgId).map((l) => l.pseudonym);
      if (pseudonyms.length === 0) return undefined;
      const hit = () => pseudonyms.map((p) => byPseudonym.get(p)).find((id) => id !== undefined);
      if (hit() === undefined) await learnNew();
      return hit();
    },
  };
}

/** The authorization server of a node and what the scope guard reads, for `buildServer`. */
/**
 * The public client every node knows: the `healthledger` CLI acting for a patient (`disclosures`), who signs
 * in by signing a challenge with their key. Its redirect URI is on the loopback interface and never served:
 * the CLI reads the code from the redirect itself (RFC 8252 native app).
 */
export const patientCliClient: Extract<AuthClient, { kind: 'app' }> = {
  kind: 'app',
  clientId: 'healthledger-patient-cli',
  name: 'Healthledger patient CLI',
  redirectUris: ['http://127.0.0.1/healthledger-patient-cli'],
  scope: 'patient/*.rs launch/patient',
};

function smartAuthOf(node: HealthledgerNode, clock: Clock, baseUrl: () => string) {
  const file = new FileAuthRegistry(join(node.dataDir, files.auth));
  const registry = {
    client: async (id: string) => (id === patientCliClient.clientId ? patientCliClient : file.client(id)),
    user: (username: string) => file.user(username),
    addClient: (client: AuthClient) => file.addClient(client),
    addUser: (user: Parameters<FileAuthRegistry['addUser']>[0]) => file.addUser(user),
  };
  const server = new AuthorizationServer({
    orgId: node.config.orgId,
    keyPair: node.keyPair,
    registry,
    clock,
    baseUrl,
    patientKey: (networkId) => node.ledger.state.patients.get(networkId)?.key,
    localPatient: (networkId) => node.localPatients.ofNetworkId(networkId),
    memberKey: (orgId) => node.ledger.state.members.get(orgId)?.key,
  });
  const loadResource = async (resourceType: string, id: string, versionId?: string): Promise<GuardedResource | undefined> => {
    try {
      const v = await node.records.readVersion(resourceType, id, versionId);
      return { resource: JSON.parse(new TextDecoder().decode(v.content)), deleted: v.deleted, owner: v.patient };
    } catch (err) {
      if (isHlError(err, 'not-found') || isHlError(err, 'deleted')) return undefined;
      throw err;
    }
  };
  return { server, loadResource };
}

/** What `healthledger client add` registers. */
export interface ClientRegistration {
  dataDir: string;
  clientId: string;
  name?: string;
  /** Space-separated scopes the client may be granted at most. */
  scope: string;
  /** A JWK set file (backend client). */
  jwksFile?: string;
  /** Redirect URIs (public app). */
  redirectUris?: string[];
  /** Another member organization whose node the client is (backend client; its member key when no JWK set). */
  org?: string;
}

/**
 * Registers an OAuth client in `DIR/auth.json`: a backend client (SMART Backend Services) with `jwksFile` or
 * `org`, or a public app with `redirectUris`. `invalid` naming every problem; `conflict` if the id is taken.
 */
export async function addAuthClient(options: ClientRegistration): Promise<AuthClient> {
  const dataDir = resolve(options.dataDir);
  readConfig(dataDir);
  const name = options.name ?? options.clientId;
  let client: AuthClient;
  if (options.redirectUris !== undefined && options.redirectUris.length > 0) {
    if (options.jwksFile !== undefined || options.org !== undefined) throw new HlError('invalid', 'an app client (--redirect-uri) takes no --jwks or --org');
    client = { kind: 'app', clientId: options.clientId, name, redirectUris: options.redirectUris, scope: options.scope };
  } else {
    if (options.jwksFile === undefined && options.org === undefined) throw new HlError('invalid', 'a client needs --jwks FILE or --org ORG (backend) or --redirect-uri URI (app)');
    const jwks = options.jwksFile === undefined ? undefined : readJson<{ keys: [] }>(options.jwksFile, 'JWK set file');
    client = { kind: 'backend', clientId: options.clientId, name, scope: options.scope, ...(jwks ? { jwks } : {}), ...(options.org ? { org: options.org } : {}) };
  }
  await new FileAuthRegistry(join(dataDir, files.auth)).addClient(client);
  return client;
}

/** Adds a staff user to `DIR/auth.json` with an scrypt hash of `password`; `conflict` if the username is taken. */
export async function addStaffUser(options: { dataDir: string; username: string; role: string; practitioner?: string; password: string }): Promise<void> {
  const dataDir = resolve(options.dataDir);
  readConfig(dataDir);
  const password = await hashPassword(options.password);
  await new FileAuthRegistry(join(dataDir, files.auth)).addUser({
    username: options.username,
    role: options.role as StaffRole,
    ...(options.practitioner !== undefined ? { practitioner: options.practitioner } : {}),
    password,
  });
}

/** A patient's base64url signature to sign in at a node (`origin`, e.g. `https://node.example.org`) with `challenge`. */
export function signPatientLogin(key: PatientKey, origin: string, challenge: string): string {
  return toBase64Url(signEd25519(key.privateKey, patientLoginMessage(origin, challenge)));
}

/** One organization of a network started in this process. */
export interface NetworkOrg {
  name: string;
  /** Port its node listens on (0: any free port, found before the genesis names its URL). */
  port?: number;
}

/** A network of several organizations running in this process (the demo, tests). */
export interface LocalNetwork {
  nodes: RunningNode[];
  genesis: TxEnvelope;
  /** Stops node `index` (as a crash would leave its data: nothing is flushed beyond what it acknowledged) and starts it again. */
  restart(index: number, options?: { whileDown?: () => Promise<void> }): Promise<RunningNode>;
  close(): Promise<void>;
}

async function freePort(host: string): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolvePort(port));
    });
  });
}

/**
 * Starts a network of `orgs` in this process: each organization gets a data directory under `dir` (made with
 * `init --join` on first use, reused afterwards), the first founds the network (genesis listing every
 * member with its node URL), and every node serves HTTP on 127.0.0.1. Ordering is one LocalOrderer shared
 * by the nodes (`dir/orderer.sqlite`) unless `orderer` makes one per node (e.g. an EtcdOrderer).
 */
export async function startLocalNetwork(options: {
  dir: string;
  orgs: NetworkOrg[];
  clock?: Clock;
  log?: Logger;
  host?: string;
  origin?: string;
  orderer?: (orgId: string) => Orderer | Promise<Orderer>;
}): Promise<LocalNetwork> {
  const dir = resolve(options.dir);
  const host = options.host ?? '127.0.0.1';
  const clock = options.clock ?? systemClock;
  mkdirSync(dir, { recursive: true });
  const dirs = options.orgs.map((o) => join(dir, orgIdFromName(o.name)));
  const fresh = !existsSync(join(dirs[0]!, files.genesis));
  const ports: number[] = [];
  for (const [i, o] of options.orgs.entries()) {
    if (!existsSync(join(dirs[i]!, files.config))) await initNode({ org: o.name, dataDir: dirs[i]!, clock, join: true });
    ports.push(o.port || (fresh ? await freePort(host) : 0));
  }
  let genesis: TxEnvelope;
  if (fresh) {
    const urls = ports.map((p) => `http://${host}:${p}`);
    genesis = createGenesis({
      dataDir: dirs[0]!,
      origin: options.origin ?? `healthledger.local/demo-${toHex(randomBytes(6))}`,
      url: urls[0]!,
      members: dirs.slice(1).map((d, i) => memberDescriptor(d, urls[i + 1])),
      clock,
    });
    for (const d of dirs) adoptGenesis(d, genesis);
  } else genesis = readGenesis(dirs[0]!);
  const listed = (genesis.body.orgs as OrgDescriptor[]) ?? [];
  const shared = options.orderer ? null : new LocalOrderer({ file: join(dir, 'orderer.sqlite'), proposer: 'local-orderer', clock });
  const nodes: RunningNode[] = [];
  const own: Orderer[] = [];
  const closeAll = async () => {
    for (const n of [...nodes].reverse()) await n.close();
    for (const o of own) await o.close();
    await shared?.close();
  };
  const orderers: Orderer[] = [];
  const start = async (i: number): Promise<RunningNode> => {
    const d = dirs[i]!;
    const config = readConfig(d);
    const url = listed.find((o) => o.id === config.orgId)?.url;
    const port = url ? Number(new URL(url).port) : ports[i]!;
    if (!orderers[i]) {
      orderers[i] = shared ?? (await options.orderer!(config.orgId));
      if (!shared) own.push(orderers[i]!);
    }
    return startNode({ dataDir: d, port, host, clock, ...(options.log ? { log: options.log } : {}), ...(url ? { publicUrl: url } : {}), orderer: orderers[i]! });
  };
  try {
    for (const i of dirs.keys()) nodes.push(await start(i));
  } catch (err) {
    await closeAll();
    throw err;
  }
  return {
    nodes,
    genesis,
    async restart(index, restartOptions = {}) {
      await nodes[index]!.close();
      await restartOptions.whileDown?.();
      nodes[index] = await start(index);
      return nodes[index]!;
    },
    close: closeAll,
  };
}

/**
 * The fork alarm of a stopped node (`healthledger alarm`), cleared when `clear` is set: an operator's
 * decision once the fork is understood (which member signed what, and whose ledger is right).
 * `conflict` while the node runs.
 */
export function nodeForkAlarm(dataDir: string, options: { clear?: boolean } = {}): { message: string; atMs: number } | null {
  const dir = resolve(dataDir);
  const config = readConfig(dir);
  const lock = lockDataDir(dir);
  try {
    const store = openSqliteLedgerStore(join(dir, config.database));
    try {
      const raw = store.getMeta('fork-alarm');
      const alarm = raw === null ? null : (JSON.parse(raw) as { message: string; atMs: number } | null);
      if (options.clear && alarm !== null) store.setMeta('fork-alarm', 'null');
      return alarm;
    } finally {
      store.close();
    }
  } finally {
    lock.release();
  }
}
