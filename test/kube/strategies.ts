// What the API server does to a built-in object on create and update, kind by kind: the
// defaults the decoder applies (SetDefaults_*), PrepareForCreate/PrepareForUpdate, and the
// validation that answers 422 Invalid. Only what an operator meets is modelled; the rest of
// a built-in object is stored as sent.
import type { KubeObject, ObjectMeta, OwnerReference } from "./objects.ts";
import { isObject, type JsonObject, jsonEqual } from "./objects.ts";
import type { ResourceInfo } from "./resources.ts";
import {
  badRequest,
  type FieldError,
  fieldError,
  forbidden,
  invalidValue,
  notSupported,
  requiredValue,
} from "./status.ts";

export interface StrategyContext {
  serverVersion: { major: number; minor: number };
  allocateClusterIP(): string;
}

export interface Strategy {
  /** Defaults applied to every write, as decoding a request body does. */
  defaults?(object: KubeObject): void;
  /** PrepareForCreate: server-owned fields of a new object (status is reset before). */
  prepareForCreate?(object: KubeObject, context: StrategyContext): void;
  /** PrepareForUpdate: carries server-owned fields over from the stored object. */
  prepareForUpdate?(object: KubeObject, old: KubeObject): void;
  /** The status a new object starts with when the kind has a status subresource. */
  initialStatus?(object: KubeObject): JsonObject;
  validate?(object: KubeObject): FieldError[];
  validateUpdate?(object: KubeObject, old: KubeObject): FieldError[];
  /** Seconds of graceful deletion, 0 for immediate (pods only). */
  gracePeriodSeconds?(object: KubeObject, requested: number | undefined): number;
}

type Obj = JsonObject;
const obj = (value: unknown): Obj => (isObject(value) ? value : {});

/** parent[key] as an object, created when missing. */
function child(parent: Obj | KubeObject, key: string): Obj {
  const record = parent as Obj;
  if (!isObject(record[key])) record[key] = {};
  return record[key] as Obj;
}
const list = (value: unknown): Obj[] => (Array.isArray(value) ? value.filter(isObject) : []);

// ---------------------------------------------------------------------------------------------
// Object metadata

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;

const SUBDOMAIN_MESSAGE =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MESSAGE =
  "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MESSAGE =
  "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MESSAGE =
  "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MESSAGE =
  "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

export function validateName(
  name: string,
  rule: ResourceInfo["nameRule"],
  field: string,
): FieldError[] {
  const [pattern, message, max] =
    rule === "label"
      ? [DNS1123_LABEL, LABEL_MESSAGE, 63]
      : rule === "dns1035"
        ? [DNS1035_LABEL, DNS1035_MESSAGE, 63]
        : [DNS1123_SUBDOMAIN, SUBDOMAIN_MESSAGE, 253];
  const errors: FieldError[] = [];
  if (name.length > max)
    errors.push(invalidValue(field, name, `must be no more than ${max} characters`));
  if (!pattern.test(name)) errors.push(invalidValue(field, name, message));
  return errors;
}

function validateQualifiedName(key: string, field: string): FieldError[] {
  const slash = key.lastIndexOf("/");
  const prefix = slash >= 0 ? key.slice(0, slash) : "";
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  const errors: FieldError[] = [];
  if (slash >= 0 && (prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix)))
    errors.push(invalidValue(field, key, `prefix part ${SUBDOMAIN_MESSAGE}`));
  if (name.length === 0) errors.push(invalidValue(field, key, "name part must be non-empty"));
  else if (name.length > 63)
    errors.push(invalidValue(field, key, "name part must be no more than 63 characters"));
  else if (!QUALIFIED_NAME.test(name))
    errors.push(invalidValue(field, key, QUALIFIED_NAME_MESSAGE));
  return errors;
}

export function validateLabels(labels: unknown, field: string): FieldError[] {
  const errors: FieldError[] = [];
  for (const [key, value] of Object.entries(obj(labels))) {
    errors.push(...validateQualifiedName(key, field));
    const text = String(value);
    if (text.length > 63)
      errors.push(invalidValue(field, text, "must be no more than 63 characters"));
    if (!LABEL_VALUE.test(text)) errors.push(invalidValue(field, text, LABEL_VALUE_MESSAGE));
  }
  return errors;
}

