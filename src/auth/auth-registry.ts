/**
 * Who may ask the node for tokens: OAuth clients (SMART Backend Services clients with a public JWK set or a
 * member organization's key; public apps with registered redirect URIs, PKCE only) and staff users. The
 * `AuthRegistry` interface has one implementation today, `FileAuthRegistry`.
 */
import { importJWK, type JWK } from 'jose';
import { HlError, isOrgId, type Issue } from '../kernel/index.js';
import { parseScopes, hasResourceScope } from './scopes.js';
import { StaffRole } from './tokens.js';
import type { PasswordHash } from './passwords.js';

/** Algorithms a client may sign its `client_assertion` with (SMART asks for RS384 and ES384; EdDSA as our nodes use). */
export const clientAssertionAlgorithms = ['EdDSA', 'ES384', 'RS384'] as const;

/** A SMART Backend Services client (client-confidential-asymmetric, `client_credentials` + private_key_jwt). */
export interface BackendClient {
  kind: 'backend';
  clientId: string;
  name: string;
  /** The public keys its assertions verify with; absent for a member-node client (`org`), which uses the member key on the ledger. */
  jwks?: { keys: JWK[] };
  /** Another member organization whose node this client is. */
  org?: string;
  /** The most this client may be granted (space-separated `system/` scopes). */
  scope: string;
}

/** A public app (client-public): authorization code with PKCE S256, exact redirect URIs. */
export interface AppClient {
  kind: 'app';
  clientId: string;
  name: string;
  redirectUris: string[];
  /** The most this client may be granted (`patient/`, `user/` scopes, `launch/patient`, `offline_access`, ...). */
  scope: string;
}

export type AuthClient = BackendClient | AppClient;

/** A staff account at this node. */
export interface StaffUser {
  username: string;
  role: StaffRole;
  /** The user's Practitioner id at this node, if any. */
  practitioner?: string;
  password: PasswordHash;
}

/** The clients and staff users of a node. */
export interface AuthRegistry {
  client(clientId: string): Promise<AuthClient | undefined>;
  user(username: string): Promise<StaffUser | undefined>;
  /** Adds a client; `conflict` when its id is taken, `invalid` naming every problem. */
  addClient(client: AuthClient): Promise<void>;
  /** Adds a user; `conflict` when the username is taken. */
  addUser(user: StaffUser): Promise<void>;
}

const clientIdPattern = /^[A-Za-z0-9._-]{1,64}$/;
const usernamePattern = /^[A-Za-z0-9._@-]{1,64}$/;
const fhirIdPattern = /^[A-Za-z0-9\-.]{1,64}$/;

/**
 * A redirect URI is absolute, without fragment or credentials, https — or http on the loopback interface,
 * as RFC 8252 §7.3 allows for native apps.
 */
export function isAcceptableRedirectUri(uri: string): boolean {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    return false;
  }
  if (u.hash !== '' || uri.includes('#') || u.username !== '' || u.password !== '') return false;
  if (u.protocol === 'https:') return true;
  return u.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname);
}

async function checkJwks(jwks: unknown, issues: Issue[]): Promise<void> {
  const keys = (jwks as { keys?: unknown } | null)?.keys;
  if (typeof jwks !== 'object' || jwks === null || !Array.isArray(keys) || keys.length === 0 || keys.length > 10) {
    issues.push({ code: 'invalid', expression: 'jwks', message: 'a JWK set is {"keys": [...]} with 1 to 10 public keys' });
    return;
  }
  for (const [i, key] of (keys as Record<string, unknown>[]).entries()) {
    const at = `jwks.keys[${i}]`;
    if (typeof key !== 'object' || key === null) {
      issues.push({ code: 'invalid', expression: at, message: 'a key is a JSON object' });
      continue;
    }
    if ('d' in key || 'p' in key || 'k' in key) {
      issues.push({ code: 'invalid', expression: at, message: 'holds private or symmetric key material: register the public key only' });
      continue;
    }
    const alg =
      typeof key.alg === 'string'
        ? key.alg
        : key.kty === 'OKP' && key.crv === 'Ed25519'
          ? 'EdDSA'
          : key.kty === 'EC' && key.crv === 'P-384'
            ? 'ES384'
            : key.kty === 'RSA'
              ? 'RS384'
              : undefined;
    if (alg === undefined || !(clientAssertionAlgorithms as readonly string[]).includes(alg)) {
      issues.push({ code: 'invalid', expression: at, message: `must be an Ed25519 (EdDSA), P-384 (ES384) or RSA (RS384) public key` });
      continue;
    }
    if (key.kty === 'RSA' && typeof key.n === 'string' && key.n.length < 342) {
      issues.push({ code: 'invalid', expression: at, message: 'an RSA key needs at least 2048 bits' });
      continue;
    }
    try {
      await importJWK(key as JWK, alg);
    } catch {
      issues.push({ code: 'invalid', expression: at, message: `is not a valid ${alg} public key` });
    }
  }
}

