import { describe, expect, it } from 'vitest';
import { canonicalBytes } from '../crypto/index.js';
import { hlErrorOf } from '../../test/hl-error.js';
import { commitmentOf, generateSalt } from './index.js';

describe('commitmentOf (DESIGN.md §3)', () => {
  it('is hex SHA-256(salt || content), checked against a vector computed with Python hashlib', () => {
    // python3: hashlib.sha256(bytes(32) + b'{"resourceType":"Patient"}').hexdigest()
    expect(commitmentOf(new Uint8Array(32), canonicalBytes({ resourceType: 'Patient' }))).toBe(
      '72d3c6def1623b89867b1c37f57a7b4639a98106fe7bbee2228f811d46f472d0',
    );
  });

  it('differs for the same content under different salts, so a guessed record cannot be confirmed', () => {
    const content = canonicalBytes({ resourceType: 'Patient', name: [{ family: 'Doe' }] });
    expect(commitmentOf(generateSalt(), content)).not.toBe(commitmentOf(generateSalt(), content));
  });

  it.each([0, 16, 31, 33])('rejects a %i-byte salt', (n) => {
    expect(hlErrorOf(() => commitmentOf(new Uint8Array(n), new Uint8Array(0))).code).toBe('invalid');
  });
});

describe('generateSalt', () => {
  it('returns 32 fresh random bytes', () => {
    const a = generateSalt();
    expect(a).toHaveLength(32);
    expect(Buffer.from(a).equals(Buffer.from(generateSalt()))).toBe(false);
  });
});
