/**
 * Consent enforcement and audit over real HTTP (issue 4 items 4 and 6): a request the custodian's treating
 * staff do not make (here: the custodian's own staff asking for research, HRESCH) sees only what the
 * patient's consents on the ledger permit; a denied read is a 403 naming the consent decision and never the
 * data; a search leaves denied resources out of its matches and its total; a revocation holds from the next
 * request; and every interaction leaves an IHE BALP AuditEvent at the node and a pseudonymous `access.log`
 * entry on the ledger, with no PHI on the ledger; consents read and written as FHIR Consent; and the
 * patient's accounting of disclosures with proofs.
 */
import { createHash } from 'node:crypto';
import canonicalizeImpl from 'canonicalize';
import { beforeAll, describe, expect, it } from 'vitest';
import { signedTxExtensionUrl } from '../src/api/index.js';
import { consentToFhir } from '../src/consent/index.js';
import { validateResource } from '../src/fhir/index.js';
import { leafHash, verifyCheckpoint, verifyInclusion } from '../src/ledger/verify.js';
import { issueToken } from '../src/auth/index.js';
import { linkPatientKey, createPatientKey, signPatientTx, type PatientKey } from '../src/node.js';
import { commitmentIn, useFhirNode } from './helpers.js';

/** RFC 8785 by the package itself (the test does not take the node's canonicalization on trust). */
const canonicalize = canonicalizeImpl as unknown as (value: unknown) => string | undefined;

const node = useFhirNode('Seaside Hospital');
const org = 'seaside-hospital';
const research = { 'x-purpose-of-use': 'HRESCH' };

let key: PatientKey;
let patientId: string;
let observationId: string;
let psyConditionId: string;
let plainConditionId: string;

async function submit(type: string, body: Record<string, unknown>): Promise<string> {
  const tx = signPatientTx(key, type, body);
  const receipt = await node.running.node.submitPatientTx(tx.bytes);
  return receipt.txId;
}

beforeAll(async () => {
  const p = await node.call('POST', '/fhir/Patient', { resourceType: 'Patient', name: [{ family: 'Okonkwo-Hale', given: ['Ifeoma'] }], birthDate: '1979-06-14' });
  patientId = p.json.id;
  const subject = { reference: `Patient/${patientId}` };
  const obs = await node.call('POST', '/fhir/Observation', {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '2339-0', display: 'Glucose' }] },
    subject,
    valueQuantity: { value: 5.4, unit: 'mmol/L', system: 'http://unitsofmeasure.org', code: 'mmol/L' },
  });
  observationId = obs.json.id;
  const psy = await node.call('POST', '/fhir/Condition', {
    resourceType: 'Condition',
    meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY' }] },
    code: { text: 'Generalized anxiety disorder' },
    subject,
  });
  psyConditionId = psy.json.id;
  const plain = await node.call('POST', '/fhir/Condition', { resourceType: 'Condition', code: { text: 'Seasonal rhinitis' }, subject });
  plainConditionId = plain.json.id;
  for (const r of [p, obs, psy, plain]) expect(r.status).toBe(201);

  key = createPatientKey();
  await submit('patient.register', { publicKey: key.publicKey });
  await linkPatientKey(node.running.node, patientId, key);
});

