/**
 * Checkpoint gossip (DESIGN.md §1, §3): after signing a checkpoint a node sends it to every other member's
 * node, which cosigns it if its own tree has the same root at that size and answers with the note it now
 * holds; the sender merges those signatures. Once a majority signed, the checkpoint is final. A member that
 * answers with a different root for the size (HTTP 409 and its own note) is a fork: `onFork` is told.
 * One call per member in flight; a member that was down gets the newest checkpoint on the next tick.
 */
import { HlError, isHlError } from '../kernel/index.js';
import { parseSignedNote, type Ledger } from '../ledger/index.js';
import type { MemberClient, MemberEndpoint } from './member-client.js';

/** What gossip logs (pino-compatible). */
export interface GossipLog {
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export class CheckpointGossip {
  private readonly inFlight = new Map<string, Promise<void>>();
  private stopped = false;
  private lastAnnounceMs = 0;
  private pending: NodeJS.Timeout | null = null;
  private readonly again = new Set<string>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly deps: {
      orgId: string;
      ledger: Ledger;
      client: MemberClient;
      log: GossipLog;
      onFork: (message: string) => void;
      /** How often a checkpoint that is not final yet is sent again. */
      intervalMs?: number;
      /** Least time between two sends to the peers. */
      minGapMs?: number;
    },
  ) {}

  start(): void {
    this.timer ??= setInterval(() => this.tick(), this.deps.intervalMs ?? 1000);
    this.timer.unref();
  }

  /** Stops sending; resolves once the calls in flight are over. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.pending) clearTimeout(this.pending);
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await Promise.all(this.inFlight.values());
  }

  /** Peers: every other member whose node has a URL. */
  private peers(): MemberEndpoint[] {
    return [...this.deps.ledger.state.members.values()]
      .filter((m) => m.id !== this.deps.orgId && m.url !== undefined)
      .map((m) => ({ id: m.id, url: m.url! }));
  }

  private tick(): void {
    const latest = this.deps.ledger.latestCheckpoint();
    const final = this.deps.ledger.finalCheckpoint();
    // Until every member has signed the newest checkpoint (members that were down get it when back).
    if (latest !== null && (final === null || final.note !== latest || parseSignedNote(latest).signatures.length < this.deps.ledger.state.members.size)) this.announce();
  }

  /**
   * Sends this node's latest checkpoint to every peer, at most once per `minGapMs` (a busy ledger signs a
   * checkpoint after nearly every block; peers need only the newest).
   */
  announce(): void {
    if (this.stopped) return;
    const wait = this.lastAnnounceMs + (this.deps.minGapMs ?? 200) - Date.now();
    if (wait > 0) {
      this.pending ??= setTimeout(() => {
        this.pending = null;
        this.announce();
      }, wait);
      return;
    }
    this.lastAnnounceMs = Date.now();
    for (const peer of this.peers()) {
      if (this.inFlight.has(peer.id)) {
        this.again.add(peer.id);
        continue;
      }
      this.inFlight.set(
        peer.id,
        this.send(peer).finally(() => {
          this.inFlight.delete(peer.id);
          if (this.again.delete(peer.id)) this.announce();
        }),
      );
    }
  }

  private async send(peer: MemberEndpoint): Promise<void> {
    try {
      const note = this.deps.ledger.latestCheckpoint();
      if (note === null) return;
      const answer = await this.deps.client.postCheckpoint(peer, note);
      if (this.stopped) return;
      if (answer.status === 200 || answer.status === 409) {
        // A 409 carries the peer's own note for the size: merging it raises `fork`.
        this.deps.ledger.cosign(answer.note);
      } else this.deps.log.debug({ peer: peer.id, status: answer.status }, 'checkpoint not cosigned yet');
    } catch (err) {
      if (isHlError(err) && (err as HlError).code === 'fork') this.deps.onFork(`${peer.id}: ${(err as Error).message}`);
      else this.deps.log.debug({ peer: peer.id, err: { message: (err as Error).message } }, 'checkpoint gossip failed');
    }
  }
}

