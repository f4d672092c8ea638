/**
 * Three organizations in one process on a shared LocalOrderer, each a real HTTP node: membership from one
 * genesis, checkpoints cosigned by a majority, and `$network-everything` gathering a patient's records from
 * every custodian the consents permit, each entry verified, with consent revocation enforced by all.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  linkPatientKey,
  createPatientKey,
  issueAdminToken,
  publicVerifier,
  signPatientTx,
  startLocalNetwork,
  type LocalNetwork,
  type PatientKey,
  type RunningNode,
} from '../src/node.js';
import { tempDir } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
let net: LocalNetwork;
let hospital: RunningNode;
let lab: RunningNode;
let clinic: RunningNode;
const tokens = new Map<RunningNode, string>();
let patientKey: PatientKey;

async function fhir(node: RunningNode, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${node.url}/fhir/${path}`, {
    method,
    headers: { authorization: `Bearer ${tokens.get(node)}`, ...(body ? { 'content-type': 'application/fhir+json' } : {}), ...headers },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: (await res.json()) as any };
}

async function networkEverything(node: RunningNode, patient: string, purpose = 'TREAT') {
  return fhir(node, 'POST', 'Patient/$network-everything', {
    resourceType: 'Parameters',
    parameter: [
      { name: 'patient', valueString: patient },
      { name: 'purpose', valueCode: purpose },
    ],
  });
}

beforeAll(async () => {
  dir = tempDir('hl-network-');
  net = await startLocalNetwork({ dir: dir.path, orgs: [{ name: 'General Hospital' }, { name: 'City Lab' }, { name: 'Riverside Clinic' }] });
  [hospital, lab, clinic] = net.nodes as [RunningNode, RunningNode, RunningNode];
  for (const n of net.nodes) tokens.set(n, await issueAdminToken({ dataDir: n.node.dataDir }));
  patientKey = createPatientKey();
  await hospital.node.submitPatientTx(signPatientTx(patientKey, 'patient.register', { publicKey: patientKey.publicKey }).bytes);
  const p1 = await fhir(hospital, 'POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Nakamura', given: ['Aiko'] }], birthDate: '1980-02-03' });
  await fhir(hospital, 'POST', 'Condition', { resourceType: 'Condition', subject: { reference: `Patient/${p1.body.id}` }, code: { text: 'asthma' } });
  const p2 = await fhir(lab, 'POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Nakamura', given: ['Aiko'] }], birthDate: '1980-02-03' });
  for (const value of [5.4, 6.1]) {
    await fhir(lab, 'POST', 'Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '4548-4' }] },
      subject: { reference: `Patient/${p2.body.id}` },
      valueQuantity: { value, unit: '%' },
    });
  }
  await linkPatientKey(hospital.node, p1.body.id, patientKey);
  await linkPatientKey(lab.node, p2.body.id, patientKey);
}, 60_000);

afterAll(async () => {
  await net?.close();
  dir?.cleanup();
});

describe('a network of three organizations', () => {
  it('every node lists the three members with their URLs and applies the same ledger', async () => {
    for (const n of net.nodes) {
      const members = (await (await fetch(`${n.url}/ledger/members`)).json()) as { members: { id: string; url: string }[] };
      expect(members.members.map((m) => m.id).sort()).toEqual(['city-lab', 'general-hospital', 'riverside-clinic']);
      expect(members.members.every((m) => /^http:\/\/127\.0\.0\.1:\d+$/.test(m.url))).toBe(true);
    }
    const height = Math.max(...net.nodes.map((n) => n.node.ledger.height));
    await Promise.all(net.nodes.map((n) => n.node.waitForHeight(height)));
    // Audit entries keep arriving: compare at a size every node has applied.
    const size = Math.min(...net.nodes.map((n) => n.node.ledger.treeSize));
    const roots = net.nodes.map((n) => n.node.ledger.rootAt(size));
    expect(new Set(roots.map((r) => Buffer.from(r).toString('hex'))).size).toBe(1);
  });

  it('serves a final checkpoint signed by a majority of the members, verifiable with /ledger/members', async () => {
    const deadline = Date.now() + 5000;
    let note = '';
    let signers: string[] = [];
    while (Date.now() < deadline) {
      note = await (await fetch(`${clinic.url}/ledger/checkpoint`)).text();
      const keys = ((await (await fetch(`${clinic.url}/ledger/members`)).json()) as { members: { verifierKey: string }[] }).members.map((m) => m.verifierKey);
      signers = publicVerifier.verifyCheckpoint(note, keys).signers;
      if (signers.length === 3) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(signers.length).toBe(3);
    expect(note.split('\n')[0]).toBe(net.genesis.body.origin);
  });

  it('without consent, another organization gets no records, only outcomes saying so', async () => {
    const res = await networkEverything(clinic, patientKey.patient);
    expect(res.status).toBe(200);
    expect(res.body.resourceType).toBe('Bundle');
    expect(res.body.total).toBe(0);
    const outcomes = res.body.entry.filter((e: any) => e.resource.resourceType === 'OperationOutcome');
    expect(outcomes.length).toBe(2);
    expect(JSON.stringify(outcomes)).toMatch(/general-hospital/);
    expect(JSON.stringify(outcomes)).toMatch(/city-lab/);
  });

  let consentId = '';
  it('with consent, returns every custodian’s records, each marked with its custodian and verified', async () => {
    const grant = signPatientTx(patientKey, 'consent.grant', {
      patient: patientKey.patient,
      provision: { type: 'permit', actors: [{ kind: 'org', id: 'riverside-clinic' }], purposes: ['TREAT'] },
    });
    consentId = grant.id;
    await hospital.node.submitPatientTx(grant.bytes);
    const started = performance.now();
    const res = await networkEverything(clinic, patientKey.patient);
    const ms = performance.now() - started;
    expect(res.status).toBe(200);
    const resources = res.body.entry.filter((e: any) => e.search.mode === 'match').map((e: any) => e.resource);
    expect(res.body.entry.filter((e: any) => e.search.mode === 'outcome')).toEqual([]);
    expect(res.body.total).toBe(5);
    const byType = (t: string) => resources.filter((r: any) => r.resourceType === t);
    expect(byType('Patient').map((r: any) => r.meta.source).sort()).toEqual(['urn:healthledger:org:city-lab', 'urn:healthledger:org:general-hospital']);
    expect(byType('Observation').map((r: any) => r.valueQuantity.value).sort()).toEqual([5.4, 6.1]);
    expect(byType('Observation').every((r: any) => r.meta.source === 'urn:healthledger:org:city-lab')).toBe(true);
    expect(byType('Condition')[0].meta.source).toBe('urn:healthledger:org:general-hospital');
    expect(ms).toBeLessThan(5000);
  });

  it('a revocation at one node is enforced by every custodian from the next request', async () => {
    const revoke = signPatientTx(patientKey, 'consent.revoke', { patient: patientKey.patient, consent: consentId });
    await lab.node.submitPatientTx(revoke.bytes);
    const res = await networkEverything(clinic, patientKey.patient);
    expect(res.body.total).toBe(0);
  });

  it('break-glass across the network: ETREAT with a reason opens every custodian, recorded on the ledger at each', async () => {
    const ask = (reason?: string) =>
      fhir(clinic, 'POST', 'Patient/$network-everything', {
        resourceType: 'Parameters',
        parameter: [
          { name: 'patient', valueString: patientKey.patient },
          { name: 'purpose', valueCode: 'ETREAT' },
          ...(reason ? [{ name: 'reason', valueString: reason }] : []),
        ],
      });
    // The consent was revoked above: without a reason, nothing.
    expect((await ask()).body.total).toBe(0);
    const started = performance.now();
    const res = await ask('unconscious after a road accident, allergies unknown');
    const ms = performance.now() - started;
    expect(res.body.entry.filter((e: any) => e.search.mode === 'outcome')).toEqual([]);
    expect(res.body.total).toBe(5);
    expect(ms).toBeLessThan(3000);
    for (const custodian of [hospital, lab]) {
      const accesses = [...(custodian.node.ledger.state.emergencies.get(patientKey.patient) ?? [])];
      expect(accesses.some((a) => a.org === 'riverside-clinic' && a.custodian === custodian.node.config.orgId)).toBe(true);
    }
  });

  it('answers malformed $network-everything requests with a 4xx OperationOutcome naming the problem', async () => {
    const cases: [unknown, number, RegExp][] = [
      [{ resourceType: 'Patient' }, 400, /Parameters/],
      [{ resourceType: 'Parameters', parameter: [] }, 400, /"patient"/],
      [{ resourceType: 'Parameters', parameter: [{ name: 'patient', valueString: patientKey.patient }, { name: 'purpose', valueCode: 'FUN' }] }, 400, /purpose/],
      [{ resourceType: 'Parameters', parameter: [{ name: 'patient', valueString: patientKey.patient }, { name: 'patient', valueString: 'x' }] }, 400, /more than once/],
      [{ resourceType: 'Parameters', parameter: [{ name: 'patient', valueInteger: 3 }] }, 400, /string value/],
      [{ resourceType: 'Parameters', parameter: [{ name: 'patient', valueString: 'pat-aaaaaaaaaaaaaaaaaaaaaaaaaa' }] }, 404, /no patient/],
    ];
    for (const [body, status, message] of cases) {
      const res = await fhir(clinic, 'POST', 'Patient/$network-everything', body);
      expect(res.status, JSON.stringify(body)).toBe(status);
      expect(res.body.resourceType).toBe('OperationOutcome');
      expect(res.body.issue[0].diagnostics).toMatch(message);
    }
    const notJson = await fetch(`${clinic.url}/fhir/Patient/$network-everything`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens.get(clinic)}`, 'content-type': 'application/fhir+json' },
      body: '{"resourceType":',
    });
    expect(notJson.status).toBe(400);
  });

  it('refuses /exchange/v1/everything to anyone but another member node', async () => {
    const res = await fetch(`${lab.url}/exchange/v1/everything`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens.get(lab)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ patient: patientKey.patient, purpose: 'TREAT', minTreeSize: 0 }),
    });
    expect(res.status).toBe(403);
    const none = await fetch(`${lab.url}/exchange/v1/everything`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(none.status).toBe(401);
  });
});
