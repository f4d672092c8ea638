/**
 * A malicious administrator edits the ledger database directly; `healthledger verify` must catch each edit
 * (exit 1, naming the first bad block or entry) and pass on the untouched copy.
 */
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openNode, readConfig } from '../src/node.js';
import {
  TxType,
  blockHash,
  formatCheckpoint,
  formatSignedNote,
  signNoteSignature,
  signTx,
  type BlockHeader,
} from '../src/ledger/index.js';
import { generateEd25519KeyPair, rawPublicKey, sha256, signEd25519 } from '../src/crypto/index.js';
import { commitBody, runCli, tempDir } from './helpers.js';

const work = tempDir('hl-tamper-');
const pristine = join(work.path, 'pristine');
let copies = 0;

beforeAll(async () => {
  expect(runCli(['init', '--org', 'Lakeside Clinic', '--data', pristine]).status).toBe(0);
  const node = await openNode({ dataDir: pristine });
  try {
    // Six blocks of commits after genesis: blocks 1..6, 5 txs each.
    for (let b = 0; b < 6; b++) {
      const txs = Array.from({ length: 5 }, (_, i) => signTx(
        { type: TxType.recordCommit, body: commitBody(b * 5 + i), signer: { kind: 'org', id: node.config.orgId, keyId: node.keyPair.keyId } },
        node.keyPair.privateKey,
      ).bytes);
      const receipts = await node.submit(txs);
      expect(receipts.every((r) => r.valid)).toBe(true);
    }
  } finally {
    await node.close();
  }
});

afterAll(() => work.cleanup());

/** A fresh copy of the pristine node, with the tamper applied to its ledger database. */
function tampered(edit: (db: Database.Database, dir: string) => void): string {
  const dir = join(work.path, `copy-${copies++}`);
  cpSync(pristine, dir, { recursive: true });
  const db = new Database(join(dir, readConfig(dir).database));
  try {
    edit(db, dir);
  } finally {
    db.close();
  }
  return dir;
}

function expectCaught(dir: string, pattern: RegExp): void {
  const r = runCli(['verify', '--data', dir]);
  expect(r.stderr).toMatch(pattern);
  expect(r.stderr).toMatch(/verification FAILED/);
  expect(r.status).toBe(1);
}

function txRow(db: Database.Database, height: number, position: number) {
  return db.prepare('SELECT tx_id, bytes FROM ledger_tx WHERE height = ? AND position = ?').get(height, position) as { tx_id: string; bytes: Buffer };
}

