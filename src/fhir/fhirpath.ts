/**
 * FHIRPath evaluation (http://hl7.org/fhirpath/N1/) for search parameter expressions. @medplum/core's
 * interpreter is exact but slow for what ingest needs (every resource is evaluated against every search
 * parameter of its type, and its patient compartment): its `evalFhirPath` reparses the expression on every
 * call, and each step looks its element up again, with string work per candidate type of a choice element.
 *
 * So the expressions that make up nine in ten R4 search parameter branches — a path of element names from
 * the resource type (`Observation.component.code`), optionally narrowed by `as Type`, `.as(Type)`,
 * `.where(resolve() is Type)` or `.where(name='literal')` — are compiled once into steps over precomputed
 * element lookups, mirroring @medplum/core's own semantics step by step (the same element definitions,
 * choice-type order, empty-value rules and resolve() typing). Everything else, and any input the compiled
 * steps do not model exactly (a primitive's `_extension` sibling, an element missing from the definitions, a
 * nested `resource`), goes to @medplum/core with the parsed expression cached. A differential test holds the
 * two to the same results over the R4 examples and Synthea.
 */
import {
  LRUCache,
  capitalize,
  evalFhirPathTyped,
  getElementDefinition,
  isEmpty,
  isResource,
  toTypedValue,
  type FhirPathAtom,
  type InternalSchemaElement,
  type TypedValue,
} from '@medplum/core';

// Every R4 SearchParameter expression fits.
const parsed = new LRUCache<FhirPathAtom>(4000);

/** Thrown by a compiled step when the input needs the interpreter. */
const needsInterpreter = Symbol('needsInterpreter');

type Step = (values: TypedValue[]) => TypedValue[];
interface Compiled {
  head: string;
  steps: Step[];
}

/** A navigation step's element, its JSON keys in medplum's choice-type order, per parent type. */
interface ElementKeys {
  keys: { key: string; underscored: string; type: string }[];
  fallbackType: string;
}
function keysOf(parentType: string, name: string): ElementKeys | null {
  const element: InternalSchemaElement | undefined = getElementDefinition(parentType, name);
  if (!element || !element.type || element.type.length === 0) return null;
  const last = element.path.slice(element.path.lastIndexOf('.') + 1);
  return {
    keys: element.type.map((t) => {
      const key = last.replace('[x]', capitalize(t.code));
      return { key, underscored: `_${key}`, type: t.code };
    }),
    fallbackType: element.type[0]!.code,
  };
}

function typed(value: unknown, type: string): TypedValue {
  return { type: type === 'Resource' && isResource(value) ? value.resourceType : type, value };
}

/** One `.name` step: @medplum/core's symbol evaluation over element definitions (no `_name` merging). */
function child(name: string): Step {
  const byParentType = new Map<string, ElementKeys | null>();
  return (values) => {
    const out: TypedValue[] = [];
    for (const v of values) {
      const obj = v.value as Record<string, unknown> | null | undefined;
      if (!obj || typeof obj !== 'object') continue;
      if (isResource(obj, name as Parameters<typeof isResource>[1])) {
        out.push(v);
        continue;
      }
      let keys = byParentType.get(v.type);
      if (keys === undefined) {
        keys = keysOf(v.type, name);
        byParentType.set(v.type, keys);
      }
      if (keys === null) throw needsInterpreter;
      let found: unknown;
      let type = 'undefined';
      for (const k of keys.keys) {
        if (obj[k.underscored] !== undefined) throw needsInterpreter;
        found = obj[k.key];
        if (found !== undefined) {
          type = k.type;
          break;
        }
      }
      if (isEmpty(found)) continue;
      if (type === 'Element' || type === 'BackboneElement') type = keys.fallbackType;
      if (Array.isArray(found)) {
        for (const item of found) {
          // null in an array is invalid FHIR; the interpreter's handling of it is its own.
          if (item === null) throw needsInterpreter;
          if (item !== undefined) out.push(typed(item, type));
        }
      } else out.push(typed(found, type));
    }
    return out;
  };
}

/** `X as T` (the operator): only values of type T. `.as(T)` is, in @medplum/core, no filter at all. */
function ofType(type: string): Step {
  return (values) => values.filter((v) => v.type === type);
}

/** The type `resolve()` gives a reference in @medplum/core: from a literal or conditional reference. */
function resolvedType(value: unknown): string | undefined {
  let ref: string | undefined;
  if (typeof value === 'string') ref = value;
  else if (typeof value === 'object' && value !== null) {
    const o = value as { resource?: unknown; reference?: unknown; type?: unknown; identifier?: { system?: unknown; value?: unknown } };
    if (o.resource) throw needsInterpreter;
    if (o.reference) {
      if (typeof o.reference !== 'string') throw needsInterpreter;
      ref = o.reference;
    } else if (o.type && o.identifier) {
      if (typeof o.type !== 'string') throw needsInterpreter;
      ref = `${o.type}?identifier=`;
    }
  }
  if (ref === undefined) return undefined;
  if (ref.includes('?')) return ref.split('?')[0];
  if (ref.includes('/')) return ref.split('/')[0];
  return undefined;
}

