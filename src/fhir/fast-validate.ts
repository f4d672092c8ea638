/**
 * The fast path of `validateResource`: a validator compiled once per type, lazily, from the same
 * StructureDefinitions @medplum/core validates against (its `InternalTypeSchema`), into a table per type of
 * JSON property name → checker (choice elements expanded to their JSON names, `_name` primitive extensions
 * beside their primitives), the required elements, cardinality, primitive formats (@medplum/core's own
 * `fhirTypeToJsType` and `validationRegexes`), nested data types and resources, required bindings, reference
 * syntax, narrative XHTML and the invariants (ElementDefinition.constraint of severity error).
 *
 * It can only vouch: `validateFast` answers `valid` when it has checked every rule the full validator
 * (`validate.ts`: @medplum/core plus our own walk) applies and found nothing, and `undecided` as soon as it
 * meets a problem or anything it does not model (null, an empty value, a primitive extension it cannot pair,
 * JSON nested too deep, an invariant it cannot evaluate), so the caller then runs the full validator, which
 * finds and words the issues. It MUST NOT answer `valid` for a resource the full validator rejects; being
 * conservative only costs time. `fast-validate.test.ts` checks that against the full validator.
 *
 * Invariants are evaluated as @medplum/core does (validation.ts `constraintsCheck`): the root type's on the
 * root resource only, an element's on each of its values, `%resource` the innermost resource, the same four
 * keys skipped. The common ones are decided natively where that is exact (see `nativeConstraints`); the rest
 * run through @medplum/core's FHIRPath engine with the expression parsed once.
 */
import {
  capitalize,
  evalFhirPathTyped,
  fhirTypeToJsType,
  parseFhirPath,
  toTypedValue,
  tryGetDataType,
  UCUM,
  validationRegexes,
  type Constraint,
  type FhirPathAtom,
  type InternalSchemaElement,
  type InternalTypeSchema,
  type TypedValue,
} from '@medplum/core';
import { loadDefinitions } from './definitions.js';
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
import { sharedValueSetExpander, type ValueSetExpansion } from './value-sets.js';

/**
 * The fast path's answer. `undecided` is not a verdict of invalid: it means "run the full validator", and
 * `reason` (a rule and a type name, never input) says why, for measurements.
 */
export type FastVerdict = { readonly kind: 'valid' } | { readonly kind: 'undecided'; readonly reason: string };

const valid: FastVerdict = Object.freeze({ kind: 'valid' });

/**
 * The constraint keys @medplum/core's validator does not evaluate (`skippedConstraintKeys` in its
 * typeschema/validation.ts, @medplum/core 4.5.2): evaluating them here would only send valid resources to
 * the slow path, and skipping one it evaluates would be unsound, so this list must equal that one.
 */
const skippedConstraintKeys: ReadonlySet<string> = new Set(['ele-1', 'dom-3', 'org-1', 'sdf-19']);

/** @medplum/core's limit on a string value (datatypes.html#string: at most 1 MB). */
const maxStringLength = 1024 * 1024;

/** State of one validation: what FHIRPath invariants see as `%rootResource` and `%resource`. */
interface Walk {
  readonly root: TypedValue;
  /** The resources being walked, innermost last. */
  readonly resources: Record<string, unknown>[];
}

/** Problem or reason to stop (undefined: this part is valid). Constant strings, so nothing is allocated. */
type Miss = string | undefined;

/** Decides one invariant on one value of the given type: true only when it certainly holds. */
type ConstraintCheck = (value: unknown, type: string, walk: Walk) => boolean;

interface CompiledElement {
  /** The element's key in its type (`value[x]`), for reasons. */
  readonly name: string;
  readonly min: number;
  readonly max: number;
  readonly isArray: boolean;
  readonly constraints: readonly ConstraintCheck[];
  /** True when an invariant needs the value as @medplum/core builds it (a primitive merged with `_name`). */
  readonly constrainedPrimitive: boolean;
  /**
   * Set when the fast path does not model this element (fixed value, pattern, slicing, unknown type): its
   * JSON names stay known, so that a resource using it goes to the full path rather than being vouched for.
   */
  unsupported?: string;
}

