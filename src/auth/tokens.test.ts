import { describe, expect, it } from 'vitest';
import { generateEd25519KeyPair } from '../crypto/index.js';
import { HlError } from '../kernel/index.js';
import { SignJWT } from 'jose';
import { issueToken, tokenAudience, TokenVerifier } from './index.js';

const orgId = 'summit-clinic';
const keys = generateEd25519KeyPair();
const t0 = Date.UTC(2026, 10, 24, 12);

async function token(options: { nowMs?: number; ttlSeconds?: number; privateKey?: typeof keys.privateKey; orgId?: string } = {}): Promise<string> {
  return issueToken(
    { orgId: options.orgId ?? orgId, privateKey: options.privateKey ?? keys.privateKey, keyId: keys.keyId, ttlSeconds: options.ttlSeconds ?? 60, nowMs: options.nowMs ?? t0 },
    { sub: 'admin', scope: 'user/*.cruds' },
  );
}

async function loginError(p: Promise<unknown>): Promise<HlError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(HlError);
  expect((err as HlError).code).toBe('login');
  return err as HlError;
}

describe('TokenVerifier', () => {
  it('verifies a token once and answers later uses from memory, with the same claims', async () => {
    const verifier = new TokenVerifier({ orgId, publicKey: keys.publicKey });
    const t = await token();
    const first = await verifier.verify(t, t0 + 1000);
    expect(first).toMatchObject({ sub: 'admin', scope: 'user/*.cruds', issuer: orgId });
    expect(await verifier.verify(t, t0 + 2000)).toBe(first);
  });

  it('still refuses a remembered token once it has expired', async () => {
    const verifier = new TokenVerifier({ orgId, publicKey: keys.publicKey });
    const t = await token({ ttlSeconds: 60 });
    await verifier.verify(t, t0 + 1000);
    const err = await loginError(verifier.verify(t, t0 + 61_000));
    expect(err.message).toMatch(/expired/);
  });

  it('never remembers a failure: a bad signature, another audience or issuer is refused every time', async () => {
    const verifier = new TokenVerifier({ orgId, publicKey: keys.publicKey });
    const forged = await token({ privateKey: generateEd25519KeyPair().privateKey });
    const elsewhere = await token({ orgId: 'other-clinic' });
    for (let i = 0; i < 2; i++) {
      expect((await loginError(verifier.verify(forged, t0 + 1000))).message).toMatch(/signature/);
      expect((await loginError(verifier.verify(elsewhere, t0 + 1000))).message).toMatch(/claim/);
    }
  });

  it('checks a remembered token against another verifier (another node key) afresh', async () => {
    const t = await token();
    await new TokenVerifier({ orgId, publicKey: keys.publicKey }).verify(t, t0 + 1000);
    const other = new TokenVerifier({ orgId, publicKey: generateEd25519KeyPair().publicKey });
    await loginError(other.verify(t, t0 + 1000));
  });

  it('carries the kind and context claims, and reads a token without a kind as an admin token', async () => {
    const verifier = new TokenVerifier({ orgId, publicKey: keys.publicKey });
    const base = { orgId, privateKey: keys.privateKey, keyId: keys.keyId, ttlSeconds: 60, nowMs: t0 };
    const patient = await issueToken(base, { sub: 'pat-x', scope: 'patient/*.rs', kind: 'patient', patient: 'p-1', patientNetworkId: 'pat-x', client: 'app' });
    expect(await verifier.verify(patient, t0 + 1000)).toMatchObject({ kind: 'patient', patient: 'p-1', patientNetworkId: 'pat-x', client: 'app' });
    const staff = await issueToken(base, { sub: 'ana', scope: 'user/*.rs', kind: 'user', role: 'auditor', practitioner: 'pr-1' });
    const verified = await verifier.verify(staff, t0 + 1000);
    expect(verified).toMatchObject({ kind: 'user', role: 'auditor', practitioner: 'pr-1' });
    expect(verified.patient).toBeUndefined();
    // Tokens signed by hand with the node key, with the claims a test needs.
    const handMade = (claims: Record<string, unknown>, jti: string) =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: 'EdDSA' })
        .setIssuer(orgId)
        .setSubject('admin')
        .setAudience(tokenAudience(orgId))
        .setIssuedAt(t0 / 1000)
        .setExpirationTime(t0 / 1000 + 60)
        .setJti(jti)
        .sign(keys.privateKey);
    const legacy = await handMade({ scope: 'user/*.cruds' }, 'j');
    expect((await verifier.verify(legacy, t0 + 1000)).kind).toBe('admin');
    const forgedKind = await handMade({ scope: 'user/*.cruds', kind: 'root' }, 'k');
    expect((await loginError(verifier.verify(forgedKind, t0 + 1000))).message).toMatch(/kind/);
  });
});
