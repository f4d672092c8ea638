/**
 * Full verification of a stored ledger, trusting nothing in the database: every tx is re-parsed and
 * re-validated from genesis (signatures included), every leaf, Merkle node, root, block hash and chain link
 * recomputed, and every stored checkpoint's signature and root checked. Reports the first problem found.
 */
import { toHex } from '../kernel/index.js';
import { importEd25519PublicKey, sha256, verifyEd25519 } from '../crypto/index.js';
import { blockHash, genesisPrevHash, txsHash } from './block.js';
import { applyTxAt, nodeHasher } from './ledger.js';
import { MerkleFrontier, rootHash } from './merkle/index.js';
import { SignatureType, noteKeyId, parseCheckpoint, verifyNote, type NoteVerifierKey } from './note.js';
import { LedgerState } from './state.js';
import type { LedgerStore } from './storage/ledger-store.js';
import { canonicalBytes } from '../crypto/index.js';

/** Where and why verification failed. */
export interface AuditProblem {
  height?: number;
  position?: number;
  leafIndex?: number;
  treeSize?: number;
  message: string;
}

/** The outcome of a full audit. */
export interface AuditReport {
  ok: boolean;
  blocks: number;
  txs: number;
  entries: number;
  checkpoints: number;
  treeSize: number;
  root: string;
  problem?: AuditProblem;
}

/** Ed25519 verify on raw keys with node:crypto (for notes). */
export function nodeEd25519Verify(publicKey: Uint8Array, message: Uint8Array, sig: Uint8Array): boolean {
  try {
    return verifyEd25519(importEd25519PublicKey(publicKey), message, sig);
  } catch {
    return false;
  }
}

class Found extends Error {
  constructor(readonly problem: AuditProblem) {
    super(problem.message);
  }
}

function fail(problem: AuditProblem): never {
  throw new Found(problem);
}

/** Options of `auditLedger`. */
export interface AuditOptions {
  /** The genesis tx as distributed out of band; the stored block 0 must hold exactly it. */
  genesis?: unknown;
  /** Checkpoints obtained elsewhere (signed notes); each must match the recomputed tree. */
  trustedCheckpoints?: string[];
  /** Called after each block with (blocks done, blocks total). */
  onProgress?: (done: number, total: number) => void;
}

