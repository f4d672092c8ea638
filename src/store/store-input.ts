/**
 * Argument checks every `RecordStore` backend applies before touching its database, so that every backend
 * rejects the same inputs with the same `invalid` issues (expressions, never values).
 */
import { HlError, type Issue } from '../kernel/index.js';
import { aesKeyBytes } from '../crypto/index.js';
import { isBlindIndexKind, isIndexName, termsForWrite } from './blind-index.js';
import { saltBytes } from './commitment.js';
import type { HistoryOptions, VersionWrite } from './record-store.js';

const idPattern = /^[A-Za-z0-9\-.]{1,64}$/;
const resourceTypePattern = /^[A-Z][A-Za-z]{0,63}$/;
const instantPattern = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
const defaultLimit = 100;
const maxLimit = 1000;

/** True for a FHIR instant (with seconds and a zone) that also parses as a time. */
export function isInstant(value: unknown): value is string {
  return typeof value === 'string' && instantPattern.test(value) && !Number.isNaN(Date.parse(value));
}

/** Throws `invalid` unless `kek` is a 32-byte key. */
export function requireKek(kek: Uint8Array): void {
  if (!(kek instanceof Uint8Array) || kek.length !== aesKeyBytes) throw new HlError('invalid', 'a KEK is 32 bytes');
}

/** Throws `invalid`, naming `what`, unless `value` is a FHIR id. */
export function requireId(value: unknown, what: string): asserts value is string {
  if (typeof value !== 'string' || !idPattern.test(value)) throw new HlError('invalid', `${what} is not a FHIR id`);
}

/** Throws `invalid` unless `value` looks like a FHIR resource type name. */
export function requireResourceType(value: unknown): asserts value is string {
  if (typeof value !== 'string' || !resourceTypePattern.test(value)) {
    throw new HlError('invalid', 'resourceType is not a resource type name');
  }
}

/** Checks every write up front and collects every issue (nothing is written if any). */
export function validateWrites(versions: readonly VersionWrite[]): void {
  const issues: Issue[] = [];
  const add = (expression: string, message: string): void => {
    issues.push({ code: 'invalid', expression, message: `${expression} ${message}` });
  };
  versions.forEach((v, i) => {
    const at = `versions[${i}]`;
    if (typeof v.resourceType !== 'string' || !resourceTypePattern.test(v.resourceType)) add(`${at}.resourceType`, 'is not a resource type name');
    if (typeof v.id !== 'string' || !idPattern.test(v.id)) add(`${at}.id`, 'is not a FHIR id');
    if (typeof v.versionId !== 'string' || !idPattern.test(v.versionId)) add(`${at}.versionId`, 'is not a FHIR id');
    if (!isInstant(v.lastUpdated)) add(`${at}.lastUpdated`, 'is not a FHIR instant');
    if (typeof v.deleted !== 'boolean') add(`${at}.deleted`, 'is not a boolean');
    if (v.patient !== null && (typeof v.patient !== 'string' || !idPattern.test(v.patient))) add(`${at}.patient`, 'is neither null nor a FHIR id');
    if (!(v.content instanceof Uint8Array)) add(`${at}.content`, 'is not bytes');
    if (!(v.salt instanceof Uint8Array) || v.salt.length !== saltBytes) add(`${at}.salt`, 'is not 32 bytes');
    if (v.status !== 'pending' && v.status !== 'committed') add(`${at}.status`, "is neither 'pending' nor 'committed'");
    if (v.txId !== null && (typeof v.txId !== 'string' || v.txId === '')) add(`${at}.txId`, 'is neither null nor a non-empty string');
    const index = v.index ?? [];
    if (v.deleted === true && index.length > 0) add(`${at}.index`, 'must be empty for a deleted version');
    index.forEach((entry, j) => {
      const e = `${at}.index[${j}]`;
      if (typeof entry.param !== 'string' || !isIndexName(entry.param)) add(`${e}.param`, 'is empty, too long or contains "|"');
      if (!isBlindIndexKind(entry.kind)) add(`${e}.kind`, 'is not a blind-index kind');
      else if (typeof entry.value !== 'string') add(`${e}.value`, 'is not a string');
      else {
        try {
          termsForWrite(entry, `${e}.value`);
        } catch (err) {
          if (err instanceof HlError) issues.push({ code: 'invalid', expression: `${e}.value`, message: err.message });
          else throw err;
        }
      }
    });
  });
  if (issues.length > 0) throw new HlError('invalid', `${issues.length} invalid version write(s)`, { issues });
}

/** A checked {@link HistoryOptions}: `before` is the exclusive upper bound on the write sequence (from the cursor). */
export interface HistoryWindow {
  limit: number;
  offset: number;
  before: number;
  sinceMs: number;
}

/** Checks history options (`invalid` for a bad limit, offset, cursor or since) and resolves the cursor and `_since`. */
export function parseHistoryOptions(options: HistoryOptions): HistoryWindow {
  const limit = options.limit ?? defaultLimit;
  const offset = options.offset ?? 0;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > maxLimit) throw new HlError('invalid', `limit must be 1..${maxLimit}`);
  if (!Number.isSafeInteger(offset) || offset < 0) throw new HlError('invalid', 'offset must be a non-negative integer');
  let before = Number.MAX_SAFE_INTEGER;
  if (options.cursor !== undefined) {
    if (!/^[1-9]\d{0,15}$/.test(options.cursor)) throw new HlError('invalid', 'cursor is not a cursor this store issued');
    before = Number(options.cursor);
  }
  let sinceMs = Number.MIN_SAFE_INTEGER;
  if (options.since !== undefined) {
    if (!isInstant(options.since)) throw new HlError('invalid', 'since is not a FHIR instant');
    sinceMs = Date.parse(options.since);
  }
  return { limit, offset, before, sinceMs };
}
