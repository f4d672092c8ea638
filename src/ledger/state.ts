/**
 * Ledger state derived by applying valid txs in order: the network's identity, its member organizations and
 * recently seen tx ids (replay protection). Later issues add patients, links and consents here.
 */
import type { KeyObject } from 'node:crypto';

/** A member organization. */
export interface Member {
  id: string;
  name: string;
  /** Raw 32-byte Ed25519 public key. */
  publicKey: Uint8Array;
  /** RFC 7638 thumbprint of the key. */
  keyId: string;
  key: KeyObject;
}

/** How long a tx may wait before inclusion; also how long its id is remembered for replay protection. */
export const txMaxAgeMs = 24 * 60 * 60 * 1000;
/** How far in the future (relative to its block) a tx time may be. */
export const txMaxSkewMs = 5 * 60 * 1000;

/** The state every node derives identically from the ordered txs. */
export class LedgerState {
  /** Origin line of the network's checkpoints; null before genesis. */
  origin: string | null = null;
  readonly members = new Map<string, Member>();
  /** tx id → tx time (ms), for txs younger than `txMaxAgeMs`. */
  private readonly seen = new Map<string, number>();

  hasSeen(txId: string): boolean {
    return this.seen.has(txId);
  }

  markSeen(txId: string, timeMs: number): void {
    this.seen.set(txId, timeMs);
  }

  /** Forgets tx ids too old to be included any more (deterministic: driven by block time). */
  pruneSeen(blockTimeMs: number): void {
    const cutoff = blockTimeMs - txMaxAgeMs - txMaxSkewMs;
    for (const [id, t] of this.seen) {
      if (t >= cutoff) break; // insertion order is roughly time order; stop at the first young one
      this.seen.delete(id);
    }
  }

  /** Members whose approval is needed for governance: a strict majority. */
  quorum(): number {
    return Math.floor(this.members.size / 2) + 1;
  }
}
