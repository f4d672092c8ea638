/**
 * How a node talks to other members' nodes: SMART Backend Services sign-in with its member key
 * (client_credentials + private_key_jwt, EdDSA; the client id is the organization id), tokens kept until
 * shortly before they expire, and the `/exchange/v1` calls. Every call has a deadline.
 */
import type { KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';
import { HlError, newNonce, type Clock } from '../kernel/index.js';
import { parseEverythingPackage, type EverythingPackage, type EverythingRequest } from './protocol.js';

/** A member's node as the membership names it. */
export interface MemberEndpoint {
  id: string;
  url: string;
}

const tokenTypeJwtBearer = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

function errorCodeOf(status: number): ConstructorParameters<typeof HlError>[0] {
  if (status === 401) return 'login';
  if (status === 403) return 'forbidden';
  if (status === 404 || status === 410) return 'not-found';
  if (status === 400 || status === 422) return 'invalid';
  if (status === 409) return 'conflict';
  return 'pushback';
}

async function diagnosticsOf(res: Response): Promise<string> {
  try {
    const body = JSON.parse(await boundedText(res, maxSmallAnswerBytes, 'peer')) as { issue?: { diagnostics?: string }[]; error_description?: string };
    return (body.issue?.[0]?.diagnostics ?? body.error_description ?? `HTTP ${res.status}`).slice(0, 300);
  } catch {
    return `HTTP ${res.status}`;
  }
}

/** The most of a checkpoint answer read (a signed note is at most 64 KiB). */
const maxNoteAnswerBytes = 64 * 1024;
/** The most of an `everything` answer read (the parser takes at most 1,000,000 entries and 100,000 leaves). */
const maxEverythingAnswerBytes = 256 * 1024 * 1024;
/** The most of an error or token answer read. */
const maxSmallAnswerBytes = 64 * 1024;

/** A peer's answer body as text, refusing (and cancelling) it beyond `maxBytes`. */
async function boundedText(res: Response, maxBytes: number, peer: string): Promise<string> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > maxBytes) {
    await res.body?.cancel().catch(() => undefined);
    throw new HlError('invalid', `${peer}'s answer is too large (${declared} bytes)`);
  }
  if (res.body === null) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new HlError('invalid', `${peer}'s answer is too large (more than ${maxBytes} bytes)`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The client side of node-to-node calls. */
export class MemberClient {
  private readonly tokens = new Map<string, { token: string; expiresAtMs: number }>();

  constructor(
    private readonly deps: {
      orgId: string;
      privateKey: KeyObject;
      keyId: string;
      clock: Clock;
      timeoutMs?: number;
    },
  ) {}

  private get timeoutMs(): number {
    return this.deps.timeoutMs ?? 5000;
  }

  /** A bearer token from `member`'s token endpoint, reused until 30 s before it expires. */
  async token(member: MemberEndpoint, fresh = false): Promise<string> {
    const now = this.deps.clock.nowMs();
    const cached = this.tokens.get(member.url);
    if (!fresh && cached && cached.expiresAtMs - 30_000 > now) return cached.token;
    const endpoint = `${member.url}/auth/token`;
    const assertion = await new SignJWT({})
      .setProtectedHeader({ alg: 'EdDSA', kid: this.deps.keyId })
      .setIssuer(this.deps.orgId)
      .setSubject(this.deps.orgId)
      .setAudience(endpoint)
      .setJti(newNonce())
      .setIssuedAt(Math.floor(now / 1000))
      .setExpirationTime(Math.floor(now / 1000) + 120)
      .sign(this.deps.privateKey);
    const res = await this.call(endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'client_credentials',
        scope: 'system/*.rs',
        client_assertion_type: tokenTypeJwtBearer,
        client_assertion: assertion,
      }).toString(),
    });
    if (!res.ok) throw new HlError(errorCodeOf(res.status), `${member.id} refused this node's sign-in: ${await diagnosticsOf(res)}`);
    let body: { access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(await boundedText(res, maxSmallAnswerBytes, member.id)) as typeof body;
    } catch {
      throw new HlError('pushback', `${member.id} answered the sign-in with malformed JSON`);
    }
    if (typeof body !== 'object' || body === null) throw new HlError('pushback', `${member.id} answered the sign-in without a token`);
    if (typeof body.access_token !== 'string') throw new HlError('pushback', `${member.id} answered the sign-in without a token`);
    const ttl = typeof body.expires_in === 'number' ? body.expires_in : 60;
    this.tokens.set(member.url, { token: body.access_token, expiresAtMs: now + ttl * 1000 });
    return body.access_token;
  }

  /** Asks a custodian for everything it may show of a patient (its answer is checked for shape only). */
  async everything(member: MemberEndpoint, request: EverythingRequest): Promise<EverythingPackage> {
    let res: Response | undefined;
    for (const fresh of [false, true]) {
      const token = await this.token(member, fresh);
      res = await this.call(`${member.url}/exchange/v1/everything`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify(request),
      });
      if (res.status !== 401) break;
    }
    if (!res!.ok) throw new HlError(errorCodeOf(res!.status), `${member.id}: ${await diagnosticsOf(res!)}`);
    const text = await boundedText(res!, maxEverythingAnswerBytes, member.id);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new HlError('invalid', `${member.id} answered with malformed JSON`);
    }
    return parseEverythingPackage(body);
  }

  /** Sends a signed checkpoint to a member; its answer is the note it holds for that size (cosigned, or its own on a fork). */
  async postCheckpoint(member: MemberEndpoint, note: string): Promise<{ status: number; note: string }> {
    const res = await this.call(`${member.url}/exchange/v1/checkpoint`, { method: 'POST', headers: { 'content-type': 'text/plain; charset=utf-8' }, body: note });
    return { status: res.status, note: await boundedText(res, maxNoteAnswerBytes, member.id) };
  }

  private async call(url: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, { ...init, signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (err) {
      throw new HlError('pushback', `${new URL(url).host} could not be reached: ${(err as Error).name === 'TimeoutError' ? 'timed out' : (err as Error).message}`);
    }
  }
}
