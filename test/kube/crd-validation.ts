// What the real API server does to a custom resource before storing it, for the CRDs in
// crds/: prune unknown fields, apply schema defaults, validate the OpenAPI v3 schema and
// evaluate x-kubernetes-validations (CEL, transition rules with oldSelf on update). Errors
// come back as the API server's field causes, so tests see what `kubectl apply` would print.
import { celEnv, celError, isCelError, parse, plan } from "@bufbuild/cel";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";

type Schema = { [key: string]: unknown };
type Json = unknown;

export interface FieldCause {
  reason:
    | "FieldValueInvalid"
    | "FieldValueRequired"
    | "FieldValueNotSupported"
    | "FieldValueTooLong"
    | "FieldValueTooMany"
    | "FieldValueDuplicate"
    | "FieldValueTypeInvalid"
    | "FieldValueForbidden";
  field: string;
  message: string;
}

export interface CrdVersionSchema {
  openAPIV3Schema: Schema;
}

/** Compiles one CRD version's schema into a validator with the API server's behaviour. */
export class CrdValidator {
  private readonly schema: Schema;
  private readonly validateFn: ValidateFunction;

  constructor(openAPIV3Schema: Schema) {
    this.schema = openAPIV3Schema;
    const ajv = new Ajv({
      strict: false,
      allErrors: true,
      useDefaults: true,
      removeAdditional: true,
    });
    this.validateFn = ajv.compile(forAjv(openAPIV3Schema, true));
  }

  /**
   * Prunes and defaults `object` in place (metadata untouched) and returns the causes that make
   * the API server answer 422 Invalid; empty when it would store the object.
   */
  admit(object: Record<string, unknown>, old?: Record<string, unknown>): FieldCause[] {
    const metadata = object.metadata;
    pruneNulls(object, this.schema);
    this.validateFn(object);
    object.metadata = metadata;
    const causes = (this.validateFn.errors ?? []).map((error) => causeOf(error, object));
    causes.push(...listTypeCauses(this.schema, object, ""));
    if (causes.length === 0) causes.push(...celCauses(this.schema, object, old, ""));
    return dedupe(causes);
  }
}

/**
 * A null for a field that is not `nullable` is dropped before defaulting, so its default (if
 * any) applies: PruneNonNullableNullsWithoutDefaults and the defaulting of non-nullable nulls.
 */
function pruneNulls(value: Json, schema: Schema | undefined): void {
  if (!schema) return;
  if (Array.isArray(value)) {
    for (const item of value) pruneNulls(item, schema.items as Schema | undefined);
    return;
  }
  if (value === null || typeof value !== "object") return;
  const record = value as Record<string, Json>;
  const properties = (schema.properties ?? {}) as Record<string, Schema>;
  const additional =
    typeof schema.additionalProperties === "object"
      ? (schema.additionalProperties as Schema)
      : undefined;
  for (const [key, child] of Object.entries(record)) {
    const childSchema = properties[key] ?? additional;
    if (!childSchema) continue;
    if (child === null && childSchema.nullable !== true) delete record[key];
    else pruneNulls(child, childSchema);
  }
}

/** Rewrites the CRD schema for ajv: closed objects (so removeAdditional prunes), no x-keywords. */
function forAjv(node: Schema, isRoot = false): Schema {
  const out: Schema = {};
  for (const [key, value] of Object.entries(node)) {
    if (key.startsWith("x-kubernetes-")) continue;
    if (key === "properties") {
      out.properties = Object.fromEntries(
        Object.entries(value as Schema).map(([name, child]) => [
          name,
          isRoot && name === "metadata" ? {} : forAjv(child as Schema),
        ]),
      );
    } else if (key === "items" || key === "additionalProperties") {
      out[key] = typeof value === "object" ? forAjv(value as Schema) : value;
    } else if (key === "anyOf") {
      out.anyOf = (value as Schema[]).map((branch) => forAjv(branch));
    } else {
      out[key] = value;
    }
  }
  if (
    node.type === "object" &&
    node.properties &&
    node.additionalProperties === undefined &&
    node["x-kubernetes-preserve-unknown-fields"] !== true
  ) {
    out.additionalProperties = false;
  }
  // OpenAPI's pattern is RE2 and unanchored like JSON Schema's; ajv wants the unicode flag off.
  return out;
}

