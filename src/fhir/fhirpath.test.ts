import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { getSearchParameters } from '@medplum/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { evalPath, interpretPath, unionBranches } from './fhirpath.js';
import { loadDefinitions, patientCompartmentOf, searchIndexOf } from './index.js';

const vectors = join(import.meta.dirname, '../../test/vectors');

/** Every resource of a file: the resource, its contained resources and a Bundle's entries. */
function resourcesOf(json: Record<string, unknown>): Record<string, unknown>[] {
  const out = [json];
  for (const c of (json.contained as Record<string, unknown>[] | undefined) ?? []) out.push(c);
  for (const e of (json.entry as { resource?: Record<string, unknown> }[] | undefined) ?? []) if (e.resource) out.push(...resourcesOf(e.resource));
  return out;
}

/** The R4 examples, and up to 25 resources of each type from each Synthea patient (they repeat a lot). */
function corpus(): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const folder of ['fhir/r4-examples', 'fhir/examples', 'synthea']) {
    for (const f of readdirSync(join(vectors, folder)).filter((n) => n.endsWith('.json'))) {
      const perType = new Map<unknown, number>();
      for (const r of resourcesOf(JSON.parse(readFileSync(join(vectors, folder, f), 'utf8')) as Record<string, unknown>)) {
        const n = perType.get(r.resourceType) ?? 0;
        perType.set(r.resourceType, n + 1);
        if (folder !== 'synthea' || n < 25) out.push(r);
      }
    }
  }
  return out;
}

/** Distinct values (by JSON), in order of first appearance. */
function distinct(values: unknown[]): string[] {
  return [...new Set(values.map((v) => JSON.stringify(v)))];
}

/**
 * The interpreter's answer, union by union: @medplum/core's `|` also drops values it deems equal by FHIRPath
 * equality (a Quantity with and without a comparator), which the compiled path keeps (callers do not mind).
 */
function interpreted(expression: string, resource: unknown): string[] {
  return distinct(unionBranches(expression).flatMap((b) => interpretPath(b, resource)));
}

beforeAll(() => {
  loadDefinitions();
});

describe('evalPath (compiled) against @medplum/core interpreter', () => {
  it('gives the same values for every search parameter of every resource of the R4 examples and Synthea', () => {
    const resources = corpus();
    expect(resources.length).toBeGreaterThan(600);
    let checks = 0;
    const types = new Set<string>();
    for (const r of resources) {
      types.add(r.resourceType as string);
      for (const sp of Object.values(getSearchParameters(r.resourceType as string) ?? {})) {
        if (!sp.expression) continue;
        expect(distinct(evalPath(sp.expression, r)), `${r.resourceType as string}/${r.id as string} ${sp.code}`).toEqual(interpreted(sp.expression, r));
        checks++;
      }
    }
    expect(types.size).toBeGreaterThanOrEqual(140);
    expect(checks).toBeGreaterThan(15_000);
  });

  const patient = { resourceType: 'Patient', id: 'p1' };
  const cases: [string, string, Record<string, unknown>][] = [
    ['a primitive with an _extension sibling', 'Patient.name.given', { ...patient, name: [{ given: ['Ann', 'Bo'], _given: [null, { extension: [{ url: 'http://x', valueString: 'y' }] }] }] }],
    ['a null inside a primitive array', 'Patient.name.given', { ...patient, name: [{ given: ['Ann', null, 'Bo'] }] }],
    ['empty strings, arrays and objects', 'Patient.name.family', { ...patient, name: [{ family: '' }, {}, { family: 'X' }] }],
    ['a choice element narrowed by `as`', '(Observation.value as Quantity)', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, valueQuantity: { value: 1 } }],
    ['a choice element of another type', '(Observation.value as Quantity)', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, valueString: 'one' }],
    ['`.as()`, which does not filter', 'Condition.onset.as(Age)', { resourceType: 'Condition', subject: { reference: 'Patient/p1' }, onsetString: 'childhood' }],
    ['references of every form', 'Observation.subject.where(resolve() is Patient)', { resourceType: 'Observation', subject: { reference: 'http://other.example/fhir/Patient/9' } }],
    ['a conditional reference', 'Observation.subject.where(resolve() is Patient)', { resourceType: 'Observation', subject: { reference: 'Patient?identifier=http://x|1' } }],
    ['a logical reference', 'Observation.subject.where(resolve() is Patient)', { resourceType: 'Observation', subject: { type: 'Patient', identifier: { system: 'http://x', value: '1' } } }],
    ['a urn:uuid reference', 'Observation.subject.where(resolve() is Patient)', { resourceType: 'Observation', subject: { reference: 'urn:uuid:7f4c7d9e-3c1a-4a57-9a0c-8d1f0c6c2b11' } }],
    ['an embedded resource in a reference', 'Observation.subject.where(resolve() is Patient)', { resourceType: 'Observation', subject: { resource: { resourceType: 'Patient', id: 'x' } } }],
    ['where(system=...) with and without the element', "Patient.telecom.where(system='phone')", { ...patient, telecom: [{ system: 'phone', value: '1' }, { value: '2' }, { system: 'email', value: '3' }] }],
    ['a branch about another type', 'Condition.subject | Patient.name', { ...patient, name: [{ family: 'X' }] }],
    ['an expression that is not compiled', 'Patient.deceased.exists() and Patient.deceased != false', { ...patient, deceasedBoolean: true }],
    ['an element the definitions do not know', 'Patient.nickname', { ...patient, nickname: 'Z' }],
  ];
  for (const [name, expression, resource] of cases) {
    it(`agrees on ${name}`, () => {
      expect(distinct(evalPath(expression, resource))).toEqual(interpreted(expression, resource));
    });
  }

  it('does not modify the resource it reads', () => {
    const r = { ...patient, name: [{ given: ['Ann'], _given: [{ extension: [{ url: 'http://x', valueString: 'y' }] }] }] };
    const before = JSON.stringify(r);
    evalPath('Patient.name.given', r);
    expect(JSON.stringify(r)).toBe(before);
  });
});

describe('what the compiled paths serve', () => {
  it('puts Synthea resources in their patient compartment and indexes their codes and subjects', () => {
    const bundle = JSON.parse(readFileSync(join(vectors, 'synthea', readdirSync(join(vectors, 'synthea')).find((f) => f.endsWith('.json'))!), 'utf8')) as {
      entry: { fullUrl: string; resource: Record<string, unknown> & { resourceType: string } }[];
    };
    const patientEntry = bundle.entry.find((e) => e.resource.resourceType === 'Patient')!;
    const observation = bundle.entry.find((e) => e.resource.resourceType === 'Observation')!.resource;
    // Synthea references the patient by its urn:uuid fullUrl; as stored, it is Patient/{id}.
    const stored = JSON.parse(JSON.stringify(observation).replaceAll(patientEntry.fullUrl, `Patient/${patientEntry.resource.id as string}`)) as typeof observation;
    expect(patientCompartmentOf(stored)).toBe(patientEntry.resource.id);
    const index = searchIndexOf(stored);
    expect(index).toContainEqual({ param: 'subject', kind: 'reference', value: `Patient/${patientEntry.resource.id as string}` });
    expect(index).toContainEqual({ param: 'patient', kind: 'reference', value: `Patient/${patientEntry.resource.id as string}` });
    const coding = (stored.code as { coding: { system: string; code: string }[] }).coding[0]!;
    expect(index).toContainEqual({ param: 'code', kind: 'token', value: `${coding.system}|${coding.code}` });
  });
});
