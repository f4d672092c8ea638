/**
 * Rules on single FHIR R4 JSON values that @medplum/core's validator leaves out, shared by the full validator
 * (`validate.ts`) and its compiled fast path (`fast-validate.ts`) so that both judge a value the same way:
 * resource ids, literal references, narrative XHTML and membership in a required binding's value set.
 * Each rule returns the message to report (naming the rule, never the value) or undefined when the value
 * passes.
 */
import { isResourceType } from './resource-types.js';
import type { ValueSetExpansion } from './value-sets.js';

/**
 * Deeper JSON is refused before any recursive walk, so that no input can overflow the stack (a 1 MB body
 * can nest ~100k levels). Real resources stay far below: a Questionnaire ten items deep is ~25 levels.
 * The root object is level 1; every nested object or array adds one.
 */
export const maxDepth = 128;

/** FHIR `id` (http://hl7.org/fhir/R4/datatypes.html#id): what `Resource.id` must match. */
export const idPattern = /^[A-Za-z0-9\-.]{1,64}$/;
const idChars = '[A-Za-z0-9\\-.]{1,64}';
/** `Type/id` and `Type/id/_history/vid` (references.html#literal). */
const relativeReference = new RegExp(`^([A-Za-z]+)/${idChars}(?:/_history/${idChars})?$`);
/** `Type?search` (conditional references in transactions, http.html#trules). */
const conditionalReference = /^([A-Za-z]+)\?\S+$/;
/** A reference to a contained resource (`#id`) or to the container (`#`). */
const localReference = new RegExp(`^#(?:${idChars})?$`);
const absoluteUri = /^[A-Za-z][A-Za-z0-9+.-]*:\S+$/;
const uuidUri = /^urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const oidUri = /^urn:oid:[0-2](\.(0|[1-9]\d*))+$/;
const httpUrl = /^https?:\/\/[^\s/]+/;

/** Narrative.div: one XHTML <div> in the XHTML namespace (narrative.html#xhtml, constraint txt-1). */
const xhtmlDivStart = /^\s*<div(\s[^>]*)?>/;
const xhtmlNamespace = /\sxmlns\s*=\s*(["'])http:\/\/www\.w3\.org\/1999\/xhtml\1/;
/** Active content narrative.html#xhtml forbids: scripts, frames, forms, objects, event handler attributes. */
const xhtmlActiveContent =
  /<\s*(script|iframe|frame|frameset|object|embed|applet|form|input|button|textarea|select|style|link|meta|base)\b|\son[a-z]+\s*=/i;

/** True for a JSON object (not null, not an array). */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * What is wrong with `Reference.reference` (http://hl7.org/fhir/R4/references.html#literal), or undefined:
 * it must be local (`#id`), relative (`Type/id`, `Type/id/_history/vid`), conditional (`Type?search`) or an
 * absolute URI, and a named resource type must exist in R4. Whether that type is one the element allows (its
 * targetProfile) is not checked: @medplum/core only warns about it, and the official R4 example
 * MedicationRequest/medrx0301 itself breaks it.
 */
export function referenceProblem(ref: string): string | undefined {
  if (ref.startsWith('#')) {
    return localReference.test(ref) ? undefined : 'Invalid reference: a local reference is # followed by the id of a contained resource';
  }
  const typed = relativeReference.exec(ref) ?? conditionalReference.exec(ref);
  if (typed) {
    return isResourceType(typed[1]) ? undefined : 'Invalid reference: it does not start with an R4 resource type';
  }
  if (absoluteUri.test(ref)) {
    const lower = ref.slice(0, 9).toLowerCase();
    const ok =
      lower === 'urn:uuid:'
        ? uuidUri.test(ref)
        : lower.startsWith('urn:oid:')
          ? oidUri.test(ref)
          : !/^https?:/i.test(ref) || httpUrl.test(ref);
    return ok ? undefined : 'Invalid reference: malformed absolute URI';
  }
  return 'Invalid reference: expected #id, Type/id, Type/id/_history/vid, Type?search or an absolute URI';
}

/**
 * What is wrong with a Narrative.div (http://hl7.org/fhir/R4/narrative.html#xhtml), or undefined: it must be
 * one <div> in the XHTML namespace without active content.
 */
export function narrativeProblem(div: string): string | undefined {
  const start = xhtmlDivStart.exec(div);
  if (!start || !xhtmlNamespace.test(start[0])) {
    return 'Narrative div must be a <div> element in the XHTML namespace (http://www.w3.org/1999/xhtml)';
  }
  if (xhtmlActiveContent.test(div)) {
    return 'Narrative div must not contain active content (scripts, forms, frames, event handlers)';
  }
  return undefined;
}

/**
 * True when a `code` value may stand under a required binding (terminologies.html#strength): it is in the
 * expansion, matches the grammar of a pattern value set, or the value set cannot be enumerated offline.
 */
export function isCodeAllowed(expansion: ValueSetExpansion, code: string): boolean {
  return expansion.kind === 'enumerated'
    ? expansion.codes.has(code)
    : expansion.kind === 'pattern'
      ? expansion.pattern.test(code)
      : true;
}

/**
 * Whether a Coding is in the value set: by `system|code` when it names its system, by code alone when not;
 * undefined when it has no code to judge.
 */
export function isCodingAllowed(expansion: ValueSetExpansion, coding: Record<string, unknown>): boolean | undefined {
  const code = coding['code'];
  if (typeof code !== 'string') return undefined;
  const system = coding['system'];
  if (expansion.kind === 'not-enumerable') return true;
  if (expansion.kind === 'pattern') return expansion.pattern.test(code);
  return typeof system === 'string' ? expansion.systemCodes.has(`${system}|${code}`) : expansion.codes.has(code);
}

/** terminologies.html#strength: for a CodeableConcept, a coding SHALL come from the value set. */
export function isConceptAllowed(expansion: ValueSetExpansion, concept: Record<string, unknown>): boolean {
  if (expansion.kind === 'not-enumerable') return true;
  const codings = concept['coding'];
  return Array.isArray(codings) && codings.some((c) => isPlainObject(c) && isCodingAllowed(expansion, c) === true);
}
