// The ImageBuild controller's wiring (kubebuilder's SetupWithManager): which cache events wake
// which builds, what keeps the queues current, and what wakes an autoscaled pool.
import type { KubernetesObject, V1Job } from "@kubernetes/client-node";
import { isTerminal } from "../api/imagebuild-status.ts";
import { COMPONENTS, caSecretName, LABELS } from "../naming.ts";
import { specOrMetaChanged, type Watched } from "../runtime/controller.ts";
import { type Informer, keyOf } from "../runtime/informer.ts";
import type { Manager } from "../runtime/manager.ts";
import { isReadyBuilder, poolOfBuilderPod } from "./builders.ts";
import { type BuildCaches, BY_POOL, phaseOf, poolKeyOf } from "./caches.ts";
import { type BuildControllerOptions, BuildReconciler, type BuildState } from "./controller.ts";
import { isFinished, observeJob } from "./observe.ts";
import { standsInLine } from "./queue.ts";

/** Registers the ImageBuild controller on the manager. */
export function setupBuildController(
  manager: Manager,
  options: BuildControllerOptions,
  state: BuildState,
): BuildReconciler {
  const { caches, queues } = state;
  const reconciler = new BuildReconciler(manager, state, options);
  caches.builds.addHandlers({
    onUpdate: (_previous, current) => reconciler.status.forgetWritten(current),
    onDelete: (object) => reconciler.forgetDeleted(object),
  });
  // The queues are kept between reconciles: whatever changes a build's slot requests marks it.
  caches.builds.addHandlers({
    onAdd: (build) => queues.changed(keyOf(build)),
    onUpdate: (_previous, build) => queues.changed(keyOf(build)),
    onDelete: (build) => queues.changed(keyOf(build)),
  });
  const ownerBuilds = (job: KubernetesObject) => {
    for (const reference of job.metadata?.ownerReferences ?? [])
      if (reference.kind === "ImageBuild")
        queues.changed(`${job.metadata?.namespace}/${reference.name}`);
  };
  caches.jobs.addHandlers({
    onAdd: ownerBuilds,
    onUpdate: (previous, current) => {
      ownerBuilds(previous);
      ownerBuilds(current);
    },
    onDelete: ownerBuilds,
  });
  caches.pools.addHandlers({
    onAdd: (pool) => queues.poolChanged(keyOf(pool)),
    // Only what the builds read (spec, labels): not the pool's own status writes.
    onUpdate: (previous, pool) => {
      if (specOrMetaChanged(previous, pool)) queues.poolChanged(keyOf(pool));
    },
    onDelete: (pool) => {
      queues.poolChanged(keyOf(pool));
      reconciler.poolDeleted(keyOf(pool));
    },
  });
  for (const cache of [
    caches.jobs,
    caches.secrets,
    caches.configMaps,
  ] as Informer<KubernetesObject>[]) {
    cache.addHandlers({
      onAdd: (object) => reconciler.observed(object),
      onUpdate: (_previous, object) => reconciler.observed(object),
      onDelete: (object) => reconciler.observed(object),
    });
  }
  // A pool's change (capacity, architectures, validity) concerns its unfinished builds.
  const buildsOfPool = (pool: KubernetesObject) =>
    caches.builds
      .byIndex(BY_POOL, keyOf(pool))
      .filter((build) => !isTerminal(phaseOf(build)))
      .map((build) => keyOf(build));
  const controller = manager.addController({
    name: "imagebuild",
    for: caches.builds,
    owns: [caches.secrets, caches.configMaps, caches.jobs],
    watches: [
      {
        informer: caches.pods,
        map: (pod) => {
          const build = pod.metadata?.labels?.[LABELS.build];
          return build ? [`${pod.metadata?.namespace}/${build}`] : [];
        },
      },
      { informer: caches.pools, map: buildsOfPool, changed: specOrMetaChanged },
      // A new pool's CA Secret lets its builds get their client certificates.
      {
        informer: caches.secrets,
        map: (secret) => {
          const pool = secret.metadata?.labels?.[LABELS.pool];
          return pool && secret.metadata?.name === caSecretName(pool)
            ? caches.builds
                .byIndex(BY_POOL, `${secret.metadata?.namespace}/${pool}`)
                .filter((build) => phaseOf(build) === "Pending")
                .map((build) => keyOf(build))
            : [];
        },
      },
    ],
    reconcile: reconciler.reconcile,
    workers: options.workers,
  });

  // The queue moves when a slot frees or a build leaves the line; then the builds at its head
  // are woken (the queue decides who starts; this only wakes them).
  const wakeWaiting = (poolKey: string) => {
    for (const key of queues.head(poolKey)) controller.enqueue(key);
  };
  // A builder that becomes ready (or stops being so) changes where builds go, and lets builds
  // that wait for an autoscaled architecture's first builder start.
  caches.pods.addHandlers({
    onAdd: (pod) => {
      const pool = poolOfBuilderPod(pod);
      if (pool && isReadyBuilder(pod)) wakeWaiting(pool);
    },
    onUpdate: (previous, current) => {
      const pool = poolOfBuilderPod(current);
      if (pool && isReadyBuilder(previous) !== isReadyBuilder(current)) wakeWaiting(pool);
    },
    onDelete: (pod) => {
      const pool = poolOfBuilderPod(pod);
      if (pool && isReadyBuilder(pod)) wakeWaiting(pool);
    },
  });
  caches.jobs.addHandlers({
    // A Job holds its slot until it finishes or is gone.
    onUpdate: (previous, current) => {
      const pool = poolOfJob(current);
      if (pool && holdsSlot(previous) && !holdsSlot(current)) wakeWaiting(pool);
    },
    onDelete: (job) => {
      const pool = poolOfJob(job);
      if (pool && holdsSlot(job)) wakeWaiting(pool);
    },
  });
  caches.builds.addHandlers({
    // A build that leaves the line (not admitted after all, failed, cancelled, deleted) lets
    // the builds behind it move up. Building → Assembling is no such move: its last Job
    // finishing already woke them.
    onUpdate: (previous, current) => {
      if (standsInLine(previous) && !standsInLine(current) && phaseOf(current) !== "Assembling")
        wakeWaiting(poolKeyOf(current));
    },
    onDelete: (build) => {
      if (standsInLine(build)) wakeWaiting(poolKeyOf(build));
    },
  });
  return reconciler;
}

