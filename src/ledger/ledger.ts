/**
 * The ledger of one node: applies ordered batches as blocks (validate → leaves → Merkle nodes → one atomic
 * append), serves proofs and entries, and signs checkpoints. It never signs a checkpoint whose root it has
 * not recomputed from storage, nor one inconsistent with its previous checkpoint (DESIGN.md §3).
 */
import { HlError, equalBytes, toHex, type Clock } from '../kernel/index.js';
import { memberNoteKeys, mergeCheckpoints, verifyMemberCheckpoint, type SignedCheckpoint } from './cosign.js';
import { rawPublicKey, sha256, signEd25519, type Ed25519KeyPair, type Ed25519VerifierPool } from '../crypto/index.js';
import { preverifySignatures } from './preverify.js';
import { blockHash, genesisPrevHash, txsHash, type BlockHeader, type OrderedBatch, type StoredTx } from './block.js';
import { VerifiedSignatures, applyTx, signatureMemoKey, validateTx } from './contracts.js';
import {
  MerkleFrontier,
  consistencyProof,
  createRfc9162Hasher,
  inclusionProof,
  rootHash,
  verifyConsistencyWith,
  type MerkleHasher,
} from './merkle/index.js';
import {
  SignatureType,
  formatCheckpoint,
  formatSignedNote,
  formatVerifierKey,
  parseCheckpoint,
  parseSignedNote,
  signNoteSignature,
} from './note.js';
import { LedgerState } from './state.js';
import type { LedgerStore } from './storage/ledger-store.js';
import { parseTx, type ParsedTx } from './tx.js';

/** The node-side RFC 9162 hasher (node:crypto SHA-256). */
export const nodeHasher: MerkleHasher = createRfc9162Hasher(sha256);

/** What became of one tx in an applied block. */
export interface TxReceipt {
  txId: string;
  height: number;
  position: number;
  valid: boolean;
  leafIndex: number | null;
  error: string | null;
}

/** The signing identity of this node. */
export interface LedgerSigner {
  orgId: string;
  keyPair: Ed25519KeyPair;
}

function describeIssues(issues: { expression?: string; message: string }[]): string {
  return issues.map((i) => (i.expression ? `${i.expression}: ${i.message}` : i.message)).join('; ');
}

/** Parses, validates and applies one tx at its position; returns its stored form. Mutates state and frontier. */
export function applyTxAt(
  bytes: Uint8Array,
  ctx: { height: number; position: number; blockTimeMs: number },
  state: LedgerState,
  frontier: MerkleFrontier,
  hasher: MerkleHasher,
  onNodes?: (nodes: ReturnType<MerkleFrontier['append']>) => void,
  signatures?: VerifiedSignatures,
  parsed?: ParsedTx | Error,
): StoredTx {
  let tx: ParsedTx;
  try {
    if (parsed instanceof Error) throw parsed;
    tx = parsed ?? parseTx(bytes);
  } catch (err) {
    return {
      height: ctx.height,
      position: ctx.position,
      txId: toHex(sha256(bytes)),
      valid: false,
      leafIndex: null,
      error: err instanceof Error ? err.message.slice(0, 500) : 'malformed tx',
      bytes,
    };
  }
  const issues = validateTx(tx, state, ctx, signatures);
  if (issues.length > 0) {
    return { ...ctx, txId: tx.id, valid: false, leafIndex: null, error: describeIssues(issues).slice(0, 1000), bytes: tx.bytes };
  }
  applyTx(tx, state);
  const leafIndex = frontier.size;
  const nodes = frontier.append(hasher.hashLeaf(tx.bytes));
  onNodes?.(nodes);
  return { height: ctx.height, position: ctx.position, txId: tx.id, valid: true, leafIndex, error: null, bytes: tx.bytes };
}

/** Own txs remembered before apply at most (a tx refused before ordering is never applied). */
const maxOwnTxs = 4096;

