/**
 * The ordering contract (DESIGN.md §4): `submit` resolves only once the batch is durably ordered, with the
 * height it was given; `blocks(fromHeight)` yields every ordered batch from that height in order, with no
 * gap and no repeat, and then waits for more until closed.
 */
import type { OrderedBatch } from '../ledger/index.js';

/** Where a submitted batch landed. */
export interface SubmitResult {
  height: number;
}

/** An ordering service. */
export interface Orderer {
  /** Orders `txs` (raw tx bytes); resolves once durable. Rejects with `pushback` when ordering is unavailable. */
  submit(txs: Uint8Array[]): Promise<SubmitResult>;
  /** Ordered batches from `fromHeight` on, forever (until `signal` aborts or the orderer closes). */
  blocks(fromHeight: number, signal?: AbortSignal): AsyncIterable<OrderedBatch>;
  /** Height of the last ordered batch (-1 when none). */
  lastHeight(): number;
  close(): Promise<void>;
}
