/**
 * FHIR R4 AuditEvents in the IHE Basic Audit Log Patterns (BALP) shape, and the pseudonymous `access.log`
 * entry that goes onto the ledger for each (DESIGN.md §7). Pure: the caller supplies time and ids.
 *
 * BALP (https://profiles.ihe.net/ITI/BALP/): type `rest`, subtype the RESTful interaction, the client as
 * source role (DCM 110153), the server as destination role (DCM 110152), the human user if any, the
 * patient as entity role 1, the data as role 4 (domain resource) and a query as role 24.
 */
import type { AuditEvent, AuditEventAgent, AuditEventEntity } from '@medplum/fhirtypes';
import { toBase64, utf8 } from '../kernel/index.js';
import type { accessActions } from '../ledger/index.js';

/** What was done, as the ledger's access entries name it (the `access.log` contract's list). */
export type AccessAction = (typeof accessActions)[number];

/** One audited interaction. */
export interface AuditInput {
  /** RFC 3339 time the interaction was decided. */
  recorded: string;
  action: AccessAction;
  outcome: 'permit' | 'deny';
  /** Why, in words free of PHI: a decision reason or an error. */
  reason?: string;
  purpose: string;
  /** The node that served the request (the custodian). */
  custodian: string;
  /** Who asked. */
  requester: {
    org: string;
    /** Local user name or practitioner id at `org`. */
    user?: string;
    /** SMART client id. */
    client?: string;
    /** A patient (self) or proxy network id. */
    patient?: string;
  };
  /** Local Patient id whose data it was, if one. */
  patient?: string;
  /** References of the resources served or written (`Type/id/_history/v`). */
  resources?: readonly string[];
  /** The query of a search, as sent. */
  query?: string;
  /** Id of an `emergency.access` this access relied on. */
  emergency?: string;
  /**
   * The written break-glass reason and the salt of its ledger commitment (`emergency.access` carries only
   * SHA-256(salt || reason)), kept in the AuditEvent, which is encrypted at rest, so the reason can be
   * shown and proven later.
   */
  emergencyReason?: { text: string; salt: string };
  /**
   * A refused request (authentication, authorization or bad input) rather than an access to data: the
   * AuditEvent is a DICOM Security Alert naming the route, the HTTP status and the client's address.
   */
  refused?: { route: string; status: number; address?: string };
}

const subtypeByAction: Record<AccessAction, string> = {
  read: 'read',
  vread: 'vread',
  search: 'search-type',
  history: 'history-instance',
  create: 'create',
  update: 'update',
  delete: 'delete',
  export: 'operation',
  everything: 'operation',
  proof: 'operation',
  erase: 'delete',
};

const actionCode: Record<AccessAction, AuditEvent['action']> = {
  read: 'R',
  vread: 'R',
  search: 'E',
  history: 'R',
  create: 'C',
  update: 'U',
  delete: 'D',
  export: 'E',
  everything: 'E',
  proof: 'E',
  erase: 'D',
};

const dcm = 'http://dicom.nema.org/resources/ontology/DCM';

/** Most resource references one AuditEvent lists; the count is always exact in the access entry. */
export const maxAuditedResources = 200;

