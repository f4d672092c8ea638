/**
 * Bearer tokens signed by the node's organization key (EdDSA JWTs, RFC 8037), verified with jose: the access
 * tokens of the SMART token endpoint (`authorization-server.ts`) and the administration tokens that
 * `healthledger token` prints (kind `admin`).
 */
import type { KeyObject } from 'node:crypto';
import { SignJWT, errors as joseErrors, jwtVerify } from 'jose';
import { HlError, newNonce } from '../kernel/index.js';

/** Who a token speaks for. */
export const TokenKind = { admin: 'admin', user: 'user', patient: 'patient', system: 'system' } as const;
export type TokenKind = (typeof TokenKind)[keyof typeof TokenKind];

/** A staff user's role at the node. */
export const StaffRole = { clinician: 'clinician', admin: 'admin', auditor: 'auditor' } as const;
export type StaffRole = (typeof StaffRole)[keyof typeof StaffRole];

/** Claims the node puts in a token. */
export interface TokenClaims {
  /** Who the token is for: `admin` for `healthledger token`, a username, a patient network id or a client id. */
  sub: string;
  /** Space-separated SMART v2 scopes, e.g. `user/*.cruds`. */
  scope: string;
  /** Default `admin`. */
  kind?: TokenKind;
  /** Staff role (kind `user`). */
  role?: StaffRole;
  /** The staff user's Practitioner id at this node. */
  practitioner?: string;
  /** Local Patient id of the patient in context (patient logins linked at this node). */
  patient?: string;
  /** Network id of the patient who signed in (kind `patient`). */
  patientNetworkId?: string;
  /** The OAuth client the token was issued to. */
  client?: string;
  /** Another member organization whose node the client is (member-node clients). */
  org?: string;
}

/** A verified token. */
export interface VerifiedToken extends TokenClaims {
  kind: TokenKind;
  issuer: string;
  expiresAt: Date;
  jti: string;
}

/** JWT claim names of the optional claims (RFC 9068 names where there is one). */
const claimNames = {
  kind: 'kind',
  role: 'role',
  practitioner: 'practitioner',
  patient: 'patient',
  patientNetworkId: 'patient_network_id',
  client: 'client_id',
  org: 'org',
} as const;

/** The audience a node's tokens are issued for. */
export function tokenAudience(orgId: string): string {
  return `healthledger:${orgId}`;
}

const scopePattern = /^(?:(?:patient|user|system)\/(?:\*|[A-Z][A-Za-z]+)\.(?:c?r?u?d?s?|read|write|\*)(?:\?[^\s]*)?|openid|fhirUser|launch(?:\/patient)?|offline_access)$/;

/** Checks a space-separated scope string (SMART v1/v2 forms); throws `invalid` naming the first bad scope. */
export function checkScope(scope: string): string {
  const scopes = scope.trim().split(/\s+/).filter(Boolean);
  if (scopes.length === 0) throw new HlError('invalid', 'scope is empty');
  for (const s of scopes) if (!scopePattern.test(s)) throw new HlError('invalid', `unknown scope "${s}"`);
  return scopes.join(' ');
}

/** Issues a token signed by `privateKey` (Ed25519), valid for `ttlSeconds`. */
export async function issueToken(
  options: { orgId: string; privateKey: KeyObject; keyId: string; ttlSeconds: number; nowMs: number },
  claims: TokenClaims,
): Promise<string> {
  const iat = Math.floor(options.nowMs / 1000);
  const extra: Record<string, string> = { [claimNames.kind]: claims.kind ?? TokenKind.admin };
  for (const key of ['role', 'practitioner', 'patient', 'patientNetworkId', 'client', 'org'] as const) {
    const value = claims[key];
    if (value !== undefined) extra[claimNames[key]] = value;
  }
  return new SignJWT({ scope: checkScope(claims.scope), ...extra })
    .setProtectedHeader({ alg: 'EdDSA', kid: options.keyId, typ: 'JWT' })
    .setIssuer(options.orgId)
    .setSubject(claims.sub)
    .setAudience(tokenAudience(options.orgId))
    .setIssuedAt(iat)
    .setExpirationTime(iat + options.ttlSeconds)
    .setJti(newNonce())
    .sign(options.privateKey);
}

/** Verifies a token issued by this node; throws HlError `login` naming why (expired, bad signature, wrong audience...). */
export async function verifyToken(
  token: string,
  options: { orgId: string; publicKey: KeyObject; nowMs: number },
): Promise<VerifiedToken> {
  try {
    const { payload } = await jwtVerify(token, options.publicKey, {
      algorithms: ['EdDSA'],
      issuer: options.orgId,
      audience: tokenAudience(options.orgId),
      currentDate: new Date(options.nowMs),
      requiredClaims: ['exp', 'iat', 'sub', 'jti'],
    });
    if (typeof payload.scope !== 'string') throw new HlError('login', 'token has no scope');
    // Tokens made before kinds existed were all `healthledger token` tokens.
    const kind = payload[claimNames.kind] ?? TokenKind.admin;
    if (typeof kind !== 'string' || !(Object.values(TokenKind) as string[]).includes(kind)) throw new HlError('login', 'token kind is not valid here');
    const verified: VerifiedToken = {
      sub: payload.sub!,
      scope: payload.scope,
      kind: kind as TokenKind,
      issuer: payload.iss!,
      expiresAt: new Date(payload.exp! * 1000),
      jti: payload.jti!,
    };
    for (const key of ['role', 'practitioner', 'patient', 'patientNetworkId', 'client', 'org'] as const) {
      const value = payload[claimNames[key]];
      if (value === undefined) continue;
      if (typeof value !== 'string') throw new HlError('login', `token claim "${claimNames[key]}" is not valid here`);
      (verified as unknown as Record<string, string>)[key] = value;
    }
    if (verified.role !== undefined && !(Object.values(StaffRole) as string[]).includes(verified.role)) throw new HlError('login', 'token claim "role" is not valid here');
    return verified;
  } catch (err) {
    if (err instanceof HlError) throw err;
    const reason =
      err instanceof joseErrors.JWTExpired
        ? 'token has expired'
        : err instanceof joseErrors.JWTClaimValidationFailed
          ? `token claim "${err.claim}" is not valid here`
          : err instanceof joseErrors.JWSSignatureVerificationFailed
            ? 'token signature does not verify'
            : 'token is malformed or not issued by this node';
    throw new HlError('login', reason, { cause: err });
  }
}

/** Verified tokens remembered per verifier (a client reuses its token for every request). */
const maxCachedTokens = 1024;

/**
 * Verifies this node's tokens ({@link verifyToken}) and remembers the verified ones until they expire, so a
 * client's every request does not pay an Ed25519 verification (~170 µs, most of a read). Only successes
 * are kept, keyed by the whole token string; the clock is checked on every use.
 */
export class TokenVerifier {
  private readonly verified = new Map<string, VerifiedToken>();

  constructor(private readonly options: { orgId: string; publicKey: KeyObject }) {}

  async verify(token: string, nowMs: number): Promise<VerifiedToken> {
    const hit = this.verified.get(token);
    if (hit !== undefined) {
      if (hit.expiresAt.getTime() > nowMs) return hit;
      this.verified.delete(token);
    }
    const fresh = await verifyToken(token, { ...this.options, nowMs });
    if (this.verified.size >= maxCachedTokens) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(token, fresh);
    return fresh;
  }
}
