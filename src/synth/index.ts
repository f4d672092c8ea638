/**
 * @module synth
 * Deterministic synthetic FHIR R4 patients for the demo, tests and benchmarks. May import: kernel, fhir.
 */
export { generatePatientBundle, type TransactionBundle } from './generator.js';
export { SeededRandom } from './random.js';
