/**
 * C2SP signed-note (c2sp.org/signed-note) and tlog-checkpoint (c2sp.org/tlog-checkpoint) and
 * tlog-cosignature/v1 (c2sp.org/tlog-cosignature) in their exact wire formats. Pure: Ed25519 is injected,
 * so the same code runs in the browser verifier (@noble/curves) and the node (node:crypto).
 */
import { HlError, concatBytes, equalBytes, fromBase64, readUint64BE, toBase64, toHex, uint64BE, utf8 } from '../kernel/index.js';
import { ProofVerificationError } from './merkle/errors.js';
import type { Sha256 } from './merkle/hasher.js';

/** Signature type bytes of c2sp.org/signed-note. */
export const SignatureType = { ed25519: 0x01, cosignatureV1: 0x04 } as const;
export type SignatureType = (typeof SignatureType)[keyof typeof SignatureType];

/** Ed25519 verify: true when `sig` signs `message` under the raw 32-byte `publicKey`. */
export type Ed25519Verify = (publicKey: Uint8Array, message: Uint8Array, sig: Uint8Array) => boolean;
/** Ed25519 sign with a private key held by the caller. */
export type Ed25519Sign = (message: Uint8Array) => Uint8Array;

/** One `— name base64(keyId || sig)` line. */
export interface NoteSignature {
  name: string;
  keyId: Uint8Array;
  /** The bytes after the 4-byte key id. */
  signature: Uint8Array;
}

/** A parsed signed note. */
export interface SignedNote {
  /** The note text, including its final newline. */
  text: string;
  signatures: NoteSignature[];
}

/** A checkpoint body (c2sp.org/tlog-checkpoint). */
export interface Checkpoint {
  origin: string;
  treeSize: bigint;
  rootHash: Uint8Array;
  extensions: string[];
}

/** A verifier key: name, algorithm and raw Ed25519 public key. */
export interface NoteVerifierKey {
  name: string;
  type: SignatureType;
  publicKey: Uint8Array;
  keyId: Uint8Array;
}

const maxNoteBytes = 1 << 20;
const maxSignatures = 100;

/** True for a valid signed-note key name: non-empty, no Unicode space, no `+`. */
export function isKeyName(name: string): boolean {
  return name.length > 0 && !/[\s+]/u.test(name) && !/[\u0000-\u001f]/.test(name);
}

/** key ID = SHA-256(name || 0x0A || type || publicKey)[:4]. */
export function noteKeyId(sha256: Sha256, name: string, type: SignatureType, publicKey: Uint8Array): Uint8Array {
  return sha256(concatBytes(utf8(name), Uint8Array.of(0x0a, type), publicKey)).slice(0, 4);
}

/** The vkey string `name+hex(keyId)+base64(type || publicKey)` (c2sp.org/signed-note#verifier-keys). */
export function formatVerifierKey(sha256: Sha256, name: string, type: SignatureType, publicKey: Uint8Array): string {
  if (!isKeyName(name)) throw new HlError('invalid', 'invalid note key name');
  return `${name}+${toHex(noteKeyId(sha256, name, type, publicKey))}+${toBase64(concatBytes(Uint8Array.of(type), publicKey))}`;
}

/** Parses a vkey string; checks the key id matches. */
export function parseVerifierKey(sha256: Sha256, vkey: string): NoteVerifierKey {
  // Split at the first two '+' only: the base64 key material may itself contain '+'.
  const first = vkey.indexOf('+');
  const second = vkey.indexOf('+', first + 1);
  if (first < 0 || second < 0) throw new HlError('invalid', 'verifier key must be name+keyid+key');
  const [name, idHex, keyB64] = [vkey.slice(0, first), vkey.slice(first + 1, second), vkey.slice(second + 1)];
  if (!isKeyName(name) || !/^[0-9a-f]{8}$/.test(idHex)) throw new HlError('invalid', 'malformed verifier key');
  const material = fromBase64(keyB64);
  const type = material[0];
  if ((type !== SignatureType.ed25519 && type !== SignatureType.cosignatureV1) || material.length !== 33) {
    throw new HlError('invalid', 'verifier key is not an Ed25519 note or cosignature key');
  }
  const publicKey = material.slice(1);
  const keyId = noteKeyId(sha256, name, type, publicKey);
  if (toHex(keyId) !== idHex) throw new HlError('invalid', 'verifier key id does not match its key');
  return { name, type, publicKey, keyId };
}

/** Parses a signed note; throws `invalid` naming what is malformed. */
export function parseSignedNote(note: string): SignedNote {
  if (typeof note !== 'string' || note.length > maxNoteBytes) throw new HlError('invalid', 'note missing or too large');
  if (/[\u0000-\u0009\u000b-\u001f]/.test(note)) throw new HlError('invalid', 'note contains control characters');
  const sep = note.lastIndexOf('\n\n');
  if (sep < 0 || !note.endsWith('\n')) throw new HlError('invalid', 'note has no signature block');
  const text = note.slice(0, sep + 1);
  const sigLines = note.slice(sep + 2, -1).split('\n');
  if (sigLines.length > maxSignatures) throw new HlError('invalid', 'note has too many signatures');
  const signatures = sigLines.map((line, i) => {
    const m = /^\u2014 (\S+) ([A-Za-z0-9+/=]+)$/.exec(line);
    if (!m || !isKeyName(m[1]!)) throw new HlError('invalid', `note signature line ${i + 1} is malformed`);
    const raw = fromBase64(m[2]!);
    if (raw.length < 5) throw new HlError('invalid', `note signature line ${i + 1} is too short`);
    return { name: m[1]!, keyId: raw.slice(0, 4), signature: raw.slice(4) };
  });
  return { text, signatures };
}

