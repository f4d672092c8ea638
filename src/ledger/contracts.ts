/**
 * Deterministic validation rules ("contracts") of each tx type, and how a valid tx changes the state.
 * Every node runs these identically on the ordered stream; an invalid tx stays in its block, flagged, and
 * gets no leaf (DESIGN.md §3).
 */
import type { KeyObject } from 'node:crypto';
import { fromBase64Url, isOrgId, toBase32, toBase64Url, utcTimestampMs, type Issue } from '../kernel/index.js';
import { canonicalBytes, ed25519KeyId, importEd25519PublicKey, sha256, signEd25519, verifyEd25519 } from '../crypto/index.js';
import { checkConsentGrantBody, patientIdPattern, purposesOfUse, type ConsentGrantBody } from './consent-policy.js';
import { LedgerState, txMaxAgeMs, txMaxSkewMs, type Member, type RegisteredPatient } from './state.js';
import { TxType, signatureOf, type ParsedTx } from './tx.js';

/** Where a tx sits when it is validated. */
export interface TxContext {
  height: number;
  position: number;
  /** Block time, ms since epoch (from the orderer, so replays decide identically). */
  blockTimeMs: number;
}

/** An organization as listed in genesis and membership txs. */
export interface OrgDescriptor {
  id: string;
  name: string;
  /** base64url raw Ed25519 public key (the JWK `x`). */
  publicKey: string;
  /** Where its node answers other members (FHIR at `${url}/fhir`, node-to-node at `${url}/exchange/v1`). */
  url?: string;
}

