/**
 * Enforces DESIGN.md §2: which module may import which, imports across modules only through the target's
 * `index.ts`, no cycles between modules, and the pure files free of I/O and clock. Every violation is reported
 * with its file, line and import.
 */
import { builtinModules } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isTestFile, parseImports, readSources, resolveRelative, stripComments } from './import-scanner.js';

const modules = [
  'kernel',
  'crypto',
  'fhir',
  'ledger',
  'ordering',
  'store',
  'consent',
  'audit',
  'repository',
  'auth',
  'exchange',
  'hl7v2',
  'apps',
  'api',
  'cli',
  'synth',
  'bench',
  'web',
  'node.ts',
] as const;
type Module = (typeof modules)[number];

const allExcept = (...excluded: Module[]): Module[] => modules.filter((m) => !excluded.includes(m));

/** DESIGN.md §2, "may import". `bench` is our addition: `healthledger bench` measures the whole system. */
const allowedImports: Record<Module, readonly Module[]> = {
  kernel: [],
  crypto: ['kernel'],
  fhir: ['kernel'],
  ledger: ['kernel', 'crypto'],
  ordering: ['kernel', 'ledger'],
  store: ['kernel', 'crypto', 'fhir'],
  consent: ['kernel', 'fhir', 'ledger'],
  audit: ['kernel', 'fhir', 'ledger'],
  repository: ['kernel', 'fhir', 'store', 'ledger', 'consent', 'audit'],
  auth: ['kernel', 'crypto', 'fhir'],
  exchange: ['kernel', 'crypto', 'fhir', 'ledger', 'repository'],
  hl7v2: ['kernel', 'fhir', 'repository'],
  apps: ['kernel', 'fhir', 'ledger', 'repository'],
  api: allExcept('api', 'cli'),
  'node.ts': allExcept('node.ts'),
  cli: ['node.ts', 'api', 'bench'],
  bench: allExcept('bench', 'cli'),
  synth: ['kernel', 'fhir'],
  // "Talks only HTTP | types from fhir".
  web: ['fhir'],
};
/** Modules whose permitted imports must be type-only (erased at runtime). */
const typeOnlyModules: ReadonlySet<Module> = new Set<Module>(['web']);

/** DESIGN.md §2: "fhir, consent, ledger's Merkle/proof code and hl7v2's parser are pure (no fs, net or clock)". */
function isPureFile(path: string): boolean {
  return (
    path.startsWith('fhir/') ||
    path.startsWith('consent/') ||
    path.startsWith('ledger/merkle/') ||
    path === 'ledger/note.ts' ||
    path === 'ledger/verify.ts' ||
    (path.startsWith('hl7v2/') && /pars/i.test(path.slice(path.lastIndexOf('/') + 1)))
  );
}