/** Recomputes and checks everything in `store`; never throws for a bad ledger, it reports. */
export function auditLedger(store: LedgerStore, options: AuditOptions = {}): AuditReport {
  const state = new LedgerState();
  const frontier = new MerkleFrontier(nodeHasher);
  const rootsAtBlocks = new Map<number, string>([[0, toHex(nodeHasher.emptyRoot())]]);
  const noteKeys: NoteVerifierKey[] = [];
  const report: AuditReport = { ok: false, blocks: 0, txs: 0, entries: 0, checkpoints: 0, treeSize: 0, root: '' };
  const totalBlocks = (store.head()?.height ?? -1) + 1;

  const rememberKeys = () => {
    for (const m of state.members.values()) {
      if (!noteKeys.some((k) => k.name === m.id && toHex(k.publicKey) === toHex(m.publicKey))) {
        noteKeys.push({
          name: m.id,
          type: SignatureType.ed25519,
          publicKey: m.publicKey,
          keyId: noteKeyId(sha256, m.id, SignatureType.ed25519, m.publicKey),
        });
      }
    }
  };

  const checkCheckpoint = (note: string, label: string) => {
    let verified;
    try {
      verified = verifyNote(nodeEd25519Verify, note, noteKeys);
    } catch (err) {
      fail({ message: `${label}: ${err instanceof Error ? err.message : 'bad signature'}` });
    }
    let cp;
    try {
      cp = parseCheckpoint(verified.text);
    } catch (err) {
      fail({ message: `${label}: ${err instanceof Error ? err.message : 'malformed'}` });
    }
    const size = Number(cp.treeSize);
    if (cp.origin !== state.origin) fail({ treeSize: size, message: `${label}: origin "${cp.origin}" is not this ledger's` });
    if (size > frontier.size) {
      fail({ treeSize: size, message: `${label} covers ${size} entries but the log has only ${frontier.size}: the log was truncated` });
    }
    const expected = rootsAtBlocks.get(size) ?? toHex(rootHash(nodeHasher, store, size));
    if (toHex(cp.rootHash) !== expected) {
      fail({ treeSize: size, message: `${label} at size ${size} has a root that differs from the recomputed tree` });
    }
  };

  try {
    let prevHash = genesisPrevHash;
    let height = 0;
    for (const { header, hash } of store.blocks(0)) {
      if (header.height !== height) fail({ height, message: `block ${height} is missing (found ${header.height} next)` });
      if (blockHash(header) !== hash) fail({ height, message: `block ${height} hash does not match its header` });
      if (header.prevHash !== prevHash) fail({ height, message: `block ${height} does not link to block ${height - 1}` });
      const stored = store.blockTxs(height);
      if (stored.length !== header.txCount) {
        fail({ height, message: `block ${height} holds ${stored.length} txs but its header says ${header.txCount}` });
      }
      if (header.firstIndex !== frontier.size) {
        fail({ height, message: `block ${height} starts at leaf ${header.firstIndex}, expected ${frontier.size}` });
      }
      const blockTimeMs = Date.parse(header.time);
      const recomputed = stored.map((t, position) => {
        if (t.position !== position) fail({ height, position, message: `block ${height} is missing tx ${position}` });
        if (height === 0 && position === 0 && options.genesis !== undefined) {
          if (toHex(canonicalBytes(options.genesis)) !== toHex(t.bytes)) {
            fail({ height, position, message: 'block 0 does not hold the genesis tx of this network' });
          }
        }
        const r = applyTxAt(t.bytes, { height, position, blockTimeMs }, state, frontier, nodeHasher, (nodes) => {
          for (const n of nodes) {
            let storedHash: Uint8Array;
            try {
              storedHash = store.node(n.level, n.index);
            } catch {
              fail({ height, position, leafIndex: t.leafIndex ?? undefined, message: `Merkle node ${n.level}/${n.index} is missing` });
            }
            if (toHex(storedHash) !== toHex(n.hash)) {
              fail({ height, position, message: `stored Merkle node ${n.level}/${n.index} differs from the recomputed one` });
            }
          }
        });
        if (r.txId !== t.txId) fail({ height, position, message: `tx ${height}/${position} bytes do not match its id` });
        if (r.valid !== t.valid) {
          fail({
            height,
            position,
            message: t.valid
              ? `tx ${height}/${position} is marked valid but fails validation: ${r.error}`
              : `tx ${height}/${position} is marked invalid but validates`,
          });
        }
        if (r.leafIndex !== t.leafIndex) {
          fail({ height, position, message: `tx ${height}/${position} has leaf ${t.leafIndex}, expected ${r.leafIndex}` });
        }
        report.txs++;
        return r;
      });
      if (header.txsHash !== txsHash(recomputed)) fail({ height, message: `block ${height} tx list does not match its header` });
      if (header.treeSize !== frontier.size) fail({ height, message: `block ${height} tree size ${header.treeSize}, recomputed ${frontier.size}` });
      const root = toHex(frontier.root());
      if (header.root !== root) fail({ height, message: `block ${height} root does not match the recomputed Merkle root` });
      rootsAtBlocks.set(frontier.size, root);
      rememberKeys();
      prevHash = hash;
      height++;
      report.blocks = height;
      options.onProgress?.(height, totalBlocks);
    }
    if (height !== totalBlocks) fail({ height, message: `blocks after ${height - 1} are missing` });

    const n = frontier.size;
    let expectedNodes = 0;
    for (let w = n; w > 0; w = Math.floor(w / 2)) expectedNodes += w;
    const nodeCount = store.nodeCount();
    if (nodeCount !== expectedNodes) {
      fail({ treeSize: n, message: `storage holds ${nodeCount} Merkle nodes; a tree of ${n} leaves has ${expectedNodes}` });
    }
    for (const cp of store.checkpoints()) {
      checkCheckpoint(cp.note, `stored checkpoint ${cp.treeSize}`);
      const size = Number(parseCheckpoint(verifyNote(nodeEd25519Verify, cp.note, noteKeys).text).treeSize);
      if (size !== cp.treeSize) fail({ treeSize: cp.treeSize, message: `stored checkpoint ${cp.treeSize} says size ${size}` });
      report.checkpoints++;
    }
    (options.trustedCheckpoints ?? []).forEach((note, i) => checkCheckpoint(note, `trusted checkpoint ${i + 1}`));
    report.entries = n;
    report.treeSize = n;
    report.root = toHex(frontier.root());
    report.ok = true;
  } catch (err) {
    if (!(err instanceof Found)) throw err;
    report.problem = err.problem;
    report.treeSize = frontier.size;
  }
  return report;
}