/** An http(s) base URL without query, fragment or trailing slash. */
const nodeUrl = /^https?:\/\/[^\s/?#]+(\/[^\s?#]*[^\s?#/])?$/;

/** A member's signature approving a governance proposal. */
export interface Approval {
  orgId: string;
  keyId: string;
  sig: string;
}

const fhirId = /^[A-Za-z0-9\-.]{1,64}$/;
const hex64 = /^[0-9a-f]{64}$/;

function issue(expression: string, message: string, code: Issue['code'] = 'invalid'): Issue {
  return { code, expression, message };
}

function checkOrgDescriptor(value: unknown, at: string, issues: Issue[]): value is OrgDescriptor {
  const before = issues.length;
  if (typeof value !== 'object' || value === null) {
    issues.push(issue(at, 'must be an organization object'));
    return false;
  }
  const o = value as Record<string, unknown>;
  if (typeof o.id !== 'string' || !isOrgId(o.id)) issues.push(issue(`${at}.id`, 'must be an organization id'));
  if (typeof o.name !== 'string' || o.name.length === 0 || o.name.length > 200) issues.push(issue(`${at}.name`, 'must be a name'));
  if (o.url !== undefined && (typeof o.url !== 'string' || o.url.length > 500 || !nodeUrl.test(o.url))) {
    issues.push(issue(`${at}.url`, 'must be an http(s) base URL without a trailing slash'));
  }
  if (typeof o.publicKey !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(o.publicKey)) {
    issues.push(issue(`${at}.publicKey`, 'must be a base64url Ed25519 public key'));
  } else {
    try {
      importEd25519PublicKey(fromBase64Url(o.publicKey));
    } catch {
      issues.push(issue(`${at}.publicKey`, 'is not a valid Ed25519 public key'));
    }
  }
  return issues.length === before;
}

/** Builds a Member from a checked descriptor. */
export function memberFromDescriptor(org: OrgDescriptor): Member {
  const publicKey = fromBase64Url(org.publicKey);
  const key = importEd25519PublicKey(publicKey);
  return { id: org.id, name: org.name, publicKey, keyId: ed25519KeyId(key), key, ...(org.url === undefined ? {} : { url: org.url }) };
}

/** A patient's network id from their raw Ed25519 public key: `pat-` + base32(SHA-256(key))[0..26]. */
export function patientNetworkId(publicKey: Uint8Array): string {
  return `pat-${toBase32(sha256(publicKey)).slice(0, 26)}`;
}

/** Builds a RegisteredPatient from a raw public key; throws on a key that is not Ed25519. */
export function registeredPatient(publicKey: Uint8Array): RegisteredPatient {
  const key = importEd25519PublicKey(publicKey);
  return { id: patientNetworkId(publicKey), publicKey, keyId: ed25519KeyId(key), key };
}

/**
 * The bytes a patient signs to let a custodian link them to its local record: JCS of the network origin,
 * the tx type, the patient, the custodian and the custodian's pseudonym of the record.
 */
export function patientLinkMessage(origin: string, link: { patient: string; custodian: string; pseudonym: string }): Uint8Array {
  return canonicalBytes({ origin, type: TxType.patientLink, patient: link.patient, custodian: link.custodian, pseudonym: link.pseudonym });
}

/** A patient's signature (base64url) approving a link to `custodian`'s record `pseudonym`. */
export function signPatientLink(
  origin: string,
  link: { patient: string; custodian: string; pseudonym: string },
  privateKey: KeyObject,
): string {
  return toBase64Url(signEd25519(privateKey, patientLinkMessage(origin, link)));
}

/** The bytes a governance approval signs: JCS of origin, type and the proposal without approvals. */
export function approvalMessage(origin: string, type: string, proposal: Record<string, unknown>): Uint8Array {
  const { approvals: _a, ...rest } = proposal;
  return canonicalBytes({ origin, type, proposal: rest });
}

/** A member's approval of a governance proposal. */
export function signApproval(
  origin: string,
  type: string,
  proposal: Record<string, unknown>,
  member: { id: string; keyId: string; privateKey: KeyObject },
): Approval {
  return {
    orgId: member.id,
    keyId: member.keyId,
    sig: toBase64Url(signEd25519(member.privateKey, approvalMessage(origin, type, proposal))),
  };
}

function checkApprovals(tx: ParsedTx, state: LedgerState, issues: Issue[]): void {
  const body = tx.envelope.body;
  if (!Array.isArray(body.approvals)) {
    issues.push(issue('body.approvals', 'governance needs approvals from a majority of members'));
    return;
  }
  const message = approvalMessage(state.origin ?? '', tx.envelope.type, body);
  const approved = new Set<string>();
  body.approvals.forEach((a: unknown, i: number) => {
    const ap = a as Partial<Approval>;
    const m = typeof ap?.orgId === 'string' ? state.members.get(ap.orgId) : undefined;
    if (!m || ap.keyId !== m.keyId || typeof ap.sig !== 'string') {
      issues.push(issue(`body.approvals[${i}]`, 'approval is not from a current member key', 'forbidden'));
      return;
    }
    let sig: Uint8Array;
    try {
      sig = fromBase64Url(ap.sig);
    } catch {
      sig = new Uint8Array(0);
    }
    if (!verifyEd25519(m.key, message, sig)) {
      issues.push(issue(`body.approvals[${i}].sig`, `approval signature of ${m.id} does not verify`, 'forbidden'));
      return;
    }
    approved.add(m.id);
  });
  if (approved.size < state.quorum()) {
    issues.push(
      issue('body.approvals', `${approved.size} of ${state.members.size} members approved; ${state.quorum()} needed`, 'forbidden'),
    );
  }
}

function signerMember(tx: ParsedTx, state: LedgerState, issues: Issue[]): Member | undefined {
  const { signer } = tx.envelope;
  if (signer.kind !== 'org') {
    issues.push(issue('signer.kind', `${tx.envelope.type} must be signed by an organization`, 'forbidden'));
    return undefined;
  }
  const m = state.members.get(signer.id);
  if (!m || m.keyId !== signer.keyId) {
    issues.push(issue('signer', 'signer is not a current member key', 'forbidden'));
    return undefined;
  }
  return m;
}

function signerPatient(tx: ParsedTx, state: LedgerState, issues: Issue[]): RegisteredPatient | undefined {
  const { signer } = tx.envelope;
  if (signer.kind !== 'patient') {
    issues.push(issue('signer.kind', `${tx.envelope.type} must be signed by a patient or their proxy`, 'forbidden'));
    return undefined;
  }
  const p = state.patients.get(signer.id);
  if (!p || p.keyId !== signer.keyId) {
    issues.push(issue('signer', 'signer is not a registered patient key', 'forbidden'));
    return undefined;
  }
  return p;
}

/** Checks that the signer of a consent tx may act for `patient`: the patient, or a proxy in force. */
function checkConsentSigner(tx: ParsedTx, patient: unknown, scope: RuleScope, allowProxy: boolean): void {
  const { state, ctx, issues } = scope;
  const signer = signerPatient(tx, state, issues);
  if (signer) checkSignature(tx, signer, scope);
  if (typeof patient !== 'string' || !state.patients.has(patient)) {
    issues.push(issue('body.patient', 'patient is not registered on the ledger', 'not-found'));
    return;
  }
  if (!signer || signer.id === patient) return;
  if (!allowProxy || !state.isProxy(patient, signer.id, ctx.blockTimeMs)) {
    issues.push(issue('signer', allowProxy ? 'signer is neither the patient nor a proxy in force' : 'only the patient may appoint a proxy', 'forbidden'));
  }
}

/**
 * Remembers signatures this node has already verified, keyed by tx id, signature and key id, so a tx checked
 * at admission is not verified again when its block is applied. Only successes are kept; the same
 * (message, signature, key) always verifies the same way, so decisions stay deterministic.
 */
export class VerifiedSignatures {
  private readonly seen = new Set<string>();
  constructor(private readonly capacity = 200_000) {}

  has(key: string): boolean {
    return this.seen.has(key);
  }

  add(key: string): void {
    if (this.seen.size >= this.capacity) {
      const oldest = this.seen.values().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
    this.seen.add(key);
  }

  delete(key: string): void {
    this.seen.delete(key);
  }
}

/** What a rule works with: the state, the tx's position, the issue list and the signature memo. */
interface RuleScope {
  state: LedgerState;
  ctx: TxContext;
  issues: Issue[];
  signatures: VerifiedSignatures | undefined;
}

/**
 * The memo key of "this tx's signature verifies under the key whose RFC 7638 thumbprint is `keyId`". The
 * thumbprint is a hash of the key itself, so the entry names exactly one key.
 */
export function signatureMemoKey(tx: ParsedTx, keyId: string): string {
  return `${tx.id}.${tx.envelope.sig}.${keyId}`;
}

/**
 * The raw public key a tx claims to be signed with, if it can be known before validation: a current member
 * for org signers, or the joining organization's own key for `org.join`. `extraKeys` (by key id) covers
 * keys introduced earlier in the same run that the state does not have yet.
 */
export function claimedSignerKey(
  tx: ParsedTx,
  state: LedgerState,
  extraKeys?: ReadonlyMap<string, Uint8Array>,
): { keyId: string; publicKey: Uint8Array } | undefined {
  const { signer, type, body } = tx.envelope;
  if (signer.kind === 'patient') {
    const patient = state.patients.get(signer.id);
    if (patient && patient.keyId === signer.keyId) return { keyId: patient.keyId, publicKey: patient.publicKey };
    if (type !== TxType.patientRegister || typeof body.publicKey !== 'string') return undefined;
    try {
      const p = registeredPatient(fromBase64Url(body.publicKey));
      return p.keyId === signer.keyId ? { keyId: p.keyId, publicKey: p.publicKey } : undefined;
    } catch {
      return undefined;
    }
  }
  if (signer.kind !== 'org') return undefined;
  const member = state.members.get(signer.id);
  if (member && member.keyId === signer.keyId) return { keyId: member.keyId, publicKey: member.publicKey };
  const extra = extraKeys?.get(signer.keyId);
  if (extra) return { keyId: signer.keyId, publicKey: extra };
  if (type === TxType.orgJoin || type === TxType.networkGenesis) {
    const orgs = type === TxType.orgJoin ? [body.org] : Array.isArray(body.orgs) ? body.orgs : [];
    for (const org of orgs as unknown[]) {
      const errors: Issue[] = [];
      if (!checkOrgDescriptor(org, 'org', errors)) continue;
      const m = memberFromDescriptor(org as OrgDescriptor);
      if (m.keyId === signer.keyId) return { keyId: m.keyId, publicKey: m.publicKey };
    }
  }
  return undefined;
}

/** Public keys (by key id) that a governance or genesis tx introduces. */
export function keysIntroducedBy(tx: ParsedTx): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  const { type, body } = tx.envelope;
  const orgs =
    type === TxType.networkGenesis && Array.isArray(body.orgs)
      ? (body.orgs as unknown[])
      : type === TxType.orgJoin || type === TxType.orgUpdate
        ? [body.org]
        : [];
  for (const org of orgs) {
    if (!checkOrgDescriptor(org, 'org', [])) continue;
    const m = memberFromDescriptor(org as OrgDescriptor);
    out.set(m.keyId, m.publicKey);
  }
  return out;
}

function checkSignature(tx: ParsedTx, signer: { key: KeyObject; keyId: string }, scope: RuleScope): void {
  const memo = signatureMemoKey(tx, signer.keyId);
  if (scope.signatures?.has(memo)) return;
  if (!verifyEd25519(signer.key, tx.signedBytes, signatureOf(tx.envelope))) {
    scope.issues.push(issue('sig', 'signature does not verify with the signer key', 'forbidden'));
    return;
  }
  scope.signatures?.add(memo);
}

type Rule = (tx: ParsedTx, scope: RuleScope) => void;

const rules: Record<string, Rule> = {
  [TxType.networkGenesis](tx, scope) {
    const { state, ctx, issues } = scope;
    const body = tx.envelope.body;
    if (state.origin !== null || ctx.height !== 0 || ctx.position !== 0) {
      issues.push(issue('type', 'genesis is only valid as the first tx of block 0', 'conflict'));
      return;
    }
    if (typeof body.origin !== 'string' || !/^[\x21-\x7e]{1,200}$/.test(body.origin)) {
      issues.push(issue('body.origin', 'origin must be printable ASCII without spaces'));
    }
    if (!Array.isArray(body.orgs) || body.orgs.length === 0) {
      issues.push(issue('body.orgs', 'genesis must list at least one organization'));
      return;
    }
    const orgs = body.orgs as unknown[];
    const ok = orgs.every((o, i) => checkOrgDescriptor(o, `body.orgs[${i}]`, issues));
    if (!ok) return;
    const ids = new Set((orgs as OrgDescriptor[]).map((o) => o.id));
    if (ids.size !== orgs.length) issues.push(issue('body.orgs', 'organization ids must be unique'));
    const founder = (orgs as OrgDescriptor[]).find((o) => o.id === tx.envelope.signer.id);
    if (!founder || tx.envelope.signer.kind !== 'org') {
      issues.push(issue('signer', 'genesis must be signed by a founding organization', 'forbidden'));
      return;
    }
    const m = memberFromDescriptor(founder);
    if (m.keyId !== tx.envelope.signer.keyId) issues.push(issue('signer.keyId', 'signer key id is not the founder key', 'forbidden'));
    else checkSignature(tx, m, scope);
  },

  [TxType.orgJoin](tx, scope) {
    const { state, issues } = scope;
    const body = tx.envelope.body;
    if (!checkOrgDescriptor(body.org, 'body.org', issues)) return;
    const org = body.org as OrgDescriptor;
    if (state.members.has(org.id)) issues.push(issue('body.org.id', 'organization is already a member', 'conflict'));
    const joining = memberFromDescriptor(org);
    const { signer } = tx.envelope;
    if (signer.kind !== 'org' || signer.id !== org.id || signer.keyId !== joining.keyId) {
      issues.push(issue('signer', 'org.join must be signed by the joining organization', 'forbidden'));
    } else checkSignature(tx, joining, scope);
    checkApprovals(tx, state, issues);
  },

  [TxType.orgUpdate](tx, scope) {
    const { state, issues } = scope;
    const body = tx.envelope.body;
    const signer = signerMember(tx, state, issues);
    if (signer) checkSignature(tx, signer, scope);
    if (!checkOrgDescriptor(body.org, 'body.org', issues)) return;
    if (!state.members.has((body.org as OrgDescriptor).id)) issues.push(issue('body.org.id', 'organization is not a member', 'not-found'));
    checkApprovals(tx, state, issues);
  },

  [TxType.orgLeave](tx, scope) {
    const { state, issues } = scope;
    const body = tx.envelope.body;
    const signer = signerMember(tx, state, issues);
    if (signer) checkSignature(tx, signer, scope);
    if (typeof body.orgId !== 'string' || !state.members.has(body.orgId)) {
      issues.push(issue('body.orgId', 'organization is not a member', 'not-found'));
      return;
    }
    if (state.members.size === 1) issues.push(issue('body.orgId', 'the last member cannot leave', 'conflict'));
    checkApprovals(tx, state, issues);
  },

  [TxType.recordCommit](tx, scope) {
    const { state, issues } = scope;
    const body = tx.envelope.body;
    const signer = signerMember(tx, state, issues);
    if (signer) checkSignature(tx, signer, scope);
    // A pseudonymous patient id, absent for resources outside any patient compartment.
    if (body.patient !== undefined && (typeof body.patient !== 'string' || !fhirId.test(body.patient))) {
      issues.push(issue('body.patient', 'must be a pseudonymous patient id'));
    }
    if (body.versions === undefined) {
      checkVersionCommitment(body, 'body', ['patient', ...versionMembers], issues);
      return;
    }
    for (const k of Object.keys(body)) if (k !== 'patient' && k !== 'versions') issues.push(issue(`body.${k}`, `unknown member "${k}"`));
    const versions = body.versions;
    if (!Array.isArray(versions) || versions.length === 0 || versions.length > maxCommitVersions) {
      issues.push(issue('body.versions', `must be a list of 1 to ${maxCommitVersions} version commitments`));
      return;
    }
    const seen = new Set<string>();
    versions.forEach((v: unknown, i) => {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        issues.push(issue(`body.versions[${i}]`, 'must be an object'));
        return;
      }
      const entry = v as Record<string, unknown>;
      checkVersionCommitment(entry, `body.versions[${i}]`, versionMembers, issues);
      const key = `${String(entry.resourceType)}/${String(entry.id)}/${String(entry.versionId)}`;
      if (seen.has(key)) issues.push(issue(`body.versions[${i}]`, 'commits a version already committed by this tx'));
      seen.add(key);
    });
  },

  [TxType.patientRegister](tx, scope) {
    const { state, issues } = scope;
    const body = tx.envelope.body;
    for (const k of Object.keys(body)) if (k !== 'publicKey') issues.push(issue(`body.${k}`, `unknown member "${k}"`));
    if (typeof body.publicKey !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(body.publicKey)) {
      issues.push(issue('body.publicKey', 'must be a base64url Ed25519 public key'));
      return;
    }
    let patient: RegisteredPatient;
    try {
      patient = registeredPatient(fromBase64Url(body.publicKey));
    } catch {
      issues.push(issue('body.publicKey', 'is not a valid Ed25519 public key'));
      return;
    }
    const { signer } = tx.envelope;
    if (signer.kind !== 'patient' || signer.id !== patient.id || signer.keyId !== patient.keyId) {
      issues.push(issue('signer', 'patient.register must be signed by the key it registers, under its network id', 'forbidden'));
      return;
    }
    checkSignature(tx, patient, scope);
    if (state.patients.has(patient.id)) issues.push(issue('body.publicKey', 'patient is already registered', 'conflict'));
  },

  [TxType.patientLink](tx, scope) {
    const { state, issues } = scope;
    const body = tx.envelope.body;
    for (const k of Object.keys(body)) if (!['patient', 'pseudonym', 'patientSig'].includes(k)) issues.push(issue(`body.${k}`, `unknown member "${k}"`));
    const custodian = signerMember(tx, state, issues);
    if (custodian) checkSignature(tx, custodian, scope);
    if (typeof body.pseudonym !== 'string' || !fhirId.test(body.pseudonym)) issues.push(issue('body.pseudonym', 'must be a record pseudonym'));
    const patient = typeof body.patient === 'string' ? state.patients.get(body.patient) : undefined;
    if (!patient) {
      issues.push(issue('body.patient', 'patient is not registered on the ledger', 'not-found'));
      return;
    }
    if (!custodian || typeof body.pseudonym !== 'string') return;
    if (state.patientOfPseudonym(custodian.id, body.pseudonym) !== undefined) {
      issues.push(issue('body.pseudonym', 'this record is already linked to a patient', 'conflict'));
    }
    let sig: Uint8Array;
    try {
      sig = typeof body.patientSig === 'string' ? fromBase64Url(body.patientSig) : new Uint8Array(0);
    } catch {
      sig = new Uint8Array(0);
    }
    const message = patientLinkMessage(state.origin ?? '', { patient: patient.id, custodian: custodian.id, pseudonym: body.pseudonym });
    if (!verifyEd25519(patient.key, message, sig)) issues.push(issue('body.patientSig', 'the patient\'s signature of the link does not verify', 'forbidden'));
  },

  [TxType.consentGrant](tx, scope) {
    const body = tx.envelope.body;
    if (!checkConsentGrantBody(body, scope.issues)) return;
    checkConsentSigner(tx, body.patient, scope, body.proxy !== true);
  },

  [TxType.consentRevoke](tx, scope) {
    const { state, issues } = scope;
    const body = tx.envelope.body;
    for (const k of Object.keys(body)) if (k !== 'patient' && k !== 'consent') issues.push(issue(`body.${k}`, `unknown member "${k}"`));
    if (typeof body.patient !== 'string' || !patientIdPattern.test(body.patient)) {
      issues.push(issue('body.patient', 'must be a patient network id'));
      return;
    }
    checkConsentSigner(tx, body.patient, scope, true);
    const consent = typeof body.consent === 'string' && hex64.test(body.consent) ? state.consents.get(body.consent) : undefined;
    if (!consent || consent.patient !== body.patient) {
      issues.push(issue('body.consent', 'no consent with this id for this patient', 'not-found'));
      return;
    }
    if (consent.revokedAtMs !== null) issues.push(issue('body.consent', 'consent is already revoked', 'conflict'));
  },

  [TxType.emergencyAccess](tx, scope) {
    const { ctx, issues } = scope;
    const body = tx.envelope.body;
    const signer = signerMember(tx, scope.state, issues);
    if (signer) checkSignature(tx, signer, scope);
    for (const k of Object.keys(body)) {
      if (!['patient', 'org', 'practitioner', 'reason', 'start', 'end'].includes(k)) issues.push(issue(`body.${k}`, `unknown member "${k}"`));
    }
    // The organization whose staff broke the glass: the signer, or (a custodian recording a request it
    // served) the requesting member.
    if (body.org !== undefined && (typeof body.org !== 'string' || !scope.state.members.has(body.org))) {
      issues.push(issue('body.org', 'must be a member organization', 'not-found'));
    }
    if (typeof body.patient !== 'string' || !isPatientRef(body.patient)) issues.push(issue('body.patient', 'must be a patient network id or record pseudonym'));
    if (body.practitioner !== undefined && (typeof body.practitioner !== 'string' || !fhirId.test(body.practitioner))) {
      issues.push(issue('body.practitioner', 'must be a pseudonymous practitioner id'));
    }
    if (typeof body.reason !== 'string' || !hex64.test(body.reason)) issues.push(issue('body.reason', 'must be the hex salted commitment of the written reason'));
    const start = utcTimestampMs(body.start);
    const end = utcTimestampMs(body.end);
    if (start === null) issues.push(issue('body.start', 'must be an RFC 3339 UTC timestamp'));
    if (end === null) issues.push(issue('body.end', 'must be an RFC 3339 UTC timestamp'));
    if (start === null || end === null) return;
    if (end <= start || end - start > maxEmergencyMs) issues.push(issue('body.end', `must be after start, at most ${maxEmergencyMs / 3_600_000} h later`));
    if (start > ctx.blockTimeMs + txMaxSkewMs) issues.push(issue('body.start', 'must not be in the future of its block'));
  },

  [TxType.recordErase](tx, scope) {
    const { issues } = scope;
    const body = tx.envelope.body;
    const signer = signerMember(tx, scope.state, issues);
    if (signer) checkSignature(tx, signer, scope);
    for (const k of Object.keys(body)) if (!['patient', 'versionsErased', 'at'].includes(k)) issues.push(issue(`body.${k}`, `unknown member "${k}"`));
    if (typeof body.patient !== 'string' || !pseudonymPattern.test(body.patient)) issues.push(issue('body.patient', "must be the custodian's record pseudonym of the patient"));
    if (!Number.isSafeInteger(body.versionsErased) || (body.versionsErased as number) < 0) issues.push(issue('body.versionsErased', 'must be a non-negative integer'));
    if (utcTimestampMs(body.at) === null) issues.push(issue('body.at', 'must be an RFC 3339 UTC timestamp'));
  },

  [TxType.accessLog](tx, scope) {
    const { issues } = scope;
    const body = tx.envelope.body;
    const signer = signerMember(tx, scope.state, issues);
    if (signer) checkSignature(tx, signer, scope);
    for (const k of Object.keys(body)) if (k !== 'entries') issues.push(issue(`body.${k}`, `unknown member "${k}"`));
    const entries = body.entries;
    if (!Array.isArray(entries) || entries.length === 0 || entries.length > maxAccessEntries) {
      issues.push(issue('body.entries', `must be a list of 1 to ${maxAccessEntries} access entries`));
      return;
    }
    entries.forEach((e: unknown, i) => checkAccessEntry(e, `body.entries[${i}]`, issues));
  },
};

