/**
 * `healthledger keys rotate` end to end, one suite run by each record-store backend
 * (key-rotation-sqlite.int.test.ts, key-rotation-postgres.int.test.ts): every data key is re-wrapped under a
 * new KEK without rewriting any record (the rows are compared byte for byte), everything reads back equal,
 * `$proof` and `healthledger verify` still pass, the retired KEK unwraps nothing and a node given it refuses
 * to start; and a kill -9 at any moment of a rotation leaves a store that opens with the KEK it records.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initNode, issueAdminToken, openNode, startNode, type RunningNode } from '../src/node.js';
import { kekIdOf, unwrapKey } from '../src/crypto/index.js';
import { generatePatientBundle } from '../src/synth/index.js';
import { leafHash, verifyCheckpoint, verifyInclusion } from '../src/ledger/verify.js';
import { HlError } from '../src/kernel/index.js';
import { commitmentIn, repoRoot, runCli, runCliAsync, tempDir } from './helpers.js';

/** Patients created besides the synthetic ones: enough data keys that a rotation reports progress mid-way. */
const extraPatients = 400;

/** The rows of the record store exactly as stored: data rows (as one string) and wrapped keys. */
interface RawRows {
  data: string;
  deks: { owner: string; wrapped: Buffer; kekId: string }[];
  indexKey: Buffer;
}

/** A record-store backend a node runs on. */
export interface KeyRotationBackend {
  name: string;
  /** The PostgreSQL URL of a fresh database, or undefined for the embedded SQLite store. */
  database(): Promise<string | undefined>;
  /** Stops what `database` started. */
  stop?(): Promise<void>;
}

const readKey = (file: string): Buffer => Buffer.from(readFileSync(file, 'utf8').trim(), 'base64');

