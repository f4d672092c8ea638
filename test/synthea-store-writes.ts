/**
 * Synthea transaction bundles turned into `RecordStore` version writes the way the server would write them
 * (fresh UUID ids, references rewritten, canonical JSON with meta, blind-index entries), plus the PHI strings
 * of each patient that must never appear in a backend's files at rest. Shared by the backends' PHI scans.
 */
import { randomUUID } from 'node:crypto';
import { canonicalBytes } from '../src/crypto/index.js';
import { generateSalt, normalizeString, type BlindIndexEntry, type VersionWrite } from '../src/store/index.js';

/** Arbitrary FHIR JSON, walked loosely. */
type Json = any;

/** Strings shorter than this are not searched: a chance match in N random bytes has probability ≈ N / 2^(8·len). */
export const minNeedleBytes = 5;

/** The search values a FHIR layer would extract (a test stand-in for the fhir module's index extraction). */
export function indexEntriesOf(r: Json): BlindIndexEntry[] {
  const out: BlindIndexEntry[] = [];
  const add = (param: string, kind: BlindIndexEntry['kind'], value: unknown): void => {
    if (typeof value === 'string' && value.trim() !== '') out.push({ param, kind, value });
    else if (typeof value === 'number') out.push({ param, kind, value: String(value) });
  };
  if (Array.isArray(r.name)) {
    for (const n of r.name) {
      add('family', 'string', n.family);
      for (const g of n.given ?? []) add('given', 'string', g);
    }
  }
  if (typeof r.name === 'string') add('name', 'string', r.name);
  for (const i of r.identifier ?? []) {
    add('identifier', 'token', i.value);
    if (i.system) add('identifier', 'token', `${i.system}|${i.value}`);
  }
  add('birthdate', 'date', r.birthDate);
  add('gender', 'token', r.gender);
  for (const a of r.address ?? []) {
    add('address-city', 'string', a.city);
    add('address-postalcode', 'string', a.postalCode);
    for (const line of a.line ?? []) add('address', 'string', line);
  }
  for (const t of r.telecom ?? []) add(t.system === 'email' ? 'email' : 'phone', 'token', t.value);
  for (const ref of [r.subject, r.patient]) add('patient', 'reference', ref?.reference);
  add('encounter', 'reference', r.encounter?.reference);
  for (const c of r.code?.coding ?? []) {
    add('code', 'token', c.code);
    add('code', 'token', `${c.system}|${c.code}`);
  }
  add('code-text', 'string', r.code?.text);
  add('status', 'token', r.status);
  add('date', 'date', r.effectiveDateTime ?? r.onsetDateTime ?? r.occurrenceDateTime ?? r.authoredOn ?? r.period?.start ?? r.billablePeriod?.start);
  add('value-quantity', 'number', r.valueQuantity?.value);
  return out;
}

/** One imported Synthea patient. */
export interface ImportedPatient {
  patientId: string;
  writes: VersionWrite[];
  /** PHI strings of this patient (names, birth date, address, identifiers, phones, free text) for scans. */
  needles: string[];
}

/** Turns a Synthea transaction bundle into committed version writes at `lastUpdated`. */
export function importBundle(bundle: Json, lastUpdated: string): ImportedPatient {
  const newIds = new Map<string, string>();
  for (const e of bundle.entry) newIds.set(e.fullUrl, `${e.resource.resourceType}/${randomUUID()}`);
  const rewrite = (node: Json): Json => {
    if (Array.isArray(node)) return node.map(rewrite);
    if (node === null || typeof node !== 'object') return node;
    const out: Json = {};
    for (const [k, v] of Object.entries(node)) {
      out[k] = k === 'reference' && typeof v === 'string' && newIds.has(v) ? newIds.get(v) : rewrite(v);
    }
    return out;
  };
  const patientEntry = bundle.entry.find((e: Json) => e.resource.resourceType === 'Patient');
  const patientId = newIds.get(patientEntry.fullUrl)!.split('/')[1]!;
  const writes = bundle.entry.map((e: Json): VersionWrite => {
    const id = newIds.get(e.fullUrl)!.split('/')[1]!;
    const resource = { ...rewrite(e.resource), id, meta: { ...e.resource.meta, versionId: '1', lastUpdated } };
    const ownerRef: unknown = resource.resourceType === 'Patient' ? `Patient/${id}` : (resource.subject ?? resource.patient)?.reference;
    return {
      resourceType: resource.resourceType,
      id,
      versionId: '1',
      lastUpdated,
      deleted: false,
      patient: typeof ownerRef === 'string' && ownerRef.startsWith('Patient/') ? ownerRef.slice('Patient/'.length) : null,
      content: canonicalBytes(resource),
      salt: generateSalt(),
      status: 'committed',
      txId: randomUUID(),
      index: indexEntriesOf(resource),
    };
  });

  const p = patientEntry.resource;
  // Values indexed as FHIR strings: the blind index hashes their normalized forms, which must not leak either.
  const strings: string[] = [];
  const others: string[] = [];
  for (const n of p.name ?? []) strings.push(...(n.family ? [n.family] : []), ...(n.given ?? []));
  for (const i of p.identifier ?? []) others.push(i.value);
  others.push(p.birthDate);
  if (p.deceasedDateTime) others.push(p.deceasedDateTime);
  for (const a of p.address ?? []) strings.push(...(a.line ?? []), a.city, a.postalCode);
  for (const t of p.telecom ?? []) others.push(t.value);
  for (const x of p.extension ?? []) {
    if (typeof x.valueString === 'string') others.push(x.valueString); // mother's maiden name
    if (x.valueAddress?.city) others.push(x.valueAddress.city); // birth place
  }
  const seed = /Person seed: \d+/.exec(p.text?.div ?? '');
  if (seed) others.push(seed[0]); // narrative text
  // Free text of this patient's clinical records (indexed as code-text strings).
  const texts = new Set<string>();
  for (const e of bundle.entry) {
    const r = e.resource;
    if ((r.resourceType === 'Condition' || r.resourceType === 'Observation') && typeof r.code?.text === 'string') texts.add(r.code.text);
  }
  strings.push(...[...texts].slice(0, 6));
  const all = [...strings, ...strings.map(normalizeString), ...others].filter((s): s is string => typeof s === 'string');
  return { patientId, writes, needles: [...new Set(all)].filter((s) => Buffer.byteLength(s) >= minNeedleBytes) };
}

/**
 * The form in which a scan looks for a needle. A short all-hex value such as a postal code (`01930`) also
 * occurs by chance inside the random UUIDs (resource ids, tx ids) that a store keeps in clear: about once
 * per 90,000 UUIDs for a 5-digit needle, so once in a few runs over thousands of them. Such a needle is
 * searched in its JSON-quoted form (`"01930"`), as it stands in the resources.
 */
export function scanFormOf(needle: string): string {
  return /^[0-9A-Fa-f]+$/.test(needle) ? JSON.stringify(needle) : needle;
}
