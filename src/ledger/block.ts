/**
 * Hash-chained blocks (DESIGN.md §3). The header adds `txsHash` to the design's fields: a commitment to
 * every tx of the block in order with its validity flag, so invalid txs (which get no leaf) are tamper-
 * evident too.
 */
import { concatBytes, toHex } from '../kernel/index.js';
import { canonicalBytes, sha256 } from '../crypto/index.js';

/** A block header. Hashes are lowercase hex; time is RFC 3339 UTC. */
export interface BlockHeader {
  height: number;
  prevHash: string;
  /** Leaf index of the block's first valid tx (= tree size before the block). */
  firstIndex: number;
  txCount: number;
  /** Tree size after the block. */
  treeSize: number;
  /** Merkle root after the block. */
  root: string;
  time: string;
  proposer: string;
  txsHash: string;
}

/** prevHash of block 0. */
export const genesisPrevHash = '0'.repeat(64);

/** The block hash: hex SHA-256 of the RFC 8785 form of the header. */
export function blockHash(header: BlockHeader): string {
  return toHex(sha256(canonicalBytes(header)));
}

/** SHA-256 over, for each tx in order, SHA-256(tx bytes) || validity byte. */
export function txsHash(txs: readonly { bytes: Uint8Array; valid: boolean }[]): string {
  const parts = txs.map((t) => concatBytes(sha256(t.bytes), Uint8Array.of(t.valid ? 1 : 0)));
  return toHex(sha256(concatBytes(...parts)));
}

/** A batch as the orderer delivers it: its height, the orderer's time and proposer, and the raw txs. */
export interface OrderedBatch {
  height: number;
  /** RFC 3339 UTC, assigned when the batch was ordered. */
  time: string;
  proposer: string;
  txs: Uint8Array[];
}

/** One tx as stored in a block. */
export interface StoredTx {
  height: number;
  position: number;
  /** hex tx id; for bytes that do not parse, hex SHA-256 of the raw bytes. */
  txId: string;
  valid: boolean;
  leafIndex: number | null;
  /** Why it is invalid (no PHI: issue paths and rule messages only). */
  error: string | null;
  bytes: Uint8Array;
}
