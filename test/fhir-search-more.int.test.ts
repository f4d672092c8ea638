/**
 * The rest of FHIR search (http://hl7.org/fhir/R4/search.html) over real HTTP, on the SQLite store and on a
 * private PostgreSQL cluster: `_sort` (with stable paging), `_include`/`_revinclude`, one level of chaining,
 * `_summary`/`_elements`, `_total`, `_lastUpdated` prefixes, quantity, number and uri parameters, token
 * `:text`/`:of-type`, reference type modifiers, and a truthful CapabilityStatement. Each result is compared
 * with a brute-force filter (written here, independently) over the same resources as read back one by one.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initNode, issueAdminToken, startNode, type RunningNode } from '../src/node.js';
import { startPostgresCluster, type PostgresCluster } from './postgres-cluster.js';
import { commitmentIn, tempDir } from './helpers.js';

type Json = Record<string, any>;

const ucum = 'http://unitsofmeasure.org';
const mrType = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] };
const families = ['Smith', 'Smithers', 'Smythe', 'Jones', 'Núñez', 'Okafor', 'Smith', 'Lee', 'Brown', 'Jonas', 'Ali', 'Zhang'];
const codes = [
  { system: 'http://loinc.org', code: '8302-2', display: 'Body height' },
  { system: 'http://loinc.org', code: '29463-7', display: 'Body weight' },
  { system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' },
  { system: 'http://loinc.org', code: '2339-0', display: 'Glucose' },
];
const quantityValues = [5.4, 12, 5.4, 0.3, 100, 99.5, 5.45, 7.25, 100.5, 5.35, 42, 1.5];
const units = ['mg', 'g', 'kg'];

/** The transaction that loads the data set: every resource gets a urn:uuid fullUrl so that references resolve. */
function dataSet(): { bundle: Json; labels: string[] } {
  const entries: { label: string; resource: Json }[] = [];
  const add = (label: string, resource: Json) => entries.push({ label, resource });
  const ref = (label: string) => ({ reference: `urn:uuid:${uuidOf(label)}` });
  add('org0', { resourceType: 'Organization', name: 'Acme Health' });
  add('org1', { resourceType: 'Organization', name: 'Bayside Clinic' });
  ['Smith', 'Smithson', 'Jones'].forEach((family, i) => add(`pr${i}`, { resourceType: 'Practitioner', name: [{ family, given: ['Dr'] }] }));
  families.forEach((family, i) => {
    const birthDate = i % 3 === 0 ? `${1950 + i * 3}` : i % 3 === 1 ? `${1950 + i * 3}-0${1 + (i % 9)}` : `${1950 + i * 3}-1${i % 3}-2${i % 9}`;
    add(`p${i}`, {
      resourceType: 'Patient',
      text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">patient ${i}</div>` },
      identifier: [{ type: mrType, system: 'urn:mrn', value: `MRN-${i}` }],
      name: [{ family, given: [`Given${i}`] }],
      gender: ['male', 'female', 'other', 'unknown'][i % 4],
      birthDate,
      managingOrganization: ref(`org${i % 2}`),
      ...(i % 3 === 0 ? { generalPractitioner: [ref(`pr${(i / 3) % 3}`)] } : i % 3 === 1 ? { generalPractitioner: [ref('org1')] } : {}),
      ...(i % 2 === 0 ? { contact: [{ name: { family: 'Kin' } }] } : {}),
    });
  });
  for (let j = 0; j < 48; j++) {
    const code = codes[j % 4]!;
    const unit = units[j % 3]!;
    const day = String(1 + (j % 27)).padStart(2, '0');
    const effective =
      j % 4 === 0
        ? { effectivePeriod: { start: `2021-03-${day}T10:00:00Z`, end: `2021-03-${String(2 + (j % 27)).padStart(2, '0')}T10:00:00Z` } }
        : j % 4 === 1
          ? { effectiveDateTime: `2021-03-${day}` }
          : j % 4 === 2
            ? { effectiveDateTime: `2021-03-${day}T23:30:00-05:00` }
            : {};
    add(`o${j}`, {
      resourceType: 'Observation',
      status: j % 2 === 0 ? 'final' : 'amended',
      code: { coding: [code], text: code.display },
      subject: ref(`p${(j * 5) % 12}`),
      ...effective,
      ...(j % 6 === 5 ? {} : { valueQuantity: { value: quantityValues[j % 12], unit, system: ucum, code: unit } }),
      ...(j % 2 === 0 ? { performer: [ref(`pr${j % 3}`)] } : {}),
      ...(j === 2 ? { hasMember: [ref('o6'), ref('o10')] } : {}),
      ...(j === 1
        ? {
            component: [
              { code: { text: 'systolic' }, valueQuantity: { value: 120, unit: 'mm[Hg]', system: ucum, code: 'mm[Hg]' }, interpretation: [{ text: 'high' }] },
              { code: { text: 'diastolic' }, valueQuantity: { value: 80, unit: 'mm[Hg]', system: ucum, code: 'mm[Hg]' } },
            ],
          }
        : {}),
    });
  }
  add('prov0', { resourceType: 'Provenance', target: [ref('o0'), ref('o4')], recorded: '2021-04-01T00:00:00Z', agent: [{ who: ref('pr0') }] });
  add('prov1', { resourceType: 'Provenance', target: [ref('p0')], recorded: '2021-04-02T00:00:00Z', agent: [{ who: ref('pr1') }] });
  const urls = ['http://example.org/fhir/ValueSet/a', 'http://example.org/fhir/ValueSet/a/b', 'http://example.org/fhir/ValueSet/ab', 'http://EXAMPLE.org/fhir/ValueSet/a'];
  urls.forEach((url, i) => add(`vs${i}`, { resourceType: 'ValueSet', status: 'active', url }));
  [0.1, 0.25, 0.5, 0.55].forEach((p, i) => add(`ra${i}`, { resourceType: 'RiskAssessment', status: 'final', subject: ref('p0'), prediction: [{ probabilityDecimal: p }] }));
  const bundle = {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: entries.map((e) => ({ fullUrl: `urn:uuid:${uuidOf(e.label)}`, resource: e.resource, request: { method: 'POST', url: e.resource.resourceType } })),
  };
  return { bundle, labels: entries.map((e) => e.label) };
}

