/**
 * @module repository
 * The ONLY path to records: each call = authorize (consent) → store → commit to ledger → audit.
 * `GuardedRepository` is what requests reach; `LedgeredRepository` is its store-and-commit core.
 * May import: kernel, fhir, store, ledger, consent, audit.
 */
export {
  LedgeredRepository,
  commitmentsOf,
  resourceOf,
  type RecordCommitBody,
  type VersionCommitment,
  type RecordCommitter,
  type RepositoryDeps,
  type Resource,
  type SearchResult,
  type ServedVersion,
  type VersionFilter,
  type VersionProof,
} from './ledgered-repository.js';
export { AccessGuard, isOwnStaff, labelsOf, type AccessContext } from './access.js';
export { GuardedRepository, emergencyAccessMs, type GuardedRepositoryDeps } from './guarded-repository.js';
export { type BatchEntryResult, type BundleEntryResult } from './bundle-processor.js';