describe('without a consent', () => {
  it('denies a research read with a 403 that names the decision and never the data', async () => {
    const r = await node.call('GET', `/fhir/Observation/${observationId}`, undefined, research);
    expect(r.status).toBe(403);
    expect(r.json.resourceType).toBe('OperationOutcome');
    expect(r.json.issue[0].diagnostics).toMatch(/access denied by the patient's consent: no consent permits HRESCH/);
    expect(r.text).not.toMatch(/Glucose|5\.4|Okonkwo/);
  });

  it('gives research searches no match and no count, and $everything a 403', async () => {
    const s = await node.call('GET', `/fhir/Condition?subject=Patient/${patientId}`, undefined, research);
    expect(s.status).toBe(200);
    expect(s.json.total).toBe(0);
    expect(s.json.entry ?? []).toEqual([]);
    const everything = await node.call('GET', `/fhir/Patient/${patientId}/$everything`, undefined, research);
    expect(everything.status).toBe(403);
  });

  it('still serves the custodian\'s treating staff everything', async () => {
    const r = await node.call('GET', `/fhir/Condition/${psyConditionId}`);
    expect(r.status).toBe(200);
    const s = await node.call('GET', `/fhir/Condition?subject=Patient/${patientId}`);
    expect(s.json.total).toBe(2);
  });

  it('refuses an unknown purpose of use with a 400', async () => {
    const r = await node.call('GET', `/fhir/Observation/${observationId}`, undefined, { 'x-purpose-of-use': 'CURIOSITY' });
    expect(r.status).toBe(400);
    expect(r.json.issue[0].diagnostics).toMatch(/X-Purpose-Of-Use must be one of/);
  });
});

describe('with a research consent that excludes mental health, then revoked', () => {
  let consentId: string;

  it('permits what the consent covers and leaves the PSY-labelled condition out of reads, searches and $everything', async () => {
    consentId = await submit('consent.grant', {
      patient: key.patient,
      provision: { type: 'permit', actors: [{ kind: 'org', id: org }], purposes: ['HRESCH'], provisions: [{ type: 'deny', labels: ['PSY'] }] },
    });
    expect((await node.call('GET', `/fhir/Observation/${observationId}`, undefined, research)).status).toBe(200);
    expect((await node.call('GET', `/fhir/Condition/${plainConditionId}`, undefined, research)).status).toBe(200);
    const psy = await node.call('GET', `/fhir/Condition/${psyConditionId}`, undefined, research);
    expect(psy.status).toBe(403);
    expect(psy.json.issue[0].diagnostics).toContain(consentId);
    expect(psy.text).not.toMatch(/anxiety/);

    const s = await node.call('GET', `/fhir/Condition?subject=Patient/${patientId}`, undefined, research);
    expect(s.json.total).toBe(1);
    expect(s.json.entry.map((e: any) => e.resource.id)).toEqual([plainConditionId]);

    const everything = await node.call('GET', `/fhir/Patient/${patientId}/$everything`, undefined, research);
    expect(everything.status).toBe(200);
    const ids = everything.json.entry.map((e: any) => `${e.resource.resourceType}/${e.resource.id}`).sort();
    expect(ids).toEqual([`Condition/${plainConditionId}`, `Observation/${observationId}`, `Patient/${patientId}`].sort());
  });

  it('filters vread and every kind of history the same way', async () => {
    expect((await node.call('GET', `/fhir/Observation/${observationId}/_history/1`, undefined, research)).status).toBe(200);
    expect((await node.call('GET', `/fhir/Condition/${psyConditionId}/_history/1`, undefined, research)).status).toBe(403);
    expect((await node.call('GET', `/fhir/Condition/${psyConditionId}/_history`, undefined, research)).status).toBe(403);
    const typeHistory = await node.call('GET', '/fhir/Condition/_history?_count=100', undefined, research);
    const ids = typeHistory.json.entry.map((e: any) => e.resource?.id);
    expect(ids).toContain(plainConditionId);
    expect(ids).not.toContain(psyConditionId);
    expect(typeHistory.text).not.toMatch(/anxiety/);
    const staff = await node.call('GET', '/fhir/Condition/_history?_count=100');
    expect(staff.json.entry.map((e: any) => e.resource?.id)).toContain(psyConditionId);
  });

  it('does not let the consent reach another purpose', async () => {
    const r = await node.call('GET', `/fhir/Observation/${observationId}`, undefined, { 'x-purpose-of-use': 'HPAYMT' });
    expect(r.status).toBe(403);
  });

  it('denies again from the first request after the revocation is applied', async () => {
    await submit('consent.revoke', { patient: key.patient, consent: consentId });
    const r = await node.call('GET', `/fhir/Observation/${observationId}`, undefined, research);
    expect(r.status).toBe(403);
    const s = await node.call('GET', `/fhir/Condition?subject=Patient/${patientId}`, undefined, research);
    expect(s.json.total).toBe(0);
  });
});

describe('no way around the consent', () => {
  const appToken = async () =>
    issueToken(
      { orgId: org, privateKey: node.running.node.keyPair.privateKey, keyId: node.running.node.keyPair.keyId, ttlSeconds: 300, nowMs: Date.now() },
      { sub: 'ward-app', scope: 'system/*.cruds', kind: 'system', client: 'ward-app' },
    );

  it('refuses an app conditional writes, and changes to records it may not read, revealing nothing', async () => {
    const app = { authorization: `Bearer ${await appToken()}` };
    const conditional = await node.call('POST', '/fhir/Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' } }, { ...app, 'if-none-exist': `_id=${observationId}` });
    expect(conditional.status).toBe(403);
    expect(conditional.text).not.toMatch(/Glucose/);
    const patch = await node.call('PATCH', `/fhir/Observation/${observationId}`, JSON.stringify([{ op: 'test', path: '/id', value: observationId }]), { ...app, 'content-type': 'application/json-patch+json' });
    expect(patch.status).toBe(403);
    expect(patch.text).not.toMatch(/Glucose/);
    const del = await node.call('DELETE', `/fhir/Observation/${observationId}`, undefined, app);
    expect(del.status).toBe(403);
    const tx = await node.call('POST', '/fhir', { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: { resourceType: 'Observation', status: 'final', code: { text: 'y' }, subject: { reference: 'Patient?birthdate=1979-06-14' } }, request: { method: 'POST', url: 'Observation' } }] }, app);
    expect(tx.status).toBe(403);
    // The staff still can.
    expect((await node.call('GET', `/fhir/Observation/${observationId}`)).status).toBe(200);
  });

  it('refuses an app linking a key to a record: only the custodian\'s staff may vouch for it', async () => {
    const app = { authorization: `Bearer ${await appToken()}` };
    expect((await node.call('GET', `/fhir/Patient/${patientId}/$link`, undefined, app)).status).toBe(403);
    const attacker = createPatientKey();
    const r = await node.call('POST', `/fhir/Patient/${patientId}/$link`, { resourceType: 'Parameters', parameter: [{ name: 'patient', valueString: attacker.patient }, { name: 'signature', valueBase64Binary: 'AAAA' }] }, app);
    expect(r.status).toBe(403);
    expect(node.running.node.access.guard.ledgerPatientOf(patientId)).toBe(key.patient);
  });

  it('answers no chained search about a resource the consent withholds, and judges old versions by the current labels', async () => {
    const consent = await submit('consent.grant', {
      patient: key.patient,
      provision: { type: 'permit', actors: [{ kind: 'org', id: org }], purposes: ['HRESCH'], classes: ['Observation', 'Condition'], provisions: [{ type: 'deny', labels: ['PSY'] }] },
    });
    const chained = await node.call('GET', '/fhir/Observation?subject:Patient.family=Okonkwo-Hale&_summary=count', undefined, research);
    expect(chained.json.total).toBe(0);
    expect((await node.call('GET', '/fhir/Observation?subject:Patient.family=Okonkwo-Hale&_summary=count')).json.total).toBe(1);

    // Version 1 had no label; version 2 is labelled PSY: version 1 is now withheld too.
    const current = (await node.call('GET', `/fhir/Condition/${plainConditionId}`)).json;
    const relabelled = { ...current, meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY' }] } };
    expect((await node.call('PUT', `/fhir/Condition/${plainConditionId}`, relabelled)).status).toBe(200);
    expect((await node.call('GET', `/fhir/Condition/${plainConditionId}/_history/1`, undefined, research)).status).toBe(403);
    expect((await node.call('GET', `/fhir/Condition/${plainConditionId}/_history/1/$proof`, undefined, research)).status).toBe(403);
    // Back as it was, for the tests after this one.
    expect((await node.call('PUT', `/fhir/Condition/${plainConditionId}`, { ...current, meta: undefined })).status).toBe(200);
    await submit('consent.revoke', { patient: key.patient, consent });
  });
});

