/**
 * `healthledger client add` and `user add` through the built CLI: one line out on success, one line and exit 2
 * on bad input with nothing stored, passwords only from a file or stdin (never argv, never stored in clear),
 * and a running node taking a new user at once. `healthledger token` still prints an admin token.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { cliPath, runCli } from './helpers.js';
import { authorizeQuery, openLogin, pkce, postForm, redirectParams, useSmartNode } from './smart-helpers.js';

const node = useSmartNode('Northgate Hospital');
const data = () => node.work.path;
const authFile = () => JSON.parse(readFileSync(join(data(), 'auth.json'), 'utf8'));

function runWithStdin(args: string[], input: string) {
  const r = spawnSync(process.execPath, [cliPath, ...args], { input, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe('healthledger client add', () => {
  it('registers a backend client from a JWK set file, printing one line', async () => {
    const { publicKey } = await generateKeyPair('ES384');
    const file = join(data(), 'lab-jwks.json');
    writeFileSync(file, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1' }] }));
    const r = runCli(['client', 'add', '--data', data(), '--id', 'lab-feed', '--jwks', file, '--scope', 'system/Observation.rs']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('registered backend client lab-feed with scope "system/Observation.rs"\n');
    expect(authFile().clients).toEqual([expect.objectContaining({ clientId: 'lab-feed', kind: 'backend', jwks: { keys: [expect.objectContaining({ kid: 'k1', crv: 'P-384' })] } })]);
    expect(statSync(join(data(), 'auth.json')).mode & 0o777).toBe(0o600);
  });

  it('registers a public app with redirect URIs and a member-node client with its org', () => {
    const app = runCli(['client', 'add', '--data', data(), '--id', 'chart', '--redirect-uri', 'https://chart.example/cb', 'http://127.0.0.1:9/cb', '--scope', 'user/*.rs patient/*.rs offline_access']);
    expect(app.status).toBe(0);
    expect(app.stdout).toBe('registered app client chart with scope "user/*.rs patient/*.rs offline_access"\n');
    const peer = runCli(['client', 'add', '--data', data(), '--id', 'peer', '--org', 'harbor-lab', '--scope', 'system/*.rs']);
    expect(peer.stdout).toBe('registered backend client peer of harbor-lab with scope "system/*.rs"\n');
    expect(authFile().clients.find((c: { clientId: string }) => c.clientId === 'chart').redirectUris).toEqual(['https://chart.example/cb', 'http://127.0.0.1:9/cb']);
  });

  it.each([
    ['a taken id', ['--id', 'lab-feed', '--org', 'harbor-lab', '--scope', 'system/*.rs'], /already registered/],
    ['no keys, org or redirect URI', ['--id', 'x1', '--scope', 'system/*.rs'], /--jwks FILE or --org ORG/],
    ['a missing JWK set file', ['--id', 'x2', '--jwks', '/nonexistent/jwks.json', '--scope', 'system/*.rs'], /not found/],
    ['an unknown scope', ['--id', 'x3', '--org', 'harbor-lab', '--scope', 'system/*.fly'], /scope/],
    ['an http redirect URI', ['--id', 'x4', '--redirect-uri', 'http://chart.example/cb', '--scope', 'patient/*.rs'], /redirectUris\[0\]/],
    ['both a JWK set and a redirect URI', ['--id', 'x5', '--org', 'harbor-lab', '--redirect-uri', 'https://a.example/cb', '--scope', 'patient/*.rs'], /no --jwks or --org/],
  ])('refuses %s with one line and exit 2, storing nothing', (_name, args, message) => {
    const before = readFileSync(join(data(), 'auth.json'), 'utf8');
    const r = runCli(['client', 'add', '--data', data(), ...args]);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(message);
    expect(readFileSync(join(data(), 'auth.json'), 'utf8')).toBe(before);
  });

  it('refuses a private key in the JWK set', async () => {
    const { privateKey } = await generateKeyPair('ES384', { extractable: true });
    const file = join(data(), 'private-jwks.json');
    writeFileSync(file, JSON.stringify({ keys: [await exportJWK(privateKey)] }));
    const r = runCli(['client', 'add', '--data', data(), '--id', 'leaky', '--jwks', file, '--scope', 'system/*.rs']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/jwks\.keys\[0\]: holds private/);
  });
});

describe('healthledger user add', () => {
  it('adds a user with the password from a file, storing only its scrypt hash, and the running node signs the user in', async () => {
    const pwFile = join(data(), 'pw.txt');
    writeFileSync(pwFile, 'a very long staff password\n', { mode: 0o600 });
    const r = runCli(['user', 'add', '--data', data(), '--username', 'dr-kim', '--role', 'clinician', '--practitioner', 'pr-7', '--password-file', pwFile]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('added clinician dr-kim (Practitioner/pr-7)\n');
    const text = readFileSync(join(data(), 'auth.json'), 'utf8');
    expect(text).not.toContain('a very long staff password');
    expect(authFile().users).toEqual([expect.objectContaining({ username: 'dr-kim', role: 'clinician', practitioner: 'pr-7', password: expect.objectContaining({ alg: 'scrypt' }) })]);

    // The node was running all along: the new user signs in at once, with the password as written (no newline).
    const { verifier, challenge } = pkce();
    const request = await openLogin(node.url, authorizeQuery({ clientId: 'chart', redirectUri: 'http://127.0.0.1:9/cb', scope: 'user/*.rs', challenge, aud: `${node.url}/fhir` }));
    const login = await postForm(`${node.url}/auth/authorize`, { request, login: 'staff', username: 'dr-kim', password: 'a very long staff password' });
    const code = redirectParams(login).get('code')!;
    const t = await postForm(`${node.url}/auth/token`, { grant_type: 'authorization_code', code, redirect_uri: 'http://127.0.0.1:9/cb', client_id: 'chart', code_verifier: verifier });
    expect(t.status, t.text).toBe(200);
    expect(t.json.scope).toBe('user/*.rs');
  });

  it('reads the password from stdin', () => {
    const r = runWithStdin(['user', 'add', '--data', data(), '--username', 'audit-1', '--role', 'auditor'], 'another long password\n');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('added auditor audit-1\n');
  });

  it.each([
    ['a password on the command line', ['--username', 'u1', '--role', 'admin', '--password', 'a very long password'], 'x\n'],
    ['a short password', ['--username', 'u2', '--role', 'admin'], 'short\n'],
    ['an unknown role', ['--username', 'u3', '--role', 'superuser'], 'a very long password\n'],
    ['a taken username', ['--username', 'dr-kim', '--role', 'admin'], 'a very long password\n'],
    ['a missing password file', ['--username', 'u4', '--role', 'admin', '--password-file', '/nonexistent/pw'], ''],
  ])('refuses %s with exit 2, adding nobody', (_name, args, input) => {
    const before = readFileSync(join(data(), 'auth.json'), 'utf8');
    const r = runWithStdin(['user', 'add', '--data', data(), ...args], input);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).not.toContain('a very long password');
    expect(readFileSync(join(data(), 'auth.json'), 'utf8')).toBe(before);
  });
});

describe('healthledger token', () => {
  it('still prints a 12-hour admin token with the default scope, which reads FHIR', async () => {
    const r = runCli(['token', '--data', data()]);
    expect(r.status).toBe(0);
    const token = r.stdout.trim();
    const { payload } = await jwtVerify(token, node.running.node.keyPair.publicKey);
    expect(payload).toMatchObject({ sub: 'admin', kind: 'admin', scope: 'user/*.cruds' });
    expect(payload.exp! - payload.iat!).toBe(12 * 60 * 60);
    expect((await node.call('GET', '/fhir/Patient', token)).status).toBe(200);
    const narrow = runCli(['token', '--data', data(), '--scope', 'user/Observation.rs']).stdout.trim();
    expect((await node.call('GET', '/fhir/Patient', narrow)).status).toBe(403);
  });
});
