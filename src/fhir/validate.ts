/**
 * Validation of FHIR R4 resources (JSON, http://hl7.org/fhir/R4/validation.html): @medplum/core's validator
 * against the R4 StructureDefinitions, plus our own pass over the same schema for what it leaves out or gets
 * wrong — required terminology bindings, reference syntax, resource ids, nested resource types, JSON shapes
 * it mis-reports or throws on, empty strings and arrays, several types for one choice element, narrative
 * XHTML. Every issue found is returned, each with the path of the element in the resource.
 */
import {
  capitalize,
  isPrimitiveType,
  OperationOutcomeError,
  tryGetDataType,
  validateResource as medplumValidateResource,
  type InternalSchemaElement,
  type InternalTypeSchema,
} from '@medplum/core';
import type { ElementDefinitionBinding, OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import type { Issue } from '../kernel/index.js';
import { canonicalUrl, loadDefinitions } from './definitions.js';
import { validateFast } from './fast-validate.js';
import type { IssueType } from './outcome.js';
import { isResourceType } from './resource-types.js';
import {
  idPattern,
  isCodeAllowed,
  isCodingAllowed,
  isConceptAllowed,
  isPlainObject,
  maxDepth,
  narrativeProblem,
  referenceProblem,
} from './value-rules.js';
import { sharedValueSetExpander, type ValueSetExpander } from './value-sets.js';

/**
 * A validation issue: kernel's `Issue` (code always `invalid`) plus the finer FHIR IssueType
 * (`structure`, `required`, `value`, `code-invalid`, `invariant`, `processing`) for OperationOutcome.
 * `expression` is a path into the resource as sent: element names as in the JSON, array indexes in
 * brackets, a choice element by its JSON name (`Observation.valueQuantity.value`), nested resources by
 * their position (`Bundle.entry[2].resource.status`). Messages name paths, types and value sets, never
 * the values.
 */
export interface FhirIssue extends Issue {
  issueType: IssueType;
}

/** True when `value` nests objects and arrays deeper than `limit` levels (iterative, cycle-safe). */
function nestsDeeperThan(value: unknown, limit: number): boolean {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (typeof node !== 'object' || node === null) continue;
    if (depth > limit) return true;
    for (const child of Array.isArray(node) ? node : Object.values(node)) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
    }
  }
  return false;
}

/** The stand-in for a nested resource that cannot be handed to @medplum/core (it throws on unknown types). */
const placeholderResource = { resourceType: 'Parameters' };

interface ResolvedKey {
  element: InternalSchemaElement;
  typeCode: string;
  /** For `valueQuantity`: `value`. */
  choiceBase?: string;
  /** `_gender`: the extension and id of primitive `gender` (json.html#primitive). */
  primitiveExtension: boolean;
}

/** Resolved keys per type. Only known keys are cached, so unknown keys in input cannot grow it. */
const resolvedKeys = new WeakMap<InternalTypeSchema, Map<string, ResolvedKey>>();

/** The element a JSON property name stands for in this type, or null when the type has no such element. */
function resolveKey(schema: InternalTypeSchema, key: string): ResolvedKey | null {
  let perSchema = resolvedKeys.get(schema);
  if (!perSchema) {
    perSchema = new Map();
    resolvedKeys.set(schema, perSchema);
  }
  const cached = perSchema.get(key);
  if (cached) return cached;
  const resolved = computeResolvedKey(schema, key);
  if (resolved) perSchema.set(key, resolved);
  return resolved;
}

function computeResolvedKey(schema: InternalTypeSchema, key: string): ResolvedKey | null {
  const primitiveExtension = key.startsWith('_');
  const name = primitiveExtension ? key.slice(1) : key;
  if (name.length === 0) return null;
  const direct = Object.hasOwn(schema.elements, name) && !name.endsWith('[x]') ? schema.elements[name] : undefined;
  if (direct) {
    const typeCode = direct.type[0]?.code;
    // `_name` exists only beside a primitive `name` (json.html#primitive).
    if (typeCode === undefined || (primitiveExtension && !isPrimitiveType(typeCode))) return null;
    return { element: direct, typeCode, primitiveExtension };
  }
  for (let i = 1; i < name.length; i++) {
    const ch = name.charCodeAt(i);
    if (ch < 65 || ch > 90) continue; // a choice suffix starts with a capital letter
    const base = name.slice(0, i);
    const choiceName = `${base}[x]`;
    const element = Object.hasOwn(schema.elements, choiceName) ? schema.elements[choiceName] : undefined;
    if (!element) continue;
    const suffix = name.slice(i);
    const type = element.type.find((t) => capitalize(t.code) === suffix);
    if (!type || (primitiveExtension && !isPrimitiveType(type.code))) return null;
    return { element, typeCode: type.code, choiceBase: base, primitiveExtension };
  }
  return null;
}

