/**
 * Binary form of a batch's txs: u32 count, then for each tx a u32 length and its bytes (big-endian).
 */
import { HlError } from '../kernel/index.js';

/** Encodes tx bytes into one payload. */
export function encodeTxs(txs: readonly Uint8Array[]): Uint8Array {
  let size = 4;
  for (const t of txs) size += 4 + t.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, txs.length);
  let off = 4;
  for (const t of txs) {
    view.setUint32(off, t.length);
    out.set(t, off + 4);
    off += 4 + t.length;
  }
  return out;
}

/** Decodes a payload made by `encodeTxs`; throws `invalid` on any inconsistency. */
export function decodeTxs(payload: Uint8Array): Uint8Array[] {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  if (payload.length < 4) throw new HlError('invalid', 'batch payload too short');
  const count = view.getUint32(0);
  const txs: Uint8Array[] = [];
  let off = 4;
  for (let i = 0; i < count; i++) {
    if (off + 4 > payload.length) throw new HlError('invalid', 'batch payload truncated');
    const len = view.getUint32(off);
    if (off + 4 + len > payload.length) throw new HlError('invalid', 'batch payload truncated');
    txs.push(payload.slice(off + 4, off + 4 + len));
    off += 4 + len;
  }
  if (off !== payload.length) throw new HlError('invalid', 'batch payload has trailing bytes');
  return txs;
}
