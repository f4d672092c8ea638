/**
 * The access decision (DESIGN.md §6): given who asks for which patient's data, why, and (optionally) which
 * resource, and the consents the patient signed onto the ledger, permit or deny — with the consents that
 * decided and the obligations a permit carries. Pure: the ledger state and the request time come in as
 * arguments; no I/O, no clock.
 *
 * Order of the rules (the first that applies decides):
 * 1. the patient reads their own record;
 * 2. the custodian's own treating staff (purpose TREAT or ETREAT) read the custodian's records;
 * 3. for ETREAT by staff of another organization: an explicit emergency refusal denies; a break-glass access
 *    in force permits; a consent that permits ETREAT permits; a written reason breaks the glass;
 * 4. otherwise the patient's consents decide, deny overriding permit; nothing permits → deny.
 *
 * Within one consent, FHIR R4 Consent semantics (http://hl7.org/fhir/R4/consent.html, `Consent.provision`): the top provision
 * applies only to the requests it matches; nested provisions are exceptions to their parent; the deepest
 * matching provision decides. See {@link decide} for the choices FHIR leaves open.
 */
import {
  periodContains,
  type ConsentActor,
  type ConsentProvision,
  type ConsentRecord,
  type PurposeOfUse,
} from '../ledger/index.js';

/** A request for a patient's data, as the custodian's node sees it after authenticating the requester. */
export interface AccessRequest {
  /** Network id (`pat-…`) of the patient whose data is asked for. */
  patient: string;
  /** Org id of the organization that holds the data. */
  custodian: string;
  requester: {
    /** The organization vouching for the request (DESIGN.md §1). */
    org: string;
    /** Practitioner id at `org`. */
    practitioner?: string;
    /** Staff roles at `org`, e.g. `clinician`. */
    roles?: readonly string[];
    /** Set when the requester is a patient: the patient themself or a proxy (another patient). */
    patient?: string;
    /** Set when a SMART app or system client asks; an app never counts as custodian staff. */
    app?: string;
  };
  purpose: PurposeOfUse;
  /** The written break-glass reason; needed for ETREAT that no consent permits. Never copied into a decision. */
  reason?: string;
  /**
   * The resource asked for: its FHIR resource type and its sensitivity labels. Absent: a request-level
   * question ("may this requester have anything of this patient?"), see {@link decide}.
   */
  resource?: { class: string; labels: readonly string[] };
  /** Time of the request, ms since epoch. */
  atMs: number;
}

/** Duties that come with a permit and that the caller MUST carry out before returning data. */
export type Obligation = 'record-emergency-access' | 'notify-patient';

/** The answer: a value, never a throw (STYLE.md). `reason` holds ids and codes only, never PHI. */
export interface Decision {
  effect: 'permit' | 'deny';
  reason: string;
  /**
   * On a permit: every consent that permits (or the `emergency.access` tx in force). On a deny by consent:
   * every consent that denies. Empty when no consent decided (own record, custodian, default deny).
   */
  consentIds: string[];
  obligations: Obligation[];
}

/** What `decide` reads from the ledger state; `LedgerState` satisfies it. */
export interface ConsentView {
  /** Every consent granted for the patient, revoked ones included. */
  consentsOf(patient: string): readonly ConsentRecord[];
  /** The id of a break-glass access in force at `atMs` for this patient and requester, if any. */
  emergencyAccessOf(patient: string, requester: { org: string; practitioner?: string }, atMs: number, custodian?: string): string | undefined;
}

/** What one consent says about a request: the deciding provision's type, and whether it refuses ETREAT. */
interface ConsentVerdict {
  type: 'permit' | 'deny';
  /** True when the deciding provision is a deny and a deny on its path lists ETREAT among its purposes. */
  refusesEmergency: boolean;
}

/**
 * True when `actor` names the requester. A patient requester (self or proxy) is matched only by patient
 * actors: grants to an organization are for its staff and systems, not for patients who log in through its
 * portal. An app is matched only through its organization (the org vouches for the app), so a consent naming
 * a practitioner or a role does not extend to apps acting for them — except in a deny: there the app's user
 * counts too, so an app cannot be used to escape a deny that names its user.
 */
function actorMatches(actor: ConsentActor, requester: AccessRequest['requester'], type: 'permit' | 'deny'): boolean {
  const staff = requester.patient === undefined;
  const asUser = requester.app === undefined || type === 'deny';
  switch (actor.kind) {
    case 'org':
      return staff && actor.id === requester.org;
    case 'practitioner':
      return staff && asUser && actor.org === requester.org && actor.id === requester.practitioner;
    case 'role':
      return staff && asUser && (actor.org === undefined || actor.org === requester.org) && (requester.roles ?? []).includes(actor.role);
    case 'patient':
      return requester.patient !== undefined && actor.id === requester.patient;
  }
}