function jsonKind(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
}

/** A place in the resource replaced (array item) or removed (property) in the copy given to @medplum/core. */
interface Repair {
  steps: (string | number)[];
  replacement: unknown;
  /**
   * Issues @medplum/core reports at or under this path are consequences of the repair, not the input
   * (undefined for an unwrapped first item: what is reported there is about the item, so it stands).
   */
  path?: string;
}

/** Repair actions besides a plain replacement value: remove the property, or keep only an array's first item. */
const removed = Symbol('removed');
const firstItem = Symbol('firstItem');

/** Walks a resource along its StructureDefinitions, collecting the issues @medplum/core does not report. */
class SchemaWalker {
  readonly issues: FhirIssue[] = [];
  readonly repairs: Repair[] = [];
  private readonly steps: (string | number)[] = [];

  constructor(private readonly valueSets: ValueSetExpander) {}

  private report(expression: string, issueType: IssueType, message: string): void {
    this.issues.push({ code: 'invalid', issueType, expression, message });
  }

  /**
   * Reports, and takes the value at the current steps (whose path is `repairedPath`) out of what
   * @medplum/core sees, so that it neither throws nor reports consequences of the same problem.
   */
  private reportAndRepair(
    expression: string,
    issueType: IssueType,
    message: string,
    replacement: unknown,
    repairedPath = expression,
  ): void {
    this.report(expression, issueType, message);
    this.repairs.push({ steps: [...this.steps], replacement, ...(replacement === firstItem ? {} : { path: repairedPath }) });
  }

  walkResource(resource: Record<string, unknown>, schema: InternalTypeSchema, path: string): void {
    const id = resource['id'];
    if (typeof id === 'string' && id.length > 0 && !idPattern.test(id)) {
      this.report(`${path}.id`, 'value', 'Invalid id format (1 to 64 of A-Z a-z 0-9 - .)');
    }
    this.walkObject(resource, schema, path, true);
  }

  private walkObject(obj: Record<string, unknown>, schema: InternalTypeSchema, path: string, isResource: boolean): void {
    let choices: Map<string, string> | undefined;
    for (const key of Object.keys(obj)) {
      if (isResource && key === 'resourceType') continue;
      const keyPath = `${path}.${key}`;
      const resolved = resolveKey(schema, key);
      if (!resolved) {
        // Reported here and kept from @medplum/core, which misses some: names inherited from Object.prototype
        // (`constructor`), literal choice names (`value[x]`), `_name` beside a complex element, an unknown
        // `valueFoo` beside a valid `valueQuantity`; and a numeric `value` at the root makes it take the whole
        // resource for a Quantity.
        this.steps.push(key);
        this.reportAndRepair(keyPath, 'structure', `Invalid additional property "${key}"`, removed);
        this.steps.pop();
        continue;
      }
      const value = obj[key];
      this.steps.push(key);
      if (resolved.choiceBase !== undefined && !resolved.primitiveExtension) {
        choices ??= new Map();
        const other = choices.get(resolved.choiceBase);
        if (other !== undefined && other !== key) {
          this.report(keyPath, 'structure', `Only one type allowed for ${resolved.choiceBase}[x] (found ${other} and ${key})`);
        }
        choices.set(resolved.choiceBase, key);
      }
      if (resolved.primitiveExtension) {
        this.checkPrimitiveExtension(value, resolved, keyPath);
      } else {
        this.walkProperty(value, resolved, keyPath);
      }
      this.steps.pop();
    }
  }

  private walkProperty(value: unknown, resolved: ResolvedKey, path: string): void {
    if (value === null || value === undefined) return; // @medplum/core reports null
    const { element } = resolved;
    if (Array.isArray(value)) {
      if (!element.isArray) {
        // Validate the first item in the array's place, so a client that wrapped a value in [ ] still
        // hears about everything else wrong with it.
        const first: unknown = value[0];
        const usable = first !== null && first !== undefined && !Array.isArray(first);
        this.reportAndRepair(path, 'structure', 'Expected single value for property', usable ? firstItem : removed);
        if (usable) this.visitValue(first, resolved, path, false);
        return;
      }
      if (value.length === 0) {
        this.reportAndRepair(path, 'structure', 'Invalid empty array', removed);
        return;
      }
      for (let i = 0; i < value.length; i++) {
        const item: unknown = value[i];
        if (item === null || item === undefined) continue; // null is allowed beside `_name`; @medplum/core checks
        this.steps.push(i);
        this.visitValue(item, resolved, `${path}[${i}]`, true);
        this.steps.pop();
      }
      return;
    }
    if (element.isArray) {
      this.reportAndRepair(path, 'structure', 'Expected array of values for property', removed);
      return;
    }
    this.visitValue(value, resolved, path, false);
  }