/** `.where(resolve() is T)`. */
function whereResolvesTo(type: string): Step {
  return (values) =>
    values.filter((v) => {
      const t = resolvedType(v.value);
      return t !== undefined && t === type;
    });
}

/** `.where(name='literal')`: the child element equals the string. */
function whereEquals(name: string, literal: string): Step {
  const nav = child(name);
  return (values) =>
    values.filter((v) => {
      const found = nav([v]);
      if (found.length !== 1) {
        if (found.length === 0) return false;
        throw needsInterpreter;
      }
      return found[0]!.value === literal;
    });
}

const stepPatterns: [RegExp, (m: RegExpExecArray) => Step][] = [
  // `.as(T)` is no filter in @medplum/core (its `as` function returns its input).
  [/\.as\(([A-Za-z]+)\)/y, () => (values) => values],
  [/\.where\(resolve\(\) is ([A-Z][A-Za-z]*)\)/y, (m) => whereResolvesTo(m[1]!)],
  [/\.where\(([a-z][A-Za-z0-9]*)\s*=\s*'([^'\\]*)'\)/y, (m) => whereEquals(m[1]!, m[2]!)],
  [/\.([a-z][A-Za-z0-9]*)(?![A-Za-z0-9(])/y, (m) => child(m[1]!)],
];

/**
 * Compiles one supported shape — `Type` or `(inner as Type)`, then `.name`, `.as(Type)`,
 * `.where(resolve() is Type)` and `.where(name='literal')` steps — or returns null for anything else.
 */
function compile(expression: string): Compiled | null {
  const e = expression.trim();
  let base: Compiled | null;
  let at: number;
  if (e.startsWith('(')) {
    const close = matchingParen(e);
    const m = close > 0 ? /^(.*) as ([A-Za-z]+)$/.exec(e.slice(1, close)) : null;
    base = m ? extend(compile(m[1]!), ofType(m[2]!)) : null;
    at = close + 1;
  } else {
    const m = /^[A-Z][A-Za-z]*/.exec(e);
    base = m ? { head: m[0], steps: [] } : null;
    at = m ? m[0].length : 0;
  }
  while (base !== null && at < e.length) {
    let matched = false;
    for (const [pattern, make] of stepPatterns) {
      pattern.lastIndex = at;
      const m = pattern.exec(e);
      if (m) {
        base = extend(base, make(m));
        at = pattern.lastIndex;
        matched = true;
        break;
      }
    }
    if (!matched) return null;
  }
  return base;
}

/** The index of the `)` closing the `(` at 0, or -1 (quotes are not expected in the shapes compiled). */
function matchingParen(e: string): number {
  let depth = 0;
  for (let i = 0; i < e.length; i++) {
    if (e[i] === "'") return -1;
    if (e[i] === '(') depth++;
    else if (e[i] === ')' && --depth === 0) return i;
  }
  return -1;
}

function extend(base: Compiled | null, step: Step): Compiled | null {
  return base && { head: base.head, steps: [...base.steps, step] };
}

/** Splits an expression at its top-level `|` (not inside parentheses or quotes). */
export function unionBranches(expression: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const c = expression[i];
    if (c === "'" && expression[i - 1] !== '\\') quoted = !quoted;
    else if (!quoted && c === '(') depth++;
    else if (!quoted && c === ')') depth--;
    else if (!quoted && depth === 0 && c === '|') {
      out.push(expression.slice(start, i).trim());
      start = i + 1;
    }
  }
  out.push(expression.slice(start).trim());
  return out;
}

/** Compiles a union of supported shapes (see the module comment); null when any branch is not one. */
function compileUnion(expression: string): Compiled[] | null {
  const branches = unionBranches(expression).map(compile);
  return branches.every((b): b is Compiled => b !== null) ? branches : null;
}

const compiled = new Map<string, Compiled[] | null>();

function compiledOf(expression: string): Compiled[] | null {
  let hit = compiled.get(expression);
  if (hit === undefined) {
    hit = compileUnion(expression);
    compiled.set(expression, hit);
  }
  return hit;
}

/** Evaluates `expression` on `resource` with @medplum/core's interpreter; returns the plain values. */
export function interpretPath(expression: string, resource: unknown): unknown[] {
  return evalFhirPathTyped(expression, [toTypedValue(resource)], {}, parsed).map((v) => v.value);
}

/**
 * Evaluates `expression` on `resource` (compiled when it can be, see the module comment) and returns the
 * plain values, in @medplum/core's order; a union (`a | b`) may repeat a value the interpreter would have
 * listed once, which no caller (index extraction, compartments, string matching) minds.
 */
export function evalPath(expression: string, resource: unknown): unknown[] {
  const branches = compiledOf(expression);
  const r = resource as { resourceType?: unknown } | null;
  if (branches !== null && typeof r === 'object' && r !== null) {
    try {
      const out: unknown[] = [];
      for (const c of branches) {
        // A branch about another type yields nothing, as in the interpreter (its head names no element).
        if (r.resourceType !== c.head) continue;
        let values: TypedValue[] = [{ type: c.head, value: resource }];
        for (const step of c.steps) values = step(values);
        for (const v of values) out.push(v.value);
      }
      return out;
    } catch (err) {
      if (err !== needsInterpreter) throw err;
    }
  }
  return interpretPath(expression, resource);
}