interface Property {
  readonly element: CompiledElement;
  /** The FHIR type of the value (`Quantity` for `valueQuantity`). */
  readonly typeCode: string;
  /** True for a choice element's concrete name (or its `_name`). */
  readonly isChoice: boolean;
  /** `_gender` for `gender` and `gender` for `_gender`; undefined for non-primitives. */
  readonly partner: string | undefined;
  /** Checks one value (an array item for repeating elements) at the given depth. */
  readonly checkItem: (value: unknown, walk: Walk, depth: number) => Miss;
  /** True for `_name`: the id and extensions of a primitive (json.html#primitive). */
  readonly isPrimitiveExtension: boolean;
}

interface CompiledType {
  readonly name: string;
  readonly isResource: boolean;
  readonly properties: ReadonlyMap<string, Property>;
  /** For each element with min > 0, the JSON names any of which makes it present. */
  readonly required: readonly (readonly string[])[];
  /** The type's own invariants: checked only when it is the root of the validation, as @medplum/core does. */
  readonly rootConstraints: readonly ConstraintCheck[];
  readonly unsupported?: string;
}

const ucum = toTypedValue(UCUM);

/** True when `constraint` holds on `value` by @medplum/core's rule: the expression yields exactly `true`. */
function holdsByFhirPath(atom: FhirPathAtom, value: unknown, type: string, walk: Walk): boolean {
  const context: TypedValue = { type, value };
  const variables: Record<string, TypedValue> = {
    '%context': context,
    '%ucum': ucum,
    '%resource': toTypedValue(walk.resources[walk.resources.length - 1]),
    '%rootResource': walk.root,
  };
  try {
    const result = evalFhirPathTyped(atom, [context], variables);
    return result.length === 1 && result[0]!.value === true;
  } catch {
    // @medplum/core reports an evaluation error as an issue; the full path will.
    return false;
  }
}

/** True when `obj` has one of `keys` (values are already known to be non-empty when this runs). */
function hasAnyKey(obj: Record<string, unknown>, keys: ReadonlySet<string>): boolean {
  for (const key in obj) if (keys.has(key)) return true;
  return false;
}

/** The JSON names of a choice element in a type, `_name` forms included (`valueString`, `_valueString`, …). */
function choiceNames(typeName: string, element: string): ReadonlySet<string> {
  const schema = tryGetDataType(typeName);
  const names = new Set<string>();
  const choice = schema?.elements[`${element}[x]`];
  for (const t of choice?.type ?? []) {
    names.add(element + capitalize(t.code));
    names.add(`_${element}${capitalize(t.code)}`);
  }
  return names;
}

/** Decides an invariant without FHIRPath: true or false when it can, undefined to let FHIRPath decide. */
type NativeCheck = (value: unknown) => boolean | undefined;

/** A native check for values of `typeName`, or undefined when it was not written for that type. */
type NativeCheckFor = (typeName: string) => NativeCheck | undefined;

/** True when every one of the contained resources' rules holds because there are none (dom-2, dom-4, dom-5). */
const holdsWithoutContained: NativeCheckFor = () => (value) =>
  isPlainObject(value) && value['contained'] === undefined ? true : undefined;

/**
 * Invariants decided without FHIRPath, each only for its exact R4 expression and the type it was written
 * for (anything else is evaluated). They run after the value passed every structural check, which is what
 * makes them exact: every property present is known and non-empty, so "the key is in the JSON" is
 * FHIRPath's `exists()` (a primitive's `_name` counts, as @medplum/core's property lookup does), and an
 * absent key gives `{}`. `or`, `and` and `!=` between `empty()`/`exists()` results cannot throw.
 */
