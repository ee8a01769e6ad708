// Pod specs as the decoder defaults them and validation checks them, for pods and for the
// templates of workload kinds; and the pods strategy itself.
import { isObject, jsonEqual } from "../objects.ts";
import { type FieldError, fieldError, forbidden, invalidValue, requiredValue } from "../status.ts";
import { validateLabels, validateName } from "./meta.ts";
import { child, list, type Obj, obj, type Strategy } from "./strategy.ts";

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

export function validatePodSpec(
  spec: Obj,
  field: string,
  extraVolumes: string[] = [],
): FieldError[] {
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

export function validatePodTemplate(
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

export function selectorMatchesTemplate(selector: unknown, template: unknown): boolean {
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

export function validateWorkloadSelector(spec: Obj, kindWord: string): FieldError[] {
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

export function qosClass(spec: Obj): string {
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

export const pods: Strategy = {
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
