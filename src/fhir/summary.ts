/**
 * The `_summary` and `_elements` result parameters (http://hl7.org/fhir/R4/search.html#summary,
 * search.html#elements): a subset of a resource built from its StructureDefinition (ElementDefinition.isSummary
 * and .min), marked with the SUBSETTED tag so that nobody mistakes it for the whole resource. The ledger
 * commitment covers the whole version, so a subsetted copy is not verifiable by `$proof`; read or vread gives
 * the whole version. Pure.
 */
import { HlError } from '../kernel/index.js';
import { resourceElement, type ResourceElement } from './definitions.js';

/** The values of `_summary` (search.html#summary). */
export const summaryModes = ['true', 'text', 'data', 'count', 'false'] as const;
export type SummaryMode = (typeof summaryModes)[number];

/** The tag a subsetted resource carries (search.html#summary; v3 ObservationValue SUBSETTED). */
export const subsettedTag = {
  system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue',
  code: 'SUBSETTED',
  display: 'subsetted',
} as const;

type Json = Record<string, unknown>;

/** The element of `parentPath` a JSON key names: `valueQuantity` → `value` (a choice), `_birthDate` → `birthDate`. */
function elementOfKey(parentPath: string, key: string): ResourceElement | undefined {
  const name = key.startsWith('_') ? key.slice(1) : key;
  const direct = resourceElement(`${parentPath}.${name}`);
  if (direct) return direct.isChoice ? undefined : direct;
  for (let i = name.length - 1; i > 0; i--) {
    const c = name.charCodeAt(i);
    if (c < 65 || c > 90) continue;
    const choice = resourceElement(`${parentPath}.${name.slice(0, i)}`);
    if (choice?.isChoice) return choice;
  }
  return undefined;
}

/** The top-level element name a JSON key belongs to (`valueQuantity` → `value`), or undefined. */
function baseNameOfKey(resourceType: string, key: string): string | undefined {
  const name = key.startsWith('_') ? key.slice(1) : key;
  if (resourceElement(`${resourceType}.${name}`)) return name;
  for (let i = name.length - 1; i > 0; i--) {
    const c = name.charCodeAt(i);
    if (c >= 65 && c <= 90 && resourceElement(`${resourceType}.${name.slice(0, i)}`)?.isChoice) return name.slice(0, i);
  }
  return undefined;
}

function summaryElements(value: Json, path: string): Json {
  const out: Json = {};
  for (const [key, v] of Object.entries(value)) {
    if (key === 'resourceType') {
      out[key] = v;
      continue;
    }
    const element = elementOfKey(path, key);
    if (!element?.isSummary) continue;
    out[key] = element.isBackbone ? mapObjects(v, (o) => summaryElements(o, element.childrenOf)) : v;
  }
  return out;
}

function mapObjects(value: unknown, f: (o: Json) => Json): unknown {
  if (Array.isArray(value)) return value.map((x) => mapObjects(x, f));
  return typeof value === 'object' && value !== null ? f(value as Json) : value;
}

function withSubsettedTag(resource: Json): Json {
  const meta = (resource.meta ?? {}) as Json & { tag?: { system?: string; code?: string }[] };
  const tags = Array.isArray(meta.tag) ? meta.tag : [];
  if (tags.some((t) => t.code === subsettedTag.code && t.system === subsettedTag.system)) return resource;
  return { ...resource, meta: { ...meta, tag: [...tags, { ...subsettedTag }] } };
}

/**
 * Checks `_elements` names against the resource type: each must be a top-level element of its
 * StructureDefinition (a choice by its base name `value` or a typed name `valueQuantity`). Throws `invalid`
 * naming the first unknown one.
 */
export function checkElementNames(resourceType: string, names: readonly string[]): void {
  for (const name of names) {
    if (!/^[A-Za-z][A-Za-z0-9]{0,63}$/.test(name) || baseNameOfKey(resourceType, name) === undefined) {
      throw new HlError('invalid', `_elements: "${name.slice(0, 64)}" is not an element of ${resourceType}`);
    }
  }
}

/**
 * The resource as `_summary` and `_elements` ask (search.html#summary, #elements), tagged SUBSETTED; the
 * resource itself when neither asks for a subset. `true`: the elements marked isSummary, at every level of
 * backbone elements; `text`: text, id, meta and the mandatory top-level elements; `data`: all but text;
 * `elements`: those top-level elements plus id, meta and the mandatory ones. `resourceType` is always kept.
 */
export function subsetResource(resource: Json & { resourceType: string }, summary: SummaryMode, elements: readonly string[] | null): Json {
  const type = resource.resourceType;
  const keep = (test: (key: string) => boolean): Json => {
    const out: Json = {};
    for (const [key, v] of Object.entries(resource)) if (key === 'resourceType' || test(key)) out[key] = v;
    return out;
  };
  const isMandatory = (key: string): boolean => {
    const base = baseNameOfKey(type, key);
    return base !== undefined && (resourceElement(`${type}.${base}`)?.min ?? 0) > 0;
  };
  if (elements !== null) {
    const wanted = new Set(elements);
    return withSubsettedTag(
      keep((key) => {
        const bare = key.startsWith('_') ? key.slice(1) : key;
        return key === 'id' || key === 'meta' || wanted.has(bare) || wanted.has(baseNameOfKey(type, key) ?? '') || isMandatory(key);
      }),
    );
  }
  switch (summary) {
    case 'true':
      return withSubsettedTag(summaryElements(resource, type));
    case 'text':
      return withSubsettedTag(keep((key) => key === 'id' || key === 'meta' || key === 'text' || isMandatory(key)));
    case 'data':
      return withSubsettedTag(keep((key) => key !== 'text'));
    case 'count':
    case 'false':
      return resource;
  }
}
