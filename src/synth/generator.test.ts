import { describe, expect, it } from 'vitest';
import { generatePatientBundle } from './index.js';

function references(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) value.forEach((v) => references(v, out));
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'reference' && typeof v === 'string') out.push(v);
      else references(v, out);
    }
  }
  return out;
}

describe('synthetic patients', () => {
  it('are deterministic: the same seed gives the same bytes, another seed other patients', () => {
    expect(JSON.stringify(generatePatientBundle(7, 3))).toBe(JSON.stringify(generatePatientBundle(7, 3)));
    expect(JSON.stringify(generatePatientBundle(8, 3))).not.toBe(JSON.stringify(generatePatientBundle(7, 3)));
    expect(JSON.stringify(generatePatientBundle(7, 4))).not.toBe(JSON.stringify(generatePatientBundle(7, 3)));
  });

  it('cover every kind of record the issue names across 50 patients', () => {
    const kinds = new Set<string>();
    for (let i = 1; i <= 50; i++) for (const e of generatePatientBundle(1, i).entry) kinds.add(e.resource.resourceType);
    for (const k of ['Patient', 'Encounter', 'Condition', 'Observation', 'MedicationRequest', 'AllergyIntolerance', 'Immunization', 'Procedure', 'Claim', 'Coverage', 'Organization']) {
      expect(kinds).toContain(k);
    }
  });

  it('are transaction bundles whose every reference resolves inside the bundle', () => {
    for (let i = 1; i <= 20; i++) {
      const b = generatePatientBundle(3, i);
      expect(b).toMatchObject({ resourceType: 'Bundle', type: 'transaction' });
      const urls = new Set(b.entry.map((e) => e.fullUrl));
      expect(urls.size).toBe(b.entry.length);
      for (const ref of references(b.entry.map((e) => e.resource))) expect(urls).toContain(ref);
      expect(b.entry.filter((e) => e.resource.resourceType === 'Patient')).toHaveLength(1);
    }
  });

  it('use LOINC for observations, RxNorm for medications and carry no clock-dependent value', () => {
    const b = generatePatientBundle(5, 1);
    const obs = b.entry.filter((e) => e.resource.resourceType === 'Observation').map((e) => e.resource as unknown as { code: { coding: { system: string }[] } });
    expect(obs.length).toBeGreaterThan(0);
    expect(obs.every((o) => o.code.coding[0]!.system === 'http://loinc.org')).toBe(true);
    const text = JSON.stringify(b);
    for (const m of text.matchAll(/"(\d{4})-\d{2}-\d{2}/g)) expect(Number(m[1])).toBeLessThanOrEqual(2026);
  });
});
