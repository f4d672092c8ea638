/**
 * Ordering on an etcd cluster (DESIGN.md §4): Raft, and a WAL fsynced on a quorum before every
 * acknowledgement. One key per block height, `${prefix}b/${height, 16 digits}`, written only with
 * create-if-absent, so a height holds the first batch written there and never changes. Group commit as in
 * `LocalOrderer`: whatever is queued while a write is in flight goes into the next batch.
 *
 * Writes: the batch gets a random id and is written at `h`, the lowest height not known to exist, with
 * `if (create_revision(key(h)) == 0) put else get`. If `h` is taken, the else branch returns what is there:
 * our id means an earlier attempt landed; another id moves us on. A deadline or connection error is an
 * unknown outcome; it is resolved by reading key(h): our id (it landed), another id (it never will: the key
 * exists), or nothing yet, and only then is the same conditional write at the same height repeated. A batch
 * is written at one height until that height provably holds another batch, so it lands at most once. While
 * etcd has no quorum, a batch is retried for `unavailableMs` and its submits then get `pushback`; if its last
 * write's outcome was still unknown it may yet land, and is then delivered like any other batch.
 *
 * Reads: `blocks()` reads by key range and delivers heights contiguously, never skipping a missing one;
 * a watch on the prefix is only a wake-up hint (etcd 3.4.23 watches can miss events), and the range is
 * re-read every `pollMs` regardless. Every node derives the same batch from the same value: time is the
 * maximum of the value's time and the previous batch's time; a value that does not decode becomes a one-tx
 * batch of its raw bytes from proposer `malformed`. Proposers write a time no earlier than the batch before
 * theirs, so a reader starting at `fromHeight` takes its time base from the value at `fromHeight - 1`. A
 * value written around this rule (by hand, by a rogue writer with etcd access) can make readers that started
 * at different heights disagree on a later batch's time; etcd users limited per organization must prevent it.
 */
import { Etcd3, Range, type IKeyValue, type IOptions } from 'etcd3';
import { HlError, isOrgId, randomBytes, toHex, utcTimestampMs, type Clock } from '../../kernel/index.js';
import type { OrderedBatch } from '../../ledger/index.js';
import { decodeTxs, encodeTxs } from '../batch-codec.js';
import type { Orderer, SubmitResult } from '../orderer.js';

/** The logger the orderer reports trouble to; never given tx content. */
export interface OrdererLog {
  warn(obj: Record<string, unknown>, msg: string): void;
}

/** Options of `EtcdOrderer`. */
export interface EtcdOrdererOptions {
  /** Client URLs of the etcd members (`http://127.0.0.1:2379`). */
  endpoints: string[];
  /** Key prefix of this network's ordering log, ending in `/` (`healthledger/<network origin>/`). */
  prefix: string;
  /** Proposer written on every batch (the node's org id). */
  proposer: string;
  clock: Clock;
  /** Deadline of each etcd call in ms (default 3000). Past it, the call's outcome is unknown. */
  callTimeoutMs?: number;
  /** How long one batch is retried while etcd is unavailable before its submits get `pushback` (default 10 s). */
  unavailableMs?: number;
  /** Period of the range re-read in `blocks()` when no watch event arrives, in ms (default 1000). */
  pollMs?: number;
  /** Upper bounds of one batch; bytes count the encoded payload and may not exceed {@link maxEtcdBatchBytes}. */
  maxBatchTxs?: number;
  maxBatchBytes?: number;
  log?: OrdererLog;
  /** TLS to the etcd members (PEM): the CA that signed their certificates, and this node's client certificate and key for mutual TLS. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  /** The etcd user of this organization (production: one user per organization, limited to its prefix). */
  auth?: { username: string; password: string };
}

/** Largest batch payload (bytes of `encodeTxs`) whose envelope keeps one etcd request under 1 MiB. */
export const maxEtcdBatchBytes = Math.floor((1024 * 1024 - 2048) / 4) * 3;

/** Proposer of the batch a value that does not decode is delivered as. */
export const malformedProposer = 'malformed';

const heightDigits = 16;
const readPageSize = 32;
const scanPageSize = 1000;

interface Pending {
  txs: Uint8Array[];
  bytes: number;
  resolve: (r: SubmitResult) => void;
  reject: (err: unknown) => void;
}