/** The members of one version's commitment in a `record.commit` tx. */
const versionMembers = ['resourceType', 'id', 'versionId', 'commitment', 'labels'];

/**
 * Versions one `record.commit` may carry: a transaction's versions of one patient share one signed tx (and
 * one leaf), so ingest pays one signature per patient and batch rather than per resource. 250 typical
 * version commitments (~170 bytes each) stay well inside `maxTxBytes`.
 */
export const maxCommitVersions = 250;

/** Checks one version's commitment (`resourceType`, `id`, `versionId`, `commitment`, `labels`) at `at`. */
function checkVersionCommitment(v: Record<string, unknown>, at: string, allowed: readonly string[], issues: Issue[]): void {
  for (const k of ['resourceType', 'id', 'versionId'] as const) {
    if (typeof v[k] !== 'string' || !fhirId.test(v[k] as string)) issues.push(issue(`${at}.${k}`, 'must be an id'));
  }
  if (typeof v.commitment !== 'string' || !hex64.test(v.commitment)) {
    issues.push(issue(`${at}.commitment`, 'must be a hex SHA-256 commitment'));
  }
  if (v.labels !== undefined && (!Array.isArray(v.labels) || !v.labels.every((l) => typeof l === 'string' && fhirId.test(l)))) {
    issues.push(issue(`${at}.labels`, 'must be a list of security label codes'));
  }
  for (const k of Object.keys(v)) if (!allowed.includes(k)) issues.push(issue(`${at}.${k}`, `unknown member "${k}"`));
}

