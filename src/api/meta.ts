// Shared building blocks of the buildfarm.dev API: names, quantities, durations,
// references and conditions. Every string has a length bound and every list a size
// bound, so that the generated CRD lets the API server refuse a hostile spec before
// the operator ever reads it.
import { z } from "zod";

export const GROUP = "buildfarm.dev";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

/** A Kubernetes object name that is also a DNS-1123 label. */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** A DNS-1035 label: a Service name must start with a letter. */
export const DNS_1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
/** A DNS-1123 subdomain, the rule for Secret and ConfigMap names. */
export const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export const QUANTITY =
  /^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$/;

/** Go's time.ParseDuration syntax restricted to the units a person would use. */
export const DURATION = /^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$/;

/** A label key: optional DNS-subdomain prefix, then a name of at most 63 characters. */
export const LABEL_KEY =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
export const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/**
 * Printable single-line text: no control characters and no U+2028/U+2029, the line and
 * paragraph separators that JavaScript, Node's readline (client-node's watch stream) and many
 * log viewers treat as line breaks. So no line break ever reaches an argv value.
 */
export const PRINTABLE = /^[^\p{Cc}\p{Zl}\p{Zp}]*$/u;

/** Annotates a schema with extensions that only the generated CRD understands. */
export function crdMeta<T extends z.ZodType>(schema: T, meta: Record<string, unknown>): T {
  const existing = z.globalRegistry.get(schema) ?? {};
  return schema.meta({ ...existing, ...meta }) as T;
}

export interface CelRule {
  rule: string;
  message: string;
  fieldPath?: string;
  reason?:
    | "FieldValueInvalid"
    | "FieldValueForbidden"
    | "FieldValueRequired"
    | "FieldValueDuplicate";
}

/** Attaches CEL rules for the API server; the caller adds the matching zod check. */
export function cel<T extends z.ZodType>(schema: T, ...rules: CelRule[]): T {
  const existing = z.globalRegistry.get(schema) ?? {};
  const previous = (existing["x-kubernetes-validations"] as CelRule[] | undefined) ?? [];
  return schema.meta({ ...existing, "x-kubernetes-validations": [...previous, ...rules] }) as T;
}

export const quantity = crdMeta(
  z.union([
    z
      .string()
      .max(64)
      .regex(QUANTITY, { message: "must be a Kubernetes quantity such as 500m, 2, 4Gi" }),
    z.number().int().min(0),
  ]),
  { "x-kubernetes-int-or-string": true },
);
export type Quantity = z.infer<typeof quantity>;

