/**
 * Patients and consents on the ledger: `patient.register`, `patient.link`, `consent.grant`,
 * `consent.revoke`, `emergency.access` and `access.log` as every node judges them (DESIGN.md §1, §3, §6), including forged, replayed and
 * misdirected txs, and the state a restarted node rebuilds from its stored blocks.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fixedClock } from '../kernel/index.js';
import { exportPublicJwk, generateEd25519KeyPair, type Ed25519KeyPair } from '../crypto/index.js';
import { patientNetworkId, signPatientLink } from './contracts.js';
import { Ledger, type TxReceipt } from './ledger.js';
import { openSqliteLedgerStore, type SqliteLedgerStore } from './storage/sqlite/sqlite-ledger-store.js';
import { signTx, type ParsedTx } from './tx.js';

const origin = 'healthledger.local/consent-test';
const T0 = Date.parse('2026-03-01T12:00:00.000Z');
const iso = (ms: number): string => new Date(ms).toISOString();
const blockTime = (height: number): number => T0 + height * 1000;

interface Org {
  id: string;
  keys: Ed25519KeyPair;
}
interface Patient {
  id: string;
  keys: Ed25519KeyPair;
}

const makeOrg = (id: string): Org => ({ id, keys: generateEd25519KeyPair() });

/** A patient's network id computed here from DESIGN.md §1 (RFC 4648 base32, lowercase), not by the code under test. */
function expectedNetworkId(raw: Uint8Array): string {
  const digest = createHash('sha256').update(raw).digest();
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  let bits = '';
  for (const b of digest) bits += b.toString(2).padStart(8, '0');
  let out = '';
  for (let i = 0; i + 5 <= bits.length && out.length < 26; i += 5) out += alphabet[parseInt(bits.slice(i, i + 5), 2)];
  return `pat-${out}`;
}

function makePatient(): Patient {
  const keys = generateEd25519KeyPair();
  const raw = Buffer.from(exportPublicJwk(keys.publicKey).x, 'base64url');
  return { id: expectedNetworkId(raw), keys };
}

const publicKeyOf = (k: Ed25519KeyPair): string => exportPublicJwk(k.publicKey).x;

function genesis(founder: Org, orgs: Org[]): ParsedTx {
  const descriptors = orgs.map((o) => ({ id: o.id, name: `Org ${o.id}`, publicKey: publicKeyOf(o.keys) }));
  return signTx(
    { type: 'network.genesis', body: { origin, orgs: descriptors }, signer: { kind: 'org', id: founder.id, keyId: founder.keys.keyId }, time: iso(T0) },
    founder.keys.privateKey,
  );
}

function byPatient(p: Patient, type: string, body: Record<string, unknown>, signerId = p.id): ParsedTx {
  return signTx({ type, body, signer: { kind: 'patient', id: signerId, keyId: p.keys.keyId }, time: iso(T0) }, p.keys.privateKey);
}

const register = (p: Patient): ParsedTx => byPatient(p, 'patient.register', { publicKey: publicKeyOf(p.keys) });

function link(custodian: Org, p: Patient, pseudonym: string, approvedBy: Patient = p, approvedFor: Org = custodian): ParsedTx {
  const patientSig = signPatientLink(origin, { patient: p.id, custodian: approvedFor.id, pseudonym }, approvedBy.keys.privateKey);
  return signTx(
    {
      type: 'patient.link',
      body: { patient: p.id, pseudonym, patientSig },
      signer: { kind: 'org', id: custodian.id, keyId: custodian.keys.keyId },
      time: iso(T0),
    },
    custodian.keys.privateKey,
  );
}

const grant = (signer: Patient, body: Record<string, unknown>): ParsedTx => byPatient(signer, 'consent.grant', body);
const revoke = (signer: Patient, patient: string, consent: string): ParsedTx => byPatient(signer, 'consent.revoke', { patient, consent });

let dir: string;
const stores: SqliteLedgerStore[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hl-consent-'));
});
afterEach(() => {
  for (const s of stores.splice(0)) s.close();
  rmSync(dir, { recursive: true, force: true });
});

