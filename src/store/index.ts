/**
 * @module store
 * The encrypted record store (DESIGN.md §5): FHIR resource versions sealed with AES-256-GCM under
 * per-patient data keys (DEKs) wrapped by the node's key-encryption key (KEK), keyed blind search indexes,
 * crypto-shredding erasure, KEK rotation without rewriting data, and the salted ledger commitment of a
 * version (DESIGN.md §3). One `RecordStore` interface, backends in `sqlite/` and `postgres/`,
 * checked by one conformance suite (`record-store.conformance.ts`, test-only).
 * May import: kernel, crypto, fhir (DESIGN.md §2); it needs only kernel and crypto.
 */
export {
  BlindIndexKind,
  blindIndexMac,
  blindIndexTerm,
  blindIndexTermBytes,
  isBlindIndexKind,
  maxPrefixLength,
  normalizeString,
  numberBucket,
  termForQuery,
  termsForWrite,
  type BlindIndexEntry,
  type IndexTerm,
} from './blind-index.js';
export { commitmentOf, contentOf, generateSalt, saltBytes } from './commitment.js';
export {
  VersionStatus,
  type ErasureReport,
  type HistoryOptions,
  type HistoryPage,
  type IndexCriterion,
  type PendingSelector,
  type PendingVersion,
  type RecordStore,
  type ResourceRef,
  type RotationOptions,
  type RotationReport,
  type StoredVersion,
  type VersionWrite,
} from './record-store.js';
export { SqliteRecordStore, openSqliteRecordStore, type SqliteRecordStoreOptions } from './sqlite/sqlite-record-store.js';
export {
  PostgresRecordStore,
  openPostgresRecordStore,
  type PostgresRecordStoreOptions,
} from './postgres/postgres-record-store.js';
