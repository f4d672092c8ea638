/**
 * The node's OAuth 2.0 authorization server for SMART on FHIR (SMART App Launch v2: app-launch.html,
 * backend-services.html, client-confidential-asymmetric.html), free of HTTP framework: the api module turns
 * requests into these calls and `OAuthError`s into RFC 6749 §5.2 responses.
 *
 * - `client_credentials` with a private_key_jwt `client_assertion` (iss = sub = client_id, aud = this token
 *   endpoint, exp at most five minutes ahead, a jti never used before within its lifetime).
 * - `authorization_code` with PKCE S256 for public apps: the code lives 60 s, is single-use, and is bound to
 *   the client, its redirect URI and the code challenge. Staff sign in with a password; patients sign a
 *   single-use challenge with the Ed25519 key registered on the ledger.
 * - `refresh_token` (when `offline_access` or `online_access` is granted): rotated on every use, bound to its
 *   client; a refresh token used twice revokes every token of its grant.
 *
 * Access tokens are EdDSA JWTs signed by the node key, valid five minutes, with scope = requested ∩ the
 * client's allowed scopes ∩ what the user's role or the patient may have. Codes, refresh tokens, pending
 * logins and seen assertion ids live in memory: a restart signs everybody out (access tokens stay valid
 * until they expire) and forgets assertion ids, whose lifetime is at most five minutes.
 */
