import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  LedgerState,
  purposesOfUse,
  sensitivityLabels,
  type ConsentActor,
  type ConsentProvision,
  type ConsentRecord,
  type EmergencyAccess,
  type PurposeOfUse,
} from '../ledger/index.js';
import { decide, type AccessRequest, type ConsentView, type Obligation } from './index.js';

const patientId = (c: string): string => `pat-${c.repeat(26)}`;
/** The patient whose data is asked for, a proxy of theirs, and an unrelated patient. */
const patient = patientId('a');
const proxy = patientId('b');
const stranger = patientId('c');
const custodian = 'hosp-a';
const requesterOrg = 'clinic-b';

const consentId = (n: number): string => n.toString(16).padStart(64, '0');
const emergencyId = (n: number): string => `e${n.toString(16).padStart(63, '0')}`;

const t0 = Date.parse('2025-06-01T12:00:00Z');
const hourMs = 60 * 60 * 1000;
const iso = (ms: number): string => new Date(ms).toISOString().replace('.000Z', 'Z');

/** A granted, unrevoked consent of `patient` with the given top provision. */
function consent(n: number, provision: ConsentProvision, extra: Partial<ConsentRecord> = {}): ConsentRecord {
  return {
    id: consentId(n),
    patient,
    body: { patient, provision },
    grantedBy: patient,
    grantedAtMs: t0 - 24 * hourMs,
    revokedAtMs: null,
    revokedBy: null,
    ...extra,
  };
}
const permit = (p: Omit<ConsentProvision, 'type'> = {}): ConsentProvision => ({ type: 'permit', ...p });
const deny = (p: Omit<ConsentProvision, 'type'> = {}): ConsentProvision => ({ type: 'deny', ...p });
const org = (id: string): ConsentActor => ({ kind: 'org', id });
const practitioner = (orgId: string, id: string): ConsentActor => ({ kind: 'practitioner', org: orgId, id });
const role = (r: string, orgId?: string): ConsentActor => (orgId === undefined ? { kind: 'role', role: r } : { kind: 'role', role: r, org: orgId });
const patientActor = (id: string): ConsentActor => ({ kind: 'patient', id });

const emergency = (n: number, practitionerId: string | null, startMs = t0 - hourMs, endMs = t0 + 23 * hourMs, recordedBy = custodian): EmergencyAccess => ({
  id: emergencyId(n),
  patient,
  org: requesterOrg,
  custodian: recordedBy,
  practitioner: practitionerId,
  startMs,
  endMs,
});

type Requester = AccessRequest['requester'];
const drOne: Requester = { org: requesterOrg, practitioner: 'dr-1', roles: ['clinician'] };
const drTwo: Requester = { org: requesterOrg, practitioner: 'dr-2', roles: ['clinician'] };
const custodianStaff: Requester = { org: custodian, practitioner: 'dr-9', roles: ['clinician'] };

/** A TREAT request by dr-1 of clinic-b for an unlabelled Observation at t0; `over` replaces members. */
function request(over: Partial<AccessRequest> = {}): AccessRequest {
  return { patient, custodian, requester: drOne, purpose: 'TREAT', resource: { class: 'Observation', labels: [] }, atMs: t0, ...over };
}
const requestLevel = (over: Partial<AccessRequest> = {}): AccessRequest => {
  const r = request(over);
  delete r.resource;
  return r;
};

/** The real ledger state as the view, consents and break-glass accesses added as the contracts add them. */
function stateWith(consents: readonly ConsentRecord[], emergencies: readonly EmergencyAccess[] = []): LedgerState {
  const state = new LedgerState();
  for (const c of consents) state.addConsent(structuredClone(c));
  for (const e of emergencies) state.addEmergency(e);
  return state;
}

interface Case {
  name: string;
  consents: ConsentRecord[];
  emergencies?: EmergencyAccess[];
  request: AccessRequest;
  expect: { effect: 'permit' | 'deny'; consentIds?: string[]; obligations?: Obligation[]; reason?: RegExp };
}

const c1 = consentId(1);
const c2 = consentId(2);

