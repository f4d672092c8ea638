#!/usr/bin/env node
// `npm test`: build (the CLI tests run the built program), type-check the tests, run every vitest test, then
// print the plain `N passed, N failed, N skipped` line that CI reads. Exit status is vitest's.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';

const run = (cmd, args) => spawnSync(cmd, args, { stdio: 'inherit' }).status ?? 1;

for (const project of ['tsconfig.json', 'tsconfig.test.json']) {
  if (run('npx', ['tsc', '-p', project]) !== 0) {
    console.error(`type check failed (${project})`);
    console.log('Tests: 0 passed, 1 failed, 0 skipped');
    process.exit(1);
  }
}

const results = '.vitest-results.json';
rmSync(results, { force: true });
const status = run('npx', [
  'vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${results}`, ...process.argv.slice(2),
]);
if (existsSync(results)) {
  const r = JSON.parse(readFileSync(results, 'utf8'));
  const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  // Files that fail to load count as failures too.
  const failedFiles = (r.testResults ?? []).filter((f) => f.status === 'failed' && (f.assertionResults ?? []).length === 0).length;
  console.log(`Tests: ${r.numPassedTests} passed, ${r.numFailedTests + failedFiles} failed, ${skipped} skipped`);
} else {
  console.log('Tests: 0 passed, 1 failed, 0 skipped');
}
process.exit(status);