  private visitValue(value: unknown, resolved: ResolvedKey, path: string, inArray: boolean): void {
    const { typeCode, element } = resolved;
    if (isPrimitiveType(typeCode)) {
      if (typeof value === 'object') {
        const message = `Invalid JSON type: expected a primitive ${typeCode}, but got ${jsonKind(value)}`;
        this.reportAndRepair(path, 'structure', message, inArray ? null : removed);
        return;
      }
      if (typeof value !== 'string') return; // booleans and numbers: @medplum/core checks them
      if (value.length === 0) {
        this.report(path, 'value', 'String must contain non-whitespace content');
        return;
      }
      if (typeCode === 'xhtml') {
        const problem = narrativeProblem(value);
        if (problem) this.report(path, 'value', problem);
      }
      if (element.binding?.strength === 'required') this.checkCode(value, element.binding, path);
      return;
    }
    if (!isPlainObject(value)) {
      // A stand-in resource rather than none, so Bundle's bdl-5 (entry needs a resource) stays quiet.
      const replacement = typeCode === 'Resource' ? placeholderResource : inArray ? {} : removed;
      const message = `Invalid JSON type: expected an object (${typeCode}), but got ${jsonKind(value)}`;
      this.reportAndRepair(path, 'structure', message, replacement);
      return;
    }
    if (typeCode === 'Resource') {
      this.visitNestedResource(value, path);
      return;
    }
    if (!inArray && Object.keys(value).length === 0) {
      // json.html: objects are never empty (ele-1). @medplum/core says so of an array item, not of a single value.
      this.report(path, 'structure', 'Invalid empty non-primitive value');
      return;
    }
    if (element.binding?.strength === 'required') {
      if (typeCode === 'CodeableConcept') this.checkCodeableConcept(value, element.binding, path);
      else if (typeCode === 'Coding') this.checkCoding(value, element.binding, path);
    }
    if (typeCode === 'Reference') this.checkReference(value, path);
    const schema = tryGetDataType(typeCode);
    if (schema) this.walkObject(value, schema, path, false);
  }

  private visitNestedResource(value: Record<string, unknown>, path: string): void {
    const resourceType = value['resourceType'];
    if (resourceType === undefined) {
      this.reportAndRepair(`${path}.resourceType`, 'required', 'Missing resourceType', placeholderResource, path);
      return;
    }
    if (!isResourceType(resourceType)) {
      const message = unknownResourceTypeMessage(resourceType);
      this.reportAndRepair(`${path}.resourceType`, 'structure', message, placeholderResource, path);
      return;
    }
    const schema = tryGetDataType(resourceType);
    if (schema) this.walkResource(value, schema, path);
  }

  private checkPrimitiveExtension(value: unknown, resolved: ResolvedKey, path: string): void {
    if (value === null || value === undefined) return;
    const fits = Array.isArray(value)
      ? resolved.element.isArray && value.every((v) => v === null || isPlainObject(v))
      : isPlainObject(value);
    if (!fits) {
      const expected = resolved.element.isArray ? 'an array of objects' : 'an object';
      const message = `Invalid JSON type: expected ${expected} (primitive extension), but got ${jsonKind(value)}`;
      this.reportAndRepair(path, 'structure', message, removed);
    }
  }

  private checkCode(code: string, binding: ElementDefinitionBinding, path: string): void {
    if (!binding.valueSet) return;
    if (!isCodeAllowed(this.valueSets.expand(binding.valueSet), code)) {
      this.report(path, 'code-invalid', `Code is not in the required value set ${canonicalUrl(binding.valueSet)}`);
    }
  }

  private checkCoding(coding: Record<string, unknown>, binding: ElementDefinitionBinding, path: string): void {
    if (!binding.valueSet) return;
    if (isCodingAllowed(this.valueSets.expand(binding.valueSet), coding) === false) {
      this.report(path, 'code-invalid', `Coding is not in the required value set ${canonicalUrl(binding.valueSet)}`);
    }
  }