function openLedger(a: Org, file = ':memory:'): Ledger {
  const store = openSqliteLedgerStore(file);
  stores.push(store);
  return Ledger.open({ store, signer: { orgId: a.id, keyPair: a.keys }, clock: fixedClock(T0) });
}

function applyNext(ledger: Ledger, txs: ParsedTx[]): TxReceipt[] {
  const height = ledger.height + 1;
  return ledger.applyBatch({ height, time: iso(blockTime(height)), proposer: 'org-a', txs: txs.map((t) => t.bytes) });
}

/** A ledger with genesis (org-a, org-b) and two registered patients. */
function network(file?: string): { ledger: Ledger; a: Org; b: Org; alice: Patient; bob: Patient } {
  const a = makeOrg('org-a');
  const b = makeOrg('org-b');
  const ledger = openLedger(a, file);
  applyNext(ledger, [genesis(a, [a, b])]);
  const alice = makePatient();
  const bob = makePatient();
  const r = applyNext(ledger, [register(alice), register(bob)]);
  expect(r.map((x) => x.error)).toEqual([null, null]);
  return { ledger, a, b, alice, bob };
}

const permitOrgB = { type: 'permit', actors: [{ kind: 'org', id: 'org-b' }], purposes: ['TREAT'] };

describe('patient.register', () => {
  it('registers a self-signed key under the network id pat- + base32(SHA-256(key))[0..26]', () => {
    const { ledger, alice } = network();
    const raw = new Uint8Array(Buffer.from(publicKeyOf(alice.keys), 'base64url'));
    expect(alice.id).toMatch(/^pat-[a-z2-7]{26}$/);
    expect(patientNetworkId(raw)).toBe(alice.id);
    expect(ledger.state.patients.get(alice.id)?.keyId).toBe(alice.keys.keyId);
  });

  it('rejects a second registration, a key signed by another key, and a signer id that is not the key\'s network id', () => {
    const { ledger, alice, bob } = network();
    const carol = makePatient();
    const again = register(alice);
    const otherKey = signTx(
      { type: 'patient.register', body: { publicKey: publicKeyOf(carol.keys) }, signer: { kind: 'patient', id: carol.id, keyId: bob.keys.keyId }, time: iso(T0) },
      bob.keys.privateKey,
    );
    const wrongId = byPatient(carol, 'patient.register', { publicKey: publicKeyOf(carol.keys) }, bob.id);
    const r = applyNext(ledger, [again, otherKey, wrongId]);
    expect(r.map((x) => x.valid)).toEqual([false, false, false]);
    expect(r[0]!.error).toMatch(/already registered/);
    expect(r[1]!.error).toMatch(/signed by the key it registers/);
    expect(r[2]!.error).toMatch(/signed by the key it registers/);
    expect(ledger.state.patients.has(carol.id)).toBe(false);
  });

  it('rejects a registration whose signature does not verify (body altered after signing)', () => {
    const { ledger } = network();
    const carol = makePatient();
    const tx = register(carol);
    const forged = { ...tx.envelope, nonce: 'AAAAAAAAAAAAAAAAAAAAAA' };
    const r = ledger.applyBatch({ height: ledger.height + 1, time: iso(blockTime(ledger.height + 1)), proposer: 'org-a', txs: [Buffer.from(JSON.stringify(forged))] });
    expect(r[0]).toMatchObject({ valid: false, leafIndex: null });
    expect(r[0]!.error).toMatch(/signature does not verify/);
    expect(ledger.state.patients.has(carol.id)).toBe(false);
  });
});