/** Longest break-glass access one `emergency.access` may open (DESIGN.md §6 default is 24 h). */
export const maxEmergencyMs = 72 * 60 * 60 * 1000;

/** Access entries one `access.log` may carry. */
export const maxAccessEntries = 128;

/** What an access entry may say was done. */
export const accessActions = ['read', 'vread', 'search', 'history', 'create', 'update', 'delete', 'export', 'everything', 'proof', 'erase'] as const;

const pseudonymPattern = /^psn-[0-9a-f]{32}$/;

/** A patient as the ledger may name them: their network id, or a custodian's record pseudonym. */
function isPatientRef(value: string): boolean {
  return patientIdPattern.test(value) || pseudonymPattern.test(value);
}

/**
 * One access entry (DESIGN.md §7), pseudonymous ids only: when, whose data (network id or record
 * pseudonym), who asked (organization and a pseudonymous user), why (purpose of use), what was done, with
 * what outcome, the resource types and count involved, and the salted commitment of the node's AuditEvent.
 */
function checkAccessEntry(value: unknown, at: string, issues: Issue[]): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    issues.push(issue(at, 'must be an access entry object'));
    return;
  }
  const e = value as Record<string, unknown>;
  for (const k of Object.keys(e)) {
    if (!['at', 'patient', 'org', 'user', 'purpose', 'action', 'outcome', 'classes', 'count', 'emergency', 'event'].includes(k)) {
      issues.push(issue(`${at}.${k}`, `unknown member "${k}"`));
    }
  }
  if (utcTimestampMs(e.at) === null) issues.push(issue(`${at}.at`, 'must be an RFC 3339 UTC timestamp'));
  if (e.patient !== undefined && (typeof e.patient !== 'string' || !isPatientRef(e.patient))) {
    issues.push(issue(`${at}.patient`, 'must be a patient network id or record pseudonym'));
  }
  if (typeof e.org !== 'string' || !isOrgId(e.org)) issues.push(issue(`${at}.org`, 'must be an organization id'));
  if (e.user !== undefined && (typeof e.user !== 'string' || !fhirId.test(e.user))) issues.push(issue(`${at}.user`, 'must be a pseudonymous user id'));
  if (typeof e.purpose !== 'string' || !(purposesOfUse as readonly string[]).includes(e.purpose)) {
    issues.push(issue(`${at}.purpose`, `must be one of ${purposesOfUse.join(', ')}`));
  }
  if (typeof e.action !== 'string' || !(accessActions as readonly string[]).includes(e.action)) {
    issues.push(issue(`${at}.action`, `must be one of ${accessActions.join(', ')}`));
  }
  if (e.outcome !== 'permit' && e.outcome !== 'deny') issues.push(issue(`${at}.outcome`, 'must be "permit" or "deny"'));
  if (e.classes !== undefined && (!Array.isArray(e.classes) || e.classes.length > 64 || !e.classes.every((c) => typeof c === 'string' && /^[A-Z][A-Za-z]{1,63}$/.test(c)))) {
    issues.push(issue(`${at}.classes`, 'must be a list of FHIR resource types'));
  }
  if (e.count !== undefined && (!Number.isSafeInteger(e.count) || (e.count as number) < 0)) issues.push(issue(`${at}.count`, 'must be a non-negative integer'));
  if (e.emergency !== undefined && (typeof e.emergency !== 'string' || !hex64.test(e.emergency))) {
    issues.push(issue(`${at}.emergency`, 'must be the id of an emergency.access tx'));
  }
  if (e.event !== undefined && (typeof e.event !== 'string' || !hex64.test(e.event))) issues.push(issue(`${at}.event`, 'must be a hex SHA-256 commitment'));
}