/** Registers the key-rotation suite for one backend. */
export function runKeyRotationSuite(backend: KeyRotationBackend): void {
  describe(`key rotation on ${backend.name}`, () => {
    const work = tempDir('hl-keys-');
    afterAll(async () => {
      await backend.stop?.();
      work.cleanup();
    });
    const dir = join(work.path, 'node');
    const keys = join(dir, 'keys');
    let database: string | undefined;
    /** Every committed version, by `type/id/_history/vid`: the exact bytes vread returns. */
    const expected = new Map<string, Buffer>();
    /** Versions whose `$proof` the tests check, and a search with its answer. */
    const probes: string[] = [];
    let searchFamily = '';
    let searchIds: string[] = [];

    const dbArgs = (): string[] => (database === undefined ? [] : ['--database', database]);
    const start = (): Promise<RunningNode> => startNode({ dataDir: dir, port: 0, ...(database ? { database } : {}) });
    const open = () => openNode({ dataDir: dir, ...(database ? { database } : {}) });
    const keyFiles = (): string[] => readdirSync(keys).filter((f) => f.startsWith('kek.key')).sort();

    async function rawRows(): Promise<RawRows> {
      const tables = ['SELECT * FROM record_version ORDER BY seq', 'SELECT * FROM record_index ORDER BY term, seq', 'SELECT * FROM record_current ORDER BY seq'];
      const deksSql = 'SELECT owner, wrapped, kek_id FROM store_dek ORDER BY owner';
      const indexKeySql = "SELECT value FROM store_meta WHERE key = 'index-key'";
      let rows: Record<string, unknown>[][];
      if (database === undefined) {
        const db = new Database(join(dir, 'ledger.sqlite'), { readonly: true });
        try {
          rows = [...tables, deksSql, indexKeySql].map((sql) => db.prepare(sql).all() as Record<string, unknown>[]);
        } finally {
          db.close();
        }
      } else {
        const client = new pg.Client({ connectionString: database });
        await client.connect();
        try {
          rows = [];
          for (const sql of [...tables, deksSql, indexKeySql]) rows.push((await client.query(sql)).rows);
        } finally {
          await client.end();
        }
      }
      return {
        data: JSON.stringify(rows.slice(0, 3)),
        deks: rows[3]!.map((r) => ({ owner: r.owner as string, wrapped: r.wrapped as Buffer, kekId: r.kek_id as string })),
        indexKey: rows[4]![0]!.value as Buffer,
      };
    }

    /**
     * Refs of versions that do not read back exactly as before, or are missing (none when all is well): every
     * version through history pages, and the probes by vread. Also checks that the node runs on the KEK in
     * keys/kek.key.
     */
    async function unequalVersions(): Promise<string[]> {
      const node = await open();
      try {
        expect(node.records.kekId).toBe(kekIdOf(readKey(join(keys, 'kek.key'))));
        const seen = new Map<string, Buffer>();
        for (let cursor: string | null | undefined; cursor !== null; ) {
          const page: Awaited<ReturnType<typeof node.records.historySystem>> = await node.records.historySystem({ limit: 1000, ...(cursor ? { cursor } : {}) });
          for (const v of page.versions) seen.set(`${v.resourceType}/${v.id}/_history/${v.versionId}`, Buffer.from(v.content));
          cursor = page.nextCursor;
        }
        for (const ref of probes) {
          const [type, id, , vid] = ref.split('/');
          if (!Buffer.from((await node.records.readVersion(type!, id!, vid)).content).equals(expected.get(ref)!)) seen.delete(ref);
        }
        const bad = [...expected].filter(([ref, bytes]) => !seen.get(ref)?.equals(bytes)).map(([ref]) => ref);
        // The AuditEvents of the test's own requests are new records; every other version must be as it was.
        return [...bad, ...[...seen.keys()].filter((ref) => !expected.has(ref) && !ref.startsWith('AuditEvent/'))];
      } finally {
        await node.close();
      }
    }

    beforeAll(async () => {
      database = await backend.database();
      await initNode({ org: `Keys ${backend.name} Hospital`, dataDir: dir });
      const running = await start();
      try {
        const auth = { authorization: `Bearer ${await issueAdminToken({ dataDir: dir })}`, 'content-type': 'application/fhir+json' };
        const post = async (path: string, body: unknown, method = 'POST') => {
          const res = await fetch(`${running.url}${path}`, { method, headers: auth, body: JSON.stringify(body) });
          const json = (await res.json()) as any;
          if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
          return json;
        };
        const synth = [1, 2, 3].map((i) => generatePatientBundle(11, i));
        const responses = [];
        for (const bundle of synth) responses.push(await post('/fhir', bundle));
        const extra = {
          resourceType: 'Bundle',
          type: 'transaction',
          entry: Array.from({ length: extraPatients }, (_, i) => ({
            resource: { resourceType: 'Patient', name: [{ family: `Rotwell${i}`, given: ['Kim'] }], gender: 'unknown' },
            request: { method: 'POST', url: 'Patient' },
          })),
        };
        const extraResponse = await post('/fhir', extra);
        // Second versions: an updated patient and a deleted observation.
        const patientRef = (responses[0].entry[0].response.location as string).split('/_history')[0]!;
        const patient = await (await fetch(`${running.url}/fhir/${patientRef}`, { headers: auth })).json();
        const updated = await post(`/fhir/${patientRef}`, { ...(patient as object), active: true }, 'PUT');
        const observationRef = (responses[1].entry.find((e: any) => e.response.location.startsWith('Observation/')).response.location as string).split('/_history')[0]!;
        expect((await fetch(`${running.url}/fhir/${observationRef}`, { method: 'DELETE', headers: { authorization: auth.authorization } })).status).toBe(204);
        probes.push(`${patientRef}/_history/${updated.meta.versionId}`, responses[2].entry[5].response.location, extraResponse.entry[277].response.location);
        searchFamily = (synth[1]!.entry[0]!.resource as any).name[0].family;
        const found = await (await fetch(`${running.url}/fhir/Patient?family:exact=${encodeURIComponent(searchFamily)}`, { headers: auth })).json();
        searchIds = (found as any).entry.map((e: any) => e.resource.id).sort();
        expect(searchIds.length).toBeGreaterThan(0);
        for (let cursor: string | null | undefined; cursor !== null; ) {
          const page: Awaited<ReturnType<typeof running.node.records.historySystem>> = await running.node.records.historySystem({
            limit: 1000,
            ...(cursor ? { cursor } : {}),
          });
          for (const v of page.versions) expected.set(`${v.resourceType}/${v.id}/_history/${v.versionId}`, Buffer.from(v.content));
          cursor = page.nextCursor;
        }
      } finally {
        await running.close();
      }
      expect(expected.size).toBeGreaterThan(extraPatients + 100);
    }, 180_000);

    it('refuses to rotate while a node runs on the data directory, and changes nothing', async () => {
      const before = await rawRows();
      const running = await start();
      try {
        const r = await runCliAsync(['keys', 'rotate', '--data', dir, ...dbArgs()]);
        expect(r.stderr).toMatch(/is in use by a running node or key rotation \(node\.lock is locked\); stop it first/);
        expect(r.status).toBe(2);
      } finally {
        await running.close();
      }
      expect(keyFiles()).toEqual(['kek.key']);
      expect((await rawRows()).deks).toEqual(before.deks);
    }, 60_000);

    it('re-wraps every data key: data rows byte-identical, every wrapped key changed, the old KEK unwraps none; reads, search, $proof and verify unchanged', async () => {
      const before = await rawRows();
      const oldKek = readKey(join(keys, 'kek.key'));
      for (const dek of before.deks) expect(dek.kekId).toBe(kekIdOf(oldKek));
      const r = runCli(['keys', 'rotate', '--data', dir, ...dbArgs()]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      // One DEK per patient compartment, plus the node-wide one (the synthetic Organizations).
      expect(before.deks).toHaveLength(extraPatients + 3 + 1);
      const newKek = readKey(join(keys, 'kek.key'));
      expect(r.stdout).toContain(`re-wrapping ${extraPatients + 5} keys in one transaction\n`);
      expect(r.stdout).toContain(
        `re-wrapped ${extraPatients + 4} data keys and the blind-index key under KEK ${kekIdOf(newKek)} (was ${kekIdOf(oldKek)})`,
      );
      const retired = keyFiles().filter((f) => f.startsWith('kek.key.retired-'));
      expect(retired).toHaveLength(1);
      expect(keyFiles()).toEqual(['kek.key', retired[0]]);
      expect(r.stdout).toContain(`retired KEK: ${join(keys, retired[0]!)}`);
      expect(r.stdout).toMatch(/Destroy it/);
      expect(readKey(join(keys, retired[0]!)).equals(oldKek)).toBe(true);
      expect(statSync(join(keys, retired[0]!)).mode & 0o777).toBe(0o600);
      expect(statSync(join(keys, 'kek.key')).mode & 0o777).toBe(0o600);

      const after = await rawRows();
      expect(after.data).toBe(before.data);
      expect(after.deks.map((d) => d.owner)).toEqual(before.deks.map((d) => d.owner));
      after.deks.forEach((dek, i) => {
        expect(dek.wrapped.equals(before.deks[i]!.wrapped)).toBe(false);
        expect(dek.kekId).toBe(kekIdOf(newKek));
        expect(() => unwrapKey(oldKek, dek.wrapped)).toThrow(HlError);
        expect(Buffer.from(unwrapKey(newKek, dek.wrapped)).equals(Buffer.from(unwrapKey(oldKek, before.deks[i]!.wrapped)))).toBe(true);
      });
      expect(after.indexKey.equals(before.indexKey)).toBe(false);
      expect(() => unwrapKey(oldKek, after.indexKey)).toThrow(HlError);

      expect(await unequalVersions()).toEqual([]);
      const running = await start();
      try {
        const auth = { authorization: `Bearer ${await issueAdminToken({ dataDir: dir })}` };
        const found = await (await fetch(`${running.url}/fhir/Patient?family:exact=${encodeURIComponent(searchFamily)}`, { headers: auth })).json();
        expect((found as any).entry.map((e: any) => e.resource.id).sort()).toEqual(searchIds);
        const members = (await (await fetch(`${running.url}/ledger/members`)).json()) as any;
        const verifierKeys = members.members.map((m: { verifierKey: string }) => m.verifierKey);
        for (const ref of probes) {
          const vread = await fetch(`${running.url}/fhir/${ref}`, { headers: auth });
          expect(vread.status).toBe(200);
          const text = await vread.text();
          expect(Buffer.from(text).equals(expected.get(ref)!)).toBe(true);
          const proof = (await (await fetch(`${running.url}/fhir/${ref}/$proof`, { headers: auth })).json()) as any;
          const param = (name: string) => proof.parameter.filter((x: { name: string }) => x.name === name);
          const b64 = (s: string) => Uint8Array.from(Buffer.from(s, 'base64'));
          const leaf = b64(param('leaf')[0].valueBase64Binary);
          const salt = b64(param('salt')[0].valueBase64Binary);
          const tx = JSON.parse(Buffer.from(leaf).toString('utf8'));
          expect(commitmentIn(tx, ref)).toBe(createHash('sha256').update(salt).update(text).digest('hex'));
          const checkpoint = verifyCheckpoint(param('checkpoint')[0].valueString, verifierKeys);
          verifyInclusion(
            BigInt(param('leafIndex')[0].valueInteger64),
            checkpoint.treeSize,
            leafHash(leaf),
            param('proof').map((x: { valueBase64Binary: string }) => b64(x.valueBase64Binary)),
            checkpoint.rootHash,
          );
        }
      } finally {
        await running.close();
      }
      const verified = runCli(['verify', '--data', dir]);
      expect(verified.stderr).toBe('');
      expect(verified.status).toBe(0);
    }, 120_000);

    it('refuses at startup to run with the retired KEK, naming both key ids, and stores nothing', async () => {
      const current = readFileSync(join(keys, 'kek.key'));
      const retired = keyFiles().find((f) => f.startsWith('kek.key.retired-'))!;
      const rowsBefore = await rawRows();
      writeFileSync(join(keys, 'kek.key'), readFileSync(join(keys, retired)));
      try {
        const err = await start().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(HlError);
        expect((err as HlError).code).toBe('integrity');
        expect((err as HlError).message).toContain(`cannot open the record store with ${join(keys, 'kek.key')}`);
        expect((err as HlError).message).toContain(`wrapped under KEK ${kekIdOf(Buffer.from(current.toString('utf8').trim(), 'base64'))}`);
        expect((err as HlError).message).toContain(kekIdOf(readKey(join(keys, retired))));
        const cli = runCli(['start', '--data', dir, '--port', '0', ...dbArgs()]);
        expect(cli.status).toBe(1);
        expect(cli.stderr).toMatch(/^healthledger: cannot open the record store with .*kek\.key: this record store's keys are wrapped under KEK kek-[0-9a-f]{16}, not under the KEK given \(kek-[0-9a-f]{16}\): a retired or wrong key-encryption key\n$/);
      } finally {
        writeFileSync(join(keys, 'kek.key'), current);
      }
      expect(await rawRows()).toEqual(rowsBefore);
      expect(await unequalVersions()).toEqual([]);
    }, 60_000);

    /** Runs the rotation fixture until it reports `stage`, then kills it with SIGKILL. */
    function rotateUntil(stage: string): Promise<void> {
      return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [join(repoRoot, 'test/fixtures/rotate-and-hang.mjs'), dir, stage, database ?? ''], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stderr.on('data', (d) => (stderr += d));
        child.stdout.on('data', (d) => {
          stdout += d;
          if (stdout.includes(`at ${stage}\n`)) child.kill('SIGKILL');
        });
        child.on('exit', (_code, signal) => {
          if (signal === 'SIGKILL') resolve();
          else reject(new Error(`the rotation did not stop at ${stage}: ${stdout} ${stderr}`));
        });
      });
    }

    it.each([
      { stage: 'new-kek-written', committed: false },
      { stage: 'mid-transaction', committed: false },
      { stage: 'store-rotated', committed: true },
      { stage: 'kek-files-swapped', committed: true },
    ])('kill -9 at $stage leaves a store that opens with the KEK it records, then rotates again', async ({ stage, committed }) => {
      const oldKek = readKey(join(keys, 'kek.key'));
      const rowsBefore = await rawRows();
      await rotateUntil(stage);
      const next = existsSync(join(keys, 'kek.key.next')) ? readKey(join(keys, 'kek.key.next')) : undefined;
      const after = await rawRows();
      expect(after.data).toBe(rowsBefore.data);
      if (committed) {
        const newId = after.deks[0]!.kekId;
        expect(newId).not.toBe(kekIdOf(oldKek));
        for (const dek of after.deks) expect(dek.kekId).toBe(newId);
      } else {
        expect(after.deks).toEqual(rowsBefore.deks);
        expect(next).toBeDefined();
      }
      // Opening the node picks the key the store records (finishing the file swap if the store moved on).
      expect(await unequalVersions()).toEqual([]);
      expect(existsSync(join(keys, 'kek.key.next'))).toBe(!committed);
      if (committed && next !== undefined) expect(readKey(join(keys, 'kek.key')).equals(next)).toBe(true);
      if (!committed) expect(readKey(join(keys, 'kek.key')).equals(oldKek)).toBe(true);
      const retiredOld = keyFiles().filter((f) => f.startsWith('kek.key.retired-') && readKey(join(keys, f)).equals(oldKek));
      expect(retiredOld).toHaveLength(committed ? 1 : 0);

      const r = runCli(['keys', 'rotate', '--data', dir, ...dbArgs()]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      // A key written by an uncommitted rotation is used by the next one, never thrown away.
      if (!committed) expect(readKey(join(keys, 'kek.key')).equals(next!)).toBe(true);
      expect(existsSync(join(keys, 'kek.key.next'))).toBe(false);
      expect((await rawRows()).data).toBe(rowsBefore.data);
      expect(await unequalVersions()).toEqual([]);
    }, 120_000);

    it('opens after a crash between the two renames of the key files (only kek.key.next left)', async () => {
      await rotateUntil('store-rotated');
      const next = readKey(join(keys, 'kek.key.next'));
      renameSync(join(keys, 'kek.key'), join(keys, 'kek.key.retired-by-test'));
      expect(await unequalVersions()).toEqual([]);
      expect(readKey(join(keys, 'kek.key')).equals(next)).toBe(true);
      expect(existsSync(join(keys, 'kek.key.next'))).toBe(false);
    }, 60_000);

    it('survives kill -9 of the healthledger keys rotate process at moments around its transaction', async () => {
      // Each run is killed a little after it says its transaction began: inside it, at the commit, or during
      // the file swap. Where exactly is up to the scheduler; every outcome must open with the recorded KEK.
      for (const delayMs of [0, 10, 25, 50, 100, 150, 200]) {
        const child = spawn(process.execPath, [join(repoRoot, 'bin/healthledger.js'), 'keys', 'rotate', '--data', dir, ...dbArgs()], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        child.stdout.on('data', (d) => {
          stdout += d;
          if (/re-wrapping \d+ keys in one transaction/.test(stdout)) setTimeout(() => child.kill('SIGKILL'), delayMs);
        });
        const exit = await new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
        expect(stdout).toMatch(/^new KEK written to keys\/kek\.key\.next\nre-wrapping \d+ keys in one transaction\n/);
        expect(exit.signal === 'SIGKILL' || exit.code === 0).toBe(true);
        expect(await unequalVersions()).toEqual([]);
      }
      const verified = runCli(['verify', '--data', dir]);
      expect(verified.status).toBe(0);
    }, 180_000);
  });
}
