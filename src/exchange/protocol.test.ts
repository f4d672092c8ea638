/**
 * The exchange protocol's parsers on anything a peer might send: a malformed request or answer is an
 * `invalid` HlError naming the problem, never another exception, and a well-formed one parses as sent.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HlError } from '../kernel/index.js';
import { parseEverythingPackage, parseEverythingRequest } from './protocol.js';

const patient = 'pat-abcdefghijklmnopqrstuvwxyz';

function onlyInvalid(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(HlError);
    expect((err as HlError).code).toBe('invalid');
  }
}

describe('parseEverythingRequest', () => {
  it('takes a well-formed request as sent', () => {
    expect(parseEverythingRequest({ patient, purpose: 'ETREAT', reason: 'unconscious', practitioner: 'dr-a', minTreeSize: 12 })).toEqual({
      patient,
      purpose: 'ETREAT',
      reason: 'unconscious',
      practitioner: 'dr-a',
      minTreeSize: 12,
    });
  });

  it('takes the roles and the app of who asks', () => {
    expect(parseEverythingRequest({ patient, purpose: 'TREAT', practitioner: 'dr-a', roles: ['clinician'], app: 'ehr.1', minTreeSize: 0 })).toEqual({
      patient,
      purpose: 'TREAT',
      practitioner: 'dr-a',
      roles: ['clinician'],
      app: 'ehr.1',
      minTreeSize: 0,
    });
  });

  it.each([
    [null, /JSON object/],
    [[], /JSON object/],
    [{ purpose: 'TREAT', minTreeSize: 0 }, /patient/],
    [{ patient: 'Patient/1', purpose: 'TREAT', minTreeSize: 0 }, /patient/],
    [{ patient, purpose: 'FUN', minTreeSize: 0 }, /purpose/],
    [{ patient, purpose: 'TREAT', reason: '', minTreeSize: 0 }, /reason/],
    [{ patient, purpose: 'TREAT', practitioner: 'a b', minTreeSize: 0 }, /practitioner/],
    [{ patient, purpose: 'TREAT', minTreeSize: -1 }, /minTreeSize/],
    [{ patient, purpose: 'TREAT', roles: 'auditor', minTreeSize: 0 }, /roles/],
    [{ patient, purpose: 'TREAT', roles: ['Auditor'], minTreeSize: 0 }, /roles/],
    [{ patient, purpose: 'TREAT', app: '', minTreeSize: 0 }, /app/],
    [{ patient, purpose: 'TREAT', minTreeSize: 1.5 }, /minTreeSize/],
  ])('refuses %j naming the problem', (body, message) => {
    expect(() => parseEverythingRequest(body)).toThrow(message);
  });

  it('never throws anything but invalid on arbitrary JSON', () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => onlyInvalid(() => parseEverythingRequest(v))), { numRuns: 500 });
  });
});

describe('parseEverythingPackage', () => {
  const good = {
    custodian: 'city-lab',
    checkpoint: 'origin\n1\nAAAA\n\n— x AAAA\n',
    treeSize: 5,
    pseudonym: 'psn-1',
    leaves: [{ leafIndex: 3, leaf: 'eyJ9', proof: ['AAAA'] }],
    entries: [{ content: 'e30=', salt: 'AAAA', leafIndex: 3 }],
  };

  it('takes a well-formed answer', () => {
    expect(parseEverythingPackage(good)).toEqual(good);
  });

  it.each([
    [{ ...good, treeSize: 0 }, /treeSize/],
    [{ ...good, leaves: [{ ...good.leaves[0], proof: 'AAAA' }] }, /leaves\[0\]\.proof/],
    [{ ...good, leaves: [{ ...good.leaves[0], leaf: 'not base64!' }] }, /leaves\[0\]\.leaf/],
    [{ ...good, entries: [{ ...good.entries[0], leafIndex: -1 }] }, /entries\[0\]\.leafIndex/],
    [{ ...good, entries: 'x' }, /entries/],
  ])('refuses a malformed answer naming the field', (body, message) => {
    expect(() => parseEverythingPackage(body)).toThrow(message);
  });

  it('never throws anything but invalid on arbitrary or mutated JSON', () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => onlyInvalid(() => parseEverythingPackage(v))), { numRuns: 500 });
    const keys = Object.keys(good) as (keyof typeof good)[];
    fc.assert(
      fc.property(fc.constantFrom(...keys), fc.jsonValue(), (k, v) => onlyInvalid(() => parseEverythingPackage({ ...good, [k]: v }))),
      { numRuns: 500 },
    );
  });
});
