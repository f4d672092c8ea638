/**
 * The encrypted record store contract (DESIGN.md §5), one interface for every backend (`sqlite/`,
 * `postgres/`), checked by one conformance suite (`record-store.conformance.ts`).
 *
 * At rest, each version's `salt || content` is sealed with AES-256-GCM under its patient's data key (DEK),
 * with associated data `${resourceType}/${id}/_history/${versionId}`; DEKs (and the one blind-index key)
 * are wrapped by the node's key-encryption key (KEK), and each wrapped key is stored with the id of the KEK
 * that wrapped it (`kekIdOf`, crypto), as is the store's own record of its KEK, all changed together by a
 * rotation. In clear the store keeps only what is not PHI:
 * resource types, server-assigned opaque ids (UUIDs: a FHIR id carries no PHI, so the server never takes
 * an id from content such as an MRN), version ids, `lastUpdated` (server time of the write), the patient
 * compartment owner's id, the deleted flag, the commit status, the ledger tx id and write/erasure times.
 * Search values exist only as keyed blind-index terms (`blind-index.ts`).
 *
 * Write protocol with the ledger (issue 3 §5): the repository writes versions `pending` with their ledger
 * tx id, submits `record.commit`, and calls `markCommitted` once the tx is ordered; pending versions are
 * invisible to reads, history and search. After a crash, `pendingVersions` lists the undecided ones: those
 * whose tx is on the ledger are marked committed, the rest dropped with `dropPending`.
 */
import type { BlindIndexEntry, BlindIndexKind } from './blind-index.js';

/** Commit status of a stored version. */
export const VersionStatus = { pending: 'pending', committed: 'committed' } as const;
export type VersionStatus = (typeof VersionStatus)[keyof typeof VersionStatus];

/** One version of a resource, as stored and as read back. */
export interface StoredVersion {
  resourceType: string;
  /** The FHIR id, `[A-Za-z0-9\-.]{1,64}`: server-assigned and opaque (stored in clear). */
  id: string;
  /** The FHIR versionId, same syntax as an id. */
  versionId: string;
  /** The version's `meta.lastUpdated`, a FHIR instant (stored in clear). */
  lastUpdated: string;
  /** True for the version a delete created (FHIR http.html#delete; vread answers 410 Gone). */
  deleted: boolean;
  /**
   * Id of the patient whose compartment holds the resource; its versions are sealed under that patient's
   * DEK and erased with it. `null` for resources outside any patient compartment (Organization,
   * Practitioner...), sealed under the node-wide DEK.
   */
  patient: string | null;
  /** The exact RFC 8785 bytes of the version as read/vread returns it (meta included). */
  content: Uint8Array;
  /** The 32-byte commitment salt (DESIGN.md §3); stored encrypted with the content. */
  salt: Uint8Array;
  status: VersionStatus;
  /** The ledger tx that commits this version, when known. */
  txId: string | null;
}

/** A version to write, with the blind-index entries of its searchable values (none for a deleted version). */
export interface VersionWrite extends StoredVersion {
  index?: readonly BlindIndexEntry[];
}

/** Paging of a history (FHIR http.html#history), newest first. */
export interface HistoryOptions {
  /** Page size, 1..1000 (default 100). */
  limit?: number;
  /** Versions to skip after the cursor (default 0). Prefer `cursor`: it is stable while writes go on. */
  offset?: number;
  /** The `nextCursor` of a previous page: continue strictly after it. Opaque. */
  cursor?: string;
  /** Only versions whose lastUpdated is at or after this FHIR instant (`_since`). */
  since?: string;
}

/** A page of committed, non-erased versions, newest first (in write order, which the server's clock makes lastUpdated order). */
export interface HistoryPage {
  versions: StoredVersion[];
  /** Pass as `cursor` for the next page; null when this is the last page. */
  nextCursor: string | null;
}

/** A pending version, for crash recovery. */
export interface PendingVersion {
  resourceType: string;
  id: string;
  versionId: string;
  txId: string | null;
  /** When the store wrote it, ms since the Unix epoch (store clock). */
  writtenMs: number;
}

/** Which pending versions `dropPending` removes. */
export type PendingSelector = { txIds: readonly string[] } | { writtenBeforeMs: number };

/** One blind-index search criterion; several values are alternatives (FHIR's comma: OR). */
export interface IndexCriterion {
  param: string;
  kind: BlindIndexKind;
  value: string | readonly string[];
}

/** A resource in a patient compartment. */
export interface ResourceRef {
  resourceType: string;
  id: string;
}

/** What an erasure did. */
export interface ErasureReport {
  /** Versions whose ciphertext and salt were deleted. */
  versionsErased: number;
  /**
   * True when the backend also purged storage-level residue (SQLite: deleted cells zeroed and the WAL
   * checkpointed and truncated), so old bytes are gone from the database files too; false when it could
   * not: on SQLite another reader kept the log from being truncated (call again later); on PostgreSQL
   * always, since dead row versions, freed page space and WAL segments keep old bytes until the server
   * happens to overwrite them (see postgres-record-store.ts). Either way the data cannot be decrypted
   * without the deleted DEK.
   */
  residuePurged: boolean;
}

