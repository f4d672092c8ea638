/**
 * Ledger state derived by applying valid txs in order: the network's identity, its member organizations,
 * registered patients, their links to custodians, their consents, and recently seen tx ids (replay
 * protection).
 */
import type { KeyObject } from 'node:crypto';
import { periodContains, type ConsentGrantBody } from './consent-policy.js';

/** A member organization. */
export interface Member {
  id: string;
  name: string;
  /** Raw 32-byte Ed25519 public key. */
  publicKey: Uint8Array;
  /** RFC 7638 thumbprint of the key. */
  keyId: string;
  key: KeyObject;
  /** Base URL of its node, when the membership names one. */
  url?: string;
}

/** A patient registered on the ledger (`patient.register`). */
export interface RegisteredPatient {
  /** Network id: `pat-` + base32(SHA-256(public key))[0..26]. */
  id: string;
  publicKey: Uint8Array;
  keyId: string;
  key: KeyObject;
}

/** A patient's link to the records a custodian holds for them (`patient.link`). */
export interface PatientLink {
  patient: string;
  custodian: string;
  /** The custodian's ledger pseudonym of its local Patient, as `record.commit` names it. */
  pseudonym: string;
  txId: string;
}

/** A consent as the ledger holds it: the signed grant and, once revoked, when and by whom. */
export interface ConsentRecord {
  /** The id of the `consent.grant` tx. */
  id: string;
  patient: string;
  body: ConsentGrantBody;
  /** Network id of the signer: the patient or a proxy. */
  grantedBy: string;
  /** Tx time of the grant, ms since epoch. */
  grantedAtMs: number;
  revokedAtMs: number | null;
  revokedBy: string | null;
}

/** A break-glass access in force (`emergency.access`): who, for which patient, until when. */
export interface EmergencyAccess {
  /** The id of the `emergency.access` tx. */
  id: string;
  patient: string;
  org: string;
  /** The custodian that recorded it (the tx's signer): the access opens that custodian's records only. */
  custodian: string;
  /** The practitioner at `org` who broke the glass, if named. */
  practitioner: string | null;
  startMs: number;
  endMs: number;
}

/** How long a tx may wait before inclusion; also how long its id is remembered for replay protection. */
export const txMaxAgeMs = 24 * 60 * 60 * 1000;
/** How far in the future (relative to its block) a tx time may be. */
export const txMaxSkewMs = 5 * 60 * 1000;

/** The state every node derives identically from the ordered txs. */
export class LedgerState {
  /** Origin line of the network's checkpoints; null before genesis. */
  origin: string | null = null;
  readonly members = new Map<string, Member>();
  readonly patients = new Map<string, RegisteredPatient>();
  /** Patient network id → links to custodians. */
  readonly links = new Map<string, PatientLink[]>();
  /** `custodian pseudonym` → patient network id. */
  private readonly linkedPseudonyms = new Map<string, string>();
  readonly consents = new Map<string, ConsentRecord>();
  /** Patient network id → break-glass accesses, oldest first. */
  readonly emergencies = new Map<string, EmergencyAccess[]>();
  /** Patient network id → ids of every consent granted for them, oldest first. */
  private readonly consentIdsByPatient = new Map<string, string[]>();
  /** tx id → tx time (ms), for txs younger than `txMaxAgeMs`. */
  private readonly seen = new Map<string, number>();

  hasSeen(txId: string): boolean {
    return this.seen.has(txId);
  }

  markSeen(txId: string, timeMs: number): void {
    this.seen.set(txId, timeMs);
  }

  /** Forgets tx ids too old to be included any more (deterministic: driven by block time). */
  pruneSeen(blockTimeMs: number): void {
    const cutoff = blockTimeMs - txMaxAgeMs - txMaxSkewMs;
    for (const [id, t] of this.seen) {
      if (t >= cutoff) break; // insertion order is roughly time order; stop at the first young one
      this.seen.delete(id);
    }
  }

  addLink(link: PatientLink): void {
    const list = this.links.get(link.patient) ?? [];
    list.push(link);
    this.links.set(link.patient, list);
    this.linkedPseudonyms.set(`${link.custodian} ${link.pseudonym}`, link.patient);
  }

  /** The patient network id a custodian's pseudonym is linked to, if any. */
  patientOfPseudonym(custodian: string, pseudonym: string): string | undefined {
    return this.linkedPseudonyms.get(`${custodian} ${pseudonym}`);
  }

  addConsent(consent: ConsentRecord): void {
    this.consents.set(consent.id, consent);
    const ids = this.consentIdsByPatient.get(consent.patient) ?? [];
    ids.push(consent.id);
    this.consentIdsByPatient.set(consent.patient, ids);
  }

  /** Every consent granted for a patient, revoked ones included, oldest first. */
  consentsOf(patient: string): ConsentRecord[] {
    return (this.consentIdsByPatient.get(patient) ?? []).map((id) => this.consents.get(id)!);
  }

  /**
   * True when `proxy` may act for `patient` at `atMs`: a consent of the patient marked `proxy`, not revoked,
   * whose top provision permits that patient actor and whose period contains `atMs`.
   */
  isProxy(patient: string, proxy: string, atMs: number): boolean {
    return this.consentsOf(patient).some(
      (c) =>
        c.body.proxy === true &&
        c.revokedAtMs === null &&
        c.body.provision.type === 'permit' &&
        periodContains(c.body.provision.period, atMs) &&
        (c.body.provision.actors ?? []).some((a) => a.kind === 'patient' && a.id === proxy),
    );
  }

  addEmergency(access: EmergencyAccess): void {
    const list = this.emergencies.get(access.patient) ?? [];
    list.push(access);
    this.emergencies.set(access.patient, list);
  }

  /**
   * The id of a break-glass access in force at `atMs` for this patient and requester: same organization,
   * the same practitioner when the access names one, and (when `custodian` is given) recorded by that
   * custodian, so one break-glass does not open every custodian's records.
   */
  emergencyAccessOf(patient: string, requester: { org: string; practitioner?: string }, atMs: number, custodian?: string): string | undefined {
    const list = this.emergencies.get(patient) ?? [];
    for (let i = list.length - 1; i >= 0; i--) {
      const e = list[i]!;
      if (e.org !== requester.org || atMs < e.startMs || atMs > e.endMs) continue;
      if (custodian !== undefined && e.custodian !== custodian) continue;
      if (e.practitioner !== null && e.practitioner !== (requester.practitioner ?? null)) continue;
      return e.id;
    }
    return undefined;
  }

  /** Members whose approval is needed for governance: a strict majority. */
  quorum(): number {
    return Math.floor(this.members.size / 2) + 1;
  }
}