const ioModules = [
  'fs',
  'fs/promises',
  'net',
  'http',
  'https',
  'http2',
  'tls',
  'dgram',
  'dns',
  'dns/promises',
  'child_process',
  'cluster',
  'worker_threads',
  'readline',
  'os',
];
/** Imports a pure file must not make: file system, network, processes, and the database/cluster drivers. */
const impureSpecifiers = new Set([...ioModules, ...ioModules.map((m) => `node:${m}`), 'better-sqlite3', 'pg', 'etcd3']);
const clockReads = [/\bDate\.now\s*\(/, /\bnew\s+Date\s*\(\s*\)/, /\bperformance\.now\s*\(/, /\bprocess\.hrtime\b/];

const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
function isBuiltin(specifier: string): boolean {
  return specifier.startsWith('node:') || builtins.has(specifier);
}

/** The module a path (relative to src/, posix) belongs to, or undefined if it is in none. */
function moduleOf(path: string): Module | undefined {
  if (path === 'node.ts') return 'node.ts';
  const slash = path.indexOf('/');
  if (slash < 0) return undefined;
  const first = path.slice(0, slash);
  return (modules as readonly string[]).includes(first) && first !== 'node.ts' ? (first as Module) : undefined;
}

function entryOf(module: Module): string {
  return module === 'node.ts' ? 'node.ts' : `${module}/index.ts`;
}

interface SourceFile {
  /** Relative to src/, posix. */
  path: string;
  text: string;
}

interface ArchitectureReport {
  violations: string[];
  filesScanned: number;
  importsScanned: number;
  /** Imports from one module into another (allowed or not). */
  crossModuleImports: { from: string; to: string; fromModule: Module; toModule: Module; specifier: string }[];
}

/** Checks a set of non-test sources (paths relative to src/) against DESIGN.md §2. */
function checkArchitecture(files: readonly SourceFile[]): ArchitectureReport {
  const violations: string[] = [];
  const known = new Set(files.map((f) => f.path));
  const crossModuleImports: ArchitectureReport['crossModuleImports'] = [];
  let importsScanned = 0;

  for (const file of files) {
    const from = moduleOf(file.path);
    if (from === undefined) {
      violations.push(`src/${file.path}: is in no module of DESIGN.md §2 (expected src/<module>/… or src/node.ts)`);
      continue;
    }
    const pure = isPureFile(file.path);
    for (const imp of parseImports(file.text)) {
      importsScanned++;
      const where = `src/${file.path}:${imp.line}: import '${imp.specifier}'`;
      if (imp.specifier.startsWith('<dynamic')) {
        violations.push(`${where}: a dynamic import or require with a computed specifier cannot be checked`);
        continue;
      }
      const target = resolveRelative(file.path, imp.specifier);
      if (target === undefined) {
        // A package or a Node builtin.
        if (from === 'kernel') violations.push(`${where}: kernel imports nothing (DESIGN.md §2)`);
        if (pure && impureSpecifiers.has(imp.specifier)) {
          violations.push(`${where}: ${file.path} must be pure (no fs, net or clock; DESIGN.md §2)`);
        }
        if (from === 'web' && isBuiltin(imp.specifier)) violations.push(`${where}: web runs in the browser`);
        continue;
      }
      if (target.startsWith('../') || target === '..') {
        violations.push(`${where}: imports from outside src/`);
        continue;
      }
      if (/\.tsx?$/.test(target) && !known.has(target)) {
        violations.push(`${where}: resolves to src/${target}, which does not exist`);
      }
      const to = moduleOf(target);
      if (to === undefined) {
        violations.push(`${where}: resolves to src/${target}, which is in no module`);
        continue;
      }
      if (to === from) continue;
      crossModuleImports.push({ from: file.path, to: target, fromModule: from, toModule: to, specifier: imp.specifier });
      if (!allowedImports[from].includes(to)) {
        violations.push(`${where}: module ${from} may not import ${to} (allowed: ${allowedImports[from].join(', ') || 'nothing'})`);
      } else if (typeOnlyModules.has(from) && !imp.typeOnly) {
        violations.push(`${where}: ${from} may import only types from ${to} (use \`import type\`)`);
      }
      if (target !== entryOf(to)) {
        violations.push(`${where}: imports across modules must go through src/${entryOf(to)}, not src/${target}`);
      }
    }
    if (pure) {
      const code = stripComments(file.text);
      for (const re of clockReads) {
        const m = re.exec(code);
        if (m) {
          const line = code.slice(0, m.index).split('\n').length;
          violations.push(`src/${file.path}:${line}: reads the clock (${m[0].trim()}); ${file.path} must be pure (DESIGN.md §2)`);
        }
      }
    }
  }

  violations.push(...findModuleCycles(crossModuleImports));
  return { violations, filesScanned: files.length, importsScanned, crossModuleImports };
}

/** Tarjan's strongly connected components over the module graph; each component of two or more is a cycle. */
function findModuleCycles(edges: ArchitectureReport['crossModuleImports']): string[] {
  const graph = new Map<Module, Set<Module>>();
  for (const e of edges) {
    if (!graph.has(e.fromModule)) graph.set(e.fromModule, new Set());
    graph.get(e.fromModule)!.add(e.toModule);
  }
  const index = new Map<Module, number>();
  const low = new Map<Module, number>();
  const stack: Module[] = [];
  const onStack = new Set<Module>();
  const components: Module[][] = [];
  let counter = 0;
  const visit = (v: Module): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: Module[] = [];
      let w: Module;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1) components.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);

  return components.map((component) => {
    const inside = new Set(component);
    const witnesses = edges
      .filter((e) => inside.has(e.fromModule) && inside.has(e.toModule))
      .map((e) => `src/${e.from} → '${e.specifier}'`);
    return `import cycle between modules ${component.join(', ')}: ${[...new Set(witnesses)].join('; ')}`;
  });
}

