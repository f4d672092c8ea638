/**
 * FHIR R4 OperationOutcome (http://hl7.org/fhir/R4/operationoutcome.html) built from validation issues and
 * from HlError. Diagnostics carry only the issue and error messages, which by contract name paths, types
 * and codes, never record values; an error that is not an HlError becomes a generic "internal error", its
 * message (which may hold anything) left out.
 */
import { isHlError, type ErrorCode, type Issue } from '../kernel/index.js';

/** OperationOutcome.issue.severity (valueset-issue-severity.html). */
export const IssueSeverity = {
  fatal: 'fatal',
  error: 'error',
  warning: 'warning',
  information: 'information',
} as const;
export type IssueSeverity = (typeof IssueSeverity)[keyof typeof IssueSeverity];

/** OperationOutcome.issue.code: the R4 IssueType codes (valueset-issue-type.html), all of them. */
export const IssueType = {
  invalid: 'invalid',
  structure: 'structure',
  required: 'required',
  value: 'value',
  invariant: 'invariant',
  security: 'security',
  login: 'login',
  unknown: 'unknown',
  expired: 'expired',
  forbidden: 'forbidden',
  suppressed: 'suppressed',
  processing: 'processing',
  notSupported: 'not-supported',
  duplicate: 'duplicate',
  multipleMatches: 'multiple-matches',
  notFound: 'not-found',
  deleted: 'deleted',
  tooLong: 'too-long',
  codeInvalid: 'code-invalid',
  extension: 'extension',
  tooCostly: 'too-costly',
  businessRule: 'business-rule',
  conflict: 'conflict',
  transient: 'transient',
  lockError: 'lock-error',
  noStore: 'no-store',
  exception: 'exception',
  timeout: 'timeout',
  incomplete: 'incomplete',
  throttled: 'throttled',
  informational: 'informational',
} as const;
export type IssueType = (typeof IssueType)[keyof typeof IssueType];

const issueTypes: ReadonlySet<string> = new Set(Object.values(IssueType));

/** One OperationOutcome.issue. */
export interface OperationOutcomeIssue {
  severity: IssueSeverity;
  code: IssueType;
  diagnostics?: string;
  expression?: string[];
}

/** A FHIR R4 OperationOutcome; `issue` has at least one entry (cardinality 1..*). */
export interface OperationOutcome {
  resourceType: 'OperationOutcome';
  issue: OperationOutcomeIssue[];
}

/**
 * The IssueType for each HlError code. The FHIR words map to themselves (`invalid`, `processing`,
 * `not-found`, `deleted`, `login`, `forbidden`, `conflict`, `too-costly`, `exception`); `precondition`
 * (If-Match failed, HTTP 412) → `conflict`, as a version conflict; the ledger's own codes:
 * `proof-invalid` → `invalid` (the client sent or asked about a proof that does not verify);
 * `integrity` → `exception` (stored data failed its commitment check: a server-side fault, not the
 * client's, and R4 has no closer code); `pushback` → `transient` (ordering quorum lost, retry later);
 * `fork` → `transient` (writes stop until an operator acts; reads still work). Same table as
 * `api/errors.ts`, which maps the same codes to HTTP statuses.
 */
const issueTypeByCode: Readonly<Record<ErrorCode, IssueType>> = {
  invalid: 'invalid',
  processing: 'processing',
  'not-found': 'not-found',
  deleted: 'deleted',
  precondition: 'conflict',
  login: 'login',
  forbidden: 'forbidden',
  conflict: 'conflict',
  'too-costly': 'too-costly',
  exception: 'exception',
  'proof-invalid': 'invalid',
  integrity: 'exception',
  pushback: 'transient',
  fork: 'transient',
};

/** The FHIR IssueType for an HlError code (table above). Unknown codes give `exception`. */
export function issueTypeOf(code: ErrorCode): IssueType {
  return Object.hasOwn(issueTypeByCode, code) ? issueTypeByCode[code] : 'exception';
}

function issueTypeOfIssue(issue: Issue): IssueType {
  const fine = (issue as { issueType?: unknown }).issueType;
  return typeof fine === 'string' && issueTypes.has(fine) ? (fine as IssueType) : issueTypeOf(issue.code);
}

/**
 * An OperationOutcome listing each issue (its FHIR IssueType — the finer `issueType` of a validation issue
 * when present, else mapped from `code` — its message as `diagnostics`, its path as `expression`), all at
 * `severity`. No issues gives one `information`/`informational` issue, since `issue` is 1..*.
 */
export function operationOutcome(issues: readonly Issue[], severity: IssueSeverity = 'error'): OperationOutcome {
  if (issues.length === 0) {
    return {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'information', code: 'informational', diagnostics: 'No issues found' }],
    };
  }
  return {
    resourceType: 'OperationOutcome',
    issue: issues.map((i) => ({
      severity,
      code: issueTypeOfIssue(i),
      diagnostics: i.message,
      ...(i.expression ? { expression: [i.expression] } : {}),
    })),
  };
}

/**
 * The OperationOutcome for a thrown value: an HlError gives its issues, or one issue from its code and
 * message; anything else gives one `fatal`/`exception` issue saying only "Internal error", because its
 * message is not under our PHI contract (log the error itself, never return it).
 */
export function outcomeFromError(err: unknown): OperationOutcome {
  if (isHlError(err)) {
    if (err.issues.length > 0) return operationOutcome(err.issues);
    return {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: issueTypeOf(err.code), diagnostics: err.message }],
    };
  }
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'fatal', code: 'exception', diagnostics: 'Internal error' }] };
}
