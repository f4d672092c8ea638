/**
 * The signed transaction envelope (DESIGN.md §3): `{ v: 1, type, body, signer, time, nonce, sig }`, where
 * `sig` is Ed25519 over RFC 8785 JCS of the envelope without `sig`, and the tx id is SHA-256 of those same
 * bytes. The leaf committed to the Merkle tree is JCS of the whole envelope, signature included.
 */
import type { KeyObject } from 'node:crypto';
import { HlError, fromBase64Url, fromUtf8, newNonce, toBase64Url, toHex, utcTimestampMs, type Issue } from '../kernel/index.js';
import { canonicalBytes, canonicalJson, sha256, signEd25519, signEd25519Async } from '../crypto/index.js';

/** Largest accepted tx, in bytes of its canonical form. */
export const maxTxBytes = 64 * 1024;

/** Tx types (DESIGN.md §3). Validation rules exist for those in `contracts.ts`; others are rejected for now. */
export const TxType = {
  networkGenesis: 'network.genesis',
  orgJoin: 'org.join',
  orgUpdate: 'org.update',
  orgLeave: 'org.leave',
  recordCommit: 'record.commit',
  patientRegister: 'patient.register',
  patientLink: 'patient.link',
  consentGrant: 'consent.grant',
  consentRevoke: 'consent.revoke',
  emergencyAccess: 'emergency.access',
  accessLog: 'access.log',
  recordErase: 'record.erase',
} as const;
export type TxType = (typeof TxType)[keyof typeof TxType];

/** Who signed a tx. */
export interface TxSigner {
  kind: 'org' | 'patient';
  id: string;
  keyId: string;
}

/** The signed envelope. `body` is type-specific JSON. */
export interface TxEnvelope {
  v: 1;
  type: string;
  body: Record<string, unknown>;
  signer: TxSigner;
  /** RFC 3339 UTC time the signer made the tx. */
  time: string;
  nonce: string;
  /** base64url Ed25519 signature. */
  sig: string;
}

/** A parsed tx with the bytes that identify and commit it. */
export interface ParsedTx {
  envelope: TxEnvelope;
  /** JCS(envelope): the Merkle leaf input and the stored form. */
  bytes: Uint8Array;
  /** JCS(envelope without sig): what `sig` signs. */
  signedBytes: Uint8Array;
  /** hex SHA-256 of `signedBytes`. */
  id: string;
}

function unsignedOf(envelope: TxEnvelope): Omit<TxEnvelope, 'sig'> {
  const { sig: _sig, ...rest } = envelope;
  return rest;
}

/** What `signTx` and `signTxAsync` take. */
export interface TxInput {
  type: string;
  body: Record<string, unknown>;
  signer: TxSigner;
  time?: string;
  nonce?: string;
}

/** The canonical bytes a new tx's signature covers, with the envelope they come from. */
function toSign(input: TxInput): { unsigned: Omit<TxEnvelope, 'sig'>; signedBytes: Uint8Array } {
  const unsigned = {
    v: 1 as const,
    type: input.type,
    body: input.body,
    signer: input.signer,
    time: input.time ?? new Date().toISOString(),
    nonce: input.nonce ?? newNonce(),
  };
  return { unsigned, signedBytes: canonicalBytes(unsigned) };
}

function signed(unsigned: Omit<TxEnvelope, 'sig'>, signedBytes: Uint8Array, signature: Uint8Array): ParsedTx {
  const envelope: TxEnvelope = { ...unsigned, sig: toBase64Url(signature) };
  return { envelope, bytes: canonicalBytes(envelope), signedBytes, id: toHex(sha256(signedBytes)) };
}

/** Signs a new tx. `time` defaults to now and `nonce` to 128 random bits. */
export function signTx(input: TxInput, privateKey: KeyObject): ParsedTx {
  const { unsigned, signedBytes } = toSign(input);
  return signed(unsigned, signedBytes, signEd25519(privateKey, signedBytes));
}

/** `signTx` with the Ed25519 signature made on libuv's thread pool, off the event loop. */
export async function signTxAsync(input: TxInput, privateKey: KeyObject): Promise<ParsedTx> {
  const { unsigned, signedBytes } = toSign(input);
  return signed(unsigned, signedBytes, await signEd25519Async(privateKey, signedBytes));
}