const nativeConstraints: Readonly<Record<string, NativeCheckFor>> = {
  // Extension: a value or nested extensions, never both (extensibility.html#ext-1).
  'ext-1|extension.exists() != value.exists()': (typeName) => {
    if (typeName !== 'Extension') return undefined;
    const valueKeys = choiceNames('Extension', 'value');
    return (value) => (isPlainObject(value) ? (value['extension'] !== undefined) !== hasAnyKey(value, valueKeys) : undefined);
  },
  // DomainResource (domainresource.html#invs): rules on contained resources, which hold when there are none.
  'dom-2|contained.contained.empty()': holdsWithoutContained,
  'dom-4|contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()': holdsWithoutContained,
  'dom-5|contained.meta.security.empty()': holdsWithoutContained,
  // Narrative.div (narrative.html#invs): @medplum/core's htmlChecks() returns true whatever its input.
  'txt-1|htmlChecks()': () => () => true,
  'txt-2|htmlChecks()': () => () => true,
  // Observation (observation.html#invs): no value beside a dataAbsentReason; no value beside a component
  // with the same code (holds when either is absent).
  'obs-6|dataAbsentReason.empty() or value.empty()': (typeName) => {
    if (typeName !== 'Observation') return undefined;
    const valueKeys = choiceNames('Observation', 'value');
    return (value) => (isPlainObject(value) ? value['dataAbsentReason'] === undefined || !hasAnyKey(value, valueKeys) : undefined);
  },
  'obs-7|value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()': (typeName) => {
    if (typeName !== 'Observation') return undefined;
    const valueKeys = choiceNames('Observation', 'value');
    return (value) => (isPlainObject(value) && (value['component'] === undefined || !hasAnyKey(value, valueKeys)) ? true : undefined);
  },
};

/** Compiles one invariant checked on values of `typeName`; undefined for one @medplum/core skips. */
function compileConstraint(constraint: Constraint, typeName: string): ConstraintCheck | undefined {
  if (constraint.severity !== 'error' || skippedConstraintKeys.has(constraint.key)) return undefined;
  let atom: FhirPathAtom | undefined;
  try {
    atom = parseFhirPath(constraint.expression);
  } catch {
    // @medplum/core reports the parse error as an issue on every value: never vouch.
    return () => false;
  }
  const parsed = atom;
  const byFhirPath: ConstraintCheck = (value, type, walk) => holdsByFhirPath(parsed, value, type, walk);
  const native = nativeConstraints[`${constraint.key}|${constraint.expression}`]?.(typeName);
  return native ? (value, type, walk) => native(value) ?? byFhirPath(value, type, walk) : byFhirPath;
}

const compiledTypes = new Map<string, CompiledType>();

/** The compiled validator of a data type or resource type, compiled on first use. */
function compiledType(typeName: string): CompiledType {
  let compiled = compiledTypes.get(typeName);
  if (!compiled) {
    compiled = compileType(typeName);
    compiledTypes.set(typeName, compiled);
  }
  return compiled;
}

function unsupportedType(name: string, reason: string): CompiledType {
  return { name, isResource: false, properties: new Map(), required: [], rootConstraints: [], unsupported: reason };
}

function compileType(typeName: string): CompiledType {
  const schema = tryGetDataType(typeName);
  if (!schema) return unsupportedType(typeName, `no definition of ${typeName}`);
  const isResource = isResourceType(typeName);
  const properties = new Map<string, Property>();
  const required: string[][] = [];
  let unsupported: string | undefined;
  for (const [key, element] of Object.entries(schema.elements)) {
    const names = compileElement(schema, key, element, properties);
    if (names === undefined) unsupported ??= `${typeName}.${key} is not modelled`;
    else if (element.min > 0) required.push(names);
  }
  const rootConstraints = (schema.constraints ?? []).flatMap((c) => compileConstraint(c, typeName) ?? []);
  return { name: typeName, isResource, properties, required, rootConstraints, ...(unsupported ? { unsupported } : {}) };
}

