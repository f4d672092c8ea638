/**
 * C2SP tlog-tiles (c2sp.org/tlog-tiles): tile paths and contents served from ledger storage. A hash tile
 * at tile level L, index N, lists the tree-level-8L node hashes [N·256, N·256 + W); an entry bundle lists
 * the entries [N·256, N·256 + W), each as a big-endian uint16 length then the leaf bytes.
 */
import { HlError, concatBytes } from '../kernel/index.js';
import type { LedgerStore } from './storage/ledger-store.js';

const tileWidth = 256;
const tileHeight = 8;

/** A parsed tile path. `width` is 256 for a full tile. */
export type TilePath =
  | { kind: 'hashes'; level: number; index: number; width: number }
  | { kind: 'entries'; index: number; width: number };

function parseIndex(parts: string[]): number {
  // N is split into 3-digit groups; all but the last carry an "x" prefix.
  if (parts.length === 0) throw new HlError('invalid', 'tile path has no index');
  let n = 0;
  parts.forEach((p, i) => {
    const last = i === parts.length - 1;
    const m = last ? /^(\d{3})$/.exec(p) : /^x(\d{3})$/.exec(p);
    if (!m) throw new HlError('invalid', 'tile index is not in x000/.../000 form');
    n = n * 1000 + Number(m[1]);
  });
  if (!Number.isSafeInteger(n)) throw new HlError('invalid', 'tile index too large');
  return n;
}

/** Formats a tile index as its path segments (`1234067` → `x001/x234/067`). */
export function formatTileIndex(n: number): string {
  const groups: string[] = [];
  do {
    groups.unshift(String(n % 1000).padStart(3, '0'));
    n = Math.floor(n / 1000);
  } while (n > 0);
  return groups.map((g, i) => (i < groups.length - 1 ? `x${g}` : g)).join('/');
}

/** Parses a path below `/tile/` (`0/x001/234`, `1/005.p/17`, `entries/000`). */
export function parseTilePath(path: string): TilePath {
  let rest = path.replace(/^\/?(tile\/)?/, '');
  let width = tileWidth;
  const partial = /\.p\/(\d{1,3})$/.exec(rest);
  if (partial) {
    width = Number(partial[1]);
    if (width < 1 || width >= tileWidth || partial[1]!.startsWith('0')) throw new HlError('invalid', 'partial tile width must be 1..255');
    rest = rest.slice(0, partial.index);
  }
  const parts = rest.split('/');
  if (parts[0] === 'entries') return { kind: 'entries', index: parseIndex(parts.slice(1)), width };
  if (!/^(0|[1-9]\d?)$/.test(parts[0] ?? '') || Number(parts[0]) > 63) throw new HlError('invalid', 'tile level must be 0..63');
  return { kind: 'hashes', level: Number(parts[0]), index: parseIndex(parts.slice(1)), width };
}

function availableWidth(count: number, index: number): number {
  return Math.min(tileWidth, Math.max(0, count - index * tileWidth));
}

/** The bytes of a hash tile for a tree of `treeSize`; `not-found` if the tree does not (yet) have it. */
export function readTile(store: LedgerStore, treeSize: number, level: number, index: number, width: number): Uint8Array {
  const nodesAtLevel = Math.floor(treeSize / 2 ** (tileHeight * level));
  if (availableWidth(nodesAtLevel, index) < width) throw new HlError('not-found', 'no such tile in this tree');
  const bytes = store.nodeRange(tileHeight * level, index * tileWidth, width);
  if (bytes.length !== width * 32) throw new HlError('integrity', 'stored Merkle nodes are missing for this tile');
  return bytes;
}

/** An entry bundle for a tree of `treeSize`. */
export function entryBundle(store: LedgerStore, treeSize: number, index: number, width: number): Uint8Array {
  if (availableWidth(treeSize, index) < width) throw new HlError('not-found', 'no such entry bundle in this tree');
  const entries = store.entries(index * tileWidth, width);
  if (entries.length !== width) throw new HlError('integrity', 'stored entries are missing for this bundle');
  return concatBytes(
    ...entries.flatMap((e) => {
      if (e.length > 0xffff) throw new HlError('too-costly', 'entry larger than 65535 bytes');
      return [Uint8Array.of(e.length >> 8, e.length & 255), e];
    }),
  );
}