describe('healthledger verify against a tampered database', () => {
  it('passes on the untouched ledger', () => {
    const r = runCli(['verify', '--data', pristine]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/verified: 7 blocks, 31 txs, 31 entries/);
  });

  it('catches one changed byte in a stored tx', () => {
    const dir = tampered((db) => {
      const { bytes } = txRow(db, 3, 2);
      const text = bytes.toString('utf8');
      const at = text.indexOf('"commitment":"') + 14;
      const flipped = text.slice(0, at) + (text[at] === 'a' ? 'b' : 'a') + text.slice(at + 1);
      db.prepare('UPDATE ledger_tx SET bytes = ? WHERE height = 3 AND position = 2').run(Buffer.from(flipped));
    });
    expectCaught(dir, /block 3 tx 2: tx 3\/2 bytes do not match its id/);
  });

  it('catches a changed tx even when its stored id is rewritten to match', () => {
    const dir = tampered((db) => {
      const { bytes } = txRow(db, 3, 2);
      const env = JSON.parse(bytes.toString('utf8'));
      env.body.commitment = '0'.repeat(64);
      const forged = Buffer.from(JSON.stringify(env));
      // the attacker recomputes the tx id of the edited envelope
      const { sig: _s, ...unsigned } = env;
      const id = Buffer.from(sha256(Buffer.from(canonical(unsigned)))).toString('hex');
      db.prepare('UPDATE ledger_tx SET bytes = ?, tx_id = ? WHERE height = 3 AND position = 2').run(forged, id);
    });
    expectCaught(dir, /block 3 tx 2: .*marked valid but fails validation: sig: signature does not verify/);
  });

  it('catches a deleted tx', () => {
    const dir = tampered((db) => db.prepare('DELETE FROM ledger_tx WHERE height = 4 AND position = 1').run());
    expectCaught(dir, /block 4: block 4 holds 4 txs but its header says 5/);
  });

  it('catches two txs swapped within a block', () => {
    const dir = tampered((db) => {
      const a = txRow(db, 2, 0);
      const b = txRow(db, 2, 1);
      const set = db.prepare('UPDATE ledger_tx SET bytes = ?, tx_id = ? WHERE height = 2 AND position = ?');
      db.transaction(() => {
        set.run(b.bytes, b.tx_id, 0);
        set.run(a.bytes, a.tx_id, 1);
      })();
    });
    expectCaught(dir, /block 2 tx 0: stored Merkle node 0\/\d+ differs from the recomputed one/);
  });

  it('catches a tx re-signed with another key under the same signer name', () => {
    const dir = tampered((db) => {
      const { bytes } = txRow(db, 5, 0);
      const env = JSON.parse(bytes.toString('utf8'));
      const attacker = generateEd25519KeyPair();
      const forged = signTx({ type: env.type, body: env.body, signer: env.signer, time: env.time, nonce: env.nonce }, attacker.privateKey);
      db.prepare('UPDATE ledger_tx SET bytes = ?, tx_id = ? WHERE height = 5 AND position = 0').run(Buffer.from(forged.bytes), forged.id);
    });
    expectCaught(dir, /block 5 tx 0: .*signature does not verify/);
  });

  it('catches two whole blocks swapped, headers rehashed', () => {
    const dir = tampered((db) => {
      const get = db.prepare('SELECT header FROM ledger_block WHERE height = ?');
      const h2 = JSON.parse((get.get(2) as { header: string }).header) as BlockHeader;
      const h3 = JSON.parse((get.get(3) as { header: string }).header) as BlockHeader;
      const n2 = { ...h3, height: 2 };
      const n3 = { ...h2, height: 3 };
      const setBlock = db.prepare('UPDATE ledger_block SET header = ?, hash = ? WHERE height = ?');
      db.transaction(() => {
        setBlock.run(JSON.stringify(n2), blockHash(n2), 2);
        setBlock.run(JSON.stringify(n3), blockHash(n3), 3);
        db.prepare('UPDATE ledger_tx SET height = -1 WHERE height = 2').run();
        db.prepare('UPDATE ledger_tx SET height = 2 WHERE height = 3').run();
        db.prepare('UPDATE ledger_tx SET height = 3 WHERE height = -1').run();
      })();
    });
    expectCaught(dir, /block 2: block 2 does not link to block 1/);
  });

  it('catches a truncated log (last block removed with its leaves and nodes)', () => {
    const dir = tampered((db) => {
      const last = JSON.parse((db.prepare('SELECT header FROM ledger_block WHERE height = 6').get() as { header: string }).header) as BlockHeader;
      db.transaction(() => {
        db.prepare('DELETE FROM ledger_block WHERE height = 6').run();
        db.prepare('DELETE FROM ledger_tx WHERE height = 6').run();
        // remove every Merkle node that covers a removed leaf
        for (let level = 0; level < 8; level++) {
          db.prepare('DELETE FROM merkle_node WHERE level = ? AND (idx + 1) * ? > ?').run(level, 2 ** level, last.firstIndex);
        }
      })();
    });
    expectCaught(dir, /checkpoint .* covers 31 entries but the log has only 26: the log was truncated/);
  });

  it('catches a rewritten checkpoint root', () => {
    const dir = tampered((db) => {
      const { note, tree_size } = db.prepare('SELECT tree_size, note FROM ledger_checkpoint ORDER BY tree_size DESC LIMIT 1').get() as { note: string; tree_size: number };
      const lines = note.split('\n');
      lines[2] = Buffer.alloc(32, 7).toString('base64');
      db.prepare('UPDATE ledger_checkpoint SET note = ? WHERE tree_size = ?').run(lines.join('\n'), tree_size);
    });
    expectCaught(dir, /stored checkpoint 31: signature by lakeside-clinic does not verify/);
  });

  it('catches a checkpoint re-signed by a key that is not a member', () => {
    const dir = tampered((db, d) => {
      const { origin, orgId } = readConfig(d);
      const attacker = generateEd25519KeyPair();
      const text = formatCheckpoint({ origin, treeSize: 31n, rootHash: new Uint8Array(32), extensions: [] });
      const sig = signNoteSignature(sha256, orgId, rawPublicKey(attacker.publicKey), (m) => signEd25519(attacker.privateKey, m), text);
      db.prepare('UPDATE ledger_checkpoint SET note = ? WHERE tree_size = 31').run(formatSignedNote({ text, signatures: [sig] }));
    });
    expectCaught(dir, /stored checkpoint 31: no signature from a known key/);
  });

  it('catches a rewritten interior Merkle node', () => {
    const dir = tampered((db) => db.prepare('UPDATE merkle_node SET hash = zeroblob(32) WHERE level = 2 AND idx = 3').run());
    expectCaught(dir, /stored Merkle node 2\/3 differs from the recomputed one/);
  });

  it('catches a genesis block replaced wholesale by one with another founder key', () => {
    const dir = tampered((db) => {
      const attacker = generateEd25519KeyPair();
      const { bytes } = txRow(db, 0, 0);
      const env = JSON.parse(bytes.toString('utf8'));
      env.body.orgs[0].publicKey = Buffer.from(rawPublicKey(attacker.publicKey)).toString('base64url');
      const forged = signTx({ type: env.type, body: env.body, signer: { ...env.signer, keyId: attacker.keyId }, time: env.time }, attacker.privateKey);
      db.prepare('UPDATE ledger_tx SET bytes = ?, tx_id = ? WHERE height = 0 AND position = 0').run(Buffer.from(forged.bytes), forged.id);
    });
    expectCaught(dir, /block 0 tx 0: block 0 does not hold the genesis tx of this network/);
  });
});

describe('healthledger verify input errors', () => {
  it('names a missing data directory in one line and exits 2', () => {
    const r = runCli(['verify', '--data', join(work.path, 'nope')]);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/no Healthledger node at .*nope/);
  });

  it('refuses to init over an existing node, keeping its keys', () => {
    const r = runCli(['init', '--org', 'Other', '--data', pristine]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/already holds a Healthledger node/);
    expect(runCli(['verify', '--data', pristine]).status).toBe(0);
  });
});

function canonical(v: unknown): string {
  // RFC 8785 for the plain objects used above (string and object values only).
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}
