/**
 * `healthledger patient …`, `healthledger consent …` and `healthledger disclosures`: a patient's side of
 * the network over HTTP. The
 * key file stays on the patient's machine; only signed txs and signatures leave it.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  approvePatientLink,
  canonicalJson,
  isResourceType,
  patientCliClient,
  patientIdPattern,
  publicVerifier,
  sha256,
  signPatientLogin,
  purposesOfUse,
  sensitivityLabels,
  signPatientTx,
  type ConsentActor,
  type ConsentProvision,
  type PatientKey,
  type PurposeOfUse,
  type SensitivityLabel,
} from '../node.js';
import { RequestError, reach, requestJson } from './http.js';

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
  // A proxy acts for the patient in full: no purpose limit unless one is asked for (which the ledger refuses).
  const purposes = list(opts.purpose ?? (opts.proxy ? undefined : 'TREAT'));
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
  if (!patientIdPattern.test(patient)) throw new UsageError('--patient must be a patient network id (pat-…)');
  const provision: ConsentProvision = {
    type: 'permit',
    actors,
    ...(purposes.length > 0 ? { purposes: purposes as PurposeOfUse[] } : {}),
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

/** One access in a patient's accounting of disclosures, with whether its proof held. */
export interface Disclosure {
  recorded: string;
  org: string;
  user?: string;
  purpose: string;
  action: string;
  outcome: 'permit' | 'deny';
  reason?: string;
  resources: number;
  breakGlass: boolean;
  leafIndex: string;
  /** Committed but not yet covered by a final checkpoint: nothing to check yet. */
  pending: boolean;
  /** null when the proof held (or is pending); else what failed. */
  proofProblem: string | null;
}

function base64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

/**
 * Signs the patient in at a node (SMART authorization code + PKCE, the patient signing the node's
 * single-use challenge with their key) and returns the access token and the local Patient id.
 */
export async function patientLogin(url: string, key: PatientKey): Promise<{ token: string; patient: string }> {
  const base = url.replace(/\/+$/, '');
  const verifier = base64url(randomBytes(32));
  const challenge = base64url(createHash('sha256').update(verifier).digest());
  const redirectUri = patientCliClient.redirectUris[0]!;
  const query = new URLSearchParams({
    response_type: 'code',
    client_id: patientCliClient.clientId,
    redirect_uri: redirectUri,
    scope: patientCliClient.scope,
    state: base64url(randomBytes(12)),
    code_challenge: challenge,
    code_challenge_method: 'S256',
    aud: `${base}/fhir`,
  });
  const page = await reach(base, `${base}/auth/authorize?${query}`, { redirect: 'manual' });
  const request = /name="request" value="([A-Za-z0-9_-]+)"/.exec(await page.text())?.[1];
  if (!request) throw new RequestError(`the node's login page (HTTP ${page.status}) offers no patient sign-in`, 0);
  const c = await requestJson(base, `/auth/patient-challenge?request=${request}`);
  const nonce = String(c.challenge);
  // Sign only a login for this node: never an arbitrary message a node might put forward.
  if (c.message !== `healthledger-login:${base}:${nonce}`) throw new RequestError('the node asked to sign a login message for another address', 0);
  const form = new URLSearchParams({ request, login: 'patient', patient: key.patient, challenge: nonce, signature: signPatientLogin(key, base, nonce) });
  const login = await reach(base, `${base}/auth/authorize`, { method: 'POST', body: form, redirect: 'manual' });
  const location = login.headers.get('location');
  const code = location ? new URL(location).searchParams.get('code') : null;
  if (login.status !== 302 || !code) throw new RequestError(`the node refused the sign-in (HTTP ${login.status})`, 0);
  const t = await reach(base, `${base}/auth/token`, { method: 'POST', body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, client_id: patientCliClient.clientId, code_verifier: verifier }) });
  const tokens = (await t.json()) as { access_token?: string; patient?: string; error_description?: string };
  if (!t.ok || !tokens.access_token) throw new RequestError(`the node refused the token: ${tokens.error_description ?? `HTTP ${t.status}`}`, 0);
  if (!tokens.patient) throw new RequestError(`${key.patient} is not linked to a record at this node`, 0);
  return { token: tokens.access_token, patient: tokens.patient };
}