const cases: Case[] = [
  // Plain permit and deny.
  { name: 'an org actor permits TREAT by that org', consents: [consent(1, permit({ actors: [org(requesterOrg)] }))], request: request(), expect: { effect: 'permit', consentIds: [c1], reason: new RegExp(c1) } },
  { name: 'a top-level deny of the org denies, naming the consent', consents: [consent(1, deny({ actors: [org(requesterOrg)] }))], request: request(), expect: { effect: 'deny', consentIds: [c1], reason: new RegExp(`consent ${c1} denies`) } },
  { name: 'no consents: deny by default', consents: [], request: request(), expect: { effect: 'deny', consentIds: [], reason: /^no consent permits TREAT access by clinic-b$/ } },
  { name: 'unknown actor: a consent for another org has no opinion', consents: [consent(1, permit({ actors: [org('lab-c')] }))], request: request(), expect: { effect: 'deny', consentIds: [], reason: /no consent permits/ } },
  { name: 'a permit without actors permits anyone (FHIR: absent criterion matches all)', consents: [consent(1, permit({ purposes: ['TREAT'] }))], request: request({ requester: { org: 'any-org' } }), expect: { effect: 'permit', consentIds: [c1] } },

  // Nested exceptions.
  { name: 'deny inside permit: PSY excluded from an org grant denies a PSY resource', consents: [consent(1, permit({ actors: [org(requesterOrg)], provisions: [deny({ labels: ['PSY'] })] }))], request: request({ resource: { class: 'Observation', labels: ['PSY'] } }), expect: { effect: 'deny', consentIds: [c1] } },
  { name: 'deny inside permit: the same grant permits an unlabelled resource', consents: [consent(1, permit({ actors: [org(requesterOrg)], provisions: [deny({ labels: ['PSY'] })] }))], request: request(), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'permit inside deny: a deny-all with an exception for dr-1 permits dr-1', consents: [consent(1, deny({ provisions: [permit({ actors: [practitioner(requesterOrg, 'dr-1')] })] }))], request: request(), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'permit inside deny: the same deny-all denies dr-2', consents: [consent(1, deny({ provisions: [permit({ actors: [practitioner(requesterOrg, 'dr-2')] })] }))], request: request(), expect: { effect: 'deny', consentIds: [c1] } },
  { name: '3 levels: org permit, HIV deny, dr-1 permit → dr-1 reads HIV data', consents: [consent(1, permit({ actors: [org(requesterOrg)], provisions: [deny({ labels: ['HIV'], provisions: [permit({ actors: [practitioner(requesterOrg, 'dr-1')] })] })] }))], request: request({ resource: { class: 'Observation', labels: ['HIV'] } }), expect: { effect: 'permit', consentIds: [c1] } },
  { name: '3 levels: the same policy denies HIV data to dr-2', consents: [consent(1, permit({ actors: [org(requesterOrg)], provisions: [deny({ labels: ['HIV'], provisions: [permit({ actors: [practitioner(requesterOrg, 'dr-1')] })] })] }))], request: request({ requester: drTwo, resource: { class: 'Observation', labels: ['HIV'] } }), expect: { effect: 'deny', consentIds: [c1] } },
  { name: '3 levels: the same policy permits unlabelled data to dr-2', consents: [consent(1, permit({ actors: [org(requesterOrg)], provisions: [deny({ labels: ['HIV'], provisions: [permit({ actors: [practitioner(requesterOrg, 'dr-1')] })] })] }))], request: request({ requester: drTwo }), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'matching sibling exceptions: a deny overrides a permit', consents: [consent(1, deny({ provisions: [permit({ classes: ['Observation'] }), deny({ actors: [practitioner(requesterOrg, 'dr-1')], provisions: [deny({ purposes: ['HPAYMT'] })] })] }))], request: request(), expect: { effect: 'deny', consentIds: [c1] } },

  // Periods and revocation.
  { name: 'expired: the period ended before the request', consents: [consent(1, permit({ actors: [org(requesterOrg)], period: { end: iso(t0 - 1000) } }))], request: request(), expect: { effect: 'deny', consentIds: [] } },
  { name: 'not yet started: the period starts after the request', consents: [consent(1, permit({ actors: [org(requesterOrg)], period: { start: iso(t0 + 1000) } }))], request: request(), expect: { effect: 'deny', consentIds: [] } },
  { name: 'within the period: permit', consents: [consent(1, permit({ actors: [org(requesterOrg)], period: { start: iso(t0 - hourMs), end: iso(t0 + hourMs) } }))], request: request(), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'an expired nested deny no longer excepts', consents: [consent(1, permit({ actors: [org(requesterOrg)], provisions: [deny({ labels: ['PSY'], period: { end: iso(t0 - 1000) } })] }))], request: request({ resource: { class: 'Observation', labels: ['PSY'] } }), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'revoked: a revoked permit no longer permits', consents: [consent(1, permit({ actors: [org(requesterOrg)] }), { revokedAtMs: t0 - hourMs, revokedBy: patient })], request: request(), expect: { effect: 'deny', consentIds: [] } },
  { name: 'revoked: a revoked deny no longer overrides a permit', consents: [consent(1, deny({ actors: [org(requesterOrg)] }), { revokedAtMs: t0 - hourMs, revokedBy: patient }), consent(2, permit({ actors: [org(requesterOrg)] }))], request: request(), expect: { effect: 'permit', consentIds: [c2] } },

  // Purposes, labels, classes.
  { name: 'wrong purpose: a TREAT grant does not permit HPAYMT', consents: [consent(1, permit({ actors: [org(requesterOrg)], purposes: ['TREAT'] }))], request: request({ purpose: 'HPAYMT' }), expect: { effect: 'deny', consentIds: [] } },
  { name: 'a purpose among several listed permits', consents: [consent(1, permit({ actors: [org(requesterOrg)], purposes: ['TREAT', 'HRESCH'] }))], request: request({ purpose: 'HRESCH' }), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'sensitive label excluded: a grant for unlabelled data only (deny SEX, GDIS) denies GDIS data', consents: [consent(1, permit({ actors: [org(requesterOrg)], provisions: [deny({ labels: ['SEX', 'GDIS'] })] }))], request: request({ resource: { class: 'Observation', labels: ['GDIS'] } }), expect: { effect: 'deny', consentIds: [c1] } },
  { name: 'label-only deny among several labels: a resource carrying HIV and ETH is denied by a HIV deny', consents: [consent(1, permit({ actors: [org(requesterOrg)], provisions: [deny({ labels: ['HIV'] })] }))], request: request({ resource: { class: 'Observation', labels: ['ETH', 'HIV'] } }), expect: { effect: 'deny', consentIds: [c1] } },
  { name: 'label-only deny among several labels: a resource carrying only ETH is permitted', consents: [consent(1, permit({ actors: [org(requesterOrg)], provisions: [deny({ labels: ['HIV'] })] }))], request: request({ resource: { class: 'Observation', labels: ['ETH'] } }), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'class restriction: a grant for Immunization does not cover Observation', consents: [consent(1, permit({ actors: [org(requesterOrg)], classes: ['Immunization', 'AllergyIntolerance'] }))], request: request(), expect: { effect: 'deny', consentIds: [] } },
  { name: 'class restriction: a grant for Immunization covers Immunization', consents: [consent(1, permit({ actors: [org(requesterOrg)], classes: ['Immunization', 'AllergyIntolerance'] }))], request: request({ resource: { class: 'Immunization', labels: [] } }), expect: { effect: 'permit', consentIds: [c1] } },

  // Actors.
  { name: 'practitioner actor: permits that practitioner', consents: [consent(1, permit({ actors: [practitioner(requesterOrg, 'dr-1')] }))], request: request(), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'practitioner actor: not another practitioner of the same org', consents: [consent(1, permit({ actors: [practitioner(requesterOrg, 'dr-1')] }))], request: request({ requester: drTwo }), expect: { effect: 'deny', consentIds: [] } },
  { name: 'practitioner actor: not the same practitioner id at another org', consents: [consent(1, permit({ actors: [practitioner('lab-c', 'dr-1')] }))], request: request(), expect: { effect: 'deny', consentIds: [] } },
  { name: 'org actor: permits every practitioner of the org', consents: [consent(1, permit({ actors: [org(requesterOrg)] }))], request: request({ requester: drTwo }), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'role actor at an org: permits staff of that role there', consents: [consent(1, permit({ actors: [role('clinician', requesterOrg)] }))], request: request(), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'role actor at an org: not the same role at another org', consents: [consent(1, permit({ actors: [role('clinician', 'lab-c')] }))], request: request(), expect: { effect: 'deny', consentIds: [] } },
  { name: 'role actor without org: permits that role at any org', consents: [consent(1, permit({ actors: [role('clinician')] }))], request: request({ requester: { org: 'lab-c', roles: ['clinician'] } }), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'role actor: staff without the role are not named', consents: [consent(1, permit({ actors: [role('clinician')] }))], request: request({ requester: { org: requesterOrg, practitioner: 'clerk-1', roles: ['billing'] } }), expect: { effect: 'deny', consentIds: [] } },
  { name: 'proxy: a patient actor permits that patient', consents: [consent(1, permit({ actors: [patientActor(proxy)] }), { body: { patient, provision: permit({ actors: [patientActor(proxy)] }), proxy: true } })], request: request({ requester: { org: 'portal-x', patient: proxy } }), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'proxy: another patient is not the proxy', consents: [consent(1, permit({ actors: [patientActor(proxy)] }))], request: request({ requester: { org: 'portal-x', patient: stranger } }), expect: { effect: 'deny', consentIds: [] } },
  { name: 'a patient logged in through an org is not matched by a grant to that org', consents: [consent(1, permit({ actors: [org(requesterOrg)] }))], request: request({ requester: { org: requesterOrg, patient: stranger } }), expect: { effect: 'deny', consentIds: [] } },

  // Several consents.
  { name: 'two consents, permit and deny: the deny wins and is named', consents: [consent(1, permit({ actors: [org(requesterOrg)] })), consent(2, deny({ actors: [practitioner(requesterOrg, 'dr-1')] }))], request: request(), expect: { effect: 'deny', consentIds: [c2], reason: new RegExp(c2) } },
  { name: 'two consents, deny first then permit: still deny', consents: [consent(1, deny({ purposes: ['TREAT'] })), consent(2, permit({ actors: [org(requesterOrg)] }))], request: request(), expect: { effect: 'deny', consentIds: [c1] } },
  { name: 'two permits: both are named', consents: [consent(1, permit({ actors: [org(requesterOrg)] })), consent(2, permit({ actors: [role('clinician')] }))], request: request(), expect: { effect: 'permit', consentIds: [c1, c2] } },

  // Custodian, apps, self.
  { name: 'custodian staff reading for TREAT need no consent', consents: [], request: request({ requester: custodianStaff }), expect: { effect: 'permit', consentIds: [], reason: /custodian/ } },
  { name: 'custodian staff reading for TREAT despite a deny of their org', consents: [consent(1, deny({ actors: [org(custodian)] }))], request: request({ requester: custodianStaff }), expect: { effect: 'permit', consentIds: [], reason: /custodian/ } },
  { name: 'custodian staff reading for HRESCH need consent', consents: [], request: request({ requester: custodianStaff, purpose: 'HRESCH' }), expect: { effect: 'deny', consentIds: [] } },
  { name: 'custodian staff reading for HRESCH with a research consent', consents: [consent(1, permit({ actors: [org(custodian)], purposes: ['HRESCH'] }))], request: request({ requester: custodianStaff, purpose: 'HRESCH' }), expect: { effect: 'permit', consentIds: [c1] } },
  { name: "an app of the custodian org is not custodian staff", consents: [], request: request({ requester: { org: custodian, app: 'app-1' } }), expect: { effect: 'deny', consentIds: [] } },
  { name: 'an app matches through its org', consents: [consent(1, permit({ actors: [org(requesterOrg)] }))], request: request({ requester: { org: requesterOrg, app: 'app-1', practitioner: 'dr-1' } }), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'an app does not match a grant to the practitioner it acts for', consents: [consent(1, permit({ actors: [practitioner(requesterOrg, 'dr-1')] }))], request: request({ requester: { ...drOne, app: 'app-1' } }), expect: { effect: 'deny', consentIds: [] } },
  { name: 'an app cannot escape a deny naming its user', consents: [consent(1, permit({ actors: [org(requesterOrg)], provisions: [deny({ actors: [practitioner(requesterOrg, 'dr-1')] })] }))], request: request({ requester: { ...drOne, app: 'app-1' } }), expect: { effect: 'deny', consentIds: [c1] } },
  { name: "patient self: the patient's own record, whatever the consents", consents: [consent(1, deny())], request: request({ requester: { org: 'portal-x', patient }, purpose: 'HPAYMT' }), expect: { effect: 'permit', consentIds: [], reason: /the patient's own record/ } },

  // Break-glass.
  { name: 'break-glass with a reason and no consent: permit with obligations', consents: [], request: request({ purpose: 'ETREAT', reason: 'unconscious in ED' }), expect: { effect: 'permit', consentIds: [], obligations: ['record-emergency-access', 'notify-patient'], reason: /break-glass/ } },
  { name: 'break-glass without a reason: deny', consents: [], request: request({ purpose: 'ETREAT' }), expect: { effect: 'deny', consentIds: [], reason: /break-glass needs a written reason/ } },
  { name: 'break-glass with a blank reason: deny', consents: [], request: request({ purpose: 'ETREAT', reason: ' \t\n' }), expect: { effect: 'deny', reason: /written reason/ } },
  { name: 'break-glass refused explicitly (deny ETREAT): deny even with a reason', consents: [consent(1, deny({ purposes: ['ETREAT'] }))], request: request({ purpose: 'ETREAT', reason: 'unconscious in ED' }), expect: { effect: 'deny', consentIds: [c1], reason: /the patient refused emergency access/ } },
  { name: 'break-glass refused for one org by a deny of TREAT and ETREAT', consents: [consent(1, permit({ provisions: [deny({ actors: [org(requesterOrg)], purposes: ['TREAT', 'ETREAT'] })] }))], request: request({ purpose: 'ETREAT', reason: 'unconscious in ED' }), expect: { effect: 'deny', consentIds: [c1], reason: /refused emergency access/ } },
  { name: 'a refusal above a nested deny still refuses', consents: [consent(1, deny({ purposes: ['ETREAT'], provisions: [permit({ labels: ['GDIS'], provisions: [deny({ actors: [org(requesterOrg)] })] })] }))], request: request({ purpose: 'ETREAT', reason: 'unconscious in ED', resource: { class: 'Observation', labels: ['GDIS'] } }), expect: { effect: 'deny', consentIds: [c1], reason: /refused/ } },
  { name: 'a blanket deny does not block break-glass with a reason', consents: [consent(1, deny({ actors: [org(requesterOrg)] }))], request: request({ purpose: 'ETREAT', reason: 'unconscious in ED' }), expect: { effect: 'permit', consentIds: [], obligations: ['record-emergency-access', 'notify-patient'] } },
  { name: 'a blanket deny without a reason: deny, naming the consent', consents: [consent(1, deny({ actors: [org(requesterOrg)] }))], request: request({ purpose: 'ETREAT' }), expect: { effect: 'deny', consentIds: [c1], reason: /written reason/ } },
  { name: 'emergency access already in force: permit without a reason', consents: [], emergencies: [emergency(1, null)], request: request({ purpose: 'ETREAT' }), expect: { effect: 'permit', consentIds: [emergencyId(1)], reason: /emergency access in force/ } },
  { name: 'emergency access in force for this practitioner', consents: [consent(1, deny())], emergencies: [emergency(1, 'dr-1')], request: request({ purpose: 'ETREAT' }), expect: { effect: 'permit', consentIds: [emergencyId(1)] } },
  { name: 'emergency access in force for another practitioner does not count', consents: [], emergencies: [emergency(1, 'dr-2')], request: request({ purpose: 'ETREAT' }), expect: { effect: 'deny', reason: /written reason/ } },
  { name: 'an emergency access recorded by another custodian does not open this one', consents: [], emergencies: [emergency(1, null, t0 - hourMs, t0 + 23 * hourMs, 'clinic-z')], request: request({ purpose: 'ETREAT' }), expect: { effect: 'deny', reason: /written reason/ } },
  { name: 'an emergency access that has ended does not count', consents: [], emergencies: [emergency(1, null, t0 - 25 * hourMs, t0 - hourMs)], request: request({ purpose: 'ETREAT' }), expect: { effect: 'deny', reason: /written reason/ } },
  { name: 'an explicit refusal overrides an emergency access in force', consents: [consent(1, deny({ purposes: ['ETREAT'] }))], emergencies: [emergency(1, null)], request: request({ purpose: 'ETREAT' }), expect: { effect: 'deny', consentIds: [c1], reason: /refused/ } },
  { name: 'emergency access is for ETREAT only, not TREAT', consents: [], emergencies: [emergency(1, null)], request: request(), expect: { effect: 'deny', consentIds: [] } },
  { name: 'a consent permitting ETREAT permits normally, without obligations', consents: [consent(1, permit({ actors: [org(requesterOrg)], purposes: ['ETREAT'] }))], request: request({ purpose: 'ETREAT' }), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'a TREAT-only grant does not stand in for a break-glass reason', consents: [consent(1, permit({ actors: [org(requesterOrg)], purposes: ['TREAT'] }))], request: request({ purpose: 'ETREAT' }), expect: { effect: 'deny', reason: /written reason/ } },
  { name: 'an app cannot break the glass', consents: [], request: request({ purpose: 'ETREAT', reason: 'unconscious in ED', requester: { ...drOne, app: 'app-1' } }), expect: { effect: 'deny', consentIds: [] } },
  { name: 'custodian staff ETREAT despite an explicit refusal (custodian rule first)', consents: [consent(1, deny({ purposes: ['ETREAT'] }))], request: request({ purpose: 'ETREAT', requester: custodianStaff }), expect: { effect: 'permit', consentIds: [], reason: /custodian/ } },

  // Request-level questions.
  { name: 'request-level: a grant of some classes only → permit', consents: [consent(1, permit({ actors: [org(requesterOrg)], classes: ['Immunization'] }))], request: requestLevel(), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'request-level: a blanket deny → deny', consents: [consent(1, permit({ actors: [org(requesterOrg)], classes: ['Immunization'] })), consent(2, deny({ actors: [org(requesterOrg)] }))], request: requestLevel(), expect: { effect: 'deny', consentIds: [c2] } },
  { name: 'request-level: a label-only deny inside a grant → permit', consents: [consent(1, permit({ actors: [org(requesterOrg)], provisions: [deny({ labels: ['PSY', 'HIV'] })] }))], request: requestLevel(), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'request-level: a class-only deny does not deny the whole request', consents: [consent(1, deny({ classes: ['Observation'] })), consent(2, permit({ actors: [org(requesterOrg)] }))], request: requestLevel(), expect: { effect: 'permit', consentIds: [c2] } },
  { name: 'request-level: an unconditional nested deny for the practitioner → deny', consents: [consent(1, permit({ actors: [org(requesterOrg)], provisions: [deny({ actors: [practitioner(requesterOrg, 'dr-1')] })] }))], request: requestLevel(), expect: { effect: 'deny', consentIds: [c1] } },
  { name: 'a permit exception inside a class-limited deny permits that class', consents: [consent(1, deny({ classes: ['Observation'], provisions: [permit({ actors: [org(requesterOrg)] })] }))], request: request(), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'request-level: a permit exception inside a class-limited deny → permit', consents: [consent(1, deny({ classes: ['Observation'], provisions: [permit({ actors: [org(requesterOrg)] })] }))], request: requestLevel(), expect: { effect: 'permit', consentIds: [c1] } },
  { name: 'request-level: a class grant whose only exception denies the requester everything → deny', consents: [consent(1, permit({ classes: ['Immunization'], provisions: [deny({ actors: [org(requesterOrg)] })] }))], request: requestLevel(), expect: { effect: 'deny', consentIds: [] } },
  { name: 'request-level: no consent → deny', consents: [], request: requestLevel(), expect: { effect: 'deny', consentIds: [] } },
  { name: 'request-level: a label-only ETREAT refusal does not refuse the whole request', consents: [consent(1, deny({ purposes: ['ETREAT'], labels: ['PSY'] }))], request: requestLevel({ purpose: 'ETREAT', reason: 'unconscious in ED' }), expect: { effect: 'permit', obligations: ['record-emergency-access', 'notify-patient'] } },
];

describe('decide', () => {
  it('has the table it claims (at least 45 named cases, names unique)', () => {
    expect(cases.length).toBeGreaterThanOrEqual(45);
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
  });

  it.each(cases)('$name', ({ consents, emergencies, request: req, expect: want }) => {
    const state = stateWith(consents, emergencies);
    const decision = decide(req, state);
    expect(decision.effect).toBe(want.effect);
    expect(decision.obligations).toEqual(want.obligations ?? []);
    if (want.consentIds !== undefined) expect(decision.consentIds).toEqual(want.consentIds);
    if (want.reason !== undefined) expect(decision.reason).toMatch(want.reason);
    // Ids and codes only: the written break-glass reason never leaks into the decision.
    if (req.reason !== undefined && req.reason.trim() !== '') expect(decision.reason).not.toContain(req.reason);
  });
});

// --- Properties -------------------------------------------------------------------------------------------

const otherOrgs = ['lab-c', 'pharm-d', 'insurer-e'] as const;
const classPool = ['Observation', 'Condition', 'Immunization', 'MedicationRequest'] as const;
const period = fc.option(
  fc.constantFrom<{ start?: string; end?: string }>(
    { end: iso(t0 - hourMs) },
    { start: iso(t0 + hourMs) },
    { start: iso(t0 - hourMs), end: iso(t0 + hourMs) },
  ),
  { nil: undefined },
);
const subset = <T>(pool: readonly T[]) => fc.option(fc.uniqueArray(fc.constantFrom(...pool), { minLength: 1, maxLength: pool.length }), { nil: undefined });

/** Any actor, including ones that name the requester (dr-1 of clinic-b, role clinician, the proxy). */
const anyActor: fc.Arbitrary<ConsentActor> = fc.oneof(
  fc.constantFrom(requesterOrg, ...otherOrgs).map(org),
  fc.constantFrom('dr-1', 'dr-2').chain((id) => fc.constantFrom(requesterOrg, ...otherOrgs).map((o) => practitioner(o, id))),
  fc.constantFrom(role('clinician'), role('clinician', requesterOrg), role('billing', 'lab-c')),
  fc.constantFrom(patientActor(proxy), patientActor(stranger)),
);
/** Actors that can never name a staff requester of clinic-b (roles are pinned to other orgs). */
const foreignActor: fc.Arbitrary<ConsentActor> = fc.oneof(
  fc.constantFrom(...otherOrgs).map(org),
  fc.constantFrom(...otherOrgs).map((o) => practitioner(o, 'dr-1')),
  fc.constantFrom(...otherOrgs).map((o) => role('clinician', o)),
  fc.constant(patientActor(proxy)),
);

/** Provisions up to three levels deep, built from the given actors. */
function provisionArb(actor: fc.Arbitrary<ConsentActor>, depth: number): fc.Arbitrary<ConsentProvision> {
  const fields = fc.record(
    {
      type: fc.constantFrom<'permit' | 'deny'>('permit', 'deny'),
      actors: fc.option(fc.uniqueArray(actor, { minLength: 1, maxLength: 3, selector: (a) => JSON.stringify(a) }), { nil: undefined }),
      purposes: subset<PurposeOfUse>(purposesOfUse),
      classes: subset(classPool),
      labels: subset(sensitivityLabels),
      period,
      provisions: depth > 1 ? fc.option(fc.array(provisionArb(actor, depth - 1), { minLength: 1, maxLength: 2 }), { nil: undefined }) : fc.constant(undefined),
    },
    { requiredKeys: ['type'] },
  );
  return fields.map((p) => Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) as unknown as ConsentProvision);
}

const consentsArb = (top: fc.Arbitrary<ConsentProvision>) =>
  fc.array(fc.tuple(top, fc.boolean()), { maxLength: 4 }).map((list) =>
    list.map(([p, revoked], i) => consent(i + 1, p, revoked ? { revokedAtMs: t0 - hourMs, revokedBy: patient } : {})),
  );

const resourceArb = fc.record({ class: fc.constantFrom(...classPool), labels: fc.uniqueArray(fc.constantFrom(...sensitivityLabels), { maxLength: 2 }) });

describe('decide (properties)', () => {
  it('never permits staff of another org whom no top provision names, without break-glass', () => {
    // Every top provision names actors, none of them the requester; nested provisions may be anything:
    // an exception can only narrow a consent whose top provision already applies.
    const top = fc
      .tuple(provisionArb(anyActor, 3), fc.uniqueArray(foreignActor, { minLength: 1, maxLength: 3, selector: (a) => JSON.stringify(a) }))
      .map(([p, actors]) => ({ ...p, actors }));
    const requester = fc.constantFrom<AccessRequest['requester']>(drOne, { org: requesterOrg, roles: ['clinician'] }, { org: requesterOrg, app: 'app-1' }, { org: custodian, app: 'app-1' }, { ...custodianStaff }, { org: requesterOrg, patient: stranger });
    fc.assert(
      fc.property(consentsArb(top), requester, fc.constantFrom(...purposesOfUse), fc.option(resourceArb, { nil: undefined }), (consents, who, purpose, resource) => {
        // Custodian staff treating and ETREAT with a reason or an emergency in force are allowed by rule, not by consent.
        fc.pre(!(who.org === custodian && who.app === undefined && (purpose === 'TREAT' || purpose === 'ETREAT')));
        const req: AccessRequest = { patient, custodian, requester: who, purpose, atMs: t0, ...(resource ? { resource } : {}) };
        const decision = decide(req, stateWith(consents));
        expect(decision.effect).toBe('deny');
        expect(decision.obligations).toEqual([]);
      }),
      { numRuns: 500 },
    );
  });

  it('a request-level deny means every resource is denied (request level never under-approximates)', () => {
    const requester = fc.constantFrom<AccessRequest['requester']>(drOne, drTwo, { org: requesterOrg, app: 'app-1' }, { org: 'lab-c', roles: ['clinician'] }, { org: 'portal-x', patient: proxy });
    fc.assert(
      fc.property(consentsArb(provisionArb(anyActor, 3)), requester, fc.constantFrom(...purposesOfUse), resourceArb, fc.boolean(), (consents, who, purpose, resource, withReason) => {
        const base: AccessRequest = { patient, custodian, requester: who, purpose, atMs: t0, ...(withReason ? { reason: 'ED' } : {}) };
        const view = stateWith(consents);
        if (decide({ ...base, resource }, view).effect === 'permit') {
          expect(decide(base, view).effect).toBe('permit');
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('LedgerState satisfies ConsentView, and a plain view decides the same', () => {
    const consents = [consent(1, permit({ actors: [org(requesterOrg)], provisions: [deny({ labels: ['PSY'] })] }))];
    const plain: ConsentView = { consentsOf: () => consents, emergencyAccessOf: () => undefined };
    const state: ConsentView = stateWith(consents);
    for (const labels of [[], ['PSY']]) {
      const req = request({ resource: { class: 'Observation', labels } });
      expect(decide(req, plain)).toEqual(decide(req, state));
    }
    expect(decide(request({ resource: { class: 'Observation', labels: ['PSY'] } }), plain).effect).toBe('deny');
  });
});
