/**
 * Strict parsing of path and query values: a bad value is a 400 naming the parameter, never a 500.
 */
import { HlError } from '../kernel/index.js';

/** A non-negative safe integer from a query or path value; `fallback` when absent. */
export function intParam(name: string, value: unknown, fallback?: number): number {
  if (value === undefined || value === '') {
    if (fallback === undefined) throw new HlError('invalid', `parameter "${name}" is required`);
    return fallback;
  }
  if (typeof value !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new HlError('invalid', `parameter "${name}" must be a non-negative integer`);
  }
  return Number(value);
}