/**
 * The patient's accounting of disclosures at a node: every access to their records there, each checked
 * as an outsider would (the AuditEvent's commitment in the ledger leaf, the leaf's inclusion proof, and the
 * checkpoint's signature by a member key the node lists).
 */
export async function fetchDisclosures(url: string, key: PatientKey): Promise<Disclosure[]> {
  const { token, patient } = await patientLogin(url, key);
  const r = await requestJson(url, `/fhir/Patient/${encodeURIComponent(patient)}/$disclosures`, { token });
  const members = (await requestJson(url, '/ledger/members')) as { members?: { verifierKey: string }[] };
  const keys = (members.members ?? []).map((m) => m.verifierKey);
  const out: Disclosure[] = [];
  for (const d of (r.parameter ?? []) as { name: string; part: { name: string; resource?: any; valueString?: string; valueBase64Binary?: string; valueInteger64?: string }[] }[]) {
    if (d.name !== 'disclosure') continue;
    const part = (name: string) => d.part.filter((p) => p.name === name);
    const event = part('event')[0]?.resource ?? {};
    const b64 = (s: string | undefined) => new Uint8Array(Buffer.from(s ?? '', 'base64'));
    let proofProblem: string | null = null;
    const pending = part('pending').length > 0;
    if (!pending) try {
      const leaf = b64(part('leaf')[0]?.valueBase64Binary);
      const salt = b64(part('salt')[0]?.valueBase64Binary);
      const tx = JSON.parse(Buffer.from(leaf).toString('utf8')) as { body: { versions?: { resourceType: string; id: string; commitment: string }[]; id?: string; commitment?: string } };
      const versions = tx.body.versions ?? [tx.body as { resourceType: string; id: string; commitment: string }];
      const committed = versions.find((v) => v.resourceType === 'AuditEvent' && v.id === event.id)?.commitment;
      const content = new TextEncoder().encode(canonicalJson(event));
      const expected = Buffer.from(sha256(Buffer.concat([Buffer.from(salt), Buffer.from(content)]))).toString('hex');
      if (committed !== expected) throw new Error('the AuditEvent does not match its ledger commitment');
      const checkpoint = publicVerifier.verifyCheckpoint(part('checkpoint')[0]?.valueString ?? '', keys);
      const quorum = Math.floor(keys.length / 2) + 1;
      if (checkpoint.signers.length + checkpoint.cosigners.length < quorum) {
        throw new Error(`the checkpoint is signed by ${checkpoint.signers.length + checkpoint.cosigners.length} of ${keys.length} members; ${quorum} are needed`);
      }
      publicVerifier.verifyInclusion(
        BigInt(part('leafIndex')[0]?.valueInteger64 ?? '-1'),
        checkpoint.treeSize,
        publicVerifier.leafHash(leaf),
        part('proof').map((p) => b64(p.valueBase64Binary)),
        checkpoint.rootHash,
      );
    } catch (err) {
      proofProblem = err instanceof Error ? err.message : String(err);
    }
    const agents = (event.agent ?? []) as { type?: { coding?: { code?: string }[] }; who?: { identifier?: { value?: string } } }[];
    const roleOf = (code: string) => agents.find((a) => a.type?.coding?.[0]?.code === code)?.who?.identifier?.value;
    const entities = (event.entity ?? []) as { role?: { code?: string }; description?: string }[];
    out.push({
      recorded: String(event.recorded ?? ''),
      org: roleOf('110153') ?? '?',
      ...(roleOf('humanuser') ? { user: roleOf('humanuser')! } : {}),
      purpose: String(event.purposeOfEvent?.[0]?.coding?.[0]?.code ?? '?'),
      action: String(event.subtype?.[0]?.code ?? '?'),
      outcome: event.outcome === '0' ? 'permit' : 'deny',
      ...(event.outcomeDesc ? { reason: String(event.outcomeDesc) } : {}),
      resources: entities.filter((e) => e.role?.code === '4').length,
      breakGlass: entities.some((e) => (e.description ?? '').includes('emergency')),
      leafIndex: String(part('leafIndex')[0]?.valueInteger64 ?? '?'),
      pending,
      proofProblem,
    });
  }
  return out;
}