function uuidOf(label: string): string {
  const h = createHash('sha256').update(label).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

// ---- the brute-force oracle: plain code over the resources as read back ----

const fold = (s: string) => s.normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase();

/** [lo, hi) of a FHIR date/dateTime/instant in ms, UTC unless zoned. */
function span(s: string): [number, number] {
  if (/^\d{4}$/.test(s)) return [Date.UTC(+s, 0, 1), Date.UTC(+s + 1, 0, 1)];
  if (/^\d{4}-\d{2}$/.test(s)) {
    const [y, m] = s.split('-').map(Number) as [number, number];
    return [Date.UTC(y, m - 1, 1), Date.UTC(y, m, 1)];
  }
  if (/^\d{4}-\d{2}-\d{2}$/.test(s)) {
    const t = Date.parse(`${s}T00:00:00Z`);
    return [t, t + 86_400_000];
  }
  const t = Date.parse(s);
  const frac = /\.(\d+)/.exec(s)?.[1];
  return [t, t + (frac ? 10 ** (3 - Math.min(3, frac.length)) : 1000)];
}

function effectiveSpan(o: Json): [number, number] | undefined {
  if (o.effectiveDateTime) return span(o.effectiveDateTime);
  if (o.effectivePeriod) return [span(o.effectivePeriod.start)[0], span(o.effectivePeriod.end)[1]];
  return undefined;
}

const datePrefix: Record<string, (s: [number, number], t: [number, number]) => boolean> = {
  eq: (s, t) => s[0] <= t[0] && t[1] <= s[1],
  ne: (s, t) => !(s[0] <= t[0] && t[1] <= s[1]),
  gt: (s, t) => t[1] > s[1],
  lt: (s, t) => t[0] < s[0],
  ge: (s, t) => t[1] > s[1] || (s[0] <= t[0] && t[1] <= s[1]),
  le: (s, t) => t[0] < s[0] || (s[0] <= t[0] && t[1] <= s[1]),
  sa: (s, t) => t[0] >= s[1],
  eb: (s, t) => t[1] <= s[0],
};

function suite(backend: 'sqlite' | 'postgres') {
  const work = tempDir(`hl-search-more-${backend}-`);
  let cluster: PostgresCluster | undefined;
  let running: RunningNode;
  let auth: Record<string, string>;
  /** The stored resources by label, and by type. */
  const stored = new Map<string, Json>();
  const byType = (type: string) => [...stored.values()].filter((r) => r.resourceType === type);
  const label = (l: string) => stored.get(l)!;
  const later: Json[] = [];

  async function get(path: string) {
    const res = await fetch(path.startsWith('http') ? path : `${running.url}/fhir/${path}`, { headers: auth });
    const text = await res.text();
    return { status: res.status, json: JSON.parse(text) as Json, text };
  }
  async function ok(path: string) {
    const r = await get(path);
    expect(r.status, `${path} → ${r.text.slice(0, 300)}`).toBe(200);
    return r.json;
  }
  const ids = (bundle: Json, mode = 'match') => (bundle.entry ?? []).filter((e: Json) => e.search.mode === mode).map((e: Json) => e.resource.id);
  const sorted = (xs: string[]) => [...xs].sort();
  /** Ids of a search, as a sorted list (order-free comparison). */
  const found = async (query: string) => sorted(ids(await ok(`${query}${query.includes('?') ? '&' : '?'}_count=1000`)));
  const expected = (type: string, test: (r: Json) => boolean) => sorted(byType(type).filter(test).map((r) => r.id));
  const refId = (r: Json | undefined) => r?.reference?.split('/')[1];
  const patientOf = (o: Json) => byType('Patient').find((p) => p.id === refId(o.subject))!;

  beforeAll(async () => {
    let database: string | undefined;
    if (backend === 'postgres') {
      cluster = await startPostgresCluster();
      database = await cluster.createDatabase('records');
    }
    await initNode({ org: `Search ${backend}`, dataDir: work.path });
    running = await startNode({ dataDir: work.path, port: 0, ...(database ? { database } : {}) });
    auth = { authorization: `Bearer ${await issueAdminToken({ dataDir: work.path })}` };
    const { bundle, labels } = dataSet();
    const res = await fetch(`${running.url}/fhir`, { method: 'POST', headers: { ...auth, 'content-type': 'application/fhir+json' }, body: JSON.stringify(bundle) });
    const tx = (await res.json()) as Json;
    expect(res.status, JSON.stringify(tx).slice(0, 500)).toBe(200);
    for (let i = 0; i < labels.length; i++) {
      const location: string = tx.entry[i].response.location;
      stored.set(labels[i]!, await ok(location.split('/_history')[0]!));
    }
    // a second batch, created over a second later, for _lastUpdated
    await new Promise((r) => setTimeout(r, 1100));
    for (let k = 0; k < 3; k++) {
      const body = { resourceType: 'Observation', status: 'final', code: { coding: [codes[0]] }, subject: { reference: `Patient/${label('p1').id}` }, valueQuantity: { value: 5.4, unit: 'mg', system: ucum, code: 'mg' } };
      const created = await fetch(`${running.url}/fhir/Observation`, { method: 'POST', headers: { ...auth, 'content-type': 'application/fhir+json' }, body: JSON.stringify(body) });
      const json = (await created.json()) as Json;
      stored.set(`late${k}`, json);
      later.push(json);
    }
  }, 120_000);

  afterAll(async () => {
    await running?.close();
    await cluster?.stop();
    work.cleanup();
  });

  describe('_sort', () => {
    type Key = string | number | undefined;
    const byLastUpdated = (a: Json, b: Json) => (a.meta.lastUpdated < b.meta.lastUpdated ? 1 : a.meta.lastUpdated > b.meta.lastUpdated ? -1 : a.id < b.id ? -1 : 1);
    /** Sorted by keys (missing last), then newest first, then id: the order the server promises. */
    const bruteSort = (rs: Json[], keys: ((r: Json) => { asc: Key; desc: Key })[], desc: boolean[]) =>
      [...rs]
        .sort((a, b) => {
          for (let i = 0; i < keys.length; i++) {
            const ka = desc[i] ? keys[i]!(a).desc : keys[i]!(a).asc;
            const kb = desc[i] ? keys[i]!(b).desc : keys[i]!(b).asc;
            if (ka === undefined || kb === undefined) {
              if (ka !== kb) return ka === undefined ? 1 : -1;
              continue;
            }
            if (ka !== kb) return (ka < kb ? -1 : 1) * (desc[i] ? -1 : 1);
          }
          return byLastUpdated(a, b);
        })
        .map((r) => r.id);
    const both = (k: Key) => ({ asc: k, desc: k });
    const keyFns: Record<string, (r: Json) => { asc: Key; desc: Key }> = {
      family: (r) => both(r.name ? fold(r.name[0].family) : undefined),
      birthdate: (r) => (r.birthDate ? { asc: span(r.birthDate)[0], desc: span(r.birthDate)[1] } : both(undefined)),
      'value-quantity': (r) => both(r.valueQuantity?.value),
      date: (r) => {
        const s = effectiveSpan(r);
        return s ? { asc: s[0], desc: s[1] } : both(undefined);
      },
      code: (r) => both(r.code.coding[0].code),
      subject: (r) => both(r.subject.reference),
      _id: (r) => both(r.id),
      _lastUpdated: (r) => both(Date.parse(r.meta.lastUpdated)),
    };

    it.each([
      ['Patient', 'family'],
      ['Patient', '-birthdate'],
      ['Patient', 'family,-birthdate'],
      ['Observation', 'value-quantity'],
      ['Observation', '-value-quantity'],
      ['Observation', 'date'],
      ['Observation', '-date'],
      ['Observation', 'code,-_id'],
      ['Observation', 'subject,value-quantity'],
      ['Observation', '_lastUpdated'],
      ['Observation', '-_lastUpdated'],
      ['Observation', '-_id'],
    ])('%s?_sort=%s orders like a brute-force sort', async (type, sort) => {
      const rules = sort.split(',');
      const want = bruteSort(byType(type), rules.map((r) => keyFns[r.replace(/^-/, '')]!), rules.map((r) => r.startsWith('-')));
      const got = ids(await ok(`${type}?_sort=${sort}&_count=1000`));
      expect(got).toEqual(want);
    });

    it('keeps the default order newest first, and pages a sorted search with no overlap and no gap', async () => {
      const all = ids(await ok('Observation?_count=1000'));
      expect(all.slice(0, 3).sort()).toEqual(sorted(later.map((l) => l.id)));
      for (const query of ['Observation?_sort=-value-quantity,_id', 'Observation?_sort=date', 'Observation']) {
        const whole = ids(await ok(`${query}${query.includes('?') ? '&' : '?'}_count=1000`));
        const paged: string[] = [];
        let url: string | undefined = `${running.url}/fhir/${query}${query.includes('?') ? '&' : '?'}_count=7`;
        let pages = 0;
        while (url) {
          const page = await ok(url);
          expect(page.entry.length).toBeLessThanOrEqual(7);
          paged.push(...ids(page));
          url = page.link.find((l: Json) => l.relation === 'next')?.url;
          pages++;
        }
        expect(pages).toBe(Math.ceil(whole.length / 7));
        expect(paged).toEqual(whole);
      }
    });

    it.each([
      ['Observation?_sort=nonsense', /_sort: "nonsense" is not a search parameter of Observation/],
      ['Observation?_sort=', /_sort: "" is not a search parameter/],
      ['Observation?_sort=-', /_sort: "" is not a search parameter/],
      ['Observation?_sort=code-value-quantity', /_sort: "code-value-quantity"/],
      ['Observation?_sort:desc=date', /"_sort" takes no modifier/],
    ])('refuses %s with a 400 naming it', async (query, message) => {
      const r = await get(query);
      expect(r.status).toBe(400);
      expect(r.json.resourceType).toBe('OperationOutcome');
      expect(r.json.issue[0].diagnostics).toMatch(message);
    });
  });

  describe('_include and _revinclude', () => {
    it('adds each referenced resource once, as include entries not counted in total', async () => {
      const matches = byType('Observation').filter((o) => o.code.coding[0].code === '29463-7');
      const bundle = await ok('Observation?code=http://loinc.org|29463-7&_include=Observation:subject&_count=1000');
      expect(bundle.total).toBe(matches.length);
      expect(sorted(ids(bundle))).toEqual(sorted(matches.map((o) => o.id)));
      const wantPatients = sorted([...new Set(matches.map((o) => refId(o.subject)))]);
      expect(wantPatients.length).toBeLessThan(matches.length); // so deduplication is exercised
      expect(sorted(ids(bundle, 'include'))).toEqual(wantPatients);
      const fullUrls = bundle.entry.map((e: Json) => e.fullUrl);
      expect(new Set(fullUrls).size).toBe(fullUrls.length);
      // an included resource is the stored one, whole
      const p = bundle.entry.find((e: Json) => e.search.mode === 'include').resource;
      expect(p).toEqual(byType('Patient').find((x) => x.id === p.id));
    });

    it('honours a target type, *, and never repeats a match as an include', async () => {
      const q = 'Observation?code=http://loinc.org|29463-7&_count=1000';
      expect(ids(await ok(`${q}&_include=Observation:subject:Patient`), 'include').length).toBeGreaterThan(0);
      expect(ids(await ok(`${q}&_include=Observation:subject:Group`), 'include')).toEqual([]);
      const matches = byType('Observation').filter((o) => o.code.coding[0].code === '29463-7');
      const refs = new Set(matches.flatMap((o) => [o.subject, ...(o.performer ?? []), ...(o.hasMember ?? [])].map(refId)));
      expect(sorted(ids(await ok(`${q}&_include=*`), 'include'))).toEqual(sorted([...refs]));
      // o2 has members o6 and o10, which have the same code: as matches they are not included again
      const heart = await ok('Observation?code=8867-4&_include=Observation:has-member&_count=1000');
      expect(ids(heart)).toEqual(expect.arrayContaining([label('o6').id, label('o10').id]));
      expect(ids(heart, 'include')).toEqual([]);
      const one = await ok(`Observation?_id=${label('o2').id}&_include=Observation:has-member`);
      expect(sorted(ids(one, 'include'))).toEqual(sorted([label('o6').id, label('o10').id]));
      expect(one.total).toBe(1);
    });

    it('reverse-includes the resources that point at the matches', async () => {
      const obs = await ok(`Observation?_id=${label('o0').id},${label('o4').id},${label('o1').id}&_revinclude=Provenance:target`);
      expect(ids(obs, 'include')).toEqual([label('prov0').id]);
      expect(obs.total).toBe(3);
      const p0 = label('p0').id;
      const patient = await ok(`Patient?_id=${p0}&_revinclude=Observation:subject&_revinclude=Provenance:target&_revinclude=RiskAssessment:*`);
      const want = [...expected('Observation', (o) => refId(o.subject) === p0), label('prov1').id, ...byType('RiskAssessment').map((r) => r.id)];
      expect(sorted(ids(patient, 'include'))).toEqual(sorted(want));
      expect(patient.total).toBe(1);
      // _summary=count: no entries at all
      expect((await ok(`Patient?_id=${p0}&_revinclude=Observation:subject&_summary=count`)).entry).toEqual([]);
    });

    it.each([
      ['Observation?_include=Foo:bar', /_include=Foo:bar: "Foo" is not a resource type/],
      ['Observation?_include=Observation:code', /"code" is not a reference search parameter of Observation/],
      ['Observation?_include=Patient:organization', /the source type must be the searched type Observation/],
      ['Observation?_include=Observation:subject:Medication', /Observation.subject cannot reference Medication/],
      ['Observation?_include=subject', /must be SourceType:parameter/],
      ['Observation?_include:iterate=Observation:has-member', /_include:iterate is not supported/],
      ['Observation?_revinclude=Provenance:nonsense', /"nonsense" is not a reference search parameter of Provenance/],
      ['Observation?_revinclude=Patient:organization', /Patient.organization cannot reference Observation/],
      ['Observation?_revinclude=*', /_revinclude=\*: must be SourceType:parameter/],
    ])('refuses %s with a 400 naming it', async (query, message) => {
      const r = await get(query);
      expect(r.status).toBe(400);
      expect(r.json.issue[0].diagnostics).toMatch(message);
    });
  });

  describe('chaining', () => {
    const nameStarts = (r: Json, prefix: string) => (r.name ?? []).some((n: Json) => [n.family, ...(n.given ?? [])].some((s: string) => fold(s).startsWith(prefix)));

    it('runs the inner search on the target type and matches the outer by reference', async () => {
      expect(await found('Observation?subject:Patient.name=smith')).toEqual(expected('Observation', (o) => nameStarts(patientOf(o), 'smith')));
      expect((await found('Observation?subject:Patient.name=smith')).length).toBeGreaterThan(0);
      expect(await found('Observation?patient.identifier=urn:mrn|MRN-3')).toEqual(expected('Observation', (o) => patientOf(o).identifier[0].value === 'MRN-3'));
      expect(await found('Observation?subject:Patient.birthdate=lt1965')).toEqual(
        expected('Observation', (o) => span(patientOf(o).birthDate)[0] < span('1965')[0]),
      );
      expect(await found('Observation?code=http://loinc.org|8302-2&subject:Patient.gender=female')).toEqual(
        expected('Observation', (o) => o.code.coding[0].code === '8302-2' && patientOf(o).gender === 'female'),
      );
      const smithDoctors = byType('Practitioner').filter((p) => nameStarts(p, 'smith')).map((p) => p.id);
      expect(smithDoctors).toHaveLength(2);
      expect(await found('Patient?general-practitioner:Practitioner.name=smith')).toEqual(
        expected('Patient', (p) => (p.generalPractitioner ?? []).some((g: Json) => smithDoctors.includes(refId(g)))),
      );
      const acme = label('org0').id;
      expect(await found('Patient?organization.name=acme')).toEqual(expected('Patient', (p) => refId(p.managingOrganization) === acme));
      expect(await found('Observation?subject:Patient.name=zzz')).toEqual([]);
    });

    it.each([
      ['Patient?general-practitioner.name=x', /"general-practitioner.name" is ambiguous: .*general-practitioner:Organization.name or general-practitioner:Practitioner.name/],
      ['Patient?family.name=x', /"family" is a string parameter; only reference parameters can be chained/],
      ['Observation?subject:Patient.organization.name=x', /only one level of chaining/],
      ['Observation?subject:Medication.name=x', /Observation.subject cannot reference "Medication"/],
      ['Observation?subject:Patient.shoe=1', /unknown search parameter "shoe" for Patient/],
      ['Observation?subject.foo=1', /no type that Observation.subject can reference has a search parameter "foo"/],
      ['Observation?subject:Patient._count=1', /"_count" is not a search parameter/],
      ['Patient?_has:Observation:patient:code=1234', /"_has" \(reverse chaining\) is not supported/],
    ])('refuses %s with a 400 naming it', async (query, message) => {
      const r = await get(query);
      expect(r.status).toBe(400);
      expect(r.json.issue[0].diagnostics).toMatch(message);
    });
  });

  describe('_summary, _elements and _total', () => {
    const subsetted = (r: Json) => (r.meta.tag ?? []).some((t: Json) => t.code === 'SUBSETTED' && t.system === 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue');
    const patientSummary = new Set(['resourceType', 'id', 'meta', 'implicitRules', 'identifier', 'active', 'name', 'telecom', 'gender', 'birthDate', 'address', 'managingOrganization', 'link']);

    it('_summary=true keeps only summary elements, at every level, tagged SUBSETTED', async () => {
      const bundle = await ok('Patient?_summary=true&_count=1000');
      expect(bundle.entry).toHaveLength(byType('Patient').length);
      for (const e of bundle.entry) {
        const whole = byType('Patient').find((p) => p.id === e.resource.id)!;
        expect(Object.keys(e.resource).every((k) => patientSummary.has(k))).toBe(true);
        expect(e.resource.text).toBeUndefined();
        expect(e.resource.name).toEqual(whole.name);
        expect(e.resource.birthDate).toBe(whole.birthDate);
        expect(subsetted(e.resource)).toBe(true);
      }
      const o1 = (await ok(`Observation?_id=${label('o1').id}&_summary=true`)).entry[0].resource;
      expect(o1.component).toEqual(label('o1').component.map((c: Json) => ({ code: c.code, valueQuantity: c.valueQuantity })));
    });

    it('_summary=text, data and false; _elements; include entries subsetted by _summary but not by _elements', async () => {
      const text = (await ok(`Observation?_id=${label('o3').id}&_summary=text`)).entry[0].resource;
      expect(Object.keys(text).sort()).toEqual(['code', 'id', 'meta', 'resourceType', 'status']);
      const data = (await ok(`Patient?_id=${label('p0').id}&_summary=data`)).entry[0].resource;
      expect(data.text).toBeUndefined();
      expect(data.contact).toEqual(label('p0').contact);
      expect(subsetted(data)).toBe(true);
      const whole = (await ok(`Patient?_id=${label('p0').id}&_summary=false`)).entry[0].resource;
      expect(whole).toEqual(label('p0'));
      const elements = (await ok(`Patient?_id=${label('p0').id}&_elements=birthDate,name`)).entry[0].resource;
      expect(Object.keys(elements).sort()).toEqual(['birthDate', 'id', 'meta', 'name', 'resourceType']);
      expect(subsetted(elements)).toBe(true);
      const withInclude = await ok(`Observation?_id=${label('o0').id}&_elements=value&_include=Observation:subject`);
      const [match, include] = withInclude.entry;
      expect(Object.keys(match.resource).sort()).toEqual(['code', 'id', 'meta', 'resourceType', 'status', 'valueQuantity']);
      expect(include.resource).toEqual(patientOf(label('o0')));
      const summaryInclude = await ok(`Observation?_id=${label('o0').id}&_summary=true&_include=Observation:subject`);
      expect(subsetted(summaryInclude.entry[1].resource)).toBe(true);
      expect(summaryInclude.entry[1].resource.text).toBeUndefined();
    });

    it('leaves reads, vreads and $proof of the whole version untouched', async () => {
      const p = label('p2');
      expect(subsetted((await ok(`Patient?_id=${p.id}&_summary=true`)).entry[0].resource)).toBe(true);
      const read = await get(`Patient/${p.id}`);
      expect(read.json).toEqual(p);
      const vread = await get(`Patient/${p.id}/_history/1`);
      expect(vread.json).toEqual(p);
      const proof = await ok(`Patient/${p.id}/_history/1/$proof`);
      const param = (name: string) => proof.parameter.find((x: Json) => x.name === name);
      const tx = JSON.parse(Buffer.from(param('leaf').valueBase64Binary, 'base64').toString('utf8'));
      const commitment = createHash('sha256').update(Buffer.from(param('salt').valueBase64Binary, 'base64')).update(vread.text).digest('hex');
      expect(commitmentIn(tx, `Patient/${p.id}/_history/1`)).toBe(commitment);
    });

    it('_total=none leaves the total out; estimate and accurate give it', async () => {
      const n = byType('Patient').length;
      expect((await ok('Patient?_total=none')).total).toBeUndefined();
      expect((await ok('Patient?_total=none')).entry).toHaveLength(n);
      expect((await ok('Patient?_total=estimate')).total).toBe(n);
      expect((await ok('Patient?_total=accurate')).total).toBe(n);
      expect((await ok('Patient?_total=none&_summary=count')).total).toBe(n);
    });

    it.each([
      ['Patient?_summary=maybe', /_summary must be one of true, text, data, count, false/],
      ['Patient?_elements=shoeSize', /_elements: "shoeSize" is not an element of Patient/],
      ['Patient?_elements=name&_summary=true', /_elements cannot be combined with _summary/],
      ['Patient?_total=lots', /_total must be none, estimate or accurate/],
    ])('refuses %s with a 400 naming it', async (query, message) => {
      const r = await get(query);
      expect(r.status).toBe(400);
      expect(r.json.issue[0].diagnostics).toMatch(message);
    });
  });

  describe('_lastUpdated, dates, quantities, numbers, uris, tokens and references', () => {
    it('filters _lastUpdated with every prefix exactly like a brute-force range check', async () => {
      const late = later[0]!.meta.lastUpdated as string;
      const early = label('o0').meta.lastUpdated as string;
      const values = [late.slice(0, 19) + 'Z', early, late, late.slice(0, 10), late.slice(0, 7), late.slice(0, 4), early.slice(0, 19) + '+00:00'];
      const all = byType('Observation');
      let nonEmpty = 0;
      for (const value of values) {
        for (const prefix of Object.keys(datePrefix)) {
          const want = sorted(all.filter((o) => datePrefix[prefix]!(span(value), span(o.meta.lastUpdated))).map((o) => o.id));
          expect(await found(`Observation?_lastUpdated=${prefix}${encodeURIComponent(value)}`), `${prefix}${value}`).toEqual(want);
          if (want.length > 0 && want.length < all.length) nonEmpty++;
        }
      }
      expect(nonEmpty).toBeGreaterThan(10);
      // two bounds: a window
      const window = sorted(all.filter((o) => o.meta.lastUpdated >= late).map((o) => o.id));
      expect(await found(`Observation?_lastUpdated=ge${encodeURIComponent(late)}&_lastUpdated=lt2100`)).toEqual(window);
    });

    it('filters date parameters over dateTimes with zones and periods like a brute-force range check', async () => {
      for (const value of ['2021-03-05', '2021-03', '2021-03-05T10:00:00Z', '2021-03-06T04:30:00Z']) {
        for (const prefix of Object.keys(datePrefix)) {
          const want = expected('Observation', (o) => {
            const t = effectiveSpan(o);
            return t !== undefined && datePrefix[prefix]!(span(value), t);
          });
          expect(await found(`Observation?date=${prefix}${encodeURIComponent(value)}`), `${prefix}${value}`).toEqual(want);
        }
      }
    });

    it('filters quantities by value, system and unit like a brute-force check', async () => {
      const q = (o: Json) => o.valueQuantity as Json | undefined;
      const cases: [string, (v: Json) => boolean][] = [
        ['5.4', (v) => v.value >= 5.35 && v.value < 5.45],
        ['5.40', (v) => v.value >= 5.395 && v.value < 5.405],
        ['gt5.4', (v) => v.value > 5.4],
        ['lt5.4', (v) => v.value < 5.4],
        ['ge5.4', (v) => v.value >= 5.4],
        ['le5.4', (v) => v.value <= 5.4],
        ['ne5.4', (v) => !(v.value >= 5.35 && v.value < 5.45)],
        ['sa42', (v) => v.value > 42],
        ['eb1.5', (v) => v.value < 1.5],
        ['ap100', (v) => Math.abs(v.value - 100) <= 10],
        ['1e2', (v) => v.value >= 50 && v.value < 150],
        ['5.4||mg', (v) => v.value >= 5.35 && v.value < 5.45 && v.code === 'mg'],
        [`5.4|${ucum}|mg`, (v) => v.value >= 5.35 && v.value < 5.45 && v.system === ucum && v.code === 'mg'],
        [`gt1|${ucum}|kg`, (v) => v.value > 1 && v.code === 'kg'],
        [`5.4|http://other.org|mg`, () => false],
        ['5.4,12', (v) => (v.value >= 5.35 && v.value < 5.45) || (v.value >= 11.5 && v.value < 12.5)],
      ];
      for (const [value, test] of cases) {
        const want = expected('Observation', (o) => q(o) !== undefined && test(q(o)!));
        expect(await found(`Observation?value-quantity=${encodeURIComponent(value)}`), value).toEqual(want);
      }
      expect((await found('Observation?value-quantity=5.4')).length).toBeGreaterThan(2);
    });

    it('filters numbers and uris like a brute-force check', async () => {
      const p = (r: Json) => r.prediction[0].probabilityDecimal as number;
      for (const [value, test] of [
        ['0.5', (x: number) => x >= 0.45 && x < 0.55],
        ['0.50', (x: number) => x >= 0.495 && x < 0.505],
        ['gt0.25', (x: number) => x > 0.25],
        ['le0.25', (x: number) => x <= 0.25],
        ['ne0.5', (x: number) => !(x >= 0.45 && x < 0.55)],
      ] as const) {
        expect(await found(`RiskAssessment?probability=${value}`), value).toEqual(expected('RiskAssessment', (r) => test(p(r))));
      }
      const a = 'http://example.org/fhir/ValueSet/a';
      expect(await found(`ValueSet?url=${encodeURIComponent(a)}`)).toEqual([label('vs0').id]);
      expect(await found(`ValueSet?url:below=${encodeURIComponent(a)}`)).toEqual(expected('ValueSet', (v) => v.url.startsWith(a)));
      expect((await found(`ValueSet?url:below=${encodeURIComponent(a)}`)).length).toBe(3);
      expect(await found(`ValueSet?url:above=${encodeURIComponent(`${a}/b/c`)}`)).toEqual(sorted([label('vs0').id, label('vs1').id]));
      expect(await found(`ValueSet?url=${encodeURIComponent('http://example.org/fhir/ValueSet/A')}`)).toEqual([]);
    });

    it('matches token :text and :of-type, and references by type modifier or bare id', async () => {
      const texts = (o: Json) => [o.code.text, ...o.code.coding.map((c: Json) => c.display)].filter((t) => typeof t === 'string').map(fold);
      expect(await found('Observation?code:text=body')).toEqual(expected('Observation', (o) => texts(o).some((t) => t.startsWith('body'))));
      expect(await found('Observation?code:text=heart%20r')).toEqual(expected('Observation', (o) => texts(o).some((t) => t.startsWith('heart r'))));
      expect(await found('Observation?code:text=WEIGHT')).toEqual([]);
      expect(await found('Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|MRN-4')).toEqual([label('p4').id]);
      expect(await found('Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|DL|MRN-4')).toEqual([]);
      const p5 = label('p5').id;
      const of5 = expected('Observation', (o) => refId(o.subject) === p5);
      expect(of5.length).toBeGreaterThan(0);
      expect(await found(`Observation?subject:Patient=${p5}`)).toEqual(of5);
      expect(await found(`Observation?subject=${p5}`)).toEqual(of5);
      expect(await found(`Observation?subject=Patient/${p5}`)).toEqual(of5);
      expect(await found(`Observation?patient=${p5}`)).toEqual(of5);
      expect(await found(`Observation?subject:Group=${p5}`)).toEqual([]);
    });

    it.each([
      ['Observation?_lastUpdated=garbage', /"_lastUpdated" needs a FHIR date/],
      ['Observation?_lastUpdated=ge2024-01-01T10:20Z', /"_lastUpdated" needs a FHIR date/],
      ['Patient?birthdate=2024-02-30', /"birthdate" needs a FHIR date/],
      ['Observation?value-quantity=abc', /"value-quantity" needs a quantity/],
      ['Observation?value-quantity=5|x', /"value-quantity" needs a quantity/],
      ['Observation?value-quantity:exact=5', /"value-quantity" does not take the modifier ":exact"/],
      ['RiskAssessment?probability=high', /"probability" needs a number/],
      ['Observation?code-value-quantity=x', /"code-value-quantity" \(composite\) is not supported/],
      ['Patient?phonetic=smith', /"phonetic" \(string, phonetic matching\) is not supported/],
      ['Patient?birthdate:missing=maybe', /birthdate:missing must be true or false/],
      ['Patient?family=', /"family" has an empty value/],
      ['Observation?code:in=http://x', /"code" does not take the modifier ":in"/],
    ])('%s is a 400 naming the problem, never a 5xx', async (query, message) => {
      const r = await get(query);
      expect(r.status).toBe(400);
      expect(r.json.issue[0].diagnostics).toMatch(message);
    });
  });

  describe('the CapabilityStatement', () => {
    it('lists the search parameters, includes and revincludes that work, and only those', async () => {
      const cs = (await (await fetch(`${running.url}/fhir/metadata`)).json()) as Json;
      const of = (type: string) => cs.rest[0].resource.find((r: Json) => r.type === type);
      const patient = of('Patient');
      const observation = of('Observation');
      const names = (r: Json) => r.searchParam.map((p: Json) => p.name);
      expect(names(patient)).toEqual(expect.arrayContaining(['_id', '_lastUpdated', 'birthdate', 'family', 'general-practitioner', 'identifier']));
      expect(names(patient)).not.toContain('phonetic');
      expect(names(observation)).toEqual(expect.arrayContaining(['value-quantity', 'date', 'code', 'subject']));
      expect(names(observation)).not.toContain('code-value-quantity');
      expect(patient.searchParam.find((p: Json) => p.name === 'birthdate')).toEqual({ name: 'birthdate', definition: 'http://hl7.org/fhir/SearchParameter/individual-birthdate', type: 'date' });
      expect(patient.searchInclude).toEqual(expect.arrayContaining(['*', 'Patient:general-practitioner', 'Patient:organization']));
      expect(patient.searchRevInclude).toEqual(expect.arrayContaining(['Observation:subject', 'Provenance:target', 'RiskAssessment:subject']));
      // every listed parameter is accepted, for filtering and for sorting; every listed include and revinclude too
      for (const r of [patient, observation]) {
        for (const p of r.searchParam) {
          expect((await get(`${r.type}?${p.name}:missing=true&_summary=count`)).status, `${r.type} ${p.name}`).toBe(200);
          expect((await get(`${r.type}?_sort=${p.name}&_count=1`)).status, `${r.type} _sort=${p.name}`).toBe(200);
        }
        for (const inc of r.searchInclude) expect((await get(`${r.type}?_include=${inc}&_count=1`)).status, inc).toBe(200);
      }
      for (const rev of patient.searchRevInclude) expect((await get(`Patient?_revinclude=${rev}&_count=1`)).status, rev).toBe(200);
    }, 120_000);
  });
}

describe('FHIR search, more (SQLite store)', () => suite('sqlite'));
describe('FHIR search, more (PostgreSQL store)', () => suite('postgres'));
