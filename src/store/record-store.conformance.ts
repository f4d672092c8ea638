/**
 * The one conformance suite every `RecordStore` backend runs (STYLE.md "Tests"; as honojs/hono
 * `src/router/common.case.test.ts` and trillian `storage/testonly/`). Backend tests call
 * `runRecordStoreConformance(name, openStore)`; checks that need the backend's raw bytes (tampering, residue
 * in files) live beside each backend. Test-only: nothing in `src/` imports this file.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HlError, fixedClock, fromUtf8, type Clock } from '../kernel/index.js';
import { canonicalBytes, kekIdOf, unwrapKey } from '../crypto/index.js';
import type { BlindIndexEntry } from './blind-index.js';
import { generateSalt } from './commitment.js';
import type { RecordStore, StoredVersion, VersionWrite } from './record-store.js';

/** One empty database of a backend, opened as a store any number of times. */
export interface RecordStoreHarness {
  /** Opens a store over this harness's database (a second open sees the same data). */
  open(kek: Uint8Array, options?: { clock?: Clock }): Promise<RecordStore>;
  /** Closes what `open` opened and deletes the database. */
  close(): Promise<void>;
  /**
   * Runs one SQL statement on the database directly, as an operator (or attacker) with database access
   * would, and returns its rows (none for a statement that returns no data). The backends share table and
   * column names (`store_dek (owner, wrapped, kek_id)`, `store_meta (key, value)`, `record_version`...).
   */
  query(sql: string): Promise<Record<string, unknown>[]>;
}

/** Awaits `promise` and returns the HlError it rejects with (fails the test otherwise). */
export async function rejectionOf(promise: Promise<unknown>): Promise<HlError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(HlError);
    return err as HlError;
  }
  throw new Error('expected an HlError rejection, the promise resolved');
}

const startMs = Date.UTC(2025, 0, 1);

/** Builds version writes whose content is the canonical JSON of the version, meta included. */
export class VersionFactory {
  private tick = 0;

  make(o: {
    resourceType?: string;
    id: string;
    versionId?: string;
    patient?: string | null;
    body?: Record<string, unknown>;
    deleted?: boolean;
    status?: 'pending' | 'committed';
    txId?: string | null;
    index?: BlindIndexEntry[];
    lastUpdated?: string;
  }): VersionWrite {
    const resourceType = o.resourceType ?? 'Observation';
    const versionId = o.versionId ?? '1';
    const lastUpdated = o.lastUpdated ?? new Date(startMs + this.tick++ * 1000).toISOString();
    const meta = { versionId, lastUpdated };
    const resource = o.deleted ? { resourceType, id: o.id, meta } : { ...o.body, resourceType, id: o.id, meta };
    return {
      resourceType,
      id: o.id,
      versionId,
      lastUpdated,
      deleted: o.deleted ?? false,
      patient: o.patient === undefined ? 'pat1' : o.patient,
      content: canonicalBytes(resource),
      salt: generateSalt(),
      status: o.status ?? 'committed',
      txId: o.txId === undefined ? `tx-${randomUUID()}` : o.txId,
      index: o.index ?? [],
    };
  }
}

function expectSameVersion(actual: StoredVersion, expected: VersionWrite): void {
  expect({ ...actual, content: fromUtf8(actual.content), salt: Buffer.from(actual.salt).toString('hex') }).toEqual({
    resourceType: expected.resourceType,
    id: expected.id,
    versionId: expected.versionId,
    lastUpdated: expected.lastUpdated,
    deleted: expected.deleted,
    patient: expected.patient,
    content: fromUtf8(expected.content),
    salt: Buffer.from(expected.salt).toString('hex'),
    status: 'committed',
    txId: expected.txId,
  });
}

const ids = (page: { versions: StoredVersion[] }): string[] => page.versions.map((v) => `${v.resourceType}/${v.id}/${v.versionId}`);

/** What a backend promises beyond the common contract. */
export interface RecordStoreTraits {
  /**
   * Whether an erasure purges storage-level residue (`ErasureReport.residuePurged`): true for SQLite
   * (secure_delete + WAL truncation), false for PostgreSQL, whose dead tuples and WAL no client can purge.
   * Default true.
   */
  purgesResidue?: boolean;
}

