/**
 * The multi-machine path exactly as operators run it, with the built CLI in separate processes over a real
 * 3-member etcd cluster: three organizations `init --join --url`, the founder signs the `genesis` with the
 * others' member lines, each runs `start --genesis --etcd --public-url` (a member started before the founder
 * waits for block 0). Every node lists the three members, serves a checkpoint all three signed, and applies a
 * FHIR write made at another node; a restarted node (same command line, same genesis) serves the same
 * checkpoint. Bad command lines give one line on stderr, a non-zero exit, and change nothing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publicVerifier } from '../src/node.js';
import { startEtcdCluster, type EtcdCluster } from './etcd-cluster.js';
import { cliPath, runCliAsync, tempDir } from './helpers.js';

const work = tempDir('hl-start-etcd-');
const names = ['Harbor Hospital', 'Summit Lab', 'Valley Clinic'];
const ids = ['harbor-hospital', 'summit-lab', 'valley-clinic'];
const dataDir = (i: number): string => join(work.path, `org${i}`);
const genesisFile = join(work.path, 'genesis.json');
const origin = 'healthledger.test/three';
let cluster: EtcdCluster;
let ports: number[] = [];
const url = (i: number): string => `http://127.0.0.1:${ports[i]}`;

/** A `healthledger start` child process and everything it printed. */
interface NodeProcess {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  exited: Promise<number | null>;
}
const running: (NodeProcess | undefined)[] = [];
const startArgs = (i: number): string[] => [
  'start', '--data', dataDir(i), '--port', String(ports[i]), '--public-url', url(i), '--genesis', genesisFile, '--etcd', cluster.endpoints.join(','),
];

function spawnNode(i: number): NodeProcess {
  const child = spawn(process.execPath, [cliPath, ...startArgs(i)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const p: NodeProcess = {
    child,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))),
  };
  child.stdout!.on('data', (d) => (p.stdout += d));
  child.stderr!.on('data', (d) => (p.stderr += d));
  running[i] = p;
  return p;
}

/** Resolves once `p` printed a line matching `pattern`; rejects if it exits first or after `timeoutMs`. */
async function printed(p: NodeProcess, pattern: RegExp, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(p.stdout)) {
    if (p.child.exitCode !== null || p.child.signalCode !== null) throw new Error(`node exited (${p.child.exitCode ?? p.child.signalCode}): ${p.stderr}${p.stdout}`);
    if (Date.now() > deadline) throw new Error(`no ${pattern} within ${timeoutMs} ms: ${p.stderr}${p.stdout}`);
    await sleep(50);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function stopNode(i: number, signal: NodeJS.Signals = 'SIGINT'): Promise<number | null> {
  const p = running[i];
  running[i] = undefined;
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return p?.child.exitCode ?? null;
  p.child.kill(signal);
  const force = setTimeout(() => p.child.kill('SIGKILL'), 8000);
  const code = await p.exited;
  clearTimeout(force);
  return code;
}

async function freePorts(count: number): Promise<number[]> {
  const servers = Array.from({ length: count }, () => createServer());
  const found = await Promise.all(
    servers.map(
      (s) =>
        new Promise<number>((resolve, reject) => {
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port));
        }),
    ),
  );
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return found;
}

interface Members {
  origin: string;
  members: { id: string; name: string; url?: string; verifierKey: string }[];
}

async function members(i: number): Promise<Members> {
  const res = await fetch(`${url(i)}/ledger/members`);
  expect(res.status).toBe(200);
  return (await res.json()) as Members;
}

/** Node i's checkpoint, verified against the verifier keys node i lists. */
async function checkpoint(i: number): Promise<{ note: string; treeSize: bigint; rootLine: string; signers: string[] }> {
  const keys = (await members(i)).members.map((m) => m.verifierKey);
  const res = await fetch(`${url(i)}/ledger/checkpoint`);
  expect(res.status).toBe(200);
  const note = await res.text();
  const verified = publicVerifier.verifyCheckpoint(note, keys);
  return { note, treeSize: verified.treeSize, rootLine: note.split('\n')[2]!, signers: [...verified.signers].sort() };
}

/** Polls until every running node's checkpoint is signed by all three and they agree (size and root). */
async function converged(minTreeSize = 0n, timeoutMs = 10_000): Promise<{ treeSize: bigint; rootLine: string }> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const cps = await Promise.all([0, 1, 2].map(checkpoint));
      last = cps.map((c) => ({ size: c.treeSize, root: c.rootLine, signers: c.signers }));
      const allSigned = cps.every((c) => c.signers.join(',') === [...ids].sort().join(','));
      const agree = new Set(cps.map((c) => `${c.treeSize} ${c.rootLine}`)).size === 1;
      if (allSigned && agree && cps[0]!.treeSize >= minTreeSize) return { treeSize: cps[0]!.treeSize, rootLine: cps[0]!.rootLine };
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`checkpoints did not converge within ${timeoutMs} ms: ${JSON.stringify(last, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`);
    await sleep(200);
  }
}

