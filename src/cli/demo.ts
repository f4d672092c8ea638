/**
 * `healthledger demo`: three organizations (a hospital, a lab, a clinic) in one process on one shared
 * LocalOrderer, or on an etcd cluster, seeded with synthetic patients whose records are spread across them.
 * Every patient holds a key (a key file), is linked at each custodian; every other patient consents to
 * treatment by all three. Writes `DIR/network.json` (DESIGN.md §9) and prints URLs, logins and a tour.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  addStaffUser,
  linkPatientKey,
  createPatientKey,
  generatePatientBundle,
  initNode,
  issueAdminToken,
  orgIdFromName,
  signPatientTx,
  startLocalNetwork,
  writePatientKeyFile,
  openEtcdOrderer,
  readConfig,
  systemClock,
  type EtcdSettings,
  type LocalNetwork,
  type RunningNode,
} from '../node.js';

/** The three demo organizations, in port order. */
export const demoOrgs = [
  { name: 'General Hospital', role: 'hospital' },
  { name: 'City Lab', role: 'lab' },
  { name: 'Riverside Clinic', role: 'clinic' },
] as const;

/** The staff login every demo node has. */
export const demoLogin = { username: 'clinician', password: 'healthledger-demo' };

/** What `network.json` holds. */
export interface DemoNetworkFile {
  orgs: { id: string; name: string; url: string; token: string }[];
  patients: { id: string; custodians: string[]; keyFile: string }[];
}

/** Which resource types each non-hospital custodian keeps (the hospital keeps the rest). */
const kept: Record<'lab' | 'clinic', ReadonlySet<string>> = {
  lab: new Set(['Observation', 'DiagnosticReport']),
  clinic: new Set(['Immunization', 'AllergyIntolerance']),
};

type Entry = { fullUrl?: string; resource: { resourceType: string } & Record<string, unknown>; request?: unknown };

/** Removes references to entries outside `inside` (a custodian keeps only its part of the record). */
function pruneReferences(value: unknown, inside: ReadonlySet<string>): unknown {
  if (Array.isArray(value)) {
    return value.filter((v) => !isOutsideReference(v, inside)).map((v) => pruneReferences(v, inside));
  }
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (isOutsideReference(v, inside)) continue;
    out[k] = pruneReferences(v, inside);
  }
  return out;
}

function isOutsideReference(v: unknown, inside: ReadonlySet<string>): boolean {
  const ref = (v as { reference?: unknown } | null)?.reference;
  return typeof ref === 'string' && ref.startsWith('urn:uuid:') && !inside.has(ref);
}

/** The part of a patient's transaction bundle one custodian keeps: the Patient plus its resource types. */
export function custodianBundle(bundle: { entry: Entry[] }, role: 'hospital' | 'lab' | 'clinic'): { resourceType: 'Bundle'; type: 'transaction'; entry: Entry[] } {
  const keep = (e: Entry) =>
    e.resource.resourceType === 'Patient' ||
    (role === 'hospital' ? !kept.lab.has(e.resource.resourceType) && !kept.clinic.has(e.resource.resourceType) : kept[role].has(e.resource.resourceType));
  const entries = bundle.entry.filter(keep);
  const inside = new Set(entries.map((e) => e.fullUrl).filter((u): u is string => u !== undefined));
  return { resourceType: 'Bundle', type: 'transaction', entry: entries.map((e) => pruneReferences(e, inside) as Entry) };
}

async function postBundle(node: RunningNode, token: string, bundle: unknown): Promise<string> {
  const res = await fetch(`${node.url}/fhir`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/fhir+json' },
    body: JSON.stringify(bundle),
  });
  const body = (await res.json()) as { entry?: { response?: { location?: string } }[]; issue?: { diagnostics?: string }[] };
  if (!res.ok) throw new Error(`seeding ${node.node.config.orgId} failed: ${body.issue?.[0]?.diagnostics ?? res.status}`);
  const patient = body.entry?.map((e) => e.response?.location ?? '').find((l) => l.startsWith('Patient/'));
  if (!patient) throw new Error(`seeding ${node.node.config.orgId}: no Patient was created`);
  return patient.split('/')[1]!;
}

/** Options of `healthledger demo`. */
export interface DemoOptions {
  port: number;
  patients: number;
  dataDir: string;
  /** Order through this etcd cluster; default: one LocalOrderer shared in process. */
  etcd?: EtcdSettings;
  onProgress?: (done: number, total: number) => void;
}

/** A running demo network. */
export interface Demo {
  network: LocalNetwork;
  file: DemoNetworkFile;
  /** `DIR/network.json`. */
  networkFile: string;
  /** True when this run seeded the patients (false when it reopened an earlier demo). */
  seeded: boolean;
}