/** Registers the conformance suite for one backend. */
export function runRecordStoreConformance(
  name: string,
  openStore: () => Promise<RecordStoreHarness>,
  traits: RecordStoreTraits = {},
): void {
  describe(`RecordStore conformance: ${name}`, () => {
    let harness: RecordStoreHarness;
    let kek: Uint8Array;
    let store: RecordStore;
    let f: VersionFactory;

    beforeEach(async () => {
      harness = await openStore();
      kek = new Uint8Array(randomBytes(32));
      store = await harness.open(kek);
      f = new VersionFactory();
    });
    afterEach(async () => {
      await harness?.close(); // undefined when a backend could not start (its own error fails the test)
    });

    describe('versions', () => {
      it('round-trips a version: content bytes, salt and metadata come back exactly', async () => {
        const v = f.make({ id: 'o1', body: { status: 'final', note: [{ text: 'Grüße, 東京 😀' }] } });
        await store.writeVersions([v]);
        expectSameVersion(await store.readVersion('Observation', 'o1'), v);
        expectSameVersion(await store.readVersion('Observation', 'o1', '1'), v);
      });

      it('reads the newest committed version without a versionId, and any version with one (vread)', async () => {
        const v1 = f.make({ id: 'o1', versionId: '1', body: { status: 'preliminary' } });
        const v2 = f.make({ id: 'o1', versionId: '2', body: { status: 'final' } });
        await store.writeVersions([v1]);
        await store.writeVersions([v2]);
        expectSameVersion(await store.readVersion('Observation', 'o1'), v2);
        expectSameVersion(await store.readVersion('Observation', 'o1', '1'), v1);
        expectSameVersion(await store.readVersion('Observation', 'o1', '2'), v2);
      });

      it('writes many versions of many patients and types in one call', async () => {
        const batch = [
          f.make({ resourceType: 'Patient', id: 'p1', patient: 'p1' }),
          f.make({ resourceType: 'Patient', id: 'p2', patient: 'p2' }),
          f.make({ id: 'o1', patient: 'p1' }),
          f.make({ id: 'o1', versionId: '2', patient: 'p1' }),
          f.make({ resourceType: 'Organization', id: 'org1', patient: null }),
        ];
        await store.writeVersions(batch);
        expectSameVersion(await store.readVersion('Patient', 'p2'), batch[1]!);
        expectSameVersion(await store.readVersion('Observation', 'o1'), batch[3]!);
        expectSameVersion(await store.readVersion('Organization', 'org1'), batch[4]!);
      });

      it('returns a deleted version as current with deleted: true, and keeps earlier versions readable', async () => {
        const v1 = f.make({ id: 'o1', index: [{ param: 'code', kind: 'token', value: 'x' }] });
        const v2 = f.make({ id: 'o1', versionId: '2', deleted: true });
        await store.writeVersions([v1]);
        await store.writeVersions([v2]);
        const current = await store.readVersion('Observation', 'o1');
        expect(current.deleted).toBe(true);
        expectSameVersion(current, v2);
        expectSameVersion(await store.readVersion('Observation', 'o1', '1'), v1);
        expect(await store.findByIndex('Observation', 'code', 'token', 'x')).toEqual([]);
        expect(await store.currentIds('Observation')).toEqual([]);
      });

      it('throws not-found for an unknown resource, version or type', async () => {
        await store.writeVersions([f.make({ id: 'o1' })]);
        expect((await rejectionOf(store.readVersion('Observation', 'nope'))).code).toBe('not-found');
        expect((await rejectionOf(store.readVersion('Observation', 'o1', '2'))).code).toBe('not-found');
        expect((await rejectionOf(store.readVersion('Condition', 'o1'))).code).toBe('not-found');
      });

      it('rejects a duplicate version with conflict and rolls back the whole batch', async () => {
        await store.writeVersions([f.make({ id: 'o1', index: [{ param: 'code', kind: 'token', value: 'old' }] })]);
        const batch = [
          f.make({ resourceType: 'Patient', id: 'newp', patient: 'newp', index: [{ param: 'family', kind: 'string', value: 'Zed' }] }),
          f.make({ id: 'o2', patient: 'newp' }),
          f.make({ id: 'o1', versionId: '1' }),
        ];
        const err = await rejectionOf(store.writeVersions(batch));
        expect(err.code).toBe('conflict');
        expect(err.message).toContain('Observation/o1/_history/1');
        expect((await rejectionOf(store.readVersion('Patient', 'newp'))).code).toBe('not-found');
        expect((await rejectionOf(store.readVersion('Observation', 'o2'))).code).toBe('not-found');
        expect(await store.findByIndex('Patient', 'family', 'string', 'zed')).toEqual([]);
        expect((await store.historySystem()).versions).toHaveLength(1);
        // The patient's first write failed after its data key was made; a retry still works, durably.
        const retry = f.make({ id: 'o2', patient: 'newp' });
        await store.writeVersions([retry]);
        expectSameVersion(await (await harness.open(kek)).readVersion('Observation', 'o2'), retry);
      });

      it('rejects invalid writes, listing every issue by expression and never by value, and stores nothing', async () => {
        const good = f.make({ id: 'ok' });
        const bad: VersionWrite = {
          ...f.make({ id: 'o1' }),
          id: 'not an id!',
          salt: new Uint8Array(31),
          lastUpdated: '2025-13-01',
          index: [
            { param: 'birthdate', kind: 'date', value: 'Jan 27 1939' },
            { param: 'a|b', kind: 'token', value: 'x' },
          ],
        };
        const err = await rejectionOf(store.writeVersions([good, bad]));
        expect(err.code).toBe('invalid');
        expect(err.issues.map((i) => i.expression)).toEqual([
          'versions[1].id',
          'versions[1].lastUpdated',
          'versions[1].salt',
          'versions[1].index[0].value',
          'versions[1].index[1].param',
        ]);
        expect(JSON.stringify(err.issues) + err.message).not.toContain('1939');
        expect((await rejectionOf(store.readVersion('Observation', 'ok'))).code).toBe('not-found');
      });

      it('rejects index entries on a deleted version', async () => {
        const v = f.make({ id: 'o1', deleted: true });
        const err = await rejectionOf(store.writeVersions([{ ...v, index: [{ param: 'code', kind: 'token', value: 'x' }] }]));
        expect(err.issues.map((i) => i.expression)).toEqual(['versions[0].index']);
      });

      it('keeps resources outside any patient compartment (patient null) under the node-wide key', async () => {
        const org = f.make({ resourceType: 'Organization', id: 'org1', patient: null, body: { name: 'General Hospital' } });
        await store.writeVersions([org]);
        expectSameVersion(await store.readVersion('Organization', 'org1'), org);
        expect((await store.readVersion('Organization', 'org1')).patient).toBeNull();
      });
    });

    describe('pending versions (ledger commit protocol)', () => {
      it('keeps a pending version out of read, vread, history and search until markCommitted', async () => {
        const v1 = f.make({ id: 'o1', index: [{ param: 'code', kind: 'token', value: 'v1' }] });
        const v2 = f.make({ id: 'o1', versionId: '2', status: 'pending', txId: 'tx2', index: [{ param: 'code', kind: 'token', value: 'v2' }] });
        const n1 = f.make({ id: 'n1', status: 'pending', txId: 'tx2', index: [{ param: 'code', kind: 'token', value: 'v2' }] });
        await store.writeVersions([v1]);
        await store.writeVersions([v2, n1]);
        expectSameVersion(await store.readVersion('Observation', 'o1'), v1);
        expect((await rejectionOf(store.readVersion('Observation', 'o1', '2'))).code).toBe('not-found');
        expect((await rejectionOf(store.readVersion('Observation', 'n1'))).code).toBe('not-found');
        expect(ids(await store.historySystem())).toEqual(['Observation/o1/1']);
        expect(await store.findByIndex('Observation', 'code', 'token', 'v2')).toEqual([]);
        expect(await store.findByIndex('Observation', 'code', 'token', 'v1')).toEqual(['o1']);
        expect(await store.currentIds('Observation')).toEqual(['o1']);

        expect(await store.markCommitted(['tx2'])).toBe(2);
        expect(await store.markCommitted(['tx2'])).toBe(0);
        expectSameVersion(await store.readVersion('Observation', 'o1'), v2);
        expectSameVersion(await store.readVersion('Observation', 'n1'), n1);
        expect(ids(await store.historySystem())).toEqual(['Observation/n1/1', 'Observation/o1/2', 'Observation/o1/1']);
        expect(await store.findByIndex('Observation', 'code', 'token', 'v2')).toEqual(['n1', 'o1']);
        expect(await store.findByIndex('Observation', 'code', 'token', 'v1')).toEqual([]);
      });

      it('does not let a version committed after a newer one become current', async () => {
        const v2 = f.make({ id: 'o1', versionId: '2', status: 'pending', txId: 'tx2', index: [{ param: 'code', kind: 'token', value: 'two' }] });
        const v3 = f.make({ id: 'o1', versionId: '3', status: 'pending', txId: 'tx3', index: [{ param: 'code', kind: 'token', value: 'three' }] });
        await store.writeVersions([f.make({ id: 'o1' })]);
        await store.writeVersions([v2, v3]);
        await store.markCommitted(['tx3']);
        await store.markCommitted(['tx2']);
        expectSameVersion(await store.readVersion('Observation', 'o1'), v3);
        expect(await store.findByIndex('Observation', 'code', 'token', 'two')).toEqual([]);
        expect(await store.findByIndex('Observation', 'code', 'token', 'three')).toEqual(['o1']);
        expect(ids(await store.historyInstance('Observation', 'o1'))).toEqual(['Observation/o1/3', 'Observation/o1/2', 'Observation/o1/1']);
      });

      it('lists pending versions and drops them by tx id and by write time', async () => {
        const clock = fixedClock(1_000_000);
        const s = await harness.open(kek, { clock });
        await s.writeVersions([f.make({ id: 'a', status: 'pending', txId: 'txa', index: [{ param: 'code', kind: 'token', value: 'a' }] })]);
        clock.advance(10_000);
        await s.writeVersions([f.make({ id: 'b', status: 'pending', txId: 'txb' }), f.make({ id: 'c', status: 'pending', txId: null })]);
        expect(await s.pendingVersions()).toEqual([
          { resourceType: 'Observation', id: 'a', versionId: '1', txId: 'txa', writtenMs: 1_000_000 },
          { resourceType: 'Observation', id: 'b', versionId: '1', txId: 'txb', writtenMs: 1_010_000 },
          { resourceType: 'Observation', id: 'c', versionId: '1', txId: null, writtenMs: 1_010_000 },
        ]);
        expect(await s.dropPending({ writtenBeforeMs: 1_005_000 })).toBe(1);
        expect(await s.dropPending({ txIds: ['txb', 'unknown'] })).toBe(1);
        expect((await s.pendingVersions()).map((p) => p.id)).toEqual(['c']);
        // A dropped version is gone: committing its tx later changes nothing, and its id can be written again.
        expect(await s.markCommitted(['txa'])).toBe(0);
        expect((await rejectionOf(s.readVersion('Observation', 'a'))).code).toBe('not-found');
        const again = f.make({ id: 'a' });
        await s.writeVersions([again]);
        expectSameVersion(await s.readVersion('Observation', 'a'), again);
        expect(await s.findByIndex('Observation', 'code', 'token', 'a')).toEqual([]);
      });
    });

    describe('history', () => {
      async function seed(): Promise<void> {
        await store.writeVersions([f.make({ id: 'o1' })]); // t0
        await store.writeVersions([f.make({ resourceType: 'Condition', id: 'c1' })]); // t1
        await store.writeVersions([f.make({ id: 'o1', versionId: '2' })]); // t2
        await store.writeVersions([f.make({ id: 'o2' })]); // t3
        await store.writeVersions([f.make({ id: 'o1', versionId: '3', deleted: true })]); // t4
      }

      it('lists instance, type and system history newest first, deleted versions included', async () => {
        await seed();
        expect(ids(await store.historyInstance('Observation', 'o1'))).toEqual(['Observation/o1/3', 'Observation/o1/2', 'Observation/o1/1']);
        expect(ids(await store.historyType('Observation'))).toEqual([
          'Observation/o1/3',
          'Observation/o2/1',
          'Observation/o1/2',
          'Observation/o1/1',
        ]);
        expect(ids(await store.historySystem())).toEqual([
          'Observation/o1/3',
          'Observation/o2/1',
          'Observation/o1/2',
          'Condition/c1/1',
          'Observation/o1/1',
        ]);
        expect((await store.historyInstance('Observation', 'o1')).versions[0]!.deleted).toBe(true);
        expect((await store.historyInstance('Observation', 'none')).versions).toEqual([]);
      });

      it('pages by limit and offset, and by cursor without gaps or repeats', async () => {
        await seed();
        const first = await store.historySystem({ limit: 2 });
        expect(ids(first)).toEqual(['Observation/o1/3', 'Observation/o2/1']);
        expect(ids(await store.historySystem({ limit: 2, offset: 2 }))).toEqual(['Observation/o1/2', 'Condition/c1/1']);
        const seen: string[] = [];
        let cursor: string | null = null;
        let pages = 0;
        do {
          const page: Awaited<ReturnType<RecordStore['historySystem']>> = await store.historySystem(cursor === null ? { limit: 2 } : { limit: 2, cursor });
          seen.push(...ids(page));
          cursor = page.nextCursor;
          pages++;
        } while (cursor !== null);
        expect(pages).toBe(3);
        expect(seen).toEqual(ids(await store.historySystem()));
        // A write after the first page does not shift the cursor's later pages.
        await store.writeVersions([f.make({ id: 'o9' })]);
        expect(ids(await store.historySystem({ limit: 2, cursor: first.nextCursor! }))).toEqual(['Observation/o1/2', 'Condition/c1/1']);
        expect((await store.historyType('Observation', { limit: 4 })).nextCursor).not.toBeNull();
        expect((await store.historyInstance('Observation', 'o1', { limit: 3 })).nextCursor).toBeNull();
      });

      it('filters by since (_since): versions at or after the instant', async () => {
        await seed();
        const t2 = new Date(startMs + 2000).toISOString();
        expect(ids(await store.historySystem({ since: t2 }))).toEqual(['Observation/o1/3', 'Observation/o2/1', 'Observation/o1/2']);
        expect(ids(await store.historyInstance('Observation', 'o1', { since: '2025-01-01T01:00:02+01:00' }))).toEqual([
          'Observation/o1/3',
          'Observation/o1/2',
        ]);
      });

      it('rejects a bad limit, offset, cursor or since', async () => {
        for (const options of [{ limit: 0 }, { limit: 1001 }, { offset: -1 }, { cursor: 'abc' }, { cursor: '0' }, { since: 'yesterday' }]) {
          expect((await rejectionOf(store.historySystem(options))).code).toBe('invalid');
        }
      });
    });

    describe('blind-index search', () => {
      async function seedPatients(): Promise<void> {
        const patient = (id: string, family: string, given: string, extra: BlindIndexEntry[] = []): VersionWrite =>
          f.make({
            resourceType: 'Patient',
            id,
            patient: id,
            index: [{ param: 'family', kind: 'string', value: family }, { param: 'given', kind: 'string', value: given }, ...extra],
          });
        await store.writeVersions([
          patient('p1', 'Müller', 'José', [
            { param: 'identifier', kind: 'token', value: 'http://hl7.org/fhir/sid/us-ssn|999-86-1255' },
            { param: 'identifier', kind: 'token', value: '999-86-1255' },
            { param: 'birthdate', kind: 'date', value: '1939-01-27' },
            { param: 'general-practitioner', kind: 'reference', value: 'Practitioner/dr1' },
          ]),
          patient('p2', 'Mullins', 'Joseph', [
            { param: 'birthdate', kind: 'date', value: '1939-02-03' },
            { param: 'identifier', kind: 'token', value: 'MRN-ABC' },
          ]),
          patient('p3', 'Smith', 'Ann', [{ param: 'birthdate', kind: 'date', value: '1940' }]),
          patient('p4', 'Wolfeschlegelsteinhausenbergerdorff', 'Hubert'),
        ]);
      }

      it('finds strings exactly, case- and accent-insensitively', async () => {
        await seedPatients();
        for (const q of ['Müller', 'muller', 'MULLER', 'Mu\u0308ller', '  müller ']) {
          expect(await store.findByIndex('Patient', 'family', 'string', q)).toEqual(['p1']);
        }
        expect(await store.findByIndex('Patient', 'given', 'string', 'JOSE')).toEqual(['p1']);
        expect(await store.findByIndex('Patient', 'family', 'string', 'mull')).toEqual([]);
      });

      it('finds string prefixes, and longer-than-cap prefixes as candidates', async () => {
        await seedPatients();
        expect(await store.findByIndex('Patient', 'family', 'prefix', 'mu')).toEqual(['p1', 'p2']);
        expect(await store.findByIndex('Patient', 'family', 'prefix', 'Mül')).toEqual(['p1', 'p2']);
        expect(await store.findByIndex('Patient', 'family', 'prefix', 'mulli')).toEqual(['p2']);
        expect(await store.findByIndex('Patient', 'given', 'prefix', 'j')).toEqual(['p1', 'p2']);
        expect(await store.findByIndex('Patient', 'family', 'prefix', 'Wolfeschlegelsteinhausen')).toEqual(['p4']);
        expect(await store.findByIndex('Patient', 'family', 'prefix', 'Wolfeschlegelsteinhausenbergerdorff')).toEqual(['p4']);
        expect(await store.findByIndex('Patient', 'family', 'prefix', 'mx')).toEqual([]);
      });

      it('finds tokens exactly and case-sensitively, and references exactly', async () => {
        await seedPatients();
        expect(await store.findByIndex('Patient', 'identifier', 'token', '999-86-1255')).toEqual(['p1']);
        expect(await store.findByIndex('Patient', 'identifier', 'token', 'http://hl7.org/fhir/sid/us-ssn|999-86-1255')).toEqual(['p1']);
        expect(await store.findByIndex('Patient', 'identifier', 'token', '999-86-125')).toEqual([]);
        expect(await store.findByIndex('Patient', 'identifier', 'token', 'mrn-abc')).toEqual([]);
        expect(await store.findByIndex('Patient', 'identifier', 'token', 'MRN-ABC')).toEqual(['p2']);
        expect(await store.findByIndex('Patient', 'general-practitioner', 'reference', 'Practitioner/dr1')).toEqual(['p1']);
        expect(await store.findByIndex('Patient', 'general-practitioner', 'reference', 'Practitioner/dr2')).toEqual([]);
      });

      it('finds dates by year and month buckets (candidates for exact filtering)', async () => {
        await seedPatients();
        expect(await store.findByIndex('Patient', 'birthdate', 'date', '1939')).toEqual(['p1', 'p2']);
        expect(await store.findByIndex('Patient', 'birthdate', 'date', '1939-01')).toEqual(['p1']);
        expect(await store.findByIndex('Patient', 'birthdate', 'date', '1939-01-05')).toEqual(['p1']);
        expect(await store.findByIndex('Patient', 'birthdate', 'date', '1939-03')).toEqual([]);
        expect(await store.findByIndex('Patient', 'birthdate', 'date', '1940')).toEqual(['p3']);
        expect(await store.findByIndex('Patient', 'birthdate', 'date', '1941')).toEqual([]);
      });

      it('indexes a dateTime under its written and its UTC month', async () => {
        await store.writeVersions([
          f.make({ id: 'o1', index: [{ param: 'date', kind: 'date', value: '2021-01-31T22:30:00-05:00' }] }),
        ]);
        expect(await store.findByIndex('Observation', 'date', 'date', '2021-01')).toEqual(['o1']);
        expect(await store.findByIndex('Observation', 'date', 'date', '2021-02')).toEqual(['o1']);
        expect(await store.findByIndex('Observation', 'date', 'date', '2021-03')).toEqual([]);
      });

      it('finds numbers by bucket (sign, decimal exponent, first digit)', async () => {
        await store.writeVersions([
          f.make({ id: 'o1', index: [{ param: 'value-quantity', kind: 'number', value: '72.5' }] }),
          f.make({ id: 'o2', index: [{ param: 'value-quantity', kind: 'number', value: '7.25' }] }),
          f.make({ id: 'o3', index: [{ param: 'value-quantity', kind: 'number', value: '-72' }] }),
        ]);
        expect(await store.findByIndex('Observation', 'value-quantity', 'number', '70')).toEqual(['o1']);
        expect(await store.findByIndex('Observation', 'value-quantity', 'number', '79.99')).toEqual(['o1']);
        expect(await store.findByIndex('Observation', 'value-quantity', 'number', '7')).toEqual(['o2']);
        expect(await store.findByIndex('Observation', 'value-quantity', 'number', '-7.1e1')).toEqual(['o3']);
        expect(await store.findByIndex('Observation', 'value-quantity', 'number', '80')).toEqual([]);
        expect(await store.findByIndex('Observation', 'value-quantity', 'number', ['80', '72'])).toEqual(['o1']);
      });

      it('never matches another resource type, parameter, kind or value', async () => {
        await seedPatients();
        await store.writeVersions([f.make({ resourceType: 'Practitioner', id: 'dr1', patient: null, index: [{ param: 'family', kind: 'string', value: 'Smith' }] })]);
        expect(await store.findByIndex('Patient', 'family', 'string', 'smith')).toEqual(['p3']);
        expect(await store.findByIndex('Practitioner', 'family', 'string', 'smith')).toEqual(['dr1']);
        expect(await store.findByIndex('Patient', 'given', 'string', 'smith')).toEqual([]);
        expect(await store.findByIndex('Patient', 'family', 'token', 'Smith')).toEqual([]);
        expect(await store.findByIndex('Patient', 'family', 'string', 'smyth')).toEqual([]);
        expect(await store.findByIndex('Patient', 'family', 'prefix', 'smithe')).toEqual([]);
        expect(await store.findByIndex('Observation', 'family', 'string', 'smith')).toEqual([]);
      });

      it('intersects criteria and unions the values of one criterion', async () => {
        await seedPatients();
        expect(
          await store.findByIndexAll('Patient', [
            { param: 'family', kind: 'prefix', value: 'mu' },
            { param: 'birthdate', kind: 'date', value: '1939-02' },
          ]),
        ).toEqual(['p2']);
        expect(
          await store.findByIndexAll('Patient', [
            { param: 'family', kind: 'prefix', value: 'mu' },
            { param: 'given', kind: 'string', value: ['ann', 'jose'] },
          ]),
        ).toEqual(['p1']);
        expect(await store.findByIndex('Patient', 'given', 'string', ['ann', 'hubert', 'nobody'])).toEqual(['p3', 'p4']);
        expect(
          await store.findByIndexAll('Patient', [
            { param: 'family', kind: 'string', value: 'smith' },
            { param: 'given', kind: 'string', value: 'jose' },
          ]),
        ).toEqual([]);
        expect((await rejectionOf(store.findByIndexAll('Patient', []))).code).toBe('invalid');
        expect((await rejectionOf(store.findByIndex('Patient', 'given', 'string', []))).code).toBe('invalid');
      });

      it('finds, intersects and replaces terms of versions written thousands apart', async () => {
        // 2,600 versions: an index may partition its rows by write order (SQLite does, by 1,024), so these span several.
        const rare = new Set([5, 1500, 2550]);
        await store.writeVersions(
          Array.from({ length: 2600 }, (_, i) =>
            f.make({
              id: `o${i}`,
              index: [
                { param: 'code', kind: 'token', value: 'common' },
                { param: 'subject', kind: 'reference', value: `Patient/p${i % 7}` },
                ...(rare.has(i) ? [{ param: 'code', kind: 'token' as const, value: 'rare' }] : []),
              ],
            }),
          ),
        );
        expect(await store.findByIndex('Observation', 'code', 'token', 'common')).toHaveLength(2600);
        expect(await store.findByIndex('Observation', 'code', 'token', 'rare')).toEqual(['o1500', 'o2550', 'o5']);
        const rareOfP2 = [
          { param: 'code', kind: 'token', value: 'rare' },
          { param: 'subject', kind: 'reference', value: 'Patient/p2' },
        ] as const;
        expect(await store.findByIndexAll('Observation', rareOfP2)).toEqual(['o1500', 'o2550']);
        // Driven by the other criterion this time (the most selective one drives): the same answer.
        expect(
          await store.findByIndexAll('Observation', [
            { param: 'subject', kind: 'reference', value: 'Patient/p2' },
            { param: 'code', kind: 'token', value: ['rare', 'none'] },
          ]),
        ).toEqual(['o1500', 'o2550']);
        await store.writeVersions([f.make({ id: 'o1500', versionId: '2', index: [{ param: 'code', kind: 'token', value: 'common' }] })]);
        expect(await store.findByIndex('Observation', 'code', 'token', 'rare')).toEqual(['o2550', 'o5']);
        expect(await store.findByIndexAll('Observation', rareOfP2)).toEqual(['o2550']);
        expect(await store.findByIndex('Observation', 'code', 'token', 'common')).toHaveLength(2600);
      });

      it('replaces a resource\'s index entries when a new version is committed', async () => {
        await seedPatients();
        await store.writeVersions([
          f.make({ resourceType: 'Patient', id: 'p3', patient: 'p3', versionId: '2', index: [{ param: 'family', kind: 'string', value: 'Jones' }] }),
        ]);
        expect(await store.findByIndex('Patient', 'family', 'string', 'smith')).toEqual([]);
        expect(await store.findByIndex('Patient', 'given', 'string', 'ann')).toEqual([]);
        expect(await store.findByIndex('Patient', 'family', 'string', 'jones')).toEqual(['p3']);
      });
    });

    describe('erasure (crypto-shredding)', () => {
      it('makes every version of an erased patient unreadable, saying "erased", and leaves others intact', async () => {
        const p1 = f.make({ resourceType: 'Patient', id: 'p1', patient: 'p1', index: [{ param: 'family', kind: 'string', value: 'Doe' }] });
        const o1 = f.make({ id: 'o1', patient: 'p1' });
        const o1b = f.make({ id: 'o1', versionId: '2', patient: 'p1' });
        const p2 = f.make({ resourceType: 'Patient', id: 'p2', patient: 'p2', index: [{ param: 'family', kind: 'string', value: 'Doe' }] });
        const org = f.make({ resourceType: 'Organization', id: 'org', patient: null });
        await store.writeVersions([p1, o1, o1b, p2, org]);
        const report = await store.erasePatient('p1');
        expect(report.versionsErased).toBe(3);
        expect(report.residuePurged).toBe(traits.purgesResidue ?? true);
        for (const [type, id, vid] of [['Patient', 'p1', undefined], ['Observation', 'o1', '1'], ['Observation', 'o1', undefined]] as const) {
          const err = await rejectionOf(store.readVersion(type, id, vid));
          expect(err.code).toBe('not-found');
          expect(err.message).toMatch(/erased/);
        }
        expect(await store.findByIndex('Patient', 'family', 'string', 'doe')).toEqual(['p2']);
        expect(ids(await store.historySystem())).toEqual(['Organization/org/1', 'Patient/p2/1']);
        expect(await store.compartment('p1')).toEqual([]);
        expect(await store.currentIds('Patient')).toEqual(['p2']);
        expectSameVersion(await store.readVersion('Patient', 'p2'), p2);
        expectSameVersion(await store.readVersion('Organization', 'org'), org);
        // Still erased for a store opened afterwards (nothing was only in memory).
        expect((await rejectionOf((await harness.open(kek)).readVersion('Patient', 'p1'))).message).toMatch(/erased/);
      });

      it('refuses new versions in an erased patient\'s compartment', async () => {
        await store.writeVersions([f.make({ id: 'o1', patient: 'p1' })]);
        await store.erasePatient('p1');
        const err = await rejectionOf(store.writeVersions([f.make({ id: 'o2', patient: 'p1' })]));
        expect(err.code).toBe('conflict');
        expect((await rejectionOf(store.readVersion('Observation', 'o2'))).code).toBe('not-found');
      });

      it('erases one version only with eraseVersion', async () => {
        const v1 = f.make({ id: 'o1' });
        const v2 = f.make({ id: 'o1', versionId: '2', index: [{ param: 'code', kind: 'token', value: 'c' }] });
        await store.writeVersions([v1, v2]);
        expect((await store.eraseVersion('Observation', 'o1', '1')).versionsErased).toBe(1);
        expect((await store.eraseVersion('Observation', 'o1', '1')).versionsErased).toBe(0);
        expect((await rejectionOf(store.readVersion('Observation', 'o1', '1'))).message).toMatch(/erased/);
        expectSameVersion(await store.readVersion('Observation', 'o1'), v2);
        expect(await store.findByIndex('Observation', 'code', 'token', 'c')).toEqual(['o1']);
        await store.eraseVersion('Observation', 'o1', '2');
        expect((await rejectionOf(store.readVersion('Observation', 'o1'))).message).toMatch(/erased/);
        expect(await store.findByIndex('Observation', 'code', 'token', 'c')).toEqual([]);
        expect((await rejectionOf(store.eraseVersion('Observation', 'nope', '1'))).code).toBe('not-found');
      });
    });

    describe('keys', () => {
      /** Wrapped keys as stored: every DEK row (owner, wrapped bytes, KEK id) and the wrapped blind-index key. */
      async function keyRows(): Promise<{ owner: string; wrapped: Buffer; kekId: string }[]> {
        const deks = await harness.query('SELECT owner, wrapped, kek_id FROM store_dek ORDER BY owner');
        const [index] = await harness.query("SELECT value FROM store_meta WHERE key = 'index-key'");
        return [
          ...deks.map((r) => ({ owner: r.owner as string, wrapped: Buffer.from(r.wrapped as Uint8Array), kekId: r.kek_id as string })),
          { owner: '(index key)', wrapped: Buffer.from(index!.value as Uint8Array), kekId: '' },
        ];
      }
      /** Every data and index row, exactly as stored. */
      async function dataRows(): Promise<string> {
        return JSON.stringify([
          await harness.query('SELECT * FROM record_version ORDER BY seq'),
          await harness.query('SELECT term, seq FROM record_index ORDER BY term, seq'),
          await harness.query('SELECT * FROM record_current ORDER BY seq'),
          await harness.query('SELECT * FROM store_erasure ORDER BY owner'),
        ]);
      }
      const recordedKekId = async (): Promise<string> => {
        const [row] = await harness.query("SELECT value FROM store_meta WHERE key = 'kek-id'");
        return Buffer.from(row!.value as string | Uint8Array).toString('utf8');
      };
      async function seedPatients(n: number): Promise<VersionWrite[]> {
        const writes = Array.from({ length: n }, (_, i) =>
          f.make({ resourceType: 'Patient', id: `p${i}`, patient: `p${i}`, index: [{ param: 'family', kind: 'string', value: `Doe${i % 3}` }] }),
        );
        await store.writeVersions(writes);
        return writes;
      }

      it('rotates the KEK: a store opened with the new KEK reads and searches, the old KEK is rejected', async () => {
        const v = f.make({ resourceType: 'Patient', id: 'p1', patient: 'p1', index: [{ param: 'family', kind: 'string', value: 'Doe' }] });
        const org = f.make({ resourceType: 'Organization', id: 'org', patient: null });
        await store.writeVersions([v, org]);
        const newKek = new Uint8Array(randomBytes(32));
        expect(store.kekId).toBe(kekIdOf(kek));
        const report = await store.rotateKek(newKek);
        // p1's DEK and the node-wide DEK, plus the blind-index key
        expect(report).toMatchObject({ dataKeysRewrapped: 2, keysRewrapped: 3, fromKekId: kekIdOf(kek), toKekId: kekIdOf(newKek) });
        expect(store.kekId).toBe(kekIdOf(newKek));
        expectSameVersion(await store.readVersion('Patient', 'p1'), v);
        const reopened = await harness.open(newKek);
        expect(reopened.kekId).toBe(kekIdOf(newKek));
        expectSameVersion(await reopened.readVersion('Patient', 'p1'), v);
        expectSameVersion(await reopened.readVersion('Organization', 'org'), org);
        expect(await reopened.findByIndex('Patient', 'family', 'string', 'doe')).toEqual(['p1']);
        // Writes after rotation (new patients too) work and survive another reopen.
        const w = f.make({ id: 'o1', patient: 'p9' });
        await reopened.writeVersions([w]);
        expectSameVersion(await (await harness.open(newKek)).readVersion('Observation', 'o1'), w);
        const err = await rejectionOf(harness.open(kek));
        expect(err.code).toBe('integrity');
        expect(err.message).toContain(kekIdOf(newKek));
        expect(err.message).toContain(kekIdOf(kek));
      });

      it('re-wraps only keys: data and index rows keep their exact bytes, every wrapped key and its KEK id change, the old KEK unwraps none', async () => {
        await seedPatients(5);
        await store.writeVersions([
          f.make({ id: 'o1', patient: 'p1', index: [{ param: 'code', kind: 'token', value: 'x' }] }),
          f.make({ resourceType: 'Organization', id: 'org', patient: null }),
          f.make({ id: 'gone', patient: 'px' }),
        ]);
        await store.erasePatient('px');
        const dataBefore = await dataRows();
        const keysBefore = await keyRows();
        expect(keysBefore.map((k) => k.owner)).toEqual(['*', 'p0', 'p1', 'p2', 'p3', 'p4', '(index key)']);
        for (const k of keysBefore.slice(0, -1)) expect(k.kekId).toBe(kekIdOf(kek));
        expect(await recordedKekId()).toBe(kekIdOf(kek));
        const newKek = new Uint8Array(randomBytes(32));
        const report = await store.rotateKek(newKek);
        expect(report.dataKeysRewrapped).toBe(6);
        expect(await dataRows()).toBe(dataBefore);
        const keysAfter = await keyRows();
        expect(keysAfter.map((k) => k.owner)).toEqual(keysBefore.map((k) => k.owner));
        keysAfter.forEach((k, i) => {
          expect(k.wrapped.equals(keysBefore[i]!.wrapped)).toBe(false);
          expect(() => unwrapKey(kek, k.wrapped)).toThrow(HlError);
          // The same key inside: the new KEK unwraps to what the old one did.
          expect(Buffer.from(unwrapKey(newKek, k.wrapped)).equals(Buffer.from(unwrapKey(kek, keysBefore[i]!.wrapped)))).toBe(true);
        });
        for (const k of keysAfter.slice(0, -1)) expect(k.kekId).toBe(kekIdOf(newKek));
        expect(await recordedKekId()).toBe(kekIdOf(newKek));
      });

      it('rolls a rotation that fails part-way back whole: every key stays under the old KEK, which keeps working', async () => {
        const writes = await seedPatients(600);
        const keysBefore = await keyRows();
        const newKek = new Uint8Array(randomBytes(32));
        const seen: number[] = [];
        const failure = new Error('injected failure mid-rotation');
        const err = await store
          .rotateKek(newKek, {
            onProgress: (done, total) => {
              expect(total).toBe(601); // 600 patients' DEKs and the blind-index key
              seen.push(done);
              if (done > 0 && done < total) throw failure;
            },
          })
          .then(
            () => undefined,
            (e: unknown) => e,
          );
        expect(err).toBe(failure);
        expect(seen[0]).toBe(0);
        expect(seen.at(-1)).toBeGreaterThan(0);
        expect(await keyRows()).toEqual(keysBefore);
        expect(await recordedKekId()).toBe(kekIdOf(kek));
        expect(store.kekId).toBe(kekIdOf(kek));
        expect((await rejectionOf(harness.open(newKek))).code).toBe('integrity');
        const reopened = await harness.open(kek);
        expectSameVersion(await reopened.readVersion('Patient', 'p599'), writes[599]!);
        // The store that failed to rotate still reads, and writes new compartments under the old KEK.
        expectSameVersion(await store.readVersion('Patient', 'p7'), writes[7]!);
        await store.writeVersions([f.make({ id: 'after', patient: 'pnew' })]);
        expect((await harness.query("SELECT kek_id FROM store_dek WHERE owner = 'pnew'"))[0]!.kek_id).toBe(kekIdOf(kek));
        // And a rotation after the failed one goes through.
        expect((await store.rotateKek(newKek)).dataKeysRewrapped).toBe(601);
        expectSameVersion(await (await harness.open(newKek)).readVersion('Patient', 'p599'), writes[599]!);
      });

      it('reports progress from 0 to the total number of keys', async () => {
        await seedPatients(3);
        const seen: [number, number][] = [];
        await store.rotateKek(new Uint8Array(randomBytes(32)), { onProgress: (done, total) => seen.push([done, total]) });
        expect(seen[0]).toEqual([0, 4]);
        expect(seen.at(-1)).toEqual([4, 4]);
      });

      it('refuses to rotate to the current KEK or to a key that is not 32 bytes, changing nothing', async () => {
        await seedPatients(2);
        const keysBefore = await keyRows();
        const same = await rejectionOf(store.rotateKek(Uint8Array.from(kek)));
        expect(same.code).toBe('invalid');
        expect(same.message).toContain(kekIdOf(kek));
        expect((await rejectionOf(store.rotateKek(new Uint8Array(31)))).code).toBe('invalid');
        expect(await keyRows()).toEqual(keysBefore);
      });

      it('never wraps a new data key under a KEK another store object has rotated away', async () => {
        const writes = await seedPatients(2);
        const stale = await harness.open(kek);
        const newKek = new Uint8Array(randomBytes(32));
        await store.rotateKek(newKek);
        const write = await rejectionOf(stale.writeVersions([f.make({ id: 'o1', patient: 'fresh' })]));
        expect(write.code).toBe('integrity');
        expect(write.message).toContain(kekIdOf(newKek));
        const read = await rejectionOf(stale.readVersion('Patient', 'p1'));
        expect(read.code).toBe('integrity');
        expect(read.message).toContain('compartment p1');
        const rotate = await rejectionOf(stale.rotateKek(new Uint8Array(randomBytes(32))));
        expect(rotate.code).toBe('integrity');
        expect((await harness.query('SELECT kek_id FROM store_dek')).map((r) => r.kek_id)).toEqual([kekIdOf(newKek), kekIdOf(newKek)]);
        expectSameVersion(await (await harness.open(newKek)).readVersion('Patient', 'p1'), writes[1]!);
      });

      it('fails a read with integrity, naming the compartment, when a data key row names another KEK', async () => {
        await seedPatients(2);
        await harness.query("UPDATE store_dek SET kek_id = 'kek-0000000000000000' WHERE owner = 'p1'");
        const fresh = await harness.open(kek);
        const err = await rejectionOf(fresh.readVersion('Patient', 'p1'));
        expect(err.code).toBe('integrity');
        expect(err.message).toContain('compartment p1');
        expect(err.message).toContain('kek-0000000000000000');
        expect((await fresh.readVersion('Patient', 'p0')).id).toBe('p0');
      });

      it('opens a store written before KEK ids with its KEK and records the id on every key', async () => {
        const writes = await seedPatients(3);
        await harness.query('ALTER TABLE store_dek DROP COLUMN kek_id');
        await harness.query("DELETE FROM store_meta WHERE key = 'kek-id'");
        expect((await rejectionOf(harness.open(new Uint8Array(randomBytes(32))))).code).toBe('integrity');
        const reopened = await harness.open(kek);
        expectSameVersion(await reopened.readVersion('Patient', 'p2'), writes[2]!);
        expect((await harness.query('SELECT kek_id FROM store_dek ORDER BY owner')).map((r) => r.kek_id)).toEqual(Array(3).fill(kekIdOf(kek)));
        expect(await recordedKekId()).toBe(kekIdOf(kek));
        const newKek = new Uint8Array(randomBytes(32));
        expect((await reopened.rotateKek(newKek)).dataKeysRewrapped).toBe(3);
        expectSameVersion(await (await harness.open(newKek)).readVersion('Patient', 'p0'), writes[0]!);
      });

      it('rejects opening with a KEK that is not the store\'s, or is not 32 bytes', async () => {
        await store.writeVersions([f.make({ id: 'o1' })]);
        const wrong = new Uint8Array(randomBytes(32));
        const err = await rejectionOf(harness.open(wrong));
        expect(err.code).toBe('integrity');
        expect(err.message).toContain(kekIdOf(wrong));
        expect((await rejectionOf(harness.open(new Uint8Array(16)))).code).toBe('invalid');
      });
    });

    describe('listing', () => {
      it('lists current ids of a type and the resources of a patient compartment', async () => {
        await store.writeVersions([
          f.make({ resourceType: 'Patient', id: 'p1', patient: 'p1' }),
          f.make({ id: 'o2', patient: 'p1' }),
          f.make({ id: 'o1', patient: 'p1' }),
          f.make({ id: 'o3', patient: 'p2' }),
          f.make({ id: 'o4', patient: 'p1', status: 'pending', txId: 'txp' }),
        ]);
        await store.writeVersions([f.make({ id: 'o2', versionId: '2', patient: 'p1', deleted: true })]);
        expect(await store.currentIds('Observation')).toEqual(['o1', 'o3']);
        expect(await store.compartment('p1')).toEqual([
          { resourceType: 'Observation', id: 'o1' },
          { resourceType: 'Patient', id: 'p1' },
        ]);
      });
    });
  });
}
