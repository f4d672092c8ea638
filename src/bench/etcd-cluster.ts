/**
 * A private, throwaway etcd cluster for tests that need a real one (the `EtcdOrderer`). Each call to
 * {@link startEtcdCluster} starts N members of Debian's etcd-server 3.4 (`/usr/bin/etcd`, `HL_ETCD_BIN`
 * overrides it) on 127.0.0.1 with free random client and peer ports, each member in its own data dir under
 * one temp dir, and waits until every member reports healthy. Members can be SIGKILLed and restarted on the
 * same data dir and ports, as a crashed and recovered machine would be.
 *
 * Members log errors only, to `e<i>.log` in the temp dir. Settings: fsync stays on (the WAL is fsynced
 * before every acknowledgement, as in production), no auto-compaction, a 256 MiB backend quota. A watchdog
 * process kills the members and deletes the dir if this process dies without calling `stop` (a crash or
 * SIGKILL), so no etcd outlives the test run. Nothing is skipped: a missing binary fails with a message
 * saying what to install.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const startTimeoutMs = 30_000;

/** A running private cluster. */
export interface EtcdCluster {
  /** Client URL of each member (`http://127.0.0.1:port`), by member index. */
  endpoints: string[];
  /** The temp dir holding every member's data dir and log. */
  dir: string;
  /** SIGKILLs member `i` (no clean shutdown) and waits until the process is gone. Idempotent. */
  kill(i: number): Promise<void>;
  /** Starts member `i` again on its data dir and ports; resolves once its client port answers. */
  restart(i: number): Promise<void>;
  /** Index of the member that is the Raft leader now, asked of the live members (rejects when none knows). */
  leader(): Promise<number>;
  /** Whether member `i` is running. */
  isRunning(i: number): boolean;
  /** Kills every member and deletes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

function fail(message: string): never {
  throw new Error(`etcd test cluster: ${message}`);
}

function shellQuote(arg: string): string {
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}

/** `count` distinct free ports, all held open at once so none is handed out twice. */
async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      ports.push(
        await new Promise<number>((resolve, reject) => {
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => {
            const address = server.address();
            if (typeof address === 'object' && address) resolve(address.port);
            else reject(new Error('no port'));
          });
        }),
      );
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function getJson(url: string, init: RequestInit = {}): Promise<unknown> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(1000) });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

/**
 * Starts a private etcd cluster of `members` members (default 3; see the file comment) and resolves once
 * every member is healthy (has a leader and serves requests). Rejects, with the members' logs, if it does not
 * become healthy within 30 s; never skips.
 */