/** True when `p` restricts the data it is about (class or label criteria). */
function hasDataCriteria(p: ConsentProvision): boolean {
  return p.classes !== undefined || p.labels !== undefined;
}

/** True when the request-wide criteria of `p` (actors, purposes, period) match; absent criteria match all. */
function requestMatches(p: ConsentProvision, request: AccessRequest): boolean {
  if (p.actors !== undefined && !p.actors.some((a) => actorMatches(a, request.requester, p.type))) return false;
  if (p.purposes !== undefined && !p.purposes.includes(request.purpose)) return false;
  return periodContains(p.period, request.atMs);
}

/** True when the data criteria of `p` match the resource: one of its classes, and any one of its labels. */
function resourceMatches(p: ConsentProvision, resource: NonNullable<AccessRequest['resource']>): boolean {
  if (p.classes !== undefined && !p.classes.includes(resource.class)) return false;
  return p.labels === undefined || p.labels.some((l) => resource.labels.includes(l));
}

const listsEmergency = (p: ConsentProvision): boolean => p.type === 'deny' && p.purposes?.includes('ETREAT') === true;

/** Between matching siblings: a deny overrides a permit, and an explicit emergency refusal another deny. */
function overrides(v: ConsentVerdict, current: ConsentVerdict): boolean {
  if (v.type !== current.type) return v.type === 'deny';
  return v.refusesEmergency && !current.refusesEmergency;
}

/**
 * The verdict for one resource of the subtree under a matching provision `p`: the deepest matching provision
 * decides; when several sibling exceptions match, a deny among them overrides a permit (deny-overrides, as
 * between consents). `refusal`: a deny above `p` lists ETREAT.
 */
function verdictUnder(p: ConsentProvision, request: AccessRequest, resource: NonNullable<AccessRequest['resource']>, refusal: boolean): ConsentVerdict {
  const refuses = refusal || listsEmergency(p);
  let verdict: ConsentVerdict | undefined;
  for (const child of p.provisions ?? []) {
    if (!requestMatches(child, request) || !resourceMatches(child, resource)) continue;
    const v = verdictUnder(child, request, resource, refuses);
    if (verdict === undefined || overrides(v, verdict)) verdict = v;
  }
  return verdict ?? { type: p.type, refusesEmergency: p.type === 'deny' && refuses };
}

/**
 * For a request-level question, what the subtree under a matching provision `p` says about the resources `p`
 * covers: whether some of them may be permitted (an over-approximation: a permit's own data criteria and the
 * data criteria of its deny exceptions are assumed to leave something), and if none may, whether that is an
 * emergency refusal. A matching exception without data criteria covers all that `p` covers, so one that
 * permits nothing denies all of it (deny-overrides among siblings).
 */
function outlookUnder(p: ConsentProvision, request: AccessRequest, refusal: boolean): { mayPermit: boolean; refusesEmergency: boolean } {
  const refuses = refusal || listsEmergency(p);
  let mayPermit = p.type === 'permit';
  let blocking: { mayPermit: boolean; refusesEmergency: boolean } | undefined;
  for (const child of p.provisions ?? []) {
    if (!requestMatches(child, request)) continue;
    const o = outlookUnder(child, request, refuses);
    if (o.mayPermit) mayPermit = true;
    else if (!hasDataCriteria(child) && (blocking === undefined || (o.refusesEmergency && !blocking.refusesEmergency))) blocking = o;
  }
  if (blocking !== undefined) return blocking;
  return { mayPermit, refusesEmergency: !mayPermit && p.type === 'deny' && refuses };
}

/** What one consent says about the request, or undefined when it has no opinion. */
function verdictOf(consent: ConsentRecord, request: AccessRequest): ConsentVerdict | undefined {
  const top = consent.body.provision;
  if (!requestMatches(top, request)) return undefined;
  const { resource } = request;
  if (resource !== undefined) return resourceMatches(top, resource) ? verdictUnder(top, request, resource, false) : undefined;
  const outlook = outlookUnder(top, request, false);
  if (outlook.mayPermit) return { type: 'permit', refusesEmergency: false };
  // A consent that denies only the data it is about (class or label criteria on top) leaves the rest open.
  return hasDataCriteria(top) ? undefined : { type: 'deny', refusesEmergency: outlook.refusesEmergency };
}

interface Tally {
  permits: string[];
  denies: string[];
  /** Consents whose verdict is an explicit refusal of emergency access. */
  refusals: string[];
}

function tallyConsents(request: AccessRequest, view: ConsentView): Tally {
  const tally: Tally = { permits: [], denies: [], refusals: [] };
  for (const consent of view.consentsOf(request.patient)) {
    // A consent for another patient can never speak for this one, whatever the view returns.
    if (consent.revokedAtMs !== null || consent.patient !== request.patient || consent.body.patient !== request.patient) continue;
    const verdict = verdictOf(consent, request);
    if (verdict === undefined) continue;
    if (verdict.type === 'permit') tally.permits.push(consent.id);
    else {
      tally.denies.push(consent.id);
      if (verdict.refusesEmergency) tally.refusals.push(consent.id);
    }
  }
  return tally;
}

