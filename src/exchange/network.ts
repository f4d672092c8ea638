/**
 * Cross-organization reads (DESIGN.md §8). As custodian, a node answers `everything` for a patient linked
 * to one of its records: it waits (bounded) until it has applied as much of the ledger as the requester,
 * lets the guarded repository decide by consent and audit the access, and packs each version with its
 * proof against one final checkpoint. As requester, it finds the custodians on the ledger (`patient.link`),
 * asks each (itself included, without HTTP), verifies every entry and returns one searchset Bundle in which
 * each resource names its custodian in `meta.source`; what fails verification or cannot be fetched is an
 * OperationOutcome entry, never a resource.
 */
import { HlError, isHlError, type Clock } from '../kernel/index.js';
import type { Ledger, PatientLink, PurposeOfUse } from '../ledger/index.js';
import type { AccessContext, GuardedRepository, LedgeredRepository } from '../repository/index.js';
import type { MemberClient } from './member-client.js';
import { packLeaf, packVersion, type EverythingPackage, type EverythingRequest } from './protocol.js';
import { verifyPackage } from './verify-package.js';

/** How long a custodian waits to reach the requester's ledger size, or for a final checkpoint. */
const catchUpMs = 3000;

/** `meta.source` of a resource fetched from `custodian`. */
export function custodianSource(custodian: string): string {
  return `urn:healthledger:org:${custodian}`;
}

type BundleEntry = { fullUrl?: string; resource: Record<string, unknown>; search: { mode: 'match' | 'outcome' } };

/** A searchset Bundle of everything a patient's consents let the requester see, from every custodian. */
export interface NetworkBundle {
  resourceType: 'Bundle';
  type: 'searchset';
  total: number;
  entry: BundleEntry[];
}

export class NetworkExchange {
  constructor(
    private readonly deps: {
      orgId: string;
      ledger: Ledger;
      access: GuardedRepository;
      repository: LedgeredRepository;
      client: MemberClient;
      clock: Clock;
      /** The local Patient id behind one of this node's ledger pseudonyms. */
      localPatientOf: (pseudonym: string) => Promise<string | undefined>;
      /** Resolves once the ledger has `treeSize` entries or rejects with `pushback` after `ms`. */
      waitForTreeSize: (treeSize: number, ms: number) => Promise<void>;
      onFork: (message: string) => void;
    },
  ) {}

  /** This node's newest link for a patient, or undefined. */
  private ownLink(patient: string): PatientLink | undefined {
    return (this.deps.ledger.state.links.get(patient) ?? []).filter((l) => l.custodian === this.deps.orgId).at(-1);
  }

