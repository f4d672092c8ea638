/**
 * @module cli
 * The `healthledger` command: parses arguments (commander) and calls node.ts; prints results for people
 * and a one-line error with a non-zero exit for anything that goes wrong. May import: node.ts, api client,
 * bench.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import cliProgress from 'cli-progress';
import {
  addAuthClient,
  addStaffUser,
  adoptGenesis,
  approveMembershipChange,
  checkEtcdEndpoints,
  signMembershipChange,
  type MembershipChange,
  createGenesis,
  createPatientKey,
  type EtcdSettings,
  initNode,
  memberDescriptor,
  nodeForkAlarm,
  isHlError,
  issueAdminToken,
  readPatientKeyFile,
  rotateNodeKek,
  startNode,
  verifyDataDir,
  writePatientKeyFile,
  writeSynthBundles,
} from '../node.js';
import { benchGroups, runBench } from '../bench/index.js';
import { importFiles } from './import.js';
import { demoTour, startDemo } from './demo.js';
import { RequestError, requestJson } from './http.js';
import { UsageError, fetchDisclosures, grantBody, grantConsent, linkPatient, registerPatient, revokeConsent, type GrantOptions } from './patient.js';

/** Exit codes. */
export const ExitCode = { ok: 0, failed: 1, usage: 2 } as const;

