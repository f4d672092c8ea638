/**
 * A patient's side of the network through the real CLI against a node on 127.0.0.1: `patient new` (key file,
 * registration, link to a local Patient), `patient link`, `consent grant` and `consent revoke`, each checked
 * on the node's ledger state; and every bad input refused with one line, a non-zero exit and nothing stored.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { patientPseudonym } from '../src/node.js';
import { dataLeaves, runCliAsync, useFhirNode } from './helpers.js';

const node = useFhirNode('Harbor Hospital');
const state = () => node.running.node.ledger.state;
const keyPath = (name: string) => join(node.work.path, name);

async function newLocalPatient(): Promise<string> {
  const r = await node.call('POST', '/fhir/Patient', { resourceType: 'Patient', name: [{ family: 'Lindqvist', given: ['Maja'] }], birthDate: '1961-02-03' });
  expect(r.status).toBe(201);
  return r.json.id as string;
}

const token = () => node.auth.authorization!.slice('Bearer '.length);
const pseudonymOf = (id: string) => patientPseudonym(new Uint8Array(Buffer.from(readFileSync(join(node.work.path, 'keys/pseudonym.key'), 'utf8').trim(), 'base64')), id);

describe('healthledger patient new / link', () => {
  it('writes a 0600 key file, registers the key, links it to the local Patient and prints the network id last', async () => {
    const local = await newLocalPatient();
    const file = keyPath('maja.key');
    const r = await runCliAsync(['patient', 'new', '--url', node.running.url, '--out', file, '--link', `Patient/${local}`], { HEALTHLEDGER_TOKEN: token() });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const networkId = r.stdout.trim().split('\n').at(-1)!;
    expect(networkId).toMatch(/^pat-[a-z2-7]{26}$/);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const saved = JSON.parse(readFileSync(file, 'utf8'));
    expect(saved).toMatchObject({ type: 'healthledger-patient-key', patient: networkId, jwk: { kty: 'OKP', crv: 'Ed25519' } });
    expect(state().patients.get(networkId)?.keyId).toBe(saved.keyId);
    // The ledger names the record only by its pseudonym, never by the local id.
    expect(state().patientOfPseudonym('harbor-hospital', pseudonymOf(local))).toBe(networkId);
    expect(JSON.stringify(state().links.get(networkId))).not.toContain(local);
  });

  it('never overwrites an existing key file', async () => {
    const file = keyPath('twice.key');
    expect((await runCliAsync(['patient', 'new', '--url', node.running.url, '--out', file])).status).toBe(0);
    const before = readFileSync(file, 'utf8');
    const r = await runCliAsync(['patient', 'new', '--url', node.running.url, '--out', file]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/already exists; a key file is never overwritten/);
    expect(readFileSync(file, 'utf8')).toBe(before);
  });

  it('links an existing key with patient link, and refuses a missing Patient, a missing token and a bad token', async () => {
    const file = keyPath('later.key');
    const created = await runCliAsync(['patient', 'new', '--url', node.running.url, '--out', file]);
    const networkId = created.stdout.trim().split('\n').at(-1)!;
    const local = await newLocalPatient();

    const missing = await runCliAsync(['patient', 'link', '--key', file, '--url', node.running.url, '--link', 'Patient/does-not-exist'], { HEALTHLEDGER_TOKEN: token() });
    expect(missing.status).not.toBe(0);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    expect(missing.stderr).toMatch(/HTTP 404: .*not found/);

    const noToken = await runCliAsync(['patient', 'link', '--key', file, '--url', node.running.url, '--link', `Patient/${local}`], { HEALTHLEDGER_TOKEN: '' });
    expect(noToken.status).toBe(2);
    expect(noToken.stderr).toMatch(/a staff token is needed/);

    const badToken = await runCliAsync(['patient', 'link', '--key', file, '--url', node.running.url, '--link', `Patient/${local}`], { HEALTHLEDGER_TOKEN: 'abc.def.ghi' });
    expect(badToken.status).not.toBe(0);
    expect(badToken.stderr).toMatch(/HTTP 401/);
    expect(state().links.get(networkId)).toBeUndefined();

    const ok = await runCliAsync(['patient', 'link', '--key', file, '--url', node.running.url, '--link', `Patient/${local}`], { HEALTHLEDGER_TOKEN: token() });
    expect(ok.status).toBe(0);
    expect(state().patientOfPseudonym('harbor-hospital', pseudonymOf(local))).toBe(networkId);

    // A record links to one patient only.
    const otherFile = keyPath('other.key');
    await runCliAsync(['patient', 'new', '--url', node.running.url, '--out', otherFile]);
    const again = await runCliAsync(['patient', 'link', '--key', otherFile, '--url', node.running.url, '--link', `Patient/${local}`], { HEALTHLEDGER_TOKEN: token() });
    expect(again.status).not.toBe(0);
    expect(again.stderr).toMatch(/HTTP 409: .*already linked/);
  });

  it('refuses a key file that is not one, or whose network id does not match its key', async () => {
    const file = keyPath('doctored.key');
    await runCliAsync(['patient', 'new', '--url', node.running.url, '--out', file]);
    const doctored = JSON.parse(readFileSync(file, 'utf8'));
    doctored.patient = 'pat-aaaaaaaaaaaaaaaaaaaaaaaaaa';
    const { writeFileSync } = await import('node:fs');
    writeFileSync(keyPath('doctored2.key'), JSON.stringify(doctored));
    writeFileSync(keyPath('junk.key'), 'not json');
    for (const [f, message] of [
      ['doctored2.key', /network id does not match its key/],
      ['junk.key', /not valid JSON/],
      ['absent.key', /not found/],
    ] as const) {
      const r = await runCliAsync(['consent', 'grant', '--key', keyPath(f), '--url', node.running.url, '--to', 'org:lab-one']);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(message);
    }
  });
});

describe('healthledger consent grant / revoke', () => {
  it('grants a consent with actors, purposes, classes, an excluded label and an end date, and revokes it', async () => {
    const file = keyPath('grant.key');
    const networkId = (await runCliAsync(['patient', 'new', '--url', node.running.url, '--out', file])).stdout.trim().split('\n').at(-1)!;
    const r = await runCliAsync([
      'consent', 'grant', '--key', file, '--url', node.running.url,
      '--to', 'org:lab-one,practitioner:clinic-two/prac-7,role:clinician@clinic-two',
      '--purpose', 'TREAT,HPAYMT', '--class', 'Observation,Condition', '--exclude-label', 'PSY,HIV', '--until', '2099-12-31',
    ]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const id = r.stdout.trim().split('\n').at(-1)!;
    expect(id).toMatch(/^[0-9a-f]{64}$/);
    const consent = state().consents.get(id)!;
    expect(consent).toMatchObject({ patient: networkId, grantedBy: networkId, revokedAtMs: null });
    expect(consent.body.provision).toEqual({
      type: 'permit',
      actors: [
        { kind: 'org', id: 'lab-one' },
        { kind: 'practitioner', org: 'clinic-two', id: 'prac-7' },
        { kind: 'role', role: 'clinician', org: 'clinic-two' },
      ],
      purposes: ['TREAT', 'HPAYMT'],
      classes: ['Observation', 'Condition'],
      period: { end: '2099-12-31T23:59:59.999Z' },
      provisions: [{ type: 'deny', labels: ['PSY', 'HIV'] }],
    });

    const revoked = await runCliAsync(['consent', 'revoke', '--key', file, '--url', node.running.url, '--consent', id]);
    expect(revoked.status).toBe(0);
    expect(state().consents.get(id)?.revokedAtMs).not.toBeNull();
    const twice = await runCliAsync(['consent', 'revoke', '--key', file, '--url', node.running.url, '--consent', id]);
    expect(twice.status).not.toBe(0);
    expect(twice.stderr).toMatch(/HTTP 409: .*already revoked/);
  });

  it('lets a proxy appointed by the patient grant for them, and refuses anyone else', async () => {
    const patientFile = keyPath('child.key');
    const parentFile = keyPath('parent.key');
    const strangerFile = keyPath('stranger.key');
    const child = (await runCliAsync(['patient', 'new', '--url', node.running.url, '--out', patientFile])).stdout.trim().split('\n').at(-1)!;
    const parent = (await runCliAsync(['patient', 'new', '--url', node.running.url, '--out', parentFile])).stdout.trim().split('\n').at(-1)!;
    await runCliAsync(['patient', 'new', '--url', node.running.url, '--out', strangerFile]);

    const stranger = await runCliAsync(['consent', 'grant', '--key', strangerFile, '--url', node.running.url, '--patient', child, '--to', 'org:lab-one']);
    expect(stranger.status).not.toBe(0);
    expect(stranger.stderr).toMatch(/HTTP 403: .*neither the patient nor a proxy in force/);

    const appoint = await runCliAsync(['consent', 'grant', '--key', patientFile, '--url', node.running.url, '--to', `patient:${parent}`, '--proxy']);
    expect(appoint.status).toBe(0);
    const byParent = await runCliAsync(['consent', 'grant', '--key', parentFile, '--url', node.running.url, '--patient', child, '--to', 'org:lab-one']);
    expect(byParent.status).toBe(0);
    const id = byParent.stdout.trim().split('\n').at(-1)!;
    expect(state().consents.get(id)).toMatchObject({ patient: child, grantedBy: parent });
    expect(state().consentsOf(child).map((c) => c.id)).toContain(id);
  });

  it('refuses bad options with one line and exit 2, sending nothing', async () => {
    const file = keyPath('opts.key');
    const networkId = (await runCliAsync(['patient', 'new', '--url', node.running.url, '--out', file])).stdout.trim().split('\n').at(-1)!;
    const cases: [string[], RegExp][] = [
      [['--to', 'Bad Org'], /--to "Bad Org" is not/],
      [['--to', 'org:lab-one', '--purpose', 'SHOPPING'], /--purpose SHOPPING is not one of/],
      [['--to', 'org:lab-one', '--class', 'Observaton'], /--class Observaton is not a FHIR R4 resource type/],
      [['--to', 'org:lab-one', '--exclude-label', 'XYZ'], /--exclude-label XYZ is not one of/],
      [['--to', 'org:lab-one', '--until', '2001-01-01'], /--until 2001-01-01 is in the past/],
      [['--to', 'org:lab-one', '--until', 'tomorrow'], /--until must be a date/],
      [['--to', 'org:lab-one', '--url', 'ftp://x'], /--url must be an http\(s\) URL/],
    ];
    for (const [args, message] of cases) {
      const r = await runCliAsync(['consent', 'grant', '--key', file, '--url', node.running.url, ...args]);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
    const revokeBad = await runCliAsync(['consent', 'revoke', '--key', file, '--url', node.running.url, '--consent', 'xyz']);
    expect(revokeBad.status).toBe(2);
    expect(revokeBad.stderr).toMatch(/--consent must be a consent id/);
    expect(state().consentsOf(networkId)).toEqual([]);
  });
});

describe('POST /ledger/tx', () => {
  it('answers malformed or foreign txs with a 4xx OperationOutcome and orders nothing', async () => {
    // Each refusal is audited (AuditEvents are committed); no tx of the request itself is ordered.
    const before = dataLeaves(node.running.node.ledger);
    const post = (body: string, type = 'application/json') =>
      fetch(`${node.running.url}/ledger/tx`, { method: 'POST', headers: { 'content-type': type }, body });
    const cases: [string, number, RegExp][] = [
      ['{"v":1', 400, /not valid JSON/],
      ['[1,2]', 400, /tx must be a JSON object|must be a signed tx/],
      ['{"v":1}', 400, /type must be a dotted tx type name/],
    ];
    for (const [body, status, message] of cases) {
      const res = await post(body);
      expect(res.status, body).toBe(status);
      const outcome = (await res.json()) as any;
      expect(outcome.resourceType).toBe('OperationOutcome');
      expect(JSON.stringify(outcome)).toMatch(message);
    }
    // An organization-signed tx is not taken from outside, even if well-formed.
    const orgTx = node.running.node.signAsOrg('record.commit', { resourceType: 'Observation', id: 'x', versionId: '1', commitment: '0'.repeat(64) });
    const res = await post(JSON.stringify(orgTx));
    expect(res.status).toBe(403);
    expect(((await res.json()) as any).issue[0].diagnostics).toMatch(/only patient-signed/);
    expect((await post('{}', 'text/plain')).status).toBe(415);
    expect(dataLeaves(node.running.node.ledger)).toBe(before);
  });
});
