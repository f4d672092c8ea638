/**
 * The DEK and blind-term caches keep copies of their own: a cached key or term must not be a view into a
 * larger buffer (which it would keep alive), and a key handed to the cache is zeroed once copied.
 */
import { describe, expect, it } from 'vitest';
import { generateAesKey, wrapKey } from '../crypto/index.js';
import { BlindTermHasher, DekCache } from './sealing.js';

describe('DekCache', () => {
  it('takes a key: returns a copy of its own, zeroes the one it was given, and unwraps to the same key', () => {
    const kek = generateAesKey();
    const dek = generateAesKey();
    const original = Uint8Array.from(dek);
    const wrapped = wrapKey(kek, dek);
    const cache = new DekCache();
    const cached = cache.set('pat-1', wrapped, dek);
    expect(cached).toEqual(original);
    expect(cached.buffer.byteLength).toBe(cached.byteLength);
    expect(dek.every((b) => b === 0)).toBe(true);
    // A hit on the same wrapped bytes gives the cached key; other wrapped bytes miss and unwrap afresh.
    expect(cache.unwrap(new Map([['k', kek]]), 'pat-1', 'k', Uint8Array.from(wrapped))).toBe(cached);
    const rewrapped = wrapKey(kek, original);
    const unwrapped = cache.unwrap(new Map([['k', kek]]), 'pat-1', 'k', rewrapped);
    expect(unwrapped).toEqual(original);
    expect(unwrapped).not.toBe(cached);
    // The replaced entry was zeroed.
    expect(cached.every((b) => b === 0)).toBe(true);
  });
});

describe('BlindTermHasher', () => {
  it('caches each term as a 16-byte array of its own, equal on every call', () => {
    const hasher = new BlindTermHasher(generateAesKey());
    const term = { kind: 'token' as const, value: 'http://loinc.org|8867-4' };
    const first = hasher.termOf('Observation', 'code', term);
    expect(first.buffer.byteLength).toBe(first.byteLength);
    expect(hasher.termOf('Observation', 'code', term)).toBe(first);
    expect(hasher.termOf('Observation', 'code', { kind: 'token', value: '8867-4' })).not.toEqual(first);
  });
});
