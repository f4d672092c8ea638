/**
 * FHIR R4 REST over real HTTP: create, read, vread, update (If-Match), delete, history, and `$proof`
 * verified as an outsider would with `healthledger/verify` alone. Bad input gets a 4xx OperationOutcome and
 * stores nothing; a tampered record or commitment is refused on read, never returned.
 */
import { createHash } from 'node:crypto';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { leafHash, verifyCheckpoint, verifyInclusion } from '../src/ledger/verify.js';
import { commitmentIn, dataLeaves, runCli, useFhirNode } from './helpers.js';

const fhir = useFhirNode('Summit Clinic');
const { work, call } = fhir;

const patient = {
  resourceType: 'Patient',
  identifier: [{ system: 'urn:test:mrn', value: 'MRN-8842-TEST' }],
  name: [{ family: 'Quillfeather', given: ['Ottoline'] }],
  gender: 'female',
  birthDate: '1971-04-12',
  address: [{ line: ['17 Larkspur Close'], city: 'Pembrooke' }],
};

const ledgerSize = () => dataLeaves(fhir.running.node.ledger);

describe('FHIR CRUD', () => {
  let id = '';

  it('serves a CapabilityStatement without a token', async () => {
    const res = await fetch(`${fhir.running.url}/fhir/metadata`);
    const cs = (await res.json()) as any;
    expect(res.status).toBe(200);
    expect(cs).toMatchObject({ resourceType: 'CapabilityStatement', fhirVersion: '4.0.1' });
    expect(cs.rest[0].resource.find((r: { type: string }) => r.type === 'Observation').interaction.map((i: { code: string }) => i.code)).toContain('vread');
  });

  it('creates a Patient: 201, Location, ETag, server id and meta', async () => {
    const before = ledgerSize();
    const r = await call('POST', '/fhir/Patient', { ...patient, id: 'client-chosen' });
    expect(r.status).toBe(201);
    id = r.json.id;
    expect(id).not.toBe('client-chosen');
    expect(r.json.meta.versionId).toBe('1');
    expect(r.headers.get('etag')).toBe('W/"1"');
    expect(r.headers.get('location')).toBe(`${fhir.running.url}/fhir/Patient/${id}/_history/1`);
    expect(ledgerSize()).toBe(before + 1);
  });

  it('reads and vreads back exactly what was committed', async () => {
    const read = await call('GET', `/fhir/Patient/${id}`);
    const vread = await call('GET', `/fhir/Patient/${id}/_history/1`);
    expect(read.status).toBe(200);
    expect(read.text).toBe(vread.text);
    const { id: _i, meta: _m, ...rest } = read.json;
    expect(rest).toEqual(patient);
  });

  it('updates with If-Match and refuses a stale If-Match with 412', async () => {
    const current = (await call('GET', `/fhir/Patient/${id}`)).json;
    const r = await call('PUT', `/fhir/Patient/${id}`, { ...current, active: true }, { 'if-match': 'W/"1"' });
    expect(r.status).toBe(200);
    expect(r.json.meta.versionId).toBe('2');
    const stale = await call('PUT', `/fhir/Patient/${id}`, { ...current, active: false }, { 'if-match': 'W/"1"' });
    expect(stale.status).toBe(412);
    expect(stale.json.resourceType).toBe('OperationOutcome');
    expect((await call('GET', `/fhir/Patient/${id}`)).json.active).toBe(true);
  });

  it('proves a version untampered with $proof, checked as an outsider', async () => {
    const vread = await call('GET', `/fhir/Patient/${id}/_history/2`);
    const p = await call('GET', `/fhir/Patient/${id}/_history/2/$proof`);
    expect(p.status).toBe(200);
    const param = (name: string) => p.json.parameter.filter((x: { name: string }) => x.name === name);
    const b64 = (s: string) => Uint8Array.from(Buffer.from(s, 'base64'));
    const leaf = b64(param('leaf')[0].valueBase64Binary);
    const salt = b64(param('salt')[0].valueBase64Binary);
    const tx = JSON.parse(Buffer.from(leaf).toString('utf8'));
    expect(tx.type).toBe('record.commit');
    // the commitment covers the exact bytes vread returned (the leaf may also commit AuditEvents of the
    // same patient written in the same group)
    const commitment = createHash('sha256').update(salt).update(vread.text).digest('hex');
    expect(commitmentIn(tx, `Patient/${id}/_history/2`)).toBe(commitment);
    const members = (await (await fetch(`${fhir.running.url}/ledger/members`)).json()) as any;
    const cp = verifyCheckpoint(param('checkpoint')[0].valueString, members.members.map((m: { verifierKey: string }) => m.verifierKey));
    expect(BigInt(param('treeSize')[0].valueInteger64)).toBe(cp.treeSize);
    verifyInclusion(BigInt(param('leafIndex')[0].valueInteger64), cp.treeSize, leafHash(leaf), param('proof').map((x: { valueBase64Binary: string }) => b64(x.valueBase64Binary)), cp.rootHash);
    // and no PHI on the ledger: the leaf names no name, identifier or birth date, and not the local id
    const leafText = Buffer.from(leaf).toString('utf8');
    for (const s of ['Quillfeather', 'Ottoline', 'MRN-8842-TEST', '1971-04-12', 'Larkspur']) expect(leafText).not.toContain(s);
    expect(tx.body.patient).toMatch(/^psn-[0-9a-f]{32}$/);
  });

  it('deletes: 204, then read is 410 while old versions stay readable; history lists all three', async () => {
    expect((await call('DELETE', `/fhir/Patient/${id}`)).status).toBe(204);
    const gone = await call('GET', `/fhir/Patient/${id}`);
    expect(gone.status).toBe(410);
    expect(gone.json.issue[0].code).toBe('deleted');
    expect((await call('GET', `/fhir/Patient/${id}/_history/1`)).status).toBe(200);
    const history = await call('GET', `/fhir/Patient/${id}/_history`);
    expect(history.json).toMatchObject({ resourceType: 'Bundle', type: 'history' });
    expect(history.json.entry.map((e: { request: { method: string } }) => e.request.method)).toEqual(['DELETE', 'PUT', 'POST']);
  });
});