/**
 * Adds the JSON properties of one element to `properties` and returns their names, or undefined when a
 * required element cannot be modelled (so no object of the type can be vouched for).
 */
function compileElement(
  schema: InternalTypeSchema,
  key: string,
  element: InternalSchemaElement,
  properties: Map<string, Property>,
): string[] | undefined {
  const isChoice = key.endsWith('[x]');
  const base = isChoice ? key.slice(0, -3) : key;
  // @medplum/core finds a value by the last segment of the element's path; our walk by its key.
  const lastSegment = element.path.slice(element.path.lastIndexOf('.') + 1);
  let unsupported =
    element.fixed || element.pattern || element.slicing
      ? 'fixed value, pattern or slicing'
      : lastSegment !== key || key.includes('.')
        ? 'element path differs from its key'
        : element.type.length === 0 || (!isChoice && element.type.length > 1)
          ? 'element type'
          : undefined;
  // Native invariants are written for one type; a choice element's values get them evaluated.
  const valueType = element.type.length === 1 ? element.type[0]!.code : '';
  const constraints = (element.constraints ?? []).flatMap((c) => compileConstraint(c, valueType) ?? []);
  const compiled: CompiledElement = {
    name: `${schema.name}.${key}`,
    min: element.min,
    max: element.max,
    isArray: element.isArray === true,
    constraints,
    constrainedPrimitive: constraints.length > 0 && element.type.some((t) => t.code in fhirTypeToJsType),
  };
  const names: string[] = [];
  for (const type of element.type) {
    const name = isChoice ? base + capitalize(type.code) : key;
    const primitive = type.code in fhirTypeToJsType;
    const checkItem = compileValueCheck(type.code, element);
    if (checkItem === undefined || properties.has(name) || (primitive && properties.has(`_${name}`))) {
      unsupported ??= 'unknown type or a name used twice';
      continue;
    }
    const partner = primitive ? `_${name}` : undefined;
    properties.set(name, { element: compiled, typeCode: type.code, isChoice, partner, checkItem, isPrimitiveExtension: false });
    names.push(name);
    if (primitive) {
      properties.set(`_${name}`, {
        element: compiled,
        typeCode: type.code,
        isChoice,
        partner: name,
        checkItem: checkPrimitiveExtension,
        isPrimitiveExtension: true,
      });
      names.push(`_${name}`);
    }
  }
  if (unsupported !== undefined) {
    compiled.unsupported = `${compiled.name}: ${unsupported}`;
    return element.min > 0 ? undefined : names;
  }
  return names;
}

/** The checker of one value of `typeCode`, or undefined when the type is neither primitive nor known. */
function compileValueCheck(typeCode: string, element: InternalSchemaElement): Property['checkItem'] | undefined {
  const binding = element.binding?.strength === 'required' ? element.binding.valueSet : undefined;
  if (typeCode in fhirTypeToJsType) return compilePrimitiveCheck(typeCode, binding);
  if (typeCode === 'Resource') return checkNestedResource;
  if (!tryGetDataType(typeCode)) return undefined;
  let target: CompiledType | undefined;
  let expansion: ValueSetExpansion | undefined;
  const bindingCheck =
    binding === undefined
      ? undefined
      : typeCode === 'CodeableConcept'
        ? (value: Record<string, unknown>) => isConceptAllowed((expansion ??= sharedValueSetExpander().expand(binding)), value)
        : typeCode === 'Coding'
          ? (value: Record<string, unknown>) => isCodingAllowed((expansion ??= sharedValueSetExpander().expand(binding)), value) !== false
          : undefined;
  const isReference = typeCode === 'Reference';
  return (value, walk, depth) => {
    if (!isPlainObject(value)) return `${typeCode} is not an object`;
    if (bindingCheck && !bindingCheck(value)) return `${typeCode} not in its required value set`;
    if (isReference) {
      const reference = value['reference'];
      if (typeof reference === 'string' && reference.length > 0 && referenceProblem(reference)) return 'reference syntax';
    }
    target ??= compiledType(typeCode);
    return checkObject(value, target, walk, depth);
  };
}

