/**
 * Membership as operators change it (built CLI against a running three-organization network): a new
 * organization makes its keys with `init --join`, members approve with `org approve`, the joiner submits
 * with `org submit`; fewer approvals than a majority are refused and change nothing; with a majority every
 * node lists the new member; a leave needs a majority of the larger membership.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalNetwork, type LocalNetwork } from '../src/node.js';
import { runCliAsync, tempDir } from './helpers.js';

const work = tempDir('hl-membership-');
let net: LocalNetwork;

beforeAll(async () => {
  net = await startLocalNetwork({ dir: join(work.path, 'net'), orgs: [{ name: 'Bay Hospital' }, { name: 'Bay Lab' }, { name: 'Bay Clinic' }] });
}, 60_000);

afterAll(async () => {
  await net?.close();
  work.cleanup();
});

const memberIds = () => net.nodes.map((n) => [...n.node.ledger.state.members.keys()].sort().join(','));

async function approve(nodeIndex: number, change: string[], file: string): Promise<string> {
  const r = await runCliAsync(['org', 'approve', '--data', net.nodes[nodeIndex]!.node.dataDir, ...change]);
  expect(r.status, r.stderr).toBe(0);
  const path = join(work.path, file);
  writeFileSync(path, r.stdout);
  return path;
}

describe('membership changes through the CLI', () => {
  const pharmacyDir = join(work.path, 'pharmacy');
  const lineFile = join(work.path, 'pharmacy-line.json');

  it('init --join prints the member line a new organization sends to the members', async () => {
    const r = await runCliAsync(['init', '--org', 'Bay Pharmacy', '--data', pharmacyDir, '--join', '--url', 'https://pharmacy.example.org']);
    expect(r.status, r.stderr).toBe(0);
    const line = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    expect(line).toMatchObject({ id: 'bay-pharmacy', name: 'Bay Pharmacy', url: 'https://pharmacy.example.org' });
    expect(line.publicKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
    writeFileSync(lineFile, JSON.stringify(line));
  });

  it('refuses a join approved by one of three members and changes nothing', async () => {
    const one = await approve(0, ['--join', lineFile], 'a0.json');
    const r = await runCliAsync(['org', 'submit', '--data', pharmacyDir, '--join', lineFile, '--approval', one, '--url', net.nodes[0]!.url]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/1 of 3 members approved; 2 needed/);
    expect(r.stderr.trim().split('\n').length).toBe(1);
    expect(new Set(memberIds())).toEqual(new Set(['bay-clinic,bay-hospital,bay-lab']));
  });

  it('with a majority, every node lists the new member and its URL', async () => {
    const approvals = [await approve(0, ['--join', lineFile], 'b0.json'), await approve(2, ['--join', lineFile], 'b2.json')];
    const r = await runCliAsync(['org', 'submit', '--data', pharmacyDir, '--join', lineFile, '--approval', ...approvals, '--url', net.nodes[1]!.url]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/org\.join ordered/);
    const height = net.nodes[1]!.node.ledger.height;
    await Promise.all(net.nodes.map((n) => n.node.waitForHeight(height)));
    expect(new Set(memberIds())).toEqual(new Set(['bay-clinic,bay-hospital,bay-lab,bay-pharmacy']));
    const listed = (await (await fetch(`${net.nodes[2]!.url}/ledger/members`)).json()) as { members: { id: string; url?: string }[] };
    expect(listed.members.find((m) => m.id === 'bay-pharmacy')?.url).toBe('https://pharmacy.example.org');
  });

  it('a leave then needs three of the four members', async () => {
    const two = [await approve(0, ['--leave', 'bay-pharmacy'], 'c0.json'), await approve(1, ['--leave', 'bay-pharmacy'], 'c1.json')];
    const refused = await runCliAsync(['org', 'submit', '--data', net.nodes[0]!.node.dataDir, '--leave', 'bay-pharmacy', '--approval', ...two, '--url', net.nodes[0]!.url]);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/2 of 4 members approved; 3 needed/);
    const three = [...two, await approve(2, ['--leave', 'bay-pharmacy'], 'c2.json')];
    const r = await runCliAsync(['org', 'submit', '--data', net.nodes[0]!.node.dataDir, '--leave', 'bay-pharmacy', '--approval', ...three, '--url', net.nodes[0]!.url]);
    expect(r.status, r.stderr).toBe(0);
    const height = net.nodes[0]!.node.ledger.height;
    await Promise.all(net.nodes.map((n) => n.node.waitForHeight(height)));
    expect(new Set(memberIds())).toEqual(new Set(['bay-clinic,bay-hospital,bay-lab']));
  });

  it('says what is wrong with a change named badly, in one line', async () => {
    const r = await runCliAsync(['org', 'approve', '--data', net.nodes[0]!.node.dataDir, '--leave', 'x', '--join', lineFile]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/exactly one change/);
  });
});
