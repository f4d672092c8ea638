/**
 * @module auth
 * SMART on FHIR authorization (SMART App Launch v2): the OAuth 2.0 authorization server (client_credentials
 * with private_key_jwt, authorization code with PKCE for staff and patient-key logins, rotating refresh
 * tokens), SMART v2 scopes, node-signed access tokens, and the registry of clients and staff users.
 * May import: kernel, crypto, fhir.
 */
export { checkScope, issueToken, StaffRole, tokenAudience, TokenKind, TokenVerifier, verifyToken, type TokenClaims, type VerifiedToken } from './tokens.js';
export {
  categoriesOf,
  categoryRestrictionsOf,
  formatScope,
  formatScopes,
  Interaction,
  intersectScopes,
  parseScope,
  parseScopes,
  ScopeContext,
  scopePermits,
  type OtherScope,
  type ResourceScope,
  type ScopeDecision,
  type ScopeRequest,
  type SmartScope,
} from './scopes.js';
export { hashPassword, minPasswordLength, verifyPassword, type PasswordHash } from './passwords.js';
export {
  checkClient,
  checkStaffUser,
  clientAssertionAlgorithms,
  isAcceptableRedirectUri,
  type AppClient,
  type AuthClient,
  type AuthRegistry,
  type BackendClient,
  type StaffUser,
} from './auth-registry.js';
export { FileAuthRegistry } from './file-auth-registry.js';
export {
  accessTokenTtlSeconds,
  AuthorizationServer,
  jwtBearerAssertionType,
  OAuthError,
  OAuthErrorCode,
  patientLoginMessage,
  type AuthorizationServerDeps,
  type AuthorizeOutcome,
  type LoginView,
  type TokenResponse,
} from './authorization-server.js';