/** A map key naming exactly these bytes (one char per byte). */
function bytesKey(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

/** One node's view of the ledger. Create with `Ledger.open`. */
export class Ledger {
  readonly store: LedgerStore;
  readonly state: LedgerState;
  private readonly signer: LedgerSigner;
  private readonly clock: Clock;
  private frontier: MerkleFrontier;
  private headHash: string;
  private headHeight: number;
  private broken: Error | null = null;
  private readonly signatures = new VerifiedSignatures();
  /**
   * Txs this node signed itself and has not applied yet, by their exact bytes. Parsing is a function of the
   * bytes alone, so admission and apply take the parse from here instead of repeating it (JSON, RFC 8785
   * and SHA-256 twice per tx); the entry goes once the tx is applied.
   */
  private readonly ownTxs = new Map<string, ParsedTx>();
  /** The latest checkpoint a majority of the members signed. */
  private final: { treeSize: number; note: string } | null = null;
  /** Notes whose member signatures verified, by note text and membership (gossip sends the same notes often). */
  private readonly verifiedNotes = new Map<string, SignedCheckpoint>();

  private constructor(store: LedgerStore, signer: LedgerSigner, clock: Clock) {
    this.store = store;
    this.signer = signer;
    this.clock = clock;
    this.state = new LedgerState();
    const head = store.head();
    this.headHeight = head?.height ?? -1;
    this.headHash = head?.hash ?? genesisPrevHash;
    this.frontier = new MerkleFrontier(nodeHasher, head?.treeSize ?? 0, (l, i) => store.node(l, i));
    if (head && toHex(this.frontier.root()) !== head.root) {
      throw new HlError('integrity', `stored Merkle nodes do not give the root of block ${head.height}`);
    }
  }

  /** Opens the ledger on its store, rebuilding state from the stored valid txs. */
  static open(options: { store: LedgerStore; signer: LedgerSigner; clock: Clock }): Ledger {
    const ledger = new Ledger(options.store, options.signer, options.clock);
    let lastBlockTimeMs = 0;
    for (const t of options.store.allTxs()) {
      if (!t.valid) continue;
      applyTx(parseTx(t.bytes), ledger.state);
    }
    const head = options.store.head();
    if (head) lastBlockTimeMs = Date.parse(options.store.block(head.height)!.header.time);
    ledger.state.pruneSeen(lastBlockTimeMs);
    ledger.loadFinal();
    return ledger;
  }

  /** Height of the last applied block (-1 when empty). */
  get height(): number {
    return this.headHeight;
  }

  get treeSize(): number {
    return this.frontier.size;
  }

  /** The current root (hex). */
  get root(): string {
    return toHex(this.frontier.root());
  }

  get origin(): string {
    if (this.state.origin === null) throw new HlError('conflict', 'the ledger has no genesis yet');
    return this.state.origin;
  }

  /**
   * Applies an ordered batch as the next block: each tx is validated against the state at its position;
   * valid ones get leaves. The block, its txs and Merkle nodes are appended in one durable step.
   */
  applyBatch(batch: OrderedBatch): TxReceipt[] {
    if (this.broken) throw new HlError('exception', 'ledger must be reopened after a failed append', { cause: this.broken });
    if (batch.height !== this.headHeight + 1) {
      throw new HlError('conflict', `batch ${batch.height} does not follow block ${this.headHeight}`);
    }
    const blockTimeMs = Date.parse(batch.time);
    if (Number.isNaN(blockTimeMs)) throw new HlError('invalid', `batch ${batch.height} has no valid time`);
    const firstIndex = this.frontier.size;
    const nodes: ReturnType<MerkleFrontier['append']> = [];
    const txs = batch.txs.map((bytes, position) => {
      const own = this.takeOwn(bytes);
      const stored = applyTxAt(
        bytes,
        { height: batch.height, position, blockTimeMs },
        this.state,
        this.frontier,
        nodeHasher,
        (n) => nodes.push(...n),
        this.signatures,
        own,
      );
      // Applied: its signature is on the ledger now and a replay of the same tx is refused by id.
      if (own !== undefined) this.signatures.delete(signatureMemoKey(own, this.signer.keyPair.keyId));
      return stored;
    });
    const header: BlockHeader = {
      height: batch.height,
      prevHash: this.headHash,
      firstIndex,
      txCount: txs.length,
      treeSize: this.frontier.size,
      root: toHex(this.frontier.root()),
      time: batch.time,
      proposer: batch.proposer,
      txsHash: txsHash(txs),
    };
    const hash = blockHash(header);
    try {
      this.store.appendBlock({ header, hash, txs, nodes });
    } catch (err) {
      // State and frontier already moved on; they no longer match storage.
      this.broken = err instanceof Error ? err : new Error(String(err));
      throw err;
    }
    this.headHeight = batch.height;
    this.headHash = hash;
    this.state.pruneSeen(blockTimeMs);
    return txs.map((t) => ({
      txId: t.txId,
      height: t.height,
      position: t.position,
      valid: t.valid,
      leafIndex: t.leafIndex,
      error: t.error,
    }));
  }

  /** This node's C2SP verifier key (`name+keyid+base64(0x01 || key)`). */
  verifierKey(): string {
    return formatVerifierKey(sha256, this.signer.orgId, SignatureType.ed25519, rawPublicKey(this.signer.keyPair.publicKey));
  }

  /**
   * Signs a checkpoint of the current tree, after recomputing its root from stored nodes and checking it is
   * consistent with the latest stored checkpoint. Returns the latest checkpoint unchanged if the tree has
   * not grown. Throws `integrity` or `fork` rather than sign something inconsistent.
   */
  signCheckpoint(): string {
    const size = this.frontier.size;
    const root = rootHash(nodeHasher, this.store, size);
    if (toHex(root) !== toHex(this.frontier.root())) {
      throw new HlError('integrity', `root recomputed from storage differs from the in-memory root at size ${size}`);
    }
    const prev = this.store.latestCheckpoint();
    if (prev) {
      const prevCp = parseCheckpoint(parseSignedNote(prev.note).text);
      const prevSize = Number(prevCp.treeSize);
      if (prevSize > size) throw new HlError('fork', `latest checkpoint (size ${prevSize}) is ahead of the tree (size ${size})`);
      if (prevSize === size) {
        if (toHex(prevCp.rootHash) !== toHex(root)) throw new HlError('fork', `two different roots for tree size ${size}`);
        return prev.note;
      }
      if (prevSize > 0) {
        try {
          const proof = consistencyProof(nodeHasher, this.store, prevSize, size);
          verifyConsistencyWith(nodeHasher, BigInt(prevSize), BigInt(size), prevCp.rootHash, root, proof);
        } catch (cause) {
          throw new HlError('fork', `tree at size ${size} is not consistent with checkpoint ${prevSize}`, { cause });
        }
      }
    }
    const note = this.signText(formatCheckpoint({ origin: this.origin, treeSize: BigInt(size), rootHash: root, extensions: [] }));
    this.store.putCheckpoint(size, note);
    this.noteSigned(size, note);
    return note;
  }

  /** This node's signed note over checkpoint text. */
  private signText(text: string): string {
    const signature = signNoteSignature(
      sha256,
      this.signer.orgId,
      rawPublicKey(this.signer.keyPair.publicKey),
      (m) => signEd25519(this.signer.keyPair.privateKey, m),
      text,
    );
    return formatSignedNote({ text, signatures: [signature] });
  }

  /**
   * Cosigns another member's checkpoint: checks its member signatures, recomputes this node's root at its
   * size from storage and, when they match, merges its signatures with this node's own into the stored
   * checkpoint of that size. Returns the merged checkpoint and whether a majority of members signed it.
   * `pushback` while this node's tree is smaller than the checkpoint; `fork` when the roots differ (two
   * different roots for one size: the caller raises the alarm); `forbidden` for a signature that is not a
   * member's or does not verify.
   */
  cosign(note: string): SignedCheckpoint & { final: boolean } {
    const incoming = this.verifiedNote(note);
    if (incoming.origin !== this.origin) throw new HlError('invalid', `checkpoint origin "${incoming.origin}" is not this network's`);
    if (incoming.treeSize > BigInt(this.frontier.size)) {
      throw new HlError('pushback', `this node has ${this.frontier.size} entries, fewer than the checkpoint's ${incoming.treeSize}`);
    }
    const size = Number(incoming.treeSize);
    const root = this.rootAt(size);
    if (!equalBytes(root, incoming.rootHash)) {
      throw new HlError(
        'fork',
        `two different roots for tree size ${size}: ${incoming.signers.join(', ')} signed ${toHex(incoming.rootHash)}, this node computed ${toHex(root)}`,
      );
    }
    const own = this.verifiedNote(this.ownCheckpointAt(size));
    const merged = mergeCheckpoints(own, incoming);
    if (merged.note !== own.note) this.store.putCheckpoint(size, merged.note);
    this.noteSigned(size, merged.note, merged.signers.length);
    return { ...merged, final: merged.signers.length >= this.state.quorum() };
  }

  /**
   * The checkpoint of this node's tree at `treeSize` with its own signature and every member signature
   * gathered so far; signs (and stores) it first if this node has not. The root is recomputed from storage.
   */
  ownCheckpointAt(treeSize: number): string {
    if (treeSize < 1 || treeSize > this.frontier.size) throw new HlError('not-found', `tree size ${treeSize} is not in this ledger`);
    const stored = this.store.checkpoint(treeSize);
    const current = stored === null ? null : this.verifiedNote(stored);
    if (current?.signers.includes(this.signer.orgId)) return current.note;
    const text = formatCheckpoint({ origin: this.origin, treeSize: BigInt(treeSize), rootHash: this.rootAt(treeSize), extensions: [] });
    const signed = this.verifiedNote(this.signText(text));
    const note = (current === null ? signed : mergeCheckpoints(current, signed)).note;
    this.store.putCheckpoint(treeSize, note);
    return note;
  }

  /** `verifyMemberCheckpoint` against the current members, remembered for the last few hundred notes. */
  private verifiedNote(note: string): SignedCheckpoint {
    const memo = `${[...this.state.members.values()].map((m) => m.keyId).join(',')}\n${note}`;
    const hit = this.verifiedNotes.get(memo);
    if (hit) return hit;
    const verified = verifyMemberCheckpoint(note, memberNoteKeys(this.state.members.values()));
    if (this.verifiedNotes.size >= 256) this.verifiedNotes.delete(this.verifiedNotes.keys().next().value!);
    this.verifiedNotes.set(memo, verified);
    return verified;
  }

  /** Records a stored checkpoint as final when a majority signed it and it is the largest so far. */
  private noteSigned(size: number, note: string, signers = 1): void {
    if (signers < this.state.quorum() || (this.final !== null && this.final.treeSize > size)) return;
    this.final = { treeSize: size, note };
  }

  /** The latest stored checkpoint that a majority signed: worked out again at open from the stored notes. */
  private loadFinal(): void {
    for (const { treeSize, note } of this.store.checkpointsDescending(1000)) {
      try {
        if (this.verifiedNote(note).signers.length >= this.state.quorum()) {
          this.final = { treeSize, note };
          return;
        }
      } catch {
        // A note whose signatures no longer verify (a member left and its key went) is not final.
      }
    }
  }

  /** The stored checkpoint for `treeSize` with every member signature gathered so far, or null. */
  checkpointAt(treeSize: number): string | null {
    return this.store.checkpoint(treeSize);
  }

  /** The latest signed checkpoint, or null before the first. */
  latestCheckpoint(): string | null {
    return this.store.latestCheckpoint()?.note ?? null;
  }

  /**
   * The latest final checkpoint (signed by a majority of the members) with the tree size it covers, or
   * null before the first. Proofs are served against it. In a one-member network every checkpoint is final.
   */
  finalCheckpoint(): { note: string; treeSize: number } | null {
    return this.final;
  }

  /** RFC 9162 inclusion proof of `leafIndex` in the tree of `treeSize` (default: current). */
  inclusionProof(leafIndex: number, treeSize = this.frontier.size): Uint8Array[] {
    if (treeSize > this.frontier.size) throw new HlError('not-found', `tree size ${treeSize} is beyond the ledger`);
    return this.store.read(() => inclusionProof(nodeHasher, this.store, leafIndex, treeSize));
  }

  /** RFC 9162 consistency proof between two tree sizes. */
  consistencyProof(size1: number, size2 = this.frontier.size): Uint8Array[] {
    if (size2 > this.frontier.size) throw new HlError('not-found', `tree size ${size2} is beyond the ledger`);
    return this.store.read(() => consistencyProof(nodeHasher, this.store, size1, size2));
  }

  /** The root of an earlier tree size, recomputed from storage. */
  rootAt(treeSize: number): Uint8Array {
    if (treeSize > this.frontier.size) throw new HlError('not-found', `tree size ${treeSize} is beyond the ledger`);
    return this.store.read(() => rootHash(nodeHasher, this.store, treeSize));
  }

  /**
   * Records that this node itself just produced the signature on `tx` with its own key, so admission and
   * apply need not verify it again (it is valid by construction; the audit still re-verifies everything).
   */
  trustOwnSignature(tx: ParsedTx): void {
    if (tx.envelope.signer.keyId !== this.signer.keyPair.keyId) return;
    this.signatures.add(signatureMemoKey(tx, this.signer.keyPair.keyId));
    if (this.ownTxs.size >= maxOwnTxs) this.ownTxs.delete(this.ownTxs.keys().next().value!);
    this.ownTxs.set(bytesKey(tx.bytes), tx);
  }

  /** The parse of `bytes` if this node signed them and has not applied them yet (and forgets it). */
  private takeOwn(bytes: Uint8Array): ParsedTx | undefined {
    if (this.ownTxs.size === 0) return undefined;
    const key = bytesKey(bytes);
    const own = this.ownTxs.get(key);
    if (own !== undefined) this.ownTxs.delete(key);
    return own;
  }

  /** `parseTx(bytes)`, taken from the txs this node signed when it is one of them. */
  private parse(bytes: Uint8Array): ParsedTx {
    return (this.ownTxs.size > 0 ? this.ownTxs.get(bytesKey(bytes)) : undefined) ?? parseTx(bytes);
  }

  /** Validates tx bytes against the current state without ordering them (admission check at submit). */
  precheck(bytes: Uint8Array): ParsedTx {
    return this.admit(this.parse(bytes));
  }

  /**
   * Admission check of many txs at once; with a pool, their signatures are verified in parallel first.
   * Throws on the first tx that fails, naming it by position.
   */
  async precheckAll(txs: readonly Uint8Array[], pool?: Ed25519VerifierPool): Promise<ParsedTx[]> {
    const parsed = txs.map((bytes, i) => {
      try {
        return this.parse(bytes);
      } catch (err) {
        throw txs.length > 1 && err instanceof HlError ? new HlError(err.code, `tx ${i}: ${err.message}`, { issues: err.issues }) : err;
      }
    });
    if (pool && parsed.length >= 16) await preverifySignatures(parsed, this.state, pool, this.signatures);
    return parsed.map((tx, i) => {
      try {
        return this.admit(tx);
      } catch (err) {
        throw txs.length > 1 && err instanceof HlError ? new HlError(err.code, `tx ${i}: ${err.message}`, { issues: err.issues }) : err;
      }
    });
  }

  private admit(tx: ParsedTx): ParsedTx {
    const issues = validateTx(
      tx,
      this.state,
      { height: this.headHeight + 1, position: this.state.origin === null ? 0 : 1, blockTimeMs: this.clock.nowMs() },
      this.signatures,
    );
    if (issues.length > 0) {
      const code = issues.some((i) => i.code === 'forbidden') ? 'forbidden' : issues[0]!.code;
      throw new HlError(code, `tx rejected: ${describeIssues(issues)}`, { issues });
    }
    return tx;
  }
}