function validateOwnerReferences(refs: readonly OwnerReference[], field: string): FieldError[] {
  const errors: FieldError[] = [];
  const controllers: string[] = [];
  for (const ref of refs) {
    if (!ref.apiVersion)
      errors.push(invalidValue(`${field}.apiVersion`, "", "version must not be empty"));
    if (!ref.kind) errors.push(invalidValue(`${field}.kind`, "", "kind must not be empty"));
    if (!ref.name) errors.push(invalidValue(`${field}.name`, "", "name must not be empty"));
    if (!ref.uid) errors.push(invalidValue(`${field}.uid`, "", "uid must not be empty"));
    if (ref.controller) controllers.push(`${ref.kind}/${ref.name}`);
  }
  if (controllers.length > 1)
    errors.push(
      invalidValue(
        field,
        refs,
        `Only one reference can have Controller set to true. Found "true" in references for ${controllers.join(" and ")}`,
      ),
    );
  return errors;
}

/** ValidateObjectMeta for every kind (name, labels, annotations, owner references). */
export function validateObjectMeta(meta: ObjectMeta, info: ResourceInfo): FieldError[] {
  const errors: FieldError[] = [];
  if (!meta.name) errors.push(requiredValue("metadata.name", "name or generateName is required"));
  else errors.push(...validateName(meta.name, info.nameRule, "metadata.name"));
  if (info.namespaced && !meta.namespace) errors.push(requiredValue("metadata.namespace"));
  errors.push(...validateLabels(meta.labels, "metadata.labels"));
  for (const key of Object.keys(meta.annotations ?? {}))
    errors.push(...validateQualifiedName(key.toLowerCase(), "metadata.annotations"));
  const size = Object.entries(meta.annotations ?? {}).reduce(
    (n, [k, v]) => n + k.length + v.length,
    0,
  );
  if (size > 256 * 1024)
    errors.push(
      fieldError(
        "FieldValueTooLong",
        "metadata.annotations",
        `Too long: must have at most 262144 bytes`,
      ),
    );
  errors.push(...validateOwnerReferences(meta.ownerReferences ?? [], "metadata.ownerReferences"));
  return errors;
}

export function validateObjectMetaUpdate(meta: ObjectMeta, old: ObjectMeta): FieldError[] {
  if (!old.deletionTimestamp) return [];
  const added = (meta.finalizers ?? []).filter((f) => !(old.finalizers ?? []).includes(f));
  return added.length
    ? [
        forbidden(
          "metadata.finalizers",
          `no new finalizers can be added if the object is being deleted, found new finalizers []string{${added.map((f) => `"${f}"`).join(", ")}}`,
        ),
      ]
    : [];
}

// ---------------------------------------------------------------------------------------------
// Pod specs (pods and the templates of workload kinds)

function defaultImagePullPolicy(image: unknown): string {
  const text = String(image ?? "");
  if (text.includes("@")) return "IfNotPresent";
  const last = text.slice(text.lastIndexOf("/") + 1);
  const tag = last.includes(":") ? last.slice(last.indexOf(":") + 1) : "";
  return tag === "" || tag === "latest" ? "Always" : "IfNotPresent";
}

function defaultContainer(container: Obj): void {
  container.terminationMessagePath ??= "/dev/termination-log";
  container.terminationMessagePolicy ??= "File";
  container.imagePullPolicy ??= defaultImagePullPolicy(container.image);
  container.resources ??= {};
  for (const port of list(container.ports)) port.protocol ??= "TCP";
  for (const env of list(container.env)) {
    const fieldRef = obj(obj(env.valueFrom).fieldRef);
    if (isObject(obj(env.valueFrom).fieldRef)) fieldRef.apiVersion ??= "v1";
  }
}