/** The BALP AuditEvent of one interaction. */
export function buildAuditEvent(input: AuditInput): AuditEvent {
  const agents: AuditEventAgent[] = [
    {
      type: { coding: [{ system: dcm, code: '110153', display: 'Source Role ID' }] },
      who: { identifier: { system: 'urn:healthledger:org', value: input.requester.org } },
      ...(input.requester.client ? { altId: input.requester.client } : {}),
      requestor: input.requester.user === undefined && input.requester.patient === undefined,
    },
    {
      type: { coding: [{ system: dcm, code: '110152', display: 'Destination Role ID' }] },
      who: { identifier: { system: 'urn:healthledger:org', value: input.custodian } },
      requestor: false,
    },
  ];
  if (input.requester.user !== undefined) {
    agents.push({
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/extra-security-role-type', code: 'humanuser', display: 'human user' }] },
      who: { identifier: { system: `urn:healthledger:org:${input.requester.org}:user`, value: input.requester.user } },
      requestor: true,
    });
  }
  if (input.requester.patient !== undefined) {
    agents.push({
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleClass', code: 'PAT', display: 'patient' }] },
      who: { identifier: { system: 'urn:healthledger:patient', value: input.requester.patient } },
      requestor: true,
    });
  }
  const entities: AuditEventEntity[] = [];
  if (input.patient !== undefined) {
    entities.push({
      what: { reference: `Patient/${input.patient}` },
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1', display: 'Person' },
      role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1', display: 'Patient' },
    });
  }
  for (const ref of (input.resources ?? []).slice(0, maxAuditedResources)) {
    entities.push({
      what: { reference: ref },
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2', display: 'System Object' },
      role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '4', display: 'Domain Resource' },
    });
  }
  if (input.query !== undefined) {
    entities.push({
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2', display: 'System Object' },
      role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '24', display: 'Query' },
      query: toBase64(utf8(input.query)),
    });
  }
  if (input.emergency !== undefined) {
    entities.push({
      what: { identifier: { system: 'urn:healthledger:tx', value: input.emergency } },
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2', display: 'System Object' },
      description: 'emergency.access (break-glass) in force',
      ...(input.emergencyReason
        ? {
            detail: [
              { type: 'reason', valueString: input.emergencyReason.text },
              { type: 'reason-salt', valueBase64Binary: input.emergencyReason.salt },
            ],
          }
        : {}),
    });
  }
  if (input.refused) {
    agents[0]!.network = { ...(input.refused.address ? { address: input.refused.address } : {}), type: '2' };
    entities.push({
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2', display: 'System Object' },
      description: `${input.refused.route} answered HTTP ${input.refused.status}`,
    });
  }
  return {
    resourceType: 'AuditEvent',
    type: input.refused
      ? { system: dcm, code: '110113', display: 'Security Alert' }
      : { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest', display: 'RESTful Operation' },
    subtype: [{ system: 'http://hl7.org/fhir/restful-interaction', code: subtypeByAction[input.action] }],
    action: actionCode[input.action],
    recorded: input.recorded,
    outcome: input.outcome === 'permit' ? '0' : '4',
    ...(input.reason ? { outcomeDesc: input.reason } : {}),
    purposeOfEvent: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: input.purpose }] }],
    agent: agents,
    source: {
      observer: { identifier: { system: 'urn:healthledger:org', value: input.custodian } },
      type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4', display: 'Application Server' }],
    },
    ...(entities.length > 0 ? { entity: entities } : {}),
  };
}

/** One `access.log` entry (see the ledger's contract): pseudonymous ids only. */
export interface AccessEntry {
  at: string;
  /** Patient network id if linked, else the custodian's record pseudonym. */
  patient?: string;
  org: string;
  /** Pseudonym of the user at `org`. */
  user?: string;
  purpose: string;
  action: AccessAction;
  outcome: 'permit' | 'deny';
  classes?: string[];
  count?: number;
  emergency?: string;
  /** Commitment of the AuditEvent version at the custodian. */
  event?: string;
}

/**
 * The ledger entry of an audited interaction. `patient` and `user` must already be pseudonyms (the caller
 * holds the keys); the resource types are read from the references.
 */
export function accessEntryOf(
  input: AuditInput,
  pseudonyms: { patient?: string; user?: string; event?: string; count?: number },
): AccessEntry {
  const classes = [...new Set((input.resources ?? []).map((r) => r.split('/')[0]!))].sort().slice(0, 64);
  return {
    at: input.recorded,
    ...(pseudonyms.patient ? { patient: pseudonyms.patient } : {}),
    org: input.requester.org,
    ...(pseudonyms.user ? { user: pseudonyms.user } : {}),
    purpose: input.purpose,
    action: input.action,
    outcome: input.outcome,
    ...(classes.length > 0 ? { classes } : {}),
    count: pseudonyms.count ?? input.resources?.length ?? 0,
    ...(input.emergency ? { emergency: input.emergency } : {}),
    ...(pseudonyms.event ? { event: pseudonyms.event } : {}),
  };
}
