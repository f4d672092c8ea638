/**
 * `healthledger/verify` as an outsider imports it: by package name, from the built output, and with no
 * Node built-ins available to it (the browser path through @noble).
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './helpers.js';

const vectorsFile = 'test/vectors/merkle/transparency-dev-merkle-testdata/inclusion/1/happy-path.json';

function runModule(code: string): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: repoRoot, encoding: 'utf8' });
}

const check = `
  import { readFileSync } from 'node:fs';
  const v = await import('healthledger/verify');
  const p = JSON.parse(readFileSync('${vectorsFile}', 'utf8'));
  const b = (s) => Uint8Array.from(Buffer.from(s, 'base64'));
  v.verifyInclusion(BigInt(p.leafIdx), BigInt(p.treeSize), b(p.leafHash), p.proof.map(b), b(p.root));
  let failure = 'none';
  try { v.verifyInclusion(BigInt(p.leafIdx), BigInt(p.treeSize), b(p.leafHash), p.proof.map(b), new Uint8Array(32)); }
  catch (e) { failure = e.name + ':' + e.failure; }
  console.log(JSON.stringify({ failure, leaf: Buffer.from(v.leafHash(new Uint8Array(0))).toString('hex') }));
`;

describe('the healthledger/verify package entry', () => {
  it('resolves by package name and verifies a proof with native hashing', () => {
    const r = runModule(check);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({
      failure: 'RootMismatchError:root-mismatch',
      leaf: '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
    });
  });

  it('gives the same answers when Node built-ins are not reachable (browser path)', () => {
    const r = runModule(`delete process.getBuiltinModule; ${check}`);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({
      failure: 'RootMismatchError:root-mismatch',
      leaf: '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
    });
  });
});