/** True when the ledger has validation rules for `type`. */
export function isKnownTxType(type: string): boolean {
  return Object.hasOwn(rules, type);
}

/**
 * Validates a tx against the state at its position; returns every issue (empty = valid). Pure apart from
 * signature verification: same inputs, same verdict, on every node. `signatures` (optional) skips signatures
 * this node already verified; the audit passes none, so it re-verifies everything.
 */
export function validateTx(tx: ParsedTx, state: LedgerState, ctx: TxContext, signatures?: VerifiedSignatures): Issue[] {
  const issues: Issue[] = [];
  const rule = rules[tx.envelope.type];
  if (!rule) return [issue('type', `unknown tx type "${tx.envelope.type}"`, 'not-found')];
  if (tx.envelope.type !== TxType.networkGenesis && state.origin === null) {
    return [issue('type', 'the ledger has no genesis yet', 'conflict')];
  }
  const t = Date.parse(tx.envelope.time);
  if (t > ctx.blockTimeMs + txMaxSkewMs) issues.push(issue('time', 'tx time is in the future of its block'));
  // A genesis is made offline, before any node runs: only its place (block 0, first) limits it.
  if (t < ctx.blockTimeMs - txMaxAgeMs && tx.envelope.type !== TxType.networkGenesis) issues.push(issue('time', 'tx is too old to be included'));
  if (state.hasSeen(tx.id)) issues.push(issue('$', 'duplicate tx (replay)', 'conflict'));
  rule(tx, { state, ctx, issues, signatures });
  return issues;
}

