/**
 * Node-to-node routes at `/exchange/v1` (DESIGN.md §8, §9) and `POST /fhir/Patient/$network-everything`.
 * - `POST /exchange/v1/checkpoint`: a member's signed checkpoint (text/plain); the answer is the note this
 *   node now holds for that size with its cosignature, or 409 with its own note when the roots differ.
 *   Signed notes authenticate themselves: no token.
 * - `POST /exchange/v1/everything`: only other members' nodes, with a token from this node's SMART token
 *   endpoint obtained with their member key.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { HlError } from '../kernel/index.js';
import { parseEverythingRequest, type EverythingPackage, type EverythingRequest, type NetworkBundle } from '../exchange/index.js';
import type { AccessContext } from '../repository/index.js';
import { purposesOfUse, type PurposeOfUse } from '../ledger/index.js';

/** What the exchange routes need from the node. */
export interface ExchangeRouteDeps {
  /** Cosigns a member's checkpoint; `{ status: 409, note }` (this node's own note) on a fork. */
  receiveCheckpoint(note: string): Promise<{ status: 200 | 409; note: string }>;
  /** True when `org` is a current member other than this node. */
  isOtherMember(org: string): boolean;
  everything(request: EverythingRequest, ctx: AccessContext): Promise<EverythingPackage>;
  networkEverything(ctx: AccessContext, patient: string): Promise<NetworkBundle>;
}

const maxNoteBytes = 64 * 1024;

type Parameter = { name?: unknown; valueString?: unknown; valueCode?: unknown; valueIdentifier?: { value?: unknown } };

/** The `$network-everything` Parameters: patient (network id), purpose, optional reason. */
function parseNetworkParameters(body: unknown): { patient: string; purpose?: PurposeOfUse; reason?: string } {
  const b = body as { resourceType?: unknown; parameter?: unknown } | null;
  if (typeof b !== 'object' || b === null || b.resourceType !== 'Parameters' || !Array.isArray(b.parameter)) {
    throw new HlError('invalid', '$network-everything takes a Parameters resource');
  }
  const one = (name: string): string | undefined => {
    const found = (b.parameter as Parameter[]).filter((p) => p?.name === name);
    if (found.length > 1) throw new HlError('invalid', `parameter "${name}" is given more than once`);
    const p = found[0];
    if (!p) return undefined;
    const value = p.valueString ?? p.valueCode ?? p.valueIdentifier?.value;
    if (typeof value !== 'string' || value.length === 0) throw new HlError('invalid', `parameter "${name}" needs a string value`);
    return value;
  };
  const patient = one('patient');
  if (patient === undefined) throw new HlError('invalid', 'parameter "patient" (the patient network id) is required');
  const purpose = one('purpose');
  if (purpose !== undefined && !(purposesOfUse as readonly string[]).includes(purpose)) {
    throw new HlError('invalid', `parameter "purpose" must be one of ${purposesOfUse.join(', ')}`);
  }
  const reason = one('reason');
  if (reason !== undefined && reason.length > 1000) throw new HlError('invalid', 'parameter "reason" is longer than 1000 characters');
  return { patient, ...(purpose ? { purpose: purpose as PurposeOfUse } : {}), ...(reason ? { reason } : {}) };
}

/** Registers the exchange routes. `contextOf` turns a /fhir request into its access context. */
export function registerExchangeRoutes(app: FastifyInstance, deps: ExchangeRouteDeps, contextOf: (req: FastifyRequest) => AccessContext): void {
  void app.register(async (scope) => {
    scope.addContentTypeParser('text/plain', { parseAs: 'string', bodyLimit: maxNoteBytes }, (_req, body, done) => done(null, body));
    scope.post('/exchange/v1/checkpoint', async (req, reply) => {
      if (typeof req.body !== 'string') throw new HlError('invalid', 'send the signed checkpoint note as text/plain');
      const answer = await deps.receiveCheckpoint(req.body);
      reply.code(answer.status).type('text/plain; charset=utf-8').send(answer.note);
    });
  });

  app.post('/exchange/v1/everything', async (req) => {
    const token = req.token;
    if (!token || token.kind !== 'system' || token.org === undefined || !deps.isOtherMember(token.org)) {
      throw new HlError('forbidden', "only another member organization's node may ask for a patient's records here");
    }
    const request = parseEverythingRequest(req.body);
    const ctx: AccessContext = {
      purpose: request.purpose,
      ...(request.reason ? { reason: request.reason } : {}),
      requester: {
        org: token.org,
        ...(request.practitioner ? { user: request.practitioner } : {}),
        ...(request.roles ? { roles: request.roles } : {}),
        ...(token.client ? { client: token.client } : {}),
        // An app of the requesting organization is judged as an app here too.
        ...(request.app ? { app: request.app } : {}),
      },
    };
    req.accessContext = ctx;
    return deps.everything(request, ctx);
  });

  app.post('/fhir/Patient/$network-everything', async (req, reply) => {
    const params = parseNetworkParameters(req.body);
    const base = contextOf(req);
    const ctx: AccessContext = { ...base, ...(params.purpose ? { purpose: params.purpose } : {}), ...(params.reason ? { reason: params.reason } : {}) };
    const bundle = await deps.networkEverything(ctx, params.patient);
    reply.type('application/fhir+json');
    return bundle;
  });
}