  private checkCodeableConcept(concept: Record<string, unknown>, binding: ElementDefinitionBinding, path: string): void {
    if (!binding.valueSet) return;
    if (!isConceptAllowed(this.valueSets.expand(binding.valueSet), concept)) {
      this.report(path, 'code-invalid', `No coding is in the required value set ${canonicalUrl(binding.valueSet)}`);
    }
  }

  private checkReference(reference: Record<string, unknown>, path: string): void {
    const ref = reference['reference'];
    if (typeof ref !== 'string' || ref.length === 0) return;
    const problem = referenceProblem(ref);
    if (problem) this.report(`${path}.reference`, 'value', problem);
  }
}

function unknownResourceTypeMessage(resourceType: unknown): string {
  if (typeof resourceType !== 'string') return `resourceType must be a string, not ${jsonKind(resourceType)}`;
  // Name the type only when it looks like one, so arbitrary input is never echoed.
  return /^[A-Za-z][A-Za-z0-9]{0,63}$/.test(resourceType)
    ? `Unknown resourceType "${resourceType}" (not a FHIR R4 resource type)`
    : 'Unknown resourceType (not a FHIR R4 resource type)';
}

/** The copy of `resource` that @medplum/core validates: repaired places replaced or removed. */
function repairedCopy(resource: Record<string, unknown>, repairs: readonly Repair[]): Record<string, unknown> {
  const copy = structuredClone(resource);
  // Array items are replaced, never spliced out, so no repair shifts another's index. Repairs apply in the
  // order the walk made them, so a repair inside an unwrapped first item lands after the unwrapping.
  for (const { steps, replacement } of repairs) {
    let parent: unknown = copy;
    for (const step of steps.slice(0, -1)) {
      parent = isPlainObject(parent) || Array.isArray(parent) ? (parent as Record<string | number, unknown>)[step] : undefined;
    }
    const last = steps[steps.length - 1];
    if (last === undefined || !(isPlainObject(parent) || Array.isArray(parent))) continue;
    if (replacement === removed) {
      if (Array.isArray(parent) && typeof last === 'number') parent[last] = null;
      else delete (parent as Record<string, unknown>)[last];
    } else if (replacement === firstItem) {
      const array = (parent as Record<string | number, unknown>)[last];
      (parent as Record<string | number, unknown>)[last] = Array.isArray(array) ? array[0] : undefined;
    } else {
      (parent as Record<string | number, unknown>)[last] = replacement;
    }
  }
  return copy;
}

/**
 * @medplum/core names a choice element `value[x]`; we name it as in the JSON (`valueQuantity`), found by
 * following the path through the resource.
 */
