/**
 * The ledger over HTTP (DESIGN.md §9): the latest checkpoint, member verifier keys, inclusion and
 * consistency proofs, entries, blocks and C2SP tlog-tiles. Everything here is public and PHI-free; proofs
 * are for the tree size of the served checkpoint unless another is asked for.
 */
import type { FastifyInstance } from 'fastify';
import { HlError, toBase64 } from '../kernel/index.js';
import { SignatureType, entryBundle, formatVerifierKey, parseTilePath, readTile, type Ledger } from '../ledger/index.js';
import { sha256 } from '../crypto/index.js';
import { intParam } from './params.js';

const maxEntries = 256;

function servedTreeSize(ledger: Ledger): { note: string; treeSize: number } {
  const latest = ledger.finalCheckpoint();
  if (!latest) throw new HlError('not-found', 'the ledger has no final checkpoint yet (one a majority of the members signed)');
  return latest;
}

function sizeParam(ledger: Ledger, value: unknown): number {
  const served = servedTreeSize(ledger).treeSize;
  const size = intParam('treeSize', value, served);
  if (size > ledger.treeSize) throw new HlError('not-found', `tree size ${size} is beyond the ledger (size ${ledger.treeSize})`);
  return size;
}

/** The node's ordering and integrity state, for operators (`GET /ledger/status`). */
export interface LedgerStatus {
  /** Set once two different roots were seen for one tree size: writes are refused until an operator clears it. */
  forkAlarm: { message: string; atMs: number } | null;
}

/** Registers `/ledger/...` on `app`. */
export function registerLedgerRoutes(app: FastifyInstance, ledger: Ledger, status?: () => LedgerStatus): void {
  app.get('/ledger/status', async (_req, reply) => {
    const final = ledger.finalCheckpoint();
    reply.header('Cache-Control', 'no-store');
    return {
      origin: ledger.state.origin,
      height: ledger.height,
      treeSize: ledger.treeSize,
      finalTreeSize: final?.treeSize ?? 0,
      members: ledger.state.members.size,
      quorum: ledger.state.quorum(),
      forkAlarm: status?.().forkAlarm ?? null,
    };
  });

  app.get('/ledger/checkpoint', async (_req, reply) => {
    reply.type('text/plain; charset=utf-8').header('Cache-Control', 'no-store').send(servedTreeSize(ledger).note);
  });

  app.get('/ledger/members', async () => ({
    origin: ledger.origin,
    members: [...ledger.state.members.values()].map((m) => ({
      id: m.id,
      name: m.name,
      keyId: m.keyId,
      ...(m.url === undefined ? {} : { url: m.url }),
      verifierKey: formatVerifierKey(sha256, m.id, SignatureType.ed25519, m.publicKey),
    })),
  }));

  app.get<{ Querystring: Record<string, string> }>('/ledger/proof/inclusion', async (req) => {
    const treeSize = sizeParam(ledger, req.query.treeSize);
    const leafIndex = intParam('leafIndex', req.query.leafIndex);
    if (leafIndex >= treeSize) throw new HlError('invalid', `leafIndex ${leafIndex} is not below treeSize ${treeSize}`);
    const leaf = ledger.store.entry(leafIndex);
    if (!leaf) throw new HlError('integrity', `entry ${leafIndex} is missing from storage`);
    return {
      leafIndex,
      treeSize,
      leaf: toBase64(leaf),
      proof: ledger.inclusionProof(leafIndex, treeSize).map(toBase64),
    };
  });

  app.get<{ Querystring: Record<string, string> }>('/ledger/proof/consistency', async (req) => {
    const size2 = sizeParam(ledger, req.query.size2);
    const size1 = intParam('size1', req.query.size1);
    if (size1 === 0 || size1 > size2) throw new HlError('invalid', `no consistency proof from size ${size1} to ${size2}`);
    return { size1, size2, proof: ledger.consistencyProof(size1, size2).map(toBase64) };
  });

  app.get<{ Querystring: Record<string, string> }>('/ledger/entries', async (req) => {
    const start = intParam('start', req.query.start, 0);
    const count = Math.min(intParam('count', req.query.count, 100), maxEntries);
    const end = Math.min(start + count, ledger.treeSize);
    const entries = end > start ? ledger.store.entries(start, end - start) : [];
    return { start, entries: entries.map((e, i) => ({ leafIndex: start + i, leaf: toBase64(e) })) };
  });

  app.get<{ Params: { height: string } }>('/ledger/blocks/:height', async (req) => {
    const height = intParam('height', req.params.height);
    const block = ledger.store.block(height);
    if (!block) throw new HlError('not-found', `no block ${height}`);
    return {
      height,
      hash: block.hash,
      header: block.header,
      txs: ledger.store.blockTxs(height).map((t) => {
        let tx: unknown = null;
        try {
          tx = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(t.bytes));
        } catch {
          tx = null;
        }
        return { position: t.position, txId: t.txId, valid: t.valid, leafIndex: t.leafIndex, error: t.error, tx, ...(tx === null ? { raw: toBase64(t.bytes) } : {}) };
      }),
    };
  });

  app.get<{ Params: { '*': string } }>('/ledger/tile/*', async (req, reply) => {
    const path = parseTilePath(req.params['*']);
    const { treeSize } = servedTreeSize(ledger);
    const bytes =
      path.kind === 'entries'
        ? entryBundle(ledger.store, treeSize, path.index, path.width)
        : readTile(ledger.store, treeSize, path.level, path.index, path.width);
    // Full tiles never change; partial ones are replaced by wider ones as the log grows.
    reply
      .type('application/octet-stream')
      .header('Cache-Control', path.width === 256 ? 'public, max-age=31536000, immutable' : 'no-store')
      .send(Buffer.from(bytes));
  });
}