describe('import scanner', () => {
  it.each([
    ["import { a } from '../kernel/index.js';", '../kernel/index.js', false],
    ["import a from 'pkg';", 'pkg', false],
    ["import * as ns from './x.js';", './x.js', false],
    ["import a, { b } from './x.js';", './x.js', false],
    ["import a, { type B } from './x.js';", './x.js', false],
    ["import type { A } from '../ledger/index.js';", '../ledger/index.js', true],
    ["import { type A, type B } from '../ledger/index.js';", '../ledger/index.js', true],
    ["import { type A, b } from '../ledger/index.js';", '../ledger/index.js', false],
    ["import {\n  a,\n  b,\n} from \"../crypto/index.js\";", '../crypto/index.js', false],
    ["import 'side-effect';", 'side-effect', false],
    ["export { a } from './a.js';", './a.js', false],
    ["export type { A } from './a.js';", './a.js', true],
    ["export * from './a.js';", './a.js', false],
    ["export * as merkle from './merkle/index.js';", './merkle/index.js', false],
    ["const m = await import('../store/index.js');", '../store/index.js', false],
    ["import fs = require('node:fs');", 'node:fs', false],
    ["const x = require('fs');", 'fs', false],
  ])('finds the import in %j', (text, specifier, typeOnly) => {
    const found = parseImports(text);
    expect(found.map((i) => i.specifier)).toEqual([specifier]);
    expect(found[0]!.typeOnly).toBe(typeOnly);
  });

  it.each([
    "export const a = 'from';",
    "// import { a } from '../store/index.js';",
    "/* import { a } from '../store/index.js'; */",
    "/**\n * import('../store/index.js')\n */",
    "const s = 'text'; export function f() {}",
  ])('finds no import in %j', (text) => {
    expect(parseImports(text)).toEqual([]);
  });

  it('reports line numbers', () => {
    const found = parseImports("// header\n\nimport { a } from './a.js';\nconst b = await import('./b.js');\n");
    expect(found.map((i) => [i.specifier, i.line])).toEqual([
      ['./a.js', 3],
      ['./b.js', 4],
    ]);
  });

  it('flags a computed dynamic import', () => {
    expect(parseImports('const m = await import(name);')[0]!.specifier).toBe('<dynamic: name>');
  });
});

