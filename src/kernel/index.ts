/**
 * @module kernel
 * Errors with a stable code catalog, ids, the clock and byte helpers. Imports nothing (DESIGN.md §2) and is
 * browser-safe: no `node:` imports, so `healthledger/verify` can use it.
 */
export { ErrorCode, HlError, isHlError, type Issue } from './errors.js';
export {
  concatBytes,
  equalBytes,
  fromBase64,
  fromBase64Url,
  fromHex,
  fromUtf8,
  readUint64BE,
  toBase64,
  toBase32,
  toBase64Url,
  toHex,
  uint64BE,
  utf8,
} from './bytes.js';
export { isOrgId, newNonce, newResourceId, orgIdFromName, randomBytes } from './ids.js';
export { fixedClock, systemClock, utcTimestampMs, type Clock } from './clock.js';
