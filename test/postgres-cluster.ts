/**
 * A private, throwaway PostgreSQL 15 cluster for tests that need a real server (the PostgreSQL
 * `RecordStore`, later the ledger on PostgreSQL). Each call to {@link startPostgresCluster} runs `initdb` in
 * a fresh temp dir and starts `postgres` with `pg_ctl`, listening on 127.0.0.1 only (a random free port, no
 * Unix socket, trust auth for 127.0.0.1 only); {@link PostgresCluster.stop} stops it and deletes the dir.
 *
 * PostgreSQL refuses to run as root, and tests run as root in CI: then every server binary runs as the
 * `postgres` user (via `runuser`, else `su`), which owns the temp dir. A watchdog process stops the cluster
 * and deletes the dir if this process dies without calling `stop` (a crash or SIGKILL), so no server
 * outlives the test run. Nothing is skipped: a missing binary or user fails with a message saying what to
 * install or set.
 *
 * Settings are for tests, not production: fsync and synchronous_commit are off (durability against an OS
 * crash is irrelevant for a throwaway cluster), and WAL segments are 1 MB so scans of the data dir are quick.
 */
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { accessSync, appendFileSync, chmodSync, chownSync, constants, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/** Where Debian's postgresql-15 package puts the server binaries; `HL_PG_BIN` overrides it. */
export const defaultPgBin = '/usr/lib/postgresql/15/bin';
const serverUser = 'postgres';
const startTimeoutS = 30;

/** A running private cluster. */
export interface PostgresCluster {
  host: '127.0.0.1';
  port: number;
  /** The data directory (`PGDATA`): what a raw scan of the files at rest reads. */
  dataDir: string;
  /** The server log (outside the data dir). */
  logFile: string;
  /** A libpq URL for `database` (default `postgres`) as the superuser `postgres`, trust auth. */
  connectionString(database?: string): string;
  /** Creates an empty database and returns its connection string. */
  createDatabase(name: string): Promise<string>;
  /** Runs `CHECKPOINT`, so every change so far is in the data files, not only in WAL and shared buffers. */
  checkpoint(): Promise<void>;
  /** Every regular file under the data dir, with its bytes (relative names). */
  readDataFiles(): { name: string; bytes: Buffer }[];
  /** Stops the server (fast shutdown, immediate if that fails) and deletes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

function fail(message: string): never {
  throw new Error(`PostgreSQL test cluster: ${message}`);
}

function shellQuote(arg: string): string {
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}

interface RunAs {
  /** argv that runs `argv` as the server user. */
  wrap(argv: readonly string[]): string[];
  uid: number | undefined;
  gid: number | undefined;
}

/** How to run server binaries: directly when not root, else as `postgres` via runuser or su. */
function resolveRunAs(): RunAs {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!isRoot) return { wrap: (argv) => [...argv], uid: undefined, gid: undefined };
  const id = (flag: string): number => {
    const r = spawnSync('id', [flag, serverUser], { encoding: 'utf8' });
    if (r.status !== 0) {
      fail(`running as root, and PostgreSQL refuses to run as root, but there is no '${serverUser}' user to run it as ` +
        `(install the postgresql-15 package, which creates it, or run the tests as a non-root user)`);
    }
    return Number(r.stdout.trim());
  };
  const uid = id('-u');
  const gid = id('-g');
  const runuser = ['/usr/sbin/runuser', '/sbin/runuser', '/usr/bin/runuser'].find((p) => existsSync(p));
  if (runuser) return { wrap: (argv) => [runuser, '-u', serverUser, '--', ...argv], uid, gid };
  const su = ['/usr/bin/su', '/bin/su'].find((p) => existsSync(p));
  if (su) return { wrap: (argv) => [su, serverUser, '-s', '/bin/sh', '-c', argv.map(shellQuote).join(' ')], uid, gid };
  return fail(`running as root, but neither runuser nor su is available to run PostgreSQL as '${serverUser}'`);
}

function run(runAs: RunAs, argv: readonly string[], what: string): SpawnSyncReturns<string> {
  const [cmd, ...args] = runAs.wrap(argv);
  const r = spawnSync(cmd!, args, { encoding: 'utf8', timeout: 60_000 });
  if (r.error || r.status !== 0) {
    fail(`${what} failed (exit ${r.status ?? 'none'}${r.error ? `, ${r.error.message}` : ''}):\n${r.stdout ?? ''}${r.stderr ?? ''}`);
  }
  return r;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function listFiles(root: string, dir = ''): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
    const rel = dir === '' ? entry.name : `${dir}/${entry.name}`;
    if (entry.isDirectory()) out.push(...listFiles(root, rel));
    else if (entry.isFile()) out.push(rel);
  }
  return out;
}

/**
 * A fresh temp dir owned by the server user, under TMPDIR, or under /tmp when the server user cannot reach
 * TMPDIR (say, a TMPDIR under /root).
 */
function makeServerDir(runAs: RunAs): string {
  const tried: string[] = [];
  for (const parent of [...new Set([tmpdir(), '/tmp'])]) {
    const dir = mkdtempSync(join(parent, 'hl-pg-'));
    if (runAs.uid !== undefined && runAs.gid !== undefined) chownSync(dir, runAs.uid, runAs.gid);
    chmodSync(dir, 0o700);
    const [probe, ...probeArgs] = runAs.wrap(['/bin/sh', '-c', `test -w ${shellQuote(dir)}`]);
    if (spawnSync(probe!, probeArgs).status === 0) return dir;
    rmSync(dir, { recursive: true, force: true });
    tried.push(parent);
  }
  return fail(`user '${serverUser}' cannot write a directory under ${tried.join(' or ')}; set TMPDIR to one it can reach`);
}

