/**
 * SMART on FHIR at a node over real HTTP on 127.0.0.1: discovery, each grant type end to end (backend
 * services with private_key_jwt, authorization code with PKCE for a staff user and for a patient signing a
 * challenge, rotating refresh tokens), and every bad input rejected with a clear 4xx: expired, tampered and
 * foreign tokens, scope escalation, PKCE mismatch, replayed and misdirected client assertions, reused codes.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT, UnsecuredJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { generateEd25519KeyPair } from '../src/crypto/index.js';
import { issueToken } from '../src/auth/index.js';
import {
  addAuthClient,
  addStaffUser,
  linkPatientKey,
  createPatientKey,
  signPatientLogin,
  signPatientTx,
  type PatientKey,
} from '../src/node.js';
import { authorizeQuery, clientAssertion, openLogin, pkce, postForm, redirectParams, useSmartNode, withKid } from './smart-helpers.js';

const node = useSmartNode('Bayside Clinic');
const tokenUrl = () => `${node.url}/auth/token`;
const fhirBase = () => `${node.url}/fhir`;
const redirectUri = 'http://127.0.0.1:9/callback';
const password = 'a long staff password';

const es384 = await generateKeyPair('ES384');
const ed25519 = await generateKeyPair('EdDSA');
const rs384 = await generateKeyPair('RS384');
const stranger = await generateKeyPair('ES384');

let patientId = '';
let otherPatientId = '';
let patientKey: PatientKey;
let unlinkedKey: PatientKey;

async function createPatient(family: string): Promise<string> {
  const r = await node.call('POST', '/fhir/Patient', node.admin, { resourceType: 'Patient', name: [{ family }] });
  expect(r.status).toBe(201);
  return r.json.id;
}

async function createObservation(subject: string, code = '8867-4'): Promise<string> {
  const r = await node.call('POST', '/fhir/Observation', node.admin, {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code }] },
    subject: { reference: `Patient/${subject}` },
  });
  expect(r.status).toBe(201);
  return r.json.id;
}

async function registerPatient(key: PatientKey): Promise<void> {
  await node.running.node.submitPatientTx(signPatientTx(key, 'patient.register', { publicKey: key.publicKey }).bytes);
}

beforeAll(async () => {
  const dataDir = node.work.path;
  const jwksFile = join(dataDir, 'jwks.json');
  writeFileSync(
    jwksFile,
    JSON.stringify({
      keys: [withKid(await exportJWK(es384.publicKey), 'es'), withKid(await exportJWK(ed25519.publicKey), 'ed'), withKid(await exportJWK(rs384.publicKey), 'rs')],
    }),
  );
  await addAuthClient({ dataDir, clientId: 'lab-feed', jwksFile, scope: 'system/Observation.rs system/Patient.r' });
  await addAuthClient({ dataDir, clientId: 'peer-node', org: node.running.node.config.orgId, scope: 'system/*.rs' });
  await addAuthClient({ dataDir, clientId: 'chart-app', name: 'Chart <App>', redirectUris: [redirectUri], scope: 'user/*.cruds patient/*.rs launch/patient offline_access' });
  await addAuthClient({ dataDir, clientId: 'other-app', redirectUris: ['https://other.example/cb'], scope: 'user/*.rs offline_access' });
  await addStaffUser({ dataDir, username: 'dr-ana', role: 'clinician', practitioner: 'pr-1', password });
  await addStaffUser({ dataDir, username: 'audit-bo', role: 'auditor', password });
  patientId = await createPatient('Lindqvist');
  otherPatientId = await createPatient('Okafor');
  await createObservation(patientId);
  await createObservation(otherPatientId);
  patientKey = createPatientKey();
  await registerPatient(patientKey);
  await linkPatientKey(node.running.node, patientId, patientKey);
  // System clients are apps, not the custodian's staff: they read what the patient consented to (issue 4).
  const consent = { patient: patientKey.patient, provision: { type: 'permit', actors: [{ kind: 'org', id: node.running.node.config.orgId }], purposes: ['TREAT'] } };
  await node.running.node.submitPatientTx(signPatientTx(patientKey, 'consent.grant', consent).bytes);
  unlinkedKey = createPatientKey();
  await registerPatient(unlinkedKey);
});

async function backendToken(form: Record<string, string>) {
  return postForm(tokenUrl(), { grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', ...form });
}

/** Signs in as a staff user and returns the redirect's parameters. */
async function staffLogin(options: { scope: string; username?: string; password?: string; clientId?: string; redirect?: string }) {
  const { verifier, challenge } = pkce();
  const query = authorizeQuery({ clientId: options.clientId ?? 'chart-app', redirectUri: options.redirect ?? redirectUri, scope: options.scope, challenge, aud: fhirBase(), state: 'st-1' });
  const request = await openLogin(node.url, query);
  const r = await postForm(`${node.url}/auth/authorize`, { request, login: 'staff', username: options.username ?? 'dr-ana', password: options.password ?? password });
  return { r, verifier, request };
}

