/**
 * The encryption layout every `RecordStore` backend shares (record-store.ts, DESIGN.md §5), so a database
 * written by one backend decrypts with the same code in another: a version is sealed as
 * `AES-256-GCM(DEK, salt || content, aad = type/id/_history/vid)`, DEKs and the one blind-index key are
 * wrapped by the node's KEK, and search values are stored as keyed blind-index terms. Pure apart from the
 * random IVs and keys of `node:crypto`; no database access.
 */
import { HlError, concatBytes, utf8 } from '../kernel/index.js';
import { open, rewrapKey, seal, unwrapKey } from '../crypto/index.js';
import { blindIndexMac, blindIndexTerm, isBlindIndexKind, type BlindIndexMac, isIndexName, termForQuery, termsForWrite, type IndexTerm } from './blind-index.js';
import { saltBytes } from './commitment.js';
import type { IndexCriterion, VersionWrite } from './record-store.js';

/** The DEK owner of resources outside any patient compartment; `*` is not a FHIR id, so no patient can take it. */
export const nodeOwner = '*';
/** The `store_meta` key of the wrapped blind-index key. */
export const indexKeyName = 'index-key';
/**
 * The `store_meta` key of the id (`kekIdOf`) of the KEK that wraps the blind-index key and every DEK. Each
 * `store_dek` row also carries the id of its wrapping KEK; a rotation changes all of them in one transaction.
 */
export const kekIdName = 'kek-id';
/**
 * The `store_dek.kek_id` of rows written before key ids existed: all wrapped under the store's KEK, which is
 * the KEK that unwraps the blind-index key (an open with it fills in the id).
 */
export const legacyKekId = '';

const maxDekCache = 10_000;
const maxTermCache = 65_536;

/** The associated data a version is sealed with: `${resourceType}/${id}/_history/${versionId}`. */
export function aadOf(resourceType: string, id: string, versionId: string): Uint8Array {
  return utf8(versionRef(resourceType, id, versionId));
}

/** How errors name a version (ids only, never content). */
export function versionRef(resourceType: string, id: string, versionId: string): string {
  return `${resourceType}/${id}/_history/${versionId}`;
}

/** Seals a version's `salt || content` under its compartment's DEK, bound to its ids by the AAD. */
export function sealVersion(dek: Uint8Array, v: VersionWrite): Uint8Array {
  return seal(dek, concatBytes(v.salt, v.content), aadOf(v.resourceType, v.id, v.versionId));
}

/**
 * Opens a sealed version into its salt and content; throws `integrity`, naming the version, when the
 * ciphertext was altered, swapped with another version's or sealed under another key.
 */
export function openVersion(
  dek: Uint8Array,
  sealed: Uint8Array,
  resourceType: string,
  id: string,
  versionId: string,
): { salt: Uint8Array; content: Uint8Array } {
  const ref = versionRef(resourceType, id, versionId);
  let plain: Uint8Array;
  try {
    plain = open(dek, sealed, aadOf(resourceType, id, versionId));
  } catch (cause) {
    throw new HlError('integrity', `${ref} failed authentication: its ciphertext was altered, swapped or sealed under another key`, { cause });
  }
  if (plain.length < saltBytes) throw new HlError('integrity', `${ref} decrypted to fewer bytes than a salt`);
  return { salt: plain.subarray(0, saltBytes), content: plain.subarray(saltBytes) };
}

/** Unwraps the store's blind-index key; `integrity` when `kek` is not the store's (wrong or retired). */
export function unwrapIndexKey(kek: Uint8Array, wrapped: Uint8Array): Uint8Array {
  try {
    return unwrapKey(kek, wrapped);
  } catch (cause) {
    throw new HlError('integrity', 'the KEK does not unwrap this record store\'s keys (a wrong or retired KEK?)', { cause });
  }
}

/**
 * Throws `integrity` unless the KEK a store is opened with (`givenId`) is the one it records (`storeId`;
 * undefined for a store from before key ids, which the index key then decides). Names both ids, never a key.
 */
export function requireStoreKek(storeId: string | undefined, givenId: string): void {
  if (storeId === undefined || storeId === givenId) return;
  throw new HlError(
    'integrity',
    `this record store's keys are wrapped under KEK ${storeId}, not under the KEK given (${givenId}): a retired or wrong key-encryption key`,
  );
}

/** Throws `invalid` when a rotation's new KEK is the current one (it would re-wrap under the same key). */
export function requireNewKek(currentId: string, newId: string): void {
  if (currentId === newId) throw new HlError('invalid', `the new KEK is the current one (${currentId})`);
}

/** Re-wraps one wrapped DEK from `oldKek` to `newKek`; `integrity`, naming the compartment, if it does not unwrap. */
export function rewrapDataKey(oldKek: Uint8Array, newKek: Uint8Array, owner: string, wrapped: Uint8Array): Uint8Array {
  try {
    return rewrapKey(oldKek, newKek, wrapped);
  } catch (cause) {
    throw new HlError('integrity', `the data key of compartment ${owner} does not unwrap under the current KEK`, { cause });
  }
}