describe('operations: $validate, $everything, conditional create, type and system history', () => {
  it('$validate reports issues without storing anything', async () => {
    const before = ledgerSize();
    const bad = await call('POST', '/fhir/Patient/$validate', { resourceType: 'Patient', gender: 'girl' });
    expect(bad.status).toBe(200);
    expect(bad.json.issue.flatMap((i: { expression?: string[] }) => i.expression ?? [])).toContain('Patient.gender');
    const good = await call('POST', '/fhir/Patient/$validate', patient);
    expect(good.json.issue).toEqual([{ severity: 'information', code: 'informational', diagnostics: 'the resource is valid' }]);
    expect(ledgerSize()).toBe(before);
  });

  it('$everything returns the patient and its compartment, and nobody else\'s', async () => {
    const p = (await call('POST', '/fhir/Patient', patient)).json;
    const other = (await call('POST', '/fhir/Patient', patient)).json;
    for (const subject of [p.id, p.id, other.id]) {
      await call('POST', '/fhir/Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${subject}` } });
    }
    const r = await call('GET', `/fhir/Patient/${p.id}/$everything`);
    expect(r.status).toBe(200);
    expect(r.json.entry.map((e: any) => e.resource.resourceType).sort()).toEqual(['Observation', 'Observation', 'Patient']);
    expect(r.json.entry.filter((e: any) => e.resource.resourceType === 'Observation').every((e: any) => e.resource.subject.reference === `Patient/${p.id}`)).toBe(true);
  });

  it('If-None-Exist creates once, then returns the match, and refuses an ambiguous match', async () => {
    const org = { resourceType: 'Organization', identifier: [{ system: 'urn:test:org', value: 'org-42' }], name: 'Lab 42' };
    const first = await call('POST', '/fhir/Organization', org, { 'if-none-exist': 'identifier=urn:test:org|org-42' });
    const second = await call('POST', '/fhir/Organization', org, { 'if-none-exist': 'identifier=urn:test:org|org-42' });
    expect(first.status).toBe(201);
    expect(second.status).toBe(200);
    expect(second.json.id).toBe(first.json.id);
    await call('POST', '/fhir/Organization', org);
    expect((await call('POST', '/fhir/Organization', org, { 'if-none-exist': 'identifier=urn:test:org|org-42' })).status).toBe(412);
  });

  it('serves history of a type and of the whole system, newest first', async () => {
    const typeHistory = await call('GET', '/fhir/Observation/_history?_count=2');
    expect(typeHistory.json.type).toBe('history');
    expect(typeHistory.json.entry).toHaveLength(2);
    expect(typeHistory.json.entry.every((e: any) => e.fullUrl.includes('/Observation/'))).toBe(true);
    expect(typeHistory.json.link.find((l: any) => l.relation === 'next')).toBeDefined();
    const system = await call('GET', '/fhir/_history?_count=5');
    expect(system.json.entry).toHaveLength(5);
    const times = system.json.entry.map((e: any) => e.response.lastModified);
    expect([...times].sort().reverse()).toEqual(times);
  });
});

describe('JSON Patch', () => {
  it('applies RFC 6902 operations as a new committed version, and refuses bad ones', async () => {
    const created = (await call('POST', '/fhir/Patient', patient)).json;
    const patchHeaders = { 'content-type': 'application/json-patch+json' };
    const ok = await call('PATCH', `/fhir/Patient/${created.id}`, [{ op: 'replace', path: '/gender', value: 'male' }, { op: 'add', path: '/active', value: true }], patchHeaders);
    expect(ok.status).toBe(200);
    expect(ok.json).toMatchObject({ gender: 'male', active: true, meta: { versionId: '2' } });
    const before = ledgerSize();
    const cases: [unknown, number, RegExp][] = [
      [[{ op: 'replace', path: '/nothing/here', value: 1 }], 422, /cannot be applied/],
      [[{ op: 'replace', path: '/gender', value: 'girl' }], 422, /Patient\.gender/],
      [[{ op: 'replace', path: '/id', value: 'other' }], 422, /may not change/],
      [{ op: 'replace' }, 400, /list of 1 to 1,000 operations/],
    ];
    for (const [body, status, message] of cases) {
      const r = await call('PATCH', `/fhir/Patient/${created.id}`, body, patchHeaders);
      expect(r.status).toBe(status);
      expect(JSON.stringify(r.json.issue)).toMatch(message);
    }
    expect((await call('PATCH', `/fhir/Patient/${created.id}`, [{ op: 'add', path: '/active', value: false }], { ...patchHeaders, 'if-match': 'W/"1"' })).status).toBe(412);
    expect(ledgerSize()).toBe(before);
  });
});

describe('concurrent writes (group commit)', () => {
  it('acknowledges 40 concurrent creates, each with its own id, all readable', async () => {
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => call('POST', '/fhir/Observation', { resourceType: 'Observation', status: 'final', code: { text: `c${i}` } })),
    );
    expect(results.map((r) => r.status)).toEqual(Array(40).fill(201));
    const ids = new Set(results.map((r) => r.json.id));
    expect(ids.size).toBe(40);
    for (const r of results.slice(0, 5)) expect((await call('GET', `/fhir/Observation/${r.json.id}`)).json.code.text).toBe(r.json.code.text);
  });

  it('lets exactly one of ten concurrent updates of the same version win', async () => {
    const created = (await call('POST', '/fhir/Observation', { resourceType: 'Observation', status: 'final', code: { text: 'race' } })).json;
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => call('PUT', `/fhir/Observation/${created.id}`, { ...created, code: { text: `race-${i}` } }, { 'if-match': 'W/"1"' })),
    );
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(statuses.filter((s) => s !== 200).every((s) => s === 409 || s === 412)).toBe(true);
    const winner = results.find((r) => r.status === 200)!.json;
    expect((await call('GET', `/fhir/Observation/${created.id}`)).json.code.text).toBe(winner.code.text);
    await fhir.running.node.access.flushAudit();
    expect(await fhir.running.node.records.pendingVersions()).toEqual([]);
  });
});