export const duration = z
  .string()
  .max(32)
  .regex(DURATION, { message: "must be a duration such as 90s, 30m or 1h30m" });

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses a duration the schema accepted into milliseconds. */
export function parseDuration(text: string): number {
  if (!DURATION.test(text)) throw new Error(`invalid duration ${JSON.stringify(text)}`);
  let total = 0;
  for (const match of text.matchAll(/([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)/g)) {
    total += Number(match[1]) * (UNIT_MS[match[2] as string] as number);
  }
  return total;
}

/** Milliseconds of a duration, or undefined when the text is not one. */
export function durationMs(text: string): number | undefined {
  return DURATION.test(text) ? parseDuration(text) : undefined;
}

/**
 * A bounded map with validated keys. A structural CRD schema cannot pattern map keys, and a
 * CEL rule over keys of unknown length risks the API server's cost limit, so the keys are
 * checked here and a bad one is reported as an InvalidSpec condition.
 */
export function boundedMap<V extends z.ZodType>(
  keyPattern: RegExp,
  keyMessage: string,
  value: V,
  maxEntries: number,
) {
  return crdMeta(
    z.record(z.string(), value).superRefine((map, ctx) => {
      const keys = Object.keys(map);
      if (keys.length > maxEntries) {
        ctx.addIssue({ code: "custom", message: `must have at most ${maxEntries} entries` });
      }
      for (const key of keys) {
        if (key.length > 253 || !keyPattern.test(key)) {
          ctx.addIssue({
            code: "custom",
            path: [key],
            message: `key ${JSON.stringify(key.slice(0, 64))} ${keyMessage}`,
          });
        }
      }
    }),
    { maxProperties: maxEntries },
  );
}

export const labelMap = boundedMap(
  LABEL_KEY,
  "must be a label key such as example.com/role",
  z.string().max(63).regex(LABEL_VALUE, { message: "must be a valid label value" }),
  32,
);

export const labelSelector = z
  .object({
    matchLabels: labelMap.optional().describe("Labels that must all match exactly."),
    matchExpressions: z
      .array(
        z.object({
          key: z
            .string()
            .max(253)
            .regex(LABEL_KEY, { message: "must be a label key" })
            .describe("The label key the requirement applies to."),
          operator: z
            .enum(["In", "NotIn", "Exists", "DoesNotExist"])
            .describe("How the key relates to the values."),
          values: z
            .array(
              z.string().max(63).regex(LABEL_VALUE, { message: "must be a valid label value" }),
            )
            .max(32)
            .optional()
            .describe("Values for In and NotIn; empty for Exists and DoesNotExist."),
        }),
      )
      .max(16)
      .optional()
      .describe("Set-based requirements that must all hold."),
  })
  .describe("A Kubernetes label selector.");
export type LabelSelector = z.infer<typeof labelSelector>;

export const toleration = z
  .object({
    key: z.string().max(253).optional().describe("The taint key the toleration applies to."),
    operator: z.enum(["Exists", "Equal"]).optional().describe("Exists or Equal (default Equal)."),
    value: z.string().max(63).optional().describe("The taint value for Equal."),
    effect: z
      .enum(["NoSchedule", "PreferNoSchedule", "NoExecute"])
      .optional()
      .describe("The taint effect to match; empty matches all."),
    tolerationSeconds: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe("How long a NoExecute taint is tolerated."),
  })
  .describe("A pod toleration, as in a pod spec.");
export type Toleration = z.infer<typeof toleration>;

const resourceName =
  /^(cpu|memory|ephemeral-storage|hugepages-[0-9A-Za-z]+|[a-z0-9.-]+\/[a-z0-9.-]+)$/;
const resourceList = boundedMap(
  resourceName,
  "must be a resource name such as cpu or memory",
  quantity,
  16,
);

export const resources = z
  .object({
    requests: resourceList
      .optional()
      .describe("Resources the scheduler reserves for the container."),
    limits: resourceList.optional().describe("The most the container may use."),
  })
  .describe("Compute resources, as in a container spec.");
export type Resources = z.infer<typeof resources>;

export const localObjectReference = z
  .object({
    name: z
      .string()
      .min(1, { message: "must not be empty" })
      .max(253)
      .regex(DNS_SUBDOMAIN, { message: "must be a Kubernetes object name" })
      .describe("Name of the object in the same namespace."),
  })
  .describe("A reference to an object in the same namespace.");

/** `observedGeneration` of a status or a condition: the generation it was computed from. */
export const observedGeneration = (what: "status" | "condition") =>
  z
    .number()
    .int()
    .min(0)
    .optional()
    .describe(`The metadata.generation this ${what} was computed from.`);

export const conditionStatus = z.enum(["True", "False", "Unknown"]);

export const condition = z
  .object({
    type: z.string().max(316).describe("Type of condition in CamelCase."),
    status: conditionStatus.describe("True, False or Unknown."),
    observedGeneration: observedGeneration("condition"),
    lastTransitionTime: z.string().max(64).describe("When the status last changed (RFC 3339)."),
    reason: z.string().max(1024).describe("A CamelCase reason for the last transition."),
    message: z.string().max(32768).describe("A human-readable explanation."),
  })
  .describe("A status condition, following the Kubernetes API conventions.");
export type Condition = z.infer<typeof condition>;

export const conditions = crdMeta(
  z.array(condition).max(16).describe("The latest observations of the object's state."),
  { "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"] },
);

/** Marks a list whose items are identified by a key; duplicates are refused. */
export function keyedList<T extends z.ZodObject>(
  item: T,
  key: string & keyof z.infer<T>,
  max: number,
) {
  return crdMeta(
    z
      .array(item)
      .max(max)
      .superRefine((items, ctx) => {
        const seen = new Set<unknown>();
        items.forEach((entry, index) => {
          const value = (entry as Record<string, unknown>)[key];
          if (seen.has(value)) {
            ctx.addIssue({
              code: "custom",
              path: [index],
              message: `duplicate ${key} ${JSON.stringify(value)}`,
            });
          }
          seen.add(value);
        });
      }),
    { "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key] },
  );
}

/** A list of distinct scalar values. */
export function setList<T extends z.ZodType>(item: T, max: number, noun: string) {
  return crdMeta(
    z
      .array(item)
      .max(max)
      .superRefine((items, ctx) => {
        const seen = new Set<unknown>();
        items.forEach((value, index) => {
          if (seen.has(value)) {
            ctx.addIssue({
              code: "custom",
              path: [index],
              message: `duplicate ${noun} ${JSON.stringify(value)}`,
            });
          }
          seen.add(value);
        });
      }),
    { "x-kubernetes-list-type": "set" },
  );
}
