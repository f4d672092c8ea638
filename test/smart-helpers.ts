/**
 * Helpers for the SMART on FHIR tests: a node on 127.0.0.1 whose clock a test can move forward, form posts,
 * PKCE pairs, client assertions, and the browser's side of an authorization-code login.
 */
import { createHash, randomBytes } from 'node:crypto';
import { SignJWT, type CryptoKey, type JWK } from 'jose';
import { afterAll, beforeAll, expect } from 'vitest';
import type { KeyObject } from 'node:crypto';
import { issueAdminToken, initNode, startNode, type RunningNode } from '../src/node.js';
import { tempDir, type FhirCall } from './helpers.js';

/** A node whose clock runs `skewMs` ahead of the wall clock (tests move it to expire codes and tokens). */
export function useSmartNode(org: string): {
  work: { path: string };
  readonly running: RunningNode;
  readonly url: string;
  readonly admin: string;
  advance(ms: number): void;
  call(method: string, path: string, token: string | null, body?: unknown, headers?: Record<string, string>): Promise<FhirCall>;
} {
  const work = tempDir('hl-smart-');
  let running: RunningNode | undefined;
  let admin = '';
  let skewMs = 0;
  const clock = { nowMs: () => Date.now() + skewMs };
  beforeAll(async () => {
    await initNode({ org, dataDir: work.path });
    running = await startNode({ dataDir: work.path, port: 0, clock });
    admin = await issueAdminToken({ dataDir: work.path, clock });
  });
  afterAll(async () => {
    await running?.close();
    work.cleanup();
  });
  return {
    work,
    get running() {
      return running!;
    },
    get url() {
      return running!.url;
    },
    get admin() {
      return admin;
    },
    advance(ms: number) {
      skewMs += ms;
    },
    async call(method, path, token, body, headers = {}) {
      const res = await fetch(`${running!.url}${path}`, {
        method,
        headers: {
          ...(token !== null ? { authorization: `Bearer ${token}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/fhir+json' } : {}),
          ...headers,
        },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
        redirect: 'manual',
      });
      return readAnswer(res);
    },
  };
}

/** POSTs a form (application/x-www-form-urlencoded) and reads the answer, never following a redirect. */
export async function postForm(url: string, form: Record<string, string> | URLSearchParams): Promise<FhirCall> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: (form instanceof URLSearchParams ? form : new URLSearchParams(form)).toString(),
    redirect: 'manual',
  });
  return readAnswer(res);
}

/** An answer as a test reads it; `json` is undefined when the body is not JSON (login pages are HTML). */
async function readAnswer(res: Response): Promise<FhirCall> {
  const text = await res.text();
  let json: any;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** A PKCE S256 pair (RFC 7636). */
export function pkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

/** A private_key_jwt client assertion (SMART client-confidential-asymmetric), every claim overridable. */
export async function clientAssertion(
  key: CryptoKey | KeyObject,
  options: { clientId: string; aud: string; alg: string; kid?: string; expInSeconds?: number; jti?: string; sub?: string; iss?: string; nowMs?: number },
): Promise<string> {
  const now = Math.floor((options.nowMs ?? Date.now()) / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: options.alg, typ: 'JWT', ...(options.kid ? { kid: options.kid } : {}) })
    .setIssuer(options.iss ?? options.clientId)
    .setSubject(options.sub ?? options.clientId)
    .setAudience(options.aud)
    .setIssuedAt(now)
    .setExpirationTime(now + (options.expInSeconds ?? 240))
    .setJti(options.jti ?? randomBytes(16).toString('hex'))
    .sign(key);
}

/** The public JWK of a jose key with its kid. */
export function withKid(jwk: JWK, kid: string): JWK {
  return { ...jwk, kid };
}

/** The authorization request query of an app (SMART app-launch.html#request-4). */
export function authorizeQuery(options: { clientId: string; redirectUri: string; scope: string; challenge: string; aud: string; state?: string }): URLSearchParams {
  return new URLSearchParams({
    response_type: 'code',
    client_id: options.clientId,
    redirect_uri: options.redirectUri,
    scope: options.scope,
    state: options.state ?? randomBytes(8).toString('hex'),
    code_challenge: options.challenge,
    code_challenge_method: 'S256',
    aud: options.aud,
  });
}

/** Opens a login page and returns its pending request id. */
export async function openLogin(base: string, query: URLSearchParams): Promise<string> {
  const res = await fetch(`${base}/auth/authorize?${query}`, { redirect: 'manual' });
  const html = await res.text();
  expect(res.status, html).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/text\/html/);
  const m = /name="request" value="([A-Za-z0-9_-]+)"/.exec(html);
  expect(m).not.toBeNull();
  return m![1]!;
}

/** The `code`, `state` and `error` a redirect carries. */
export function redirectParams(r: FhirCall): URLSearchParams {
  expect(r.status, r.text).toBe(302);
  return new URL(r.headers.get('location')!).searchParams;
}
