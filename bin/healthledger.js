#!/usr/bin/env node
// The `healthledger` command. The TypeScript sources are compiled to dist/ by `npm install` (prepare).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';

// V8 lets the heap grow to several times what survived the last full GC before it collects again; a node
// that loads the FHIR definitions (about 70 MB that stay) then peaked near 500 MB of RSS while ingesting.
// Growing by 30% keeps the peak near 320 MB at the same throughput (measured in the README's benchmarks).
// An operator's own `node --heap-growing-percent=N` wins.
if (!process.execArgv.some((a) => a.startsWith('--heap-growing-percent'))) setFlagsFromString('--heap-growing-percent=30');

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  console.error('healthledger: not built yet; run `npm install` (or `npm run build`) in the project folder');
  process.exit(2);
}
const { run } = await import(main.href);
process.exitCode = await run(process.argv);
