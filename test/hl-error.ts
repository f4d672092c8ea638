import { expect } from 'vitest';
import { HlError } from '../src/kernel/index.js';

/** Runs `fn` and returns the HlError it throws (fails the test if it throws nothing or something else). */
export function hlErrorOf(fn: () => unknown): HlError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(HlError);
    return err as HlError;
  }
  throw new Error('expected an HlError, nothing was thrown');
}
