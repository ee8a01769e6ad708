// What the build reconciler reads about a pool's builders to route a platform: the builder pods
// of an architecture (from the operator's pods cache, which holds them by their managed-by
// label) and the unfinished platform Jobs routed to each. The decision itself is routing.ts.
import type { KubernetesObject, V1Job, V1Pod } from "@kubernetes/client-node";
import { capacityOf } from "../api/builderpool.ts";
import type { BuilderPool, ImageBuild } from "../api/resources.ts";
import { type BuilderLoad, DELETION_COST } from "../builderpool/autoscale.ts";
import { ANNOTATIONS, BUILDKIT_PORT, COMPONENTS, headlessServiceName, LABELS } from "../naming.ts";
import type { Informer } from "../runtime/informer.ts";
import type { BuildPlan, PlatformTarget } from "./admission.ts";
import { builderEndpoint } from "./argv.ts";
import { isFinished, observeJob } from "./observe.ts";
import { type SlotVerdict, slotKey } from "./queue.ts";
import {
  type BuilderPod,
  builderPodTarget,
  defaultCacheKey,
  type Route,
  routePlatform,
} from "./routing.ts";

/** Builder pods by `<pool namespace>/<pool>/<arch>`. */
export const BY_BUILDERS = "builders";
/**
 * Unfinished platform Jobs by the builder pod they were routed to:
 * `<pool namespace>/<pool>/<arch>/<pod>` (routeKey). Counting one pod's builds is then a set's
 * size, not a pass over every running Job of the architecture for each reconcile.
 */
export const BY_ROUTE = "route";

export const routeKey = (architecture: string, pod: string) => `${architecture}/${pod}`;

export const architectureKey = (namespace: string, pool: string, arch: string) =>
  `${namespace}/${pool}/${arch}`;

/** The index of builder pods (component builder, with the pool and arch labels). */
export function indexBuilderPods(pods: Informer<V1Pod>): void {
  pods.addIndex(BY_BUILDERS, (pod) => {
    const labels = pod.metadata?.labels ?? {};
    if (labels[LABELS.component] !== COMPONENTS.builder) return [];
    const pool = labels[LABELS.pool];
    const arch = labels[LABELS.arch];
    return pool && arch ? [architectureKey(pod.metadata?.namespace ?? "", pool, arch)] : [];
  });
}

/**
 * The index of unfinished platform Jobs by the builder pod they were routed to. Finished ones
 * leave it (the informer indexes each version anew), so routing reads what runs, not every
 * Job kept until its build's TTL.
 */
export function indexPlatformJobs(jobs: Informer<V1Job>): void {
  jobs.addIndex(BY_ROUTE, (job) => {
    const labels = job.metadata?.labels ?? {};
    if (labels[LABELS.component] !== COMPONENTS.build) return [];
    const pod = job.metadata?.annotations?.[ANNOTATIONS.builderPod];
    const pool = labels[LABELS.pool];
    const arch = labels[LABELS.arch];
    if (!pod || !pool || !arch || isFinished(observeJob(job, []))) return [];
    const namespace = labels[LABELS.poolNamespace] ?? job.metadata?.namespace ?? "";
    return [routeKey(architectureKey(namespace, pool, arch), pod)];
  });
}

