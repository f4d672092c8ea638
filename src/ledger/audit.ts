/**
 * Full verification of a stored ledger, trusting nothing in the database: every tx is re-parsed and
 * re-validated from genesis (signatures included), every leaf, Merkle node, root, block hash and chain link
 * recomputed, and every stored checkpoint's signature and root checked. Reports the first problem found.
 */
import { equalBytes, toHex } from '../kernel/index.js';
import { canonicalBytes, importEd25519PublicKey, sha256, verifyEd25519, type Ed25519VerifierPool } from '../crypto/index.js';
import { blockHash, genesisPrevHash, txsHash, type BlockHeader, type StoredTx } from './block.js';
import { VerifiedSignatures, keysIntroducedBy } from './contracts.js';
import { nodeEd25519Verify } from './cosign.js';
import { applyTxAt, nodeHasher } from './ledger.js';
import { MerkleFrontier, rootHash, type MerkleNode } from './merkle/index.js';
import { SignatureType, noteKeyId, parseCheckpoint, verifyNote, type NoteVerifierKey } from './note.js';
import { preverifySignatures } from './preverify.js';
import { LedgerState } from './state.js';
import type { LedgerStore } from './storage/ledger-store.js';
import { parseTx, type ParsedTx } from './tx.js';

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
  /** Verifies signatures in parallel ahead of the replay; without it, signatures are verified in line. */
  pool?: Ed25519VerifierPool;
}

interface WindowBlock {
  header: BlockHeader;
  hash: string;
  stored: StoredTx[];
  parsed: (ParsedTx | Error)[];
}

const windowTxs = 2048;

function parseOrError(bytes: Uint8Array): ParsedTx | Error {
  try {
    return parseTx(bytes);
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

/**
 * Recomputes and checks everything in `store`; never throws for a bad ledger, it reports. With a pool,
 * blocks are taken in windows of about 2,048 txs: the pool verifies the signatures of the next window while
 * this thread replays the current one.
 */
export async function auditLedger(store: LedgerStore, options: AuditOptions = {}): Promise<AuditReport> {
  const state = new LedgerState();
  const frontier = new MerkleFrontier(nodeHasher);
  const rootsAtBlocks = new Map<number, string>([[0, toHex(nodeHasher.emptyRoot())]]);
  const noteKeys: NoteVerifierKey[] = [];
  const memo = new VerifiedSignatures(windowTxs * 4);
  const introducedKeys = new Map<string, Uint8Array>();
  const report: AuditReport = { ok: false, blocks: 0, txs: 0, entries: 0, checkpoints: 0, treeSize: 0, root: '' };
  const totalBlocks = (store.head()?.height ?? -1) + 1;
  let prevHash = genesisPrevHash;
  let height = 0;

  const rememberKeys = () => {
    for (const m of state.members.values()) {
      if (!noteKeys.some((k) => k.name === m.id && equalBytes(k.publicKey, m.publicKey))) {
        noteKeys.push({
          name: m.id,
          type: SignatureType.ed25519,
          publicKey: m.publicKey,
          keyId: noteKeyId(sha256, m.id, SignatureType.ed25519, m.publicKey),
        });
      }
    }
  };

  const checkCheckpoint = (note: string, label: string): number => {
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
    const expected = rootsAtBlocks.get(size) ?? toHex(store.read(() => rootHash(nodeHasher, store, size)));
    if (toHex(cp.rootHash) !== expected) {
      fail({ treeSize: size, message: `${label} at size ${size} has a root that differs from the recomputed tree` });
    }
    return size;
  };

  const checkBlock = ({ header, hash, stored, parsed }: WindowBlock) => {
    if (header.height !== height) fail({ height, message: `block ${height} is missing (found ${header.height} next)` });
    if (blockHash(header) !== hash) fail({ height, message: `block ${height} hash does not match its header` });
    if (header.prevHash !== prevHash) fail({ height, message: `block ${height} does not link to block ${height - 1}` });
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
        if (!equalBytes(canonicalBytes(options.genesis), t.bytes)) {
          fail({ height, position, message: 'block 0 does not hold the genesis tx of this network' });
        }
      }
      const onNodes = (nodes: MerkleNode[]) => {
        for (const n of nodes) {
          let storedHash: Uint8Array;
          try {
            storedHash = store.node(n.level, n.index);
          } catch {
            fail({ height, position, message: `Merkle node ${n.level}/${n.index} is missing` });
          }
          if (!equalBytes(storedHash, n.hash)) {
            fail({ height, position, message: `stored Merkle node ${n.level}/${n.index} differs from the recomputed one` });
          }
        }
      };
      const r = applyTxAt(t.bytes, { height, position, blockTimeMs }, state, frontier, nodeHasher, onNodes, memo, parsed[position]);
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
  };

  const prepare = (window: WindowBlock[]): Promise<void> => {
    if (!options.pool) return Promise.resolve();
    const txs = window.flatMap((b) => b.parsed.filter((p): p is ParsedTx => !(p instanceof Error)));
    for (const tx of txs) for (const [id, key] of keysIntroducedBy(tx)) introducedKeys.set(id, key);
    return preverifySignatures(txs, state, options.pool, memo, introducedKeys);
  };

  try {
    let window: WindowBlock[] = [];
    let count = 0;
    let previous: { window: WindowBlock[]; verified: Promise<void> } | null = null;
    const flush = async (next: WindowBlock[] | null) => {
      const verified = next ? prepare(next) : null;
      if (previous) {
        await previous.verified;
        const done = previous.window;
        store.read(() => done.forEach(checkBlock));
      }
      previous = next && verified ? { window: next, verified } : null;
    };
    // Blocks are read one by one, not through a cursor held open across windows: a read transaction
    // cannot start on a connection with a statement in progress.
    for (let h = 0; h < totalBlocks; h++) {
      const block = store.block(h);
      if (!block) break;
      const { header, hash } = block;
      const stored = store.blockTxs(h);
      window.push({ header, hash, stored, parsed: stored.map((t) => parseOrError(t.bytes)) });
      count += stored.length;
      if (count >= windowTxs) {
        await flush(window);
        window = [];
        count = 0;
      }
    }
    await flush(window.length > 0 ? window : null);
    await flush(null);
    if (height !== totalBlocks) fail({ height, message: `blocks after ${height - 1} are missing` });

    const n = frontier.size;
    let expectedNodes = 0;
    for (let w = n; w > 0; w = Math.floor(w / 2)) expectedNodes += w;
    const nodeCount = store.nodeCount();
    if (nodeCount !== expectedNodes) {
      fail({ treeSize: n, message: `storage holds ${nodeCount} Merkle nodes; a tree of ${n} leaves has ${expectedNodes}` });
    }
    for (const cp of store.checkpoints()) {
      const size = checkCheckpoint(cp.note, `stored checkpoint ${cp.treeSize}`);
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
