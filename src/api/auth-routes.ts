/**
 * OAuth 2.0 / SMART on FHIR over HTTP (SMART App Launch v2): `/.well-known/smart-configuration` (also under
 * `/fhir`), `/auth/jwks`, `POST /auth/token`, `GET|POST /auth/authorize` with its login page, and
 * `/auth/patient-challenge`. The logic is the auth module's `AuthorizationServer`; here requests become its
 * calls, and its `OAuthError`s become RFC 6749 §5.2 JSON (token endpoint) or a small HTML page (browser).
 * Bad input is a 4xx, never a 500.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { newNonce } from '../kernel/index.js';
import { OAuthError, OAuthErrorCode, type AuthorizationServer, type LoginView } from '../auth/index.js';
import type { ResourceLoader } from './scope-guard.js';

/** What the /auth routes and the scope guard need from the node. */
export interface AuthApiDeps {
  server: AuthorizationServer;
  /** Reads stored resources for the scope guard's compartment and category checks. */
  loadResource?: ResourceLoader;
}

function formOf(body: unknown): URLSearchParams {
  if (typeof body !== 'string') throw new OAuthError(OAuthErrorCode.invalidRequest, 'the body must be application/x-www-form-urlencoded');
  return new URLSearchParams(body);
}

function queryOf(req: FastifyRequest): URLSearchParams {
  return new URLSearchParams(req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '');
}

/** An OAuthError for anything thrown: fastify's own client errors become invalid_request; the rest is a server fault. */
function oauthErrorOf(err: unknown, req: FastifyRequest): { status: number; body: { error: string; error_description: string } } {
  if (err instanceof OAuthError) return { status: err.status, body: err.toJSON() };
  const status = (err as Partial<FastifyError>).statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return { status: 400, body: { error: OAuthErrorCode.invalidRequest, error_description: 'the request is malformed (form body of at most the size limit expected)' } };
  }
  req.log.error({ err: { code: (err as { code?: unknown }).code, message: (err as Error).message } }, 'auth request failed');
  return { status: 500, body: { error: 'server_error', error_description: 'internal error' } };
}