describe('patient.link', () => {
  it('links a registered patient to a custodian pseudonym when the custodian signs and the patient approves', () => {
    const { ledger, a, alice } = network();
    const r = applyNext(ledger, [link(a, alice, 'ps-alice-at-a')]);
    expect(r[0]).toMatchObject({ valid: true, error: null });
    expect(ledger.state.patientOfPseudonym('org-a', 'ps-alice-at-a')).toBe(alice.id);
    expect(ledger.state.links.get(alice.id)).toEqual([{ patient: alice.id, custodian: 'org-a', pseudonym: 'ps-alice-at-a', txId: r[0]!.txId }]);
  });

  it('rejects a link approved by another patient, approved for another custodian, or by a non-member, and a second link of one record', () => {
    const { ledger, a, b, alice, bob } = network();
    const outsider = makeOrg('org-x');
    const r = applyNext(ledger, [
      link(a, alice, 'ps-1', bob),
      link(a, alice, 'ps-2', alice, b),
      link(outsider, alice, 'ps-3'),
      link(a, alice, 'ps-4'),
      link(a, bob, 'ps-4'),
    ]);
    expect(r.map((x) => x.valid)).toEqual([false, false, false, true, false]);
    expect(r[0]!.error).toMatch(/patient's signature of the link does not verify/);
    expect(r[1]!.error).toMatch(/patient's signature of the link does not verify/);
    expect(r[2]!.error).toMatch(/signer is not a current member key/);
    expect(r[4]!.error).toMatch(/already linked/);
    expect(ledger.state.patientOfPseudonym('org-a', 'ps-4')).toBe(alice.id);
    expect(ledger.state.patientOfPseudonym('org-a', 'ps-1')).toBeUndefined();
  });

  it('rejects a link to a patient who is not registered', () => {
    const { ledger, a } = network();
    const carol = makePatient();
    const r = applyNext(ledger, [link(a, carol, 'ps-c')]);
    expect(r[0]!.valid).toBe(false);
    expect(r[0]!.error).toMatch(/not registered/);
  });
});

describe('consent.grant and consent.revoke', () => {
  it('records a patient-signed grant under its tx id and its revocation by the patient', () => {
    const { ledger, alice } = network();
    const g = grant(alice, { patient: alice.id, provision: permitOrgB });
    const [rg] = applyNext(ledger, [g]);
    expect(rg).toMatchObject({ valid: true, txId: g.id });
    const consent = ledger.state.consents.get(g.id)!;
    expect(consent).toMatchObject({ patient: alice.id, grantedBy: alice.id, grantedAtMs: T0, revokedAtMs: null });
    expect(consent.body.provision).toEqual(permitOrgB);

    const [rr] = applyNext(ledger, [revoke(alice, alice.id, g.id)]);
    expect(rr!.valid).toBe(true);
    expect(ledger.state.consents.get(g.id)).toMatchObject({ revokedAtMs: T0, revokedBy: alice.id });
    // Revoking twice is a conflict.
    const [again] = applyNext(ledger, [revoke(alice, alice.id, g.id)]);
    expect(again!.error).toMatch(/already revoked/);
  });

  it('refuses a consent for another patient, one signed by an organization, and one for an unregistered patient', () => {
    const { ledger, a, alice, bob } = network();
    const carol = makePatient();
    const forOther = grant(bob, { patient: alice.id, provision: permitOrgB });
    const byOrg = signTx(
      { type: 'consent.grant', body: { patient: alice.id, provision: permitOrgB }, signer: { kind: 'org', id: a.id, keyId: a.keys.keyId }, time: iso(T0) },
      a.keys.privateKey,
    );
    const unregistered = grant(carol, { patient: carol.id, provision: permitOrgB });
    const r = applyNext(ledger, [forOther, byOrg, unregistered]);
    expect(r.map((x) => x.valid)).toEqual([false, false, false]);
    expect(r[0]!.error).toMatch(/neither the patient nor a proxy in force/);
    expect(r[1]!.error).toMatch(/must be signed by a patient or their proxy/);
    expect(r[2]!.error).toMatch(/not a registered patient key/);
    expect(ledger.state.consentsOf(alice.id)).toEqual([]);
  });

  it('lets a proxy in force grant and revoke, but not appoint proxies, and stops them once their proxy consent is revoked', () => {
    const { ledger, alice, bob } = network();
    const proxyConsent = grant(alice, { patient: alice.id, proxy: true, provision: { type: 'permit', actors: [{ kind: 'patient', id: bob.id }] } });
    expect(applyNext(ledger, [proxyConsent])[0]!.valid).toBe(true);
    expect(ledger.state.isProxy(alice.id, bob.id, blockTime(ledger.height))).toBe(true);

    const byProxy = grant(bob, { patient: alice.id, provision: permitOrgB });
    const proxyAppointsProxy = grant(bob, {
      patient: alice.id,
      proxy: true,
      provision: { type: 'permit', actors: [{ kind: 'patient', id: makePatient().id }] },
    });
    const r = applyNext(ledger, [byProxy, proxyAppointsProxy]);
    expect(r.map((x) => x.valid)).toEqual([true, false]);
    expect(r[1]!.error).toMatch(/only the patient may appoint a proxy/);
    expect(ledger.state.consents.get(byProxy.id)?.grantedBy).toBe(bob.id);

    expect(applyNext(ledger, [revoke(bob, alice.id, byProxy.id)])[0]!.valid).toBe(true);
    expect(applyNext(ledger, [revoke(alice, alice.id, proxyConsent.id)])[0]!.valid).toBe(true);
    const late = grant(bob, { patient: alice.id, provision: permitOrgB });
    expect(applyNext(ledger, [late])[0]!.error).toMatch(/neither the patient nor a proxy in force/);
  });

  it('refuses a proxy consent limited by purpose, class or label: a proxy acts for the patient in full', () => {
    const { ledger, alice, bob } = network();
    const limited = grant(alice, {
      patient: alice.id,
      proxy: true,
      provision: { type: 'permit', actors: [{ kind: 'patient', id: bob.id }], purposes: ['HPAYMT'], classes: ['Observation'] },
    });
    const [r] = applyNext(ledger, [limited]);
    expect(r!.valid).toBe(false);
    expect(r!.error).toContain('body.provision.purposes: a proxy consent cannot be limited by purpose, class or label');
    expect(r!.error).toContain('body.provision.classes');
    expect(ledger.state.isProxy(alice.id, bob.id, blockTime(ledger.height))).toBe(false);
  });

  it('stops a proxy whose consent period has ended', () => {
    const { ledger, alice, bob } = network();
    const until = iso(blockTime(ledger.height + 1) + 500);
    const proxyConsent = grant(alice, { patient: alice.id, proxy: true, provision: { type: 'permit', actors: [{ kind: 'patient', id: bob.id }], period: { end: until } } });
    expect(applyNext(ledger, [proxyConsent])[0]!.valid).toBe(true);
    // The next block is a second later than the period's end.
    expect(applyNext(ledger, [grant(bob, { patient: alice.id, provision: permitOrgB })])[0]!.error).toMatch(/proxy in force/);
  });

  it('refuses to revoke a consent of another patient or an unknown consent', () => {
    const { ledger, alice, bob } = network();
    const g = grant(alice, { patient: alice.id, provision: permitOrgB });
    applyNext(ledger, [g]);
    const r = applyNext(ledger, [revoke(bob, bob.id, g.id), revoke(alice, alice.id, '0'.repeat(64))]);
    expect(r.map((x) => x.error)).toEqual([expect.stringMatching(/no consent with this id/), expect.stringMatching(/no consent with this id/)]);
    expect(ledger.state.consents.get(g.id)?.revokedAtMs).toBeNull();
  });

  it('names every structural problem of a malformed policy with its path', () => {
    const { ledger, alice } = network();
    const bad = grant(alice, {
      patient: alice.id,
      extra: 1,
      provision: {
        type: 'allow',
        purposes: ['TREAT', 'SHOPPING'],
        labels: ['HIV', 'HIV'],
        classes: ['observation'],
        actors: [{ kind: 'org', id: 'Org A' }],
        period: { start: '2026-05-01T00:00:00Z', end: '2026-04-01T00:00:00Z' },
        provisions: [{ type: 'deny', provisions: [{ type: 'permit', provisions: [{ type: 'deny', provisions: [{ type: 'permit' }] }] }] }],
      },
    });
    const [r] = applyNext(ledger, [bad]);
    expect(r!.valid).toBe(false);
    for (const fragment of [
      'body.extra',
      'body.provision.type',
      'body.provision.purposes[1]',
      'body.provision.labels: must not repeat',
      'body.provision.classes[0]',
      'body.provision.actors[0]',
      'body.provision.period: start must not be after end',
      'provisions nest at most 4 deep',
    ]) {
      expect(r!.error).toContain(fragment);
    }
    expect(ledger.state.consentsOf(alice.id)).toEqual([]);
  });

  it('rejects a replayed grant', () => {
    const { ledger, alice } = network();
    const g = grant(alice, { patient: alice.id, provision: permitOrgB });
    expect(applyNext(ledger, [g])[0]!.valid).toBe(true);
    expect(applyNext(ledger, [g])[0]!.error).toMatch(/replay/);
    expect(ledger.state.consentsOf(alice.id)).toHaveLength(1);
  });
});

function byOrg(org: Org, type: string, body: Record<string, unknown>): ParsedTx {
  return signTx({ type, body, signer: { kind: 'org', id: org.id, keyId: org.keys.keyId }, time: iso(T0) }, org.keys.privateKey);
}

const reasonCommitment = 'ab'.repeat(32);

describe('emergency.access', () => {
  it('opens a time-limited break-glass access for the signing organization and optionally one practitioner', () => {
    const { ledger, b, alice } = network();
    const start = blockTime(ledger.height + 1);
    const tx = byOrg(b, 'emergency.access', { patient: alice.id, practitioner: 'usr-1', reason: reasonCommitment, start: iso(start), end: iso(start + 24 * 3600_000) });
    expect(applyNext(ledger, [tx])[0]).toMatchObject({ valid: true, error: null });
    expect(ledger.state.emergencyAccessOf(alice.id, { org: 'org-b', practitioner: 'usr-1' }, start + 1000)).toBe(tx.id);
    // Another practitioner, another organization, or after the end: not in force.
    expect(ledger.state.emergencyAccessOf(alice.id, { org: 'org-b', practitioner: 'usr-2' }, start + 1000)).toBeUndefined();
    expect(ledger.state.emergencyAccessOf(alice.id, { org: 'org-a', practitioner: 'usr-1' }, start + 1000)).toBeUndefined();
    expect(ledger.state.emergencyAccessOf(alice.id, { org: 'org-b', practitioner: 'usr-1' }, start + 24 * 3600_000 + 1)).toBeUndefined();
  });

  it('records the requesting member when a custodian writes the break-glass it served, and refuses a non-member there', () => {
    const { ledger, a, alice } = network();
    const start = blockTime(ledger.height + 1);
    const ok = byOrg(a, 'emergency.access', { patient: alice.id, org: 'org-b', reason: reasonCommitment, start: iso(start), end: iso(start + 3600_000) });
    const stranger = byOrg(a, 'emergency.access', { patient: alice.id, org: 'org-x', reason: reasonCommitment, start: iso(start), end: iso(start + 3600_000) });
    const r = applyNext(ledger, [ok, stranger]);
    expect(r.map((x) => x.valid)).toEqual([true, false]);
    expect(r[1]!.error).toMatch(/body.org: must be a member organization/);
    expect(ledger.state.emergencyAccessOf(alice.id, { org: 'org-b' }, start + 1)).toBe(ok.id);
    expect(ledger.state.emergencyAccessOf(alice.id, { org: 'org-a' }, start + 1)).toBeUndefined();
  });

  it('rejects a break-glass without a reason commitment, longer than 72 h, ending before it starts, or from a non-member', () => {
    const { ledger, a, alice } = network();
    const start = blockTime(ledger.height + 1);
    const outsider = makeOrg('org-x');
    const r = applyNext(ledger, [
      byOrg(a, 'emergency.access', { patient: alice.id, start: iso(start), end: iso(start + 3600_000) }),
      byOrg(a, 'emergency.access', { patient: alice.id, reason: reasonCommitment, start: iso(start), end: iso(start + 73 * 3600_000) }),
      byOrg(a, 'emergency.access', { patient: alice.id, reason: reasonCommitment, start: iso(start), end: iso(start - 1) }),
      byOrg(outsider, 'emergency.access', { patient: alice.id, reason: reasonCommitment, start: iso(start), end: iso(start + 3600_000) }),
      byOrg(a, 'emergency.access', { patient: 'Jane Doe', reason: reasonCommitment, start: iso(start), end: iso(start + 3600_000) }),
    ]);
    expect(r.map((x) => x.valid)).toEqual([false, false, false, false, false]);
    expect(r[0]!.error).toMatch(/body.reason/);
    expect(r[1]!.error).toMatch(/at most 72 h later/);
    expect(r[2]!.error).toMatch(/must be after start/);
    expect(r[3]!.error).toMatch(/not a current member key/);
    expect(r[4]!.error).toMatch(/body.patient/);
    expect(ledger.state.emergencies.size).toBe(0);
  });
});

describe('access.log', () => {
  const entry = (over: Record<string, unknown> = {}) => ({
    at: iso(T0),
    patient: 'psn-' + '0'.repeat(32),
    org: 'org-b',
    user: 'usr-7',
    purpose: 'TREAT',
    action: 'read',
    outcome: 'permit',
    classes: ['Observation'],
    count: 1,
    event: 'cd'.repeat(32),
    ...over,
  });

  it('accepts up to 128 pseudonymous entries from a member and gives them one leaf', () => {
    const { ledger, a } = network();
    const size = ledger.treeSize;
    const r = applyNext(ledger, [byOrg(a, 'access.log', { entries: Array.from({ length: 128 }, () => entry()) })]);
    expect(r[0]).toMatchObject({ valid: true, leafIndex: size });
  });

  it('names every malformed entry member and refuses more than 128 entries', () => {
    const { ledger, a } = network();
    const r = applyNext(ledger, [
      byOrg(a, 'access.log', {
        entries: [
          entry({ patient: 'Jane Doe', purpose: 'FUN', action: 'peek', outcome: 'maybe', count: -1, name: 'Jane' }),
          entry({ org: 'Org B', at: 'yesterday', classes: ['observation'] }),
        ],
      }),
      byOrg(a, 'access.log', { entries: Array.from({ length: 129 }, () => entry()) }),
      byOrg(a, 'access.log', { entries: [] }),
    ]);
    expect(r.map((x) => x.valid)).toEqual([false, false, false]);
    for (const path of ['entries[0].patient', 'entries[0].purpose', 'entries[0].action', 'entries[0].outcome', 'entries[0].count', 'entries[0].name', 'entries[1].org', 'entries[1].at', 'entries[1].classes']) {
      expect(r[0]!.error).toContain(path);
    }
    expect(r[1]!.error).toMatch(/1 to 128 access entries/);
    expect(r[2]!.error).toMatch(/1 to 128 access entries/);
  });
});

describe('restart', () => {
  it('rebuilds patients, links, consents and revocations from the stored blocks', () => {
    const file = join(dir, 'ledger.db');
    const { ledger, a, alice, bob } = network(file);
    const g1 = grant(alice, { patient: alice.id, provision: permitOrgB });
    const g2 = grant(bob, { patient: bob.id, provision: { type: 'deny', purposes: ['ETREAT'] } });
    applyNext(ledger, [link(a, alice, 'ps-a'), g1, g2]);
    applyNext(ledger, [revoke(alice, alice.id, g1.id)]);
    const before = {
      patients: [...ledger.state.patients.keys()].sort(),
      link: ledger.state.patientOfPseudonym('org-a', 'ps-a'),
      alice: ledger.state.consentsOf(alice.id),
      bob: ledger.state.consentsOf(bob.id),
    };
    for (const s of stores.splice(0)) s.close();

    const reopened = openLedger(a, file);
    expect([...reopened.state.patients.keys()].sort()).toEqual(before.patients);
    expect(reopened.state.patientOfPseudonym('org-a', 'ps-a')).toBe(before.link);
    expect(reopened.state.consentsOf(alice.id)).toEqual(before.alice);
    expect(reopened.state.consentsOf(alice.id)[0]!.revokedAtMs).toBe(T0);
    expect(reopened.state.consentsOf(bob.id)).toEqual(before.bob);
  });
});