function concretePath(resource: Record<string, unknown>, expression: string): string {
  if (!expression.includes('[x]')) return expression;
  const segments = expression.split('.');
  let node: unknown = resource;
  const out: string[] = [segments[0] ?? ''];
  for (const segment of segments.slice(1)) {
    const m = /^([^[]+?)(\[x\])?((?:\[\d+\])*)$/.exec(segment);
    if (!m) {
      out.push(segment);
      node = undefined;
      continue;
    }
    let name = m[1]!;
    const holder = Array.isArray(node) ? node.find((n) => isPlainObject(n) && hasChoice(n, name, m[2] !== undefined)) : node;
    if (m[2] !== undefined && isPlainObject(holder)) {
      const concrete = Object.keys(holder).find((k) => isChoiceKey(k, name));
      if (concrete) name = concrete;
    }
    out.push(name + m[3]);
    node = isPlainObject(holder) ? holder[name] : undefined;
    for (const index of m[3]!.matchAll(/\[(\d+)\]/g)) node = Array.isArray(node) ? node[Number(index[1])] : undefined;
  }
  return out.join('.');
}

function isChoiceKey(key: string, base: string): boolean {
  if (key.length <= base.length || !key.startsWith(base)) return false;
  const ch = key.charCodeAt(base.length);
  return ch >= 65 && ch <= 90;
}

function hasChoice(obj: Record<string, unknown>, name: string, choice: boolean): boolean {
  return choice ? Object.keys(obj).some((k) => isChoiceKey(k, name)) : name in obj;
}

const medplumIssueTypes: Readonly<Record<string, IssueType>> = {
  structure: 'structure',
  invariant: 'invariant',
  processing: 'processing',
  invalid: 'invalid',
  required: 'required',
  value: 'value',
};

function issueTypeOfMedplum(issue: OperationOutcomeIssue, message: string): IssueType {
  if (message === 'Missing required property') return 'required';
  if (/^(Invalid \w+ format|Expected number|String must|String cannot|Invalid numeric)/.test(message)) return 'value';
  return medplumIssueTypes[issue.code] ?? 'invalid';
}

/** The @medplum/core messages our own walk reports more precisely (with array indexes). */
const superseded = new Set(['Expected single value for property', 'Expected array of values for property']);

function isUnder(expression: string, path: string): boolean {
  return (
    expression === path ||
    (expression.startsWith(path) && (expression.charAt(path.length) === '.' || expression.charAt(path.length) === '['))
  );
}

/** @medplum/core's issues on `checked` (the repaired copy), with paths as in `resource` (the input). */
function medplumIssues(
  resource: Record<string, unknown>,
  checked: Record<string, unknown>,
  repairs: readonly Repair[],
  rootPath: string,
): FhirIssue[] {
  let found: OperationOutcomeIssue[];
  try {
    // Returns warnings only; throws an OperationOutcomeError carrying every issue when one is an error.
    medplumValidateResource(checked as unknown as Resource);
    return [];
  } catch (err) {
    if (!(err instanceof OperationOutcomeError)) {
      // Its message may quote input, so it is not passed on.
      return [issue(rootPath, 'processing', 'The resource could not be fully validated')];
    }
    found = err.outcome.issue ?? [];
  }
  const out: FhirIssue[] = [];
  for (const mp of found) {
    // Warnings are dropped: reference-target warnings misfire on every urn:uuid reference, and a choice
    // element with two types is reported (as an error) by our own walk.
    if (mp.severity !== 'error' && mp.severity !== 'fatal') continue;
    // A processing issue's diagnostics carry the evaluation error, which may quote input: keep the text only.
    const message = mp.code === 'processing' ? 'Error evaluating invariant expression' : (mp.details?.text ?? 'Invalid value');
    if (superseded.has(message)) continue;
    const expression = concretePath(resource, mp.expression?.[0] ?? rootPath);
    if (repairs.some((r) => r.path !== undefined && isUnder(expression, r.path))) continue;
    out.push(issue(expression, issueTypeOfMedplum(mp, message), message));
  }
  return out;
}

function issue(expression: string, issueType: IssueType, message: string): FhirIssue {
  return { code: 'invalid', issueType, expression, message };
}

/**
 * Validates a FHIR R4 resource given as parsed JSON and returns every issue found (empty when valid):
 * structure and cardinality, primitive formats, invariants, required terminology bindings, reference
 * syntax and nested resources. Never throws for bad input: a non-object, an unknown `resourceType` or
 * JSON nested deeper than 128 levels yields one issue. Loads the definitions on first use; after that,
 * pure (no clock, no I/O). Does not modify `resource`.
 *
 * The compiled fast path (`fast-validate.ts`) vouches for most valid resources at a fraction of the cost;
 * everything it does not vouch for, every invalid resource included, takes `validateResourceFully`, so the
 * answer is always the full validator's.
 */
export function validateResource(resource: unknown): FhirIssue[] {
  if (validateFast(resource).kind === 'valid') return [];
  return validateResourceFully(resource);
}

/**
 * `validateResource` without the fast path: @medplum/core's validator plus our own walk, every time. The
 * reference the fast path is checked against (fast-validate.test.ts) and measured against.
 */
export function validateResourceFully(resource: unknown): FhirIssue[] {
  if (!isPlainObject(resource)) {
    return [{ code: 'invalid', issueType: 'structure', message: `A resource must be a JSON object, not ${jsonKind(resource)}` }];
  }
  const resourceType = resource['resourceType'];
  if (resourceType === undefined) {
    return [issue('resourceType', 'required', 'Missing resourceType')];
  }
  if (!isResourceType(resourceType)) {
    return [issue('resourceType', 'structure', unknownResourceTypeMessage(resourceType))];
  }
  if (nestsDeeperThan(resource, maxDepth)) {
    return [issue(resourceType, 'too-costly', `The resource nests deeper than ${maxDepth} levels`)];
  }
  loadDefinitions();
  const schema = tryGetDataType(resourceType);
  if (!schema) {
    return [issue('resourceType', 'not-supported', `No definition loaded for ${resourceType}`)];
  }
  const walker = new SchemaWalker(sharedValueSetExpander());
  walker.walkResource(resource, schema, resourceType);
  const checked = walker.repairs.length > 0 ? repairedCopy(resource, walker.repairs) : resource;
  const all = [...medplumIssues(resource, checked, walker.repairs, resourceType), ...walker.issues];
  const seen = new Set<string>();
  return all.filter((issue) => {
    const key = `${issue.expression ?? ''}\u0000${issue.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