export async function startEtcdCluster(options: { members?: number; etcdBin?: string } = {}): Promise<EtcdCluster> {
  const members = options.members ?? 3;
  const etcdBin = options.etcdBin ?? process.env.HL_ETCD_BIN ?? '/usr/bin/etcd';
  try {
    accessSync(etcdBin, constants.X_OK);
  } catch {
    fail(`${etcdBin} is missing or not executable; install Debian's etcd-server package (apt-get install -y etcd-server) ` +
      'or set HL_ETCD_BIN to an etcd 3.4 binary');
  }
  const dir = mkdtempSync(join(tmpdir(), 'hl-etcd-'));
  const ports = await freePorts(members * 2);
  const clientPorts = ports.slice(0, members);
  const peerPorts = ports.slice(members);
  const names = clientPorts.map((_, i) => `e${i}`);
  const endpoints = clientPorts.map((p) => `http://127.0.0.1:${p}`);
  const initialCluster = names.map((n, i) => `${n}=http://127.0.0.1:${peerPorts[i]}`).join(',');
  const token = `hl-${dir.slice(-8)}`;
  const children: (ChildProcess | undefined)[] = names.map(() => undefined);
  const pidFile = (i: number): string => join(dir, `e${i}.pid`);
  const logFile = (i: number): string => join(dir, `e${i}.log`);
  let watchdog: number | undefined;
  let stopped = false;

  const args = (i: number): string[] => [
    '--name', names[i]!,
    '--data-dir', join(dir, names[i]!),
    '--listen-client-urls', endpoints[i]!,
    '--advertise-client-urls', endpoints[i]!,
    '--listen-peer-urls', `http://127.0.0.1:${peerPorts[i]}`,
    '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPorts[i]}`,
    '--initial-cluster', initialCluster,
    '--initial-cluster-token', token,
    '--initial-cluster-state', 'new',
    '--quota-backend-bytes', String(256 * 1024 * 1024),
    '--auto-compaction-retention', '0',
    '--logger', 'zap',
    '--log-level', 'error',
  ];

  const launch = (i: number): void => {
    mkdirSync(join(dir, names[i]!), { recursive: true, mode: 0o700 });
    const log = openSync(logFile(i), 'a');
    try {
      const child = spawn(etcdBin, args(i), { stdio: ['ignore', log, log] });
      child.on('error', () => undefined); // a spawn failure shows up as a member that never answers
      children[i] = child;
      if (child.pid !== undefined) writeFileSync(pidFile(i), String(child.pid));
    } finally {
      closeSync(log);
    }
  };

  const killSync = (i: number): void => {
    const child = children[i];
    children[i] = undefined;
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(pidFile(i), { force: true });
  };

  const stopSync = (): void => {
    if (stopped) return;
    stopped = true;
    for (let i = 0; i < members; i++) killSync(i);
    if (watchdog !== undefined) {
      try {
        process.kill(watchdog);
      } catch {
        // Already gone.
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', stopSync);

  const logs = (): string =>
    names.map((n, i) => `--- ${n} ---\n${existsSync(logFile(i)) ? readFileSync(logFile(i), 'utf8').slice(-1500) : '(no log)'}`).join('\n');

  const waitUntil = async (what: string, ready: () => Promise<boolean>): Promise<void> => {
    const deadline = Date.now() + startTimeoutMs;
    while (Date.now() < deadline) {
      if (await ready().catch(() => false)) return;
      await sleep(100);
    }
    fail(`${what} within ${startTimeoutMs / 1000} s\n${logs()}`);
  };

  const exited = (child: ChildProcess): Promise<void> =>
    child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', () => resolve()));

  try {
    // The watchdog outlives a crashed or killed test process: it waits for this pid, then kills every member
    // whose pid file is there (checking the pid still runs etcd on this dir) and deletes the dir.
    const script = `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; ` +
      `for f in ${shellQuote(dir)}/*.pid; do [ -f "$f" ] || continue; p=$(cat "$f"); ` +
      `if tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -qF ${shellQuote(dir)}; then kill -9 $p; fi; done; ` +
      `rm -rf ${shellQuote(dir)}`;
    const child = spawn('/bin/sh', ['-c', script], { detached: true, stdio: 'ignore' });
    child.unref();
    watchdog = child.pid;

    for (let i = 0; i < members; i++) launch(i);
    for (let i = 0; i < members; i++) {
      await waitUntil(`member ${names[i]} did not become healthy`, async () => {
        const body = (await getJson(`${endpoints[i]}/health`)) as { health?: string };
        return body.health === 'true';
      });
    }

    return {
      endpoints,
      dir,
      isRunning: (i) => children[i] !== undefined,
      kill: async (i) => {
        const child = children[i];
        killSync(i);
        if (child) await exited(child);
      },
      restart: async (i) => {
        if (stopped) fail('the cluster is stopped');
        if (children[i] === undefined) launch(i);
        await waitUntil(`member ${names[i]} did not answer after restart`, async () => {
          await getJson(`${endpoints[i]}/version`);
          return true;
        });
      },
      leader: async () => {
        for (let i = 0; i < members; i++) {
          if (children[i] === undefined) continue;
          try {
            const status = (await getJson(`${endpoints[i]}/v3/maintenance/status`, { method: 'POST', body: '{}' })) as {
              header?: { member_id?: string };
              leader?: string;
            };
            if (!status.leader || status.leader === '0') continue;
            // Ask each live member for its own id to map the leader's id to an index.
            for (let j = 0; j < members; j++) {
              if (children[j] === undefined) continue;
              const s = (await getJson(`${endpoints[j]}/v3/maintenance/status`, { method: 'POST', body: '{}' })) as {
                header?: { member_id?: string };
              };
              if (s.header?.member_id === status.leader) return j;
            }
          } catch {
            // Try the next member.
          }
        }
        return fail('no live member knows a leader');
      },
      stop: async () => {
        const running = children.filter((c): c is ChildProcess => c !== undefined);
        process.removeListener('exit', stopSync);
        stopSync();
        await Promise.all(running.map(exited));
      },
    };
  } catch (err) {
    process.removeListener('exit', stopSync);
    stopSync();
    throw err;
  }
}

/** A TCP proxy in front of one etcd member that can hold back the member's answers. */
export interface DelayProxy {
  /** `http://127.0.0.1:port` of the proxy. */
  url: string;
  /** Delays every byte from the member by `ms` from now on (0: pass through); order is kept. */
  setResponseDelayMs(ms: number): void;
  close(): Promise<void>;
}

/**
 * Starts a proxy to `target` (an etcd client URL). Requests pass at once; answers can be delayed past the
 * client's deadline, so a write lands in etcd while its acknowledgement is lost: an unknown outcome, as
 * on a slow or partitioned network.
 */
export async function startDelayProxy(target: string): Promise<DelayProxy> {
  const { hostname, port } = new URL(target);
  let delayMs = 0;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(port), hostname);
    sockets.add(client);
    sockets.add(upstream);
    const queue: { at: number; chunk: Buffer }[] = [];
    let timer: ReturnType<typeof setTimeout> | undefined;
    const pump = (): void => {
      timer = undefined;
      while (queue.length > 0 && queue[0]!.at <= Date.now()) {
        const { chunk } = queue.shift()!;
        if (!client.destroyed) client.write(chunk);
      }
      if (queue.length > 0) timer = setTimeout(pump, queue[0]!.at - Date.now());
    };
    upstream.on('data', (chunk: Buffer) => {
      const last = queue.length > 0 ? queue[queue.length - 1]!.at : 0;
      queue.push({ at: Math.max(Date.now() + delayMs, last), chunk });
      if (timer === undefined) pump();
    });
    client.on('data', (chunk: Buffer) => {
      if (!upstream.destroyed) upstream.write(chunk);
    });
    const teardown = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on('error', teardown);
      s.on('close', teardown);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (typeof address !== 'object' || !address) fail('proxy has no address');
  return {
    url: `http://127.0.0.1:${address.port}`,
    setResponseDelayMs: (ms) => {
      delayMs = ms;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
