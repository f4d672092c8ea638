/**
 * The HTTP server of a node (fastify): `/ledger` now; `/fhir`, `/exchange`, `/auth` and the UI as their
 * issues land. Dependencies come in through `ApiDeps`; the server holds no state of its own.
 */
import type { KeyObject } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { HlError, type Clock } from '../kernel/index.js';
import type { Ledger } from '../ledger/index.js';
import { TokenVerifier, type VerifiedToken } from '../auth/index.js';
import { handleError, handleNotFound } from './errors.js';
import { registerLedgerRoutes, type LedgerStatus } from './ledger-routes.js';
import { registerFhirRoutes, type FhirRouteDeps } from './fhir-routes.js';
import { registerPatientRoutes, type PatientRouteDeps } from './patient-routes.js';
import { accessContextOf } from './access-context.js';
import { isOwnStaff, type AccessContext } from '../repository/index.js';
import { registerConsentRoutes, type ConsentRouteDeps } from './consent-routes.js';
import { registerAuthRoutes, type AuthApiDeps } from './auth-routes.js';
import { registerScopeGuard } from './scope-guard.js';
import { registerExchangeRoutes, type ExchangeRouteDeps } from './exchange-routes.js';

/** What the API needs from the node. */
export interface ApiDeps {
  orgId: string;
  ledger: Ledger;
  /** Verifies bearer tokens this node issued. */
  publicKey: KeyObject;
  clock: Clock;
  log: FastifyBaseLogger;
  /** Largest accepted request body. */
  maxBodyBytes?: number;
  /** The FHIR REST API; without it /fhir answers 404. */
  fhir?: Omit<FhirRouteDeps, 'accessContextOf'>;
  /** Patient registration, consent txs and record links; without it those routes answer 404. */
  patients?: PatientRouteDeps;
  /** Consents as FHIR Consent resources, from and to the ledger. */
  consents?: ConsentRouteDeps;
  /** Audits a refused request (4xx) that the repository did not audit itself. */
  auditRefusal?: (refusal: {
    requester: AccessContext['requester'] | null;
    route: string;
    status: number;
    reason: string;
    address?: string;
  }) => void;
  /** The node's fork alarm, for `GET /ledger/status`. */
  status?: () => LedgerStatus;
  /** Node-to-node routes (/exchange/v1) and $network-everything; without them those routes answer 404. */
  exchange?: ExchangeRouteDeps;
  /** SMART on FHIR (/auth, /.well-known/smart-configuration) and what the scope guard reads; without it /auth answers 404. */
  auth?: AuthApiDeps;
}

declare module 'fastify' {
  interface FastifyRequest {
    token?: VerifiedToken;
    /** Who asks and why, once worked out for this request. */
    accessContext?: AccessContext;
    /** Why the request was refused (the error's PHI-free message), for its audit. */
    refusalReason?: string;
  }
}

/** Paths whose refusals (4xx) are audited: the FHIR API, patient tx submission and the OAuth endpoints. */
const auditedRefusal = /^\/(?:fhir(?:\/|$)|ledger\/tx$|auth\/(?:token|authorize)$|exchange\/v1\/everything$)/;

/** Builds (does not start) the node's HTTP server. */
export async function buildServer(deps: ApiDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.log,
    bodyLimit: deps.maxBodyBytes ?? 8 * 1024 * 1024,
    // Query strings like `_id=a,b` and repeated parameters are parsed by the routes themselves.
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 500 },
  });
  app.setErrorHandler(handleError);
  app.setNotFoundHandler(handleNotFound);
  // FHIR bodies are JSON only: anything else is 415 Unsupported Media Type.
  app.removeContentTypeParser('text/plain');
  // POST [type]/_search sends its parameters as a form.
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => done(null, body));
  app.addContentTypeParser(['application/fhir+json', 'application/json-patch+json'], { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, JSON.parse(body as string));
    } catch {
      done(new HlError('invalid', 'request body is not valid JSON'), undefined);
    }
  });

  // Every /fhir request but the CapabilityStatement needs a bearer token from this node.
  const tokens = new TokenVerifier({ orgId: deps.orgId, publicKey: deps.publicKey });
  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?')[0]!;
    const needsToken = (path.startsWith('/fhir') && path !== '/fhir/metadata' && path !== '/fhir/.well-known/smart-configuration') || path === '/exchange/v1/everything';
    if (!needsToken) return;
    const header = req.headers.authorization;
    const match = typeof header === 'string' ? /^Bearer ([A-Za-z0-9._-]+)$/.exec(header) : null;
    if (!match) throw new HlError('login', 'a bearer token is required (run: healthledger token --data DIR)');
    req.token = await tokens.verify(match[1]!, deps.clock.nowMs());
  });

  // Every refusal is audited (issue 4: bad tokens, missing scopes, forged txs, PKCE mismatches, bad input),
  // unless the repository already audited it as a consent denial.
  app.addHook('onError', async (req, _reply, error) => {
    req.refusalReason = error.message;
  });
  app.addHook('onResponse', async (req, reply) => {
    const status = reply.statusCode;
    if (status < 400 || status >= 500 || !deps.auditRefusal || req.accessContext?.refusalAudited) return;
    const path = req.url.split('?')[0]!;
    if (!auditedRefusal.test(path)) return;
    const token = req.token;
    deps.auditRefusal({
      requester: req.accessContext?.requester ?? (token ? { org: token.org ?? deps.orgId, user: token.sub } : null),
      route: `${req.method} ${req.routeOptions.url ?? path.slice(0, 100)}`,
      status,
      reason: req.refusalReason ?? `HTTP ${status}`,
      address: req.ip,
    });
  });

  // Every /fhir route's SMART scopes (src/api/scope-guard.ts).
  registerScopeGuard(app, deps.auth?.loadResource ? { load: deps.auth.loadResource } : {});

  registerLedgerRoutes(app, deps.ledger, deps.status);
  if (deps.auth) registerAuthRoutes(app, deps.auth);
  if (deps.patients) {
    registerPatientRoutes(app, deps.patients, (req) => {
      if (!isOwnStaff((req.accessContext ??= accessContextOf(req, deps.orgId)), deps.orgId)) {
        throw new HlError('forbidden', "only the custodian's staff may link a patient key to a record");
      }
    });
  }
  if (deps.consents) registerConsentRoutes(app, deps.consents);
  if (deps.fhir) registerFhirRoutes(app, { ...deps.fhir, accessContextOf: (req) => (req.accessContext ??= accessContextOf(req, deps.orgId)) });
  if (deps.exchange) registerExchangeRoutes(app, deps.exchange, (req) => (req.accessContext ??= accessContextOf(req, deps.orgId)));
  return app;
}