/** Structural checks of an envelope; collects every issue. */
export function checkEnvelopeShape(value: unknown): Issue[] {
  const issues: Issue[] = [];
  const add = (expression: string, message: string) => issues.push({ code: 'invalid', expression, message });
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    add('$', 'tx must be a JSON object');
    return issues;
  }
  const e = value as Record<string, unknown>;
  const allowed = new Set(['v', 'type', 'body', 'signer', 'time', 'nonce', 'sig']);
  for (const k of Object.keys(e)) if (!allowed.has(k)) add(k, `unknown member "${k}"`);
  if (e.v !== 1) add('v', 'v must be 1');
  if (typeof e.type !== 'string' || !/^[a-z]+(\.[a-z-]+)+$/.test(e.type)) add('type', 'type must be a dotted tx type name');
  if (typeof e.body !== 'object' || e.body === null || Array.isArray(e.body)) add('body', 'body must be a JSON object');
  const s = e.signer as Record<string, unknown> | undefined;
  if (typeof s !== 'object' || s === null || Array.isArray(s)) add('signer', 'signer must be an object');
  else {
    if (s.kind !== 'org' && s.kind !== 'patient') add('signer.kind', 'signer.kind must be "org" or "patient"');
    if (typeof s.id !== 'string' || s.id.length === 0 || s.id.length > 128) add('signer.id', 'signer.id must be a string');
    if (typeof s.keyId !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(s.keyId)) add('signer.keyId', 'signer.keyId must be a JWK thumbprint');
    for (const k of Object.keys(s)) if (!['kind', 'id', 'keyId'].includes(k)) add(`signer.${k}`, `unknown member "${k}"`);
  }
  if (utcTimestampMs(e.time) === null) {
    add('time', 'time must be an RFC 3339 UTC timestamp');
  }
  if (typeof e.nonce !== 'string' || !/^[A-Za-z0-9_-]{16,64}$/.test(e.nonce)) add('nonce', 'nonce must be 16-64 base64url characters');
  if (typeof e.sig !== 'string' || !/^[A-Za-z0-9_-]{86}$/.test(e.sig) || !decodesStrictly(e.sig)) {
    add('sig', 'sig must be a base64url Ed25519 signature');
  }
  return issues;
}

function decodesStrictly(b64url: string): boolean {
  try {
    return fromBase64Url(b64url).length === 64;
  } catch {
    return false;
  }
}

/**
 * Parses tx bytes (any JSON serialization; the canonical form is what is stored and committed). Throws
 * `invalid` with every structural issue; `too-costly` when over `maxTxBytes`.
 */
export function parseTx(input: Uint8Array | string): ParsedTx {
  if (input.length > maxTxBytes * 2) throw new HlError('too-costly', `tx is larger than ${maxTxBytes} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(typeof input === 'string' ? input : fromUtf8(input));
  } catch (cause) {
    throw new HlError('invalid', 'tx is not valid JSON', { cause });
  }
  const issues = checkEnvelopeShape(value);
  if (issues.length > 0) {
    throw new HlError('invalid', `malformed tx: ${issues.map((i) => `${i.expression}: ${i.message}`).join('; ')}`, { issues });
  }
  const envelope = value as TxEnvelope;
  const { bytes, signedBytes } = canonicalForms(envelope);
  if (bytes.length > maxTxBytes) throw new HlError('too-costly', `tx is larger than ${maxTxBytes} bytes`);
  return { envelope, bytes, signedBytes, id: toHex(sha256(signedBytes)) };
}

const textEncoder = new TextEncoder();

/**
 * JCS of the envelope with and without `sig`, canonicalizing the body only once. The top level has a fixed,
 * checked set of members, so it is assembled here in RFC 8785 order (body, nonce, sig, signer, time, type,
 * v); its string values are serialized as JSON.stringify does, which is what RFC 8785 §3.2.2.2 specifies.
 */
function canonicalForms(envelope: TxEnvelope): { bytes: Uint8Array; signedBytes: Uint8Array } {
  let body: string;
  let signer: string;
  try {
    body = canonicalJson(envelope.body);
    signer = canonicalJson(envelope.signer);
  } catch (cause) {
    throw new HlError('invalid', 'tx cannot be canonicalized (RFC 8785)', { cause });
  }
  const head = `{"body":${body},"nonce":${JSON.stringify(envelope.nonce)},`;
  const tail = `"signer":${signer},"time":${JSON.stringify(envelope.time)},"type":${JSON.stringify(envelope.type)},"v":1}`;
  return {
    bytes: textEncoder.encode(`${head}"sig":${JSON.stringify(envelope.sig)},${tail}`),
    signedBytes: textEncoder.encode(head + tail),
  };
}

/** The raw signature bytes of an envelope. */
export function signatureOf(envelope: TxEnvelope): Uint8Array {
  return fromBase64Url(envelope.sig);
}