/** A primitive value: JSON type, then @medplum/core's string and number rules, then ours (binding, XHTML). */
function compilePrimitiveCheck(typeCode: string, binding: string | undefined): Property['checkItem'] {
  const jsType = fhirTypeToJsType[typeCode as keyof typeof fhirTypeToJsType];
  if (jsType === 'boolean') return (value) => (typeof value === 'boolean' ? undefined : `${typeCode} is not a boolean`);
  if (jsType === 'number') {
    const isInteger = typeCode === 'integer' || typeCode === 'positiveInt' || typeCode === 'unsignedInt';
    const lowest = typeCode === 'positiveInt' ? 1 : typeCode === 'unsignedInt' ? 0 : -Infinity;
    return (value) =>
      typeof value !== 'number' || !Number.isFinite(value) || (isInteger && !Number.isInteger(value)) || value < lowest
        ? `${typeCode} out of range`
        : undefined;
  }
  const regex = Object.hasOwn(validationRegexes, typeCode) ? validationRegexes[typeCode] : undefined;
  // `xhtml`'s /.*/ matches every string.
  const format = regex && regex.source !== '.*' ? regex : undefined;
  const isXhtml = typeCode === 'xhtml';
  let expansion: ValueSetExpansion | undefined;
  return (value) => {
    if (typeof value !== 'string') return `${typeCode} is not a string`;
    if (value.length === 0 || value.length > maxStringLength) return 'string length';
    const first = value.charCodeAt(0);
    // Only a string starting with a space or non-ASCII can be all white space; trim() is costly on long ones.
    if ((first <= 32 || first >= 127) && value.trim().length === 0) return 'blank string';
    if (format && !format.test(value)) return `${typeCode} format`;
    if (isXhtml && narrativeProblem(value)) return 'narrative';
    if (binding !== undefined && !isCodeAllowed((expansion ??= sharedValueSetExpander().expand(binding)), value)) {
      return 'code not in its required value set';
    }
    return undefined;
  };
}

/** `_name`: the id and extensions of a primitive, an `Element` (json.html#primitive). */
function checkPrimitiveExtension(value: unknown, walk: Walk, depth: number): Miss {
  if (!isPlainObject(value)) return 'primitive extension is not an object';
  return checkObject(value, compiledType('Element'), walk, depth);
}

function checkNestedResource(value: unknown, walk: Walk, depth: number): Miss {
  if (!isPlainObject(value)) return 'nested resource is not an object';
  const resourceType = value['resourceType'];
  if (!isResourceType(resourceType)) return 'nested resource type';
  walk.resources.push(value);
  const miss = checkResourceObject(value, compiledType(resourceType), walk, depth);
  walk.resources.pop();
  return miss;
}

function checkResourceObject(resource: Record<string, unknown>, type: CompiledType, walk: Walk, depth: number): Miss {
  const id = resource['id'];
  if (typeof id === 'string' && !idPattern.test(id)) return 'resource id';
  return checkObject(resource, type, walk, depth);
}

/** Checks one JSON object (depth: its level, the root being 1) as a value of `type`. */
function checkObject(obj: Record<string, unknown>, type: CompiledType, walk: Walk, depth: number): Miss {
  if (type.unsupported !== undefined) return type.unsupported;
  if (depth > maxDepth) return 'too deep';
  let keys = 0;
  let choices: Property[] | undefined;
  for (const key in obj) {
    keys++;
    if (key === 'resourceType' && type.isResource) continue;
    const property = type.properties.get(key);
    if (property === undefined) return `unknown property in ${type.name}`;
    const value = obj[key];
    if (value === undefined || value === null) return 'null or undefined';
    if (property.isChoice) {
      choices ??= [];
      for (const other of choices) {
        if (other.element === property.element && other.typeCode !== property.typeCode) return 'two types for one choice';
      }
      choices.push(property);
    }
    const miss = checkProperty(obj, value, property, walk, depth);
    if (miss !== undefined) return miss;
  }
  if (keys === 0) return 'empty object';
  for (const names of type.required) {
    let present = false;
    for (const name of names) {
      if (obj[name] !== undefined) {
        present = true;
        break;
      }
    }
    if (!present) return `missing required element in ${type.name}`;
  }
  return undefined;
}