describe('FHIR bad input: 4xx OperationOutcome, nothing stored', () => {
  it.each([
    ['malformed JSON', 'POST', '/fhir/Patient', '{"resourceType":"Patient",', {}, 400, /not valid JSON/],
    ['a wrong content type', 'POST', '/fhir/Patient', 'resourceType=Patient', { 'content-type': 'text/plain' }, 415, /content type/],
    ['an unknown resource type', 'POST', '/fhir/Spaceship', { resourceType: 'Spaceship' }, {}, 404, /unknown resource type/],
    ['a resourceType that does not match the URL', 'POST', '/fhir/Patient', { resourceType: 'Observation' }, {}, 400, /does not match/],
    ['an invalid resource', 'POST', '/fhir/Patient', { resourceType: 'Patient', gender: 'girl', birthDate: '12/04/1971' }, {}, 422, /Patient\.gender/],
    ['a body over the size limit', 'POST', '/fhir/Patient', { resourceType: 'Patient', text: 'x'.repeat(9 * 1024 * 1024) }, {}, 413, /too large/],
    ['a bad id', 'GET', '/fhir/Patient/bad$id', undefined, {}, 400, /must match/],
    ['an unknown id', 'GET', '/fhir/Patient/does-not-exist', undefined, {}, 404, /./],
    ['a malformed If-Match', 'PUT', '/fhir/Patient/x', { resourceType: 'Patient', id: 'x' }, { 'if-match': 'version one' }, 400, /If-Match/],
  ])('%s', async (_name, method, path, body, headers, status, message) => {
    const before = ledgerSize();
    const r = await call(method, path, body, headers as Record<string, string>);
    expect(r.status).toBe(status);
    expect(r.json.resourceType).toBe('OperationOutcome');
    expect(JSON.stringify(r.json.issue)).toMatch(message);
    expect(ledgerSize()).toBe(before);
  });

  it('lists every validation issue with its FHIRPath', async () => {
    const r = await call('POST', '/fhir/Patient', { resourceType: 'Patient', gender: 'girl', birthDate: '12/04/1971' });
    expect(r.status).toBe(422);
    const expressions = r.json.issue.flatMap((i: { expression?: string[] }) => i.expression ?? []);
    expect(expressions).toEqual(expect.arrayContaining(['Patient.gender', 'Patient.birthDate']));
    expect(JSON.stringify(r.json)).not.toContain('girl');
  });

  it('rejects an id mismatch on update', async () => {
    const created = (await call('POST', '/fhir/Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' } })).json;
    const r = await call('PUT', `/fhir/Observation/${created.id}`, { ...created, id: 'other' });
    expect(r.status).toBe(400);
    expect(r.json.issue[0].diagnostics).toMatch(/must match the id in the URL/);
  });
});

