/**
 * Bearer tokens signed by the node's organization key (EdDSA JWTs, RFC 8037), verified with jose. Full SMART
 * on FHIR login (authorization code, backend services) comes with the consent issue; until then these tokens
 * are what `healthledger token` prints for local administration.
 */
import type { KeyObject } from 'node:crypto';
import { SignJWT, errors as joseErrors, jwtVerify } from 'jose';
import { HlError, newNonce } from '../kernel/index.js';

/** Claims the node puts in a token. */
export interface TokenClaims {
  /** Who the token is for (`admin` for `healthledger token`). */
  sub: string;
  /** Space-separated SMART v2 scopes, e.g. `user/*.cruds`. */
  scope: string;
}

/** A verified token. */
export interface VerifiedToken extends TokenClaims {
  issuer: string;
  expiresAt: Date;
  jti: string;
}

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
  return new SignJWT({ scope: checkScope(claims.scope) })
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
    return {
      sub: payload.sub!,
      scope: payload.scope,
      issuer: payload.iss!,
      expiresAt: new Date(payload.exp! * 1000),
      jti: payload.jti!,
    };
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