describe('audit', () => {
  it('keeps a BALP AuditEvent for each interaction, denials included, in the patient\'s compartment', async () => {
    await node.running.node.access.flushAudit();
    const s = await node.call('GET', `/fhir/AuditEvent?patient=Patient/${patientId}&_count=500`);
    expect(s.status).toBe(200);
    const events = s.json.entry.map((e: any) => e.resource);
    const research = events.filter((e: any) => e.purposeOfEvent?.[0]?.coding?.[0]?.code === 'HRESCH');
    const denials = research.filter((e: any) => e.outcome === '4');
    const permits = research.filter((e: any) => e.outcome === '0');
    expect(denials.length).toBeGreaterThanOrEqual(4);
    expect(permits.length).toBeGreaterThanOrEqual(3);
    for (const e of denials) expect(e.outcomeDesc).toMatch(/HRESCH|consent/);
    const readOfObs = permits.find(
      (e: any) => e.subtype[0].code === 'read' && e.entity?.some((x: any) => x.what?.reference === `Observation/${observationId}/_history/1`),
    );
    expect(readOfObs).toMatchObject({ type: { code: 'rest' }, subtype: [{ code: 'read' }], action: 'R' });
    expect(readOfObs.agent.map((a: any) => a.type.coding[0].code)).toEqual(['110153', '110152', 'humanuser']);
    expect(readOfObs.entity[0].what.reference).toBe(`Patient/${patientId}`);
    // The denied read of the PSY condition is there too, with the reason and without the data.
    const psyDenial = denials.find((e: any) => e.subtype[0].code === 'read' && e.entity?.some((x: any) => x.what?.reference?.startsWith(`Condition/${psyConditionId}`)));
    expect(psyDenial?.outcomeDesc).toBeDefined();
  });

  it('puts a pseudonymous access.log entry on the ledger for each, naming the patient by network id and no PHI', async () => {
    await node.running.node.access.flushAudit();
    const ledger = node.running.node.ledger;
    const entries: any[] = [];
    let text = '';
    for (let i = 0; i < ledger.treeSize; i++) {
      const bytes = ledger.store.entry(i)!;
      const s = new TextDecoder().decode(bytes);
      text += s;
      const tx = JSON.parse(s);
      if (tx.type === 'access.log') entries.push(...tx.body.entries);
    }
    const mine = entries.filter((e) => e.patient === key.patient);
    expect(mine.filter((e) => e.purpose === 'HRESCH' && e.outcome === 'deny').length).toBeGreaterThanOrEqual(4);
    expect(mine.filter((e) => e.purpose === 'HRESCH' && e.outcome === 'permit').length).toBeGreaterThanOrEqual(3);
    for (const e of mine) {
      expect(e.org).toBe(org);
      // Staff are named by a keyed pseudonym; an app (no user) by its organization only.
      if (e.purpose === 'HRESCH') expect(e.user).toMatch(/^usr-[0-9a-f]{32}$/);
      else if (e.user !== undefined) expect(e.user).toMatch(/^usr-[0-9a-f]{32}$/);
    }
    for (const phi of ['Okonkwo', 'Ifeoma', '1979-06-14', 'anxiety', 'rhinitis', 'Glucose', '"admin"']) {
      expect(text, phi).not.toContain(phi);
    }
  });
});

