// Core kinds: Services (clusterIP), Secrets and ConfigMaps (keys, types, immutability),
// Namespaces, PersistentVolumeClaims, PodDisruptionBudgets, Leases, events.k8s.io Events, Nodes.
import { isObject, jsonEqual, type KubeObject } from "../objects.ts";
import { badRequest, type FieldError, forbidden, invalidValue, requiredValue } from "../status.ts";
import { child, immutable, list, type Obj, obj, type Strategy } from "./strategy.ts";

export const services: Strategy = {
  defaults(object) {
    const spec = child(object, "spec");
    spec.type ??= "ClusterIP";
    spec.sessionAffinity ??= "None";
    if (spec.type !== "ExternalName") spec.internalTrafficPolicy ??= "Cluster";
    for (const port of list(spec.ports)) {
      port.protocol ??= "TCP";
      port.targetPort ??= port.port;
    }
  },
  prepareForCreate(object, context) {
    const spec = obj(object.spec);
    if (spec.type === "ExternalName") return;
    if (!spec.clusterIP) spec.clusterIP = context.allocateClusterIP();
    spec.clusterIPs ??= [spec.clusterIP];
    if (spec.clusterIP !== "None") {
      spec.ipFamilies ??= ["IPv4"];
      spec.ipFamilyPolicy ??= "SingleStack";
    } else {
      spec.ipFamilies ??= ["IPv4"];
      spec.ipFamilyPolicy ??= "SingleStack";
    }
  },
  prepareForUpdate(object, old) {
    // Allocated values carry over when the update leaves them out (patchAllocatedValues).
    const spec = child(object, "spec");
    const before = obj(old.spec);
    for (const key of ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"]) {
      if (spec[key] === undefined && before[key] !== undefined) spec[key] = before[key];
    }
  },
  initialStatus: () => ({ loadBalancer: {} }),
  validate(object) {
    const spec = obj(object.spec);
    const errors: FieldError[] = [];
    const headless = spec.clusterIP === "None";
    if (spec.type !== "ExternalName" && !headless && list(spec.ports).length === 0)
      errors.push(requiredValue("spec.ports"));
    list(spec.ports).forEach((port, index) => {
      const n = Number(port.port);
      if (!Number.isInteger(n) || n < 1 || n > 65535)
        errors.push(
          invalidValue(
            `spec.ports[${index}].port`,
            port.port,
            "must be between 1 and 65535, inclusive",
          ),
        );
      if (list(spec.ports).length > 1 && !port.name)
        errors.push(requiredValue(`spec.ports[${index}].name`));
    });
    return errors;
  },
  validateUpdate(object, old) {
    const before = obj(old.spec).clusterIP;
    const now = obj(object.spec).clusterIP;
    return before && now !== before
      ? [invalidValue("spec.clusterIPs[0]", [now], "may not change once set")]
      : [];
  },
};

const CONFIG_KEY = /^[-._a-zA-Z0-9]+$/;

