/**
 * @module exchange
 * Node-to-node protocol (DESIGN.md §8): member sign-in with SMART Backend Services, checkpoint gossip and
 * cosigning, the record locator and cross-organization reads verified entry by entry.
 * May import: kernel, crypto, fhir, ledger, repository.
 */
export { CheckpointGossip, type GossipLog } from './gossip.js';
export { MemberClient, type MemberEndpoint } from './member-client.js';
export { NetworkExchange, custodianSource, type NetworkBundle } from './network.js';
export { parseEverythingRequest, type EverythingPackage, type EverythingRequest, type PackagedVersion } from './protocol.js';
export { verifyPackage, type PackageVerdict, type VerifiedEntry } from './verify-package.js';