/** A builder that can take a build: running, Ready, not being deleted. */
export function isReadyBuilder(pod: V1Pod): boolean {
  if (pod.metadata?.deletionTimestamp || pod.status?.phase !== "Running") return false;
  return (pod.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
}

/** The key a build is routed by: spec.cacheKey, else what its source makes likely to share. */
export function cacheKeyOf(build: ImageBuild): string {
  const { spec } = build;
  if (spec.cacheKey !== undefined) return `key:${spec.cacheKey}`;
  return defaultCacheKey({
    ...(spec.source.git ? { gitUrl: spec.source.git.url } : {}),
    ...(spec.source.git?.subPath ? { subPath: spec.source.git.subPath } : {}),
    dockerfile: spec.dockerfile,
    ...(spec.target ? { target: spec.target } : {}),
    ...(spec.source.inline ? { inlineDockerfile: spec.source.inline.dockerfile } : {}),
  });
}

export interface RoutingCaches {
  pods: Informer<V1Pod>;
  jobs: Informer<V1Job>;
}

/**
 * The builder pods of one pool architecture with the builds routed to each: unfinished
 * platform Jobs in the cache that name the pod, plus `expected` (pod names of Jobs this
 * process created that the cache does not show yet).
 */
export function builderPodsOf(
  caches: RoutingCaches,
  pool: { namespace: string; name: string },
  arch: string,
  expected: readonly string[] = [],
): BuilderPod[] {
  const key = architectureKey(pool.namespace, pool.name, arch);
  const expectedOn = new Map<string, number>();
  for (const pod of expected) expectedOn.set(pod, (expectedOn.get(pod) ?? 0) + 1);
  const headless = headlessServiceName(pool.name, arch);
  return caches.pods
    .byIndex(BY_BUILDERS, key)
    .map((pod) => {
      const target = builderPodTarget(
        {
          ...(pod.spec?.hostname ? { hostname: pod.spec.hostname } : {}),
          ...(pod.spec?.subdomain ? { subdomain: pod.spec.subdomain } : {}),
          ...(pod.status?.podIP ? { ip: pod.status.podIP } : {}),
        },
        headless,
        pool.namespace,
      );
      const name = pod.metadata?.name ?? "";
      return {
        name,
        ready: isReadyBuilder(pod),
        ...(target ? { host: target.host } : {}),
        ...(target?.serverName ? { serverName: target.serverName } : {}),
        running:
          caches.jobs.countByIndex(BY_ROUTE, routeKey(key, name)) + (expectedOn.get(name) ?? 0),
      };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * Routes for the platforms of a build that may start now (their slot is free and they have
 * no Job): by slug. Platforms already running keep the builder their Job names.
 */
export function routesFor(
  build: ImageBuild,
  plan: BuildPlan,
  pool: BuilderPool,
  verdicts: ReadonlyMap<string, SlotVerdict>,
  hasJob: (target: PlatformTarget) => boolean,
  podsOf: (arch: string) => BuilderPod[],
): Record<string, Route> {
  const key = cacheKeyOf(build);
  const routes: Record<string, Route> = {};
  for (const target of plan.targets) {
    if (hasJob(target) || !verdicts.get(slotKey(build.metadata, target.slug))?.start) continue;
    const arch = pool.spec.architectures.find((entry) => entry.name === target.architecture);
    const service = builderEndpoint(plan, target);
    routes[target.slug] = routePlatform({
      key,
      architecture: target.architecture,
      pods: podsOf(target.architecture),
      capacity: capacityOf(pool.spec, target.architecture),
      ...(arch?.autoscaling
        ? {
            autoscaling: {
              maxReplicas: arch.autoscaling.maxReplicas,
              buildsPerReplica: arch.autoscaling.buildsPerReplica,
            },
          }
        : {}),
      service: { address: service.address, serverName: service.serverName },
      port: BUILDKIT_PORT,
    });
  }
  return routes;
}

/** How long a routed Job is counted on its builder before the Jobs cache shows it. */
const ROUTED_MS = 30_000;

/**
 * Platform Jobs this process routed to a builder pod that its Jobs cache may not show yet, so
 * that the next routing counts them on their builder (client-go's expectations, for routes).
 * Recorded when the decision is made, before the create is sent: reconciles of other builds
 * on other workers that run meanwhile see them too.
 */
export class RoutedJobs {
  private readonly jobs = new Map<string, { key: string; pod: string; at: number }>();
  private readonly now: () => number;

  constructor(now: () => number = Date.now) {
    this.now = now;
  }

  add(job: KubernetesObject): void {
    const labels = job.metadata?.labels ?? {};
    const pod = job.metadata?.annotations?.[ANNOTATIONS.builderPod];
    const [pool, arch] = [labels[LABELS.pool], labels[LABELS.arch]];
    if (!pod || !pool || !arch) return;
    const at = this.now();
    for (const [name, entry] of this.jobs) if (at - entry.at > ROUTED_MS) this.jobs.delete(name);
    const namespace = labels[LABELS.poolNamespace] ?? job.metadata?.namespace ?? "";
    this.jobs.set(`${job.metadata?.namespace}/${job.metadata?.name}`, {
      key: architectureKey(namespace, pool, arch),
      pod,
      at,
    });
  }

  /** A Job whose create failed: it runs nowhere. */
  forget(job: KubernetesObject): void {
    this.jobs.delete(`${job.metadata?.namespace}/${job.metadata?.name}`);
  }

  /** The builder pods of the routed Jobs of a pool architecture that `cached` does not show. */
  podsOf(key: string, cached: (namespace: string, name: string) => boolean): string[] {
    const now = this.now();
    const pods: string[] = [];
    for (const [job, entry] of this.jobs) {
      if (entry.key !== key) continue;
      const [namespace, name] = job.split("/") as [string, string];
      if (now - entry.at > ROUTED_MS || cached(namespace, name)) this.jobs.delete(job);
      else pods.push(entry.pod);
    }
    return pods;
  }
}

/**
 * Each pool architecture's builder pods with the builds routed to each, those this process
 * created and the Jobs cache does not show yet included: what routing reads, and the
 * autoscaler before it scales an architecture down.
 */
export class Builders {
  /** Platform Jobs this process routed to a builder pod, until the Jobs cache shows them. */
  readonly routed = new RoutedJobs();
  private readonly caches: RoutingCaches;

  constructor(caches: RoutingCaches) {
    this.caches = caches;
  }

  /** The builder pods of a pool architecture, with the platform Jobs routed to each. */
  podsOf(pool: BuilderPool, arch: string): BuilderPod[] {
    const key = architectureKey(pool.metadata.namespace, pool.metadata.name, arch);
    return builderPodsOf(
      this.caches,
      { namespace: pool.metadata.namespace, name: pool.metadata.name },
      arch,
      this.routed.podsOf(
        key,
        (namespace, name) => this.caches.jobs.get(namespace, name) !== undefined,
      ),
    );
  }

  /** An architecture's builder pods with the builds running on each, for its scale-down. */
  load(pool: BuilderPool, arch: string): BuilderLoad[] {
    return this.podsOf(pool, arch).map((builder) => {
      const cost = this.caches.pods.get(pool.metadata.namespace, builder.name)?.metadata
        ?.annotations?.[DELETION_COST];
      return { name: builder.name, running: builder.running, ...(cost ? { cost } : {}) };
    });
  }
}

/** The pool key (`<namespace>/<name>`) of a builder pod, or undefined for other pods. */
export function poolOfBuilderPod(pod: KubernetesObject): string | undefined {
  const labels = pod.metadata?.labels ?? {};
  if (labels[LABELS.component] !== COMPONENTS.builder || !labels[LABELS.pool]) return undefined;
  return `${pod.metadata?.namespace}/${labels[LABELS.pool]}`;
}
