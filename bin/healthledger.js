#!/usr/bin/env node
// The `healthledger` command. The TypeScript sources are compiled to dist/ by `npm install` (prepare).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  console.error('healthledger: not built yet; run `npm install` (or `npm run build`) in the project folder');
  process.exit(2);
}
const { run } = await import(main.href);
process.exitCode = await run(process.argv);