describe('commitments of a transaction', () => {
  it("commits a transaction's versions of one patient in one leaf, each $proof verifying its own commitment", async () => {
    const before = ledgerSize();
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:3f1c2a90-0000-4000-8000-000000000001', resource: patient, request: { method: 'POST', url: 'Patient' } },
        ...[1, 2, 3].map((n) => ({
          resource: { resourceType: 'Observation', status: 'final', code: { text: `reading ${n}` }, subject: { reference: 'urn:uuid:3f1c2a90-0000-4000-8000-000000000001' } },
          request: { method: 'POST', url: 'Observation' },
        })),
        { resource: { resourceType: 'Organization', name: 'Larkspur Lab' }, request: { method: 'POST', url: 'Organization' } },
      ],
    };
    const r = await call('POST', '/fhir', bundle);
    expect(r.status).toBe(200);
    // The patient's four versions share a leaf; the Organization (in no compartment) has its own.
    expect(ledgerSize() - before).toBe(2);
    const members = (await (await fetch(`${fhir.running.url}/ledger/members`)).json()) as any;
    const leaves = new Set<string>();
    for (const e of r.json.entry as { response: { location: string } }[]) {
      const path = `/fhir/${e.response.location.replace(/^.*\/fhir\//, '')}`;
      const [, , type, rid, , vid] = path.split('/');
      const vread = await call('GET', path);
      const p = await call('GET', `${path}/$proof`);
      expect(p.status).toBe(200);
      const param = (name: string) => p.json.parameter.filter((x: { name: string }) => x.name === name);
      const b64 = (s: string) => Uint8Array.from(Buffer.from(s, 'base64'));
      const leaf = b64(param('leaf')[0].valueBase64Binary);
      const body = JSON.parse(Buffer.from(leaf).toString('utf8')).body;
      const mine = (body.versions ?? [body]).filter((v: { resourceType: string; id: string; versionId: string }) => v.resourceType === type && v.id === rid && v.versionId === vid);
      expect(mine).toHaveLength(1);
      expect(mine[0].commitment).toBe(createHash('sha256').update(b64(param('salt')[0].valueBase64Binary)).update(vread.text).digest('hex'));
      // The Bundle's versions of the patient share this leaf (AuditEvents of other requests may join it).
      const data = (body.versions ?? [body]).filter((v: { resourceType: string }) => v.resourceType !== 'AuditEvent');
      expect(data.length).toBe(type === 'Organization' ? 1 : 4);
      const cp = verifyCheckpoint(param('checkpoint')[0].valueString, members.members.map((m: { verifierKey: string }) => m.verifierKey));
      verifyInclusion(BigInt(param('leafIndex')[0].valueInteger64), cp.treeSize, leafHash(leaf), param('proof').map((x: { valueBase64Binary: string }) => b64(x.valueBase64Binary)), cp.rootHash);
      leaves.add(param('leafIndex')[0].valueInteger64);
    }
    expect(leaves.size).toBe(2);
  });

  it('refuses to return a version whose commitment inside a shared leaf was changed, and only that one', async () => {
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:3f1c2a90-0000-4000-8000-000000000002', resource: patient, request: { method: 'POST', url: 'Patient' } },
        { resource: { resourceType: 'Observation', status: 'final', code: { text: 'pulse' }, subject: { reference: 'urn:uuid:3f1c2a90-0000-4000-8000-000000000002' } }, request: { method: 'POST', url: 'Observation' } },
      ],
    };
    const r = await call('POST', '/fhir', bundle);
    const [patientPath, observationPath] = (r.json.entry as { response: { location: string } }[]).map((e) => `/fhir/${e.response.location.replace(/^.*\/fhir\//, '').split('/_history')[0]!}`);
    const observationId = observationPath!.split('/')[3]!;
    // Read once first, so that a remembered decoding of the leaf could hide the edit if it were trusted.
    expect((await call('GET', `${observationPath}`)).status).toBe(200);
    const db = new Database(`${work.path}/ledger.sqlite`);
    try {
      const txId = (db.prepare("SELECT tx_id FROM record_version WHERE resource_type = 'Observation' AND id = ?").get(observationId) as { tx_id: string }).tx_id;
      const tx = db.prepare('SELECT bytes FROM ledger_tx WHERE tx_id = ?').get(txId) as { bytes: Buffer };
      const text = tx.bytes.toString('utf8');
      const at = text.indexOf('"commitment":"', text.indexOf(`"id":"${observationId}"`) - 90) + 14;
      expect(text.slice(at - 200, at + 200)).toContain(observationId);
      db.prepare('UPDATE ledger_tx SET bytes = ? WHERE tx_id = ?').run(Buffer.from(text.slice(0, at) + (text[at] === '0' ? '1' : '0') + text.slice(at + 1)), txId);
    } finally {
      db.close();
    }
    const observation = await call('GET', `${observationPath}`);
    expect(observation.status).toBe(500);
    expect(observation.json.issue[0].diagnostics).toMatch(/does not match its ledger commitment/);
    expect((await call('GET', `${patientPath}`)).status).toBe(200);
  });
});

