import { describe, expect, it } from 'vitest';
import { parseBundle, parseBundleEntry, versionOfETag } from './bundle.js';
import { HlError } from '../kernel/index.js';

const base = 'https://node.example/fhir';
const patient = { resourceType: 'Patient', id: 'p1' };
const patchBinary = (ops: unknown) => ({ resourceType: 'Binary', contentType: 'application/json-patch+json', data: Buffer.from(JSON.stringify(ops)).toString('base64') });

describe('parseBundleEntry', () => {
  it.each([
    ['a POST', { resource: patient, request: { method: 'POST', url: 'Patient' } }, { method: 'POST', resourceType: 'Patient' }],
    ['a read', { request: { method: 'GET', url: 'Patient/p1' } }, { method: 'GET', resourceType: 'Patient', id: 'p1' }],
    ['a vread', { request: { method: 'GET', url: '/Patient/p1/_history/3' } }, { method: 'GET', id: 'p1', versionId: '3' }],
    ['an absolute url under the base', { request: { method: 'DELETE', url: `${base}/Patient/p1` } }, { method: 'DELETE', id: 'p1' }],
    ['a PUT with If-Match', { resource: patient, request: { method: 'PUT', url: 'Patient/p1', ifMatch: 'W/"2"' } }, { id: 'p1', ifMatch: '2' }],
  ])('reads %s', (_name, raw, want) => {
    const parsed = parseBundleEntry(raw, 4, base);
    expect(parsed.ok).toBe(true);
    expect(parsed.ok && parsed.entry).toMatchObject({ index: 4, ...want });
  });

  it('reads the searches of conditional urls and of ifNoneExist, with or without a leading Type?', () => {
    const put = parseBundleEntry({ resource: { resourceType: 'Patient' }, request: { method: 'PUT', url: 'Patient?identifier=http://x.org/mrn|12' } }, 0);
    expect(put.ok && put.entry.query?.get('identifier')).toBe('http://x.org/mrn|12');
    for (const ifNoneExist of ['identifier=a|b', 'Patient?identifier=a|b', '?identifier=a|b']) {
      const post = parseBundleEntry({ resource: { resourceType: 'Patient' }, request: { method: 'POST', url: 'Patient', ifNoneExist } }, 0);
      expect(post.ok && post.entry.ifNoneExist?.get('identifier')).toBe('a|b');
    }
  });

  it('decodes the JSON Patch of a PATCH entry', () => {
    const ops = [{ op: 'add', path: '/active', value: true }];
    const parsed = parseBundleEntry({ resource: patchBinary(ops), request: { method: 'PATCH', url: 'Patient/p1' } }, 0);
    expect(parsed.ok && parsed.entry.patch).toEqual(ops);
  });

  it.each([
    ['no request', { resource: patient }, 'Bundle.entry[2].request'],
    ['no url', { request: { method: 'GET' } }, 'Bundle.entry[2].request.url'],
    ['an unknown method', { request: { method: 'OPTIONS', url: 'Patient' } }, 'Bundle.entry[2].request.method'],
    ['an unknown type', { request: { method: 'GET', url: 'Starship/1' } }, 'Bundle.entry[2].request.url'],
    ['a bad id', { request: { method: 'GET', url: 'Patient/a$b' } }, 'Bundle.entry[2].request.url'],
    ['an id and a search', { request: { method: 'DELETE', url: 'Patient/p1?name=x' } }, 'Bundle.entry[2].request.url'],
    ['another server', { request: { method: 'GET', url: 'https://other.example/fhir/Patient/p1' } }, 'Bundle.entry[2].request.url'],
    ['an operation', { request: { method: 'GET', url: 'Patient/p1/$everything' } }, 'Bundle.entry[2].request.url'],
    ['a conditional delete with an empty search', { request: { method: 'DELETE', url: 'Patient?' } }, 'Bundle.entry[2].request.url'],
    ['a POST with no resource', { request: { method: 'POST', url: 'Patient' } }, 'Bundle.entry[2].resource'],
    ['a POST of another type', { resource: patient, request: { method: 'POST', url: 'Observation' } }, 'Bundle.entry[2].resource.resourceType'],
    ['a PUT whose id differs from the url', { resource: patient, request: { method: 'PUT', url: 'Patient/p2' } }, 'Bundle.entry[2].resource.id'],
    ['a PATCH of a Parameters', { resource: { resourceType: 'Parameters' }, request: { method: 'PATCH', url: 'Patient/p1' } }, 'Bundle.entry[2].resource'],
    ['a PATCH of another content type', { resource: { ...patchBinary([]), contentType: 'application/json' }, request: { method: 'PATCH', url: 'Patient/p1' } }, 'Bundle.entry[2].resource.contentType'],
    ['a PATCH of no operations', { resource: patchBinary([]), request: { method: 'PATCH', url: 'Patient/p1' } }, 'Bundle.entry[2].resource.data'],
    ['an ifMatch that is no ETag', { request: { method: 'DELETE', url: 'Patient/p1', ifMatch: '2' } }, 'Bundle.entry[2].request.ifMatch'],
    ['an ifMatch on a GET', { request: { method: 'GET', url: 'Patient/p1', ifMatch: 'W/"2"' } }, 'Bundle.entry[2].request.ifMatch'],
    ['an empty ifNoneExist', { resource: patient, request: { method: 'POST', url: 'Patient', ifNoneExist: '' } }, 'Bundle.entry[2].request.ifNoneExist'],
  ])('refuses %s, naming where', (_name, raw, expression) => {
    const parsed = parseBundleEntry(raw, 2, base);
    expect(parsed.ok).toBe(false);
    expect(!parsed.ok && parsed.issues.map((i) => i.expression)).toContain(expression);
  });

  it('never puts the url or the condition into a message', () => {
    const parsed = parseBundleEntry({ request: { method: 'PUT', url: 'Patient?identifier=MRN-77431' } }, 0);
    expect(JSON.stringify(parsed)).not.toContain('MRN-77431');
  });
});

describe('parseBundle', () => {
  it('reads a transaction entry by entry, keeping malformed entries as such', () => {
    const { type, entries } = parseBundle({ resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'GET', url: 'Patient' } }, {}] });
    expect(type).toBe('transaction');
    expect(entries.map((e) => e.ok)).toEqual([true, false]);
  });

  it.each([
    ['not a Bundle', { resourceType: 'Patient' }],
    ['a collection', { resourceType: 'Bundle', type: 'collection', entry: [] }],
    ['entry not a list', { resourceType: 'Bundle', type: 'batch', entry: {} }],
  ])('refuses %s', (_name, body) => {
    expect(() => parseBundle(body)).toThrow(HlError);
  });
});

describe('versionOfETag', () => {
  it('reads weak and strong ETags and refuses anything else', () => {
    expect(versionOfETag('W/"12"')).toBe('12');
    expect(versionOfETag(' "3" ')).toBe('3');
    expect(() => versionOfETag('12')).toThrow(/If-Match must be an ETag/);
    expect(() => versionOfETag('W/"a b"', 'request.ifMatch')).toThrow(/request.ifMatch/);
  });
});
