import { describe, expect, it } from 'vitest';
import { validateResource } from '../fhir/index.js';
import { accessEntryOf, buildAuditEvent, maxAuditedResources, type AuditInput } from './audit-event.js';

const base: AuditInput = {
  recorded: '2026-11-24T10:00:00.000Z',
  action: 'read',
  outcome: 'permit',
  reason: 'consent',
  purpose: 'TREAT',
  custodian: 'harbor-hospital',
  requester: { org: 'lab-one', user: 'dr-ng', client: 'lab-ehr' },
  patient: '0193a5c8-7d2e-7000-8000-000000000001',
  resources: ['Observation/0193a5c8-7d2e-7000-8000-0000000000aa/_history/2', 'Condition/0193a5c8-7d2e-7000-8000-0000000000bb/_history/1'],
};

describe('buildAuditEvent (IHE BALP)', () => {
  it('is a valid R4 AuditEvent for each kind of interaction and outcome', () => {
    for (const action of ['read', 'vread', 'search', 'history', 'create', 'update', 'delete', 'export', 'everything', 'proof', 'erase'] as const) {
      for (const outcome of ['permit', 'deny'] as const) {
        const event = buildAuditEvent({ ...base, action, outcome, ...(action === 'search' ? { query: 'code=http://loinc.org|1234-5' } : {}) });
        expect(validateResource(event), `${action} ${outcome}`).toEqual([]);
      }
    }
  });

  it('names the client, the server, the user, the patient and each resource in their BALP roles', () => {
    const event = buildAuditEvent({ ...base, emergency: 'ef'.repeat(32), purpose: 'ETREAT' });
    expect(event).toMatchObject({ action: 'R', outcome: '0', subtype: [{ code: 'read' }], purposeOfEvent: [{ coding: [{ code: 'ETREAT' }] }] });
    const roles = event.agent.map((a) => a.type?.coding?.[0]?.code);
    expect(roles).toEqual(['110153', '110152', 'humanuser']);
    expect(event.agent[0]!.who?.identifier?.value).toBe('lab-one');
    expect(event.agent[0]!.altId).toBe('lab-ehr');
    expect(event.agent[2]).toMatchObject({ requestor: true, who: { identifier: { value: 'dr-ng' } } });
    const entities = event.entity!;
    expect(entities[0]).toMatchObject({ what: { reference: `Patient/${base.patient}` }, role: { code: '1' } });
    expect(entities.slice(1, 3).map((e) => [e.what?.reference, e.role?.code])).toEqual(base.resources!.map((r) => [r, '4']));
    expect(entities[3]!.what?.identifier?.value).toBe('ef'.repeat(32));
  });

  it('records a denial as outcome 4 with its reason, and a search query as base64 in role 24', () => {
    const event = buildAuditEvent({ ...base, action: 'search', outcome: 'deny', reason: 'no consent permits HRESCH access by lab-one', query: 'category=laboratory', resources: [] });
    expect(event).toMatchObject({ action: 'E', outcome: '4', outcomeDesc: 'no consent permits HRESCH access by lab-one' });
    const q = event.entity!.find((e) => e.role?.code === '24')!;
    expect(Buffer.from(q.query!, 'base64').toString('utf8')).toBe('category=laboratory');
  });

  it(`lists at most ${maxAuditedResources} resources`, () => {
    const resources = Array.from({ length: maxAuditedResources + 5 }, (_, i) => `Observation/o${i}/_history/1`);
    const event = buildAuditEvent({ ...base, resources });
    expect(event.entity!.filter((e) => e.role?.code === '4')).toHaveLength(maxAuditedResources);
  });
});

describe('accessEntryOf', () => {
  it('carries pseudonyms, the resource types and the exact count, never the local ids or user name', () => {
    const entry = accessEntryOf(base, { patient: 'pat-abcdefghijklmnopqrstuvwxyz', user: 'usr-0123456789abcdef', event: 'cd'.repeat(32) });
    expect(entry).toEqual({
      at: base.recorded,
      patient: 'pat-abcdefghijklmnopqrstuvwxyz',
      org: 'lab-one',
      user: 'usr-0123456789abcdef',
      purpose: 'TREAT',
      action: 'read',
      outcome: 'permit',
      classes: ['Condition', 'Observation'],
      count: 2,
      event: 'cd'.repeat(32),
    });
    const text = JSON.stringify(entry);
    expect(text).not.toContain(base.patient);
    expect(text).not.toContain('dr-ng');
    expect(text).not.toContain('0000000000aa');
  });
});
