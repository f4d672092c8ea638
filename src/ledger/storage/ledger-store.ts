/**
 * Ledger storage: blocks, txs, perfect-subtree Merkle nodes and signed checkpoints. A block and everything
 * it adds are appended atomically: after a crash either all of it is there or none.
 */
import type { BlockHeader, StoredTx } from '../block.js';
import type { MerkleNode } from '../merkle/frontier.js';
import type { NodeReader } from '../merkle/proof.js';

/** A block with its txs and the Merkle nodes it completes, ready to append. */
export interface BlockRecord {
  header: BlockHeader;
  hash: string;
  txs: StoredTx[];
  nodes: MerkleNode[];
}

/** The latest block. */
export interface LedgerHead {
  height: number;
  hash: string;
  treeSize: number;
  root: string;
}

/** Durable ledger storage. */
export interface LedgerStore extends NodeReader {
  head(): LedgerHead | null;
  /** Runs `fn` as one consistent read (a read transaction: a multi-read proof sees one snapshot, faster). */
  read<T>(fn: () => T): T;
  /** Appends a block atomically and durably; MUST reject a height that is not head + 1. */
  appendBlock(block: BlockRecord): void;
  block(height: number): { header: BlockHeader; hash: string } | null;
  blockTxs(height: number): StoredTx[];
  /** Blocks in height order from `fromHeight`. */
  blocks(fromHeight?: number): Iterable<{ header: BlockHeader; hash: string }>;
  /** Every tx in (height, position) order. */
  allTxs(fromHeight?: number): Iterable<StoredTx>;
  txById(txId: string): StoredTx | null;
  /** The leaf bytes at `leafIndex`. */
  entry(leafIndex: number): Uint8Array | null;
  /** Leaf bytes of [start, start + count). */
  entries(start: number, count: number): Uint8Array[];
  /** Hashes of level-`level` nodes [start, start + count), concatenated (missing ones end the run). */
  nodeRange(level: number, start: number, count: number): Uint8Array;
  nodeCount(): number;
  putCheckpoint(treeSize: number, note: string): void;
  latestCheckpoint(): { treeSize: number; note: string } | null;
  /** The newest `limit` stored checkpoints, largest tree size first. */
  checkpointsDescending(limit: number): { treeSize: number; note: string }[];
  /** The stored checkpoint note for exactly `treeSize`, if any. */
  checkpoint(treeSize: number): string | null;
  checkpoints(): Iterable<{ treeSize: number; note: string }>;
  getMeta(key: string): string | null;
  setMeta(key: string, value: string): void;
  close(): void;
}
