/**
 * Every refused request is audited (issue 4, bad input: "each rejected with a clear 4xx, audited, and nothing
 * granted"): a missing or tampered token, a scope the token lacks, a forged consent, a bad OAuth request and
 * malformed input each leave a DICOM Security Alert AuditEvent at the node, without PHI; a consent denial,
 * which the repository audits itself, is audited once.
 */
import { describe, expect, it } from 'vitest';
import { issueAdminToken, createPatientKey, signPatientTx, linkPatientKey } from '../src/node.js';
import { useFhirNode } from './helpers.js';

const node = useFhirNode('Audit Bay Hospital');

async function securityAlerts(): Promise<any[]> {
  await node.running.node.access.flushAudit();
  const r = await node.call('GET', '/fhir/AuditEvent?type=http://dicom.nema.org/resources/ontology/DCM|110113&_count=1000');
  expect(r.status).toBe(200);
  return (r.json.entry ?? []).map((e: any) => e.resource);
}

const describes = (events: any[]) => events.map((e) => e.entity?.find((x: any) => x.description?.includes('answered'))?.description as string);

describe('refused requests leave a Security Alert AuditEvent', () => {
  it('audits a missing token, a tampered token and a scope the token lacks, naming route and status only', async () => {
    const before = (await securityAlerts()).length;
    const none = await fetch(`${node.running.url}/fhir/Patient?name=Secret-Name`);
    expect(none.status).toBe(401);
    const tampered = await node.call('GET', '/fhir/Patient', undefined, { authorization: `${node.auth.authorization!.slice(0, -4)}AAAA` });
    expect(tampered.status).toBe(401);
    const narrow = await issueAdminToken({ dataDir: node.work.path, scope: 'user/Patient.r' });
    const escalate = await node.call('POST', '/fhir/Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' } }, { authorization: `Bearer ${narrow}` });
    expect(escalate.status).toBe(403);

    const alerts = await securityAlerts();
    expect(alerts.length - before).toBe(3);
    const text = describes(alerts);
    expect(text).toEqual(expect.arrayContaining(['GET /fhir/:type answered HTTP 401', 'POST /fhir/:type answered HTTP 403']));
    for (const e of alerts) {
      expect(e).toMatchObject({ type: { code: '110113' }, outcome: '4' });
      expect(e.agent[0].network.address).toMatch(/127\.0\.0\.1/);
    }
    const escalation = alerts.find((e) => e.outcomeDesc?.includes('insufficient scope'));
    expect(escalation.agent.find((a: any) => a.type.coding[0].code === 'humanuser').who.identifier.value).toBe('admin');
    expect(JSON.stringify(alerts)).not.toContain('Secret-Name');
  });

  it('audits a forged consent, malformed input and a bad OAuth token request', async () => {
    const before = (await securityAlerts()).length;
    const patient = createPatientKey();
    const stranger = createPatientKey();
    await node.running.node.submitPatientTx(signPatientTx(patient, 'patient.register', { publicKey: patient.publicKey }).bytes);
    await node.running.node.submitPatientTx(signPatientTx(stranger, 'patient.register', { publicKey: stranger.publicKey }).bytes);
    const forged = signPatientTx(stranger, 'consent.grant', { patient: patient.patient, provision: { type: 'permit', actors: [{ kind: 'org', id: 'audit-bay-hospital' }] } });
    const r1 = await fetch(`${node.running.url}/ledger/tx`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: new TextDecoder().decode(forged.bytes) });
    expect(r1.status).toBe(403);
    const r2 = await node.call('POST', '/fhir/Patient', '{"resourceType": "Patient",');
    expect(r2.status).toBe(400);
    const r3 = await fetch(`${node.running.url}/auth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: 'made-up', code_verifier: 'x'.repeat(43), client_id: 'nobody', redirect_uri: 'http://127.0.0.1/cb' }),
    });
    expect(r3.status).toBeGreaterThanOrEqual(400);
    expect(r3.status).toBeLessThan(500);
    const alerts = await securityAlerts();
    expect(alerts.length - before).toBe(3);
    expect(describes(alerts)).toEqual(expect.arrayContaining(['POST /ledger/tx answered HTTP 403', 'POST /fhir/:type answered HTTP 400', `POST /auth/token answered HTTP ${r3.status}`]));
    expect(node.running.node.ledger.state.consentsOf(patient.patient)).toEqual([]);
  });

  it('refuses a replayed consent with a 409 and audits it; the consent stays granted once', async () => {
    const patient = createPatientKey();
    await node.running.node.submitPatientTx(signPatientTx(patient, 'patient.register', { publicKey: patient.publicKey }).bytes);
    const grant = signPatientTx(patient, 'consent.grant', { patient: patient.patient, provision: { type: 'permit', actors: [{ kind: 'org', id: 'lab-one' }] } });
    const send = () => fetch(`${node.running.url}/ledger/tx`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: new TextDecoder().decode(grant.bytes) });
    expect((await send()).status).toBe(200);
    const before = (await securityAlerts()).length;
    const replay = await send();
    expect(replay.status).toBe(409);
    expect(((await replay.json()) as any).issue[0].diagnostics).toMatch(/replay/);
    const alerts = await securityAlerts();
    expect(alerts.length - before).toBe(1);
    expect(describes(alerts)).toContain('POST /ledger/tx answered HTTP 409');
    expect(node.running.node.ledger.state.consentsOf(patient.patient)).toHaveLength(1);
  });

  it('audits a consent denial once, as the repository\'s denial and not again as a Security Alert', async () => {
    const p = await node.call('POST', '/fhir/Patient', { resourceType: 'Patient', name: [{ family: 'Denied-Once' }] });
    const key = createPatientKey();
    await node.running.node.submitPatientTx(signPatientTx(key, 'patient.register', { publicKey: key.publicKey }).bytes);
    await linkPatientKey(node.running.node, p.json.id, key);
    const before = (await securityAlerts()).length;
    const r = await node.call('GET', `/fhir/Patient/${p.json.id}`, undefined, { 'x-purpose-of-use': 'HRESCH' });
    expect(r.status).toBe(403);
    expect((await securityAlerts()).length).toBe(before);
    const trail = await node.call('GET', `/fhir/AuditEvent?patient=Patient/${p.json.id}&_count=100`);
    const denials = trail.json.entry.map((e: any) => e.resource).filter((e: any) => e.outcome === '4');
    expect(denials).toHaveLength(1);
    expect(denials[0].purposeOfEvent[0].coding[0].code).toBe('HRESCH');
  });
});
