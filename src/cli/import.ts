/**
 * `healthledger import`: loads FHIR transaction/batch Bundles (.json) and NDJSON resources (.ndjson, one
 * resource a line, sent as transactions of up to 500) into a node over HTTP, with a progress bar and a
 * summary of what failed and why (OperationOutcome diagnostics only, which carry no data values).
 */
import { readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { outcomeSummary } from './http.js';

/** What one file did. */
export interface ImportFileResult {
  file: string;
  resources: number;
  ok: boolean;
  error?: string;
}

const ndjsonChunk = 500;

function bundlesOf(file: string): { bundles: unknown[]; resources: number } {
  const text = readFileSync(file, 'utf8');
  if (file.endsWith('.ndjson')) {
    const lines = text.split('\n').filter((l) => l.trim().length > 0);
    const resources = lines.map((line, i) => {
      try {
        return JSON.parse(line) as { resourceType?: unknown };
      } catch {
        throw new Error(`line ${i + 1} is not valid JSON`);
      }
    });
    const bundles = [];
    for (let i = 0; i < resources.length; i += ndjsonChunk) {
      bundles.push({
        resourceType: 'Bundle',
        type: 'transaction',
        entry: resources.slice(i, i + ndjsonChunk).map((r) => ({ resource: r, request: { method: 'POST', url: String(r.resourceType) } })),
      });
    }
    return { bundles, resources: resources.length };
  }
  let bundle: { resourceType?: unknown; entry?: unknown[] };
  try {
    bundle = JSON.parse(text);
  } catch {
    throw new Error('not valid JSON');
  }
  if (bundle.resourceType !== 'Bundle') throw new Error('not a FHIR Bundle (use .ndjson for one resource a line)');
  return { bundles: [bundle], resources: Array.isArray(bundle.entry) ? bundle.entry.length : 0 };
}

/** Imports `files` into the node at `url`; `onProgress` gets resources done / total. */
export async function importFiles(
  files: readonly string[],
  options: { url: string; token: string; onProgress?: (done: number, total: number) => void },
): Promise<ImportFileResult[]> {
  const base = options.url.replace(/\/+$/, '').replace(/\/fhir$/, '');
  const total = files.reduce((n, f) => {
    try {
      return n + (statSync(f).isFile() ? 1 : 0);
    } catch {
      return n;
    }
  }, 0);
  const results: ImportFileResult[] = [];
  let done = 0;
  for (const file of files) {
    let parsed: { bundles: unknown[]; resources: number };
    try {
      parsed = bundlesOf(file);
    } catch (err) {
      results.push({ file: basename(file), resources: 0, ok: false, error: err instanceof Error ? err.message.replace(/^ENOENT.*/, 'file not found') : 'unreadable' });
      options.onProgress?.(++done, total);
      continue;
    }
    let error: string | undefined;
    for (const bundle of parsed.bundles) {
      let res: Response;
      try {
        res = await fetch(`${base}/fhir`, {
          method: 'POST',
          headers: { 'content-type': 'application/fhir+json', authorization: `Bearer ${options.token}` },
          body: JSON.stringify(bundle),
        });
      } catch {
        throw new Error(`cannot reach ${base}`);
      }
      const body = (await res.json().catch(() => null)) as { issue?: { diagnostics?: string }[] } | null;
      if (res.status === 401) throw new Error(`the node refused the token: ${body?.issue?.[0]?.diagnostics ?? 'unauthorized'}`);
      if (!res.ok) {
        error = outcomeSummary(res.status, body);
        break;
      }
    }
    results.push({ file: basename(file), resources: parsed.resources, ok: error === undefined, ...(error ? { error } : {}) });
    options.onProgress?.(++done, total);
  }
  return results;
}