/** Cardinality, array shape and pairing with `_name`, then each value and the element's invariants. */
function checkProperty(parent: Record<string, unknown>, value: unknown, property: Property, walk: Walk, depth: number): Miss {
  const { element } = property;
  if (element.unsupported !== undefined) return element.unsupported;
  const partner = property.partner === undefined ? undefined : parent[property.partner];
  // @medplum/core evaluates such an invariant on the primitive merged with its extension: not modelled.
  if (element.constrainedPrimitive && (partner !== undefined || property.isPrimitiveExtension)) {
    return 'invariant on a primitive with an extension';
  }
  if (!element.isArray) {
    if (Array.isArray(value)) return `${element.name} is not repeating`;
    if (element.max < 1) return `${element.name} is not allowed`;
    const miss = property.checkItem(value, walk, depth + 1);
    if (miss !== undefined) return miss;
    return checkConstraints(element, value, property.typeCode, walk);
  }
  if (!Array.isArray(value)) return `${element.name} is repeating`;
  const count = value.length;
  if (count === 0) return 'empty array';
  if (partner !== undefined && (!Array.isArray(partner) || partner.length !== count)) return 'primitive extension not paired';
  if (count < element.min || count > element.max) return `${element.name} cardinality`;
  if (depth + 1 > maxDepth) return 'too deep';
  for (let i = 0; i < count; i++) {
    const item: unknown = value[i];
    if (item === null) {
      // Allowed only where the other array of the pair holds something (json.html#primitive; @medplum/core's
      // checkObjectForNull): a value without extension, or an extension without value.
      if (!(partner as unknown[] | undefined)?.[i]) return 'null in array';
      continue;
    }
    if (item === undefined) return 'undefined in array';
    const miss = property.checkItem(item, walk, depth + 2) ?? checkConstraints(element, item, property.typeCode, walk);
    if (miss !== undefined) return miss;
  }
  return undefined;
}

function checkConstraints(element: CompiledElement, value: unknown, typeCode: string, walk: Walk): Miss {
  if (element.constraints.length === 0) return undefined;
  const type = typeCode === 'Resource' && isPlainObject(value) ? String(value['resourceType']) : typeCode;
  for (const holds of element.constraints) {
    if (!holds(value, type, walk)) return `invariant on ${element.name}`;
  }
  return undefined;
}

/**
 * Vouches for a resource (parsed JSON) when it is certainly valid: `valid` only if the full validator would
 * find no issue. Anything else is `undecided`, with the reason (for measurement; it names rules and types,
 * never values). Loads the definitions on first use; compiles each type's validator the first time a
 * resource needs it. Pure otherwise; does not modify `resource`.
 */
export function validateFast(resource: unknown): FastVerdict {
  if (!isPlainObject(resource)) return { kind: 'undecided', reason: 'not an object' };
  const resourceType = resource['resourceType'];
  if (!isResourceType(resourceType)) return { kind: 'undecided', reason: 'resourceType' };
  loadDefinitions();
  const type = compiledType(resourceType);
  const walk: Walk = { root: { type: resourceType, value: resource }, resources: [resource] };
  const miss = checkResourceObject(resource, type, walk, 1) ?? checkRootConstraints(resource, type, walk);
  return miss === undefined ? valid : { kind: 'undecided', reason: miss };
}

function checkRootConstraints(resource: Record<string, unknown>, type: CompiledType, walk: Walk): Miss {
  for (const holds of type.rootConstraints) {
    if (!holds(resource, type.name, walk)) return `invariant on ${type.name}`;
  }
  return undefined;
}
