import { describe, expect, it } from 'vitest';
import { checkElementNames, subsetResource, subsettedTag } from './summary.js';

const observation = {
  resourceType: 'Observation',
  id: 'o1',
  meta: { versionId: '1', lastUpdated: '2024-01-01T00:00:00.000Z', tag: [{ system: 'urn:x', code: 'keep' }] },
  text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">x</div>' },
  status: 'final',
  category: [{ text: 'vital-signs' }],
  code: { text: 'Blood pressure' },
  subject: { reference: 'Patient/p1' },
  effectiveDateTime: '2024-01-01',
  _effectiveDateTime: { extension: [{ url: 'urn:e', valueString: 'x' }] },
  note: [{ text: 'a note' }],
  component: [
    { code: { text: 'systolic' }, valueQuantity: { value: 120 }, interpretation: [{ text: 'high' }] },
    { code: { text: 'diastolic' }, valueQuantity: { value: 80 } },
  ],
  referenceRange: [{ text: 'normal' }],
};

const tagsOf = (r: Record<string, unknown>) => (r.meta as { tag: unknown[] }).tag;

describe('_summary and _elements (search.html#summary)', () => {
  it('true keeps the isSummary elements at every backbone level, and tags SUBSETTED', () => {
    const s = subsetResource(observation, 'true', null);
    expect(Object.keys(s).sort()).toEqual(['code', 'component', 'effectiveDateTime', '_effectiveDateTime', 'id', 'meta', 'resourceType', 'status', 'subject'].sort());
    expect(s.component).toEqual([
      { code: { text: 'systolic' }, valueQuantity: { value: 120 } },
      { code: { text: 'diastolic' }, valueQuantity: { value: 80 } },
    ]);
    expect(tagsOf(s)).toEqual([{ system: 'urn:x', code: 'keep' }, subsettedTag]);
  });

  it('text keeps text, id, meta and the mandatory elements; data drops only text', () => {
    expect(Object.keys(subsetResource(observation, 'text', null)).sort()).toEqual(['code', 'id', 'meta', 'resourceType', 'status', 'text']);
    const data = subsetResource(observation, 'data', null);
    expect(data.text).toBeUndefined();
    expect(Object.keys(data)).toHaveLength(Object.keys(observation).length - 1);
  });

  it('_elements keeps those elements (a choice by its base name) plus id, meta and mandatory ones', () => {
    const s = subsetResource(observation, 'false', ['effective', 'note']);
    expect(Object.keys(s).sort()).toEqual(['_effectiveDateTime', 'code', 'effectiveDateTime', 'id', 'meta', 'note', 'resourceType', 'status']);
    expect(tagsOf(s)).toContainEqual(subsettedTag);
  });

  it('false and count give the resource itself, untagged', () => {
    expect(subsetResource(observation, 'false', null)).toBe(observation);
    expect(subsetResource(observation, 'count', null)).toBe(observation);
  });

  it('tags once even when the stored resource already carries the tag', () => {
    const tagged = { ...observation, meta: { tag: [subsettedTag] } };
    expect(tagsOf(subsetResource(tagged, 'data', null))).toHaveLength(1);
  });

  it('refuses element names the type does not have', () => {
    expect(() => checkElementNames('Observation', ['status', 'valueQuantity', 'value'])).not.toThrow();
    expect(() => checkElementNames('Observation', ['status', 'shoeSize'])).toThrow(/_elements: "shoeSize" is not an element of Observation/);
    expect(() => checkElementNames('Patient', ['name.family'])).toThrow(/not an element of Patient/);
  });
});
