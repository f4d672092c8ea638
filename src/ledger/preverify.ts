/**
 * Signature pre-verification on a worker pool: checks each tx's signature against the key it claims, in
 * parallel, and records successes in the `VerifiedSignatures` memo. Validation then skips those and verifies
 * (and reports) the rest itself, so the verdicts are the same as without the pool, only faster.
 */
import type { Ed25519VerifierPool } from '../crypto/index.js';
import { claimedSignerKey, signatureMemoKey, type VerifiedSignatures } from './contracts.js';
import type { LedgerState } from './state.js';
import { signatureOf, type ParsedTx } from './tx.js';

/** Verifies the claimed signatures of `txs` on `pool`, adding each that holds to `memo`. */
export async function preverifySignatures(
  txs: readonly ParsedTx[],
  state: LedgerState,
  pool: Ed25519VerifierPool,
  memo: VerifiedSignatures,
  extraKeys?: ReadonlyMap<string, Uint8Array>,
): Promise<void> {
  const checks = [];
  const keys: string[] = [];
  for (const tx of txs) {
    const claimed = claimedSignerKey(tx, state, extraKeys);
    if (!claimed) continue;
    const key = signatureMemoKey(tx, claimed.keyId);
    if (memo.has(key)) continue;
    checks.push({ publicKey: claimed.publicKey, message: tx.signedBytes, signature: signatureOf(tx.envelope) });
    keys.push(key);
  }
  if (checks.length === 0) return;
  const ok = await pool.verifyAll(checks);
  ok.forEach((holds, i) => {
    if (holds) memo.add(keys[i]!);
  });
}