async function exchange(code: string, verifier: string, extra: Record<string, string> = {}) {
  return postForm(tokenUrl(), { grant_type: 'authorization_code', code, redirect_uri: redirectUri, client_id: 'chart-app', code_verifier: verifier, ...extra });
}

async function patientLogin(key: PatientKey, scope = 'patient/*.rs launch/patient offline_access') {
  const { verifier, challenge } = pkce();
  const request = await openLogin(node.url, authorizeQuery({ clientId: 'chart-app', redirectUri, scope, challenge, aud: fhirBase(), state: 'st-p' }));
  const c = await node.call('GET', `/auth/patient-challenge?request=${request}`, null);
  expect(c.status).toBe(200);
  return { request, verifier, challenge: c.json.challenge as string, message: c.json.message as string };
}

describe('discovery', () => {
  it('serves /.well-known/smart-configuration at the root and under /fhir without a token', async () => {
    for (const path of ['/.well-known/smart-configuration', '/fhir/.well-known/smart-configuration']) {
      const r = await node.call('GET', path, null);
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({
        issuer: node.url,
        jwks_uri: `${node.url}/auth/jwks`,
        authorization_endpoint: `${node.url}/auth/authorize`,
        token_endpoint: `${node.url}/auth/token`,
        grant_types_supported: ['authorization_code', 'client_credentials', 'refresh_token'],
        response_types_supported: ['code'],
        code_challenge_methods_supported: ['S256'],
        token_endpoint_auth_signing_alg_values_supported: ['EdDSA', 'ES384', 'RS384'],
      });
      expect(r.json.token_endpoint_auth_methods_supported).toContain('private_key_jwt');
      expect(r.json.capabilities).toEqual(expect.arrayContaining(['launch-standalone', 'client-public', 'client-confidential-asymmetric', 'permission-v2', 'permission-patient', 'permission-user']));
      expect(r.json.capabilities).not.toContain('sso-openid-connect');
    }
  });

  it('serves the node key at jwks_uri, and access tokens verify with it', async () => {
    const jwks = await node.call('GET', '/auth/jwks', null);
    expect(jwks.json.keys).toEqual([expect.objectContaining({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', kid: node.running.node.keyPair.keyId })]);
    expect(jwks.json.keys[0].d).toBeUndefined();
    const t = await backendToken({ client_assertion: await clientAssertion(es384.privateKey, { clientId: 'lab-feed', aud: tokenUrl(), alg: 'ES384', kid: 'es' }) });
    const { payload } = await jwtVerify(t.json.access_token, createLocalJWKSet(jwks.json));
    expect(payload).toMatchObject({ kind: 'system', client_id: 'lab-feed', sub: 'lab-feed' });
  });
});

describe('client_credentials with private_key_jwt (SMART Backend Services)', () => {
  it.each([
    ['ES384', es384, 'es'],
    ['EdDSA', ed25519, 'ed'],
    ['RS384', rs384, 'rs'],
  ] as const)('issues a 5-minute Bearer token for an %s assertion, usable within its scope only', async (alg, pair, kid) => {
    const r = await backendToken({ client_assertion: await clientAssertion(pair.privateKey, { clientId: 'lab-feed', aud: tokenUrl(), alg, kid }), scope: 'system/Observation.rs' });
    expect(r.status, r.text).toBe(200);
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(r.json).toMatchObject({ token_type: 'Bearer', expires_in: 300, scope: 'system/Observation.rs' });
    expect(r.json.refresh_token).toBeUndefined();
    const search = await node.call('GET', '/fhir/Observation?code=http://loinc.org|8867-4', r.json.access_token);
    expect(search.status).toBe(200);
    // Only the consenting patient's Observation: the other patient gave no consent.
    expect(search.json.total).toBe(1);
    expect(search.json.entry[0].resource.subject.reference).toBe(`Patient/${patientId}`);
    const write = await node.call('POST', '/fhir/Observation', r.json.access_token, { resourceType: 'Observation', status: 'final', code: { text: 'x' } });
    expect(write.status).toBe(403);
    expect(write.json.issue[0].diagnostics).toMatch(/system\/Observation\.c/);
    expect(write.headers.get('www-authenticate')).toMatch(/insufficient_scope/);
  });

  it('narrows a request for more than the client may have to what it may have', async () => {
    const r = await backendToken({ client_assertion: await clientAssertion(es384.privateKey, { clientId: 'lab-feed', aud: tokenUrl(), alg: 'ES384', kid: 'es' }), scope: 'system/*.cruds' });
    expect(r.status).toBe(200);
    expect(r.json.scope).toBe('system/Observation.rs system/Patient.r');
    const del = await node.call('DELETE', `/fhir/Patient/${patientId}`, r.json.access_token);
    expect(del.status).toBe(403);
    expect(del.json.issue[0].diagnostics).toMatch(/needs system\/Patient\.d/);
  });

  it('refuses a request for nothing the client may have (invalid_scope) and a malformed scope', async () => {
    for (const scope of ['system/Condition.rs', 'user/*.cruds', 'system/Unicorn.rs']) {
      const r = await backendToken({ client_assertion: await clientAssertion(es384.privateKey, { clientId: 'lab-feed', aud: tokenUrl(), alg: 'ES384', kid: 'es' }), scope });
      expect(r.status).toBe(400);
      expect(r.json.error).toBe('invalid_scope');
    }
  });

  it('refuses a replayed client_assertion jti', async () => {
    const assertion = await clientAssertion(es384.privateKey, { clientId: 'lab-feed', aud: tokenUrl(), alg: 'ES384', kid: 'es', jti: 'once-only' });
    expect((await backendToken({ client_assertion: assertion })).status).toBe(200);
    const replay = await backendToken({ client_assertion: assertion });
    expect(replay.status).toBe(401);
    expect(replay.json).toEqual({ error: 'invalid_client', error_description: expect.stringMatching(/jti was already used/) });
    const sameJti = await backendToken({ client_assertion: await clientAssertion(es384.privateKey, { clientId: 'lab-feed', aud: tokenUrl(), alg: 'ES384', kid: 'es', jti: 'once-only' }) });
    expect(sameJti.status).toBe(401);
  });

  it.each([
    ['another audience', { aud: 'https://elsewhere.example/auth/token' }, /aud must be the token endpoint/],
    ['the FHIR base as audience', { aud: 'FHIR' }, /aud must be the token endpoint/],
    ['exp more than five minutes ahead', { expInSeconds: 600 }, /more than five minutes/],
    ['an expired assertion', { expInSeconds: -10 }, /expired/],
    ['sub other than the client', { sub: 'someone-else' }, /claim "sub"/],
    ['an unknown client', { clientId: 'nobody', iss: 'nobody' }, /unknown client/],
  ])('refuses an assertion with %s (401 invalid_client)', async (_name, override, message) => {
    const aud = (override as { aud?: string }).aud === 'FHIR' ? fhirBase() : ((override as { aud?: string }).aud ?? tokenUrl());
    const assertion = await clientAssertion(es384.privateKey, { clientId: 'lab-feed', alg: 'ES384', kid: 'es', ...override, aud });
    const r = await backendToken({ client_assertion: assertion });
    expect(r.status).toBe(401);
    expect(r.json.error).toBe('invalid_client');
    expect(r.json.error_description).toMatch(message);
  });

  it('refuses assertions signed by another key, unsigned (alg none) or with a shared secret', async () => {
    const foreign = await clientAssertion(stranger.privateKey, { clientId: 'lab-feed', aud: tokenUrl(), alg: 'ES384', kid: 'es' });
    const none = new UnsecuredJWT({ jti: 'n1' }).setIssuer('lab-feed').setSubject('lab-feed').setAudience(tokenUrl()).setExpirationTime('2m').encode();
    const hs = await new SignJWT({ jti: 'h1' })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer('lab-feed')
      .setSubject('lab-feed')
      .setAudience(tokenUrl())
      .setExpirationTime('2m')
      .sign(new TextEncoder().encode('a shared secret that is long enough'));
    const expected = [/signature does not verify/, /alg must be one of|malformed/, /alg must be one of/];
    for (const [i, assertion] of [foreign, none, hs].entries()) {
      const r = await backendToken({ client_assertion: assertion });
      expect(r.status).toBe(401);
      expect(r.json.error).toBe('invalid_client');
      expect(r.json.error_description).toMatch(expected[i]!);
    }
  });

  it('authenticates a member node with its organization key on the ledger and names the org in the token', async () => {
    const key = node.running.node.keyPair.privateKey;
    const r = await backendToken({ client_assertion: await clientAssertion(key, { clientId: 'peer-node', aud: tokenUrl(), alg: 'EdDSA' }) });
    expect(r.status, r.text).toBe(200);
    const { payload } = await jwtVerify(r.json.access_token, node.running.node.keyPair.publicKey);
    expect(payload).toMatchObject({ kind: 'system', org: node.running.node.config.orgId, scope: 'system/*.rs' });
    const other = await backendToken({ client_assertion: await clientAssertion(generateEd25519KeyPair().privateKey, { clientId: 'peer-node', aud: tokenUrl(), alg: 'EdDSA' }) });
    expect(other.status).toBe(401);
  });

  it.each([
    ['no grant_type', { grant_type: '' }, 400, 'invalid_request'],
    ['an unknown grant_type', { grant_type: 'password' }, 400, 'unsupported_grant_type'],
    ['no client_assertion', { client_assertion: '' }, 401, 'invalid_client'],
    ['a wrong client_assertion_type', { client_assertion_type: 'urn:x', client_assertion: 'a.b.c' }, 400, 'invalid_request'],
    ['garbage for a JWT', { client_assertion: 'not-a-jwt' }, 401, 'invalid_client'],
    ['an app client using client_credentials', { client_id: 'chart-app', client_assertion: 'x.y.z' }, 401, 'invalid_client'],
  ])('answers %s with %i %s', async (_name, form, status, error) => {
    const r = await postForm(tokenUrl(), { grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', ...form });
    expect(r.status).toBe(status);
    expect(r.json.error).toBe(error);
  });

  it('refuses repeated parameters, a JSON body and a non-form body with a 4xx JSON error, never a 500', async () => {
    const repeated = new URLSearchParams([
      ['grant_type', 'client_credentials'],
      ['grant_type', 'client_credentials'],
    ]);
    expect((await postForm(tokenUrl(), repeated)).json.error).toBe('invalid_request');
    for (const [type, body] of [
      ['application/json', '{"grant_type":"client_credentials"}'],
      ['text/plain', 'grant_type=client_credentials'],
      ['application/json', '{not json'],
    ]) {
      const res = await fetch(tokenUrl(), { method: 'POST', headers: { 'content-type': type! }, body });
      expect(res.status).toBeGreaterThanOrEqual(400);
      expect(res.status).toBeLessThan(500);
      expect(((await res.json()) as { error: string }).error).toBe('invalid_request');
    }
    const empty = await fetch(tokenUrl(), { method: 'POST' });
    expect(empty.status).toBe(400);
  });
});

describe('access tokens at /fhir', () => {
  const read = (token: string) => node.call('GET', `/fhir/Patient/${patientId}`, token);

  it('refuses a token whose payload was changed, an unsigned one, one signed by another key and one of another node', async () => {
    const good = node.admin;
    const [h, p, s] = good.split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
    const widened = Buffer.from(JSON.stringify({ ...payload, scope: 'system/*.cruds' })).toString('base64url');
    const unsigned = new UnsecuredJWT(payload).encode();
    const otherKey = generateEd25519KeyPair();
    const forged = await issueToken({ orgId: node.running.node.config.orgId, privateKey: otherKey.privateKey, keyId: otherKey.keyId, ttlSeconds: 300, nowMs: Date.now() }, { sub: 'admin', scope: 'user/*.cruds' });
    const elsewhere = await issueToken({ orgId: 'other-clinic', privateKey: node.running.node.keyPair.privateKey, keyId: 'k', ttlSeconds: 300, nowMs: Date.now() }, { sub: 'admin', scope: 'user/*.cruds' });
    for (const [token, message] of [
      [`${h}.${widened}.${s}`, /signature/],
      [unsigned, /malformed|not issued/],
      [forged, /signature/],
      [elsewhere, /claim/],
    ] as const) {
      const r = await read(token);
      expect(r.status).toBe(401);
      expect(r.json.issue[0].diagnostics).toMatch(message);
    }
    expect((await read(good)).status).toBe(200);
  });

  it('refuses an access token once its five minutes are over', async () => {
    const r = await backendToken({ client_assertion: await clientAssertion(es384.privateKey, { clientId: 'lab-feed', aud: tokenUrl(), alg: 'ES384', kid: 'es' }) });
    expect((await read(r.json.access_token)).status).toBe(200);
    node.advance(301_000);
    try {
      const late = await read(r.json.access_token);
      expect(late.status).toBe(401);
      expect(late.json.issue[0].diagnostics).toMatch(/expired/);
    } finally {
      node.advance(-301_000);
    }
  });
});

describe('authorization code with PKCE: staff', () => {
  it('signs a clinician in, redirects with code and state, and exchanges the code for a user token with a refresh token', async () => {
    const { r, verifier } = await staffLogin({ scope: 'user/*.cruds offline_access' });
    const params = redirectParams(r);
    expect(r.headers.get('location')!.startsWith(`${redirectUri}?`)).toBe(true);
    expect(params.get('state')).toBe('st-1');
    const t = await exchange(params.get('code')!, verifier);
    expect(t.status, t.text).toBe(200);
    expect(t.json).toMatchObject({ token_type: 'Bearer', expires_in: 300, scope: 'user/*.cruds offline_access' });
    expect(t.json.refresh_token).toEqual(expect.any(String));
    expect(t.json.patient).toBeUndefined();
    const { payload } = await jwtVerify(t.json.access_token, node.running.node.keyPair.publicKey);
    expect(payload).toMatchObject({ kind: 'user', sub: 'dr-ana', role: 'clinician', practitioner: 'pr-1', client_id: 'chart-app' });
    const created = await node.call('POST', '/fhir/Observation', t.json.access_token, { resourceType: 'Observation', status: 'final', code: { text: 'note' }, subject: { reference: `Patient/${patientId}` } });
    expect(created.status).toBe(201);
  });

  it("narrows an auditor's grant to read and search, and refuses the auditor's writes", async () => {
    const { r, verifier } = await staffLogin({ scope: 'user/*.cruds', username: 'audit-bo' });
    const t = await exchange(redirectParams(r).get('code')!, verifier);
    expect(t.json.scope).toBe('user/*.rs');
    expect((await node.call('GET', `/fhir/Patient/${patientId}`, t.json.access_token)).status).toBe(200);
    const write = await node.call('PUT', `/fhir/Patient/${patientId}`, t.json.access_token, { resourceType: 'Patient', id: patientId });
    expect(write.status).toBe(403);
    expect(write.json.issue[0].diagnostics).toMatch(/user\/Patient\.u/);
  });

  it('serves an escaped login page and answers a wrong password or unknown user with 401, then access_denied after five', async () => {
    const { challenge } = pkce();
    const request = await openLogin(node.url, authorizeQuery({ clientId: 'chart-app', redirectUri, scope: 'user/*.rs', challenge, aud: fhirBase(), state: 's5' }));
    const page = await fetch(`${node.url}/auth/authorize?${authorizeQuery({ clientId: 'chart-app', redirectUri, scope: 'user/*.rs', challenge, aud: fhirBase() })}`);
    const html = await page.text();
    expect(html).toContain('Chart &lt;App&gt;');
    expect(html).not.toContain('Chart <App>');
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    for (let i = 0; i < 4; i++) {
      const bad = await postForm(`${node.url}/auth/authorize`, { request, login: 'staff', username: i % 2 ? 'dr-ana' : 'nobody', password: 'wrong password!!' });
      expect(bad.status).toBe(401);
      expect(bad.text).toContain('wrong username or password');
    }
    const fifth = await postForm(`${node.url}/auth/authorize`, { request, login: 'staff', username: 'dr-ana', password: 'wrong password!!' });
    expect(redirectParams(fifth).get('error')).toBe('access_denied');
    expect(redirectParams(fifth).get('state')).toBe('s5');
    const after = await postForm(`${node.url}/auth/authorize`, { request, login: 'staff', username: 'dr-ana', password });
    expect(after.status).toBe(400);
  });

  it('refuses a code_verifier that does not match the challenge (PKCE), and the code is spent', async () => {
    const { r, verifier } = await staffLogin({ scope: 'user/*.rs' });
    const code = redirectParams(r).get('code')!;
    const wrong = await exchange(code, pkce().verifier);
    expect(wrong.status).toBe(400);
    expect(wrong.json).toEqual({ error: 'invalid_grant', error_description: expect.stringMatching(/PKCE/) });
    expect((await exchange(code, verifier)).json.error).toBe('invalid_grant');
  });

  it('refuses a code presented twice and revokes the refresh token the first exchange gave', async () => {
    const { r, verifier } = await staffLogin({ scope: 'user/*.rs offline_access' });
    const code = redirectParams(r).get('code')!;
    const first = await exchange(code, verifier);
    expect(first.status).toBe(200);
    const again = await exchange(code, verifier);
    expect(again.status).toBe(400);
    expect(again.json.error_description).toMatch(/already used/);
    const refresh = await postForm(tokenUrl(), { grant_type: 'refresh_token', refresh_token: first.json.refresh_token, client_id: 'chart-app' });
    expect(refresh.status).toBe(400);
    expect(refresh.json.error).toBe('invalid_grant');
  });

  it('binds the code to its client and redirect URI', async () => {
    const a = await staffLogin({ scope: 'user/*.rs' });
    const otherRedirect = await exchange(redirectParams(a.r).get('code')!, a.verifier, { redirect_uri: 'http://127.0.0.1:9/elsewhere' });
    expect(otherRedirect.json).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/redirect_uri/) });
    const b = await staffLogin({ scope: 'user/*.rs' });
    const otherClient = await exchange(redirectParams(b.r).get('code')!, b.verifier, { client_id: 'other-app' });
    expect(otherClient.json).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/another client/) });
    const unknown = await exchange('no-such-code', b.verifier);
    expect(unknown.status).toBe(400);
    const noClient = await exchange('x', b.verifier, { client_id: 'nobody' });
    expect(noClient.status).toBe(401);
  });

  it('refuses a code after its 60 seconds', async () => {
    const { r, verifier } = await staffLogin({ scope: 'user/*.rs' });
    node.advance(61_000);
    try {
      const late = await exchange(redirectParams(r).get('code')!, verifier);
      expect(late.json).toEqual({ error: 'invalid_grant', error_description: expect.stringMatching(/expired/) });
    } finally {
      node.advance(-61_000);
    }
  });

  it('never redirects to an unknown client or an unregistered redirect URI (400), and redirects other errors with state', async () => {
    const { challenge } = pkce();
    const base = { clientId: 'chart-app', redirectUri, scope: 'user/*.rs', challenge, aud: fhirBase(), state: 'zz' };
    const get = (q: URLSearchParams) => fetch(`${node.url}/auth/authorize?${q}`, { redirect: 'manual' });
    for (const q of [authorizeQuery({ ...base, clientId: 'nobody' }), authorizeQuery({ ...base, redirectUri: 'https://evil.example/cb' }), authorizeQuery({ ...base, clientId: 'lab-feed' })]) {
      const res = await get(q);
      expect(res.status).toBe(400);
      expect(res.headers.get('location')).toBeNull();
    }
    const cases: [URLSearchParams, string, RegExp][] = [
      [(() => { const q = authorizeQuery(base); q.delete('code_challenge'); return q; })(), 'invalid_request', /code_challenge/],
      [(() => { const q = authorizeQuery(base); q.set('code_challenge_method', 'plain'); return q; })(), 'invalid_request', /S256/],
      [(() => { const q = authorizeQuery(base); q.set('response_type', 'token'); return q; })(), 'unsupported_response_type', /code/],
      [authorizeQuery({ ...base, aud: 'https://elsewhere.example/fhir' }), 'invalid_request', /aud/],
      [authorizeQuery({ ...base, scope: 'system/*.rs' }), 'invalid_scope', /allowed/],
    ];
    for (const [q, error, description] of cases) {
      const res = await get(q);
      expect(res.status).toBe(302);
      const p = new URL(res.headers.get('location')!).searchParams;
      expect(p.get('error')).toBe(error);
      expect(p.get('error_description')).toMatch(description);
      expect(p.get('state')).toBe('zz');
    }
  });
});

