/**
 * Shared helpers for end-to-end tests: temp dirs, running the built CLI, and populating a node.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll } from 'vitest';
import { initNode, issueAdminToken, startNode, type RunningNode } from '../src/node.js';

export const repoRoot = join(import.meta.dirname, '..');
export const cliPath = join(repoRoot, 'bin', 'healthledger.js');

export function tempDir(prefix = 'hl-test-'): { path: string; cleanup(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs the built `healthledger` command (npm test builds dist/ first). */
export function runCli(args: string[], options: { timeoutMs?: number } = {}): CliResult {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', timeout: options.timeoutMs ?? 120_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A record.commit body with a random commitment and pseudonymous ids only. */
export function commitBody(i: number): Record<string, unknown> {
  return {
    patient: `pat-${(i % 7).toString().padStart(4, '0')}`,
    resourceType: 'Observation',
    id: `obs-${i}`,
    versionId: '1',
    commitment: randomBytes(32).toString('hex'),
  };
}

/**
 * How many record versions the ledger entries from leaf `from` on commit: a `record.commit` leaf carries one
 * version's commitment, or several (`versions`) when a write stored several versions of one patient.
 */
export function committedVersions(store: { entry(leafIndex: number): Uint8Array | null }, from: number, to: number): number {
  let n = 0;
  for (let i = from; i < to; i++) {
    const tx = JSON.parse(Buffer.from(store.entry(i)!).toString('utf8')) as { type: string; body: Record<string, unknown> };
    if (tx.type === 'record.commit') n += versionsOf(tx.body).filter((v) => v.resourceType !== 'AuditEvent').length;
  }
  return n;
}

function versionsOf(body: Record<string, unknown>): { resourceType?: unknown }[] {
  return (body.versions as { resourceType?: unknown }[] | undefined) ?? [body];
}

/**
 * The ledger's leaves that carry data, not audit trail: every leaf but `access.log` entries and
 * `record.commit`s of AuditEvents only. Every request leaves an AuditEvent and an access entry (issue 4),
 * written off the request's path, so "nothing was stored" is a statement about these leaves.
 */
export function dataLeaves(ledger: { treeSize: number; store: { entry(leafIndex: number): Uint8Array | null } }): number {
  let n = 0;
  for (let i = 0; i < ledger.treeSize; i++) {
    const tx = JSON.parse(Buffer.from(ledger.store.entry(i)!).toString('utf8')) as { type: string; body: Record<string, unknown> };
    if (tx.type === 'access.log') continue;
    if (tx.type === 'record.commit' && versionsOf(tx.body).every((v) => v.resourceType === 'AuditEvent')) continue;
    n++;
  }
  return n;
}

/** True for a reference to an AuditEvent (`AuditEvent/...`). */
export const isAuditRef = (ref: string): boolean => ref.startsWith('AuditEvent/') || ref.includes('/fhir/AuditEvent/');

/**
 * The commitment a `record.commit` leaf (parsed JSON) holds for `Type/id/_history/vid`: its body's own, or
 * the matching one of its `versions`; undefined when it commits no such version.
 */
export function commitmentIn(tx: { body: Record<string, unknown> }, ref: string): string | undefined {
  const [resourceType, id, , versionId] = ref.replace(/^.*\/fhir\//, '').split('/');
  const versions = (tx.body.versions as Record<string, unknown>[] | undefined) ?? [tx.body];
  const found = versions.filter((v) => v.resourceType === resourceType && v.id === id && v.versionId === versionId);
  return found.length === 1 ? (found[0]!.commitment as string) : undefined;
}

/** Runs the built CLI without blocking this process (for tests that serve HTTP in-process). */
export function runCliAsync(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliPath, ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (status) => resolve({ status: status ?? -1, stdout, stderr }));
  });
}

/** A FHIR response as a test reads it. */
export interface FhirCall {
  status: number;
  headers: Headers;
  text: string;
  json: any;
}

/**
 * A node for one test file: initialized and started on 127.0.0.1 before its tests, stopped and removed after.
 * `call` sends a request with the admin token (a body object as FHIR JSON, a string as it is).
 */
export function useFhirNode(org: string): {
  work: { path: string };
  readonly running: RunningNode;
  readonly auth: Record<string, string>;
  call(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<FhirCall>;
} {
  const work = tempDir('hl-fhir-');
  let running: RunningNode | undefined;
  let auth: Record<string, string> = {};
  beforeAll(async () => {
    await initNode({ org, dataDir: work.path });
    running = await startNode({ dataDir: work.path, port: 0 });
    auth = { authorization: `Bearer ${await issueAdminToken({ dataDir: work.path })}` };
  });
  afterAll(async () => {
    await running?.close();
    work.cleanup();
  });
  return {
    work,
    get running() {
      return running!;
    },
    get auth() {
      return auth;
    },
    async call(method, path, body, headers = {}) {
      const res = await fetch(`${running!.url}${path}`, {
        method,
        headers: { ...auth, ...(body !== undefined ? { 'content-type': 'application/fhir+json' } : {}), ...headers },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, headers: res.headers, text, json: text ? JSON.parse(text) : undefined };
    },
  };
}
