/**
 * @module ordering
 * The `Orderer` interface (DESIGN.md §4) and its implementations: `LocalOrderer` (embedded, durable, group
 * commit; one node or the one-process demo) and `EtcdOrderer` (an etcd cluster: one create-if-absent key per
 * block height, reads by range with the watch only as a hint). May import: kernel, ledger.
 */
export type { Orderer, SubmitResult } from './orderer.js';
export { LocalOrderer, type LocalOrdererOptions } from './local/local-orderer.js';
export { EtcdOrderer, malformedProposer, maxEtcdBatchBytes, type EtcdOrdererOptions, type OrdererLog } from './etcd/etcd-orderer.js';
export { decodeTxs, encodeTxs } from './batch-codec.js';