describe('refresh tokens', () => {
  it('rotate on every use; a reused one revokes the whole grant', async () => {
    const { r, verifier } = await staffLogin({ scope: 'user/*.rs offline_access' });
    const first = await exchange(redirectParams(r).get('code')!, verifier);
    const second = await postForm(tokenUrl(), { grant_type: 'refresh_token', refresh_token: first.json.refresh_token, client_id: 'chart-app' });
    expect(second.status, second.text).toBe(200);
    expect(second.json.refresh_token).not.toBe(first.json.refresh_token);
    expect(second.json.access_token).not.toBe(first.json.access_token);
    expect((await node.call('GET', `/fhir/Patient/${patientId}`, second.json.access_token)).status).toBe(200);
    // The first refresh token used again: refused, and the rotated one dies with it.
    const reuse = await postForm(tokenUrl(), { grant_type: 'refresh_token', refresh_token: first.json.refresh_token, client_id: 'chart-app' });
    expect(reuse.json).toEqual({ error: 'invalid_grant', error_description: expect.stringMatching(/already used/) });
    const third = await postForm(tokenUrl(), { grant_type: 'refresh_token', refresh_token: second.json.refresh_token, client_id: 'chart-app' });
    expect(third.json).toEqual({ error: 'invalid_grant', error_description: expect.stringMatching(/revoked/) });
  });

  it('is bound to its client and may narrow but never widen the scope', async () => {
    const { r, verifier } = await staffLogin({ scope: 'user/*.rs offline_access' });
    const first = await exchange(redirectParams(r).get('code')!, verifier);
    const stolen = await postForm(tokenUrl(), { grant_type: 'refresh_token', refresh_token: first.json.refresh_token, client_id: 'other-app' });
    expect(stolen.json).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/another client/) });
    const wider = await postForm(tokenUrl(), { grant_type: 'refresh_token', refresh_token: first.json.refresh_token, client_id: 'chart-app', scope: 'user/*.cruds offline_access' });
    expect(wider.json.scope).toBe('user/*.rs offline_access');
    const narrower = await postForm(tokenUrl(), { grant_type: 'refresh_token', refresh_token: wider.json.refresh_token, client_id: 'chart-app', scope: 'user/Patient.r offline_access' });
    expect(narrower.json.scope).toBe('user/Patient.r offline_access');
  });

  it('is not issued without offline_access or online_access', async () => {
    const { r, verifier } = await staffLogin({ scope: 'user/*.rs' });
    const t = await exchange(redirectParams(r).get('code')!, verifier);
    expect(t.json.refresh_token).toBeUndefined();
  });
});

