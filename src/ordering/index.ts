/**
 * @module ordering
 * The `Orderer` interface and its implementations: `LocalOrderer` (embedded, durable, group commit) and,
 * with the network issue, `EtcdOrderer`. May import: kernel, ledger.
 */
export type { Orderer, SubmitResult } from './orderer.js';
export { LocalOrderer, type LocalOrdererOptions } from './local/local-orderer.js';
export { decodeTxs, encodeTxs } from './batch-codec.js';
