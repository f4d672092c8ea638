/**
 * Cosigned checkpoints (DESIGN.md §1, §3): every member node computes the same checkpoint text for a tree
 * size (origin, size, root) and signs it with its C2SP note key; the signatures of several members on one
 * text are merged into one signed note. A checkpoint signed by a majority of the members is final.
 * Members sign with plain signed-note Ed25519 signatures (type 0x01), which anyone verifies with the keys
 * `/ledger/members` serves; a tlog-cosignature/v1 (type 0x04) by a member counts too.
 */
import { HlError, equalBytes, toHex } from '../kernel/index.js';
import { importEd25519PublicKey, sha256, verifyEd25519 } from '../crypto/index.js';
import { ProofVerificationError } from './merkle/errors.js';
import { SignatureType, formatSignedNote, noteKeyId, parseCheckpoint, parseSignedNote, verifyNote, type Checkpoint, type NoteVerifierKey } from './note.js';
import type { Member } from './state.js';

/** Ed25519 verify on raw keys with node:crypto (for notes). */
export function nodeEd25519Verify(publicKey: Uint8Array, message: Uint8Array, sig: Uint8Array): boolean {
  try {
    return verifyEd25519(importEd25519PublicKey(publicKey), message, sig);
  } catch {
    return false;
  }
}

/** Each member's note verifier keys: its signature key (0x01) and its cosignature key (0x04). */
export function memberNoteKeys(members: Iterable<Member>): NoteVerifierKey[] {
  const keys: NoteVerifierKey[] = [];
  for (const m of members) {
    for (const type of [SignatureType.ed25519, SignatureType.cosignatureV1]) {
      keys.push({ name: m.id, type, publicKey: m.publicKey, keyId: noteKeyId(sha256, m.id, type, m.publicKey) });
    }
  }
  return keys;
}

/** A checkpoint whose member signatures verified. */
export interface SignedCheckpoint extends Checkpoint {
  /** The note with only the verified member signatures, one per member, in member-id order. */
  note: string;
  text: string;
  /** Ids of the members whose signature verified. */
  signers: string[];
}

/**
 * Verifies a signed checkpoint against the members' keys and keeps only their signatures (one per
 * member). `forbidden` when no member signed it or a member's signature fails; `invalid` when it is not
 * a checkpoint.
 */
export function verifyMemberCheckpoint(note: string, keys: readonly NoteVerifierKey[]): SignedCheckpoint {
  let text: string;
  try {
    text = verifyNote(nodeEd25519Verify, note, keys).text;
  } catch (err) {
    if (err instanceof ProofVerificationError && err.failure === 'malformed') throw new HlError('invalid', err.message);
    throw new HlError('forbidden', `checkpoint signatures: ${(err as Error).message}`);
  }
  const checkpoint = parseCheckpoint(text);
  const kept = new Map<string, ReturnType<typeof parseSignedNote>['signatures'][number]>();
  for (const sig of parseSignedNote(note).signatures) {
    if (kept.has(sig.name)) continue;
    if (keys.some((k) => k.name === sig.name && equalBytes(k.keyId, sig.keyId))) kept.set(sig.name, sig);
  }
  const signers = [...kept.keys()].sort();
  return { ...checkpoint, text, signers, note: formatSignedNote({ text, signatures: signers.map((s) => kept.get(s)!) }) };
}

/** Merges the member signatures of two verified notes over the same checkpoint text. */
export function mergeCheckpoints(a: SignedCheckpoint, b: SignedCheckpoint): SignedCheckpoint {
  if (a.text !== b.text) {
    throw new HlError('fork', `two different checkpoints for tree size ${a.treeSize}: roots ${toHex(a.rootHash)} and ${toHex(b.rootHash)}`);
  }
  const byName = new Map<string, ReturnType<typeof parseSignedNote>['signatures'][number]>();
  for (const note of [a.note, b.note]) for (const sig of parseSignedNote(note).signatures) if (!byName.has(sig.name)) byName.set(sig.name, sig);
  const signers = [...byName.keys()].sort();
  return { ...a, signers, note: formatSignedNote({ text: a.text, signatures: signers.map((s) => byName.get(s)!) }) };
}
