/**
 * The only place errors become HTTP: an HlError's code gives the status, and the body is a FHIR
 * OperationOutcome naming the problem (paths and codes, never data). Anything else is a 500 whose details
 * go to the log only.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { HlError, isHlError, type ErrorCode, type Issue } from '../kernel/index.js';
import { operationOutcome, type OperationOutcome } from '../fhir/index.js';

const statusByCode: Record<ErrorCode, number> = {
  invalid: 400,
  processing: 422,
  login: 401,
  forbidden: 403,
  'not-found': 404,
  deleted: 410,
  conflict: 409,
  precondition: 412,
  'too-costly': 413,
  'proof-invalid': 422,
  integrity: 500,
  exception: 500,
  pushback: 503,
  fork: 503,
};

/** An OperationOutcome for an error code, its message and its issues (built by the fhir module). */
export function outcomeOf(code: ErrorCode, message: string, issues: readonly Issue[] = []): OperationOutcome {
  return operationOutcome(issues.length > 0 ? issues : [{ code, message }]);
}

/** Status and body for any thrown value. */
export function httpErrorOf(err: unknown): { status: number; outcome: OperationOutcome; retryAfterSeconds?: number } {
  if (isHlError(err)) {
    const status = statusByCode[err.code] ?? 500;
    return {
      status,
      outcome: outcomeOf(err.code, err.message, err.issues),
      ...(err.code === 'pushback' ? { retryAfterSeconds: 2 } : {}),
    };
  }
  // Fastify's own client errors (bad JSON, body too large, unsupported media type) carry a 4xx statusCode.
  const fe = err as Partial<FastifyError>;
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    const code: ErrorCode = fe.statusCode === 413 ? 'too-costly' : fe.statusCode === 404 ? 'not-found' : 'invalid';
    const message =
      fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
        ? 'unsupported content type'
        : fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
          ? 'request body is too large'
          : fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY'
            ? 'request body is empty'
            : fe.code?.startsWith('FST_ERR_CTP') || fe instanceof SyntaxError
              ? 'request body is not valid JSON'
              : 'bad request';
    return { status: fe.statusCode, outcome: outcomeOf(code, message) };
  }
  return { status: 500, outcome: outcomeOf('exception', 'internal error') };
}

/** Fastify error handler: maps, logs server faults with ids only, replies with an OperationOutcome. */
export function handleError(err: unknown, request: FastifyRequest, reply: FastifyReply): void {
  const { status, outcome, retryAfterSeconds } = httpErrorOf(err);
  if (status >= 500) {
    request.log.error({ err: { code: (err as HlError).code, message: (err as Error).message } }, 'request failed');
  }
  if (retryAfterSeconds !== undefined) reply.header('Retry-After', String(retryAfterSeconds));
  if (status === 401) reply.header('WWW-Authenticate', 'Bearer realm="healthledger"');
  reply.code(status).type('application/fhir+json; charset=utf-8').send(outcome);
}

/** The 404 for routes that do not exist. */
export function handleNotFound(request: FastifyRequest, reply: FastifyReply): void {
  handleError(new HlError('not-found', `no route for ${request.method} ${request.url.split('?')[0]}`), request, reply);
}
