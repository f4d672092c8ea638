/**
 * The requester's check of a custodian's answer (DESIGN.md §8): nothing a custodian sends is shown as valid
 * unless its checkpoint carries the signatures of a majority of the members (and matches this node's own
 * tree where this node has it), the entry's leaf is in that tree, the leaf is the custodian's `record.commit`
 * of exactly that version of that patient's record, and `SHA-256(salt || bytes)` is the commitment.
 */
import { concatBytes, equalBytes, fromUtf8, toHex } from '../kernel/index.js';
import { sha256 } from '../crypto/index.js';
import { memberNoteKeys, publicVerifier, verifyMemberCheckpoint, type Ledger } from '../ledger/index.js';
import { commitmentsOf, type RecordCommitBody } from '../repository/index.js';
import { fromWireBase64, type EverythingPackage } from './protocol.js';

const fhirIdPattern = /^[A-Za-z0-9\-.]{1,64}$/;

/** A version that verified. */
export interface VerifiedEntry {
  resource: { resourceType: string; id: string } & Record<string, unknown>;
  leafIndex: number;
}

/** What came of checking one custodian's answer. */
export interface PackageVerdict {
  entries: VerifiedEntry[];
  /** Why entries (or the whole answer) failed, by reference only: never their data. */
  failures: string[];
  /** Set when the custodian's checkpoint disagrees with this node's own tree: a fork. */
  fork?: string;
}

/** Checks every entry of `pkg`, expected from `custodian` about its record `pseudonym`, against `ledger`. */
export function verifyPackage(pkg: EverythingPackage, ledger: Ledger, expected: { custodian: string; pseudonym: string }): PackageVerdict {
  const failures: string[] = [];
  const whole = (message: string): PackageVerdict => ({ entries: [], failures: [message] });
  if (pkg.custodian !== expected.custodian) return whole(`the answer names custodian ${pkg.custodian}, not ${expected.custodian}`);
  if (pkg.pseudonym !== expected.pseudonym) return whole('the answer is about another record than the one the ledger links');
  let cp;
  try {
    cp = verifyMemberCheckpoint(pkg.checkpoint, memberNoteKeys(ledger.state.members.values()));
  } catch (err) {
    return whole(`the checkpoint does not verify: ${(err as Error).message}`);
  }
  if (cp.origin !== ledger.origin) return whole('the checkpoint is of another network');
  if (cp.signers.length < ledger.state.quorum()) return whole(`the checkpoint is signed by ${cp.signers.length} members; ${ledger.state.quorum()} are needed`);
  if (cp.treeSize !== BigInt(pkg.treeSize)) return whole('the checkpoint is not of the tree size the answer names');
  if (pkg.treeSize <= ledger.treeSize && !equalBytes(ledger.rootAt(pkg.treeSize), cp.rootHash)) {
    return { entries: [], failures: [`the checkpoint's root at size ${pkg.treeSize} differs from this node's`], fork: `members ${cp.signers.join(', ')} signed another root for tree size ${pkg.treeSize}` };
  }
  // Each leaf once: in the tree the checkpoint signs (and equal to this node's own copy), the custodian's
  // record commitment of this patient's record. Its commitments by `Type/id/vid`, or why it failed.
  const leaves = new Map<number, Map<string, string> | string>();
  for (const packed of pkg.leaves) {
    try {
      const leaf = fromWireBase64(packed.leaf);
      if (packed.leafIndex >= pkg.treeSize) throw new Error('it is beyond the checkpoint');
      publicVerifier.verifyInclusion(BigInt(packed.leafIndex), BigInt(pkg.treeSize), publicVerifier.leafHash(leaf), packed.proof.map(fromWireBase64), cp.rootHash);
      if (packed.leafIndex < ledger.treeSize) {
        const own = ledger.store.entry(packed.leafIndex);
        if (own === null || !equalBytes(own, leaf)) throw new Error("it differs from this node's ledger");
      }
      // The ledger validated the tx when it gave it a leaf; its JSON is all that is needed here.
      const tx = JSON.parse(fromUtf8(leaf)) as { type?: unknown; signer?: { kind?: unknown; id?: unknown }; body?: RecordCommitBody };
      if (tx.type !== 'record.commit' || tx.signer?.kind !== 'org' || tx.signer.id !== expected.custodian || typeof tx.body !== 'object') {
        throw new Error("it is not the custodian's record commitment");
      }
      if (tx.body.patient !== expected.pseudonym) throw new Error("it does not commit the patient's record");
      leaves.set(packed.leafIndex, new Map(commitmentsOf(tx.body).map((c) => [`${c.resourceType}/${c.id}/${c.versionId}`, c.commitment])));
    } catch (err) {
      leaves.set(packed.leafIndex, `leaf ${packed.leafIndex}: ${(err as Error).message}`);
    }
  }
  const entries: VerifiedEntry[] = [];
  const shown = new Set<string>();
  pkg.entries.forEach((packed, i) => {
    let label = `entry ${i}`;
    try {
      const content = fromWireBase64(packed.content);
      let resource: VerifiedEntry['resource'] & { meta?: { versionId?: string } };
      try {
        resource = JSON.parse(fromUtf8(content)) as typeof resource;
      } catch {
        // Never the parser's message: it quotes the content, which may be anything, PHI included.
        throw new Error('its content is not JSON');
      }
      if (typeof resource !== 'object' || resource === null) throw new Error('not a FHIR resource version');
      const versionId = resource.meta?.versionId;
      if (typeof resource.resourceType !== 'string' || typeof resource.id !== 'string' || typeof versionId !== 'string') throw new Error('not a FHIR resource version');
      // Named in failures only when it looks like a FHIR reference (the content is not verified yet).
      if (/^[A-Z][A-Za-z]{0,63}$/.test(resource.resourceType) && fhirIdPattern.test(resource.id) && fhirIdPattern.test(versionId)) {
        label = `${resource.resourceType}/${resource.id}/_history/${versionId}`;
      }
      const commitments = leaves.get(packed.leafIndex);
      if (commitments === undefined) throw new Error('its leaf was not sent');
      if (typeof commitments === 'string') throw new Error(commitments);
      const committed = commitments.get(`${resource.resourceType}/${resource.id}/${versionId}`);
      if (committed === undefined) throw new Error('its leaf does not commit this version');
      if (committed !== toHex(sha256(concatBytes(fromWireBase64(packed.salt), content)))) throw new Error('its content does not match the commitment');
      // A version is shown once, however often the custodian sends it.
      const key = `${resource.resourceType}/${resource.id}/${versionId}`;
      if (shown.has(key)) return;
      shown.add(key);
      entries.push({ resource, leafIndex: packed.leafIndex });
    } catch (err) {
      failures.push(`${label} from ${expected.custodian} failed verification: ${(err as Error).message}`);
    }
  });
  return { entries, failures };
}
