/**
 * The member client never holds more of a peer's answer than a protocol answer can be: a member node (or
 * whatever answers at its URL) that streams without end gets an error, not the requester's memory.
 */
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateEd25519KeyPair } from '../crypto/index.js';
import { MemberClient } from './member-client.js';

let server: Server;
let url = '';
let sent = 0;

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === '/auth/token') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: 't', expires_in: 300 }));
      return;
    }
    // An answer that never ends: 1 MiB chunks as fast as the client takes them.
    const chunk = Buffer.alloc(1 << 20, 0x20);
    res.writeHead(200, { 'content-type': req.url === '/exchange/v1/checkpoint' ? 'text/plain' : 'application/json' });
    const push = () => {
      while (!res.destroyed && res.write(chunk)) sent += chunk.length;
      if (!res.destroyed) res.once('drain', push);
    };
    res.on('close', () => res.removeAllListeners('drain'));
    push();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe('MemberClient', () => {
  const keys = generateEd25519KeyPair();
  const client = new MemberClient({ orgId: 'req-org', privateKey: keys.privateKey, keyId: keys.keyId, clock: { nowMs: () => Date.now() }, timeoutMs: 20_000 });

  it('stops reading a checkpoint answer beyond a signed note’s size', async () => {
    sent = 0;
    await expect(client.postCheckpoint({ id: 'peer', url }, 'note\n')).rejects.toThrow(/too large/);
    expect(sent).toBeLessThan(64 << 20);
  });

  it('stops reading an everything answer beyond its limit', async () => {
    sent = 0;
    await expect(client.everything({ id: 'peer', url }, { patient: 'pat-abcdefghijklmnopqrstuvwxyz', purpose: 'TREAT', minTreeSize: 0 })).rejects.toThrow(/too large/);
    expect(sent).toBeLessThan(1 << 30);
  }, 30_000);
});
