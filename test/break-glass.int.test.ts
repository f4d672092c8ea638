/**
 * Break-glass over real HTTP (issue 4 item 5), from another member organization's node, which signs in with
 * its member key (SMART Backend Services) and names its acting practitioner: without consent its reads are
 * refused; purpose ETREAT with a written reason opens a 24 h `emergency.access` on the ledger (the reason
 * only as a salted commitment) before any data is served; the patient's rest-hook Subscription is told; a
 * patient who refused emergency access stays closed; and the patient's `healthledger disclosures` lists it
 * all, flagged, every proof checked.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportPublicJwk, generateEd25519KeyPair, rawPublicKey, sha256, signEd25519 } from '../src/crypto/index.js';
import { formatCheckpoint, formatSignedNote, signApproval, signNoteSignature, signTx } from '../src/ledger/index.js';
import { addAuthClient, linkPatientKey, createPatientKey, signPatientTx, writePatientKeyFile, type PatientKey } from '../src/node.js';
import { clientAssertion, postForm } from './smart-helpers.js';
import { runCliAsync, useFhirNode } from './helpers.js';

const node = useFhirNode('Harbor General');
const lab = { id: 'coastal-lab', keys: generateEd25519KeyPair() };
const hook: { server?: Server; url: string; received: { headers: IncomingMessage['headers']; body: any }[] } = { url: '', received: [] };

let labToken = '';
let patientId = '';
let observationId = '';
let key: PatientKey;
let refusingPatientId = '';

async function newPatient(family: string): Promise<{ id: string; obs: string; key: PatientKey }> {
  const p = await node.call('POST', '/fhir/Patient', { resourceType: 'Patient', name: [{ family }] });
  const o = await node.call('POST', '/fhir/Observation', {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '2345-7' }] },
    subject: { reference: `Patient/${p.json.id}` },
  });
  const k = createPatientKey();
  await node.running.node.submitPatientTx(signPatientTx(k, 'patient.register', { publicKey: k.publicKey }).bytes);
  await linkPatientKey(node.running.node, p.json.id, k);
  return { id: p.json.id, obs: o.json.id, key: k };
}

const asLab = (path: string, headers: Record<string, string> = {}) => node.call('GET', path, undefined, { authorization: `Bearer ${labToken}`, ...headers });

beforeAll(async () => {
  const n = node.running.node;
  // The lab joins the network: its own signature and the approval of a majority (here: the one member).
  const proposal = { org: { id: lab.id, name: 'Coastal Lab', publicKey: exportPublicJwk(lab.keys.publicKey).x } };
  const approval = signApproval(n.ledger.origin!, 'org.join', proposal, { id: n.config.orgId, keyId: n.keyPair.keyId, privateKey: n.keyPair.privateKey });
  const join = signTx({ type: 'org.join', body: { ...proposal, approvals: [approval] }, signer: { kind: 'org', id: lab.id, keyId: lab.keys.keyId } }, lab.keys.privateKey);
  const [receipt] = await n.submit([join.bytes]);
  expect(receipt!.valid).toBe(true);

  await addAuthClient({ dataDir: node.work.path, clientId: 'coastal-lab-node', org: lab.id, scope: 'system/*.rs' });
  const t = await postForm(`${node.running.url}/auth/token`, {
    grant_type: 'client_credentials',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: await clientAssertion(lab.keys.privateKey, { clientId: 'coastal-lab-node', aud: `${node.running.url}/auth/token`, alg: 'EdDSA' }),
  });
  expect(t.status, t.text).toBe(200);
  labToken = t.json.access_token;

  const p = await newPatient('Nakamura-Reyes');
  patientId = p.id;
  observationId = p.obs;
  key = p.key;
  const refusing = await newPatient('Refuses-Emergency');
  refusingPatientId = refusing.id;
  const refusal = { patient: refusing.key.patient, provision: { type: 'deny', purposes: ['ETREAT'] } };
  await n.submitPatientTx(signPatientTx(refusing.key, 'consent.grant', refusal).bytes);

  hook.server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      hook.received.push({ headers: req.headers, body: body ? JSON.parse(body) : null });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => hook.server!.listen(0, '127.0.0.1', resolve));
  const address = hook.server.address() as { port: number };
  hook.url = `http://127.0.0.1:${address.port}/hook`;
  const sub = await node.call('POST', '/fhir/Subscription', {
    resourceType: 'Subscription',
    status: 'active',
    reason: "Tell the patient's app about emergency access",
    criteria: `AuditEvent?patient=Patient/${patientId}`,
    channel: { type: 'rest-hook', endpoint: hook.url, payload: 'application/fhir+json', header: ['Authorization: Bearer patient-app-secret'] },
  });
  expect(sub.status).toBe(201);
});

afterAll(async () => {
  await new Promise((r) => hook.server?.close(r));
});

describe('break-glass from another organization', () => {
  it('is refused without consent for treatment, and for ETREAT without a written reason', async () => {
    const plain = await asLab(`/fhir/Observation/${observationId}`, { 'x-acting-practitioner': 'dr-b' });
    expect(plain.status).toBe(403);
    expect(plain.json.issue[0].diagnostics).toMatch(/no consent permits TREAT access by coastal-lab/);
    const noReason = await asLab(`/fhir/Observation/${observationId}`, { 'x-purpose-of-use': 'ETREAT', 'x-acting-practitioner': 'dr-b' });
    expect(noReason.status).toBe(403);
    expect(noReason.json.issue[0].diagnostics).toMatch(/reason/);
    expect(node.running.node.ledger.state.emergencies.size).toBe(0);
  });

  it('opens a 24 h emergency access on the ledger with a reason, serves the data, and tells the patient\'s app', async () => {
    const reason = 'Unconscious in the ED after a road accident; need recent labs';
    const r = await asLab(`/fhir/Observation/${observationId}`, {
      'x-purpose-of-use': 'ETREAT',
      'x-acting-practitioner': 'dr-b',
      'x-break-glass-reason': encodeURIComponent(reason),
    });
    expect(r.status).toBe(200);
    expect(r.json.id).toBe(observationId);

    const state = node.running.node.ledger.state;
    const [access] = state.emergencies.get(key.patient) ?? [];
    expect(access).toMatchObject({ patient: key.patient, org: 'coastal-lab', practitioner: 'dr-b' });
    expect(access!.endMs - access!.startMs).toBe(24 * 3600_000);
    const tx = node.running.node.ledger.store.txById(access!.id)!;
    const text = Buffer.from(tx.bytes).toString('utf8');
    expect(JSON.parse(text).body.reason).toMatch(/^[0-9a-f]{64}$/);
    expect(text).not.toContain('accident');

    // In force: the same practitioner reads again without a new reason; another practitioner may not.
    expect((await asLab(`/fhir/Observation/${observationId}`, { 'x-purpose-of-use': 'ETREAT', 'x-acting-practitioner': 'dr-b' })).status).toBe(200);
    expect((await asLab(`/fhir/Observation/${observationId}`, { 'x-purpose-of-use': 'ETREAT', 'x-acting-practitioner': 'dr-c' })).status).toBe(403);
    expect(state.emergencies.get(key.patient)).toHaveLength(1);

    for (let i = 0; i < 50 && hook.received.length === 0; i++) await new Promise((res) => setTimeout(res, 100));
    expect(hook.received).toHaveLength(1);
    const note = hook.received[0]!;
    expect(note.headers.authorization).toBe('Bearer patient-app-secret');
    expect(note.body.resourceType).toBe('AuditEvent');
    expect(note.body.purposeOfEvent[0].coding[0].code).toBe('ETREAT');
    const emergency = note.body.entity.find((e: any) => e.what?.identifier?.value === access!.id);
    expect(emergency).toBeDefined();
    // The written reason (PHI) is not sent to the hook; the node's own AuditEvent keeps it, sealed.
    expect(JSON.stringify(note.body)).not.toContain('accident');
    await node.running.node.access.flushAudit();
    const trail = await node.call('GET', `/fhir/AuditEvent?patient=Patient/${patientId}&_count=200`);
    const kept = trail.json.entry.map((e: any) => e.resource).find((e: any) => e.entity?.some((x: any) => x.what?.identifier?.value === access!.id));
    const detail = kept.entity.find((x: any) => x.what?.identifier?.value === access!.id).detail;
    expect(detail.find((d: any) => d.type === 'reason').valueString).toBe(reason);
  });

  it('stays closed for a patient who refused emergency access, reason or not', async () => {
    const r = await asLab(`/fhir/Patient/${refusingPatientId}`, {
      'x-purpose-of-use': 'ETREAT',
      'x-acting-practitioner': 'dr-b',
      'x-break-glass-reason': 'cardiac arrest',
    });
    expect(r.status).toBe(403);
    expect(r.json.issue[0].diagnostics).toMatch(/refused emergency access/);
  });

  it('shows in the patient\'s accounting of disclosures, flagged, every proof checked', async () => {
    // With two members a checkpoint is final once both sign it: the lab's node would cosign what it computed
    // from the same ledger; here the test signs for it and sends it as the lab's node does.
    const n = node.running.node;
    await n.access.flushAudit();
    const size = n.ledger.treeSize;
    const text = formatCheckpoint({ origin: n.ledger.origin, treeSize: BigInt(size), rootHash: n.ledger.rootAt(size), extensions: [] });
    const note = formatSignedNote({ text, signatures: [signNoteSignature(sha256, lab.id, rawPublicKey(lab.keys.publicKey), (m) => signEd25519(lab.keys.privateKey, m), text)] });
    const cosigned = await fetch(`${node.running.url}/exchange/v1/checkpoint`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: note });
    expect(cosigned.status).toBe(200);
    expect(n.ledger.finalCheckpoint()!.treeSize).toBe(size);
    const file = join(node.work.path, 'nakamura.key');
    writePatientKeyFile(file, key);
    const r = await runCliAsync(['disclosures', '--key', file, '--url', node.running.url]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.at(-1)).toMatch(/^\d+ accesses at .*; (\d+) proven, 0 failed$/);
    const breakGlass = lines.filter((l) => l.includes('BREAK-GLASS'));
    expect(breakGlass.length).toBeGreaterThanOrEqual(1);
    expect(breakGlass[0]).toMatch(/coastal-lab\/dr-b {2}ETREAT .*proof ok/);
    expect(lines.some((l) => /coastal-lab\/dr-b {2}TREAT {2}read {2}deny/.test(l))).toBe(true);

    const json = JSON.parse((await runCliAsync(['disclosures', '--key', file, '--url', node.running.url, '--json'])).stdout);
    expect(json.every((d: any) => d.proofProblem === null)).toBe(true);
    expect(json.filter((d: any) => d.breakGlass && d.org === 'coastal-lab')).toHaveLength(1);
  });

  it('refuses disclosures to a key that is not linked at the node', async () => {
    const stranger = createPatientKey();
    await node.running.node.submitPatientTx(signPatientTx(stranger, 'patient.register', { publicKey: stranger.publicKey }).bytes);
    const file = join(node.work.path, 'stranger.key');
    writePatientKeyFile(file, stranger);
    const r = await runCliAsync(['disclosures', '--key', file, '--url', node.running.url]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/is not linked to a record at this node/);
  });
});