function progressBar(label: string, unit: string): { update(done: number, total: number): void; stop(): void } {
  if (!process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    { format: `${label} [{bar}] {percentage}% | {value}/{total} ${unit} | {eta_formatted} left`, stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(done, total) {
      if (!started) {
        bar.start(total, 0);
        started = true;
      }
      bar.update(done);
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

interface ChangeOptions {
  data: string;
  join?: string;
  update?: string;
  leave?: string;
}

function membershipChangeOf(opts: ChangeOptions): MembershipChange {
  const given = [opts.join, opts.update, opts.leave].filter((v) => v !== undefined);
  if (given.length !== 1) throw new HlErrorForCli('name exactly one change: --join FILE, --update FILE or --leave ORG');
  if (opts.leave !== undefined) return { leave: opts.leave };
  const line = readJsonFile((opts.join ?? opts.update)!, 'member line') as Extract<MembershipChange, { join: unknown }>['join'];
  return opts.join !== undefined ? { join: line } : { update: line };
}

interface StartOptions {
  data: string;
  port: string;
  host: string;
  database?: string;
  publicUrl?: string;
  genesis?: string;
  etcd?: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUser?: string;
}

/**
 * Keeps a server command running until SIGINT or SIGTERM, then closes it. The process then exits: a client
 * library may keep retrying a connection that never came up (the etcd client does, against an unreachable
 * cluster), which would otherwise keep it alive.
 */
async function serveUntilStopped(close: () => Promise<void>): Promise<void> {
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      void close().then(resolve);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  setTimeout(() => process.exit(Number(process.exitCode ?? ExitCode.ok)), 1000).unref();
}

function readJsonFile(file: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new HlErrorForCli(`${what} not found: ${file}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new HlErrorForCli(`${what} ${file} is not JSON`);
  }
}

function readPem(file: string, option: string): Buffer {
  try {
    return readFileSync(file);
  } catch {
    throw new HlErrorForCli(`${option}: cannot read ${file}`);
  }
}

/** The etcd settings `start` and `demo` take, or undefined without --etcd. */
function etcdSettingsOf(opts: { etcd?: string; etcdCa?: string; etcdCert?: string; etcdKey?: string; etcdUser?: string }): EtcdSettings | undefined {
  if (!opts.etcd) {
    if (opts.etcdCa || opts.etcdCert || opts.etcdKey || opts.etcdUser) throw new HlErrorForCli('--etcd-ca, --etcd-cert, --etcd-key and --etcd-user go with --etcd');
    return undefined;
  }
  if (Boolean(opts.etcdCert) !== Boolean(opts.etcdKey)) throw new HlErrorForCli('--etcd-cert and --etcd-key go together');
  if (opts.etcdCert && !opts.etcdCa) throw new HlErrorForCli('--etcd-cert and --etcd-key need --etcd-ca (the CA of the etcd members)');
  const password = process.env.HEALTHLEDGER_ETCD_PASSWORD;
  if (opts.etcdUser && !password) throw new HlErrorForCli('--etcd-user needs the password in $HEALTHLEDGER_ETCD_PASSWORD');
  const endpoints = opts.etcd.split(',').map((u) => u.trim()).filter((u) => u.length > 0);
  checkEtcdEndpoints(endpoints);
  return {
    endpoints,
    ...(opts.etcdCa
      ? { tls: { ca: readPem(opts.etcdCa, '--etcd-ca'), ...(opts.etcdCert ? { cert: readPem(opts.etcdCert, '--etcd-cert'), key: readPem(opts.etcdKey!, '--etcd-key') } : {}) } }
      : {}),
    ...(opts.etcdUser ? { auth: { username: opts.etcdUser, password: password! } } : {}),
  };
}

function buildProgram(out: (s: string) => void): Command {
  const program = new Command('healthledger')
    .description('Healthledger: a permissioned health-record exchange network with a verifiable ledger')
    .exitOverride()
    .configureOutput({ writeOut: out, writeErr: (s) => process.stderr.write(s) })
    .showHelpAfterError('(run healthledger --help for usage)');

  program
    .command('init')
    .description("create an organization's keys, config and genesis ledger in a data directory")
    .requiredOption('--org <name>', 'organization name, e.g. "St. Mary Hospital"')
    .requiredOption('--data <dir>', 'data directory to create')
    .option('--join', 'only create the keys and config: the node will join a network whose genesis another member makes')
    .option('--url <url>', "with --join: the URL other members reach this node at (https://node.example.org)")
    .action(async (opts: { org: string; data: string; join?: boolean; url?: string }) => {
      if (opts.url !== undefined && !opts.join) throw new HlErrorForCli('--url goes with --join');
      if (opts.join) {
        const r = await initNode({ org: opts.org, dataDir: opts.data, join: true });
        const descriptor = memberDescriptor(r.dataDir, opts.url);
        out(
          [
            `created organization ${r.config.orgId} in ${r.dataDir}, waiting for a network genesis`,
            '  send this member line to the founding organization (healthledger genesis --member FILE):',
            JSON.stringify(descriptor),
            '',
          ].join('\n'),
        );
        return;
      }
      const r = await initNode({ org: opts.org, dataDir: opts.data });
      out(
        [
          `initialized organization ${r.config.orgId} in ${r.dataDir}`,
          `  network origin: ${r.config.origin}`,
          `  key id:         ${r.keyId}`,
          `  verifier key:   ${r.verifierKey}`,
          `  checkpoint:`,
          ...r.checkpoint.trimEnd().split('\n').map((l) => `    ${l}`),
          '',
        ].join('\n'),
      );
    });

  program
    .command('demo')
    .description('run three organizations (a hospital, a lab, a clinic) with synthetic patients in this process; print URLs, logins and a tour')
    .option('--port <port>', 'first port: the nodes listen on P, P+1, P+2', '8080')
    .option('--patients <n>', 'synthetic patients to seed on first run', '12')
    .option('--data <dir>', 'where the network lives (reopened if it exists)', 'healthledger-demo')
    .option('--etcd <urls>', 'order through this etcd cluster (comma-separated client URLs) instead of in process')
    .action(async (opts: { port: string; patients: string; data: string; etcd?: string }) => {
      const etcd = etcdSettingsOf(opts);
      if (!/^\d{1,5}$/.test(opts.port) || Number(opts.port) > 65533) throw new HlErrorForCli('--port must be a number from 0 to 65533');
      if (!/^\d{1,5}$/.test(opts.patients) || Number(opts.patients) < 1 || Number(opts.patients) > 10000) throw new HlErrorForCli('--patients must be a number from 1 to 10000');
      const bar = progressBar('seeding', 'patients');
      let demo;
      try {
        demo = await startDemo({
          port: Number(opts.port),
          patients: Number(opts.patients),
          dataDir: opts.data,
          ...(etcd ? { etcd } : {}),
          onProgress: (d, t) => bar.update(d, t),
        });
      } finally {
        bar.stop();
      }
      out(demoTour(demo));
      await serveUntilStopped(() => demo.network.close());
    });

  program
    .command('member')
    .description("print this organization's member line (id, name, public key, URL) for a network genesis")
    .requiredOption('--data <dir>', "the node's data directory")
    .option('--url <url>', 'the URL other members reach this node at')
    .action((opts: { data: string; url?: string }) => {
      out(`${JSON.stringify(memberDescriptor(opts.data, opts.url))}\n`);
    });

  program
    .command('genesis')
    .description('found a network: sign a genesis listing this organization and the members (their member lines), for every node to start from')
    .requiredOption('--data <dir>', "the founding organization's data directory (made with init --join)")
    .requiredOption('--origin <name>', 'the network name every checkpoint carries, e.g. healthledger.example.org/regional-net')
    .requiredOption('--url <url>', "the URL other members reach the founder's node at")
    .requiredOption('--out <file>', 'where to write the genesis (never overwritten)')
    .option('--member <file...>', 'member line files (healthledger member --data DIR --url URL > FILE)', [])
    .action((opts: { data: string; origin: string; url: string; out: string; member: string[] }) => {
      if (existsSync(opts.out)) throw new HlErrorForCli(`${opts.out} exists; refusing to overwrite it`);
      const members = opts.member.map((f) => readJsonFile(f, 'member line') as Parameters<typeof createGenesis>[0]['members'][number]);
      const genesis = createGenesis({ dataDir: opts.data, origin: opts.origin, url: opts.url, members });
      writeFileSync(opts.out, `${JSON.stringify(genesis, null, 2)}\n`);
      const orgs = genesis.body.orgs as { id: string; url?: string }[];
      out(`wrote the genesis of ${opts.origin} to ${opts.out}: ${orgs.map((o) => `${o.id} (${o.url ?? 'no URL'})`).join(', ')}\n`);
    });

  const org = program.command('org').description('membership of the network: every join, update or leave needs the approval of a majority of the members');
  const changeOptions = (cmd: Command) =>
    cmd
      .requiredOption('--data <dir>', "this organization's data directory")
      .option('--join <file>', 'the joining organization\'s member line (healthledger member)')
      .option('--update <file>', "a member's new member line (new URL or key)")
      .option('--leave <org>', 'the id of the member that leaves');
  changeOptions(org.command('approve').description('print this member\'s approval of a membership change (send it to whoever submits the change)')).action(
    (opts: ChangeOptions) => {
      out(`${JSON.stringify(approveMembershipChange(opts.data, membershipChangeOf(opts)))}\n`);
    },
  );
  changeOptions(org.command('submit').description('sign a membership change with the approvals gathered and have a node order it'))
    .requiredOption('--approval <file...>', 'approval files (healthledger org approve), from a majority of the members')
    .requiredOption('--url <url>', 'a node of the network')
    .action(async (opts: ChangeOptions & { approval: string[]; url: string }) => {
      const url = checkUrl(opts.url);
      const approvals = opts.approval.map((f) => readJsonFile(f, 'approval file') as Parameters<typeof signMembershipChange>[2][number]);
      const tx = signMembershipChange(opts.data, membershipChangeOf(opts), approvals);
      const receipt = (await requestJson(url, '/ledger/tx', { method: 'POST', body: tx })) as { leafIndex?: number };
      out(`${tx.type} ordered at leaf ${receipt.leafIndex ?? '?'}; every node applies it\n`);
    });

  program
    .command('alarm')
    .description("show a stopped node's fork alarm (two different ledger roots seen for one tree size); --clear lifts it")
    .requiredOption('--data <dir>', "the node's data directory (the node must be stopped)")
    .option('--clear', 'clear the alarm, after the fork is understood: the node accepts writes again')
    .action((opts: { data: string; clear?: boolean }) => {
      const alarm = nodeForkAlarm(opts.data, { clear: opts.clear ?? false });
      if (alarm === null) out('no fork alarm\n');
      else out(`fork alarm raised ${new Date(alarm.atMs).toISOString()}: ${alarm.message}${opts.clear ? '\ncleared: the node accepts writes again when started' : ''}\n`);
    });

  program
    .command('verify')
    .description('recompute and check every leaf, root, block hash, signature and checkpoint (exit 0 only if all hold)')
    .requiredOption('--data <dir>', "the node's data directory")
    .option('--checkpoint <file...>', 'signed checkpoints obtained elsewhere that the ledger must match')
    .action(async (opts: { data: string; checkpoint?: string[] }) => {
      const trusted = (opts.checkpoint ?? []).map((f) => readFileSync(f, 'utf8'));
      const bar = progressBar('verifying', 'blocks');
      const started = performance.now();
      let report;
      try {
        report = await verifyDataDir(opts.data, { trustedCheckpoints: trusted, onProgress: (d, t) => bar.update(d, t) });
      } finally {
        bar.stop();
      }
      const seconds = (performance.now() - started) / 1000;
      if (!report.ok) {
        const p = report.problem!;
        const where = p.height !== undefined ? `block ${p.height}${p.position !== undefined ? ` tx ${p.position}` : ''}` : `tree size ${p.treeSize ?? '?'}`;
        process.stderr.write(`verification FAILED at ${where}: ${p.message}\n`);
        process.exitCode = ExitCode.failed;
        return;
      }
      out(
        `verified: ${report.blocks} blocks, ${report.txs} txs, ${report.entries} entries, ${report.checkpoints} checkpoints ` +
          `in ${seconds.toFixed(2)} s; tree size ${report.treeSize}, root ${report.root}\n`,
      );
    });

  program
    .command('synth')
    .description('write deterministic synthetic patients as FHIR R4 transaction bundles, one file per patient')
    .requiredOption('--patients <n>', 'how many patients')
    .requiredOption('--out <dir>', 'output directory')
    .option('--seed <s>', 'random seed (same seed, same bytes)', '1')
    .action((opts: { patients: string; seed: string; out: string }) => {
      const bar = progressBar('generating', 'patients');
      let result;
      try {
        result = writeSynthBundles({
          patients: /^\d+$/.test(opts.patients) ? Number(opts.patients) : Number.NaN,
          seed: /^\d+$/.test(opts.seed) ? Number(opts.seed) : Number.NaN,
          outDir: opts.out,
          onProgress: (d, t) => bar.update(d, t),
        });
      } finally {
        bar.stop();
      }
      out(`wrote ${result.files} patients (${result.resources} resources) to ${opts.out}\n`);
    });

  program
    .command('import')
    .description('load FHIR Bundles (.json) and NDJSON (.ndjson) into a node over HTTP, with a summary of failures')
    .argument('<files...>', 'bundle or NDJSON files')
    .requiredOption('--url <url>', 'the node, e.g. http://127.0.0.1:8080')
    .option('--token <token>', 'bearer token (default: $HEALTHLEDGER_TOKEN)')
    .action(async (fileArgs: string[], opts: { url: string; token?: string }) => {
      const token = opts.token ?? process.env.HEALTHLEDGER_TOKEN;
      if (!token) throw new HlErrorForCli('a token is needed: --token or HEALTHLEDGER_TOKEN (healthledger token --data DIR)');
      checkUrl(opts.url);
      const bar = progressBar('importing', 'files');
      let results;
      try {
        results = await importFiles(fileArgs, { url: opts.url, token, onProgress: (d, t) => bar.update(d, t) });
      } catch (err) {
        bar.stop();
        throw new HlErrorForCli(err instanceof Error ? err.message : String(err));
      }
      bar.stop();
      const failed = results.filter((r) => !r.ok);
      const resources = results.filter((r) => r.ok).reduce((n, r) => n + r.resources, 0);
      out(`imported ${results.length - failed.length} of ${results.length} files (${resources} resources)\n`);
      for (const f of failed) out(`  FAILED ${f.file}: ${f.error}\n`);
      if (failed.length > 0) process.exitCode = ExitCode.failed;
    });

  program
    .command('start')
    .description("serve a node's HTTP API (ledger now; FHIR as it lands) until interrupted")
    .requiredOption('--data <dir>', "the node's data directory")
    .option('--port <port>', 'TCP port (0 picks a free one)', '8080')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--database <url>', 'PostgreSQL URL for the record store (default: embedded SQLite)')
    .option('--public-url <url>', 'the URL clients reach the node at, for SMART (default: the address it listens on)')
    .option('--genesis <file>', "the network's genesis (healthledger genesis): joins that network on first start")
    .option('--etcd <urls>', 'order through this etcd cluster: comma-separated client URLs')
    .option('--etcd-ca <file>', 'PEM CA certificate of the etcd members (TLS)')
    .option('--etcd-cert <file>', "PEM client certificate of this organization for etcd (mutual TLS)")
    .option('--etcd-key <file>', "PEM private key of that certificate")
    .option('--etcd-user <name>', "this organization's etcd user (password in $HEALTHLEDGER_ETCD_PASSWORD)")
    .action(async (opts: StartOptions) => {
      if (!/^\d{1,5}$/.test(opts.port) || Number(opts.port) > 65535) throw new HlErrorForCli('--port must be a number from 0 to 65535');
      // Every option is checked before the genesis is adopted, so a bad command line changes nothing.
      const etcd = etcdSettingsOf(opts);
      if (opts.genesis) adoptGenesis(opts.data, readJsonFile(opts.genesis, 'genesis file') as Parameters<typeof adoptGenesis>[1]);
      const running = await startNode({
        dataDir: opts.data,
        port: Number(opts.port),
        host: opts.host,
        ...(opts.database ? { database: opts.database } : {}),
        ...(opts.publicUrl ? { publicUrl: opts.publicUrl } : {}),
        ...(etcd ? { etcd } : {}),
      });
      out(
        `${running.node.config.orgId} serving at ${running.url}${etcd ? ` (ordering: etcd ${etcd.endpoints.join(',')})` : ''}\n` +
          `  ledger: ${running.url}/ledger/checkpoint\n  stop with Ctrl-C\n`,
      );
      await serveUntilStopped(() => running.close());
    });

  program
    .command('token')
    .description('print a bearer token for local administration, signed by the node key (valid 12 h)')
    .requiredOption('--data <dir>', "the node's data directory")
    .option('--scope <scope>', 'SMART scopes, space-separated', 'user/*.cruds')
    .action(async (opts: { data: string; scope: string }) => {
      out(`${await issueAdminToken({ dataDir: opts.data, scope: opts.scope })}\n`);
    });

  registerAuthCommands(program, out);

  const keys = program.command('keys').description("manage the node's keys");
  keys
    .command('rotate')
    .description(
      'replace the key-encryption key: re-wrap every data key under a new KEK in one transaction, without rewriting any record ' +
        '(the node must be stopped; the old KEK is kept as keys/kek.key.retired-<time> for you to destroy)',
    )
    .requiredOption('--data <dir>', "the node's data directory")
    .option('--database <url>', 'the PostgreSQL URL the node runs with, if any (default: the embedded SQLite store)')
    .action(async (opts: { data: string; database?: string }) => {
      const bar = progressBar('re-wrapping', 'keys');
      const started = performance.now();
      let r;
      try {
        r = await rotateNodeKek({
          dataDir: opts.data,
          ...(opts.database ? { database: opts.database } : {}),
          onStep: (step) => {
            if (step === 'new-kek-written') out('new KEK written to keys/kek.key.next\n');
          },
          onProgress: (done, total) => {
            if (done === 0) out(`re-wrapping ${total} keys in one transaction\n`);
            bar.update(done, total);
          },
        });
      } finally {
        bar.stop();
      }
      const seconds = (performance.now() - started) / 1000;
      const lines: string[] = [];
      if (r.finishedEarlier) {
        lines.push(
          `finished an earlier rotation that was interrupted after its transaction (store already under ${r.finishedEarlier.kekId}` +
            `${r.finishedEarlier.retiredKekFile ? `; retired ${r.finishedEarlier.retiredKekFile}` : ''})`,
        );
      }
      lines.push(
        `re-wrapped ${r.dataKeysRewrapped} data keys and the blind-index key under KEK ${r.toKekId} (was ${r.fromKekId}) in ${seconds.toFixed(2)} s; ` +
          'no record, index entry or ledger entry was rewritten',
        `  new KEK:     ${r.kekFile}`,
      );
      if (r.retiredKekFile) {
        lines.push(
          `  retired KEK: ${r.retiredKekFile}`,
          '  The retired KEK still decrypts every backup or copy of the database made before this rotation. Destroy it,',
          '  and every copy of it, once no such backup is needed. The node no longer accepts it.',
        );
      }
      if (r.backend === 'postgresql') {
        lines.push('  PostgreSQL may keep old copies of the re-wrapped keys (dead rows, WAL) until it overwrites them; they are useless without the retired KEK.');
      }
      out(`${lines.join('\n')}\n`);
    });

  const patient = program.command('patient').description("a patient's key: create, register on the ledger, link to records");
  patient
    .command('new')
    .description('create a patient key file, register the key on the ledger and print the network id (last line)')
    .requiredOption('--url <url>', 'a node, e.g. http://127.0.0.1:8080')
    .requiredOption('--out <keyfile>', 'where to write the new key file (never overwritten; keep it safe)')
    .option('--link <ref>', 'also link the key to this local Patient/ID at the node (needs a staff token)')
    .option('--token <token>', 'staff bearer token for --link (default: $HEALTHLEDGER_TOKEN)')
    .action(async (opts: { url: string; out: string; link?: string; token?: string }) => {
      const url = checkUrl(opts.url);
      const token = opts.link ? needToken(opts.token) : undefined;
      const key = createPatientKey();
      writePatientKeyFile(opts.out, key);
      out(`wrote key file ${opts.out}\n`);
      const r = await registerPatient(url, key);
      out(`registered on the ledger (leaf ${r.leafIndex})\n`);
      if (opts.link) {
        const l = await linkPatient(url, key, opts.link, token!);
        out(`linked to ${opts.link} at ${l.custodian}\n`);
      }
      out(`${key.patient}\n`);
    });
  patient
    .command('link')
    .description("link an existing patient key to a local Patient/ID at a node (the node's staff token approves)")
    .requiredOption('--key <keyfile>', "the patient's key file")
    .requiredOption('--url <url>', 'the node holding the record')
    .requiredOption('--link <ref>', 'the local Patient/ID')
    .option('--token <token>', 'staff bearer token (default: $HEALTHLEDGER_TOKEN)')
    .action(async (opts: { key: string; url: string; link: string; token?: string }) => {
      const url = checkUrl(opts.url);
      const token = needToken(opts.token);
      const key = readPatientKeyFile(opts.key);
      const l = await linkPatient(url, key, opts.link, token);
      out(`linked ${key.patient} to ${opts.link} at ${l.custodian}\n`);
    });

  const consent = program.command('consent').description("a patient's consents on the ledger: grant and revoke");
  consent
    .command('grant')
    .description('sign and submit a consent; prints the new consent id as the last line')
    .requiredOption('--key <keyfile>', "the patient's (or proxy's) key file")
    .requiredOption('--url <url>', 'a node')
    .requiredOption('--to <actor>', 'who: org:ID (or ID), practitioner:ORG/ID, role:ROLE[@ORG], patient:NETWORK-ID; comma-separated')
    .option('--purpose <p>', 'purposes of use, comma-separated: TREAT, ETREAT, HPAYMT, HRESCH, PUBHLTH (default TREAT; none with --proxy)')
    .option('--class <types>', 'only these FHIR resource types, comma-separated (default: all)')
    .option('--exclude-label <labels>', 'never these sensitive categories: PSY, HIV, ETH, SEX, GDIS')
    .option('--until <date>', 'last day (YYYY-MM-DD, UTC) or time the consent holds')
    .option('--patient <id>', 'the patient, when the key is their proxy')
    .option('--proxy', 'make the patient actors of --to proxies (they may manage consents for the patient)')
    .action(async (opts: GrantOptions & { key: string; url: string }) => {
      const url = checkUrl(opts.url);
      const key = readPatientKeyFile(opts.key);
      const body = grantBody(key, opts, Date.now());
      const r = await grantConsent(url, key, body);
      out(`consent granted for ${String(body.patient)} (leaf ${r.leafIndex})\n${r.consent}\n`);
    });
  consent
    .command('revoke')
    .description('sign and submit the revocation of a consent; it is enforced once its block is applied')
    .requiredOption('--key <keyfile>', "the patient's (or proxy's) key file")
    .requiredOption('--url <url>', 'a node')
    .requiredOption('--consent <id>', 'the consent id printed by consent grant')
    .option('--patient <id>', 'the patient, when the key is their proxy')
    .action(async (opts: { key: string; url: string; consent: string; patient?: string }) => {
      const url = checkUrl(opts.url);
      const key = readPatientKeyFile(opts.key);
      const r = await revokeConsent(url, key, opts.consent, opts.patient ?? key.patient);
      out(`consent ${opts.consent} revoked (tx ${r.txId})\n`);
    });

  program
    .command('disclosures')
    .description("a patient's accounting of disclosures at a node: every access to their records, each proof checked")
    .requiredOption('--key <keyfile>', "the patient's key file (signs the login challenge)")
    .requiredOption('--url <url>', 'the node holding the records')
    .option('--json', 'print the list as JSON')
    .action(async (opts: { key: string; url: string; json?: boolean }) => {
      const url = checkUrl(opts.url);
      const key = readPatientKeyFile(opts.key);
      const list = await fetchDisclosures(url, key);
      const failed = list.filter((d) => d.proofProblem !== null);
      if (opts.json) out(`${JSON.stringify(list, null, 2)}\n`);
      else {
        const lines = list.map(
          (d) =>
            `${d.recorded}  ${d.org}${d.user ? `/${d.user}` : ''}  ${d.purpose}  ${d.action}  ${d.outcome}${d.breakGlass ? '  BREAK-GLASS' : ''}` +
            `  ${d.resources} resource(s)  leaf ${d.leafIndex}  ${d.pending ? 'proof pending' : d.proofProblem === null ? 'proof ok' : `PROOF FAILED: ${d.proofProblem}`}` +
            (d.reason && d.outcome === 'deny' ? `  (${d.reason})` : ''),
        );
        const pending = list.filter((d) => d.pending).length;
        out(
          `${[...lines, `${list.length} accesses at ${url}; ${list.length - failed.length - pending} proven, ${pending > 0 ? `${pending} pending, ` : ''}${failed.length} failed`].join('\n')}\n`,
        );
      }
      if (failed.length > 0) process.exitCode = ExitCode.failed;
    });

  program
    .command('bench')
    .description('measure the performance budgets of DESIGN.md §10 and print them as a table')
    .option('--quick', 'smaller sizes, for a fast look')
    .option('--only <groups>', `comma-separated groups of rows: ${benchGroups.join(', ')} (default: all but memory, which ingests 1M resources)`)
    .action(async (opts: { quick?: boolean; only?: string }) => {
      const only = opts.only?.split(',').map((g) => g.trim());
      const unknown = only?.filter((g) => !(benchGroups as readonly string[]).includes(g)) ?? [];
      if (unknown.length > 0) throw new HlErrorForCli(`--only: unknown group ${unknown.join(', ')} (groups: ${benchGroups.join(', ')})`);
      await runBench({ quick: opts.quick ?? false, ...(only ? { only } : {}), out });
    });

  return program;
}

/** `client add` and `user add`: SMART clients and staff users in DIR/auth.json (read by a running node as it changes). */
function registerAuthCommands(program: Command, out: (s: string) => void): void {
  const client = program.command('client').description('OAuth clients of the node (SMART on FHIR)');
  client
    .command('add')
    .description('register a backend client (--jwks or --org: SMART Backend Services) or a public app (--redirect-uri, PKCE)')
    .requiredOption('--data <dir>', "the node's data directory")
    .requiredOption('--id <id>', 'the client_id')
    .requiredOption('--scope <scopes>', 'the most it may be granted, space-separated (system/... for backends; patient/..., user/... for apps)')
    .option('--jwks <file>', "a JWK set file with the backend's public keys (EdDSA, ES384 or RS384)")
    .option('--redirect-uri <uri...>', "the app's redirect URIs (https, or http on 127.0.0.1/localhost)")
    .option('--org <org>', "another member organization's node, authenticating with its member key on the ledger")
    .option('--name <name>', 'a display name (default: the id)')
    .action(async (opts: { data: string; id: string; scope: string; jwks?: string; redirectUri?: string[]; org?: string; name?: string }) => {
      const c = await addAuthClient({
        dataDir: opts.data,
        clientId: opts.id,
        scope: opts.scope,
        ...(opts.jwks !== undefined ? { jwksFile: opts.jwks } : {}),
        ...(opts.redirectUri !== undefined ? { redirectUris: opts.redirectUri } : {}),
        ...(opts.org !== undefined ? { org: opts.org } : {}),
        ...(opts.name !== undefined ? { name: opts.name } : {}),
      });
      out(`registered ${c.kind === 'app' ? 'app' : 'backend'} client ${c.clientId}${c.kind === 'backend' && c.org ? ` of ${c.org}` : ''} with scope "${c.scope}"\n`);
    });

  const user = program.command('user').description('staff users of the node');
  user
    .command('add')
    .description('add a staff user; the password comes from --password-file or stdin, never the command line')
    .requiredOption('--data <dir>', "the node's data directory")
    .requiredOption('--username <name>', 'the username')
    .requiredOption('--role <role>', 'clinician, admin or auditor')
    .option('--practitioner <id>', "the user's Practitioner id at this node")
    .option('--password-file <file>', 'a file holding the password (default: read it from stdin)')
    .action(async (opts: { data: string; username: string; role: string; practitioner?: string; passwordFile?: string }) => {
      let text: string;
      if (opts.passwordFile !== undefined) {
        try {
          text = readFileSync(opts.passwordFile, 'utf8');
        } catch {
          throw new HlErrorForCli(`cannot read the password file ${opts.passwordFile}`);
        }
      } else if (process.stdin.isTTY) throw new HlErrorForCli('give --password-file FILE or pipe the password on stdin');
      else text = readFileSync(0, 'utf8');
      // One line: the password without its line ending.
      const password = text.replace(/\r?\n$/, '');
      if (password.includes('\n')) throw new HlErrorForCli('the password must be one line');
      await addStaffUser({
        dataDir: opts.data,
        username: opts.username,
        role: opts.role,
        password,
        ...(opts.practitioner !== undefined ? { practitioner: opts.practitioner } : {}),
      });
      out(`added ${opts.role} ${opts.username}${opts.practitioner ? ` (Practitioner/${opts.practitioner})` : ''}\n`);
    });
}

/** A usage problem found by the CLI itself. */
class HlErrorForCli extends Error {}

function checkUrl(url: string): string {
  if (!/^https?:\/\/[^\s]+$/.test(url)) throw new HlErrorForCli('--url must be an http(s) URL');
  return url;
}

function needToken(token: string | undefined): string {
  const t = token ?? process.env.HEALTHLEDGER_TOKEN;
  if (!t) throw new HlErrorForCli('a staff token is needed: --token or HEALTHLEDGER_TOKEN (healthledger token --data DIR)');
  return t;
}

/** Runs the CLI on `argv` (as process.argv); returns the exit code. */
export async function run(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  const program = buildProgram(out);
  try {
    await program.parseAsync(argv);
    return Number(process.exitCode ?? ExitCode.ok);
  } catch (err) {
    if (err instanceof HlErrorForCli || err instanceof UsageError) {
      process.stderr.write(`healthledger: ${err.message}\n`);
      return ExitCode.usage;
    }
    if (err instanceof RequestError) {
      process.stderr.write(`healthledger: ${err.message}\n`);
      return ExitCode.failed;
    }
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    if (isHlError(err)) {
      process.stderr.write(`healthledger: ${err.message}\n`);
      return err.code === 'invalid' || err.code === 'not-found' || err.code === 'conflict' ? ExitCode.usage : ExitCode.failed;
    }
    process.stderr.write(`healthledger: unexpected error: ${err instanceof Error ? err.message : String(err)}\n`);
    return ExitCode.failed;
  }
}
