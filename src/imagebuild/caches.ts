// The build controller's caches: the shared ones (src/caches.ts) and ImageBuilds (by pool), the
// operator's Jobs and pods (with the indexes routing and the reconciler read) and namespaces'
// labels; and what they keep of each Job and pod. With thousands of builds the caches are most
// of the operator's heap (bench/results.md: 5,000 builds, 10,000 Jobs and their pods), so they
// keep only what observeJob/observePod, the indexes and the event handlers read.
import type {
  KubernetesObject,
  V1ConfigMap,
  V1ContainerStatus,
  V1Job,
  V1JobCondition,
  V1Namespace,
  V1ObjectMeta,
  V1Pod,
  V1Secret,
} from "@kubernetes/client-node";
import type { BuildPhase } from "../api/imagebuild-status.ts";
import { IMAGE_BUILD_RESOURCE } from "../api/resources.ts";
import { MANAGED_SELECTOR, type SharedCaches } from "../caches.ts";
import { COMPONENTS, LABELS } from "../naming.ts";
import { RESOURCES } from "../runtime/client.ts";
import type { Informer } from "../runtime/informer.ts";
import type { Manager } from "../runtime/manager.ts";
import { labelsOnly } from "../runtime/transforms.ts";
import { indexBuilderPods, indexPlatformJobs } from "./builders.ts";

/** ImageBuilds by the pool they name, `<namespace>/<name>`. */
export const BY_POOL = "pool";
/** Pods by their Job, `<namespace>/<job>`. */
export const BY_JOB = "job";
export const JOB_NAME_LABEL = "batch.kubernetes.io/job-name";

export interface BuildCaches {
  builds: Informer<KubernetesObject>;
  pools: Informer<KubernetesObject>;
  jobs: Informer<V1Job>;
  pods: Informer<V1Pod>;
  secrets: Informer<V1Secret>;
  configMaps: Informer<V1ConfigMap>;
  namespaces: Informer<V1Namespace>;
}

/** The phase a cached (unparsed) build reports. */
export function phaseOf(build: KubernetesObject): BuildPhase | undefined {
  return (build as { status?: { phase?: BuildPhase } }).status?.phase;
}

/** The key of the pool a build names, `<namespace>/<name>`. */
export function poolKeyOf(build: KubernetesObject): string {
  const spec = (build as { spec?: { poolRef?: { name?: string; namespace?: string } } }).spec;
  return `${spec?.poolRef?.namespace ?? build.metadata?.namespace}/${spec?.poolRef?.name ?? ""}`;
}

export function buildCaches(manager: Manager, shared: SharedCaches): BuildCaches {
  const builds = manager.informer(IMAGE_BUILD_RESOURCE);
  builds.addIndex(BY_POOL, (build) => [poolKeyOf(build)]);
  const jobs = manager.informer<V1Job>(RESOURCES.job, {
    labelSelector: MANAGED_SELECTOR,
    transform: slimJob,
  });
  const pods = manager.informer<V1Pod>(RESOURCES.pod, {
    labelSelector: MANAGED_SELECTOR,
    transform: slimPod,
  });
  indexBuilderPods(pods);
  indexPlatformJobs(jobs);
  pods.addIndex(BY_JOB, (pod) => {
    const job = pod.metadata?.labels?.[JOB_NAME_LABEL] ?? pod.metadata?.labels?.["job-name"];
    return job ? [`${pod.metadata?.namespace}/${job}`] : [];
  });
  // Admission reads namespace labels (allowedNamespaces), and nothing else of them.
  const namespaces = manager.informer<V1Namespace>(RESOURCES.namespace, {
    namespaces: [],
    transform: labelsOnly,
  });
  return { ...shared, builds, jobs, pods, namespaces };
}

/** Labels the Job controller puts on pods that nothing here reads (the uid is in ownerReferences). */
const JOB_CONTROLLER_LABELS = ["batch.kubernetes.io/controller-uid", "controller-uid"];

function slimMeta(
  meta: V1ObjectMeta | undefined,
  dropLabels: readonly string[] = [],
): V1ObjectMeta {
  if (!meta) return {};
  const { managedFields: _managed, selfLink: _selfLink, ...kept } = meta;
  if (meta.labels && dropLabels.some((label) => label in (meta.labels ?? {}))) {
    const labels = { ...meta.labels };
    for (const label of dropLabels) delete labels[label];
    // The legacy job-name label duplicates batch.kubernetes.io/job-name.
    if (labels["batch.kubernetes.io/job-name"] !== undefined) delete labels["job-name"];
    kept.labels = labels;
  }
  return kept;
}