  /** Custodian side: everything `ctx` may see of the patient's record here, with proofs. */
  async everythingAsCustodian(request: EverythingRequest, ctx: AccessContext): Promise<EverythingPackage> {
    if (this.deps.ledger.treeSize < request.minTreeSize) await this.deps.waitForTreeSize(request.minTreeSize, catchUpMs);
    const link = this.ownLink(request.patient);
    const localId = link && (await this.deps.localPatientOf(link.pseudonym));
    if (!link || localId === undefined) throw new HlError('not-found', `${this.deps.orgId} holds no record linked to ${request.patient}`);
    const versions = await this.deps.access.everything(ctx, localId);
    const deadline = this.deps.clock.nowMs() + catchUpMs;
    for (;;) {
      try {
        const proofs = await this.deps.repository.proofs(versions);
        return {
          custodian: this.deps.orgId,
          checkpoint: proofs.checkpoint,
          treeSize: proofs.treeSize,
          pseudonym: link.pseudonym,
          leaves: proofs.leaves.map(packLeaf),
          entries: versions.map((v, i) => packVersion(v.content, proofs.versions[i]!)),
        };
      } catch (err) {
        // The newest versions wait for their checkpoint to be cosigned by a majority.
        if (!isHlError(err) || (err as HlError).code !== 'pushback' || this.deps.clock.nowMs() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /** Requester side: `POST /fhir/Patient/$network-everything`. */
  async networkEverything(ctx: AccessContext, patient: string): Promise<NetworkBundle> {
    // This node asks the custodians as its organization, naming who asks: only its own staff and apps may
    // make it ask. Another organization's node asks the custodians itself; a patient reads their own
    // records at each node.
    if (ctx.requester.org !== this.deps.orgId || ctx.requester.patient !== undefined || ctx.selfPatient !== undefined) {
      throw new HlError('forbidden', `only ${this.deps.orgId}'s own staff and system clients may ask other custodians through this node`);
    }
    const state = this.deps.ledger.state;
    if (!state.patients.has(patient)) throw new HlError('not-found', `no patient ${patient} is registered on the ledger`);
    const custodians = new Map<string, PatientLink>();
    for (const l of state.links.get(patient) ?? []) custodians.set(l.custodian, l);
    const request: EverythingRequest = {
      patient,
      purpose: ctx.purpose as PurposeOfUse,
      ...(ctx.reason ? { reason: ctx.reason } : {}),
      ...(ctx.requester.user ? { practitioner: ctx.requester.user } : {}),
      ...(ctx.requester.roles && ctx.requester.roles.length > 0 ? { roles: [...ctx.requester.roles] } : {}),
      ...(ctx.requester.app !== undefined ? { app: ctx.requester.app } : {}),
      minTreeSize: this.deps.ledger.treeSize,
    };
    const answers = await Promise.all(
      [...custodians.values()].map(async (link) => {
        const member = state.members.get(link.custodian);
        try {
          if (!member) throw new HlError('not-found', `custodian ${link.custodian} is no longer a member`);
          const pkg =
            link.custodian === this.deps.orgId
              ? await this.everythingAsCustodian(request, ctx)
              : member.url === undefined
                ? (() => {
                    throw new HlError('not-found', `the membership names no URL for ${link.custodian}`);
                  })()
                : await this.deps.client.everything({ id: member.id, url: member.url }, request);
          const verdict = verifyPackage(pkg, this.deps.ledger, { custodian: link.custodian, pseudonym: link.pseudonym });
          if (verdict.fork) this.deps.onFork(`${link.custodian}: ${verdict.fork}`);
          return { link, base: member.url, verdict, error: null };
        } catch (err) {
          return { link, base: member?.url, verdict: null, error: err as Error };
        }
      }),
    );
    const entry: BundleEntry[] = [];
    let total = 0;
    for (const a of answers) {
      const custodian = a.link.custodian;
      for (const e of a.verdict?.entries ?? []) {
        const r = e.resource as { resourceType: string; id: string; meta?: Record<string, unknown> };
        entry.push({
          ...(a.base ? { fullUrl: `${a.base}/fhir/${r.resourceType}/${r.id}` } : {}),
          resource: { ...r, meta: { ...r.meta, source: custodianSource(custodian) } },
          search: { mode: 'match' },
        });
        total++;
      }
      for (const failure of a.verdict?.failures ?? []) entry.push(outcome('error', 'processing', failure));
      if (a.error) {
        const code = isHlError(a.error) ? (a.error as HlError).code : 'exception';
        const issueCode = code === 'forbidden' ? 'forbidden' : code === 'not-found' ? 'not-found' : code === 'pushback' ? 'transient' : 'processing';
        entry.push(outcome(issueCode === 'not-found' || issueCode === 'forbidden' ? 'warning' : 'error', issueCode, `${custodian}: ${a.error.message}`));
      }
    }
    return { resourceType: 'Bundle', type: 'searchset', total, entry };
  }
}

function outcome(severity: 'error' | 'warning', code: string, diagnostics: string): BundleEntry {
  return { resource: { resourceType: 'OperationOutcome', issue: [{ severity, code, diagnostics }] }, search: { mode: 'outcome' } };
}