/** Starts (and on first run seeds) the demo network. */
export async function startDemo(options: DemoOptions): Promise<Demo> {
  const dir = resolve(options.dataDir);
  const networkFile = join(dir, 'network.json');
  const reopening = existsSync(networkFile);
  mkdirSync(dir, { recursive: true });
  if (!reopening) {
    for (const o of demoOrgs) {
      const orgDir = join(dir, orgIdFromName(o.name));
      if (existsSync(join(orgDir, 'config.json'))) continue;
      await initNode({ org: o.name, dataDir: orgDir, join: true });
      await addStaffUser({ dataDir: orgDir, username: demoLogin.username, role: 'clinician', password: demoLogin.password });
    }
  }
  const network = await startLocalNetwork({
    dir,
    orgs: demoOrgs.map((o, i) => ({ name: o.name, port: options.port === 0 ? 0 : options.port + i })),
    ...(options.etcd ? { orderer: (orgId: string) => openEtcdOrderer(options.etcd!, readConfig(join(dir, orgId)), systemClock) } : {}),
  });
  try {
    const nodes = network.nodes;
    const tokens = await Promise.all(nodes.map((n) => issueAdminToken({ dataDir: n.node.dataDir })));
    if (reopening) {
      const file = JSON.parse(readFileSync(networkFile, 'utf8')) as DemoNetworkFile;
      file.orgs = nodes.map((n, i) => ({ id: n.node.config.orgId, name: n.node.config.name, url: n.url, token: tokens[i]! }));
      writeFileSync(networkFile, `${JSON.stringify(file, null, 2)}\n`);
      return { network, file, networkFile, seeded: false };
    }
    const patientsDir = join(dir, 'patients');
    mkdirSync(patientsDir, { recursive: true });
    const file: DemoNetworkFile = { orgs: nodes.map((n, i) => ({ id: n.node.config.orgId, name: n.node.config.name, url: n.url, token: tokens[i]! })), patients: [] };
    const roles = ['hospital', 'lab', 'clinic'] as const;
    for (let i = 1; i <= options.patients; i++) {
      const bundle = generatePatientBundle(1, i) as unknown as { entry: Entry[] };
      // Spread: everyone at the hospital; two in three also at the lab; one in three at all three.
      const custodians = i % 3 === 0 ? [0] : i % 3 === 1 ? [0, 1] : [0, 1, 2];
      const key = createPatientKey();
      const keyFile = join(patientsDir, `${key.patient}.json`);
      writePatientKeyFile(keyFile, key);
      await nodes[0]!.node.submitPatientTx(signPatientTx(key, 'patient.register', { publicKey: key.publicKey }).bytes);
      for (const c of custodians) {
        const node = nodes[c]!;
        const localId = await postBundle(node, tokens[c]!, custodianBundle(bundle, roles[c]!));
        await linkPatientKey(node.node, localId, key);
      }
      if (i % 2 === 1) {
        const grant = signPatientTx(key, 'consent.grant', {
          patient: key.patient,
          provision: { type: 'permit', actors: nodes.map((n) => ({ kind: 'org', id: n.node.config.orgId })), purposes: ['TREAT'] },
        });
        await nodes[0]!.node.submitPatientTx(grant.bytes);
      }
      file.patients.push({ id: key.patient, custodians: custodians.map((c) => nodes[c]!.node.config.orgId), keyFile });
      options.onProgress?.(i, options.patients);
    }
    writeFileSync(networkFile, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
    return { network, file, networkFile, seeded: true };
  } catch (err) {
    await network.close();
    throw err;
  }
}

/** The guided tour `demo` prints. */
export function demoTour(demo: Demo): string {
  const [hospital, lab, clinic] = demo.file.orgs as [DemoNetworkFile['orgs'][number], DemoNetworkFile['orgs'][number], DemoNetworkFile['orgs'][number]];
  const consenting = demo.file.patients.find((p, i) => i % 2 === 0 && p.custodians.length === 3) ?? demo.file.patients[0];
  const lines = [
    `Healthledger demo network: ${demo.file.orgs.length} organizations, ${demo.file.patients.length} patients${demo.seeded ? ' (seeded now)' : ' (reopened)'}`,
    '',
    ...demo.file.orgs.map((o) => `  ${o.name.padEnd(18)} ${o.url}   FHIR ${o.url}/fhir   ledger ${o.url}/ledger/checkpoint`),
    '',
    `Logins: staff "${demoLogin.username}" / "${demoLogin.password}" at every node (SMART /auth/authorize);`,
    `        admin bearer tokens and patient key files are in ${demo.networkFile}`,
    '',
    'Tour:',
    `  1. The ledger every node agrees on, cosigned by the members:`,
    `       curl ${hospital.url}/ledger/checkpoint`,
  ];
  if (consenting) {
    lines.push(
      `  2. A clinician at ${clinic.name} sees patient ${consenting.id}'s whole record from every custodian, each entry verified:`,
      `       TOKEN=$(node -p 'JSON.parse(fs.readFileSync(process.argv[1], "utf8")).orgs[2].token' ${demo.networkFile})`,
      `       curl -s -X POST ${clinic.url}/fhir/Patient/\\$network-everything -H "Authorization: Bearer $TOKEN" \\`,
      `         -H 'Content-Type: application/fhir+json' \\`,
      `         -d '{"resourceType":"Parameters","parameter":[{"name":"patient","valueString":"${consenting.id}"}]}'`,
      `  3. The patient sees every access to their records:`,
      `       npx healthledger disclosures --key ${consenting.keyFile} --url ${hospital.url}`,
      `  4. The patient revokes their consent; ask again as in 2 and the records are gone:`,
      `       npx healthledger consent revoke --key ${consenting.keyFile} --url ${lab.url} --consent ID   (ID: the consent listed by GET /fhir/Consent?patient=…)`,
    );
  }
  lines.push('', 'Stop with Ctrl-C; run the same command again to reopen this network.', '');
  return lines.join('\n');
}
