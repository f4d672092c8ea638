/**
 * A real FHIR client library (fhir-kit-client) against a node: capability, create, read, vread, update,
 * JSON Patch, search with paging, transaction, history and delete, as an integrating EHR would call them.
 */
import { Client } from 'fhir-kit-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initNode, issueAdminToken, startNode, type RunningNode } from '../src/node.js';
import { tempDir } from './helpers.js';

const work = tempDir('hl-client-');
let running: RunningNode;
let client: InstanceType<typeof Client>;

beforeAll(async () => {
  await initNode({ org: 'Client Test Hospital', dataDir: work.path });
  running = await startNode({ dataDir: work.path, port: 0 });
  client = new Client({ baseUrl: `${running.url}/fhir`, bearerToken: await issueAdminToken({ dataDir: work.path }) });
});

afterAll(async () => {
  await running?.close();
  work.cleanup();
});

describe('fhir-kit-client against a Healthledger node', () => {
  it('reads the CapabilityStatement', async () => {
    const cs = (await client.capabilityStatement()) as any;
    expect(cs.fhirVersion).toBe('4.0.1');
  });

  it('runs create, read, vread, update, patch, history and delete', async () => {
    const created = (await client.create({
      resourceType: 'Patient',
      body: { resourceType: 'Patient', name: [{ family: 'Okonkwo', given: ['Adaeze'] }], gender: 'female', birthDate: '1984-09-30' },
    })) as any;
    expect(created.meta.versionId).toBe('1');
    const read = (await client.read({ resourceType: 'Patient', id: created.id })) as any;
    expect(read.name[0].family).toBe('Okonkwo');
    const updated = (await client.update({ resourceType: 'Patient', id: created.id, body: { ...read, active: true } })) as any;
    expect(updated.meta.versionId).toBe('2');
    const patched = (await client.patch({ resourceType: 'Patient', id: created.id, jsonPatch: [{ op: 'replace', path: '/active', value: false }] })) as any;
    expect(patched).toMatchObject({ active: false, meta: { versionId: '3' } });
    const v1 = (await client.vread({ resourceType: 'Patient', id: created.id, version: '1' })) as any;
    expect(v1.active).toBeUndefined();
    const history = (await client.history({ resourceType: 'Patient', id: created.id })) as any;
    expect(history.entry).toHaveLength(3);
    await client.delete({ resourceType: 'Patient', id: created.id });
    await expect(client.read({ resourceType: 'Patient', id: created.id })).rejects.toMatchObject({ response: { status: 410 } });
  });

  it('searches and follows next pages to the end', async () => {
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: Array.from({ length: 7 }, (_, i) => ({
        resource: { resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] }, valueQuantity: { value: 60 + i } },
        request: { method: 'POST', url: 'Observation' },
      })),
    };
    const response = (await client.transaction({ body: bundle })) as any;
    expect(response.type).toBe('transaction-response');
    let page = (await client.search({ resourceType: 'Observation', searchParams: { code: 'http://loinc.org|8867-4', _count: 3 } })) as any;
    expect(page.total).toBe(7);
    const seen: string[] = page.entry.map((e: any) => e.resource.id);
    while (client.nextPage({ bundle: page })) {
      page = await client.nextPage({ bundle: page });
      seen.push(...page.entry.map((e: any) => e.resource.id));
    }
    expect(new Set(seen).size).toBe(7);
  });

  it('surfaces a 422 OperationOutcome for an invalid resource', async () => {
    await expect(client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', gender: 'unknown-gender' } })).rejects.toMatchObject({
      response: { status: 422, data: { resourceType: 'OperationOutcome' } },
    });
  });
});
