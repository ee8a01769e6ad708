// Deployments, ReplicaSets, StatefulSets and Jobs: defaults, generated Job selectors and
// labels, and the update rules (immutable selectors and Job templates, StatefulSet's forbidden
// spec fields).
import { jsonEqual } from "../objects.ts";
import { forbidden, invalidValue, notSupported } from "../status.ts";
import {
  defaultPodSpec,
  selectorMatchesTemplate,
  validatePodTemplate,
  validateWorkloadSelector,
} from "./pods.ts";
import { child, immutable, list, type Obj, obj, type Strategy } from "./strategy.ts";

export const deployments: Strategy = {
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

export const replicasets: Strategy = {
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

export const statefulsets: Strategy = {
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

export const jobs: Strategy = {
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
