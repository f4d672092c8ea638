/**
 * FHIR search over blind indexes, checked against what was imported: token, reference, string (prefix,
 * :exact), date, paging, _summary=count, POST _search, and strict refusal of what is not supported
 * (the rest of search: fhir-search-more.int.test.ts).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initNode, issueAdminToken, startNode, type RunningNode } from '../src/node.js';
import { tempDir } from './helpers.js';

const work = tempDir('hl-search-');
let running: RunningNode;
let auth: Record<string, string>;
const bundle = JSON.parse(readFileSync(join(import.meta.dirname, 'vectors/synthea/Chet_Thompson_eda17701-070d-4fae-9f7d-c8cd6263b63a.json'), 'utf8'));
const sentPatient = bundle.entry[0].resource;
let patientId = '';

beforeAll(async () => {
  await initNode({ org: 'Search Hospital', dataDir: work.path });
  running = await startNode({ dataDir: work.path, port: 0 });
  auth = { authorization: `Bearer ${await issueAdminToken({ dataDir: work.path })}` };
  const res = await fetch(`${running.url}/fhir`, { method: 'POST', headers: { ...auth, 'content-type': 'application/fhir+json' }, body: JSON.stringify(bundle) });
  const json = (await res.json()) as any;
  patientId = json.entry[0].response.location.split('/')[1];
}, 60_000);

afterAll(async () => {
  await running?.close();
  work.cleanup();
});

async function search(query: string) {
  const res = await fetch(`${running.url}/fhir/${query}`, { headers: auth });
  return { status: res.status, json: (await res.json()) as any };
}

const sentObservations = bundle.entry.map((e: any) => e.resource).filter((r: any) => r.resourceType === 'Observation');

describe('FHIR search', () => {
  it('finds by token system|code and reference, with the exact total', async () => {
    const want = sentObservations.filter((o: any) => o.code.coding.some((c: any) => c.system === 'http://loinc.org' && c.code === '8302-2')).length;
    expect(want).toBeGreaterThan(0);
    const r = await search(`Observation?code=http://loinc.org|8302-2&subject=Patient/${patientId}&_count=100`);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ resourceType: 'Bundle', type: 'searchset', total: want });
    expect(r.json.entry.every((e: any) => e.resource.code.coding[0].code === '8302-2' && e.resource.subject.reference === `Patient/${patientId}`)).toBe(true);
  });

  it('finds by code alone, any system, and not by a code of another system', async () => {
    expect((await search('Observation?code=8302-2')).json.total).toBeGreaterThan(0);
    expect((await search('Observation?code=http://snomed.info/sct|8302-2')).json.total).toBe(0);
    // any code of a system (not indexed: found by scan and exact match)
    expect((await search('Observation?code=http://loinc.org|&_summary=count')).json.total).toBe(sentObservations.length);
  });

  it('matches strings by case- and accent-insensitive prefix, and :exact exactly', async () => {
    const family: string = sentPatient.name[0].family;
    expect((await search(`Patient?family=${encodeURIComponent(family.slice(0, 3).toLowerCase())}`)).json.total).toBe(1);
    expect((await search(`Patient?family:exact=${encodeURIComponent(family)}`)).json.total).toBe(1);
    expect((await search(`Patient?family:exact=${encodeURIComponent(family.toLowerCase())}`)).json.total).toBe(0);
    expect((await search('Patient?family=zzzz')).json.total).toBe(0);
    // default is starts-with: a middle part matches only with :contains
    expect((await search(`Patient?family=${encodeURIComponent(family.slice(2, 5))}`)).json.total).toBe(0);
    expect((await search(`Patient?family:contains=${encodeURIComponent(family.slice(2, 5).toUpperCase())}`)).json.total).toBe(1);
  });

  it('filters dates with prefixes exactly', async () => {
    const birth: string = sentPatient.birthDate;
    expect((await search(`Patient?birthdate=${birth}`)).json.total).toBe(1);
    expect((await search(`Patient?birthdate=gt${birth}`)).json.total).toBe(0);
    expect((await search(`Patient?birthdate=le${birth}`)).json.total).toBe(1);
  });

  it('pages with _count and next links, without overlap, and counts with _summary=count', async () => {
    const all = (await search('Observation?_count=1000')).json;
    expect(all.total).toBe(sentObservations.length);
    const seen = new Set<string>();
    let url: string | undefined = `${running.url}/fhir/Observation?_count=50`;
    while (url) {
      const page = (await (await fetch(url, { headers: auth })).json()) as any;
      for (const e of page.entry) {
        expect(seen.has(e.resource.id)).toBe(false);
        seen.add(e.resource.id);
      }
      url = page.link.find((l: any) => l.relation === 'next')?.url;
    }
    expect(seen.size).toBe(all.total);
    const count = (await search('Observation?_summary=count')).json;
    expect(count.total).toBe(all.total);
    expect(count.entry).toEqual([]);
  });

  it('answers POST _search with form parameters like GET', async () => {
    const res = await fetch(`${running.url}/fhir/Observation/_search`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded' },
      body: `code=8302-2&subject=Patient/${patientId}`,
    });
    const json = (await res.json()) as any;
    expect(res.status).toBe(200);
    expect(json.total).toBe((await search(`Observation?code=8302-2&subject=Patient/${patientId}`)).json.total);
  });

  it('does not find deleted resources', async () => {
    const obs = (await search('Observation?code=8302-2&_count=1')).json.entry[0].resource;
    const before = (await search('Observation?code=8302-2')).json.total;
    expect((await search(`Observation?_id=${obs.id}`)).json.total).toBe(1);
    expect((await search(`Observation?_id=${obs.id},no-such-id`)).json.total).toBe(1);
    expect((await fetch(`${running.url}/fhir/Observation/${obs.id}`, { method: 'DELETE', headers: auth })).status).toBe(204);
    expect((await search('Observation?code=8302-2')).json.total).toBe(before - 1);
    expect((await search(`Observation?_id=${obs.id}`)).json.total).toBe(0);
  });

  it.each([
    ['Patient?shoe-size=9', /unknown search parameter "shoe-size"/],
    ['Observation?_include=Foo:subject', /_include=Foo:subject: "Foo" is not a resource type/],
    ['Observation?subject.name=x', /"subject.name" is ambiguous/],
    ['Observation?_count=many', /_count/],
    ['Observation?_summary=maybe', /_summary must be one of/],
  ])('refuses %s with a 400 naming it', async (query, message) => {
    const r = await search(query);
    expect(r.status).toBe(400);
    expect(r.json.issue[0].diagnostics).toMatch(message);
  });
});

describe('resources the blind index cannot hold whole', () => {
  const post = async (body: object) =>
    (await (await fetch(`${running.url}/fhir/${(body as { resourceType: string }).resourceType}`, { method: 'POST', headers: { ...auth, 'content-type': 'application/fhir+json' }, body: JSON.stringify(body) })).json()) as any;

  it('finds a Group by its 250th member (past the 200 values indexed per version)', async () => {
    const members = Array.from({ length: 250 }, (_, i) => ({ entity: { reference: `Patient/member-${i}` } }));
    const group = await post({ resourceType: 'Group', type: 'person', actual: true, member: members });
    const other = await post({ resourceType: 'Group', type: 'person', actual: true, member: [{ entity: { reference: 'Patient/member-0' } }] });
    const last = await search('Group?member=Patient/member-249');
    expect(last.status).toBe(200);
    expect(last.json.entry.map((e: any) => e.resource.id)).toEqual([group.id]);
    const first = await search('Group?member=Patient/member-0&_sort=_id');
    expect(first.json.entry.map((e: any) => e.resource.id).sort()).toEqual([group.id, other.id].sort());
    expect((await search('Group?member=Patient/member-250')).json.total).toBe(0);
  });

  it('finds a resource by a string longer than the index takes (512 characters)', async () => {
    const family = `Longname${'x'.repeat(600)}`;
    const patient = await post({ resourceType: 'Patient', name: [{ family }] });
    const r = await search('Patient?family=Longnamexxx');
    expect(r.json.entry.map((e: any) => e.resource.id)).toEqual([patient.id]);
    expect((await search('Patient?family=Longnamey')).json.total).toBe(0);
  });
});