describe('tampering with stored records', () => {
  it('refuses to return a record whose ciphertext was changed, and one whose commitment was changed', async () => {
    const a = (await call('POST', '/fhir/Patient', patient)).json;
    const b = (await call('POST', '/fhir/Patient', patient)).json;
    const db = new Database(`${work.path}/ledger.sqlite`);
    try {
      // flip one byte of a's sealed record
      const row = db.prepare("SELECT seq, sealed FROM record_version WHERE resource_type = 'Patient' AND id = ?").get(a.id) as { seq: number; sealed: Buffer };
      row.sealed[row.sealed.length - 20]! ^= 1;
      db.prepare('UPDATE record_version SET sealed = ? WHERE seq = ?').run(row.sealed, row.seq);
      // change b's commitment on the ledger
      const txId = (db.prepare("SELECT tx_id FROM record_version WHERE resource_type = 'Patient' AND id = ?").get(b.id) as { tx_id: string }).tx_id;
      const tx = db.prepare('SELECT bytes FROM ledger_tx WHERE tx_id = ?').get(txId) as { bytes: Buffer };
      const text = tx.bytes.toString('utf8');
      const at = text.indexOf('"commitment":"') + 14;
      db.prepare('UPDATE ledger_tx SET bytes = ? WHERE tx_id = ?').run(Buffer.from(text.slice(0, at) + (text[at] === '0' ? '1' : '0') + text.slice(at + 1)), txId);
    } finally {
      db.close();
    }
    for (const rid of [a.id, b.id]) {
      for (const path of [`/fhir/Patient/${rid}`, `/fhir/Patient?_id=${rid}`]) {
        const r = await call('GET', path);
        expect(r.status, path).toBe(500);
        expect(r.json.issue[0].diagnostics).toMatch(/integrity|authentication/);
        expect(r.text).not.toContain('Quillfeather');
      }
    }
    const verified = runCli(['verify', '--data', work.path]);
    expect(verified.status).toBe(1);
    expect(verified.stderr).toMatch(/bytes do not match its id/);
  });
});