/** A decoded value: `{ v: 1, id, time, proposer, payload }` (JSON, payload = base64 of `encodeTxs`). */
interface Envelope {
  id: string;
  timeMs: number;
  proposer: string;
  txs: Uint8Array[];
}

type FaultPolicy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

/**
 * A fault policy that runs the call once: the orderer does its own retries (each with its own deadline,
 * and resolving unknown outcomes), so the client's retry and per-host circuit breaker stay out of the way.
 */
const runOnce = {
  _altReturn: undefined as never,
  onSuccess: () => ({ dispose: () => undefined }),
  onFailure: () => ({ dispose: () => undefined }),
  execute: async <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> => fn({ signal: new AbortController().signal }),
} as unknown as FaultPolicy;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Decodes a value written by an `EtcdOrderer`, or returns undefined for anything else. */
function decodeEnvelope(value: Uint8Array): Envelope | undefined {
  try {
    const parsed: unknown = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(value));
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    const e = parsed as Record<string, unknown>;
    if (e.v !== 1 || typeof e.id !== 'string' || !/^[0-9a-f]{32}$/.test(e.id)) return undefined;
    const timeMs = utcTimestampMs(e.time);
    if (timeMs === null || typeof e.proposer !== 'string' || !isOrgId(e.proposer) || typeof e.payload !== 'string') return undefined;
    const payload = Buffer.from(e.payload, 'base64');
    if (payload.toString('base64') !== e.payload) return undefined; // strict: one encoding per payload
    const txs = decodeTxs(new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength));
    if (txs.length === 0) return undefined;
    return { id: e.id, timeMs, proposer: e.proposer, txs };
  } catch {
    return undefined;
  }
}

function encodeEnvelope(id: string, timeMs: number, proposer: string, payload: string): Buffer {
  return Buffer.from(JSON.stringify({ v: 1, id, time: new Date(timeMs).toISOString(), proposer, payload }));
}

/** The etcd `Orderer` (see the file comment). */
export class EtcdOrderer implements Orderer {
  private readonly client: Etcd3;
  private readonly blockPrefix: string;
  private readonly rangeEnd: Buffer;
  private readonly proposer: string;
  private readonly clock: Clock;
  private readonly unavailableMs: number;
  private readonly pollMs: number;
  private readonly maxBatchTxs: number;
  private readonly maxBatchBytes: number;
  private readonly log: OrdererLog | undefined;
  private queue: Pending[] = [];
  private drainScheduled = false;
  private writing = false;
  private draining: Promise<void> | undefined;
  /** Highest height known to exist with every height below it; -1 when none is known. */
  private known = -1;
  /** Delivered time (ms) of the batch at `known`; 0 when none. */
  private knownTimeMs = 0;
  private tailSynced = false;
  /** Bumped on every hint that the log may have grown (watch event, own write). */
  private generation = 0;
  private wakers = new Set<() => void>();
  private watchStarted = false;
  private cancelWatch: (() => void) | undefined;
  private closed = false;

  constructor(options: EtcdOrdererOptions) {
    if (options.endpoints.length === 0) throw new HlError('invalid', 'EtcdOrderer needs at least one endpoint');
    if (!options.prefix.endsWith('/')) throw new HlError('invalid', 'the etcd key prefix must end with /');
    if (!isOrgId(options.proposer)) throw new HlError('invalid', 'the proposer must be an organization id');
    const maxBatchBytes = options.maxBatchBytes ?? maxEtcdBatchBytes;
    if (maxBatchBytes > maxEtcdBatchBytes) throw new HlError('invalid', `maxBatchBytes may not exceed ${maxEtcdBatchBytes}`);
    const callTimeoutMs = options.callTimeoutMs ?? 3000;
    this.client = new Etcd3({
      hosts: options.endpoints,
      // The client has no deadline by default; past this one, a call's outcome is unknown.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
      faultHandling: { global: runOnce, host: () => runOnce },
      // A range page holds up to readPageSize values of at most 1.5 MiB each (etcd's request limit).
      grpcOptions: { 'grpc.max_receive_message_length': 64 * 1024 * 1024 },
      ...(options.tls
        ? { credentials: { rootCertificate: options.tls.ca, ...(options.tls.cert && options.tls.key ? { certChain: options.tls.cert, privateKey: options.tls.key } : {}) } }
        : {}),
      ...(options.auth ? { auth: options.auth } : {}),
    });
    this.blockPrefix = `${options.prefix}b/`;
    this.rangeEnd = Range.prefix(this.blockPrefix).end;
    this.proposer = options.proposer;
    this.clock = options.clock;
    this.unavailableMs = options.unavailableMs ?? 10_000;
    this.pollMs = options.pollMs ?? 1000;
    this.maxBatchTxs = options.maxBatchTxs ?? 5000;
    this.maxBatchBytes = maxBatchBytes;
    this.log = options.log;
  }

