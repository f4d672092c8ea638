/**
 * `healthledger patient …` and `healthledger consent …`: a patient's side of the network over HTTP. The
 * key file stays on the patient's machine; only signed txs and signatures leave it.
 */
import {
  approvePatientLink,
  isResourceType,
  purposesOfUse,
  sensitivityLabels,
  signPatientTx,
  type ConsentActor,
  type ConsentProvision,
  type PatientKey,
  type PurposeOfUse,
  type SensitivityLabel,
} from '../node.js';
import { requestJson } from './http.js';

/** A usage problem in the arguments, reported as one line. */
export class UsageError extends Error {}

/** Registers the patient's key on the ledger (`patient.register`). */
export async function registerPatient(url: string, key: PatientKey): Promise<{ txId: string; leafIndex: number }> {
  const tx = signPatientTx(key, 'patient.register', { publicKey: key.publicKey });
  const r = await requestJson(url, '/ledger/tx', { body: new TextDecoder().decode(tx.bytes) });
  return { txId: String(r.txId), leafIndex: Number(r.leafIndex) };
}

function parameterValue(params: Record<string, unknown>, name: string): string {
  const p = (params.parameter as { name: string; valueString?: string }[] | undefined)?.find((x) => x.name === name);
  if (typeof p?.valueString !== 'string') throw new Error(`the node's answer has no "${name}"`);
  return p.valueString;
}

/** Parses `Patient/ID` (or a bare id). */
export function localPatientId(ref: string): string {
  const m = /^(?:Patient\/)?([A-Za-z0-9\-.]{1,64})$/.exec(ref);
  if (!m) throw new UsageError('--link must be Patient/ID');
  return m[1]!;
}

/**
 * Links the patient to a custodian's local Patient: fetches the link terms, signs them with the patient's
 * key, and has the custodian commit the `patient.link` (needs a staff token of that node).
 */
export async function linkPatient(url: string, key: PatientKey, patientRef: string, token: string): Promise<{ txId: string; custodian: string }> {
  const id = localPatientId(patientRef);
  const path = `/fhir/Patient/${encodeURIComponent(id)}/$link`;
  const terms = await requestJson(url, path, { token });
  const custodian = parameterValue(terms, 'custodian');
  const signature = approvePatientLink(key, {
    origin: parameterValue(terms, 'origin'),
    custodian,
    pseudonym: parameterValue(terms, 'pseudonym'),
  });
  const r = await requestJson(url, path, {
    token,
    contentType: 'application/fhir+json',
    body: {
      resourceType: 'Parameters',
      parameter: [
        { name: 'patient', valueString: key.patient },
        { name: 'signature', valueBase64Binary: Buffer.from(signature, 'base64url').toString('base64') },
      ],
    },
  });
  return { txId: parameterValue(r, 'txId'), custodian };
}

/**
 * Parses `--to`: `org:ID` (or a bare organization id), `practitioner:ORG/ID`, `role:ROLE[@ORG]` or
 * `patient:NETWORK-ID` (a proxy), comma-separated.
 */
export function parseActors(text: string): ConsentActor[] {
  return text.split(',').map((raw) => {
    const t = raw.trim();
    let m: RegExpExecArray | null;
    if ((m = /^(?:org:)?([a-z0-9][a-z0-9-]{0,61}[a-z0-9])$/.exec(t))) return { kind: 'org', id: m[1]! };
    if ((m = /^practitioner:([a-z0-9][a-z0-9-]{0,61}[a-z0-9])\/([A-Za-z0-9\-.]{1,64})$/.exec(t))) return { kind: 'practitioner', org: m[1]!, id: m[2]! };
    if ((m = /^role:([a-z][a-z0-9-]{0,31})(?:@([a-z0-9][a-z0-9-]{0,61}[a-z0-9]))?$/.exec(t))) {
      return m[2] ? { kind: 'role', role: m[1]!, org: m[2] } : { kind: 'role', role: m[1]! };
    }
    if ((m = /^patient:(pat-[a-z2-7]{26})$/.exec(t))) return { kind: 'patient', id: m[1]! };
    throw new UsageError(`--to "${t.slice(0, 80)}" is not org:ID, practitioner:ORG/ID, role:ROLE[@ORG] or patient:NETWORK-ID`);
  });
}

