/**
 * @module auth
 * SMART on FHIR authorization: tokens, scopes, clients, users, patient key login. For now: node-signed
 * bearer tokens and scope syntax. May import: kernel, crypto, fhir.
 */
export { checkScope, issueToken, tokenAudience, TokenVerifier, verifyToken, type TokenClaims, type VerifiedToken } from './tokens.js';