  /**
   * Connects and learns the end of the log, so `lastHeight()` is right from the start. When etcd is not
   * reachable the orderer still opens (a node keeps serving reads) and learns the end on its first write.
   */
  static async open(options: EtcdOrdererOptions): Promise<EtcdOrderer> {
    const orderer = new EtcdOrderer(options);
    try {
      await orderer.syncTail();
    } catch (err) {
      orderer.log?.warn({ err: errorSummary(err) }, 'etcd orderer: could not read the end of the ordering log at open');
    }
    return orderer;
  }

  lastHeight(): number {
    return this.known;
  }

  private keyOf(height: number): string {
    return this.blockPrefix + String(height).padStart(heightDigits, '0');
  }

  /** The height a key names, or undefined for a key that is not a height key of this log. */
  private heightOf(key: Buffer): number | undefined {
    const text = key.toString('utf8');
    if (!text.startsWith(this.blockPrefix)) return undefined;
    const digits = text.slice(this.blockPrefix.length);
    return digits.length === heightDigits && /^\d+$/.test(digits) ? Number(digits) : undefined;
  }

  /** Records that `height` exists (with all below it) and its delivered time. */
  private learn(height: number, timeMs: number): void {
    if (height <= this.known) return;
    this.known = height;
    this.knownTimeMs = timeMs;
  }