describe('authorization code: a patient signs a challenge', () => {
  it("signs the patient in with the ledger key, gives the local Patient id and reads only the patient's compartment", async () => {
    const login = await patientLogin(patientKey);
    expect(login.message).toBe(`healthledger-login:${node.url}:${login.challenge}`);
    const r = await postForm(`${node.url}/auth/authorize`, {
      request: login.request,
      login: 'patient',
      patient: patientKey.patient,
      challenge: login.challenge,
      signature: signPatientLogin(patientKey, node.url, login.challenge),
    });
    const t = await exchange(redirectParams(r).get('code')!, login.verifier);
    expect(t.status, t.text).toBe(200);
    expect(t.json).toMatchObject({ patient: patientId, scope: 'patient/*.rs launch/patient offline_access' });
    const { payload } = await jwtVerify(t.json.access_token, node.running.node.keyPair.publicKey);
    expect(payload).toMatchObject({ kind: 'patient', sub: patientKey.patient, patient: patientId, patient_network_id: patientKey.patient });
    const token = t.json.access_token;
    expect((await node.call('GET', `/fhir/Patient/${patientId}`, token)).status).toBe(200);
    expect((await node.call('GET', `/fhir/Patient/${otherPatientId}`, token)).status).toBe(403);
    const own = await node.call('GET', `/fhir/Observation?patient=${patientId}`, token);
    expect(own.status).toBe(200);
    expect(own.json.entry.map((e: any) => e.resource.subject.reference)).toEqual(own.json.entry.map(() => `Patient/${patientId}`));
    expect((await node.call('GET', '/fhir/Observation', token)).status).toBe(403);
    expect((await node.call('GET', `/fhir/Observation?patient=${otherPatientId}`, token)).status).toBe(403);
    const write = await node.call('POST', '/fhir/Observation', token, { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${patientId}` } });
    expect(write.status).toBe(403);
    // A patient never gets user/ scopes, whatever the app may have.
    const user = await patientLogin(patientKey, 'user/*.cruds');
    const denied = await postForm(`${node.url}/auth/authorize`, { request: user.request, login: 'patient', patient: patientKey.patient, challenge: user.challenge, signature: signPatientLogin(patientKey, node.url, user.challenge) });
    expect(redirectParams(denied).get('error')).toBe('invalid_scope');
  });

  it('refuses a bad signature, another key, an unknown patient, a used or expired challenge (401 each)', async () => {
    const login = await patientLogin(patientKey);
    const other = createPatientKey();
    const post = (form: Record<string, string>) => postForm(`${node.url}/auth/authorize`, { request: login.request, login: 'patient', ...form });
    const wrongSig = await post({ patient: patientKey.patient, challenge: login.challenge, signature: signPatientLogin(patientKey, 'http://elsewhere.example', login.challenge) });
    expect(wrongSig.status).toBe(401);
    // The challenge was spent by that attempt.
    const reused = await post({ patient: patientKey.patient, challenge: login.challenge, signature: signPatientLogin(patientKey, node.url, login.challenge) });
    expect(reused.status).toBe(401);
    expect(reused.text).toMatch(/challenge is unknown, expired or already used/);
    for (const [key, patient] of [
      [other, patientKey.patient],
      [other, other.patient],
    ] as const) {
      const c = (await node.call('GET', `/auth/patient-challenge?request=${login.request}`, null)).json.challenge;
      const r = await post({ patient, challenge: c, signature: signPatientLogin(key, node.url, c) });
      expect(r.status).toBe(401);
      expect(r.text).toMatch(/unknown patient or the signature does not verify/);
    }
    const late = await patientLogin(patientKey);
    node.advance(121_000);
    try {
      const r = await postForm(`${node.url}/auth/authorize`, { request: late.request, login: 'patient', patient: patientKey.patient, challenge: late.challenge, signature: signPatientLogin(patientKey, node.url, late.challenge) });
      expect(r.status).toBe(401);
    } finally {
      node.advance(-121_000);
    }
    expect((await node.call('GET', '/auth/patient-challenge?request=nope', null)).status).toBe(400);
  });

  it('signs in a registered patient not linked here, whose patient/ scopes then reach nothing', async () => {
    const login = await patientLogin(unlinkedKey, 'patient/*.rs');
    const r = await postForm(`${node.url}/auth/authorize`, { request: login.request, login: 'patient', patient: unlinkedKey.patient, challenge: login.challenge, signature: signPatientLogin(unlinkedKey, node.url, login.challenge) });
    const t = await exchange(redirectParams(r).get('code')!, login.verifier);
    expect(t.status).toBe(200);
    expect(t.json.patient).toBeUndefined();
    const read = await node.call('GET', `/fhir/Patient/${patientId}`, t.json.access_token);
    expect(read.status).toBe(403);
    expect(read.json.issue[0].diagnostics).toMatch(/not linked to a record at this node/);
  });
});

describe('garbage at the /auth endpoints', () => {
  it('answers every malformed request with a 4xx, never a 5xx', async () => {
    const forms = [
      '',
      '=&=&',
      'grant_type=authorization_code',
      'grant_type=authorization_code&code=&client_id=chart-app&redirect_uri=x&code_verifier=y',
      'grant_type=refresh_token&refresh_token=%00%ff&client_id=chart-app',
      `grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=${'a'.repeat(20000)}.b.c`,
      'grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=eyJhbGciOiJub25lIn0.eyJpc3MiOjF9.',
      'grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=eyJhbGciOiJFUzM4NCIsImtpZCI6ImVzIn0.eyJpc3MiOiJsYWItZmVlZCJ9.AAAA',
      '%%%',
    ];
    for (const body of forms) {
      const r = await fetch(tokenUrl(), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
      expect(r.status, body.slice(0, 80)).toBeGreaterThanOrEqual(400);
      expect(r.status, body.slice(0, 80)).toBeLessThan(500);
    }
    for (const query of ['', 'client_id=chart-app', 'client_id=chart-app&redirect_uri=%zz', 'client_id=chart-app&client_id=other-app', `client_id=chart-app&redirect_uri=${encodeURIComponent(redirectUri)}&scope=%00`]) {
      const r = await fetch(`${node.url}/auth/authorize?${query}`, { redirect: 'manual' });
      expect(r.status, query).toBeGreaterThanOrEqual(300);
      expect(r.status, query).toBeLessThan(500);
    }
    for (const body of ['', 'request=x', 'request=&login=patient', '{"request":1}']) {
      const r = await fetch(`${node.url}/auth/authorize`, { method: 'POST', headers: { 'content-type': body.startsWith('{') ? 'application/json' : 'application/x-www-form-urlencoded' }, body });
      expect(r.status, body).toBe(400);
    }
  });
});