import { createHash, timingSafeEqual, type KeyObject } from 'node:crypto';
import { createLocalJWKSet, decodeJwt, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { HlError, fromBase64Url, newNonce, randomBytes, toBase64Url, type Clock } from '../kernel/index.js';
import { exportPublicJwk, verifyEd25519 } from '../crypto/index.js';
import { clientAssertionAlgorithms, type AppClient, type AuthClient, type AuthRegistry, type BackendClient } from './auth-registry.js';
import { verifyPassword } from './passwords.js';
import { formatScopes, hasResourceScope, intersectScopes, parseScopes, type SmartScope } from './scopes.js';
import { issueToken, StaffRole, TokenKind } from './tokens.js';

/** RFC 6749 §5.2 and §4.1.2.1 error codes. */
export const OAuthErrorCode = {
  invalidRequest: 'invalid_request',
  invalidClient: 'invalid_client',
  invalidGrant: 'invalid_grant',
  unauthorizedClient: 'unauthorized_client',
  unsupportedGrantType: 'unsupported_grant_type',
  invalidScope: 'invalid_scope',
  accessDenied: 'access_denied',
  unsupportedResponseType: 'unsupported_response_type',
  temporarilyUnavailable: 'temporarily_unavailable',
} as const;
export type OAuthErrorCode = (typeof OAuthErrorCode)[keyof typeof OAuthErrorCode];

/** An OAuth error response: `{ error, error_description }` with its HTTP status (400, or 401 for client authentication). */
export class OAuthError extends Error {
  constructor(
    readonly error: OAuthErrorCode,
    readonly description: string,
    readonly status: 400 | 401 | 503 = error === OAuthErrorCode.invalidClient ? 401 : 400,
  ) {
    super(description);
    this.name = 'OAuthError';
  }

  toJSON(): { error: string; error_description: string } {
    return { error: this.error, error_description: this.description };
  }
}

/** The `client_assertion_type` of private_key_jwt (RFC 7523 §2.2). */
export const jwtBearerAssertionType = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** Lifetimes. */
export const accessTokenTtlSeconds = 300;
const codeTtlMs = 60_000;
const challengeTtlMs = 120_000;
const pendingTtlMs = 10 * 60_000;
const refreshTtlMs = 24 * 60 * 60_000;
/** A client_assertion's exp may be at most this far ahead (SMART: five minutes), plus clock skew. */
const assertionMaxAheadSeconds = 300;
const assertionSkewSeconds = 30;
/** Pending logins and codes held at once; more is `temporarily_unavailable`. */
const maxPending = 10_000;
/** Failed sign-ins before a pending authorization is dropped. */
const maxLoginAttempts = 5;

/** What the server needs from the node. */
export interface AuthorizationServerDeps {
  orgId: string;
  /** The node's key: signs access tokens and is served as the JWK set. */
  keyPair: { privateKey: KeyObject; publicKey: KeyObject; keyId: string };
  registry: AuthRegistry;
  clock: Clock;
  /** The node's public base URL without a trailing slash; the token endpoint is `${baseUrl}/auth/token`. */
  baseUrl: () => string;
  /** The Ed25519 key of a patient registered on the ledger. */
  patientKey: (networkId: string) => KeyObject | undefined;
  /** The local Patient id of a registered patient linked to a record at this node. */
  localPatient: (networkId: string) => Promise<string | undefined>;
  /** The Ed25519 key of a member organization (for member-node clients registered without a JWK set). */
  memberKey: (orgId: string) => KeyObject | undefined;
}

/** A successful token response (RFC 6749 §5.1, SMART app-launch.html#response-5). */
export interface TokenResponse {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  scope: string;
  /** Local Patient id, in patient context. */
  patient?: string;
  refresh_token?: string;
}

/** Who signed in. */
type Subject =
  | { kind: 'user'; username: string; role: StaffRole; practitioner?: string }
  | { kind: 'patient'; networkId: string };

/** What a pending authorization shows on its login page. */
export interface LoginView {
  requestId: string;
  clientName: string;
  /** The scopes the client may receive (requested ∩ allowed), before the user's role narrows them. */
  scope: string;
  /** The origin a patient's signed message names. */
  origin: string;
}

interface PendingAuthorization {
  id: string;
  client: AppClient;
  redirectUri: string;
  state: string;
  scope: string;
  codeChallenge: string;
  expiresAtMs: number;
  attempts: number;
  challenge?: { value: string; expiresAtMs: number };
}

interface IssuedCode {
  clientId: string;
  redirectUri: string;
  codeChallenge: string;
  scope: string;
  subject: Subject;
  expiresAtMs: number;
  used: boolean;
  /** The refresh-token family the code's exchange started, revoked if the code is presented again. */
  family?: string;
}

interface RefreshRecord {
  family: string;
  clientId: string;
  scope: string;
  subject: Subject;
  expiresAtMs: number;
  used: boolean;
}

/** What a role, a patient or a backend system may be granted at most. */
const subjectLimits: Record<StaffRole | 'patient' | 'system', SmartScope[]> = {
  admin: parseScopes('user/*.cruds offline_access online_access'),
  clinician: parseScopes('user/*.cruds offline_access online_access'),
  auditor: parseScopes('user/*.rs offline_access online_access'),
  patient: parseScopes('patient/*.rs launch/patient offline_access online_access'),
  system: parseScopes('system/*.cruds'),
};

/** The bytes a patient signs to sign in at `origin` with `challenge` (`healthledger-login:<origin>:<challenge>`). */
export function patientLoginMessage(origin: string, challenge: string): Uint8Array {
  return new TextEncoder().encode(`healthledger-login:${origin}:${challenge}`);
}

function digest(secret: string): string {
  return createHash('sha256').update(secret).digest('base64url');
}

function sameString(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** One value of a form parameter: `invalid_request` when it is repeated (RFC 6749 §3.1), undefined when absent or empty. */
function single(params: URLSearchParams, name: string): string | undefined {
  const all = params.getAll(name);
  if (all.length > 1) throw new OAuthError(OAuthErrorCode.invalidRequest, `parameter "${name}" is repeated`);
  return all[0] === undefined || all[0] === '' ? undefined : all[0];
}

function required(params: URLSearchParams, name: string): string {
  const v = single(params, name);
  if (v === undefined) throw new OAuthError(OAuthErrorCode.invalidRequest, `parameter "${name}" is required`);
  return v;
}

function prune<V extends { expiresAtMs: number }>(map: Map<string, V>, nowMs: number, graceMs = 0): void {
  for (const [k, v] of map) if (v.expiresAtMs + graceMs <= nowMs) map.delete(k);
}

/** A pending login or the end of the authorization: where to send the browser. */
export type AuthorizeOutcome = { kind: 'login'; view: LoginView } | { kind: 'redirect'; location: string };

/** The authorization server of one node. */
export class AuthorizationServer {
  private readonly pending = new Map<string, PendingAuthorization>();
  private readonly codes = new Map<string, IssuedCode>();
  private readonly refreshTokens = new Map<string, RefreshRecord>();
  private readonly revokedFamilies = new Map<string, { expiresAtMs: number }>();
  /** `client_id jti` → exp (ms) of the client assertions already used. */
  private readonly seenAssertions = new Map<string, { expiresAtMs: number }>();

  constructor(private readonly deps: AuthorizationServerDeps) {}

  /** The token endpoint URL, the only `aud` a client assertion may carry. */
  tokenEndpoint(): string {
    return `${this.deps.baseUrl()}/auth/token`;
  }

  /** The FHIR base URL, the only `aud` an authorization request may name. */
  fhirBase(): string {
    return `${this.deps.baseUrl()}/fhir`;
  }

  private origin(): string {
    return new URL(this.deps.baseUrl()).origin;
  }

  /** The node's public key as a JWK set (`/auth/jwks`): access tokens verify with it. */
  jwks(): { keys: Record<string, string>[] } {
    return { keys: [{ ...exportPublicJwk(this.deps.keyPair.publicKey), kid: this.deps.keyPair.keyId, alg: 'EdDSA', use: 'sig' }] };
  }

  /** `/.well-known/smart-configuration` (SMART conformance.html): only what is implemented. */
  smartConfiguration(): Record<string, unknown> {
    const base = this.deps.baseUrl();
    return {
      issuer: base,
      jwks_uri: `${base}/auth/jwks`,
      authorization_endpoint: `${base}/auth/authorize`,
      token_endpoint: `${base}/auth/token`,
      grant_types_supported: ['authorization_code', 'client_credentials', 'refresh_token'],
      // `none`: public apps authenticate with PKCE only at the token endpoint (RFC 8414 §2).
      token_endpoint_auth_methods_supported: ['private_key_jwt', 'none'],
      token_endpoint_auth_signing_alg_values_supported: [...clientAssertionAlgorithms],
      scopes_supported: ['patient/*.rs', 'user/*.cruds', 'user/*.rs', 'system/*.cruds', 'system/*.rs', 'launch/patient', 'offline_access', 'online_access'],
      response_types_supported: ['code'],
      code_challenge_methods_supported: ['S256'],
      capabilities: [
        'launch-standalone',
        'client-public',
        'client-confidential-asymmetric',
        'context-standalone-patient',
        'permission-offline',
        'permission-online',
        'permission-patient',
        'permission-user',
        'permission-v1',
        'permission-v2',
      ],
    };
  }

  /** `POST /auth/token`: one of the three grants; throws `OAuthError`. */
  async token(params: URLSearchParams): Promise<TokenResponse> {
    const grantType = required(params, 'grant_type');
    if (grantType === 'client_credentials') return this.clientCredentials(params);
    if (grantType === 'authorization_code') return this.authorizationCode(params);
    if (grantType === 'refresh_token') return this.refresh(params);
    throw new OAuthError(OAuthErrorCode.unsupportedGrantType, 'grant_type must be client_credentials, authorization_code or refresh_token');
  }

  private async accessToken(subject: Subject | { kind: 'system'; client: BackendClient }, scope: string, clientId: string, patient?: string): Promise<string> {
    const base = { orgId: this.deps.orgId, privateKey: this.deps.keyPair.privateKey, keyId: this.deps.keyPair.keyId, ttlSeconds: accessTokenTtlSeconds, nowMs: this.deps.clock.nowMs() };
    if (subject.kind === 'system') {
      return issueToken(base, { sub: clientId, scope, kind: TokenKind.system, client: clientId, ...(subject.client.org ? { org: subject.client.org } : {}) });
    }
    if (subject.kind === 'user') {
      return issueToken(base, {
        sub: subject.username,
        scope,
        kind: TokenKind.user,
        role: subject.role,
        client: clientId,
        ...(subject.practitioner ? { practitioner: subject.practitioner } : {}),
      });
    }
    return issueToken(base, { sub: subject.networkId, scope, kind: TokenKind.patient, patientNetworkId: subject.networkId, client: clientId, ...(patient ? { patient } : {}) });
  }

  private requestedScopes(text: string): SmartScope[] {
    try {
      return parseScopes(text);
    } catch (err) {
      throw new OAuthError(OAuthErrorCode.invalidScope, (err as Error).message);
    }
  }

  private async clientCredentials(params: URLSearchParams): Promise<TokenResponse> {
    const assertion = single(params, 'client_assertion');
    const assertionType = single(params, 'client_assertion_type');
    if (assertion === undefined) throw new OAuthError(OAuthErrorCode.invalidClient, 'client_credentials needs client authentication: client_assertion (private_key_jwt)');
    if (assertionType !== jwtBearerAssertionType) throw new OAuthError(OAuthErrorCode.invalidRequest, `client_assertion_type must be ${jwtBearerAssertionType}`);
    let iss: unknown;
    try {
      iss = decodeJwt(assertion).iss;
    } catch {
      throw new OAuthError(OAuthErrorCode.invalidClient, 'client_assertion is not a JWT');
    }
    if (typeof iss !== 'string') throw new OAuthError(OAuthErrorCode.invalidClient, 'client_assertion has no iss (the client_id)');
    const clientIdParam = single(params, 'client_id');
    if (clientIdParam !== undefined && clientIdParam !== iss) throw new OAuthError(OAuthErrorCode.invalidClient, 'client_id differs from the client_assertion iss');
    const client = (await this.deps.registry.client(iss)) ?? this.memberClient(iss);
    if (client === undefined) throw new OAuthError(OAuthErrorCode.invalidClient, 'unknown client');
    if (client.kind !== 'backend') throw new OAuthError(OAuthErrorCode.unauthorizedClient, 'this client may not use client_credentials');
    const used = await this.verifyAssertion(client, assertion);
    const allowed = parseScopes(client.scope);
    const requested = this.requestedScopes(single(params, 'scope') ?? client.scope);
    const granted = intersectScopes(intersectScopes(requested, allowed), subjectLimits.system);
    if (!hasResourceScope(granted)) throw new OAuthError(OAuthErrorCode.invalidScope, 'none of the requested scopes is allowed for this client');
    // Only a request that succeeds uses the jti up; a refused one may be corrected and sent again.
    this.rememberAssertion(client.clientId, used);
    const scope = formatScopes(granted);
    return { access_token: await this.accessToken({ kind: 'system', client }, scope, client.clientId), token_type: 'Bearer', expires_in: accessTokenTtlSeconds, scope };
  }

  /**
   * Every other member organization's node is a backend client without registration (DESIGN.md §8): its
   * client_id is its organization id and its assertions verify with its member key on the ledger, read-only.
   */
  private memberClient(clientId: string): BackendClient | undefined {
    if (clientId === this.deps.orgId || this.deps.memberKey(clientId) === undefined) return undefined;
    return { kind: 'backend', clientId, name: `member node ${clientId}`, org: clientId, scope: 'system/*.rs' };
  }

  /** Verifies a private_key_jwt assertion (SMART client-confidential-asymmetric.html); returns its jti and expiry. */
  private async verifyAssertion(client: BackendClient, assertion: string): Promise<{ jti: string; expiresAtMs: number }> {
    let key: JWTVerifyGetKey | KeyObject;
    if (client.jwks) key = createLocalJWKSet(client.jwks);
    else {
      const member = client.org !== undefined ? this.deps.memberKey(client.org) : undefined;
      if (member === undefined) throw new OAuthError(OAuthErrorCode.invalidClient, 'the client organization has no member key on the ledger');
      key = member;
    }
    const nowMs = this.deps.clock.nowMs();
    let payload;
    try {
      ({ payload } = await jwtVerify(assertion, key as JWTVerifyGetKey, {
        algorithms: [...clientAssertionAlgorithms],
        issuer: client.clientId,
        subject: client.clientId,
        audience: this.tokenEndpoint(),
        currentDate: new Date(nowMs),
        requiredClaims: ['iss', 'sub', 'aud', 'exp', 'jti'],
      }));
    } catch (err) {
      const reason =
        err instanceof joseErrors.JWTExpired
          ? 'client_assertion has expired'
          : err instanceof joseErrors.JWTClaimValidationFailed
            ? err.claim === 'aud'
              ? `client_assertion aud must be the token endpoint ${this.tokenEndpoint()}`
              : `client_assertion claim "${err.claim}" is not valid`
            : err instanceof joseErrors.JOSEAlgNotAllowed
              ? `client_assertion alg must be one of ${clientAssertionAlgorithms.join(', ')}`
              : err instanceof joseErrors.JWSSignatureVerificationFailed
                ? 'client_assertion signature does not verify'
                : err instanceof joseErrors.JWKSNoMatchingKey || err instanceof joseErrors.JWKSMultipleMatchingKeys
                  ? 'no registered key of the client matches the client_assertion (check kid and alg)'
                  : 'client_assertion is malformed';
      throw new OAuthError(OAuthErrorCode.invalidClient, reason);
    }
    const exp = payload.exp!;
    if (exp > nowMs / 1000 + assertionMaxAheadSeconds + assertionSkewSeconds) throw new OAuthError(OAuthErrorCode.invalidClient, 'client_assertion exp is more than five minutes ahead');
    const jti = payload.jti!;
    if (jti.length === 0 || jti.length > 256) throw new OAuthError(OAuthErrorCode.invalidClient, 'client_assertion jti must have 1 to 256 characters');
    prune(this.seenAssertions, nowMs);
    if (this.seenAssertions.has(`${client.clientId} ${jti}`)) throw new OAuthError(OAuthErrorCode.invalidClient, 'client_assertion jti was already used (replay)');
    return { jti, expiresAtMs: exp * 1000 };
  }

  private rememberAssertion(clientId: string, used: { jti: string; expiresAtMs: number }): void {
    this.seenAssertions.set(`${clientId} ${used.jti}`, { expiresAtMs: used.expiresAtMs });
  }

  private async appClient(params: URLSearchParams): Promise<AppClient> {
    const clientId = required(params, 'client_id');
    const client = await this.deps.registry.client(clientId);
    if (client === undefined) throw new OAuthError(OAuthErrorCode.invalidClient, 'unknown client');
    if (client.kind !== 'app') throw new OAuthError(OAuthErrorCode.unauthorizedClient, 'this client may use client_credentials only');
    return client;
  }

  /** What the subject may be granted of `scope`, and the local Patient id in patient context. */
  private async grantFor(subject: Subject, scope: string, client: AuthClient): Promise<{ scope: string; patient?: string }> {
    let limits: SmartScope[];
    let patient: string | undefined;
    if (subject.kind === 'user') {
      const user = await this.deps.registry.user(subject.username);
      if (user === undefined) throw new OAuthError(OAuthErrorCode.invalidGrant, 'the user no longer exists');
      limits = subjectLimits[user.role];
    } else {
      limits = subjectLimits.patient;
      patient = await this.deps.localPatient(subject.networkId);
    }
    const granted = intersectScopes(intersectScopes(parseScopes(scope), parseScopes(client.scope)), limits);
    if (!hasResourceScope(granted)) {
      throw new OAuthError(OAuthErrorCode.invalidScope, subject.kind === 'user' ? "the user's role permits none of the requested scopes" : 'a patient may have patient/ read and search scopes only');
    }
    return { scope: formatScopes(granted), ...(patient !== undefined ? { patient } : {}) };
  }

  private async issueForGrant(subject: Subject, scope: string, client: AppClient, family?: string): Promise<TokenResponse & { family?: string }> {
    const grant = await this.grantFor(subject, scope, client);
    const access = await this.accessToken(subject, grant.scope, client.clientId, grant.patient);
    const out: TokenResponse & { family?: string } = { access_token: access, token_type: 'Bearer', expires_in: accessTokenTtlSeconds, scope: grant.scope, ...(grant.patient ? { patient: grant.patient } : {}) };
    const scopes = grant.scope.split(' ');
    if (scopes.includes('offline_access') || scopes.includes('online_access')) {
      const nowMs = this.deps.clock.nowMs();
      prune(this.refreshTokens, nowMs);
      const refresh = toBase64Url(randomBytes(32));
      const fam = family ?? newNonce();
      this.refreshTokens.set(digest(refresh), { family: fam, clientId: client.clientId, scope: grant.scope, subject, expiresAtMs: nowMs + refreshTtlMs, used: false });
      out.refresh_token = refresh;
      out.family = fam;
    }
    return out;
  }

  private async authorizationCode(params: URLSearchParams): Promise<TokenResponse> {
    const code = required(params, 'code');
    const redirectUri = required(params, 'redirect_uri');
    const verifier = required(params, 'code_verifier');
    const client = await this.appClient(params);
    const nowMs = this.deps.clock.nowMs();
    const issued = this.codes.get(digest(code));
    if (issued === undefined || issued.expiresAtMs <= nowMs) throw new OAuthError(OAuthErrorCode.invalidGrant, 'the code is unknown or expired');
    if (issued.used) {
      // RFC 6749 §4.1.2: a code presented twice revokes what it gave.
      if (issued.family) this.revokedFamilies.set(issued.family, { expiresAtMs: nowMs + refreshTtlMs });
      throw new OAuthError(OAuthErrorCode.invalidGrant, 'the code was already used; the tokens issued for it are revoked');
    }
    issued.used = true;
    if (issued.clientId !== client.clientId) throw new OAuthError(OAuthErrorCode.invalidGrant, 'the code was issued to another client');
    if (issued.redirectUri !== redirectUri) throw new OAuthError(OAuthErrorCode.invalidGrant, 'redirect_uri differs from the one of the authorization request');
    if (!/^[A-Za-z0-9._~-]{43,128}$/.test(verifier)) throw new OAuthError(OAuthErrorCode.invalidRequest, 'code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636)');
    if (!sameString(digest(verifier), issued.codeChallenge)) throw new OAuthError(OAuthErrorCode.invalidGrant, 'code_verifier does not match the code_challenge (PKCE)');
    const { family, ...response } = await this.issueForGrant(issued.subject, issued.scope, client);
    if (family) issued.family = family;
    return response;
  }

  private async refresh(params: URLSearchParams): Promise<TokenResponse> {
    const token = required(params, 'refresh_token');
    const client = await this.appClient(params);
    const nowMs = this.deps.clock.nowMs();
    const record = this.refreshTokens.get(digest(token));
    if (record === undefined || record.expiresAtMs <= nowMs) throw new OAuthError(OAuthErrorCode.invalidGrant, 'the refresh token is unknown or expired');
    prune(this.revokedFamilies, nowMs);
    if (this.revokedFamilies.has(record.family)) throw new OAuthError(OAuthErrorCode.invalidGrant, 'the refresh token was revoked');
    if (record.clientId !== client.clientId) throw new OAuthError(OAuthErrorCode.invalidGrant, 'the refresh token was issued to another client');
    if (record.used) {
      this.revokedFamilies.set(record.family, { expiresAtMs: nowMs + refreshTtlMs });
      throw new OAuthError(OAuthErrorCode.invalidGrant, 'the refresh token was already used; every token of this grant is revoked');
    }
    record.used = true;
    const asked = single(params, 'scope');
    const scope = asked === undefined ? record.scope : formatScopes(intersectScopes(this.requestedScopes(asked), parseScopes(record.scope)));
    if (!hasResourceScope(parseScopes(scope))) throw new OAuthError(OAuthErrorCode.invalidScope, 'none of the requested scopes was granted before');
    const { family: _f, ...response } = await this.issueForGrant(record.subject, scope, client, record.family);
    return response;
  }

  /** The redirect that reports an authorization error to the client (RFC 6749 §4.1.2.1). */
  private errorRedirect(redirectUri: string, error: OAuthErrorCode, description: string, state: string | undefined): AuthorizeOutcome {
    const u = new URL(redirectUri);
    u.searchParams.set('error', error);
    u.searchParams.set('error_description', description);
    if (state !== undefined) u.searchParams.set('state', state);
    return { kind: 'redirect', location: u.toString() };
  }

  /**
   * `GET /auth/authorize`: checks the request and opens a pending authorization whose login page the caller
   * shows. An unknown client or unregistered redirect URI throws `OAuthError` (shown, never redirected to);
   * other problems redirect to the client with `error`.
   */
  async authorize(params: URLSearchParams): Promise<AuthorizeOutcome> {
    const client = await this.appClient(params).catch((err: unknown) => {
      if (err instanceof OAuthError) throw new OAuthError(err.error === OAuthErrorCode.invalidClient ? OAuthErrorCode.invalidRequest : err.error, err.description, 400);
      throw err;
    });
    const redirectUri = required(params, 'redirect_uri');
    if (!client.redirectUris.includes(redirectUri)) throw new OAuthError(OAuthErrorCode.invalidRequest, 'redirect_uri is not registered for this client');
    let state: string | undefined;
    try {
      state = single(params, 'state');
      if (single(params, 'response_type') !== 'code') return this.errorRedirect(redirectUri, OAuthErrorCode.unsupportedResponseType, 'response_type must be code', state);
      if (state === undefined || state.length > 1024) throw new OAuthError(OAuthErrorCode.invalidRequest, 'state is required (at most 1,024 characters)');
      if (single(params, 'code_challenge_method') !== 'S256') throw new OAuthError(OAuthErrorCode.invalidRequest, 'code_challenge_method must be S256 (PKCE)');
      const codeChallenge = required(params, 'code_challenge');
      if (!/^[A-Za-z0-9_-]{43}$/.test(codeChallenge)) throw new OAuthError(OAuthErrorCode.invalidRequest, 'code_challenge must be a base64url SHA-256 (43 characters)');
      if (single(params, 'aud')?.replace(/\/$/, '') !== this.fhirBase()) throw new OAuthError(OAuthErrorCode.invalidRequest, `aud must be this FHIR server, ${this.fhirBase()}`);
      const requested = this.requestedScopes(required(params, 'scope'));
      const scopes = intersectScopes(requested, parseScopes(client.scope));
      if (!hasResourceScope(scopes)) throw new OAuthError(OAuthErrorCode.invalidScope, 'none of the requested scopes is allowed for this client');
      const nowMs = this.deps.clock.nowMs();
      prune(this.pending, nowMs);
      if (this.pending.size >= maxPending) throw new OAuthError(OAuthErrorCode.temporarilyUnavailable, 'too many sign-ins in progress; try again shortly');
      const id = toBase64Url(randomBytes(32));
      const pending: PendingAuthorization = { id, client, redirectUri, state, scope: formatScopes(scopes), codeChallenge, expiresAtMs: nowMs + pendingTtlMs, attempts: 0 };
      this.pending.set(id, pending);
      return { kind: 'login', view: this.viewOf(pending) };
    } catch (err) {
      if (err instanceof OAuthError) return this.errorRedirect(redirectUri, err.error, err.description, state);
      throw err;
    }
  }

  private viewOf(p: PendingAuthorization): LoginView {
    return { requestId: p.id, clientName: p.client.name, scope: p.scope, origin: this.origin() };
  }

  private pendingOf(requestId: string | undefined): PendingAuthorization {
    const p = requestId === undefined ? undefined : this.pending.get(requestId);
    if (p === undefined || p.expiresAtMs <= this.deps.clock.nowMs()) {
      throw new OAuthError(OAuthErrorCode.invalidRequest, 'the authorization request is unknown or expired; start again from the app');
    }
    return p;
  }

  /**
   * `GET /auth/patient-challenge`: a new single-use challenge for the pending authorization `requestId`,
   * valid two minutes (it replaces any earlier one), and the exact message the patient signs.
   */
  patientChallenge(requestId: string | undefined): { challenge: string; message: string; expires_in: number } {
    const p = this.pendingOf(requestId);
    const value = toBase64Url(randomBytes(32));
    p.challenge = { value, expiresAtMs: this.deps.clock.nowMs() + challengeTtlMs };
    return { challenge: value, message: new TextDecoder().decode(patientLoginMessage(this.origin(), value)), expires_in: challengeTtlMs / 1000 };
  }

  /**
   * `POST /auth/authorize`: signs the user in (`login=staff` with username and password, or `login=patient`
   * with the network id and a base64url Ed25519 signature of the challenge message) and redirects to the
   * client with a code. A failed sign-in gives `{ kind: 'retry' }` (401) until {@link maxLoginAttempts}.
   */
  async completeAuthorization(form: URLSearchParams): Promise<AuthorizeOutcome | { kind: 'retry'; view: LoginView; message: string }> {
    const p = this.pendingOf(single(form, 'request'));
    const login = single(form, 'login');
    let subject: Subject;
    try {
      if (login === 'staff') subject = await this.staffLogin(form);
      else if (login === 'patient') subject = this.patientLogin(form, p);
      else throw new OAuthError(OAuthErrorCode.invalidRequest, 'login must be staff or patient');
    } catch (err) {
      if (!(err instanceof HlError && err.code === 'login')) throw err;
      p.attempts++;
      if (p.attempts >= maxLoginAttempts) {
        this.pending.delete(p.id);
        return this.errorRedirect(p.redirectUri, OAuthErrorCode.accessDenied, 'too many failed sign-ins', p.state);
      }
      return { kind: 'retry', view: this.viewOf(p), message: err.message };
    }
    this.pending.delete(p.id);
    try {
      // Check now that the subject may have something of the scope, so the app hears it here, not at the token endpoint.
      await this.grantFor(subject, p.scope, p.client);
    } catch (err) {
      if (err instanceof OAuthError) return this.errorRedirect(p.redirectUri, err.error, err.description, p.state);
      throw err;
    }
    const nowMs = this.deps.clock.nowMs();
    prune(this.codes, nowMs, codeTtlMs);
    if (this.codes.size >= maxPending) return this.errorRedirect(p.redirectUri, OAuthErrorCode.temporarilyUnavailable, 'too many codes outstanding', p.state);
    const code = toBase64Url(randomBytes(32));
    this.codes.set(digest(code), { clientId: p.client.clientId, redirectUri: p.redirectUri, codeChallenge: p.codeChallenge, scope: p.scope, subject, expiresAtMs: nowMs + codeTtlMs, used: false });
    const u = new URL(p.redirectUri);
    u.searchParams.set('code', code);
    u.searchParams.set('state', p.state);
    return { kind: 'redirect', location: u.toString() };
  }

  private async staffLogin(form: URLSearchParams): Promise<Subject> {
    const username = single(form, 'username') ?? '';
    const password = single(form, 'password') ?? '';
    const user = username.length <= 64 ? await this.deps.registry.user(username) : undefined;
    await verifyPassword(password, user?.password);
    return { kind: 'user', username: user!.username, role: user!.role, ...(user!.practitioner ? { practitioner: user!.practitioner } : {}) };
  }

  private patientLogin(form: URLSearchParams, p: PendingAuthorization): Subject {
    const challenge = p.challenge;
    // Single use: whatever happens next, this challenge is spent.
    delete p.challenge;
    const networkId = single(form, 'patient') ?? '';
    const given = single(form, 'challenge') ?? '';
    const signature = single(form, 'signature') ?? '';
    if (challenge === undefined || challenge.expiresAtMs <= this.deps.clock.nowMs() || !sameString(given, challenge.value)) {
      throw new HlError('login', 'the challenge is unknown, expired or already used; ask for a new one');
    }
    const key = /^pat-[a-z2-7]{26}$/.test(networkId) ? this.deps.patientKey(networkId) : undefined;
    let sig: Uint8Array;
    try {
      sig = fromBase64Url(signature);
    } catch {
      sig = new Uint8Array(0);
    }
    if (key === undefined || !verifyEd25519(key, patientLoginMessage(this.origin(), challenge.value), sig)) {
      throw new HlError('login', 'unknown patient or the signature does not verify');
    }
    return { kind: 'patient', networkId };
  }
}
