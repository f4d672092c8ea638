/**
 * Review of the network code: who may ask for `$network-everything`, and what a requesting node tells each
 * custodian about who asks. A requesting node must never lend its own organization's identity to a
 * requester the custodians would judge differently (another organization, an app, a staff member whose
 * role a consent names).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueToken } from '../src/auth/index.js';
import { linkPatientKey, createPatientKey, issueAdminToken, signPatientTx, startLocalNetwork, type LocalNetwork, type PatientKey, type RunningNode } from '../src/node.js';
import { tempDir } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
let net: LocalNetwork;
let hospital: RunningNode;
let lab: RunningNode;
let clinic: RunningNode;
let consented: PatientKey;
let unconsented: PatientKey;

async function call(node: RunningNode, token: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${node.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/fhir+json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: (await res.json()) as any };
}

function networkEverything(node: RunningNode, token: string, patient: string, purpose = 'TREAT', reason?: string) {
  return call(node, token, 'POST', '/fhir/Patient/$network-everything', {
    resourceType: 'Parameters',
    parameter: [{ name: 'patient', valueString: patient }, { name: 'purpose', valueCode: purpose }, ...(reason ? [{ name: 'reason', valueString: reason }] : [])],
  });
}

/** A token `node` issues itself (as its SMART endpoints would after a login or a client's sign-in). */
function localToken(node: RunningNode, claims: Parameters<typeof issueToken>[1]): Promise<string> {
  const n = node.node;
  return issueToken({ orgId: n.config.orgId, privateKey: n.keyPair.privateKey, keyId: n.keyPair.keyId, ttlSeconds: 600, nowMs: Date.now() }, claims);
}

async function patientAtHospital(family: string): Promise<PatientKey> {
  const admin = await issueAdminToken({ dataDir: hospital.node.dataDir });
  const key = createPatientKey();
  await hospital.node.submitPatientTx(signPatientTx(key, 'patient.register', { publicKey: key.publicKey }).bytes);
  const p = await call(hospital, admin, 'POST', '/fhir/Patient', { resourceType: 'Patient', name: [{ family }] });
  await call(hospital, admin, 'POST', '/fhir/Condition', { resourceType: 'Condition', subject: { reference: `Patient/${p.body.id}` }, code: { text: 'epilepsy' } });
  await linkPatientKey(hospital.node, p.body.id, key);
  return key;
}

const fromHospital = (bundle: any) => (bundle.entry ?? []).filter((e: any) => e.search?.mode === 'match' && e.resource.meta?.source === 'urn:healthledger:org:general-hospital');

beforeAll(async () => {
  dir = tempDir('hl-review-net-');
  net = await startLocalNetwork({ dir: dir.path, orgs: [{ name: 'General Hospital' }, { name: 'City Lab' }, { name: 'Riverside Clinic' }] });
  [hospital, lab, clinic] = net.nodes as [RunningNode, RunningNode, RunningNode];
  consented = await patientAtHospital('Consented');
  unconsented = await patientAtHospital('Unconsented');
  // The patient lets the clinic treat them, except the clinic's auditors.
  for (const provision of [
    { type: 'permit', actors: [{ kind: 'org', id: 'riverside-clinic' }], purposes: ['TREAT'] },
    { type: 'deny', actors: [{ kind: 'role', role: 'auditor', org: 'riverside-clinic' }] },
  ]) {
    await hospital.node.submitPatientTx(signPatientTx(consented, 'consent.grant', { patient: consented.patient, provision }).bytes);
  }
}, 60_000);

afterAll(async () => {
  await net?.close();
  dir?.cleanup();
});

describe('$network-everything: who asks is who the custodians judge', () => {
  it('the consented organization’s own staff get the records (control)', async () => {
    const res = await networkEverything(clinic, await issueAdminToken({ dataDir: clinic.node.dataDir }), consented.patient);
    expect(res.status).toBe(200);
    expect(fromHospital(res.body).length).toBe(2);
  });

  it("another member's node cannot use a consented member's node to read what the consent gives only to that member", async () => {
    // The lab signs in at the clinic with its member key (every member node is a client of every other).
    const labAtClinic = await lab.node.members.token({ id: 'riverside-clinic', url: clinic.url });
    const res = await networkEverything(clinic, labAtClinic, consented.patient);
    expect(fromHospital(res.body)).toEqual([]);
    expect(res.status).toBe(403);
  });

  it("an app (a system client) at a member's node cannot break the glass at the other custodians", async () => {
    const app = await localToken(clinic, { sub: 'clinic-ehr', kind: 'system', client: 'clinic-ehr', scope: 'system/*.rs' });
    const res = await networkEverything(clinic, app, unconsented.patient, 'ETREAT', 'the app says it is an emergency');
    expect(fromHospital(res.body)).toEqual([]);
    expect([...(hospital.node.ledger.state.emergencies.get(unconsented.patient) ?? [])]).toEqual([]);
  });

  it('a consent that denies a role at the requesting organization holds across the network', async () => {
    const clinician = await localToken(clinic, { sub: 'dr-ito', kind: 'user', role: 'clinician', practitioner: 'dr-ito', scope: 'user/*.rs' });
    expect(fromHospital((await networkEverything(clinic, clinician, consented.patient)).body).length).toBe(2);
    const auditor = await localToken(clinic, { sub: 'audit-1', kind: 'user', role: 'auditor', practitioner: 'audit-1', scope: 'user/*.rs' });
    const res = await networkEverything(clinic, auditor, consented.patient);
    expect(fromHospital(res.body)).toEqual([]);
  });
});

describe('$network-everything: what a custodian answers', () => {
  const asClinic = async (patient: string) => networkEverything(clinic, await issueAdminToken({ dataDir: clinic.node.dataDir }), patient);

  async function withAnswer(alter: (pkg: Awaited<ReturnType<RunningNode['node']['exchange']['everythingAsCustodian']>>) => void, run: () => Promise<void>) {
    const exchange = hospital.node.exchange;
    const honest = exchange.everythingAsCustodian.bind(exchange);
    exchange.everythingAsCustodian = async (request, ctx) => {
      const pkg = await honest(request, ctx);
      alter(pkg);
      return pkg;
    };
    try {
      await run();
    } finally {
      exchange.everythingAsCustodian = honest;
    }
  }

  it('shows each version once, however often the custodian sends it', async () => {
    await withAnswer(
      (pkg) => pkg.entries.push(...pkg.entries, ...pkg.entries),
      async () => {
        const res = await asClinic(consented.patient);
        const shown = fromHospital(res.body).map((e: any) => `${e.resource.resourceType}/${e.resource.id}/${e.resource.meta.versionId}`);
        expect(shown.length).toBe(2);
        expect(new Set(shown).size).toBe(2);
      },
    );
  });

  it('never quotes content that fails verification in its outcomes', async () => {
    await withAnswer(
      (pkg) => pkg.entries.push({ ...pkg.entries[0]!, content: Buffer.from('Nakamura has HIV, viral load 1200 copies').toString('base64') }),
      async () => {
        const res = await asClinic(consented.patient);
        expect(fromHospital(res.body).length).toBe(2);
        const outcomes = JSON.stringify(res.body.entry.filter((e: any) => e.search.mode === 'outcome'));
        expect(outcomes).toMatch(/failed verification/);
        expect(outcomes).not.toMatch(/Nakamura|HIV/);
      },
    );
  });
});