export function defaultPodSpec(spec: Obj): void {
  spec.restartPolicy ??= "Always";
  spec.terminationGracePeriodSeconds ??= 30;
  spec.dnsPolicy ??= "ClusterFirst";
  spec.securityContext ??= {};
  spec.schedulerName ??= "default-scheduler";
  for (const container of [...list(spec.initContainers), ...list(spec.containers)])
    defaultContainer(container);
  for (const volume of list(spec.volumes)) {
    for (const kind of ["secret", "configMap", "projected", "downwardAPI"]) {
      if (isObject(volume[kind])) (volume[kind] as Obj).defaultMode ??= 420;
    }
  }
}

function validatePodSpec(spec: Obj, field: string, extraVolumes: string[] = []): FieldError[] {
  const errors: FieldError[] = [];
  const containers = list(spec.containers);
  if (containers.length === 0) errors.push(requiredValue(`${field}.containers`));
  const names = new Set<string>();
  const volumes = new Set([...list(spec.volumes).map((v) => String(v.name)), ...extraVolumes]);
  for (const [group, items] of [
    ["initContainers", list(spec.initContainers)],
    ["containers", containers],
  ] as const) {
    items.forEach((container, index) => {
      const at = `${field}.${group}[${index}]`;
      if (!container.name) errors.push(requiredValue(`${at}.name`));
      else {
        errors.push(...validateName(String(container.name), "label", `${at}.name`));
        if (names.has(String(container.name)))
          errors.push(
            fieldError("FieldValueDuplicate", `${at}.name`, `Duplicate value: "${container.name}"`),
          );
        names.add(String(container.name));
      }
      if (!container.image) errors.push(requiredValue(`${at}.image`));
      list(container.volumeMounts).forEach((mount, m) => {
        if (!volumes.has(String(mount.name)))
          errors.push(
            fieldError(
              "FieldValueNotFound",
              `${at}.volumeMounts[${m}].name`,
              `Not found: "${mount.name}"`,
            ),
          );
        if (!mount.mountPath) errors.push(requiredValue(`${at}.volumeMounts[${m}].mountPath`));
      });
    });
  }
  const seen = new Set<string>();
  list(spec.volumes).forEach((volume, index) => {
    const name = String(volume.name ?? "");
    if (!name) errors.push(requiredValue(`${field}.volumes[${index}].name`));
    else if (seen.has(name))
      errors.push(
        fieldError(
          "FieldValueDuplicate",
          `${field}.volumes[${index}].name`,
          `Duplicate value: "${name}"`,
        ),
      );
    seen.add(name);
  });
  return errors;
}

function validatePodTemplate(
  template: unknown,
  field: string,
  extraVolumes: string[] = [],
): FieldError[] {
  const t = obj(template);
  return [
    ...validateLabels(obj(t.metadata).labels, `${field}.labels`),
    ...validatePodSpec(obj(t.spec), `${field}.spec`, extraVolumes),
  ];
}

function selectorMatchesTemplate(selector: unknown, template: unknown): boolean {
  const labels = obj(obj(obj(template).metadata).labels);
  const s = obj(selector);
  for (const [key, value] of Object.entries(obj(s.matchLabels)))
    if (labels[key] !== value) return false;
  for (const expression of list(s.matchExpressions)) {
    const has = Object.hasOwn(labels, String(expression.key));
    const value = labels[String(expression.key)];
    const values = Array.isArray(expression.values) ? expression.values : [];
    switch (expression.operator) {
      case "In":
        if (!has || !values.includes(value)) return false;
        break;
      case "NotIn":
        if (has && values.includes(value)) return false;
        break;
      case "Exists":
        if (!has) return false;
        break;
      case "DoesNotExist":
        if (has) return false;
        break;
    }
  }
  return true;
}

function validateWorkloadSelector(spec: Obj, kindWord: string): FieldError[] {
  const errors: FieldError[] = [];
  const selector = obj(spec.selector);
  if (!isObject(spec.selector)) errors.push(requiredValue("spec.selector"));
  else if (
    Object.keys(obj(selector.matchLabels)).length === 0 &&
    list(selector.matchExpressions).length === 0
  )
    errors.push(
      invalidValue("spec.selector", selector, `empty selector is invalid for ${kindWord}`),
    );
  else if (!selectorMatchesTemplate(selector, spec.template))
    errors.push(
      invalidValue(
        "spec.template.metadata.labels",
        obj(obj(spec.template).metadata).labels ?? {},
        "`selector` does not match template `labels`",
      ),
    );
  return errors;
}