function list(text: string | undefined): string[] {
  return text === undefined ? [] : text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

/** `--until`: a date (the whole day, UTC, is included) or an RFC 3339 UTC time; never in the past. */
export function parseUntil(text: string, nowMs: number): string {
  let end: string;
  if (/^\d{4}-\d{2}-\d{2}$/.test(text)) end = `${text}T23:59:59.999Z`;
  else if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/.test(text)) end = text;
  else throw new UsageError('--until must be a date (YYYY-MM-DD) or a UTC time (YYYY-MM-DDThh:mm:ssZ)');
  const ms = Date.parse(end);
  if (Number.isNaN(ms)) throw new UsageError(`--until ${text} is not a real date`);
  if (ms <= nowMs) throw new UsageError(`--until ${text} is in the past`);
  return new Date(ms).toISOString();
}

/** The options of `consent grant`. */
export interface GrantOptions {
  to: string;
  purpose?: string;
  class?: string;
  excludeLabel?: string;
  until?: string;
  /** The patient the consent is for, when the key holder is their proxy. */
  patient?: string;
  proxy?: boolean;
}

/** Builds the `consent.grant` body from the command's options. */
export function grantBody(key: PatientKey, opts: GrantOptions, nowMs: number): Record<string, unknown> {
  const actors = parseActors(opts.to);
  const purposes = list(opts.purpose ?? 'TREAT');
  for (const p of purposes) {
    if (!(purposesOfUse as readonly string[]).includes(p)) throw new UsageError(`--purpose ${p} is not one of ${purposesOfUse.join(', ')}`);
  }
  const classes = list(opts.class);
  for (const c of classes) if (!isResourceType(c)) throw new UsageError(`--class ${c} is not a FHIR R4 resource type`);
  const labels = list(opts.excludeLabel);
  for (const l of labels) {
    if (!(sensitivityLabels as readonly string[]).includes(l)) throw new UsageError(`--exclude-label ${l} is not one of ${sensitivityLabels.join(', ')}`);
  }
  const patient = opts.patient ?? key.patient;
  if (!/^pat-[a-z2-7]{26}$/.test(patient)) throw new UsageError('--patient must be a patient network id (pat-…)');
  const provision: ConsentProvision = {
    type: 'permit',
    actors,
    purposes: purposes as PurposeOfUse[],
    ...(classes.length > 0 ? { classes } : {}),
    ...(opts.until ? { period: { end: parseUntil(opts.until, nowMs) } } : {}),
    ...(labels.length > 0 ? { provisions: [{ type: 'deny', labels: labels as SensitivityLabel[] }] } : {}),
  };
  return { patient, provision, ...(opts.proxy ? { proxy: true } : {}) };
}

/** Signs and submits a `consent.grant`; resolves with the new consent's id. */
export async function grantConsent(url: string, key: PatientKey, body: Record<string, unknown>): Promise<{ consent: string; leafIndex: number }> {
  const tx = signPatientTx(key, 'consent.grant', body);
  const r = await requestJson(url, '/ledger/tx', { body: new TextDecoder().decode(tx.bytes) });
  return { consent: String(r.txId), leafIndex: Number(r.leafIndex) };
}

/** Signs and submits a `consent.revoke` of consent `id`. */
export async function revokeConsent(url: string, key: PatientKey, id: string, patient = key.patient): Promise<{ txId: string }> {
  if (!/^[0-9a-f]{64}$/.test(id)) throw new UsageError('--consent must be a consent id (64 hex characters)');
  const tx = signPatientTx(key, 'consent.revoke', { patient, consent: id });
  const r = await requestJson(url, '/ledger/tx', { body: new TextDecoder().decode(tx.bytes) });
  return { txId: String(r.txId) };
}