const isTerminal = (condition: V1JobCondition) =>
  (condition.type === "Complete" || condition.type === "Failed") && condition.status === "True";

/**
 * A Job as the caches keep it: metadata, the counts and times of its status and its terminal
 * condition. The pod template (most of a Job's size), the selector and the conditions that are
 * not final (SuccessCriteriaMet, FailureTarget, Suspended) are dropped.
 */
export function slimJob(job: V1Job): V1Job {
  const {
    template: _template,
    selector: _selector,
    ...spec
  } = job.spec ?? ({} as NonNullable<V1Job["spec"]>);
  const status = job.status ?? {};
  const conditions = (status.conditions ?? []).filter(isTerminal).map((condition) => ({
    type: condition.type,
    status: condition.status,
    ...(condition.reason === undefined ? {} : { reason: condition.reason }),
    ...(condition.message === undefined ? {} : { message: condition.message }),
    ...(condition.lastTransitionTime === undefined
      ? {}
      : { lastTransitionTime: condition.lastTransitionTime }),
  }));
  return {
    apiVersion: job.apiVersion,
    kind: job.kind,
    metadata: slimMeta(job.metadata),
    spec: spec as V1Job["spec"],
    status: {
      ...(status.active === undefined ? {} : { active: status.active }),
      ...(status.succeeded === undefined ? {} : { succeeded: status.succeeded }),
      ...(status.failed === undefined ? {} : { failed: status.failed }),
      ...(status.startTime === undefined ? {} : { startTime: status.startTime }),
      ...(status.completionTime === undefined ? {} : { completionTime: status.completionTime }),
      ...(conditions.length === 0 ? {} : { conditions }),
    },
  };
}

/** A container's status as observePod reads it: name and state. */
function slimContainer(status: V1ContainerStatus): V1ContainerStatus {
  const state = status.state ?? {};
  const terminated = state.terminated;
  return {
    name: status.name,
    restartCount: status.restartCount,
    state: terminated
      ? {
          terminated: {
            exitCode: terminated.exitCode,
            ...(terminated.reason === undefined ? {} : { reason: terminated.reason }),
            ...(terminated.message === undefined ? {} : { message: terminated.message }),
            ...(terminated.finishedAt === undefined ? {} : { finishedAt: terminated.finishedAt }),
          },
        }
      : state.running
        ? { running: {} }
        : {
            waiting: {
              ...(state.waiting?.reason === undefined ? {} : { reason: state.waiting.reason }),
              ...(state.waiting?.message === undefined ? {} : { message: state.waiting.message }),
            },
          },
  } as V1ContainerStatus;
}

/** Pods whose every read goes through observePod. */
const OBSERVED_COMPONENTS = new Set<string>([
  COMPONENTS.build,
  COMPONENTS.index,
  COMPONENTS.verify,
  COMPONENTS.tag,
]);

/**
 * A pod as the caches keep it. Every pod keeps its metadata, its node and its status, without
 * the spec. Build, index, verify and tag pods (read only through observePod) keep of their status
 * only the phase and each container's name and state: their conditions, addresses, images and
 * container ids are dropped, as are the Job controller's uid labels.
 */
export function slimPod(pod: V1Pod): V1Pod {
  const component = pod.metadata?.labels?.[LABELS.component];
  // A StatefulSet builder is addressed by its hostname and subdomain (cache-locality routing).
  const spec = {
    nodeName: pod.spec?.nodeName,
    ...(pod.spec?.hostname ? { hostname: pod.spec.hostname } : {}),
    ...(pod.spec?.subdomain ? { subdomain: pod.spec.subdomain } : {}),
    containers: [],
  };
  if (!component || !OBSERVED_COMPONENTS.has(component)) {
    return {
      apiVersion: pod.apiVersion,
      kind: pod.kind,
      metadata: slimMeta(pod.metadata),
      spec,
      status: pod.status,
    };
  }
  const status = pod.status ?? {};
  return {
    apiVersion: pod.apiVersion,
    kind: pod.kind,
    metadata: slimMeta(pod.metadata, JOB_CONTROLLER_LABELS),
    spec,
    status: {
      ...(status.phase === undefined ? {} : { phase: status.phase }),
      ...(status.initContainerStatuses
        ? { initContainerStatuses: status.initContainerStatuses.map(slimContainer) }
        : {}),
      ...(status.containerStatuses
        ? { containerStatuses: status.containerStatuses.map(slimContainer) }
        : {}),
    },
  };
}