describe('FHIR Consent at /fhir/Consent', () => {
  const grantBody = () => ({ patient: key.patient, provision: { type: 'permit', actors: [{ kind: 'org', id: 'lab-one' }], purposes: ['TREAT'] } });
  const asFhir = (body: Record<string, unknown>, signed?: Uint8Array) => {
    const { id: _id, ...consent } = consentToFhir(
      { id: '0'.repeat(64), patient: key.patient, body: body as any, grantedBy: key.patient, grantedAtMs: Date.now(), revokedAtMs: null, revokedBy: null },
      { atMs: Date.now() },
    );
    return signed ? { ...consent, extension: [...(consent.extension ?? []), { url: signedTxExtensionUrl, valueBase64Binary: Buffer.from(signed).toString('base64') }] } : consent;
  };

  it('lists the patient\'s consents from the ledger, revoked ones inactive, each a valid R4 Consent', async () => {
    const s = await node.call('GET', `/fhir/Consent?patient=${key.patient}`);
    expect(s.status).toBe(200);
    expect(s.json.total).toBeGreaterThanOrEqual(1);
    for (const e of s.json.entry) {
      expect(validateResource(e.resource)).toEqual([]);
      expect(e.resource.patient.identifier.value).toBe(key.patient);
    }
    const research = s.json.entry.find((e: any) => e.resource.provision.purpose?.[0]?.code === 'HRESCH');
    expect(research.resource.status).toBe('inactive');
    const one = await node.call('GET', `/fhir/Consent/${research.resource.id}`);
    expect(one.json).toEqual(research.resource);
    expect((await node.call('GET', `/fhir/Consent/${'f'.repeat(64)}`)).status).toBe(404);
    expect((await node.call('GET', '/fhir/Consent?patient=Jane')).status).toBe(400);
  });

  it('creates a consent from a Consent that carries the patient-signed grant, and refuses one that says something else or is unsigned', async () => {
    const body = grantBody();
    const signed = signPatientTx(key, 'consent.grant', body);
    const created = await node.call('POST', '/fhir/Consent', asFhir(body, signed.bytes));
    expect(created.status).toBe(201);
    expect(created.json).toMatchObject({ id: signed.id, status: 'active' });
    expect(node.running.node.ledger.state.consents.get(signed.id)?.patient).toBe(key.patient);

    const other = signPatientTx(key, 'consent.grant', grantBody());
    const altered = asFhir({ ...body, provision: { ...body.provision, purposes: ['HRESCH'] } }, other.bytes);
    const mismatch = await node.call('POST', '/fhir/Consent', altered);
    expect(mismatch.status).toBe(422);
    expect(mismatch.json.issue[0].diagnostics).toMatch(/differ from the signed consent.grant/);

    const unsigned = await node.call('POST', '/fhir/Consent', asFhir(grantBody()));
    expect(unsigned.status).toBe(403);

    const stranger = createPatientKey();
    const forged = signPatientTx(stranger, 'consent.grant', grantBody());
    const byStranger = await node.call('POST', '/fhir/Consent', asFhir(grantBody(), forged.bytes));
    expect(byStranger.status).toBe(403);
    expect(node.running.node.ledger.state.consents.has(other.id)).toBe(false);
    expect(node.running.node.ledger.state.consents.has(forged.id)).toBe(false);
  });
});

