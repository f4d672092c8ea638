#!/usr/bin/env node
// Times validation per resource, before (the full path: @medplum/core plus our walk) and after (the compiled
// fast path, falling back to the full path), over the synth generator's output and the Synthea test vectors,
// and counts the resources the fast path vouches for. Not a test: numbers for the notes.
// Usage: npm run build && node scripts/bench-validate.mjs [--patients N] [--rounds R]
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadDefinitions, validateResource } from '../dist/fhir/index.js';
import { validateFast } from '../dist/fhir/fast-validate.js';
import { validateResourceFully } from '../dist/fhir/validate.js';
import { generatePatientBundle } from '../dist/synth/index.js';

const { values } = parseArgs({ options: { patients: { type: 'string', default: '50' }, rounds: { type: 'string', default: '5' } } });
const patients = Number(values.patients);
const rounds = Number(values.rounds);

const started = performance.now();
loadDefinitions();
console.log(`loadDefinitions: ${(performance.now() - started).toFixed(0)} ms`);

const synth = [];
for (let i = 1; i <= patients; i++) for (const e of generatePatientBundle(1, i).entry) synth.push(e.resource);
const syntheaDir = join(import.meta.dirname, '../test/vectors/synthea');
const synthea = readdirSync(syntheaDir)
  .filter((f) => f.endsWith('.json'))
  .flatMap((f) => JSON.parse(readFileSync(join(syntheaDir, f), 'utf8')).entry.map((e) => e.resource));

/** Median µs per resource over `rounds` passes (after one warm-up pass). */
function time(validate, resources) {
  for (const r of resources) validate(r);
  const perResource = [];
  for (let round = 0; round < rounds; round++) {
    const t = performance.now();
    for (const r of resources) validate(r);
    perResource.push(((performance.now() - t) * 1000) / resources.length);
  }
  return perResource.sort((a, b) => a - b)[Math.floor(rounds / 2)];
}

for (const [name, resources] of [
  [`synth output (${patients} patients, seed 1)`, synth],
  ['Synthea (test/vectors/synthea)', synthea],
]) {
  let vouched = 0;
  const reasons = new Map();
  for (const r of resources) {
    const verdict = validateFast(r);
    if (verdict.kind === 'valid') vouched++;
    else reasons.set(verdict.reason, (reasons.get(verdict.reason) ?? 0) + 1);
  }
  const before = time(validateResourceFully, resources);
  const after = time(validateResource, resources);
  const fast = time(validateFast, resources);
  console.log(`\n${name}: ${resources.length} resources`);
  console.log(`  fast path vouches for ${vouched} (${((100 * vouched) / resources.length).toFixed(1)}%)`);
  for (const [reason, n] of reasons) console.log(`    undecided ×${n}: ${reason}`);
  console.log(`  before (full path):                ${before.toFixed(1)} µs/resource`);
  console.log(`  after  (validateResource):         ${after.toFixed(1)} µs/resource (${(before / after).toFixed(1)}× faster)`);
  console.log(`         (fast path alone)           ${fast.toFixed(1)} µs/resource`);
}
