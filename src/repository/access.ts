/**
 * Who is asking and whether they may have a version (DESIGN.md §6): the repository's authorize step. The
 * custodian's own treating staff read its records; everyone else (SMART apps, patients and proxies, other
 * organizations, research and payment purposes) gets what the patient's consents on the ledger permit, as
 * the consent module's `decide()` says.
 */
import { decide, type Decision } from '../consent/index.js';
import { sensitivityLabels, type Ledger, type PurposeOfUse } from '../ledger/index.js';

/** The requester and purpose of one request, as the API authenticated them. */
export interface AccessContext {
  requester: {
    /** The organization vouching for the request: this node's own for its staff, apps and patients. */
    org: string;
    /** Local user (staff) or practitioner id at `org`. */
    user?: string;
    roles?: readonly string[];
    /** SMART client id, when an app or system client asks. */
    client?: string;
    /** Set when the requester is an app or system client rather than the organization's staff. */
    app?: string;
    /** Network id of a patient asking (for themself, or as a proxy). */
    patient?: string;
  };
  /** The local Patient id of a patient's own token: that patient's records are theirs to read. */
  selfPatient?: string;
  purpose: PurposeOfUse;
  /** Break-glass reason (purpose ETREAT). */
  reason?: string;
  /** Set by the repository once it has audited this request's refusal, so the API does not audit it twice. */
  refusalAudited?: boolean;
}

/** A version as the guard judges it. */
export interface GuardedVersion {
  resourceType: string;
  /** Local Patient id of the compartment, or null. */
  patient: string | null;
  content: Uint8Array;
}

const labelSet: ReadonlySet<string> = new Set(sensitivityLabels);

/** The sensitivity labels (`meta.security` codes) of a version's content. */
export function labelsOf(content: Uint8Array): string[] {
  const text = new TextDecoder().decode(content);
  // Cheap skip: a version without meta.security has no labels.
  if (!text.includes('"security"')) return [];
  const meta = (JSON.parse(text) as { meta?: { security?: { code?: unknown }[] } }).meta;
  return (meta?.security ?? []).map((s) => s.code).filter((c): c is string => typeof c === 'string' && labelSet.has(c));
}

/**
 * True when `orgId`'s own staff ask, whatever their purpose: not an app or system client, not a patient or
 * proxy, not another organization. Linking, erasure, conditional writes and the accounting of disclosures
 * are theirs; reading without consent is theirs only when treating (`AccessGuard.isCustodianStaff`).
 */
export function isOwnStaff(ctx: AccessContext, orgId: string): boolean {
  const r = ctx.requester;
  return r.org === orgId && r.app === undefined && r.patient === undefined && ctx.selfPatient === undefined;
}

const permitOutside: Decision = { effect: 'permit', reason: 'not in a patient compartment', consentIds: [], obligations: [] };
const permitOwn: Decision = { effect: 'permit', reason: "the patient's own record", consentIds: [], obligations: [] };

/** The repository's access decisions. */
export class AccessGuard {
  constructor(
    private readonly deps: {
      orgId: string;
      ledger: Ledger;
      pseudonymOf: (patientId: string) => string;
      nowMs: () => number;
    },
  ) {}

  /** True for the custodian's own treating staff, whose reads need no consent (DESIGN.md §6). */
  isCustodianStaff(ctx: AccessContext): boolean {
    return isOwnStaff(ctx, this.deps.orgId) && (ctx.purpose === 'TREAT' || ctx.purpose === 'ETREAT');
  }

  /** The patient as the ledger knows them: their network id if linked here, else this node's pseudonym. */
  ledgerPatientOf(localPatient: string): string {
    const pseudonym = this.deps.pseudonymOf(localPatient);
    return this.deps.ledger.state.patientOfPseudonym(this.deps.orgId, pseudonym) ?? pseudonym;
  }

  /** The decision for one version (`resource` given) or for a patient as a whole (request level). */
  decide(ctx: AccessContext, localPatient: string | null, resource?: { class: string; labels: readonly string[] }): Decision {
    if (localPatient === null) return permitOutside;
    if (ctx.selfPatient !== undefined && ctx.selfPatient === localPatient) return permitOwn;
    return decide(
      {
        patient: this.ledgerPatientOf(localPatient),
        custodian: this.deps.orgId,
        requester: {
          org: ctx.requester.org,
          ...(ctx.requester.user !== undefined ? { practitioner: ctx.requester.user } : {}),
          ...(ctx.requester.roles !== undefined ? { roles: ctx.requester.roles } : {}),
          ...(ctx.requester.patient !== undefined ? { patient: ctx.requester.patient } : {}),
          ...(ctx.requester.app !== undefined ? { app: ctx.requester.app } : {}),
        },
        purpose: ctx.purpose,
        ...(ctx.reason !== undefined ? { reason: ctx.reason } : {}),
        ...(resource ? { resource } : {}),
        atMs: this.deps.nowMs(),
      },
      this.deps.ledger.state,
    );
  }

  /**
   * The decision for a stored or served version. `currentLabels` (of the resource's current version) join
   * the version's own: a label added later covers the earlier versions too.
   */
  decideVersion(ctx: AccessContext, v: GuardedVersion, currentLabels: readonly string[] = []): Decision {
    if (v.patient === null) return permitOutside;
    const labels = [...new Set([...labelsOf(v.content), ...currentLabels])];
    return this.decide(ctx, v.patient, { class: v.resourceType, labels });
  }
}
