/**
 * The node-to-node protocol at `/exchange/v1` (DESIGN.md §8). A requester asks a custodian for everything
 * it may see of a patient (`POST /exchange/v1/everything`, bearer token from the custodian's SMART token
 * endpoint, signed in with the requester's member key); the custodian answers with each version's exact
 * committed bytes, salt, ledger leaf and inclusion proof against one final checkpoint, so the requester
 * verifies every entry without trusting the custodian. Checkpoints are gossiped at
 * `POST /exchange/v1/checkpoint` (a signed note; the answer is the note with the receiver's cosignature).
 */
import { HlError } from '../kernel/index.js';
import { patientIdPattern, purposesOfUse, type PurposeOfUse } from '../ledger/index.js';

/** What a requester asks a custodian for. */
export interface EverythingRequest {
  /** The patient's network id. */
  patient: string;
  purpose: PurposeOfUse;
  /** A break-glass reason (purpose ETREAT). */
  reason?: string;
  /** The requester's acting practitioner (the requesting organization vouches for it). */
  practitioner?: string;
  /** The practitioner's staff roles at the requesting organization (consents may permit or deny by role). */
  roles?: string[];
  /**
   * Set when an app or system client of the requesting organization asks rather than its staff: the
   * client id. The custodian judges it as an app (no break-glass, no practitioner or role permits).
   */
  app?: string;
  /** The requester's ledger size: the custodian waits (bounded) until it has applied as much. */
  minTreeSize: number;
}

/** One version as a custodian sends it. */
export interface PackagedVersion {
  /** base64 of the exact committed bytes (RFC 8785 JSON of the version, meta included). */
  content: string;
  salt: string;
  /** The leaf that commits it (one of the package's `leaves`). */
  leafIndex: number;
}

/** A ledger leaf (a `record.commit` tx, which may commit many versions) with its inclusion proof. */
export interface PackagedLeaf {
  leafIndex: number;
  /** base64 of the leaf bytes. */
  leaf: string;
  proof: string[];
}

/** A custodian's answer. */
export interface EverythingPackage {
  custodian: string;
  /** The final checkpoint every proof verifies against, with the members' signatures. */
  checkpoint: string;
  treeSize: number;
  /** The custodian's ledger pseudonym of the patient's record (as its `record.commit` txs name it). */
  pseudonym: string;
  leaves: PackagedLeaf[];
  entries: PackagedVersion[];
}

const practitionerPattern = /^[A-Za-z0-9\-.]{1,64}$/;
const rolePattern = /^[a-z][a-z0-9-]{0,31}$/;
const appPattern = /^[A-Za-z0-9._-]{1,64}$/;

/** Checks a request body; `invalid` naming the first problem. */
export function parseEverythingRequest(body: unknown): EverythingRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HlError('invalid', 'the request body must be a JSON object');
  const b = body as Record<string, unknown>;
  if (typeof b.patient !== 'string' || !patientIdPattern.test(b.patient)) throw new HlError('invalid', 'patient must be a patient network id');
  if (typeof b.purpose !== 'string' || !(purposesOfUse as readonly string[]).includes(b.purpose)) {
    throw new HlError('invalid', `purpose must be one of ${purposesOfUse.join(', ')}`);
  }
  if (b.reason !== undefined && (typeof b.reason !== 'string' || b.reason.length === 0 || b.reason.length > 1000)) {
    throw new HlError('invalid', 'reason must be text of 1 to 1000 characters');
  }
  if (b.practitioner !== undefined && (typeof b.practitioner !== 'string' || !practitionerPattern.test(b.practitioner))) {
    throw new HlError('invalid', 'practitioner must be a FHIR id');
  }
  if (b.roles !== undefined && (!Array.isArray(b.roles) || b.roles.length > 16 || b.roles.some((r) => typeof r !== 'string' || !rolePattern.test(r)))) {
    throw new HlError('invalid', 'roles must be a list of at most 16 role codes');
  }
  if (b.app !== undefined && (typeof b.app !== 'string' || !appPattern.test(b.app))) throw new HlError('invalid', 'app must be a client id');
  if (!Number.isSafeInteger(b.minTreeSize) || (b.minTreeSize as number) < 0) throw new HlError('invalid', 'minTreeSize must be a non-negative integer');
  return {
    patient: b.patient,
    purpose: b.purpose as PurposeOfUse,
    ...(b.reason === undefined ? {} : { reason: b.reason as string }),
    ...(b.practitioner === undefined ? {} : { practitioner: b.practitioner as string }),
    ...(b.roles === undefined ? {} : { roles: [...(b.roles as string[])] }),
    ...(b.app === undefined ? {} : { app: b.app as string }),
    minTreeSize: b.minTreeSize as number,
  };
}

