/**
 * `healthledger demo` as a user runs it: the built CLI starts three organizations, seeds patients spread
 * across them, writes network.json (DESIGN.md §9), prints the URLs and tour, serves cross-organization
 * reads until interrupted, and reopens the same network on a second run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cliPath, tempDir } from './helpers.js';

const work = tempDir('hl-demo-');
const children: ChildProcess[] = [];

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  work.cleanup();
});

/** Starts the demo and resolves with its output once the tour is printed. */
function startDemo(args: string[]): Promise<{ child: ChildProcess; stdout: string }> {
  const child = spawn(process.execPath, [cliPath, 'demo', ...args], { env: { ...process.env } });
  children.push(child);
  let stdout = '';
  let stderr = '';
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      stdout += d;
      if (stdout.includes('Stop with Ctrl-C')) resolve({ child, stdout });
    });
    child.stderr!.on('data', (d) => (stderr += d));
    child.on('close', (code) => reject(new Error(`demo exited ${code}: ${stderr.slice(0, 2000)}`)));
  });
}

function stop(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    child.on('close', (code) => resolve(code));
    child.kill('SIGINT');
  });
}

interface NetworkFile {
  orgs: { id: string; name: string; url: string; token: string }[];
  patients: { id: string; custodians: string[]; keyFile: string }[];
}

async function networkEverything(org: NetworkFile['orgs'][number], patient: string) {
  const res = await fetch(`${org.url}/fhir/Patient/$network-everything`, {
    method: 'POST',
    headers: { authorization: `Bearer ${org.token}`, 'content-type': 'application/fhir+json' },
    body: JSON.stringify({ resourceType: 'Parameters', parameter: [{ name: 'patient', valueString: patient }] }),
  });
  return { status: res.status, body: (await res.json()) as any };
}

describe('healthledger demo', () => {
  it('starts three organizations with patients spread across them and writes network.json', async () => {
    const data = join(work.path, 'net');
    const { child, stdout } = await startDemo(['--port', '0', '--patients', '6', '--data', data]);
    expect(stdout).toMatch(/3 organizations, 6 patients \(seeded now\)/);
    const file = JSON.parse(readFileSync(join(data, 'network.json'), 'utf8')) as NetworkFile;
    expect(file.orgs.map((o) => o.name)).toEqual(['General Hospital', 'City Lab', 'Riverside Clinic']);
    for (const o of file.orgs) {
      expect(stdout).toContain(o.url);
      expect((await fetch(`${o.url}/fhir/metadata`)).status).toBe(200);
      expect(o.token.split('.').length).toBe(3);
    }
    expect(file.patients.length).toBe(6);
    expect(new Set(file.patients.map((p) => p.custodians.length))).toEqual(new Set([1, 2, 3]));
    for (const p of file.patients) {
      expect(p.id).toMatch(/^pat-[a-z2-7]{26}$/);
      expect(existsSync(p.keyFile)).toBe(true);
    }

    // Patient 5 (index 4) consents and has records at all three: the clinic sees them all, verified.
    const consenting = file.patients[4]!;
    expect(consenting.custodians.length).toBe(3);
    const clinic = file.orgs[2]!;
    const all = await networkEverything(clinic, consenting.id);
    expect(all.status).toBe(200);
    expect(all.body.entry.filter((e: any) => e.search.mode === 'outcome')).toEqual([]);
    const sources = new Set(all.body.entry.map((e: any) => e.resource.meta.source));
    expect(sources).toEqual(new Set(file.orgs.map((o) => `urn:healthledger:org:${o.id}`)));
    expect(all.body.entry.filter((e: any) => e.resource.resourceType === 'Observation').every((e: any) => e.resource.meta.source === 'urn:healthledger:org:city-lab')).toBe(true);

    // Patient 2 (index 1) gave no consent: the clinic sees only what it holds itself.
    const other = file.patients[1]!;
    const own = await networkEverything(clinic, other.id);
    expect(own.body.entry.filter((e: any) => e.search.mode === 'match').every((e: any) => e.resource.meta.source === 'urn:healthledger:org:riverside-clinic')).toBe(true);
    expect(own.body.entry.filter((e: any) => e.search.mode === 'outcome').length).toBe(2);

    expect(await stop(child)).toBe(0);

    // A second run reopens the same network and patients.
    const again = await startDemo(['--port', '0', '--data', data]);
    expect(again.stdout).toMatch(/6 patients \(reopened\)/);
    const reopened = JSON.parse(readFileSync(join(data, 'network.json'), 'utf8')) as NetworkFile;
    expect(reopened.patients).toEqual(file.patients);
    const after = await networkEverything(reopened.orgs[2]!, consenting.id);
    expect(after.body.total).toBe(all.body.total);
    expect(await stop(again.child)).toBe(0);
  }, 120_000);
});
