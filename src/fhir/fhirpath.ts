/**
 * FHIRPath evaluation with parsed expressions cached: @medplum/core's `evalFhirPath` parses its expression
 * on every call, which dominated ingest (a resource is evaluated against every search parameter).
 */
import { LRUCache, evalFhirPathTyped, toTypedValue, type FhirPathAtom } from '@medplum/core';

// Every R4 SearchParameter expression fits.
const parsed = new LRUCache<FhirPathAtom>(4000);

/** Evaluates `expression` on `resource`; returns the plain values. */
export function evalPath(expression: string, resource: unknown): unknown[] {
  return evalFhirPathTyped(expression, [toTypedValue(resource)], {}, parsed).map((v) => v.value);
}
