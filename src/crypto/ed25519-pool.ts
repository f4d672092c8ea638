/**
 * Ed25519 verification spread over worker threads (one per core), for bulk work: auditing a whole ledger,
 * admitting a large batch. Verification is about 9,000/s per core on node:crypto, the bottleneck of both.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** One signature to check: raw 32-byte public key, message, 64-byte signature. */
export interface SignatureCheck {
  publicKey: Uint8Array;
  message: Uint8Array;
  signature: Uint8Array;
}

// Self-contained CommonJS so it runs the same from dist/ and from the TypeScript sources under test.
const workerSource = `
const { parentPort } = require('node:worker_threads');
const crypto = require('node:crypto');
const keys = new Map();
parentPort.on('message', ({ id, items }) => {
  const ok = new Uint8Array(items.length);
  for (let i = 0; i < items.length; i++) {
    const [pub, msg, sig] = items[i];
    try {
      const x = Buffer.from(pub).toString('base64url');
      let key = keys.get(x);
      if (!key) {
        key = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
        if (keys.size > 10000) keys.clear();
        keys.set(x, key);
      }
      ok[i] = sig.length === 64 && crypto.verify(null, msg, key, sig) ? 1 : 0;
    } catch {
      ok[i] = 0;
    }
  }
  parentPort.postMessage({ id, ok });
});
`;

/** A pool of verification workers. Call `close()` when done (workers keep the process alive otherwise). */
export class Ed25519VerifierPool {
  private readonly workers: Worker[];
  private next = 0;
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (ok: Uint8Array) => void; reject: (e: unknown) => void }>();

  constructor(size = Math.max(1, availableParallelism())) {
    this.workers = Array.from({ length: size }, () => {
      const w = new Worker(workerSource, { eval: true });
      w.on('message', ({ id, ok }: { id: number; ok: Uint8Array }) => {
        this.pending.get(id)?.resolve(ok);
        this.pending.delete(id);
      });
      w.on('error', (err) => {
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
      });
      return w;
    });
  }

  /** Verifies every check; resolves with one boolean each, in order. */
  async verifyAll(checks: readonly SignatureCheck[], chunkSize = 256): Promise<boolean[]> {
    const chunks: Promise<Uint8Array>[] = [];
    for (let start = 0; start < checks.length; start += chunkSize) {
      const items = checks.slice(start, start + chunkSize).map((c) => [c.publicKey, c.message, c.signature]);
      const id = this.seq++;
      const worker = this.workers[this.next++ % this.workers.length]!;
      chunks.push(
        new Promise((resolve, reject) => {
          this.pending.set(id, { resolve, reject });
          worker.postMessage({ id, items });
        }),
      );
    }
    const results = await Promise.all(chunks);
    return results.flatMap((ok) => Array.from(ok, (v) => v === 1));
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