const permit = (reason: string, consentIds: string[] = [], obligations: Obligation[] = []): Decision => ({
  effect: 'permit',
  reason,
  consentIds,
  obligations,
});
const deny = (reason: string, consentIds: string[] = []): Decision => ({ effect: 'deny', reason, consentIds, obligations: [] });

/** Deny-overrides over the consents' verdicts; deny when nothing permits. */
function combine(tally: Tally, request: AccessRequest): Decision {
  const what = `${request.purpose} access by ${request.requester.org}`;
  if (tally.denies.length > 0) return deny(`consent ${tally.denies.join(', ')} denies ${what}`, tally.denies);
  if (tally.permits.length > 0) return permit(`consent ${tally.permits.join(', ')} permits ${what}`, tally.permits);
  return deny(`no consent permits ${what}`);
}

/**
 * Decides whether `request` may have the patient's data, from the patient's consents in `view`
 * (DESIGN.md §6). Pure and total: never throws for a well-typed request; deny when nothing permits.
 *
 * Rules, the first that applies decides:
 * - **Own record**: `requester.patient === request.patient` → permit.
 * - **Custodian**: staff of the custodian (`requester.org === custodian`, no `app`, no `patient`) with purpose
 *   TREAT or ETREAT → permit. Custodian staff with another purpose, and the custodian's apps, need consent.
 * - **Consents**: every consent of the patient not revoked (`revokedAtMs === null`) is evaluated on its own
 *   (FHIR provision semantics, deepest matching provision decides, deny-overrides among matching siblings);
 *   between consents a deny overrides any permit; no verdict → deny.
 * - **Break-glass** (purpose ETREAT, requester is staff of another organization — not an app, not a patient:
 *   breaking the glass is a clinician's accountable act): a consent whose deciding provision is a deny that
 *   lists ETREAT (itself or a deny above it) → deny, the patient refused emergency access. A deny that does not
 *   name ETREAT does NOT block: a patient who shut out an organization did not decide about emergencies, and
 *   letting a clinician treat an unconscious patient with full information, recorded and shown to the patient,
 *   is the clinically safe default (DESIGN.md §6: "allowed unless the patient denied emergency access").
 *   Then: a break-glass access in force for this org (and practitioner, if it names one) → permit; consents
 *   that permit ETREAT → permit; a non-blank written reason → permit with obligations
 *   `record-emergency-access` and `notify-patient`; otherwise deny.
 *
 * Matching: see `actorMatches` (patients match only patient actors; apps match only through their org in a
 * permit). Purposes, classes and period as in FHIR; labels: the resource carries any of the listed labels.
 *
 * **Request-level questions** (`resource` absent) ask "may the requester have some of this patient's data?".
 * Actors, purposes and periods are matched as usual; class and label criteria are assumed to leave some
 * resource: a permit with them may permit, and a deny with them (or below one with them) denies only part of
 * the data, so it never settles the request; an exception without class or label criteria that permits nothing
 * denies all its parent covers. A consent denies the request only when its top provision has no class or
 * label criteria and nothing under it may permit. So a request-level deny is exact (every resource would be
 * denied; a property test checks this), while a request-level permit may be followed by a deny of each
 * resource (an over-approximation): the caller MUST still decide per resource before returning data.
 */
export function decide(request: AccessRequest, view: ConsentView): Decision {
  const { requester, purpose } = request;
  if (requester.patient !== undefined && requester.patient === request.patient) {
    return permit("the patient's own record");
  }
  const staff = requester.app === undefined && requester.patient === undefined;
  if (staff && requester.org === request.custodian && (purpose === 'TREAT' || purpose === 'ETREAT')) {
    return permit(`custodian's own treating staff (${purpose})`);
  }
  const tally = tallyConsents(request, view);
  if (purpose !== 'ETREAT' || !staff) return combine(tally, request);

  if (tally.refusals.length > 0) {
    return deny(`the patient refused emergency access (consent ${tally.refusals.join(', ')})`, tally.refusals);
  }
  const requesterOf = requester.practitioner === undefined ? { org: requester.org } : { org: requester.org, practitioner: requester.practitioner };
  const emergency = view.emergencyAccessOf(request.patient, requesterOf, request.atMs, request.custodian);
  if (emergency !== undefined) return permit(`emergency access in force (${emergency})`, [emergency]);
  const normal = combine(tally, request);
  if (normal.effect === 'permit') return normal;
  if (typeof request.reason === 'string' && request.reason.trim() !== '') {
    return permit('break-glass: emergency access with a written reason', [], ['record-emergency-access', 'notify-patient']);
  }
  return deny('break-glass needs a written reason', tally.denies);
}
