import { beforeAll, describe, expect, it } from 'vitest';
import { loadDefinitions, matchesSearch, patientCompartmentOf, planSearch, referencesOf, searchIndexOf } from './index.js';

/** An Observation about `subject` (a literal reference as written). */
const about = (subject: string) => ({ resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'pulse' }, subject: { reference: subject } });
const matches = (resource: { resourceType: string }, query: string) => matchesSearch(resource, planSearch('Observation', new URLSearchParams(query)));

beforeAll(() => {
  loadDefinitions();
});

describe('references to another server (references.html#literal)', () => {
  const local = about('Patient/p1');
  const remote = about('https://other.example/fhir/Patient/p1');

  it('a local Type/id search does not match a reference to another server, nor the other way round', () => {
    expect(matches(local, 'subject=Patient/p1')).toBe(true);
    expect(matches(remote, 'subject=Patient/p1')).toBe(false);
    expect(matches(remote, 'subject=https://other.example/fhir/Patient/p1')).toBe(true);
    expect(matches(local, 'subject=https://other.example/fhir/Patient/p1')).toBe(false);
  });

  it('a bare id names a local resource only', () => {
    expect(matches(local, 'subject=p1')).toBe(true);
    expect(matches(remote, 'subject=p1')).toBe(false);
  });

  it('indexes and includes the whole URL of an absolute reference, Type/id of a relative one (version dropped)', () => {
    expect(searchIndexOf(remote)).toContainEqual({ param: 'subject', kind: 'reference', value: 'https://other.example/fhir/Patient/p1' });
    expect(searchIndexOf(remote)).not.toContainEqual({ param: 'subject', kind: 'reference', value: 'Patient/p1' });
    expect(referencesOf(about('Patient/p1/_history/3'), 'subject')).toEqual(['Patient/p1']);
    expect(referencesOf(remote, 'subject')).toEqual(['https://other.example/fhir/Patient/p1']);
  });

  it("puts a resource in a local patient's compartment only for a relative reference", () => {
    expect(patientCompartmentOf(local)).toBe('p1');
    expect(patientCompartmentOf(about('Patient/p1/_history/2'))).toBe('p1');
    expect(patientCompartmentOf(remote)).toBeNull();
  });
});
