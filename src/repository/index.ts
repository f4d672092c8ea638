/**
 * @module repository
 * The ONLY path to records: each call = authorize (consent, issue 4) → store → commit to ledger → audit
 * (issue 4). May import: kernel, fhir, store, ledger, consent, audit.
 */
export {
  LedgeredRepository,
  resourceOf,
  type RecordCommitBody,
  type VersionCommitment,
  type RecordCommitter,
  type RepositoryDeps,
  type Resource,
  type SearchResult,
  type ServedVersion,
  type VersionProof,
} from './ledgered-repository.js';
export { type BatchEntryResult, type BundleEntryResult } from './bundle-processor.js';