function validateDataKeys(data: unknown, field: string): FieldError[] {
  const errors: FieldError[] = [];
  for (const key of Object.keys(obj(data))) {
    if (!CONFIG_KEY.test(key) || key.length > 253)
      errors.push(
        invalidValue(
          `${field}[${key}]`,
          key,
          "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        ),
      );
  }
  return errors;
}

function immutableData(object: KubeObject, old: KubeObject, fields: string[]): FieldError[] {
  if (old.immutable !== true) return [];
  const errors: FieldError[] = [];
  for (const field of fields)
    if (!jsonEqual(object[field], old[field]))
      errors.push(forbidden(field, "field is immutable when `immutable` is set"));
  if (object.immutable !== true)
    errors.push(forbidden("immutable", "field is immutable when `immutable` is set"));
  return errors;
}

const SECRET_REQUIRED_KEYS: Record<string, string[]> = {
  "kubernetes.io/tls": ["tls.crt", "tls.key"],
  "kubernetes.io/dockerconfigjson": [".dockerconfigjson"],
  "kubernetes.io/dockercfg": [".dockercfg"],
  "kubernetes.io/basic-auth": [],
  "kubernetes.io/ssh-auth": ["ssh-privatekey"],
};

export const secrets: Strategy = {
  defaults(object) {
    object.type ??= "Opaque";
    if (isObject(object.stringData)) {
      const data = child(object, "data");
      for (const [key, value] of Object.entries(object.stringData))
        data[key] = Buffer.from(String(value), "utf8").toString("base64");
    }
    delete object.stringData;
    for (const [key, value] of Object.entries(obj(object.data))) {
      if (
        typeof value !== "string" ||
        !/^[A-Za-z0-9+/]*={0,2}$/.test(value) ||
        value.length % 4 !== 0
      )
        throw badRequest(
          `Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 0 (key ${key})`,
        );
    }
  },
  validate(object) {
    const errors = validateDataKeys(object.data, "data");
    const required = SECRET_REQUIRED_KEYS[String(object.type)] ?? [];
    for (const key of required)
      if (obj(object.data)[key] === undefined) errors.push(requiredValue(`data[${key}]`));
    return errors;
  },
  validateUpdate: (object, old) => [
    ...immutable("type", object.type, old.type),
    ...immutableData(object, old, ["data"]),
  ],
};

export const configmaps: Strategy = {
  validate: (object) => [
    ...validateDataKeys(object.data, "data"),
    ...validateDataKeys(object.binaryData, "binaryData"),
  ],
  validateUpdate: (object, old) => immutableData(object, old, ["data", "binaryData"]),
};

export const namespaces: Strategy = {
  defaults(object) {
    object.metadata.labels = {
      ...object.metadata.labels,
      "kubernetes.io/metadata.name": object.metadata.name ?? "",
    };
  },
  prepareForCreate(object) {
    object.spec = { finalizers: ["kubernetes"], ...obj(object.spec) };
  },
  prepareForUpdate(object, old) {
    object.spec = old.spec;
  },
  initialStatus: () => ({ phase: "Active" }),
};

export const persistentvolumeclaims: Strategy = {
  defaults(object) {
    child(object, "spec").volumeMode ??= "Filesystem";
  },
  prepareForCreate(object) {
    // The StorageObjectInUseProtection admission plugin.
    const finalizers = object.metadata.finalizers ?? [];
    if (!finalizers.includes("kubernetes.io/pvc-protection"))
      object.metadata.finalizers = [...finalizers, "kubernetes.io/pvc-protection"];
  },
  initialStatus: () => ({ phase: "Pending" }),
  validate(object) {
    const spec = obj(object.spec);
    const errors: FieldError[] = [];
    if (
      list(spec.accessModes).length === 0 &&
      !(Array.isArray(spec.accessModes) && spec.accessModes.length)
    )
      errors.push(requiredValue("spec.accessModes", "at least 1 access mode is required"));
    if (obj(obj(spec.resources).requests).storage === undefined)
      errors.push(requiredValue("spec.resources[storage]"));
    return errors;
  },
  validateUpdate(object, old) {
    const strip = (spec: Obj) => {
      const copy = structuredClone(spec) as Obj;
      delete obj(copy.resources).requests;
      delete copy.volumeName;
      return copy;
    };
    return jsonEqual(strip(obj(object.spec)), strip(obj(old.spec)))
      ? []
      : [
          forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
          ),
        ];
  },
};

export const poddisruptionbudgets: Strategy = {
  initialStatus: () => ({
    disruptionsAllowed: 0,
    currentHealthy: 0,
    desiredHealthy: 0,
    expectedPods: 0,
  }),
  validate(object) {
    const spec = obj(object.spec);
    return spec.minAvailable !== undefined && spec.maxUnavailable !== undefined
      ? [invalidValue("spec", spec, "minAvailable and maxUnavailable cannot be both set")]
      : [];
  },
};

const RFC3339_MICRO = "2006-01-02T15:04:05.000000Z07:00";
const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})/;
const ZONE = /^(?:Z|[+-]\d{2}:\d{2})$/;