function immutable(field: string, value: unknown, old: unknown): FieldError[] {
  return jsonEqual(value, old) ? [] : [invalidValue(field, value, "field is immutable")];
}

function qosClass(spec: Obj): string {
  const containers = [...list(spec.initContainers), ...list(spec.containers)];
  let any = false;
  let guaranteed = containers.length > 0;
  for (const container of containers) {
    const resources = obj(container.resources);
    const requests = obj(resources.requests);
    const limits = obj(resources.limits);
    if (Object.keys(requests).length || Object.keys(limits).length) any = true;
    for (const name of ["cpu", "memory"]) {
      if (limits[name] === undefined || (requests[name] ?? limits[name]) !== limits[name])
        guaranteed = false;
    }
  }
  if (!any) return "BestEffort";
  return guaranteed ? "Guaranteed" : "Burstable";
}

const POD_MUTABLE_SPEC_MESSAGE =
  "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

function podSpecWithoutMutable(spec: Obj): Obj {
  const copy = structuredClone(spec) as Obj;
  for (const container of [...list(copy.initContainers), ...list(copy.containers)])
    delete container.image;
  delete copy.activeDeadlineSeconds;
  delete copy.tolerations;
  delete copy.terminationGracePeriodSeconds;
  return copy;
}

// ---------------------------------------------------------------------------------------------
// Kinds

const pods: Strategy = {
  defaults(object) {
    defaultPodSpec(child(object, "spec"));
  },
  prepareForCreate(object) {
    const spec = obj(object.spec);
    spec.serviceAccountName ??= spec.serviceAccount ?? "default";
    spec.serviceAccount = spec.serviceAccountName;
    spec.enableServiceLinks ??= true;
    spec.priority ??= 0;
    spec.preemptionPolicy ??= "PreemptLowerPriority";
    const tolerations = list(spec.tolerations);
    spec.tolerations = tolerations;
    for (const key of ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]) {
      if (!tolerations.some((t) => t.key === key))
        tolerations.push({
          key,
          operator: "Exists",
          effect: "NoExecute",
          tolerationSeconds: 300,
        });
    }
  },
  initialStatus: (object) => ({ phase: "Pending", qosClass: qosClass(obj(object.spec)) }),
  validate: (object) => validatePodSpec(obj(object.spec), "spec"),
  validateUpdate(object, old) {
    const spec = podSpecWithoutMutable(obj(object.spec));
    const before = podSpecWithoutMutable(obj(old.spec));
    // spec.nodeName is set once through the binding subresource.
    if (!before.nodeName) delete spec.nodeName;
    if (!jsonEqual(spec, before)) return [forbidden("spec", POD_MUTABLE_SPEC_MESSAGE)];
    return [];
  },
  gracePeriodSeconds(object, requested) {
    const spec = obj(object.spec);
    const phase = obj(object.status).phase;
    // Unscheduled and finished pods are deleted at once (pod strategy CheckGracefulDelete).
    if (!spec.nodeName || phase === "Succeeded" || phase === "Failed") return 0;
    return requested ?? Number(spec.terminationGracePeriodSeconds ?? 30);
  },
};