/** What a KEK rotation did. */
export interface RotationReport {
  /** Data keys (DEKs: one per patient compartment, plus the node-wide one) re-wrapped. */
  dataKeysRewrapped: number;
  /** Wrapped keys re-wrapped: every DEK plus the blind-index key. */
  keysRewrapped: number;
  /** Id of the retired KEK (`kekIdOf`). */
  fromKekId: string;
  /** Id of the KEK the store's keys are wrapped under now. */
  toKekId: string;
  /** As in {@link ErasureReport}: copies wrapped under the old KEK are gone from the files too. */
  residuePurged: boolean;
}

/** Options of {@link RecordStore.rotateKek}. */
export interface RotationOptions {
  /**
   * Called while keys are re-wrapped, inside the rotation's transaction, with how many of `total` wrapped
   * keys are done (at least at the start and at the end). If it throws, the rotation rolls back and rejects
   * with that error: every key stays under the old KEK.
   */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Encrypted, versioned FHIR resource storage. Every method is atomic. Errors are `HlError`s:
 * `invalid` (malformed arguments; `issues` lists every problem with its expression, never a value),
 * `not-found` (no such version, a pending one, or an erased one: the message then says "erased"),
 * `conflict` (a version that already exists; a write into an erased patient's compartment),
 * `integrity` (a ciphertext or wrapped key failed authentication: altered, swapped or under another key;
 * the message names the version, and no data is returned).
 * Opening a store (`open…`/`create…` of each backend) MUST reject with `integrity` a KEK that is not the
 * one the store records (by id: the message names both ids) or that does not unwrap the store's keys.
 */
export interface RecordStore {
  /** Id (`kekIdOf`) of the KEK this store's keys are wrapped under: the one it was opened or rotated with. */
  readonly kekId: string;
  /**
   * Seals and writes versions in one transaction: all or none. Each (resourceType, id, versionId) is
   * written once (a duplicate is `conflict`: the optimistic lock of update with If-Match). A committed
   * version becomes its resource's current version, and its index entries replace the previous version's;
   * a pending one waits for `markCommitted`.
   */
  writeVersions(versions: readonly VersionWrite[]): Promise<void>;
  /**
   * The version `versionId` (FHIR vread), or without it the current one (read): the newest committed
   * version, possibly a deleted one (`deleted: true`). Pending versions are not found.
   */
  readVersion(resourceType: string, id: string, versionId?: string): Promise<StoredVersion>;
  /** History of one resource (FHIR history-instance), newest first. */
  historyInstance(resourceType: string, id: string, options?: HistoryOptions): Promise<HistoryPage>;
  /** History of every resource of a type (FHIR history-type), newest first. */
  historyType(resourceType: string, options?: HistoryOptions): Promise<HistoryPage>;
  /** History of everything (FHIR history-system), newest first. */
  historySystem(options?: HistoryOptions): Promise<HistoryPage>;
  /** Marks the pending versions of these ledger txs committed; returns how many versions changed. */
  markCommitted(txIds: readonly string[]): Promise<number>;
  /** Pending versions in write order (crash recovery). */
  pendingVersions(): Promise<PendingVersion[]>;
  /** Deletes pending versions (by tx, or written before a time) and their index entries; returns how many. */
  dropPending(which: PendingSelector): Promise<number>;
  /**
   * Crypto-shreds a patient (GDPR Art. 17, DESIGN.md §3 "Erasure"): deletes the patient's DEK, every
   * ciphertext and salt of their compartment, and their index entries. Later reads are `not-found`
   * ("erased"), and later writes for that patient `conflict`. Ids and version ids stay (no PHI), so the
   * ledger's record.commit entries still resolve to "erased".
   */
  erasePatient(patient: string): Promise<ErasureReport>;
  /** Deletes one version's ciphertext, salt and index entries; later reads of it are `not-found` ("erased"). */
  eraseVersion(resourceType: string, id: string, versionId: string): Promise<ErasureReport>;
  /**
   * Re-wraps every DEK and the blind-index key under `newKek` and records its id with each, in one
   * transaction (all keys under the new KEK, or on any failure or crash all under the old one), without
   * touching any data or index row, and uses `newKek` from then on (DESIGN.md §5). `invalid` when `newKek`
   * is not 32 bytes or is the current KEK. The blind-index key is re-wrapped, not replaced: changing it would
   * mean recomputing every index term from the decrypted resources (a reindex), which this does not do.
   */
  rotateKek(newKek: Uint8Array, options?: RotationOptions): Promise<RotationReport>;
  /** Ids of current resources of a type matching any of `value` for one parameter (sorted). */
  findByIndex(resourceType: string, param: string, kind: BlindIndexKind, value: string | readonly string[]): Promise<string[]>;
  /** Ids of current resources matching every criterion (intersection; sorted). */
  findByIndexAll(resourceType: string, criteria: readonly IndexCriterion[]): Promise<string[]>;
  /** Ids of the current, not deleted, not erased resources of a type (sorted): the base of an unindexed search. */
  currentIds(resourceType: string): Promise<string[]>;
  /** Current, not deleted, not erased resources in a patient's compartment (for `Patient/$everything`). */
  compartment(patient: string): Promise<ResourceRef[]>;
}
