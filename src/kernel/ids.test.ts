import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HlError, fromBase64Url, isOrgId, newNonce, newResourceId, orgIdFromName, randomBytes } from './index.js';

const orgIdPattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])$/;

describe('orgIdFromName', () => {
  it.each([
    ['General Hospital', 'general-hospital'],
    ["St. Mary's Hospital", 'st-mary-s-hospital'],
    ['Hôpital Saint-Éloi', 'hopital-saint-eloi'],
    ['Åbo Lab', 'abo-lab'],
    ['  Clinic  ', 'clinic'],
    ['--Clinic--', 'clinic'],
    ['Lab+Pharmacy', 'lab-pharmacy'],
    ['ACME   Labs,  Inc.', 'acme-labs-inc'],
    ['ﬁrst clinic', 'first-clinic'],
    ['Clinic 42', 'clinic-42'],
    ['東京病院 Tokyo', 'tokyo'],
  ])('maps %j to %j', (name, id) => {
    expect(orgIdFromName(name)).toBe(id);
  });

  it.each(['', 'A', '7', '   ', '!!!', '--', '東京病院', '😀😀'])('rejects %j (fewer than two letters or digits)', (name) => {
    let caught: unknown;
    try {
      orgIdFromName(name);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(HlError);
    expect((caught as HlError).code).toBe('invalid');
  });

  it('truncates long names to at most 63 characters without a trailing dash', () => {
    const id = orgIdFromName(`${'a'.repeat(62)} b`);
    expect(id).toBe('a'.repeat(62));
    expect(orgIdFromName('x'.repeat(200))).toBe('x'.repeat(63));
    expect(orgIdFromName(`${'a'.repeat(62)}-${'b'.repeat(10)}`)).toBe('a'.repeat(62));
  });

  it('always yields a well-formed id usable as a C2SP key name (no spaces, no "+"), and is idempotent', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 120, unit: 'grapheme' }), (name) => {
        let id: string;
        try {
          id = orgIdFromName(name);
        } catch (err) {
          expect(err).toBeInstanceOf(HlError);
          expect((err as HlError).code).toBe('invalid');
          return;
        }
        expect(id).toMatch(orgIdPattern);
        expect(id).not.toMatch(/[\s+]/u);
        expect(isOrgId(id)).toBe(true);
        expect(orgIdFromName(id)).toBe(id);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('isOrgId', () => {
  it.each(['ab', 'a-b', 'a1', '00', 'general-hospital', 'a'.repeat(63)])('accepts %j', (id) => {
    expect(isOrgId(id)).toBe(true);
  });

  it.each(['', 'a', '-ab', 'ab-', 'Ab', 'a_b', 'a b', 'a+b', 'a.b', 'é1', 'a'.repeat(64)])('rejects %j', (id) => {
    expect(isOrgId(id)).toBe(false);
  });
});

describe('randomBytes / newNonce', () => {
  it('returns the requested number of bytes, different each time', () => {
    expect(randomBytes(0).length).toBe(0);
    const a = randomBytes(32);
    const b = randomBytes(32);
    expect(a.length).toBe(32);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(false);
  });

  it('never hands out the same bytes twice, across many refills of its pool, and serves long requests too', () => {
    const seen = new Set<string>();
    // 20,000 × 12 bytes is about thirty pools; a repeat of 12 random bytes has odds of about 2^-69.
    for (let i = 0; i < 20_000; i++) seen.add(Buffer.from(randomBytes(12)).toString('hex'));
    expect(seen.size).toBe(20_000);
    const long = randomBytes(100_000);
    expect(long.length).toBe(100_000);
    // Uniform bytes: each value about 390 times; a stuck or zeroed source would be far off.
    const counts = new Array<number>(256).fill(0);
    for (const x of long) counts[x]!++;
    expect(Math.min(...counts)).toBeGreaterThan(250);
    expect(Math.max(...counts)).toBeLessThan(550);
    const odd = [randomBytes(1), randomBytes(255), randomBytes(256), randomBytes(257)];
    expect(odd.map((b) => b.length)).toEqual([1, 255, 256, 257]);
  });

  it('makes 128-bit base64url nonces that do not repeat', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const nonce = newNonce();
      expect(nonce).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect(fromBase64Url(nonce).length).toBe(16);
      seen.add(nonce);
    }
    expect(seen.size).toBe(1000);
  });
});

describe('newResourceId', () => {
  it('is a version 7 UUID carrying the given time, a valid FHIR id', () => {
    const id = newResourceId(Date.UTC(2026, 10, 24, 12, 0, 0, 7));
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(id).toMatch(/^[A-Za-z0-9\-.]{1,64}$/);
    expect(parseInt(id.replace(/-/g, '').slice(0, 12), 16)).toBe(Date.UTC(2026, 10, 24, 12, 0, 0, 7));
  });

  it('sorts by time, and differs within one millisecond', () => {
    const ms = Date.UTC(2026, 0, 1);
    const later = [ms, ms + 1, ms + 1000, ms + 86_400_000].map((t) => newResourceId(t));
    expect([...later].sort()).toEqual(later);
    const same = new Set(Array.from({ length: 1000 }, () => newResourceId(ms)));
    expect(same.size).toBe(1000);
  });
});