/** Formats a signed note from its text and signature lines. */
export function formatSignedNote(note: SignedNote): string {
  if (!note.text.endsWith('\n')) throw new HlError('invalid', 'note text must end with a newline');
  const lines = note.signatures.map((s) => `\u2014 ${s.name} ${toBase64(concatBytes(s.keyId, s.signature))}\n`);
  return `${note.text}\n${lines.join('')}`;
}

/** The checkpoint body text: origin, decimal size, base64 root, extension lines, each newline-terminated. */
export function formatCheckpoint(cp: Checkpoint): string {
  if (cp.origin.length === 0 || /[\n]/.test(cp.origin)) throw new HlError('invalid', 'invalid checkpoint origin');
  return [cp.origin, cp.treeSize.toString(10), toBase64(cp.rootHash), ...cp.extensions].map((l) => `${l}\n`).join('');
}

/** Parses checkpoint body text (the note text of a signed checkpoint). */
export function parseCheckpoint(text: string): Checkpoint {
  const lines = text.split('\n');
  if (lines.length < 4 || lines[lines.length - 1] !== '') throw new HlError('invalid', 'checkpoint must have at least three lines');
  const [origin, size, root, ...rest] = lines.slice(0, -1) as [string, string, string, ...string[]];
  if (origin.length === 0) throw new HlError('invalid', 'checkpoint origin is empty');
  if (!/^(0|[1-9][0-9]*)$/.test(size) || BigInt(size) >= 1n << 64n) {
    throw new HlError('invalid', 'checkpoint tree size is not a decimal uint64');
  }
  const rootHash = fromBase64(root);
  if (rootHash.length !== 32) throw new HlError('invalid', 'checkpoint root hash is not 32 bytes');
  if (rest.some((l) => l.length === 0)) throw new HlError('invalid', 'checkpoint has an empty extension line');
  return { origin, treeSize: BigInt(size), rootHash, extensions: rest };
}

/** Signs checkpoint text as a signed note with an Ed25519 note key (type 0x01). */
export function signNoteSignature(
  sha256: Sha256,
  name: string,
  publicKey: Uint8Array,
  sign: Ed25519Sign,
  text: string,
): NoteSignature {
  return { name, keyId: noteKeyId(sha256, name, SignatureType.ed25519, publicKey), signature: sign(utf8(text)) };
}

/** The message a tlog-cosignature/v1 signs: `cosignature/v1\ntime T\n` + checkpoint text. */
export function cosignatureMessage(timestamp: bigint, checkpointText: string): Uint8Array {
  return utf8(`cosignature/v1\ntime ${timestamp.toString(10)}\n${checkpointText}`);
}

/** Makes a tlog-cosignature/v1 line: key id (type 0x04) || timestamp (u64 BE) || Ed25519 signature. */
export function signCosignature(
  sha256: Sha256,
  name: string,
  publicKey: Uint8Array,
  sign: Ed25519Sign,
  checkpointText: string,
  timestamp: bigint,
): NoteSignature {
  return {
    name,
    keyId: noteKeyId(sha256, name, SignatureType.cosignatureV1, publicKey),
    signature: concatBytes(uint64BE(timestamp), sign(cosignatureMessage(timestamp, checkpointText))),
  };
}

/** What verified on a note. */
export interface VerifiedNote {
  text: string;
  /** Names of known keys whose signatures (type 0x01) verified. */
  signers: string[];
  /** Known cosigners (type 0x04) whose cosignatures verified, with their timestamps. */
  cosigners: { name: string; timestamp: bigint }[];
}

/**
 * Verifies a signed note against known keys (c2sp.org/signed-note §Signatures): unknown keys are ignored,
 * a known key whose signature fails rejects the whole note, and at least one known key must verify.
 */
export function verifyNote(verify: Ed25519Verify, note: string, keys: readonly NoteVerifierKey[]): VerifiedNote {
  let parsed: SignedNote;
  try {
    parsed = parseSignedNote(note);
  } catch (err) {
    throw new ProofVerificationError('malformed', err instanceof Error ? err.message : 'malformed note');
  }
  const signers: string[] = [];
  const cosigners: { name: string; timestamp: bigint }[] = [];
  for (const sig of parsed.signatures) {
    const key = keys.find((k) => k.name === sig.name && equalBytes(k.keyId, sig.keyId));
    if (!key) continue;
    if (key.type === SignatureType.ed25519) {
      if (!verify(key.publicKey, utf8(parsed.text), sig.signature)) {
        throw new ProofVerificationError('signature', `signature by ${key.name} does not verify`);
      }
      signers.push(key.name);
    } else {
      if (sig.signature.length !== 8 + 64) {
        throw new ProofVerificationError('signature', `cosignature by ${key.name} has the wrong length`);
      }
      const timestamp = readUint64BE(sig.signature, 0);
      if (timestamp >= 1n << 63n) throw new ProofVerificationError('signature', `cosignature by ${key.name} has a bad time`);
      if (!verify(key.publicKey, cosignatureMessage(timestamp, parsed.text), sig.signature.subarray(8))) {
        throw new ProofVerificationError('signature', `cosignature by ${key.name} does not verify`);
      }
      cosigners.push({ name: key.name, timestamp });
    }
  }
  if (signers.length + cosigners.length === 0) {
    throw new ProofVerificationError('signature', 'no signature from a known key');
  }
  return { text: parsed.text, signers, cosigners };
}