/**
 * What changes the demand of a pool's autoscaled architectures, for the pool controller to be
 * woken by: a build that stands in line (arriving, moving, leaving it), and a platform Job
 * (created, finished, gone). Pools without autoscaling are not woken.
 */
export function demandWatches(caches: BuildCaches): Watched[] {
  const ifAutoscaled = (poolKey: string | undefined): string[] => {
    if (!poolKey) return [];
    const pool = caches.pools.getByKey(poolKey) as
      | { spec?: { architectures?: { autoscaling?: unknown }[] } }
      | undefined;
    return pool?.spec?.architectures?.some((arch) => arch.autoscaling) ? [poolKey] : [];
  };
  return [
    // Progress within the line (a queue position, a status message) is no change of demand.
    {
      informer: caches.builds,
      map: (build) => (standsInLine(build) ? ifAutoscaled(poolKeyOf(build)) : []),
      changed: (previous, current) => standsInLine(previous) !== standsInLine(current),
    },
    {
      informer: caches.jobs,
      map: (job) =>
        job.metadata?.labels?.[LABELS.component] === COMPONENTS.build
          ? ifAutoscaled(poolOfJob(job))
          : [],
      changed: (previous, current) => holdsSlot(previous) !== holdsSlot(current),
    },
  ];
}

/** A platform Job holds its slot until it finishes (or is gone). */
function holdsSlot(job: KubernetesObject): boolean {
  return !isFinished(observeJob(job as V1Job, []));
}

/** The pool key (`<namespace>/<name>`) a Job's labels name. */
function poolOfJob(job: KubernetesObject): string | undefined {
  const labels = job.metadata?.labels ?? {};
  const pool = labels[LABELS.pool];
  return pool ? `${labels[LABELS.poolNamespace] ?? job.metadata?.namespace}/${pool}` : undefined;
}
