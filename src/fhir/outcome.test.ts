import { describe, expect, it } from 'vitest';
import { ErrorCode, HlError, type Issue } from '../kernel/index.js';
import { IssueType, issueTypeOf, operationOutcome, outcomeFromError, validateResource } from './index.js';

const issueTypeCodes: ReadonlySet<string> = new Set(Object.values(IssueType));

describe('operationOutcome', () => {
  it('lists every issue with severity, FHIR IssueType, diagnostics and expression', () => {
    const issues = validateResource({ resourceType: 'Observation', status: 'bogus', foo: 1 });
    const outcome = operationOutcome(issues);
    expect(outcome.resourceType).toBe('OperationOutcome');
    expect(outcome.issue).toHaveLength(issues.length);
    expect(outcome.issue).toEqual(
      expect.arrayContaining([
        { severity: 'error', code: 'code-invalid', diagnostics: 'Code is not in the required value set http://hl7.org/fhir/ValueSet/observation-status', expression: ['Observation.status'] },
        { severity: 'error', code: 'required', diagnostics: 'Missing required property', expression: ['Observation.code'] },
        { severity: 'error', code: 'structure', diagnostics: 'Invalid additional property "foo"', expression: ['Observation.foo'] },
      ]),
    );
  });

  it('uses the given severity', () => {
    const outcome = operationOutcome([{ code: 'invalid', expression: 'Patient.gender', message: 'm' }], 'warning');
    expect(outcome.issue).toEqual([{ severity: 'warning', code: 'invalid', diagnostics: 'm', expression: ['Patient.gender'] }]);
  });

  it('maps a plain kernel Issue by its code and leaves out a missing expression', () => {
    const issues: Issue[] = [
      { code: 'conflict', message: 'version conflict' },
      { code: 'integrity', expression: 'Patient/p1/_history/2', message: 'commitment mismatch' },
    ];
    expect(operationOutcome(issues).issue).toEqual([
      { severity: 'error', code: 'conflict', diagnostics: 'version conflict' },
      { severity: 'error', code: 'exception', diagnostics: 'commitment mismatch', expression: ['Patient/p1/_history/2'] },
    ]);
  });

  it('ignores an issueType that is not an R4 IssueType', () => {
    const issue = { code: 'invalid', message: 'm', issueType: 'made-up' } as Issue;
    expect(operationOutcome([issue]).issue[0]!.code).toBe('invalid');
  });

  it('gives one informational issue when there are none (issue is 1..*)', () => {
    expect(operationOutcome([])).toEqual({
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'information', code: 'informational', diagnostics: 'No issues found' }],
    });
  });

  it('builds OperationOutcomes that are themselves valid R4 resources', () => {
    const issues = validateResource({ resourceType: 'Patient', gender: 'girl', birthDate: 'x', contained: [{ resourceType: 'Nope' }] });
    expect(issues.length).toBeGreaterThanOrEqual(3);
    expect(validateResource(operationOutcome(issues))).toEqual([]);
    expect(validateResource(operationOutcome([]))).toEqual([]);
    expect(validateResource(outcomeFromError(new HlError('fork', 'fork detected at tree size 12')))).toEqual([]);
    expect(validateResource(outcomeFromError(new Error('boom')))).toEqual([]);
  });
});

describe('issueTypeOf', () => {
  it.each(Object.values(ErrorCode))('maps HlError code %s to an R4 IssueType', (code) => {
    expect(issueTypeCodes.has(issueTypeOf(code))).toBe(true);
  });

  it.each([
    ['invalid', 'invalid'],
    ['processing', 'processing'],
    ['not-found', 'not-found'],
    ['deleted', 'deleted'],
    ['login', 'login'],
    ['forbidden', 'forbidden'],
    ['conflict', 'conflict'],
    ['precondition', 'conflict'],
    ['too-costly', 'too-costly'],
    ['exception', 'exception'],
    ['proof-invalid', 'invalid'],
    ['integrity', 'exception'],
    ['pushback', 'transient'],
    ['fork', 'transient'],
  ] as const)('%s → %s', (code, issueType) => {
    expect(issueTypeOf(code)).toBe(issueType);
  });
});

describe('outcomeFromError', () => {
  it('turns an HlError without issues into one issue from its code and message', () => {
    expect(outcomeFromError(new HlError('not-found', 'Patient/p1 not found'))).toEqual({
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'not-found', diagnostics: 'Patient/p1 not found' }],
    });
    expect(outcomeFromError(new HlError('too-costly', 'request body is too large')).issue[0]!.code).toBe('too-costly');
    expect(outcomeFromError(new HlError('forbidden', 'no consent')).issue[0]!.code).toBe('forbidden');
    expect(outcomeFromError(new HlError('conflict', 'version 3 expected')).issue[0]!.code).toBe('conflict');
    expect(outcomeFromError(new HlError('integrity', 'stored version fails its commitment')).issue[0]!.code).toBe('exception');
  });

  it('turns an HlError with issues into one issue per issue', () => {
    const issues = validateResource({ resourceType: 'Patient', gender: 'girl', active: 'yes' });
    const outcome = outcomeFromError(new HlError('invalid', 'Patient is invalid', { issues }));
    expect(outcome.issue.map((i) => i.expression?.[0])).toEqual(issues.map((i) => i.expression));
    expect(outcome.issue.every((i) => i.severity === 'error')).toBe(true);
  });

  it.each([
    new Error('Patient Jan Doe, born 1980-02-29, MRN 12345'),
    new TypeError("Cannot read properties of undefined (reading 'Jan Doe')"),
    'Jan Doe',
    { message: 'Jan Doe' },
    undefined,
  ])('never repeats the message of anything but an HlError (%#)', (err) => {
    const outcome = outcomeFromError(err);
    expect(outcome).toEqual({ resourceType: 'OperationOutcome', issue: [{ severity: 'fatal', code: 'exception', diagnostics: 'Internal error' }] });
    expect(JSON.stringify(outcome)).not.toContain('Jan Doe');
  });

  it('carries no resource values from a validation into the outcome', () => {
    const resource = {
      resourceType: 'Patient',
      id: 'Zebulon$',
      name: [{ family: 'Zebulon', given: [42] }],
      birthDate: 'Zebulon',
      gender: 'Zebulon',
      telecom: [{ system: 'phone', value: '+1 555 0100', use: 'Zebulon' }],
    };
    const outcome = outcomeFromError(new HlError('invalid', 'Patient is invalid', { issues: validateResource(resource) }));
    expect(outcome.issue.length).toBeGreaterThanOrEqual(5);
    expect(JSON.stringify(outcome)).not.toMatch(/Zebulon|555 0100/);
  });
});
