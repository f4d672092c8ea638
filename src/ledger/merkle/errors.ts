/**
 * Typed proof-verification errors. A verifier never returns a bare boolean: it returns the computed value or
 * throws one of these, naming what did not match (STYLE.md, transparency-dev/merkle `proof/verify.go`).
 */
import { HlError } from '../../kernel/index.js';

/** Why a proof was rejected. */
export const ProofFailure = {
  indexOutOfRange: 'index-out-of-range',
  sizeOrder: 'size-order',
  proofLength: 'proof-length',
  hashLength: 'hash-length',
  rootMismatch: 'root-mismatch',
  emptyTree: 'empty-tree',
  signature: 'signature',
  malformed: 'malformed',
} as const;
export type ProofFailure = (typeof ProofFailure)[keyof typeof ProofFailure];

/** A proof, checkpoint or signature did not verify. `failure` names the kind of mismatch. */
export class ProofVerificationError extends HlError {
  readonly failure: ProofFailure;
  constructor(failure: ProofFailure, message: string) {
    super('proof-invalid', message);
    this.name = 'ProofVerificationError';
    this.failure = failure;
  }
}

/** The root computed from a proof is not the expected root. */
export class RootMismatchError extends ProofVerificationError {
  readonly computed: Uint8Array;
  readonly expected: Uint8Array;
  constructor(what: string, computed: Uint8Array, expected: Uint8Array) {
    super('root-mismatch', `${what}: the root computed from the proof does not match the expected root`);
    this.name = 'RootMismatchError';
    this.computed = computed;
    this.expected = expected;
  }
}
