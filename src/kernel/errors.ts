/**
 * The one error class of Healthledger, with a stable code catalog (FHIR IssueType words where they fit).
 * Only `api/errors.ts` (issue 3) maps these to HTTP; the CLI maps them to a one-line message and exit code.
 */

/** Stable error codes. FHIR IssueType words plus the ledger's own. */
export const ErrorCode = {
  invalid: 'invalid',
  /** Well-formed but not acceptable: validation against the FHIR definitions failed (HTTP 422). */
  processing: 'processing',
  notFound: 'not-found',
  /** The resource existed and was deleted (HTTP 410). */
  deleted: 'deleted',
  login: 'login',
  forbidden: 'forbidden',
  conflict: 'conflict',
  /** A precondition of the request (If-Match) does not hold (HTTP 412). */
  precondition: 'precondition',
  tooCostly: 'too-costly',
  exception: 'exception',
  proofInvalid: 'proof-invalid',
  integrity: 'integrity',
  pushback: 'pushback',
  fork: 'fork',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** One problem found by a validator; validators collect all of them rather than stop at the first. */
export interface Issue {
  code: ErrorCode;
  /** Where the problem is, as a path into the checked object (`body.orgs[0].publicKey`). */
  expression?: string;
  message: string;
}

/** A Healthledger error: a stable `code`, a message free of PHI, and optionally the issues behind it. */
export class HlError extends Error {
  readonly code: ErrorCode;
  readonly issues: readonly Issue[];

  constructor(code: ErrorCode, message: string, options: { issues?: readonly Issue[]; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HlError';
    this.code = code;
    this.issues = options.issues ?? [];
  }
}

/** True when `err` is an HlError, optionally with the given code. */
export function isHlError(err: unknown, code?: ErrorCode): err is HlError {
  return err instanceof HlError && (code === undefined || err.code === code);
}
