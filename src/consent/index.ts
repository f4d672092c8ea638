/**
 * @module consent
 * The consent model and the access decision (DESIGN.md §6): the pure `decide()` over the consents a patient
 * signed onto the ledger (FHIR R4 Consent provision semantics, deny-overrides, break-glass rules), and the
 * mapping between the ledger's `consent.grant` body and FHIR R4 `Consent` resources.
 * May import: kernel, fhir, ledger (DESIGN.md §2). Pure: no fs, net or clock; the request time comes in.
 */
export { decide, type AccessRequest, type ConsentView, type Decision, type Obligation } from './decide.js';
export { ConsentSystem, consentFromFhir, consentProxyExtensionUrl, consentToFhir, practitionerSystem } from './fhir-consent.js';