/**
 * Unwrapped DEKs by owner, each with the wrapped bytes it came from: a lookup with other wrapped bytes (a
 * re-created, re-wrapped or altered row) misses, so the database row is always the authority.
 */
export class DekCache {
  private readonly entries = new Map<string, { wrapped: Uint8Array; dek: Uint8Array }>();

  /**
   * The DEK of `owner` from `wrapped`, unwrapped under the KEK its row names (`kekId`, looked up in `keks`,
   * the KEKs the store holds by id), cached. Throws `integrity`, naming the compartment, when the store does
   * not hold that KEK or it does not unwrap the key (altered).
   */
  unwrap(keks: ReadonlyMap<string, Uint8Array>, owner: string, kekId: string, wrapped: Uint8Array): Uint8Array {
    const hit = this.entries.get(owner);
    if (hit && Buffer.compare(hit.wrapped, wrapped) === 0) return hit.dek;
    const kek = keks.get(kekId);
    if (kek === undefined) {
      throw new HlError(
        'integrity',
        `the data key of compartment ${owner} is wrapped under KEK ${kekId || '(none recorded)'}, not under this store's KEK ${[...keks.keys()].join(' or ')}`,
      );
    }
    let dek: Uint8Array;
    try {
      dek = unwrapKey(kek, wrapped);
    } catch (cause) {
      throw new HlError('integrity', `the data key of compartment ${owner} failed to unwrap under KEK ${kekId} (altered)`, { cause });
    }
    return this.set(owner, wrapped, dek);
  }

  /**
   * Caches a DEK this store just created and wrapped, and returns the cached copy: the cache takes the key,
   * zeroing `dek` once copied. Copies, because a small Buffer is often a view into an 8 KiB pool slab (or a
   * larger read buffer) that a long-lived view keeps alive: ten thousand cached keys held that way pinned
   * tens of MB.
   */
  set(owner: string, wrapped: Uint8Array, dek: Uint8Array): Uint8Array {
    if (!this.entries.has(owner) && this.entries.size >= maxDekCache) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.evict(oldest.value);
    }
    this.evict(owner);
    const entry = { wrapped: Uint8Array.from(wrapped), dek: Uint8Array.from(dek) };
    dek.fill(0);
    this.entries.set(owner, entry);
    return entry.dek;
  }

  /** Forgets (and zeroes) the DEK of `owner`. */
  evict(owner: string): void {
    const hit = this.entries.get(owner);
    if (hit) hit.dek.fill(0);
    this.entries.delete(owner);
  }

  /** Forgets every DEK (their wrapped bytes changed, e.g. after a KEK rotation). */
  clear(): void {
    for (const owner of [...this.entries.keys()]) this.evict(owner);
  }
}

/**
 * Computes the stored blind-index terms (blind-index.ts) under the store's index key. Terms of tokens,
 * references and buckets repeat across resources (codes, statuses, patient references), so they are
 * cached; strings (names, addresses) are not, so the cache holds no such PHI.
 */
export class BlindTermHasher {
  private readonly cache = new Map<string, Uint8Array>();

  private readonly mac: BlindIndexMac;

  constructor(indexKey: Uint8Array) {
    this.mac = blindIndexMac(indexKey);
  }

  /** The stored term of a normalized value. */
  termOf(resourceType: string, param: string, term: IndexTerm): Uint8Array {
    if (term.kind === 'string' || term.kind === 'prefix') return blindIndexTerm(this.mac, resourceType, param, term);
    const key = `${resourceType}|${param}|${term.kind}|${term.value}`;
    let hit = this.cache.get(key);
    if (hit === undefined) {
      // A copy of its own: the MAC's output is a view into a larger buffer, which a cached view keeps alive.
      hit = Uint8Array.from(blindIndexTerm(this.mac, resourceType, param, term));
      if (this.cache.size >= maxTermCache) this.cache.clear();
      this.cache.set(key, hit);
    }
    return hit;
  }

  /** The distinct stored terms of a version's index entries, concatenated (null when none, or deleted). */
  termsOfWrite(v: VersionWrite): Buffer | null {
    if (v.deleted || (v.index ?? []).length === 0) return null;
    const seen = new Set<string>();
    const parts: Uint8Array[] = [];
    for (const entry of v.index ?? []) {
      for (const term of termsForWrite(entry)) {
        const stored = this.termOf(v.resourceType, entry.param, term);
        const key = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength).toString('latin1');
        if (seen.has(key)) continue;
        seen.add(key);
        parts.push(stored);
      }
    }
    return Buffer.concat(parts);
  }

  /** The terms one search criterion looks up (its values are alternatives); `invalid` for a malformed one. */
  termsOfCriterion(resourceType: string, criterion: IndexCriterion): Uint8Array[] {
    if (!isIndexName(criterion.param)) throw new HlError('invalid', 'param is empty, too long or contains "|"');
    if (!isBlindIndexKind(criterion.kind)) throw new HlError('invalid', 'kind is not a blind-index kind');
    const values = typeof criterion.value === 'string' ? [criterion.value] : criterion.value;
    if (values.length === 0) throw new HlError('invalid', 'a search criterion needs at least one value');
    return values.map((value) => this.termOf(resourceType, criterion.param, termForQuery(criterion.kind, value)));
  }
}
