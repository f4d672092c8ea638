import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { HlError } from '../kernel/index.js';
import { FileAuthRegistry, hashPassword, verifyPassword, type AuthClient } from './index.js';

const dir = mkdtempSync(join(tmpdir(), 'hl-auth-registry-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function publicJwk(type: 'ed25519' | 'ec' | 'rsa') {
  const pair = type === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'P-384' }) : type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ed25519');
  return { pub: await exportJWK(pair.publicKey), priv: await exportJWK(pair.privateKey) };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(HlError);
  return (err as HlError).code;
}

describe('FileAuthRegistry', () => {
  it('keeps clients and users in a 0600 file written whole, and a second instance reads them', async () => {
    const file = join(dir, 'auth.json');
    const registry = new FileAuthRegistry(file);
    expect(await registry.client('lab-system')).toBeUndefined();
    const { pub } = await publicJwk('ec');
    await registry.addClient({ kind: 'backend', clientId: 'lab-system', name: 'Lab', jwks: { keys: [pub] }, scope: 'system/Observation.cruds' });
    await registry.addUser({ username: 'ana', role: 'clinician', practitioner: 'pr-1', password: await hashPassword('correct horse battery') });
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    const other = new FileAuthRegistry(file);
    expect(await other.client('lab-system')).toMatchObject({ kind: 'backend', scope: 'system/Observation.cruds' });
    expect(await other.user('ana')).toMatchObject({ role: 'clinician', practitioner: 'pr-1' });
    // The file never holds the password itself.
    expect(readFileSync(file, 'utf8')).not.toContain('correct horse');
  });

  it('sees a change another writer made (a running node and the CLI share the file)', async () => {
    const file = join(dir, 'shared.json');
    const node = new FileAuthRegistry(file);
    expect(await node.client('app-1')).toBeUndefined();
    await new FileAuthRegistry(file).addClient({ kind: 'app', clientId: 'app-1', name: 'App', redirectUris: ['https://app.example/cb'], scope: 'patient/*.rs' });
    expect(await node.client('app-1')).toMatchObject({ kind: 'app' });
  });

  it('refuses a taken client id or username (conflict)', async () => {
    const registry = new FileAuthRegistry(join(dir, 'conflict.json'));
    const app: AuthClient = { kind: 'app', clientId: 'a', name: 'A', redirectUris: ['https://a.example/cb'], scope: 'user/*.rs' };
    await registry.addClient(app);
    expect(await codeOf(registry.addClient(app))).toBe('conflict');
    const password = await hashPassword('a long enough password');
    await registry.addUser({ username: 'u', role: 'auditor', password });
    expect(await codeOf(registry.addUser({ username: 'u', role: 'admin', password }))).toBe('conflict');
  });

  it.each([
    ['a private key in the JWK set', async () => ({ kind: 'backend', clientId: 'b', name: 'B', jwks: { keys: [(await publicJwk('ed25519')).priv] }, scope: 'system/*.rs' }), /private/],
    ['a P-256 key', async () => ({ kind: 'backend', clientId: 'b', name: 'B', jwks: { keys: [await exportJWK(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey)] }, scope: 'system/*.rs' }), /Ed25519|P-384|RSA/],
    ['no keys and no org', async () => ({ kind: 'backend', clientId: 'b', name: 'B', scope: 'system/*.rs' }), /JWK set/],
    ['user/ scopes for a backend', async () => ({ kind: 'backend', clientId: 'b', name: 'B', jwks: { keys: [(await publicJwk('rsa')).pub] }, scope: 'user/*.rs' }), /system\/ scopes only/],
    ['an http redirect URI off loopback', async () => ({ kind: 'app', clientId: 'c', name: 'C', redirectUris: ['http://app.example/cb'], scope: 'patient/*.rs' }), /redirectUris\[0\]/],
    ['a redirect URI with a fragment', async () => ({ kind: 'app', clientId: 'c', name: 'C', redirectUris: ['https://app.example/cb#x'], scope: 'patient/*.rs' }), /redirectUris\[0\]/],
    ['a bad client id', async () => ({ kind: 'app', clientId: 'a b', name: 'C', redirectUris: ['https://app.example/cb'], scope: 'patient/*.rs' }), /clientId/],
    ['an unknown scope', async () => ({ kind: 'app', clientId: 'c', name: 'C', redirectUris: ['https://app.example/cb'], scope: 'patient/Unicorn.rs' }), /scope/],
    ['a bad org id', async () => ({ kind: 'backend', clientId: 'b', name: 'B', org: 'Not An Org', scope: 'system/*.rs' }), /org/],
  ])('refuses a client with %s, naming it', async (_name, make, message) => {
    const registry = new FileAuthRegistry(join(dir, 'invalid.json'));
    const err = await registry.addClient((await make()) as AuthClient).then(() => null, (e: unknown) => e);
    expect((err as HlError).code).toBe('invalid');
    expect((err as HlError).message).toMatch(message);
    expect(await registry.client((await make()).clientId as string)).toBeUndefined();
  });

  it('accepts Ed25519, P-384 and RSA public keys and a member-node client without keys', async () => {
    const registry = new FileAuthRegistry(join(dir, 'keys.json'));
    const keys = [(await publicJwk('ed25519')).pub, (await publicJwk('ec')).pub, (await publicJwk('rsa')).pub];
    await registry.addClient({ kind: 'backend', clientId: 'k', name: 'K', jwks: { keys }, scope: 'system/*.read' });
    await registry.addClient({ kind: 'backend', clientId: 'peer', name: 'Peer', org: 'harbor-lab', scope: 'system/*.rs' });
    expect((await registry.client('k'))?.kind).toBe('backend');
  });

  it('reports a damaged file instead of starting empty', async () => {
    const file = join(dir, 'damaged.json');
    writeFileSync(file, '{"version":1,"clients":');
    expect(await codeOf(new FileAuthRegistry(file).client('x'))).toBe('invalid');
  });
});

describe('passwords', () => {
  it('verifies the right password and refuses a wrong one or an unknown user with the same message', async () => {
    const hash = await hashPassword('correct horse battery');
    expect(hash).toMatchObject({ alg: 'scrypt', N: 32768, r: 8, p: 1 });
    await verifyPassword('correct horse battery', hash);
    // One at a time: a rejection created before it is awaited would be reported as unhandled.
    for (const attempt of [() => verifyPassword('correct horse batterY', hash), () => verifyPassword('correct horse battery', undefined)]) {
      const err = await attempt().then(() => null, (e: unknown) => e);
      expect((err as HlError).code).toBe('login');
      expect((err as HlError).message).toBe('wrong username or password');
    }
  });

  it('salts every hash and refuses short passwords', async () => {
    const [a, b] = [await hashPassword('same password twice'), await hashPassword('same password twice')];
    expect(a.salt).not.toBe(b.salt);
    expect(a.hash).not.toBe(b.hash);
    expect(await codeOf(hashPassword('short'))).toBe('invalid');
  });
});
