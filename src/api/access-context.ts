/**
 * Who asks and why (DESIGN.md §6), from a request's verified token and headers: the `AccessContext` the
 * repository authorizes and audits with. Purpose of use comes from the `X-Purpose-Of-Use` header (HL7 v3
 * PurposeOfUse code; TREAT when absent); a break-glass reason from `X-Break-Glass-Reason`.
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
  return {
    requester: { org: orgId, user: token.sub },
    purpose: purpose as PurposeOfUse,
    ...(reason ? { reason } : {}),
  };
}
