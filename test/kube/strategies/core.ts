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

/** metav1.MicroTime marshals with exactly six fractional digits. */
function microTime(value: unknown): unknown {
  if (typeof value !== "string") return value;
  const match = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?Z$/.exec(value);
  if (!match) return value;
  return `${match[1]}.${(match[2] ?? "").padEnd(6, "0").slice(0, 6)}Z`;
}

export const leases: Strategy = {
  defaults(object) {
    const spec = child(object, "spec");
    for (const field of ["acquireTime", "renewTime"])
      if (spec[field] !== undefined) spec[field] = microTime(spec[field]);
  },
};

export const eventsV1: Strategy = {
  defaults(object) {
    if (object.eventTime !== undefined) object.eventTime = microTime(object.eventTime);
  },
};

export const nodes: Strategy = {
  initialStatus: (object) => obj(object.status),
};
