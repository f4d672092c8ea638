/**
 * Three organizations ordering through a real 3-member etcd cluster (Debian etcd-server, 127.0.0.1):
 * every node applies the same blocks; a consent revoked at one node is visible at all within a second;
 * killing one etcd member mid-load loses no acknowledged write and writes go on; a node cut off from the
 * ordering quorum keeps serving reads and proofs and answers writes with 503 + Retry-After; a node that
 * was down catches up.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  linkPatientKey,
  createPatientKey,
  issueAdminToken,
  openEtcdOrderer,
  readConfig,
  signPatientTx,
  startLocalNetwork,
  systemClock,
  type LocalNetwork,
  type PatientKey,
  type RunningNode,
} from '../src/node.js';
import { startEtcdCluster, type EtcdCluster } from './etcd-cluster.js';
import { tempDir } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
let cluster: EtcdCluster;
let net: LocalNetwork;
const tokens = new Map<string, string>();
const node = (i: number): RunningNode => net.nodes[i]!;

async function fhir(n: RunningNode, method: string, path: string, body?: unknown) {
  const res = await fetch(`${n.url}/fhir/${path}`, {
    method,
    headers: { authorization: `Bearer ${tokens.get(n.node.config.orgId)}`, ...(body ? { 'content-type': 'application/fhir+json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as any };
}

const observation = (text: string) => ({ resourceType: 'Observation', status: 'final', code: { text } });

async function converge(): Promise<void> {
  const height = Math.max(...net.nodes.map((n) => n.node.ledger.height));
  await Promise.all(net.nodes.map((n) => n.node.waitForHeight(height)));
  // Audit entries keep arriving: compare at a size every node has applied.
  const size = Math.min(...net.nodes.map((n) => n.node.ledger.treeSize));
  const roots = net.nodes.map((n) => Buffer.from(n.node.ledger.rootAt(size)).toString('hex'));
  expect(new Set(roots).size).toBe(1);
}

beforeAll(async () => {
  dir = tempDir('hl-network-etcd-');
  cluster = await startEtcdCluster({ members: 3 });
  net = await startLocalNetwork({
    dir: dir.path,
    orgs: [{ name: 'Harbor Hospital' }, { name: 'Summit Lab' }, { name: 'Valley Clinic' }],
    orderer: (orgId) => openEtcdOrderer({ endpoints: cluster.endpoints, unavailableMs: 3000 }, readConfig(join(dir.path, orgId)), systemClock),
  });
  for (const n of net.nodes) tokens.set(n.node.config.orgId, await issueAdminToken({ dataDir: n.node.dataDir }));
}, 60_000);

afterAll(async () => {
  await net?.close();
  await cluster?.stop();
  dir?.cleanup();
});

describe('a network ordered by etcd', () => {
  it('orders writes from every node once and every node applies the same ledger', async () => {
    const writes = await Promise.all(
      net.nodes.flatMap((n) => Array.from({ length: 10 }, (_, i) => fhir(n, 'POST', 'Observation', observation(`${n.node.config.orgId} ${i}`)))),
    );
    expect(writes.every((w) => w.status === 201)).toBe(true);
    await converge();
    const genesis = node(2).node.ledger.store.blockTxs(0)[0]!;
    expect(genesis.txId).toBe(node(0).node.ledger.store.blockTxs(0)[0]!.txId);
  });

  let patientKey: PatientKey;
  it('a revocation at one node is visible on every node within a second and enforced by the custodian', async () => {
    patientKey = createPatientKey();
    await node(0).node.submitPatientTx(signPatientTx(patientKey, 'patient.register', { publicKey: patientKey.publicKey }).bytes);
    const p = await fhir(node(1), 'POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Lindqvist' }] });
    await fhir(node(1), 'POST', 'Observation', { ...observation('lab result'), subject: { reference: `Patient/${p.body.id}` } });
    await linkPatientKey(node(1).node, p.body.id, patientKey);
    const grant = signPatientTx(patientKey, 'consent.grant', {
      patient: patientKey.patient,
      provision: { type: 'permit', actors: [{ kind: 'org', id: 'valley-clinic' }], purposes: ['TREAT'] },
    });
    await node(0).node.submitPatientTx(grant.bytes);
    const ask = () => fhir(node(2), 'POST', 'Patient/$network-everything', { resourceType: 'Parameters', parameter: [{ name: 'patient', valueString: patientKey.patient }] });
    expect((await ask()).body.total).toBe(2);

    const revoke = signPatientTx(patientKey, 'consent.revoke', { patient: patientKey.patient, consent: grant.id });
    const started = performance.now();
    await node(0).node.submitPatientTx(revoke.bytes);
    const seen = await Promise.all(
      net.nodes.map(async (n) => {
        while (n.node.ledger.state.consents.get(grant.id)?.revokedAtMs === null) await new Promise((r) => setTimeout(r, 5));
        return performance.now() - started;
      }),
    );
    expect(Math.max(...seen)).toBeLessThan(1000);
    expect((await ask()).body.total).toBe(0);
  });

  it('loses no acknowledged write when an etcd member (the leader) is killed mid-load, and writes go on', async () => {
    const leader = await cluster.leader();
    const acked: string[] = [];
    const refusals: number[] = [];
    let stop = false;
    const writer = async (w: number) => {
      for (let i = 0; !stop; i++) {
        const r = await fhir(node(i % 3), 'POST', 'Observation', observation(`load ${w}-${i}`));
        if (r.status === 201) acked.push(`${i % 3} ${r.body.id}`);
        else refusals.push(r.status);
      }
    };
    const writers = [0, 1, 2, 3].map(writer);
    while (acked.length < 20) await new Promise((r) => setTimeout(r, 10));
    await cluster.kill(leader);
    try {
      const atKill = acked.length;
      const deadline = Date.now() + 20_000;
      while (acked.length < atKill + 40 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      stop = true;
      await Promise.all(writers);
      expect(acked.length).toBeGreaterThanOrEqual(atKill + 40);
      await converge();
      for (const a of acked) {
        const [i, id] = a.split(' ') as [string, string];
        expect((await fhir(node(Number(i)), 'GET', `Observation/${id}`)).status).toBe(200);
      }
      // While etcd elects a new leader a write may be refused, always as a retryable 503, never lost or half-done.
      expect(refusals.every((s) => s === 503)).toBe(true);
    } finally {
      stop = true;
      await cluster.restart(leader);
    }
  }, 60_000);

  it('a node cut off from the ordering quorum serves reads and proofs and answers writes with 503 + Retry-After', async () => {
    const created = await fhir(node(0), 'POST', 'Observation', observation('before the cut'));
    expect(created.status).toBe(201);
    // Its proof needs a final checkpoint covering it.
    await converge();
    await cluster.kill(1);
    await cluster.kill(2);
    try {
      const started = Date.now();
      const refused = await fhir(node(0), 'POST', 'Observation', observation('during the cut'));
      expect(refused.status).toBe(503);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(refused.body.resourceType).toBe('OperationOutcome');
      expect(Date.now() - started).toBeLessThan(15_000);
      expect((await fhir(node(0), 'GET', `Observation/${created.body.id}`)).status).toBe(200);
      let proof = await fhir(node(0), 'GET', `Observation/${created.body.id}/_history/1/$proof`);
      for (let i = 0; proof.status !== 200 && i < 50; i++) {
        await new Promise((r) => setTimeout(r, 100));
        proof = await fhir(node(0), 'GET', `Observation/${created.body.id}/_history/1/$proof`);
      }
      expect(proof.status).toBe(200);
      expect((await fetch(`${node(0).url}/ledger/checkpoint`)).status).toBe(200);
    } finally {
      await cluster.restart(1);
      await cluster.restart(2);
    }
    // The restarted members elect a leader again (slow when the disk is busy, as in CI); writes then resume.
    let after = await fhir(node(0), 'POST', 'Observation', observation('after the cut'));
    const deadline = Date.now() + 60_000;
    while (after.status === 503 && Date.now() < deadline) after = await fhir(node(0), 'POST', 'Observation', observation('after the cut'));
    expect(after.status).toBe(201);
  }, 120_000);

  it('a malformed batch written straight into etcd becomes one invalid tx on every node, which keep running', async () => {
    const { Etcd3 } = await import('etcd3');
    const client = new Etcd3({ hosts: cluster.endpoints });
    try {
      const origin = node(0).node.ledger.origin;
      // The nodes may still be ordering audit entries of the tests before: take the first free height.
      let height = Math.max(...net.nodes.map((n) => n.node.orderer.lastHeight())) + 1;
      for (let attempt = 0; ; attempt++) {
        const key = `healthledger/${origin}/b/${String(height).padStart(16, '0')}`;
        const put = await client.if(key, 'Create', '==', 0).then(client.put(key).value('{"v":1,"payload":"not base64!"}')).commit();
        if (put.succeeded) break;
        expect(attempt).toBeLessThan(50);
        height++;
      }
      await Promise.all(net.nodes.map((n) => n.node.waitForHeight(height)));
      for (const n of net.nodes) {
        const txs = n.node.ledger.store.blockTxs(height);
        expect(txs.length).toBe(1);
        expect(txs[0]!.valid).toBe(false);
        expect(n.node.ledger.store.block(height)!.header.proposer).toBe('malformed');
      }
      await converge();
      expect((await fhir(node(1), 'POST', 'Observation', observation('after the malformed batch'))).status).toBe(201);
      await converge();
    } finally {
      client.close();
    }
  });

  it('a node that was down catches up from etcd and agrees on the root', async () => {
    const restarted = await net.restart(2, {
      whileDown: async () => {
        for (let i = 0; i < 5; i++) expect((await fhir(node(0), 'POST', 'Observation', observation(`while down ${i}`))).status).toBe(201);
      },
    });
    await restarted.node.waitForHeight(node(0).node.ledger.height);
    await converge();
  }, 30_000);
});