const deployments: Strategy = {
  defaults(object) {
    const spec = child(object, "spec");
    spec.replicas ??= 1;
    const strategy = child(spec, "strategy");
    strategy.type ??= "RollingUpdate";
    if (strategy.type === "RollingUpdate") {
      const rolling = child(strategy, "rollingUpdate");
      rolling.maxUnavailable ??= "25%";
      rolling.maxSurge ??= "25%";
    }
    spec.revisionHistoryLimit ??= 10;
    spec.progressDeadlineSeconds ??= 600;
    defaultPodSpec(child(child(spec, "template"), "spec"));
  },
  initialStatus: () => ({}),
  validate(object) {
    const spec = obj(object.spec);
    const errors = [
      ...validateWorkloadSelector(spec, "deployment"),
      ...validatePodTemplate(spec.template, "spec.template"),
    ];
    if (Number(spec.replicas) < 0)
      errors.push(
        invalidValue("spec.replicas", spec.replicas, "must be greater than or equal to 0"),
      );
    const rolling = obj(obj(spec.strategy).rollingUpdate);
    if (
      isZero(rolling.maxSurge) &&
      isZero(rolling.maxUnavailable) &&
      obj(spec.strategy).type === "RollingUpdate"
    )
      errors.push(
        invalidValue(
          "spec.strategy.rollingUpdate.maxUnavailable",
          rolling.maxUnavailable,
          "may not be 0 when `maxSurge` is 0",
        ),
      );
    if (obj(obj(obj(spec.template).spec)).restartPolicy !== "Always")
      errors.push(
        notSupported(
          "spec.template.spec.restartPolicy",
          obj(obj(spec.template).spec).restartPolicy,
          ["Always"],
        ),
      );
    return errors;
  },
  validateUpdate: (object, old) =>
    immutable("spec.selector", obj(object.spec).selector, obj(old.spec).selector),
};

const isZero = (value: unknown) => value === 0 || value === "0%" || value === "0";

const replicasets: Strategy = {
  defaults(object) {
    const spec = child(object, "spec");
    spec.replicas ??= 1;
    defaultPodSpec(child(child(spec, "template"), "spec"));
  },
  initialStatus: () => ({ replicas: 0 }),
  validate: (object) => [
    ...validateWorkloadSelector(obj(object.spec), "replicaset"),
    ...validatePodTemplate(obj(object.spec).template, "spec.template"),
  ],
  validateUpdate: (object, old) =>
    immutable("spec.selector", obj(object.spec).selector, obj(old.spec).selector),
};

const STATEFULSET_MUTABLE = [
  "replicas",
  "ordinals",
  "template",
  "updateStrategy",
  "revisionHistoryLimit",
  "persistentVolumeClaimRetentionPolicy",
  "minReadySeconds",
];

