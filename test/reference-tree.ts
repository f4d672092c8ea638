/**
 * A naive RFC 9162 reference tree, written straight from the spec's recursive definitions (§2.1.1,
 * §2.1.3.1, §2.1.4.1) with no storage or frontier tricks, to check the real implementation against.
 */
import { createHash } from 'node:crypto';

export function sha256(data: Uint8Array): Uint8Array {
  return createHash('sha256').update(data).digest();
}

export function refLeafHash(d: Uint8Array): Uint8Array {
  return sha256(Buffer.concat([Buffer.from([0]), d]));
}

export function refNodeHash(l: Uint8Array, r: Uint8Array): Uint8Array {
  return sha256(Buffer.concat([Buffer.from([1]), l, r]));
}

function k(n: number): number {
  let p = 1;
  while (p * 2 < n) p *= 2;
  return p;
}

export function mth(leaves: Uint8Array[]): Uint8Array {
  if (leaves.length === 0) return sha256(new Uint8Array(0));
  if (leaves.length === 1) return refLeafHash(leaves[0]!);
  const s = k(leaves.length);
  return refNodeHash(mth(leaves.slice(0, s)), mth(leaves.slice(s)));
}

export function path(m: number, leaves: Uint8Array[]): Uint8Array[] {
  if (leaves.length <= 1) return [];
  const s = k(leaves.length);
  return m < s
    ? [...path(m, leaves.slice(0, s)), mth(leaves.slice(s))]
    : [...path(m - s, leaves.slice(s)), mth(leaves.slice(0, s))];
}

function subproof(m: number, leaves: Uint8Array[], b: boolean): Uint8Array[] {
  const n = leaves.length;
  if (m === n) return b ? [] : [mth(leaves)];
  const s = k(n);
  return m <= s
    ? [...subproof(m, leaves.slice(0, s), b), mth(leaves.slice(s))]
    : [...subproof(m - s, leaves.slice(s), false), mth(leaves.slice(0, s))];
}

export function consistency(m: number, leaves: Uint8Array[]): Uint8Array[] {
  return subproof(m, leaves, true);
}
