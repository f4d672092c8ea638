/**
 * Who asks and why (DESIGN.md §6), from a request's verified token and headers: the `AccessContext` the
 * repository authorizes and audits with. Purpose of use comes from the `X-Purpose-Of-Use` header (HL7 v3
 * PurposeOfUse code; TREAT when absent); a break-glass reason from `X-Break-Glass-Reason`. The token's kind
 * says who asks: the node's staff (admin, user), a patient (their own records), a local system client (an
 * app, never custodian staff), or another member organization's node, which names its acting practitioner
 * in `X-Acting-Practitioner`.
 */
import type { FastifyRequest } from 'fastify';
import { HlError } from '../kernel/index.js';
import { purposesOfUse, type PurposeOfUse } from '../ledger/index.js';
import type { AccessContext } from '../repository/index.js';

/** Longest accepted break-glass reason. */
const maxReasonLength = 1000;

/** The access context of a request that passed the token check. */
export function accessContextOf(req: FastifyRequest, orgId: string): AccessContext {
  const token = req.token;
  if (!token) throw new HlError('login', 'a bearer token is required');
  const purposeHeader = req.headers['x-purpose-of-use'];
  const purpose = typeof purposeHeader === 'string' ? purposeHeader.trim() : 'TREAT';
  if (!(purposesOfUse as readonly string[]).includes(purpose)) {
    throw new HlError('invalid', `X-Purpose-Of-Use must be one of ${purposesOfUse.join(', ')}`);
  }
  const reasonHeader = req.headers['x-break-glass-reason'];
  let reason: string | undefined;
  if (typeof reasonHeader === 'string') {
    // Header values are Latin-1 on the wire; a client may percent-encode to send any text.
    try {
      reason = decodeURIComponent(reasonHeader).trim();
    } catch {
      throw new HlError('invalid', 'X-Break-Glass-Reason is not valid percent-encoded text');
    }
    if (reason.length > maxReasonLength) throw new HlError('invalid', `X-Break-Glass-Reason is longer than ${maxReasonLength} characters`);
  }
  const base = { purpose: purpose as PurposeOfUse, ...(reason ? { reason } : {}) };
  switch (token.kind) {
    case 'patient':
      // A patient (or their app) reads their own records; through a proxy consent, others' too.
      return {
        ...base,
        requester: { org: orgId, ...(token.patientNetworkId ? { patient: token.patientNetworkId } : {}), ...(token.client ? { client: token.client, app: token.client } : {}) },
        ...(token.patient ? { selfPatient: token.patient } : {}),
      };
    case 'system':
      // Another member organization's node vouches for its own practitioner; a local system client is an app.
      if (token.org !== undefined && token.org !== orgId) {
        const acting = req.headers['x-acting-practitioner'];
        return {
          ...base,
          requester: { org: token.org, ...(typeof acting === 'string' && /^[A-Za-z0-9\-.]{1,64}$/.test(acting) ? { user: acting } : {}), ...(token.client ? { client: token.client } : {}) },
        };
      }
      return { ...base, requester: { org: orgId, client: token.client ?? token.sub, app: token.client ?? token.sub } };
    case 'user':
      return {
        ...base,
        requester: { org: orgId, user: token.practitioner ?? token.sub, ...(token.role ? { roles: [token.role] } : {}), ...(token.client ? { client: token.client } : {}) },
      };
    default:
      return { ...base, requester: { org: orgId, user: token.sub } };
  }
}