const statefulsets: Strategy = {
  defaults(object) {
    const spec = child(object, "spec");
    spec.replicas ??= 1;
    spec.podManagementPolicy ??= "OrderedReady";
    const update = child(spec, "updateStrategy");
    update.type ??= "RollingUpdate";
    if (update.type === "RollingUpdate") child(update, "rollingUpdate").partition ??= 0;
    spec.revisionHistoryLimit ??= 10;
    spec.persistentVolumeClaimRetentionPolicy ??= { whenDeleted: "Retain", whenScaled: "Retain" };
    for (const claim of list(spec.volumeClaimTemplates)) {
      claim.apiVersion ??= "v1";
      claim.kind ??= "PersistentVolumeClaim";
      child(claim, "spec").volumeMode ??= "Filesystem";
      claim.status ??= { phase: "Pending" };
    }
    defaultPodSpec(child(child(spec, "template"), "spec"));
  },
  initialStatus: () => ({ replicas: 0, availableReplicas: 0 }),
  validate: (object) => [
    ...validateWorkloadSelector(obj(object.spec), "statefulset"),
    ...validatePodTemplate(
      obj(object.spec).template,
      "spec.template",
      list(obj(object.spec).volumeClaimTemplates).map((claim) => String(obj(claim.metadata).name)),
    ),
  ],
  validateUpdate(object, old) {
    const strip = (spec: Obj) =>
      Object.fromEntries(
        Object.entries(spec).filter(([key]) => !STATEFULSET_MUTABLE.includes(key)),
      );
    if (!jsonEqual(strip(obj(object.spec)), strip(obj(old.spec))))
      return [
        forbidden(
          "spec",
          "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ),
      ];
    return [];
  },
};

export const JOB_LABELS = {
  controllerUid: "batch.kubernetes.io/controller-uid",
  jobName: "batch.kubernetes.io/job-name",
  legacyControllerUid: "controller-uid",
  legacyJobName: "job-name",
} as const;

const jobs: Strategy = {
  defaults(object) {
    const spec = child(object, "spec");
    if (spec.completions === undefined && spec.parallelism === undefined) {
      spec.completions = 1;
      spec.parallelism = 1;
    }
    spec.parallelism ??= 1;
    spec.backoffLimit ??= 6;
    spec.completionMode ??= "NonIndexed";
    spec.suspend ??= false;
    if (spec.podFailurePolicy === undefined) spec.podReplacementPolicy ??= "TerminatingOrFailed";
    defaultPodSpec(child(child(spec, "template"), "spec"));
  },
  prepareForCreate(object) {
    const spec = obj(object.spec);
    if (spec.manualSelector === true) return;
    const uid = object.metadata.uid!;
    const name = object.metadata.name!;
    spec.selector = { matchLabels: { [JOB_LABELS.controllerUid]: uid } };
    const meta = child(child(spec, "template"), "metadata");
    meta.labels = {
      ...obj(meta.labels),
      [JOB_LABELS.controllerUid]: uid,
      [JOB_LABELS.jobName]: name,
      [JOB_LABELS.legacyControllerUid]: uid,
      [JOB_LABELS.legacyJobName]: name,
    };
  },
  initialStatus: () => ({}),
  validate(object) {
    const spec = obj(object.spec);
    const errors = validatePodTemplate(spec.template, "spec.template");
    const restart = obj(obj(spec.template).spec).restartPolicy;
    if (restart !== "OnFailure" && restart !== "Never")
      errors.push(
        notSupported("spec.template.spec.restartPolicy", restart, ["OnFailure", "Never"]),
      );
    if (spec.activeDeadlineSeconds !== undefined && Number(spec.activeDeadlineSeconds) <= 0)
      errors.push(
        invalidValue(
          "spec.activeDeadlineSeconds",
          spec.activeDeadlineSeconds,
          "must be greater than 0",
        ),
      );
    if (Number(spec.backoffLimit) < 0)
      errors.push(
        invalidValue("spec.backoffLimit", spec.backoffLimit, "must be greater than or equal to 0"),
      );
    if (!selectorMatchesTemplate(spec.selector, spec.template))
      errors.push(
        invalidValue(
          "spec.template.metadata.labels",
          obj(obj(spec.template).metadata).labels ?? {},
          "`selector` does not match template `labels`",
        ),
      );
    return errors;
  },
  validateUpdate(object, old) {
    const spec = obj(object.spec);
    const before = obj(old.spec);
    return [
      ...immutable("spec.selector", spec.selector, before.selector),
      ...immutable("spec.template", spec.template, before.template),
      ...immutable("spec.completions", spec.completions, before.completions),
      ...immutable("spec.completionMode", spec.completionMode, before.completionMode),
    ];
  },
};

const services: Strategy = {
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

const secrets: Strategy = {
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

const configmaps: Strategy = {
  validate: (object) => [
    ...validateDataKeys(object.data, "data"),
    ...validateDataKeys(object.binaryData, "binaryData"),
  ],
  validateUpdate: (object, old) => immutableData(object, old, ["data", "binaryData"]),
};

const namespaces: Strategy = {
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

const persistentvolumeclaims: Strategy = {
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

const poddisruptionbudgets: Strategy = {
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

const leases: Strategy = {
  defaults(object) {
    const spec = child(object, "spec");
    for (const field of ["acquireTime", "renewTime"])
      if (spec[field] !== undefined) spec[field] = microTime(spec[field]);
  },
};

const eventsV1: Strategy = {
  defaults(object) {
    if (object.eventTime !== undefined) object.eventTime = microTime(object.eventTime);
  },
};

const nodes: Strategy = {
  initialStatus: (object) => obj(object.status),
};

export const STRATEGIES: Record<string, Strategy> = {
  pods,
  "deployments.apps": deployments,
  "replicasets.apps": replicasets,
  "statefulsets.apps": statefulsets,
  "jobs.batch": jobs,
  services,
  secrets,
  configmaps,
  namespaces,
  persistentvolumeclaims,
  "poddisruptionbudgets.policy": poddisruptionbudgets,
  "leases.coordination.k8s.io": leases,
  "events.events.k8s.io": eventsV1,
  nodes,
};