/**
 * Starts a private PostgreSQL cluster (see the file comment). Rejects, saying what is missing, when the
 * binaries or the `postgres` user are not there or the server does not start; never skips.
 */
export async function startPostgresCluster(options: { pgBin?: string } = {}): Promise<PostgresCluster> {
  const pgBin = options.pgBin ?? process.env.HL_PG_BIN ?? defaultPgBin;
  for (const bin of ['initdb', 'pg_ctl', 'postgres']) {
    const path = join(pgBin, bin);
    try {
      accessSync(path, constants.X_OK);
    } catch {
      fail(`${path} is missing or not executable; install Debian's postgresql-15 package (apt-get install -y postgresql-15) ` +
        `or set HL_PG_BIN to a directory holding PostgreSQL 15's initdb, pg_ctl and postgres`);
    }
  }
  const runAs = resolveRunAs();
  const dir = makeServerDir(runAs);
  const dataDir = join(dir, 'data');
  const logFile = join(dir, 'postgres.log');
  const pgCtl = join(pgBin, 'pg_ctl');
  let watchdog: number | undefined;
  let stopped = false;

  const stopSync = (): void => {
    if (stopped) return;
    stopped = true;
    if (watchdog !== undefined) {
      try {
        process.kill(watchdog);
      } catch {
        // Already gone.
      }
    }
    if (existsSync(join(dataDir, 'postmaster.pid'))) {
      for (const mode of ['fast', 'immediate']) {
        const [cmd, ...args] = runAs.wrap([pgCtl, '-D', dataDir, '-m', mode, '-w', '-t', '20', 'stop']);
        if (spawnSync(cmd!, args, { stdio: 'ignore', timeout: 30_000 }).status === 0) break;
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', stopSync);

  try {
    run(runAs, [join(pgBin, 'initdb'), '-D', dataDir, '--auth=trust', '--username=postgres', '--encoding=UTF8', '--locale=C',
      '--no-sync', '--no-instructions', '--wal-segsize=1'], 'initdb');
    // Trust for loopback TCP only: no Unix socket, no other address, no replication connections.
    writeFileSync(join(dataDir, 'pg_hba.conf'), 'host all postgres 127.0.0.1/32 trust\n');

    // The watchdog outlives a crashed or killed test process: it waits for this pid, then cleans up.
    const stopCmd = runAs.wrap([pgCtl, '-D', dataDir, '-m', 'immediate', '-w', 'stop']).map(shellQuote).join(' ');
    const script = `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; ` +
      `if [ -f ${shellQuote(join(dataDir, 'postmaster.pid'))} ]; then ${stopCmd} >/dev/null 2>&1; fi; rm -rf ${shellQuote(dir)}`;
    const child = spawn('/bin/sh', ['-c', script], { detached: true, stdio: 'ignore' });
    child.unref();
    watchdog = child.pid;

    let port = 0;
    let lastError = '';
    for (let attempt = 1; attempt <= 3 && port === 0; attempt++) {
      const candidate = await freePort();
      appendFileSync(join(dataDir, 'postgresql.conf'), [
        '',
        '# healthledger test cluster',
        "listen_addresses = '127.0.0.1'",
        `port = ${candidate}`,
        "unix_socket_directories = ''",
        'fsync = off',
        'synchronous_commit = off',
        'max_connections = 60',
        'shared_buffers = 32MB',
        'max_wal_size = 64MB',
        "log_min_messages = 'warning'",
        '',
      ].join('\n'));
      const [cmd, ...args] = runAs.wrap([pgCtl, '-D', dataDir, '-l', logFile, '-w', '-t', String(startTimeoutS), 'start']);
      const r = spawnSync(cmd!, args, { encoding: 'utf8', timeout: (startTimeoutS + 10) * 1000 });
      if (r.status === 0) port = candidate;
      else lastError = `${r.stdout}${r.stderr}\n${existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(-2000) : ''}`;
    }
    if (port === 0) fail(`the server did not start (pg_ctl start):\n${lastError}`);

    const connectionString = (database = 'postgres'): string => `postgresql://postgres@127.0.0.1:${port}/${database}`;
    const admin = async <T>(work: (client: pg.Client) => Promise<T>): Promise<T> => {
      const client = new pg.Client({ connectionString: connectionString() });
      await client.connect();
      try {
        return await work(client);
      } finally {
        await client.end();
      }
    };
    return {
      host: '127.0.0.1',
      port,
      dataDir,
      logFile,
      connectionString,
      createDatabase: async (name) => {
        if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) fail(`bad database name ${name}`);
        await admin((c) => c.query(`CREATE DATABASE ${name}`));
        return connectionString(name);
      },
      checkpoint: async () => {
        await admin((c) => c.query('CHECKPOINT'));
      },
      readDataFiles: () =>
        listFiles(dataDir).flatMap((name) => {
          try {
            return [{ name, bytes: readFileSync(join(dataDir, name)) }];
          } catch (err) {
            // The server may remove a temporary file (pg_stat_tmp) between listing and reading.
            if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
            throw err;
          }
        }),
      stop: async () => {
        process.removeListener('exit', stopSync);
        stopSync();
      },
    };
  } catch (err) {
    process.removeListener('exit', stopSync);
    stopSync();
    throw err;
  }
}
