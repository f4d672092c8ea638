/**
 * GDPR Art. 17 erasure over real HTTP (issue 4 item 7): `POST Patient/{id}/$erase` crypto-shreds the
 * patient's records and answers a receipt an outsider verifies (the `record.erase` leaf, its inclusion
 * proof and a signed checkpoint); afterwards nothing of the patient reads back by any route, other patients
 * are untouched, the full ledger audit still verifies, and the erasure is on the ledger as an access entry.
 */
import { describe, expect, it } from 'vitest';
import { leafHash, verifyCheckpoint, verifyInclusion } from '../src/ledger/verify.js';
import { patientPseudonym, verifyDataDir } from '../src/node.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { useFhirNode } from './helpers.js';

const node = useFhirNode('Erasmus Clinic');

async function patientWithRecords(family: string): Promise<{ id: string; refs: string[] }> {
  const p = await node.call('POST', '/fhir/Patient', { resourceType: 'Patient', name: [{ family }] });
  const refs = [`Patient/${p.json.id}`];
  for (const code of ['8867-4', '8310-5']) {
    const o = await node.call('POST', '/fhir/Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code }] },
      subject: { reference: `Patient/${p.json.id}` },
    });
    refs.push(`Observation/${o.json.id}`);
  }
  const up = await node.call('PUT', `/fhir/Patient/${p.json.id}`, { resourceType: 'Patient', id: p.json.id, name: [{ family }], active: true });
  expect(up.status).toBe(200);
  return { id: p.json.id, refs };
}

describe('Patient/$erase', () => {
  it('erases every version of the patient, answers a verifiable receipt, and leaves others and the ledger intact', async () => {
    const gone = await patientWithRecords('Rasmussen-Eriksen');
    const kept = await patientWithRecords('Stays-Here');
    const r = await node.call('POST', `/fhir/Patient/${gone.id}/$erase`);
    expect(r.status).toBe(200);
    const param = (name: string) => r.json.parameter.filter((p: any) => p.name === name);
    // Two Patient versions, two Observations, and the AuditEvents of the requests about this patient.
    expect(param('versionsErased')[0].valueInteger).toBeGreaterThanOrEqual(4);

    const b64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));
    const leaf = b64(param('leaf')[0].valueBase64Binary);
    const tx = JSON.parse(Buffer.from(leaf).toString('utf8'));
    const key = new Uint8Array(Buffer.from(readFileSync(join(node.work.path, 'keys/pseudonym.key'), 'utf8').trim(), 'base64'));
    expect(tx).toMatchObject({ type: 'record.erase', signer: { kind: 'org', id: 'erasmus-clinic' }, body: { patient: patientPseudonym(key, gone.id) } });
    expect(JSON.stringify(tx)).not.toContain('Rasmussen');
    const members = (await (await fetch(`${node.running.url}/ledger/members`)).json()) as any;
    const checkpoint = verifyCheckpoint(param('checkpoint')[0].valueString, members.members.map((m: any) => m.verifierKey));
    verifyInclusion(BigInt(param('leafIndex')[0].valueInteger64), checkpoint.treeSize, leafHash(leaf), param('proof').map((p: any) => b64(p.valueBase64Binary)), checkpoint.rootHash);

    for (const ref of gone.refs) {
      const read = await node.call('GET', `/fhir/${ref}`);
      expect(read.status, ref).toBe(404);
      expect(read.json.issue[0].diagnostics).toMatch(/erased/);
      expect(read.text).not.toContain('Rasmussen');
      expect((await node.call('GET', `/fhir/${ref}/_history/1`)).status).toBe(404);
      expect((await node.call('GET', `/fhir/${ref}/_history/1/$proof`)).status).toBe(404);
    }
    expect((await node.call('GET', `/fhir/Observation?subject=Patient/${gone.id}`)).json.total).toBe(0);
    expect((await node.call('GET', '/fhir/Patient?family=Rasmussen')).json.total).toBe(0);
    expect((await node.call('GET', `/fhir/Patient/${gone.id}/$everything`)).status).toBe(404);

    for (const ref of kept.refs) expect((await node.call('GET', `/fhir/${ref}`)).status).toBe(200);

    // Erasing again finds nothing to erase.
    expect((await node.call('POST', `/fhir/Patient/${gone.id}/$erase`)).status).toBe(404);

    // The whole ledger still verifies, every leaf and checkpoint.
    await node.running.node.access.flushAudit();
    const report = await verifyDataDir(node.work.path);
    expect(report.ok).toBe(true);

    // The erasure is an access entry on the ledger, naming the patient by pseudonym only.
    const ledger = node.running.node.ledger;
    const erasures = [];
    for (let i = 0; i < ledger.treeSize; i++) {
      const t = JSON.parse(Buffer.from(ledger.store.entry(i)!).toString('utf8'));
      if (t.type === 'access.log') erasures.push(...t.body.entries.filter((e: any) => e.action === 'erase'));
    }
    expect(erasures).toEqual([expect.objectContaining({ patient: patientPseudonym(key, gone.id), org: 'erasmus-clinic', outcome: 'permit' })]);
  });

  it('refuses erasure to anyone but the custodian\'s staff, and of what is not a Patient', async () => {
    const p = await patientWithRecords('Not-Yet');
    expect((await node.call('POST', '/fhir/Patient/no-such-patient/$erase')).status).toBe(404);
    // A staff token asking with another purpose is still staff: erasure does not depend on purpose.
    const r = await node.call('POST', `/fhir/Patient/${p.id}/$erase`, undefined, { 'x-purpose-of-use': 'CURIOSITY' });
    expect(r.status).toBe(400);
    expect((await node.call('GET', `/fhir/Patient/${p.id}`)).status).toBe(200);
  });
});
