/**
 * @module ledger
 * Tx types and their validation rules ("contracts"), the RFC 9162 Merkle tree and proofs (pure), hash-
 * chained blocks, C2SP checkpoints and cosignatures, ledger state, ledger storage, and full audit.
 * May import: kernel, crypto. The browser-safe verifier is the separate entry `./verify.ts`
 * (package subpath `healthledger/verify`).
 */
export { memberNoteKeys, mergeCheckpoints, nodeEd25519Verify, verifyMemberCheckpoint, type SignedCheckpoint } from './cosign.js';
export { auditLedger, type AuditOptions, type AuditProblem, type AuditReport } from './audit.js';
export { blockHash, genesisPrevHash, txsHash, type BlockHeader, type OrderedBatch, type StoredTx } from './block.js';
export {
  accessActions,
  maxAccessEntries,
  maxEmergencyMs,
  approvalMessage,
  isKnownTxType,
  memberFromDescriptor,
  patientLinkMessage,
  patientNetworkId,
  registeredPatient,
  signApproval,
  signPatientLink,
  validateTx,
  type Approval,
  type OrgDescriptor,
  type TxContext,
  maxCommitVersions,
} from './contracts.js';
export { Ledger, nodeHasher, type LedgerSigner, type TxReceipt } from './ledger.js';
export * as merkle from './merkle/index.js';
/** The public, browser-safe verifier (also the package subpath `healthledger/verify`). */
export * as publicVerifier from './verify.js';
export {
  SignatureType,
  cosignatureMessage,
  formatCheckpoint,
  formatSignedNote,
  formatVerifierKey,
  noteKeyId,
  parseCheckpoint,
  parseSignedNote,
  parseVerifierKey,
  signCosignature,
  signNoteSignature,
  verifyNote,
  type Checkpoint,
  type NoteSignature,
  type NoteVerifierKey,
  type SignedNote,
} from './note.js';
export { LedgerState, type ConsentRecord, type EmergencyAccess, type Member, type PatientLink, type RegisteredPatient } from './state.js';
export {
  checkConsentGrantBody,
  patientIdPattern,
  periodContains,
  purposesOfUse,
  sensitivityLabels,
  type ConsentActor,
  type ConsentGrantBody,
  type ConsentProvision,
  type ConsentRevokeBody,
  type PurposeOfUse,
  type SensitivityLabel,
} from './consent-policy.js';
export type { BlockRecord, LedgerHead, LedgerStore } from './storage/ledger-store.js';
export { SqliteLedgerStore, openSqliteLedgerStore } from './storage/sqlite/sqlite-ledger-store.js';
export { OffLoopWal } from './storage/sqlite/off-loop-wal.js';
export { WalCheckpointer } from './storage/sqlite/wal-checkpointer.js';
export { WalFlush } from './storage/sqlite/wal-flush.js';
export { entryBundle, formatTileIndex, parseTilePath, readTile, type TilePath } from './tiles.js';
export { TxType, maxTxBytes, parseTx, signTx, signTxAsync, type ParsedTx, type TxEnvelope, type TxInput, type TxSigner } from './tx.js';