function checkScopeFor(client: { scope?: unknown }, contexts: readonly string[], issues: Issue[]): void {
  if (typeof client.scope !== 'string' || client.scope.trim() === '') {
    issues.push({ code: 'invalid', expression: 'scope', message: 'the scopes the client may be granted are required' });
    return;
  }
  try {
    const scopes = parseScopes(client.scope);
    if (!hasResourceScope(scopes)) issues.push({ code: 'invalid', expression: 'scope', message: 'names no resource scope' });
    for (const s of scopes) {
      if (s.kind === 'resource' && !contexts.includes(s.context)) {
        issues.push({ code: 'invalid', expression: 'scope', message: `a ${contexts.includes('system') ? 'backend' : 'app'} client takes ${contexts.join('/ and ')}/ scopes only` });
        break;
      }
    }
  } catch (err) {
    issues.push({ code: 'invalid', expression: 'scope', message: (err as Error).message });
  }
}

/** Checks a client record; throws `invalid` listing every problem. */
export async function checkClient(client: AuthClient): Promise<AuthClient> {
  const issues: Issue[] = [];
  const c = client as unknown as Record<string, unknown>;
  if (typeof c.clientId !== 'string' || !clientIdPattern.test(c.clientId)) {
    issues.push({ code: 'invalid', expression: 'clientId', message: 'a client id is 1 to 64 of A-Z a-z 0-9 . _ -' });
  }
  if (typeof c.name !== 'string' || c.name.length === 0 || c.name.length > 200) issues.push({ code: 'invalid', expression: 'name', message: 'a name of 1 to 200 characters is required' });
  if (c.kind === 'backend') {
    if (c.org !== undefined && (typeof c.org !== 'string' || !isOrgId(c.org))) issues.push({ code: 'invalid', expression: 'org', message: 'is not an organization id' });
    if (c.jwks !== undefined) await checkJwks(c.jwks, issues);
    else if (c.org === undefined) issues.push({ code: 'invalid', expression: 'jwks', message: 'a backend client needs a JWK set, or an org whose member key it signs with' });
    checkScopeFor(c, ['system'], issues);
  } else if (c.kind === 'app') {
    const uris = c.redirectUris;
    if (!Array.isArray(uris) || uris.length === 0 || uris.length > 10) {
      issues.push({ code: 'invalid', expression: 'redirectUris', message: 'an app needs 1 to 10 redirect URIs' });
    } else {
      for (const [i, u] of uris.entries()) {
        if (typeof u !== 'string' || !isAcceptableRedirectUri(u)) {
          issues.push({ code: 'invalid', expression: `redirectUris[${i}]`, message: 'a redirect URI is an absolute https URL (http only on 127.0.0.1, localhost or [::1]) without fragment' });
        }
      }
    }
    checkScopeFor(c, ['patient', 'user'], issues);
  } else {
    issues.push({ code: 'invalid', expression: 'kind', message: 'kind is backend or app' });
  }
  if (issues.length > 0) throw new HlError('invalid', `the client is not valid: ${issues.map((i) => `${i.expression}: ${i.message}`).join('; ')}`, { issues });
  return client;
}

/** Checks a staff user record (the password is already hashed); throws `invalid` listing every problem. */
export function checkStaffUser(user: StaffUser): StaffUser {
  const issues: Issue[] = [];
  if (typeof user.username !== 'string' || !usernamePattern.test(user.username)) {
    issues.push({ code: 'invalid', expression: 'username', message: 'a username is 1 to 64 of A-Z a-z 0-9 . _ @ -' });
  }
  if (!(Object.values(StaffRole) as string[]).includes(user.role)) issues.push({ code: 'invalid', expression: 'role', message: 'role is clinician, admin or auditor' });
  if (user.practitioner !== undefined && (typeof user.practitioner !== 'string' || !fhirIdPattern.test(user.practitioner))) {
    issues.push({ code: 'invalid', expression: 'practitioner', message: 'a Practitioner id is 1 to 64 of A-Z a-z 0-9 - .' });
  }
  if (user.password?.alg !== 'scrypt') issues.push({ code: 'invalid', expression: 'password', message: 'the password must be an scrypt hash' });
  if (issues.length > 0) throw new HlError('invalid', `the user is not valid: ${issues.map((i) => `${i.expression}: ${i.message}`).join('; ')}`, { issues });
  return user;
}