const b64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Checks the shape of a custodian's answer (not its truth: see `verifyPackage`); `invalid` naming the problem. */
export function parseEverythingPackage(body: unknown): EverythingPackage {
  const fail = (what: string): never => {
    throw new HlError('invalid', `the custodian's answer is malformed: ${what}`);
  };
  if (typeof body !== 'object' || body === null) fail('not an object');
  const b = body as Record<string, unknown>;
  if (typeof b.custodian !== 'string') fail('custodian');
  if (typeof b.checkpoint !== 'string' || b.checkpoint.length > 1 << 16) fail('checkpoint');
  if (!Number.isSafeInteger(b.treeSize) || (b.treeSize as number) < 1) fail('treeSize');
  if (typeof b.pseudonym !== 'string') fail('pseudonym');
  if (!Array.isArray(b.leaves) || b.leaves.length > 100_000) fail('leaves');
  (b.leaves as unknown[]).forEach((e, i) => {
    if (typeof e !== 'object' || e === null) fail(`leaves[${i}]`);
    const x = e as Record<string, unknown>;
    if (typeof x.leaf !== 'string' || !b64.test(x.leaf)) fail(`leaves[${i}].leaf`);
    if (!Number.isSafeInteger(x.leafIndex) || (x.leafIndex as number) < 0) fail(`leaves[${i}].leafIndex`);
    if (!Array.isArray(x.proof) || x.proof.length > 64 || x.proof.some((p) => typeof p !== 'string' || !b64.test(p))) fail(`leaves[${i}].proof`);
  });
  if (!Array.isArray(b.entries) || b.entries.length > 1_000_000) fail('entries');
  (b.entries as unknown[]).forEach((e, i) => {
    if (typeof e !== 'object' || e === null) fail(`entries[${i}]`);
    const x = e as Record<string, unknown>;
    for (const k of ['content', 'salt'] as const) if (typeof x[k] !== 'string' || !b64.test(x[k] as string)) fail(`entries[${i}].${k}`);
    if (!Number.isSafeInteger(x.leafIndex) || (x.leafIndex as number) < 0) fail(`entries[${i}].leafIndex`);
  });
  return b as unknown as EverythingPackage;
}

/** Base64 on the wire, through Node's native codec (answers carry hundreds of kilobytes). */
export function wireBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

/** Decodes wire base64 (its alphabet was checked by the parser; everything is then checked on the bytes). */
export function fromWireBase64(text: string): Uint8Array {
  return Buffer.from(text, 'base64');
}

/** Packs a version for the wire. */
export function packVersion(content: Uint8Array, v: { leafIndex: number; salt: Uint8Array }): PackagedVersion {
  return { content: wireBase64(content), salt: wireBase64(v.salt), leafIndex: v.leafIndex };
}

/** Packs a leaf and its inclusion proof for the wire. */
export function packLeaf(l: { leafIndex: number; leaf: Uint8Array; proof: Uint8Array[] }): PackagedLeaf {
  return { leafIndex: l.leafIndex, leaf: wireBase64(l.leaf), proof: l.proof.map(wireBase64) };
}
