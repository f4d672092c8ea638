/**
 * kill -9 while a node appends: no acknowledged tx is lost, and the restarted node resumes with a tree that
 * `healthledger verify` accepts.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openNode } from '../src/node.js';
import { repoRoot, runCli, tempDir } from './helpers.js';

const work = tempDir('hl-crash-');
afterAll(() => work.cleanup());

/** Runs the append loop until it has acknowledged at least `minAcks` txs, then kills it with SIGKILL. */
function appendThenKill(dir: string, minAcks: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(repoRoot, 'test/fixtures/append-loop.mjs'), dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    const acked: string[] = [];
    let buffer = '';
    let stderr = '';
    let killed = false;
    child.stderr.on('data', (d) => (stderr += d));
    child.stdout.on('data', (d: Buffer) => {
      buffer += d.toString();
      const lines = buffer.split('\n');
      buffer = lines.pop()!;
      for (const line of lines) {
        const [, id, valid] = line.split(' ');
        if (valid !== 'true') reject(new Error(`tx ${id} was acknowledged as invalid`));
        acked.push(id!);
      }
      if (!killed && acked.length >= minAcks) {
        killed = true;
        child.kill('SIGKILL');
      }
    });
    child.on('exit', (_code, signal) => {
      if (signal === 'SIGKILL') resolve(acked);
      else reject(new Error(`append loop exited by itself: ${stderr}`));
    });
  });
}

describe('crash safety', () => {
  it('loses no acknowledged tx across three kill -9 and restarts', async () => {
    const dir = join(work.path, 'node');
    expect(runCli(['init', '--org', 'Crash Test Hospital', '--data', dir]).status).toBe(0);
    const allAcked: string[] = [];
    for (let round = 0; round < 3; round++) {
      allAcked.push(...(await appendThenKill(dir, 300 * (round + 1))));
      // restart: the node catches up from its ordering log and must hold every acknowledged tx
      const node = await openNode({ dataDir: dir });
      try {
        const store = node.ledger.store;
        const missing = allAcked.filter((id) => store.txById(id)?.valid !== true);
        expect(missing).toEqual([]);
        expect(node.ledger.height).toBe(node.orderer.lastHeight());
        expect(node.ledger.treeSize).toBeGreaterThanOrEqual(allAcked.length + 1);
      } finally {
        await node.close();
      }
      const verified = runCli(['verify', '--data', dir]);
      expect(verified.stderr).toBe('');
      expect(verified.status).toBe(0);
    }
    expect(allAcked.length).toBeGreaterThanOrEqual(300 + 600 + 900);
  }, 120_000);
});