/** Applies a valid tx to the state. MUST only be called after `validateTx` returned no issue. */
export function applyTx(tx: ParsedTx, state: LedgerState): void {
  const body = tx.envelope.body;
  state.markSeen(tx.id, Date.parse(tx.envelope.time));
  switch (tx.envelope.type) {
    case TxType.networkGenesis:
      state.origin = body.origin as string;
      for (const org of body.orgs as OrgDescriptor[]) state.members.set(org.id, memberFromDescriptor(org));
      break;
    case TxType.orgJoin:
    case TxType.orgUpdate: {
      const org = body.org as OrgDescriptor;
      state.members.set(org.id, memberFromDescriptor(org));
      break;
    }
    case TxType.orgLeave:
      state.members.delete(body.orgId as string);
      break;
    case TxType.patientRegister: {
      const patient = registeredPatient(fromBase64Url(body.publicKey as string));
      state.patients.set(patient.id, patient);
      break;
    }
    case TxType.patientLink:
      state.addLink({ patient: body.patient as string, custodian: tx.envelope.signer.id, pseudonym: body.pseudonym as string, txId: tx.id });
      break;
    case TxType.consentGrant:
      state.addConsent({
        id: tx.id,
        patient: body.patient as string,
        body: body as unknown as ConsentGrantBody,
        grantedBy: tx.envelope.signer.id,
        grantedAtMs: Date.parse(tx.envelope.time),
        revokedAtMs: null,
        revokedBy: null,
      });
      break;
    case TxType.emergencyAccess:
      state.addEmergency({
        id: tx.id,
        patient: body.patient as string,
        org: (body.org as string | undefined) ?? tx.envelope.signer.id,
        custodian: tx.envelope.signer.id,
        practitioner: (body.practitioner as string | undefined) ?? null,
        startMs: Date.parse(body.start as string),
        endMs: Date.parse(body.end as string),
      });
      break;
    case TxType.consentRevoke: {
      const consent = state.consents.get(body.consent as string)!;
      consent.revokedAtMs = Date.parse(tx.envelope.time);
      consent.revokedBy = tx.envelope.signer.id;
      break;
    }
    default:
      break;
  }
}
