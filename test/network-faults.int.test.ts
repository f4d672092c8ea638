/**
 * Faults in a three-organization network (shared LocalOrderer, real HTTP): a node that was down catches up
 * and its checkpoint matches; a custodian that alters data or a proof is caught entry by entry; a member
 * that signs another root for a tree size raises the fork alarm, which refuses writes (503) but keeps reads,
 * and survives a restart.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  linkPatientKey,
  createPatientKey,
  issueAdminToken,
  signPatientTx,
  startLocalNetwork,
  type LocalNetwork,
  type PatientKey,
  type RunningNode,
} from '../src/node.js';
import { canonicalJson, rawPublicKey, sha256, signEd25519 } from '../src/crypto/index.js';
import { formatCheckpoint, formatSignedNote, signNoteSignature } from '../src/ledger/note.js';
import { runCliAsync, tempDir } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
let net: LocalNetwork;
let patientKey: PatientKey;
const node = (i: number): RunningNode => net.nodes[i]!;

async function fhir(n: RunningNode, method: string, path: string, body?: unknown) {
  const token = await issueAdminToken({ dataDir: n.node.dataDir });
  const send = () =>
    fetch(`${n.url}/fhir/${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/fhir+json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
  // After a node restarts on its port, a connection kept alive to the old server is closed under the client.
  const res = await send().catch(send);
  return { status: res.status, headers: res.headers, body: (await res.json()) as any };
}

const everythingOf = (n: RunningNode, patient: string) =>
  fhir(n, 'POST', 'Patient/$network-everything', { resourceType: 'Parameters', parameter: [{ name: 'patient', valueString: patient }] });

async function addPatientAt(n: RunningNode, observations: number): Promise<string> {
  const p = await fhir(n, 'POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Okafor' }] });
  for (let i = 0; i < observations; i++) {
    await fhir(n, 'POST', 'Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
      subject: { reference: `Patient/${p.body.id}` },
      valueQuantity: { value: 60 + i, unit: '/min' },
    });
  }
  await linkPatientKey(n.node, p.body.id, patientKey);
  return p.body.id;
}

beforeAll(async () => {
  dir = tempDir('hl-network-faults-');
  net = await startLocalNetwork({ dir: dir.path, orgs: [{ name: 'North Hospital' }, { name: 'South Lab' }, { name: 'East Clinic' }] });
  patientKey = createPatientKey();
  await node(0).node.submitPatientTx(signPatientTx(patientKey, 'patient.register', { publicKey: patientKey.publicKey }).bytes);
  await addPatientAt(node(0), 2);
  await addPatientAt(node(1), 3);
  await node(0).node.submitPatientTx(
    signPatientTx(patientKey, 'consent.grant', {
      patient: patientKey.patient,
      provision: { type: 'permit', actors: [{ kind: 'org', id: 'east-clinic' }], purposes: ['TREAT'] },
    }).bytes,
  );
}, 60_000);

afterAll(async () => {
  await net?.close();
  dir?.cleanup();
});

describe('network faults', () => {
  it('a node that was down catches up on restart and cosigns the same checkpoint', async () => {
    const clinic = await net.restart(2, {
      whileDown: async () => {
        await fhir(node(0), 'POST', 'Observation', {
          resourceType: 'Observation',
          status: 'final',
          code: { text: 'written while the clinic was down' },
        });
      },
    });
    const hospital = node(0).node.ledger;
    const before = hospital.treeSize;
    await clinic.node.waitForHeight(hospital.height);
    // It has applied everything the hospital had (audit entries may keep arriving at either).
    const size = Math.min(clinic.node.ledger.treeSize, hospital.treeSize);
    expect(size).toBeGreaterThanOrEqual(before);
    expect(Buffer.from(clinic.node.ledger.rootAt(size))).toEqual(Buffer.from(hospital.rootAt(size)));
    // It signs again: its final checkpoint covers that size, carries its own signature among a majority's,
    // and names the root the hospital has at that size.
    const signedByClinic = () => {
      const final = clinic.node.ledger.finalCheckpoint();
      return final !== null && final.treeSize >= size && / east-clinic /.test(final.note) ? final : null;
    };
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && signedByClinic() === null) await new Promise((r) => setTimeout(r, 50));
    const final = signedByClinic()!;
    expect(final).not.toBeNull();
    expect(final.note.match(/^\u2014 /gm)!.length).toBeGreaterThanOrEqual(2);
    await node(0).node.waitForTreeSize(final.treeSize, 5000);
    expect(final.note.split('\n')[2]).toBe(Buffer.from(hospital.rootAt(final.treeSize)).toString('base64'));
  });

  it('a custodian that alters a record or a proof has those entries reported, never shown', async () => {
    const lab = node(1).node;
    const honest = lab.exchange.everythingAsCustodian.bind(lab.exchange);
    try {
      lab.exchange.everythingAsCustodian = async (request, ctx) => {
        const pkg = await honest(request, ctx);
        const obs = pkg.entries.filter((e) => JSON.parse(Buffer.from(e.content, 'base64').toString()).resourceType === 'Observation');
        // One record altered (a value changed), one proof altered (a sibling hash flipped).
        const altered = JSON.parse(Buffer.from(obs[0]!.content, 'base64').toString());
        altered.valueQuantity.value = 199;
        obs[0]!.content = Buffer.from(canonicalJson(altered)).toString('base64');
        const leaf = pkg.leaves.find((l) => l.leafIndex === obs[1]!.leafIndex)!;
        expect(pkg.entries.filter((e) => e.leafIndex === leaf.leafIndex).length).toBe(1);
        const proof = Buffer.from(leaf.proof[0]!, 'base64');
        proof[0]! ^= 1;
        leaf.proof[0] = proof.toString('base64');
        return pkg;
      };
      const res = await everythingOf(node(2), patientKey.patient);
      expect(res.status).toBe(200);
      const resources = res.body.entry.filter((e: any) => e.search.mode === 'match').map((e: any) => e.resource);
      const labObs = resources.filter((r: any) => r.resourceType === 'Observation' && r.meta.source === 'urn:healthledger:org:south-lab');
      expect(labObs.length).toBe(1);
      expect(resources.some((r: any) => r.valueQuantity?.value === 199)).toBe(false);
      const failures = res.body.entry.filter((e: any) => e.search.mode === 'outcome').map((e: any) => e.resource.issue[0].diagnostics);
      expect(failures.length).toBe(2);
      expect(failures.join('\n')).toMatch(/content does not match the commitment/);
      expect(failures.join('\n')).toMatch(/south-lab failed verification/);
      // The hospital's records, untouched, all verify.
      expect(resources.filter((r: any) => r.meta.source === 'urn:healthledger:org:north-hospital').length).toBe(3);
    } finally {
      lab.exchange.everythingAsCustodian = honest;
    }
  });

  it('a member signing another root for a tree size raises the fork alarm: writes refused with 503, reads served, kept across restart', async () => {
    const hospital = node(0);
    const labKey = node(1).node.keyPair;
    const size = hospital.node.ledger.treeSize;
    const text = formatCheckpoint({ origin: hospital.node.ledger.origin, treeSize: BigInt(size), rootHash: sha256(new Uint8Array([1, 2, 3])), extensions: [] });
    const forged = formatSignedNote({
      text,
      signatures: [signNoteSignature(sha256, 'south-lab', rawPublicKey(labKey.publicKey), (m) => signEd25519(labKey.privateKey, m), text)],
    });
    const res = await fetch(`${hospital.url}/exchange/v1/checkpoint`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: forged });
    expect(res.status).toBe(409);
    expect(await res.text()).toMatch(new RegExp(`^${hospital.node.ledger.origin}\\n${size}\\n`));
    expect(hospital.node.forkAlarm?.message).toMatch(/two different roots for tree size/);

    const write = await fhir(hospital, 'POST', 'Observation', { resourceType: 'Observation', status: 'final', code: { text: 'refused' } });
    expect(write.status).toBe(503);
    expect(write.body.issue[0].diagnostics).toMatch(/fork alarm/);
    const checkpoint = await fetch(`${hospital.url}/ledger/checkpoint`);
    expect(checkpoint.status).toBe(200);
    const status = (await (await fetch(`${hospital.url}/ledger/status`)).json()) as { forkAlarm: { message: string } | null };
    expect(status.forkAlarm?.message).toMatch(/two different roots/);

    // Kept across a restart; the operator reads it and clears it with the node stopped.
    const stillRaised = await net.restart(0);
    expect(stillRaised.node.forkAlarm?.message).toMatch(/two different roots/);
    const restarted = await net.restart(0, {
      whileDown: async () => {
        const shown = await runCliAsync(['alarm', '--data', stillRaised.node.dataDir]);
        expect(shown.status).toBe(0);
        expect(shown.stdout).toMatch(/^fork alarm raised .*two different roots for tree size/);
        const cleared = await runCliAsync(['alarm', '--data', stillRaised.node.dataDir, '--clear']);
        expect(cleared.stdout).toMatch(/cleared/);
        expect((await runCliAsync(['alarm', '--data', stillRaised.node.dataDir])).stdout).toBe('no fork alarm\n');
      },
    });
    expect(restarted.node.forkAlarm).toBeNull();
    const after = await fhir(restarted, 'POST', 'Observation', { resourceType: 'Observation', status: 'final', code: { text: 'accepted again' } });
    expect(after.status).toBe(201);
  });

  it('refuses a checkpoint signed by a key that is not a member’s', async () => {
    const { generateEd25519KeyPair } = await import('../src/crypto/index.js');
    const stranger = generateEd25519KeyPair();
    const hospital = node(0);
    const size = hospital.node.ledger.treeSize;
    const text = formatCheckpoint({ origin: hospital.node.ledger.origin, treeSize: BigInt(size), rootHash: hospital.node.ledger.rootAt(size), extensions: [] });
    const note = formatSignedNote({
      text,
      signatures: [signNoteSignature(sha256, 'south-lab', rawPublicKey(stranger.publicKey), (m) => signEd25519(stranger.privateKey, m), text)],
    });
    const res = await fetch(`${hospital.url}/exchange/v1/checkpoint`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: note });
    expect(res.status).toBe(403);
    expect(hospital.node.forkAlarm).toBeNull();
    const garbage = await fetch(`${hospital.url}/exchange/v1/checkpoint`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'not a note' });
    expect(garbage.status).toBe(400);
  });
});
