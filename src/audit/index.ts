/**
 * @module audit
 * FHIR AuditEvent (IHE BALP) building, access entries for the ledger (`access.log`) and the accounting of
 * disclosures. May import: kernel, fhir, ledger.
 */
export { accessEntryOf, buildAuditEvent, maxAuditedResources, type AccessAction, type AccessEntry, type AuditInput } from './audit-event.js';