function sendOAuthError(err: unknown, req: FastifyRequest, reply: FastifyReply): void {
  const { status, body } = oauthErrorOf(err, req);
  if (status === 401) reply.header('WWW-Authenticate', 'Bearer realm="healthledger"');
  reply.code(status).header('Cache-Control', 'no-store').header('Access-Control-Allow-Origin', '*').type('application/json; charset=utf-8').send(body);
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const style =
  'body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}' +
  'label{display:block;margin:.5rem 0}input{display:block;width:100%;padding:.4rem;box-sizing:border-box}' +
  'section{border:1px solid #ccc;border-radius:6px;padding:0 1rem 1rem;margin:1rem 0}pre{white-space:pre-wrap;word-break:break-all;background:#f4f4f4;padding:.5rem}' +
  '[role=alert]{color:#a00}code{word-break:break-all}';

function sendHtml(reply: FastifyReply, status: number, title: string, body: string, nonce?: string): FastifyReply {
  return reply
    .code(status)
    .header('Cache-Control', 'no-store')
    .header('X-Frame-Options', 'DENY')
    .header('Referrer-Policy', 'no-referrer')
    .header(
      'Content-Security-Policy',
      `default-src 'none'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'${nonce ? `; script-src 'nonce-${nonce}'` : ''}`,
    )
    .type('text/html; charset=utf-8')
    .send(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>${escapeHtml(title)}</title><style>${style}</style></head><body><main>${body}</main></body></html>`);
}

/** The login page of a pending authorization: staff password, or a patient's signature of the challenge. */
function loginPage(reply: FastifyReply, view: LoginView, status = 200, message?: string): FastifyReply {
  const nonce = newNonce();
  const id = escapeHtml(view.requestId);
  const body =
    `<h1>Sign in</h1><p><b>${escapeHtml(view.clientName)}</b> asks for access: <code>${escapeHtml(view.scope)}</code></p>` +
    (message ? `<p role="alert">${escapeHtml(message)}</p>` : '') +
    `<section><h2>Staff</h2><form method="post" action="/auth/authorize"><input type="hidden" name="request" value="${id}"><input type="hidden" name="login" value="staff">` +
    `<label>Username<input name="username" autocomplete="username" required maxlength="64"></label>` +
    `<label>Password<input type="password" name="password" autocomplete="current-password" required></label><button>Sign in</button></form></section>` +
    `<section><h2>Patient</h2><p>Sign this message with your patient key (Ed25519), then paste the base64url signature:</p>` +
    `<pre id="message" data-request="${id}">Loading a challenge…</pre>` +
    `<form method="post" action="/auth/authorize"><input type="hidden" name="request" value="${id}"><input type="hidden" name="login" value="patient"><input type="hidden" name="challenge" id="challenge">` +
    `<label>Network id<input name="patient" required pattern="pat-[a-z2-7]{26}" placeholder="pat-…"></label>` +
    `<label>Signature (base64url)<input name="signature" required></label><button>Sign in</button></form></section>` +
    `<script nonce="${nonce}">(async()=>{const m=document.getElementById('message');` +
    `const r=await fetch('/auth/patient-challenge?request='+encodeURIComponent(m.dataset.request));const c=await r.json();` +
    `if(!r.ok){m.textContent=c.error_description;return;}m.textContent=c.message;document.getElementById('challenge').value=c.challenge;})();</script>`;
  return sendHtml(reply, status, 'Sign in — Healthledger', body, nonce);
}

function sendHtmlError(err: unknown, req: FastifyRequest, reply: FastifyReply): void {
  const { status, body } = oauthErrorOf(err, req);
  sendHtml(reply, status, 'Sign-in problem — Healthledger', `<h1>Cannot sign in</h1><p role="alert">${escapeHtml(body.error)}: ${escapeHtml(body.error_description)}</p>`);
}

/** Registers the SMART configuration, the JWK set and the OAuth endpoints. */
export function registerAuthRoutes(app: FastifyInstance, deps: AuthApiDeps): void {
  const { server } = deps;
  const configuration = async (_req: FastifyRequest, reply: FastifyReply) =>
    reply.header('Access-Control-Allow-Origin', '*').type('application/json; charset=utf-8').send(server.smartConfiguration());
  app.get('/.well-known/smart-configuration', configuration);
  app.get('/fhir/.well-known/smart-configuration', configuration);

  app.get('/auth/jwks', async (_req, reply) => reply.header('Access-Control-Allow-Origin', '*').type('application/json; charset=utf-8').send(server.jwks()));

  app.post('/auth/token', { errorHandler: sendOAuthError }, async (req, reply) => {
    const response = await server.token(formOf(req.body));
    return reply.header('Cache-Control', 'no-store').header('Pragma', 'no-cache').header('Access-Control-Allow-Origin', '*').type('application/json; charset=utf-8').send(response);
  });

  app.get('/auth/authorize', { errorHandler: sendHtmlError }, async (req, reply) => {
    const outcome = await server.authorize(queryOf(req));
    if (outcome.kind === 'redirect') return reply.code(302).header('Location', outcome.location).header('Cache-Control', 'no-store').send();
    return loginPage(reply, outcome.view);
  });

  app.post('/auth/authorize', { errorHandler: sendHtmlError }, async (req, reply) => {
    const outcome = await server.completeAuthorization(formOf(req.body));
    if (outcome.kind === 'redirect') return reply.code(302).header('Location', outcome.location).header('Cache-Control', 'no-store').send();
    if (outcome.kind === 'retry') return loginPage(reply, outcome.view, 401, outcome.message);
    return loginPage(reply, outcome.view);
  });

  app.get('/auth/patient-challenge', { errorHandler: sendOAuthError }, async (req, reply) => {
    const request = queryOf(req).get('request') ?? undefined;
    return reply.header('Cache-Control', 'no-store').type('application/json; charset=utf-8').send(server.patientChallenge(request));
  });
}
