/**
 * A small import scanner for the architecture and browser-safety tests. It reads TypeScript sources as text
 * (no compiler API: TypeScript 7 ships none) and relies on imports and re-exports starting a line, as our
 * formatter writes them. Dynamic `import('…')`, `require('…')` and `import x = require('…')` are found
 * anywhere outside comments.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix, relative, sep } from 'node:path';

/** One import, re-export, dynamic import or require found in a source file. */
export interface ImportRef {
  specifier: string;
  /** `import type` / `export type`, or every named binding marked `type`: erased at runtime. */
  typeOnly: boolean;
  kind: 'static' | 'dynamic' | 'require';
  /** 1-based line of the statement. */
  line: number;
}

const staticImport =
  /^[ \t]*(?:import|export)\s+(type\s+)?((?:[\w$]+\s*,\s*)?(?:\{[^}]*\}|\*\s*(?:as\s+[\w$]+)?|[\w$]+)\s*from\s*)?(['"])([^'"\n]+)\3/gm;
const dynamicImport = /\bimport\s*\(\s*([^)]*?)\s*\)/g;
const requireCall = /\brequire\s*\(\s*([^)]*?)\s*\)/g;

function lineOf(text: string, index: number): number {
  let line = 1;
  for (let i = 0; i < index; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

/** Blanks block comments and whole-line `//` comments, keeping line numbers. */
export function stripComments(text: string): string {
  return text
    .replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, ' '))
    .replace(/^([ \t]*)\/\/.*$/gm, (_m, indent: string) => indent);
}

/** Every import of a source text. A dynamic import or require with a non-literal argument has specifier `<dynamic: …>`. */
export function parseImports(text: string): ImportRef[] {
  const out: ImportRef[] = [];
  for (const m of text.matchAll(staticImport)) {
    const clause = m[2] ?? '';
    const braces = /\{([^}]*)\}/.exec(clause);
    const namedAllTypes =
      braces !== null &&
      !/^[\w$]+\s*,/.test(clause.trim()) &&
      braces[1]!
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0)
        .every((s) => s.startsWith('type '));
    out.push({ specifier: m[4]!, typeOnly: m[1] !== undefined || namedAllTypes, kind: 'static', line: lineOf(text, m.index) });
  }
  const code = stripComments(text);
  for (const [re, kind] of [
    [dynamicImport, 'dynamic'],
    [requireCall, 'require'],
  ] as const) {
    for (const m of code.matchAll(re)) {
      const arg = m[1]!;
      const literal = /^(['"`])([^'"`\n$]+)\1$/.exec(arg);
      out.push({
        specifier: literal ? literal[2]! : `<dynamic: ${arg}>`,
        typeOnly: false,
        kind,
        line: lineOf(code, m.index),
      });
    }
  }
  return out.sort((a, b) => a.line - b.line);
}

/** Every `.ts`/`.tsx` file under `dir`, as absolute paths. */
export function listSourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listSourceFiles(full));
    else if (/\.tsx?$/.test(entry.name)) out.push(full);
  }
  return out.sort();
}

/** A test file by the STYLE.md naming (`x.test.ts`, `x.int.test.ts`). */
export function isTestFile(path: string): boolean {
  return /\.test\.tsx?$/.test(path);
}

/** Reads files under `root` as `{ path (posix, relative to root), text }`. */
export function readSources(root: string, filter: (path: string) => boolean = () => true): { path: string; text: string }[] {
  return listSourceFiles(root)
    .map((full) => ({ path: relative(root, full).split(sep).join('/'), full }))
    .filter((f) => filter(f.path))
    .map((f) => ({ path: f.path, text: readFileSync(f.full, 'utf8') }));
}

/**
 * Resolves a relative specifier from a posix path (relative to some root) to the posix path of the source it
 * names: NodeNext `./x.js` means `./x.ts`. Returns undefined for a bare (package) specifier.
 */
export function resolveRelative(fromPath: string, specifier: string): string | undefined {
  if (!specifier.startsWith('./') && !specifier.startsWith('../')) return undefined;
  const joined = posix.normalize(posix.join(posix.dirname(fromPath), specifier));
  return joined.replace(/\.js$/, '.ts').replace(/\.jsx$/, '.tsx');
}
