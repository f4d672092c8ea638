/**
 * The CapabilityStatement at /fhir/metadata (http://hl7.org/fhir/R4/capabilitystatement.html). Truthful:
 * it lists exactly the interactions this server implements today, for every R4 resource type, with the
 * search parameters and `_include`/`_revinclude` values its search accepts (from the fhir module's search
 * planner, so the two cannot drift apart).
 */
import { searchCapabilitiesOf } from '../fhir/index.js';

/** Builds the CapabilityStatement for `resourceTypes`. */
export function buildCapabilityStatement(options: { resourceTypes: readonly string[]; software: { name: string; version: string }; date: string }) {
  const interactions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type'].map((code) => ({ code }));
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: options.date,
    kind: 'instance',
    software: options.software,
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    rest: [
      {
        mode: 'server',
        security: {
          description:
            'Bearer tokens signed by the node key (healthledger token). Every request except /fhir/metadata needs one. SMART on FHIR login is not implemented yet.',
        },
        interaction: [
          {
            code: 'transaction',
            documentation:
              'All or nothing. Entries: POST (ifNoneExist), PUT (Type/id or Type?search, ifMatch), PATCH (Binary application/json-patch+json), DELETE (Type/id or Type?search, ifMatch), GET/HEAD (read, vread, search). urn:uuid fullUrls and conditional references (Type?search, exactly one match) are resolved.',
          },
          { code: 'batch', documentation: 'Each entry on its own, with the same entry forms as transaction; references between entries are not resolved.' },
          { code: 'history-system' },
        ],
        resource: options.resourceTypes.map((type) => ({
          type,
          ...searchCapabilitiesOf(type),
          interaction: interactions,
          versioning: 'versioned',
          readHistory: true,
          updateCreate: false,
          conditionalCreate: true,
          conditionalUpdate: true,
          conditionalDelete: 'single',
          operation: [
            { name: 'proof', definition: 'urn:healthledger:operation:proof' },
            { name: 'validate', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate' },
            ...(type === 'Patient' ? [{ name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' }] : []),
          ],
        })),
      },
    ],
  };
}
