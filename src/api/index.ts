/**
 * @module api
 * The HTTP server: routes for /fhir, /ledger, /exchange, /auth and the UI's static files; the only place
 * errors become HTTP. May import everything except cli.
 */
export { buildServer, type ApiDeps } from './server.js';
export { httpErrorOf, outcomeOf } from './errors.js';
export { buildCapabilityStatement } from './capability.js';
export type { FhirRouteDeps } from './fhir-routes.js';
export type { LinkTerms, PatientRouteDeps } from './patient-routes.js';
export { signedTxExtensionUrl, type ConsentRouteDeps } from './consent-routes.js';
export type { AuthApiDeps } from './auth-routes.js';
export type { GuardedResource, ResourceLoader } from './scope-guard.js';