describe('Patient/$disclosures', () => {
  it('lists every access to the patient\'s records, each AuditEvent with an inclusion proof an outsider verifies', async () => {
    const r = await node.call('GET', `/fhir/Patient/${patientId}/$disclosures`);
    expect(r.status).toBe(200);
    const disclosures = r.json.parameter.filter((p: any) => p.name === 'disclosure');
    expect(disclosures.length).toBeGreaterThanOrEqual(10);
    const members = (await (await fetch(`${node.running.url}/ledger/members`)).json()) as any;
    const keys = members.members.map((m: any) => m.verifierKey);
    let denials = 0;
    for (const d of disclosures) {
      const part = (name: string) => d.part.filter((p: any) => p.name === name);
      const event = part('event')[0].resource;
      expect(event.resourceType).toBe('AuditEvent');
      if (event.outcome === '4') denials++;
      const b64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));
      const leaf = b64(part('leaf')[0].valueBase64Binary);
      const salt = b64(part('salt')[0].valueBase64Binary);
      const tx = JSON.parse(Buffer.from(leaf).toString('utf8'));
      const content = new TextEncoder().encode(canonicalize(event)!);
      expect(commitmentIn(tx, `AuditEvent/${event.id}/_history/1`)).toBe(createHash('sha256').update(salt).update(content).digest('hex'));
      const checkpoint = verifyCheckpoint(part('checkpoint')[0].valueString, keys);
      verifyInclusion(BigInt(part('leafIndex')[0].valueInteger64), checkpoint.treeSize, leafHash(leaf), part('proof').map((p: any) => b64(p.valueBase64Binary)), checkpoint.rootHash);
    }
    expect(denials).toBeGreaterThanOrEqual(4);
  });
});