function fieldOf(instancePath: string): string {
  let out = "";
  for (const part of instancePath.split("/").slice(1)) {
    const decoded = part.replaceAll("~1", "/").replaceAll("~0", "~");
    out += /^[0-9]+$/.test(decoded) ? `[${decoded}]` : out ? `.${decoded}` : decoded;
  }
  return out;
}

function valueAt(object: Json, instancePath: string): Json {
  let current: Json = object;
  for (const part of instancePath.split("/").slice(1)) {
    if (current === null || typeof current !== "object") return undefined;
    current = (current as Record<string, Json>)[part.replaceAll("~1", "/").replaceAll("~0", "~")];
  }
  return current;
}

function render(value: Json): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "object" && value !== null) return Array.isArray(value) ? "array" : "object";
  return String(value);
}

function causeOf(error: ErrorObject, root: Json): FieldCause {
  const field = fieldOf(error.instancePath);
  const value = valueAt(root, error.instancePath);
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case "required": {
      const missing = String(params.missingProperty);
      return {
        reason: "FieldValueRequired",
        field: field ? `${field}.${missing}` : missing,
        message: "Required value",
      };
    }
    case "enum":
      return {
        reason: "FieldValueNotSupported",
        field,
        message: `Unsupported value: ${render(value)}: supported values: ${(params.allowedValues as Json[]).map((v) => JSON.stringify(v)).join(", ")}`,
      };
    case "maxLength":
      return {
        reason: "FieldValueTooLong",
        field,
        message: `Too long: may not be more than ${params.limit} bytes`,
      };
    case "maxItems":
    case "maxProperties":
      return {
        reason: "FieldValueTooMany",
        field,
        message: `Too many: ${Array.isArray(value) ? value.length : Object.keys(value as object).length}: must have at most ${params.limit} items`,
      };
    case "type":
      return {
        reason: "FieldValueTypeInvalid",
        field,
        message: `Invalid value: ${render(value)}: ${field} in body must be of type ${params.type}`,
      };
    case "pattern":
      return {
        reason: "FieldValueInvalid",
        field,
        message: `Invalid value: ${render(value)}: ${field} in body should match '${params.pattern}'`,
      };
    case "minimum":
      return {
        reason: "FieldValueInvalid",
        field,
        message: `Invalid value: ${render(value)}: ${field} in body should be greater than or equal to ${params.limit}`,
      };
    case "maximum":
      return {
        reason: "FieldValueInvalid",
        field,
        message: `Invalid value: ${render(value)}: ${field} in body should be less than or equal to ${params.limit}`,
      };
    case "minLength":
      return {
        reason: "FieldValueInvalid",
        field,
        message: `Invalid value: ${render(value)}: ${field} in body should be at least ${params.limit} chars long`,
      };
    case "minItems":
      return {
        reason: "FieldValueInvalid",
        field,
        message: `Invalid value: ${Array.isArray(value) ? value.length : 0}: ${field} in body should have at least ${params.limit} items`,
      };
    default:
      return {
        reason: "FieldValueInvalid",
        field,
        message: `Invalid value: ${render(value)}: ${error.message ?? error.keyword}`,
      };
  }
}

/** x-kubernetes-list-type set/map: duplicates are refused, as the API server does. */
function listTypeCauses(schema: Schema, value: Json, field: string): FieldCause[] {
  const causes: FieldCause[] = [];
  if (Array.isArray(value)) {
    const listType = schema["x-kubernetes-list-type"];
    const keys = schema["x-kubernetes-list-map-keys"] as string[] | undefined;
    const seen = new Set<string>();
    value.forEach((item, index) => {
      const identity =
        listType === "set"
          ? JSON.stringify(item)
          : listType === "map" && keys
            ? JSON.stringify(keys.map((key) => (item as Record<string, Json>)?.[key]))
            : undefined;
      if (identity !== undefined) {
        if (seen.has(identity))
          causes.push({
            reason: "FieldValueDuplicate",
            field: `${field}[${index}]`,
            message: `Duplicate value: ${listType === "set" ? render(item) : identity}`,
          });
        seen.add(identity);
      }
      if (schema.items)
        causes.push(...listTypeCauses(schema.items as Schema, item, `${field}[${index}]`));
    });
  } else if (value !== null && typeof value === "object") {
    const properties = (schema.properties ?? {}) as Record<string, Schema>;
    for (const [name, child] of Object.entries(value as Record<string, Json>)) {
      const childSchema =
        properties[name] ??
        (typeof schema.additionalProperties === "object"
          ? (schema.additionalProperties as Schema)
          : undefined);
      if (childSchema)
        causes.push(...listTypeCauses(childSchema, child, field ? `${field}.${name}` : name));
    }
  }
  return causes;
}

