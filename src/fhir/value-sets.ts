/**
 * Expands the ValueSets that required bindings name into sets of codes, from their `expansion` or their
 * `compose` (FHIR R4 valueset.html#compose): `include` of listed concepts, of a whole CodeSystem (all its
 * concepts, nested ones too), or of other ValueSets; `exclude` the same way. Expansions are cached per URL.
 * A ValueSet that cannot be enumerated from the shipped definitions (a grammar-based code system such as
 * BCP 13 mime types or ISO 4217 currencies, UCUM, a filter, an unknown or incomplete CodeSystem) is reported
 * as such, and for the two grammar-based ones a syntax check stands in for membership.
 */
import type { CodeSystemConcept, ValueSet, ValueSetComposeInclude, ValueSetExpansionContains } from '@medplum/fhirtypes';
import { canonicalUrl, terminology, type Terminology } from './definitions.js';

/** The codes of a ValueSet, or why they cannot be listed. */
export type ValueSetExpansion =
  | {
      kind: 'enumerated';
      /** Every code, whatever its system: for `code` elements, whose system is implied by the binding. */
      codes: ReadonlySet<string>;
      /** `system|code` pairs: for Coding and CodeableConcept values, which carry their system. */
      systemCodes: ReadonlySet<string>;
    }
  | { kind: 'pattern'; pattern: RegExp }
  | { kind: 'not-enumerable'; reason: string };

/**
 * ValueSets defined by a whole grammar-based code system: a syntax check is all that can be done offline.
 * BCP 13 (RFC 6838 §4.2 type/subtype, optional parameters) and ISO 4217 (three capital letters).
 */
const patternValueSets: ReadonlyMap<string, RegExp> = new Map([
  [
    'http://hl7.org/fhir/ValueSet/mimetypes',
    /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}(\s*;.*)?$/,
  ],
  ['http://hl7.org/fhir/ValueSet/currencies', /^[A-Z]{3}$/],
]);

class NotEnumerable extends Error {}

interface CodeList {
  codes: Set<string>;
  systemCodes: Set<string>;
}

function addCode(list: CodeList, system: string | undefined, code: string | undefined): void {
  if (code === undefined) return;
  list.codes.add(code);
  if (system !== undefined) list.systemCodes.add(`${system}|${code}`);
}

function addContains(list: CodeList, contains: readonly ValueSetExpansionContains[] | undefined): void {
  for (const c of contains ?? []) {
    if (!c.abstract) addCode(list, c.system, c.code);
    addContains(list, c.contains);
  }
}

function addConcepts(list: CodeList, system: string, concepts: readonly CodeSystemConcept[] | undefined): void {
  for (const c of concepts ?? []) {
    addCode(list, system, c.code);
    addConcepts(list, system, c.concept);
  }
}

/** Caches expansions per canonical URL; one instance per loaded Terminology. */
export class ValueSetExpander {
  private readonly cache = new Map<string, ValueSetExpansion>();

  constructor(private readonly terminology: Terminology) {}

  /** The expansion of the ValueSet with this canonical URL (a `|version` suffix is ignored). */
  expand(url: string): ValueSetExpansion {
    const key = canonicalUrl(url);
    let expansion = this.cache.get(key);
    if (expansion === undefined) {
      expansion = this.compute(key);
      this.cache.set(key, expansion);
    }
    return expansion;
  }

  private compute(url: string): ValueSetExpansion {
    const pattern = patternValueSets.get(url);
    if (pattern) return { kind: 'pattern', pattern };
    try {
      const list = this.codesOf(url, new Set());
      return { kind: 'enumerated', codes: list.codes, systemCodes: list.systemCodes };
    } catch (err) {
      if (err instanceof NotEnumerable) return { kind: 'not-enumerable', reason: err.message };
      throw err;
    }
  }

  private codesOf(url: string, visiting: Set<string>): CodeList {
    const key = canonicalUrl(url);
    if (visiting.has(key)) throw new NotEnumerable(`ValueSet ${key} includes itself`);
    const vs: ValueSet | undefined = this.terminology.valueSet(key);
    if (!vs) throw new NotEnumerable(`ValueSet ${key} is not in the definitions`);
    const list: CodeList = { codes: new Set(), systemCodes: new Set() };
    if (vs.expansion?.contains) {
      addContains(list, vs.expansion.contains);
      return list;
    }
    if (!vs.compose) throw new NotEnumerable(`ValueSet ${key} has neither expansion nor compose`);
    visiting.add(key);
    for (const include of vs.compose.include) this.merge(list, this.codesOfInclude(include, visiting), 'add');
    for (const exclude of vs.compose.exclude ?? []) this.merge(list, this.codesOfInclude(exclude, visiting), 'delete');
    visiting.delete(key);
    return list;
  }

  /** One `include`/`exclude`: its system part and its valueSet parts, intersected (valueset.html#compose). */
  private codesOfInclude(include: ValueSetComposeInclude, visiting: Set<string>): CodeList {
    const parts: CodeList[] = [];
    if (include.system !== undefined) {
      const system = include.system;
      const part: CodeList = { codes: new Set(), systemCodes: new Set() };
      if (include.filter?.length) throw new NotEnumerable(`an include of ${system} uses a filter`);
      if (include.concept?.length) {
        for (const c of include.concept) addCode(part, system, c.code);
      } else {
        const cs = this.terminology.codeSystem(system);
        if (!cs) throw new NotEnumerable(`CodeSystem ${system} is not in the definitions`);
        if (cs.content !== 'complete') throw new NotEnumerable(`CodeSystem ${system} is not complete (${cs.content})`);
        addConcepts(part, system, cs.concept);
      }
      parts.push(part);
    }
    for (const vs of include.valueSet ?? []) parts.push(this.codesOf(vs, visiting));
    const [first, ...rest] = parts;
    if (!first) return { codes: new Set(), systemCodes: new Set() };
    for (const other of rest) {
      for (const code of first.codes) if (!other.codes.has(code)) first.codes.delete(code);
      for (const sc of first.systemCodes) if (!other.systemCodes.has(sc)) first.systemCodes.delete(sc);
    }
    return first;
  }

  private merge(into: CodeList, from: CodeList, op: 'add' | 'delete'): void {
    if (op === 'add') {
      for (const c of from.codes) into.codes.add(c);
      for (const sc of from.systemCodes) into.systemCodes.add(sc);
      return;
    }
    for (const sc of from.systemCodes) into.systemCodes.delete(sc);
    // A bare code leaves the set only if no remaining system still defines it.
    const remaining = new Set([...into.systemCodes].map((sc) => sc.slice(sc.lastIndexOf('|') + 1)));
    for (const c of from.codes) if (!remaining.has(c)) into.codes.delete(c);
  }
}

let shared: ValueSetExpander | undefined;

/**
 * The process-wide expander over the loaded R4 terminology (loading the definitions first if needed), so that
 * the full validator and its fast path share one cache of expansions.
 */
export function sharedValueSetExpander(): ValueSetExpander {
  shared ??= new ValueSetExpander(terminology());
  return shared;
}