/** Every file under `dir` with its size and SHA-256, to show a refused command changed nothing. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const path = join(d, name);
      if (statSync(path).isDirectory()) walk(path);
      else out[path] = createHash('sha256').update(readFileSync(path)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

beforeAll(async () => {
  [cluster, ports] = await Promise.all([startEtcdCluster({ members: 3 }), freePorts(3)]);
}, 60_000);

afterAll(async () => {
  await Promise.all([0, 1, 2].map((i) => stopNode(i, 'SIGTERM')));
  await cluster?.stop();
  work.cleanup();
}, 30_000);

describe('a network of three organizations on etcd, started with the CLI', () => {
  it('init --join --url prints each member line; the founder signs a genesis listing all three', async () => {
    const lines = await Promise.all(
      [0, 1, 2].map(async (i) => {
        const r = await runCliAsync(['init', '--org', names[i]!, '--data', dataDir(i), '--join', '--url', url(i)]);
        expect(r.status, r.stderr).toBe(0);
        const line = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { id: string; url: string };
        expect(line).toMatchObject({ id: ids[i], url: url(i) });
        writeFileSync(join(work.path, `m${i}.json`), JSON.stringify(line));
        return line;
      }),
    );
    expect(lines.length).toBe(3);
    const r = await runCliAsync([
      'genesis', '--data', dataDir(0), '--origin', origin, '--url', url(0), '--member', join(work.path, 'm1.json'), join(work.path, 'm2.json'), '--out', genesisFile,
    ]);
    expect(r.status, r.stderr).toBe(0);
    const genesis = JSON.parse(readFileSync(genesisFile, 'utf8')) as { body: { origin: string; orgs: { id: string; url: string }[] } };
    expect(genesis.body.origin).toBe(origin);
    expect(genesis.body.orgs.map((o) => [o.id, o.url])).toEqual(ids.map((id, i) => [id, url(i)]));
  });

  it('a member started before the founder waits for block 0, then serves once the founder starts', async () => {
    const early = spawnNode(1);
    await printed(early, /waiting for the network genesis/);
    await sleep(1000);
    expect(early.stdout).not.toMatch(/serving at/);
    const founder = spawnNode(0);
    await printed(founder, /serving at/);
    await printed(early, /serving at/);
    const last = spawnNode(2);
    await printed(last, /serving at/);
    for (const [i, p] of [founder, early, last].entries()) {
      expect(p.stdout).toContain(`${ids[i]} serving at ${url(i)} (ordering: etcd ${cluster.endpoints.join(',')})`);
    }
  }, 45_000);

  it('every node lists the three members with their URLs', async () => {
    for (const i of [0, 1, 2]) {
      const m = await members(i);
      expect(m.origin).toBe(origin);
      expect(m.members.map((x) => [x.id, x.url]).sort()).toEqual(ids.map((id, j) => [id, url(j)]));
    }
  });

  it("within a few seconds every node's checkpoint is one note signed by all three members", async () => {
    const { treeSize } = await converged(1n, 10_000);
    expect(treeSize).toBeGreaterThanOrEqual(1n);
    const cp = await checkpoint(1);
    expect(cp.note.split('\n')[0]).toBe(origin);
    expect(cp.signers).toEqual([...ids].sort());
  });

  it("a FHIR write at node 2 becomes part of every node's tree", async () => {
    const before = await converged();
    const token = await runCliAsync(['token', '--data', dataDir(1)]);
    expect(token.status, token.stderr).toBe(0);
    const auth = { authorization: `Bearer ${token.stdout.trim()}` };
    const created = await fetch(`${url(1)}/fhir/Observation`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'written at node 2' } }),
    });
    expect(created.status).toBe(201);
    const id = ((await created.json()) as { id: string }).id;
    // Its $proof names its leaf once a checkpoint the members signed covers it.
    let proof: { parameter: { name: string; valueInteger64?: string; valueInteger?: number; valueBase64Binary?: string }[] } | undefined;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const res = await fetch(`${url(1)}/fhir/Observation/${id}/_history/1/$proof`, { headers: auth });
      if (res.status === 200) {
        proof = (await res.json()) as typeof proof;
        break;
      }
      await sleep(200);
    }
    expect(proof).toBeDefined();
    const param = (name: string) => proof!.parameter.find((p) => p.name === name)!;
    const leafIndex = Number(param('leafIndex').valueInteger64 ?? param('leafIndex').valueInteger);
    const leaf = Buffer.from(param('leaf').valueBase64Binary!, 'base64');
    const after = await converged(BigInt(leafIndex) + 1n, 10_000);
    expect(after.treeSize).toBeGreaterThan(before.treeSize);
    // The same leaf, proven at the other two nodes against their own checkpoints.
    for (const i of [0, 2]) {
      const cp = await checkpoint(i);
      const res = await fetch(`${url(i)}/ledger/proof/inclusion?leafIndex=${leafIndex}&treeSize=${cp.treeSize}`);
      expect(res.status).toBe(200);
      const body = (await res.json()) as { leaf: string; proof: string[] };
      expect(Buffer.from(body.leaf, 'base64').equals(leaf)).toBe(true);
      const root = new Uint8Array(Buffer.from(cp.rootLine, 'base64'));
      publicVerifier.verifyInclusion(
        BigInt(leafIndex),
        cp.treeSize,
        publicVerifier.leafHash(new Uint8Array(leaf)),
        body.proof.map((p) => new Uint8Array(Buffer.from(p, 'base64'))),
        root,
      );
    }
  }, 30_000);

  it('a node stopped with Ctrl-C starts again with the same command line (the same --genesis) and serves a matching checkpoint', async () => {
    const before = await converged();
    expect(await stopNode(2)).toBe(0);
    await expect(fetch(`${url(2)}/ledger/checkpoint`)).rejects.toThrow();
    const again = spawnNode(2);
    await printed(again, /serving at/);
    const after = await converged(before.treeSize, 10_000);
    expect(after.treeSize).toBeGreaterThanOrEqual(before.treeSize);
  }, 30_000);

  describe('bad command lines: one line on stderr, a non-zero exit, nothing changed', () => {
    const spareDir = join(work.path, 'spare');
    const expectRefused = async (args: string[], message: RegExp, dir: string): Promise<void> => {
      const before = snapshot(dir);
      const r = await runCliAsync(args);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n').length).toBe(1);
      expect(snapshot(dir)).toEqual(before);
    };

    beforeAll(async () => {
      const r = await runCliAsync(['init', '--org', 'Spare Pharmacy', '--data', spareDir, '--join', '--url', 'http://127.0.0.1:1']);
      expect(r.status, r.stderr).toBe(0);
    });

    it('start --etcd with a malformed URL', async () => {
      await expectRefused(
        ['start', '--data', spareDir, '--port', '0', '--genesis', genesisFile, '--etcd', `${cluster.endpoints[0]},etcd2:2379`],
        /--etcd must be comma-separated http\(s\):\/\/host:port URLs/,
        spareDir,
      );
    });

    it("start --genesis with a genesis that lists this organization's id with another key", async () => {
      // An impostor takes the spare organization's name (so its id) with a key of its own.
      const impostor = join(work.path, 'impostor');
      const made = await runCliAsync(['init', '--org', 'Spare Pharmacy', '--data', impostor, '--join', '--url', 'http://127.0.0.1:2']);
      expect(made.status, made.stderr).toBe(0);
      writeFileSync(join(work.path, 'impostor.json'), made.stdout.trim().split('\n').at(-1)!);
      const other = join(work.path, 'genesis-impostor.json');
      const g = await runCliAsync(['genesis', '--data', dataDir(0), '--origin', 'healthledger.test/other', '--url', url(0), '--member', join(work.path, 'impostor.json'), '--out', other]);
      expect(g.status, g.stderr).toBe(0);
      await expectRefused(
        ['start', '--data', spareDir, '--port', '0', '--genesis', other, '--etcd', cluster.endpoints.join(',')],
        /the genesis lists spare-pharmacy with another key than this node's/,
        spareDir,
      );
    });

    it('genesis with a missing member file', async () => {
      const outDir = join(work.path, 'genesis-out');
      mkdirSync(outDir);
      const out = join(outDir, 'never.json');
      await expectRefused(
        ['genesis', '--data', dataDir(0), '--origin', 'healthledger.test/never', '--url', url(0), '--member', join(work.path, 'm1.json'), join(work.path, 'missing.json'), '--out', out],
        /member line not found: .*missing\.json/,
        outDir,
      );
      expect(existsSync(out)).toBe(false);
    });

    it('start --etcd-cert without --etcd-key', async () => {
      const pem = join(work.path, 'client.pem');
      writeFileSync(pem, '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n');
      await expectRefused(
        ['start', '--data', spareDir, '--port', '0', '--genesis', genesisFile, '--etcd', cluster.endpoints.join(','), '--etcd-ca', pem, '--etcd-cert', pem],
        /--etcd-cert and --etcd-key go together/,
        spareDir,
      );
    });

    it('the spare organization was never given a network', () => {
      expect(JSON.parse(readFileSync(join(spareDir, 'config.json'), 'utf8')).origin).toBe('');
      expect(existsSync(join(spareDir, 'genesis.json'))).toBe(false);
    });
  });
});