interface CelRule {
  rule: string;
  message?: string;
  messageExpression?: string;
  fieldPath?: string;
  reason?: FieldCause["reason"];
}

/** Evaluates x-kubernetes-validations bottom-up; transition rules only when an old value exists. */
function celCauses(schema: Schema, value: Json, old: Json, field: string): FieldCause[] {
  if (value === undefined) return [];
  const causes: FieldCause[] = [];
  if (Array.isArray(value) && schema.items) {
    value.forEach((item, index) => {
      causes.push(...celCauses(schema.items as Schema, item, undefined, `${field}[${index}]`));
    });
  } else if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    const properties = (schema.properties ?? {}) as Record<string, Schema>;
    const oldObject = (old ?? {}) as Record<string, Json>;
    for (const [name, child] of Object.entries(value as Record<string, Json>)) {
      const childSchema =
        properties[name] ??
        (typeof schema.additionalProperties === "object"
          ? (schema.additionalProperties as Schema)
          : undefined);
      if (childSchema && !(field === "" && name === "metadata")) {
        causes.push(
          ...celCauses(
            childSchema,
            child,
            old === undefined ? undefined : oldObject[name],
            field ? `${field}.${name}` : name,
          ),
        );
      }
    }
  }
  for (const rule of (schema["x-kubernetes-validations"] ?? []) as CelRule[]) {
    const transition = /\boldSelf\b/.test(rule.rule);
    if (transition && old === undefined) continue;
    const bindings: Record<string, unknown> = { self: toCel(value, schema, field === "") };
    if (transition) bindings.oldSelf = toCel(old, schema, field === "");
    const result = evaluate(rule.rule, bindings);
    if (result === true) continue;
    const message = isCelError(result)
      ? `rule evaluation failed: ${String(result.message)}`
      : (rule.message ?? `failed rule: ${rule.rule}`);
    causes.push({
      reason: rule.reason ?? "FieldValueInvalid",
      field: rule.fieldPath ? `${field}${rule.fieldPath}` : field,
      message: `Invalid value: ${render(value)}: ${message}`,
    });
  }
  return causes;
}

type Program = ReturnType<typeof plan>;
const env = celEnv();
const programs = new Map<string, Program>();

/** Evaluates a rule, parsing and planning it once (like `run`, never throws). */
function evaluate(rule: string, bindings: Record<string, unknown>): ReturnType<Program> {
  try {
    let program = programs.get(rule);
    if (!program) {
      program = plan(env, parse(rule));
      programs.set(rule, program);
    }
    return program(bindings as Parameters<Program>[0]);
  } catch (error) {
    return celError(error);
  }
}

/** JSON to CEL values: objects become maps, integers of integer-typed fields become int. */
function toCel(value: Json, schema: Schema | undefined, isRoot = false): unknown {
  if (Array.isArray(value))
    return value.map((item) => toCel(item, schema?.items as Schema | undefined));
  if (value !== null && typeof value === "object") {
    const properties = (schema?.properties ?? {}) as Record<string, Schema>;
    const entries = Object.entries(value as Record<string, Json>).map(([key, child]) => {
      if (isRoot && key === "metadata") {
        const meta = child as Record<string, Json>;
        return [
          key,
          new Map(Object.entries({ name: meta.name ?? "", generateName: meta.generateName ?? "" })),
        ] as const;
      }
      const childSchema =
        properties[key] ??
        (typeof schema?.additionalProperties === "object"
          ? (schema.additionalProperties as Schema)
          : undefined);
      return [key, toCel(child, childSchema)] as const;
    });
    return new Map(entries);
  }
  if (
    typeof value === "number" &&
    (schema?.type === "integer" || schema?.["x-kubernetes-int-or-string"]) &&
    Number.isInteger(value)
  )
    return BigInt(value);
  return value;
}

function dedupe(causes: FieldCause[]): FieldCause[] {
  const seen = new Set<string>();
  return causes.filter((cause) => {
    const key = `${cause.field}\u0000${cause.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