/**
 * metav1.MicroTime's UnmarshalJSON: Go's time.Parse with RFC3339Micro, whose ".000000" takes
 * exactly six fractional digits; the error is time.ParseError's text. Returns the value as the
 * server re-encodes it (UTC), or the error.
 */
export function parseMicroTime(value: unknown): { value: unknown } | { error: string } {
  if (value === null || value === undefined) return { value };
  if (typeof value !== "string")
    return { error: "json: cannot unmarshal into Go value of type string" };
  const fail = (rest: string, layout: string) => ({
    error: `parsing time ${JSON.stringify(value)} as "${RFC3339_MICRO}": cannot parse ${JSON.stringify(rest)} as "${layout}"`,
  });
  const head = DATE_TIME.exec(value);
  if (!head) return fail(value, "2006");
  const rest = value.slice(head[0].length);
  const fraction = /^\.\d{6}/.exec(rest);
  if (!fraction) return fail(rest, ".000000");
  const zone = rest.slice(7);
  if (!ZONE.test(zone)) return fail(zone, "Z07:00");
  const millis = Date.parse(`${head[0]}${zone}`);
  if (Number.isNaN(millis)) return fail(value, "2006");
  return { value: new Date(millis).toISOString().replace(/\.\d{3}Z$/, `${fraction[0]}Z`) };
}

/** metav1.Time: any RFC 3339 value decodes, and it is re-encoded in whole seconds (UTC). */
function truncateTime(value: unknown): unknown {
  if (typeof value !== "string") return value;
  const millis = Date.parse(value);
  if (!DATE_TIME.test(value) || Number.isNaN(millis)) return value;
  return new Date(millis).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** Decodes the MicroTime fields at `paths` (dotted) in place; the first error, if any. */
function decodeMicroTimes(object: Obj, paths: string[]): string | undefined {
  for (const path of paths) {
    const parts = path.split(".");
    let parent: Obj | undefined = object;
    for (const part of parts.slice(0, -1))
      parent = isObject(parent?.[part]) ? (parent[part] as Obj) : undefined;
    const key = parts.at(-1)!;
    if (!parent || parent[key] === undefined) continue;
    const decoded = parseMicroTime(parent[key]);
    if ("error" in decoded) return decoded.error;
    parent[key] = decoded.value;
  }
  return undefined;
}

export const leases: Strategy = {
  decode: (object) => decodeMicroTimes(object as Obj, ["spec.acquireTime", "spec.renewTime"]),
  validate(object) {
    // ValidateLeaseSpec.
    const spec = obj(object.spec);
    const errors: FieldError[] = [];
    const duration = spec.leaseDurationSeconds;
    if (typeof duration === "number" && duration <= 0)
      errors.push(invalidValue("spec.leaseDurationSeconds", duration, "must be greater than 0"));
    const transitions = spec.leaseTransitions;
    if (typeof transitions === "number" && transitions < 0)
      errors.push(
        invalidValue("spec.leaseTransitions", transitions, "must be greater than or equal to 0"),
      );
    return errors;
  },
};

export const eventsV1: Strategy = {
  decode: (object) =>
    decodeMicroTimes(object as Obj, ["eventTime", "series.lastObservedTime"]) ??
    coreTimes(object as Obj),
};

/** events.k8s.io/v1 deprecatedFirstTimestamp/deprecatedLastTimestamp are metav1.Time. */
function coreTimes(object: Obj): undefined {
  for (const key of ["deprecatedFirstTimestamp", "deprecatedLastTimestamp"])
    if (object[key] !== undefined) object[key] = truncateTime(object[key]);
  return undefined;
}

export const events: Strategy = {
  decode(object) {
    const record = object as Obj;
    for (const key of ["firstTimestamp", "lastTimestamp"])
      if (record[key] !== undefined) record[key] = truncateTime(record[key]);
    return decodeMicroTimes(record, ["eventTime", "series.lastObservedTime"]);
  },
};

export const nodes: Strategy = {
  initialStatus: (object) => obj(object.status),
};