describe('architecture checker on synthetic sources (so it cannot pass vacuously)', () => {
  const base: SourceFile[] = [
    { path: 'kernel/index.ts', text: "export { a } from './a.js';" },
    { path: 'kernel/a.ts', text: 'export const a = 1;' },
    { path: 'crypto/index.ts', text: "import { a } from '../kernel/index.js';\nexport const c = a;" },
    { path: 'ledger/index.ts', text: "import { c } from '../crypto/index.js';\nexport const l = c;" },
    { path: 'ledger/merkle/hash.ts', text: "import { a } from '../../kernel/index.js';\nexport const h = a;" },
    { path: 'fhir/index.ts', text: 'export type Resource = { resourceType: string };' },
    { path: 'store/index.ts', text: "import Database from 'better-sqlite3';\nexport const s = Database;" },
  ];

  it('accepts a clean tree', () => {
    const report = checkArchitecture(base);
    expect(report.violations).toEqual([]);
    expect(report.crossModuleImports.length).toBe(3);
  });

  it.each([
    ['a forbidden module edge', { path: 'crypto/x.ts', text: "import { l } from '../ledger/index.js';" }, /crypto may not import ledger/],
    ['bypassing index.ts', { path: 'ledger/x.ts', text: "import { a } from '../kernel/a.js';" }, /must go through src\/kernel\/index\.ts/],
    ['a package in kernel', { path: 'kernel/b.ts', text: "import x from 'canonicalize';" }, /kernel imports nothing/],
    ['node:fs in a pure file', { path: 'fhir/parse.ts', text: "import { readFileSync } from 'node:fs';" }, /must be pure/],
    ['net in the Merkle code', { path: 'ledger/merkle/x.ts', text: "import net from 'net';" }, /must be pure/],
    ['the clock in consent', { path: 'consent/decide.ts', text: 'export const t = () => Date.now();' }, /reads the clock/],
    ['new Date() in note.ts', { path: 'ledger/note.ts', text: 'export const t = new Date();' }, /reads the clock/],
    ['fs in the hl7v2 parser', { path: 'hl7v2/parser.ts', text: "import fs from 'node:fs/promises';" }, /must be pure/],
    ['a value import in web', { path: 'web/app.ts', text: "import { x } from '../fhir/index.js';" }, /only types/],
    ['a file in no module', { path: 'index.ts', text: '' }, /in no module/],
    ['an unknown module folder', { path: 'misc/x.ts', text: '' }, /in no module/],
    ['an import out of src', { path: 'ledger/x.ts', text: "import { mth } from '../../test/reference-tree.js';" }, /outside src/],
    ['a missing target', { path: 'ledger/x.ts', text: "import { y } from './nope.js';" }, /does not exist/],
    ['cli reaching into kernel', { path: 'cli/main.ts', text: "import { a } from '../kernel/index.js';" }, /cli may not import kernel/],
    ['a computed dynamic import', { path: 'api/x.ts', text: 'await import(name);' }, /computed specifier/],
  ])('reports %s with file and import', (_name, file, message) => {
    const report = checkArchitecture([...base, file]);
    expect(report.violations.length).toBeGreaterThan(0);
    expect(report.violations.some((v) => message.test(v) && v.startsWith(`src/${file.path}`))).toBe(true);
  });

  it('reports a cycle between modules, naming the files', () => {
    const report = checkArchitecture([
      ...base,
      { path: 'bench/index.ts', text: "import { x } from '../api/index.js';" },
      { path: 'api/index.ts', text: "import { y } from '../bench/index.js';" },
    ]);
    const cycles = report.violations.filter((v) => v.startsWith('import cycle'));
    expect(cycles).toHaveLength(1);
    expect(cycles[0]).toMatch(/api, bench/);
    expect(cycles[0]).toMatch(/src\/api\/index\.ts/);
    expect(cycles[0]).toMatch(/src\/bench\/index\.ts/);
  });

  it('allows type-only imports from fhir in web and pure files that import only kernel', () => {
    const report = checkArchitecture([
      ...base,
      { path: 'web/app.ts', text: "import type { Resource } from '../fhir/index.js';" },
      { path: 'consent/decide.ts', text: "import type { l } from '../ledger/index.js';\nexport const d = new Date(0);" },
    ]);
    expect(report.violations).toEqual([]);
  });
});

describe('DESIGN.md §2 on the real sources', () => {
  const srcDir = join(import.meta.dirname, '..', 'src');
  const files = readSources(srcDir, (path) => !isTestFile(path));
  const report = checkArchitecture(files);

  it('scans the real tree (self-check: the scanner finds files and cross-module imports)', () => {
    expect(report.filesScanned).toBeGreaterThan(10);
    expect(files.some((f) => f.path === 'kernel/index.ts')).toBe(true);
    expect(files.some((f) => f.path === 'ledger/verify.ts')).toBe(true);
    expect(files.some((f) => f.path.endsWith('.test.ts'))).toBe(false);
    expect(report.importsScanned).toBeGreaterThan(20);
    expect(report.crossModuleImports.length).toBeGreaterThan(0);
    // Known edges in the current code: crypto and ledger use kernel, ledger uses crypto.
    const edges = new Set(report.crossModuleImports.map((e) => `${e.fromModule}->${e.toModule}`));
    expect(edges).toContain('crypto->kernel');
    expect(edges).toContain('ledger->kernel');
    expect(edges).toContain('ledger->crypto');
  });

  it('has no violations of the import table, index.ts rule, purity rule or cycle rule', () => {
    expect(report.violations, report.violations.join('\n')).toEqual([]);
  });
});