  submit(txs: Uint8Array[]): Promise<SubmitResult> {
    if (this.closed) return Promise.reject(new HlError('pushback', 'orderer is closed'));
    if (txs.length === 0) return Promise.reject(new HlError('invalid', 'a batch needs at least one tx'));
    const bytes = txs.reduce((s, t) => s + 4 + t.length, 4);
    if (txs.length > this.maxBatchTxs || bytes > this.maxBatchBytes) {
      return Promise.reject(new HlError('too-costly', `a submit of ${txs.length} txs (${bytes} bytes) exceeds one ordered batch`));
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ txs, bytes: bytes - 4, resolve, reject });
      this.scheduleDrain();
    });
  }

  /** Starts a drain on the next turn unless one is running or scheduled (so same-tick submits share a batch). */
  private scheduleDrain(): void {
    if (this.drainScheduled || this.writing || this.closed) return;
    this.drainScheduled = true;
    setImmediate(() => {
      this.drainScheduled = false;
      this.draining = this.drain();
    });
  }

  /** Writes queued submits, one batch at a time, until the queue is empty. */
  private async drain(): Promise<void> {
    this.writing = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        const group: Pending[] = [];
        const txs: Uint8Array[] = [];
        let bytes = 4;
        while (this.queue.length > 0) {
          const next = this.queue[0]!;
          if (group.length > 0 && (txs.length + next.txs.length > this.maxBatchTxs || bytes + next.bytes > this.maxBatchBytes)) break;
          this.queue.shift();
          group.push(next);
          txs.push(...next.txs);
          bytes += next.bytes;
        }
        try {
          const height = await this.append(txs);
          for (const p of group) p.resolve({ height });
        } catch (err) {
          for (const p of group) p.reject(err);
        }
      }
    } finally {
      // In the same turn as the empty-queue check (no await between), so any later submit schedules a drain.
      this.writing = false;
    }
  }

  /** Orders one batch; resolves with its height once etcd acknowledged it. */
  private async append(txs: Uint8Array[]): Promise<number> {
    const id = toHex(randomBytes(16));
    const payload = Buffer.from(encodeTxs(txs)).toString('base64');
    const giveUpAt = Date.now() + this.unavailableMs;
    let backoffMs = 25;
    // The height this batch is being written at; it moves only once another batch provably holds it.
    let height: number | undefined;
    let value: Buffer | undefined;
    let valueTimeMs = 0;
    // A write at `height` was sent and its outcome is unknown (deadline, lost connection).
    let unresolved = false;
    /** Learns what holds `height`; true when it is this batch. */
    const isOurs = (h: number, kv: IKeyValue): boolean => {
      const there = decodeEnvelope(kv.value);
      if (h === this.known + 1) this.learn(h, Math.max(this.knownTimeMs, there?.timeMs ?? 0));
      return there?.id === id;
    };
    for (;;) {
      if (this.closed) throw new HlError('pushback', 'orderer closed');
      try {
        if (height === undefined) {
          if (!this.tailSynced) await this.syncTail();
          height = this.known + 1;
        }
        const key = this.keyOf(height);
        let taken: IKeyValue | undefined;
        if (unresolved) {
          // Resolve the unknown outcome by reading: ours landed, another batch holds the height (ours never
          // will: the key exists), or nothing is there yet and the conditional write below is safe to repeat.
          taken = (await this.client.kv.range({ key: Buffer.from(key) })).kvs[0];
          unresolved = false;
        }
        if (taken === undefined) {
          if (value === undefined) {
            // A proposer never writes a time earlier than the batch before its own (see the file comment).
            valueTimeMs = height === this.known + 1 ? Math.max(this.clock.nowMs(), this.knownTimeMs) : this.clock.nowMs();
            value = encodeEnvelope(id, valueTimeMs, this.proposer, payload);
          }
          unresolved = true;
          const res = await this.client.if(key, 'Create', '==', 0).then(this.client.put(key).value(value)).else(this.client.get(key)).commit();
          unresolved = false;
          if (res.succeeded) {
            this.learnWritten(height, valueTimeMs);
            return height;
          }
          taken = res.responses[0]?.response_range?.kvs?.[0];
          if (taken === undefined) throw new Error('txn compare failed but the key is absent');
        }
        if (isOurs(height, taken)) {
          this.learnWritten(height, valueTimeMs);
          return height; // an earlier attempt, whose answer was lost, landed
        }
        height = Math.max(height + 1, this.known + 1);
        value = undefined;
        backoffMs = 25;
      } catch (err) {
        if (err instanceof HlError) throw err;
        if (this.closed) throw new HlError('pushback', 'orderer closed', { cause: err });
        const remainingMs = giveUpAt - Date.now();
        this.log?.warn({ height, unresolved, err: errorSummary(err), retry: remainingMs > 0 }, 'etcd orderer: etcd call failed');
        if (remainingMs <= 0) {
          throw new HlError('pushback', 'the ordering service (etcd) is unavailable; retry later', { cause: err });
        }
        await sleep(Math.min(backoffMs, remainingMs));
        backoffMs = Math.min(backoffMs * 2, 500);
      }
    }
  }

  private learnWritten(height: number, timeMs: number): void {
    if (height === this.known + 1) this.learn(height, Math.max(this.knownTimeMs, timeMs));
    this.generation++;
    this.wake();
  }

  /** Learns the contiguous end of the log from `known + 1` (keys only), and the delivered time there. */
  private async syncTail(): Promise<void> {
    let end = this.known;
    for (;;) {
      const res = await this.client.kv.range({
        key: Buffer.from(this.keyOf(end + 1)),
        range_end: this.rangeEnd,
        keys_only: true,
        limit: scanPageSize,
      });
      const pageStart = end;
      let contiguous = true;
      for (const kv of res.kvs) {
        const h = this.heightOf(kv.key);
        if (h === undefined) continue;
        if (h !== end + 1) {
          contiguous = false;
          break;
        }
        end = h;
      }
      // A full page without progress holds only keys that are not height keys: the next height is absent.
      if (!contiguous || res.kvs.length < scanPageSize || end === pageStart) break;
    }
    if (end > this.known) {
      const timeMs = await this.baseTimeMs(end);
      this.learn(end, timeMs);
    }
    this.tailSynced = true;
  }

  /**
   * Delivered time of the batch at `height`: its value's time, or for a value that does not decode the
   * time of the nearest decodable value below it (0 below height 0). Waits while the key is absent.
   */
  private async baseTimeMs(height: number): Promise<number> {
    for (let h = height; h >= 0; h--) {
      const res = await this.client.kv.range({ key: Buffer.from(this.keyOf(h)) });
      const kv = res.kvs[0];
      if (!kv) throw new Error(`ordering log has no key at height ${h}`);
      const env = decodeEnvelope(kv.value);
      if (env) return env.timeMs;
    }
    return 0;
  }

  /** The batch every node derives from the value at `height`, given the previous batch's time. */
  private toBatch(height: number, kv: IKeyValue, prevTimeMs: number): OrderedBatch {
    if (kv.version !== '1') this.log?.warn({ height, version: kv.version }, 'etcd orderer: an ordering value was overwritten');
    const env = decodeEnvelope(kv.value);
    if (!env) {
      this.log?.warn({ height, bytes: kv.value.length }, 'etcd orderer: delivering a malformed ordering value as one invalid tx');
      return { height, time: new Date(prevTimeMs).toISOString(), proposer: malformedProposer, txs: [new Uint8Array(kv.value)] };
    }
    return { height, time: new Date(Math.max(prevTimeMs, env.timeMs)).toISOString(), proposer: env.proposer, txs: env.txs };
  }

  async *blocks(fromHeight: number, signal?: AbortSignal): AsyncIterable<OrderedBatch> {
    this.startWatch();
    let next = fromHeight;
    let prevTimeMs: number | undefined = fromHeight === 0 ? 0 : undefined;
    let failures = 0;
    while (!this.closed && !signal?.aborted) {
      const seen = this.generation;
      let progressed = false;
      try {
        prevTimeMs ??= await this.baseTimeMs(fromHeight - 1);
        const res = await this.client.kv.range({ key: Buffer.from(this.keyOf(next)), range_end: this.rangeEnd, limit: readPageSize });
        failures = 0;
        for (const kv of res.kvs) {
          const height = this.heightOf(kv.key);
          if (height === undefined) continue; // not a height key: ignore it
          if (height !== next) break; // a gap: wait for the missing height, never skip it
          const batch = this.toBatch(height, kv, prevTimeMs);
          prevTimeMs = Date.parse(batch.time);
          this.learn(height, prevTimeMs);
          yield batch;
          next++;
          progressed = true;
          if (this.closed || signal?.aborted) return;
        }
      } catch (err) {
        if (this.closed || signal?.aborted) return;
        if (failures++ === 0) this.log?.warn({ height: next, err: errorSummary(err) }, 'etcd orderer: reading the ordering log failed; retrying');
      }
      // After a failed read (often a dead member: the next call goes to another), retry soon, backing off.
      if (!progressed) await this.waitForChange(seen, signal, failures > 0 ? Math.min(this.pollMs, 25 * 2 ** failures) : this.pollMs);
    }
  }

  /** Starts the prefix watch once; its events only wake readers. */
  private startWatch(): void {
    if (this.watchStarted || this.closed) return;
    this.watchStarted = true;
    this.client
      .watch()
      .prefix(this.blockPrefix)
      .create()
      .then((watcher) => {
        watcher.on('put', () => {
          this.generation++;
          this.wake();
        });
        watcher.on('error', () => undefined); // the client reconnects; the periodic re-read covers the gap
        if (this.closed) void watcher.cancel().catch(() => undefined);
        else this.cancelWatch = () => void watcher.cancel().catch(() => undefined);
      })
      .catch((err: unknown) => {
        if (!this.closed) this.log?.warn({ err: errorSummary(err) }, 'etcd orderer: watch failed; relying on periodic reads');
      });
  }

  /** Waits for a hint that the log grew since `seen`, `timeoutMs`, an abort or close. */
  private waitForChange(seen: number, signal: AbortSignal | undefined, timeoutMs: number): Promise<void> {
    if (this.generation !== seen || this.closed || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wakers.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.wakers.add(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  private wake(): void {
    for (const w of [...this.wakers]) w();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.queue) p.reject(new HlError('pushback', 'orderer closed'));
    this.queue = [];
    this.wake();
    await this.draining;
    this.cancelWatch?.();
    this.client.close();
  }
}

/** Error name and message, for logs (etcd errors carry no tx content). */
function errorSummary(err: unknown): { name: string; message: string } {
  return err instanceof Error ? { name: err.name, message: err.message } : { name: 'unknown', message: String(err) };
}
