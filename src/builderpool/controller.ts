// The BuilderPool reconciler: the thin shell around the pure functions of this directory. It
// reads the pool and its children from the caches, asks what should exist, writes only the
// differences, prunes what no longer belongs and reports status.
import type {
  KubernetesObject,
  V1Deployment,
  V1Pod,
  V1Secret,
  V1StatefulSet,
} from "@kubernetes/client-node";
import type { BuilderPoolStatus } from "../api/builderpool.ts";
import {
  BUILDER_POOL_RESOURCE,
  type BuilderPool,
  parseBuilderPool,
  SpecError,
} from "../api/resources.ts";
import { sharedCaches } from "../caches.ts";
import { caSecretName, LABELS, serverSecretName } from "../naming.ts";
import { ensure, NotOwnedError, writeStatus } from "../runtime/apply.ts";
import {
  isNotFound,
  KubeApiError,
  type KubeClient,
  RESOURCES,
  type ResourceType,
} from "../runtime/client.ts";
import type {
  ReconcileContext,
  ReconcileRequest,
  ReconcileResult,
  Watched,
} from "../runtime/controller.ts";
import { deepEqual } from "../runtime/hash.ts";
import type { Informer } from "../runtime/informer.ts";
import type { Manager } from "../runtime/manager.ts";
import { type Autoscaler, DELETION_COST, type Demand } from "./autoscale.ts";
import { BUILDERS_BY_POOL, type PoolCaches, poolCaches, poolOfBuilder } from "./caches.ts";
import { ensureCertificates, type PoolCertificates, type StoredSecrets } from "./certificates.ts";
import { type KubeVersion, parseKubeVersion } from "./context.ts";
import { type DesiredPool, desiredPool, obsoleteChildren } from "./desired.ts";
import { certificateEvents, type PoolEvent, scalingEvents } from "./events.ts";
import { preserveServiceFields } from "./services.ts";
import { invalidSpecStatus, notReadyStatus, poolStatus, REASONS } from "./status.ts";
import { type UserNamespaceProblem, userNamespaceProblem } from "./userns.ts";
import { CONTAINER_NAME } from "./workload.ts";

/** Longest wait before a pool is looked at again even if nothing happens (certificate renewal). */
const MAX_REQUEUE_MS = 12 * 3_600_000;
/** How often a pool whose child name is taken by someone else's object looks again. */
const CONFLICT_RETRY_MS = 30_000;
/** How soon a scale-down held for builders' deletion costs is looked at again. */
const COSTS_SEEN_MS = 1_000;

/**
 * A create found the object already there although the cache has not shown it: the caches are
 * behind this operator's own writes, and what this reconcile derived from them may be too. A
 * 409 Conflict makes the controller retry quietly with per-key backoff, by when the watch has
 * delivered it, instead of creating every other object it does not see yet as well.
 */
function cacheBehind(type: ResourceType, object: KubernetesObject): KubeApiError {
  const message = `${type.kind} ${object.metadata?.namespace}/${object.metadata?.name} exists but is not in the cache yet; retrying`;
  return new KubeApiError(409, { reason: "Conflict", code: 409, message }, message);
}

const isInvalid = (error: unknown) => error instanceof KubeApiError && error.code === 422;

/**
 * The API server refused a child as the pool wants it (422): a field it cannot change in
 * place, typically. Retrying cannot help, so the pool reports it and says what to do.
 */
export class ChildRejectedError extends Error {
  constructor(type: ResourceType, object: KubernetesObject, cause: KubeApiError) {
    const what = `${type.kind} ${object.metadata?.namespace}/${object.metadata?.name}`;
    const hint =
      type.kind === "StatefulSet"
        ? `: a Persistent pool's cache.size and cache.storageClassName are part of its StatefulSets' volumeClaimTemplates, which cannot change in place. Restore the previous value, or delete the StatefulSet ${object.metadata?.name} to have it recreated with the new cache (its claims, and the cache on them, are deleted with it; its builders stop until the new ones run)`
        : "";
    super(`the API server refused ${what}: ${cause.message}${hint}`);
    this.name = "ChildRejectedError";
  }
}

const KIND_RESOURCES: Record<string, ResourceType> = {
  ConfigMap: RESOURCES.configMap,
  Secret: RESOURCES.secret,
  Service: RESOURCES.service,
  Deployment: RESOURCES.deployment,
  StatefulSet: RESOURCES.statefulSet,
  PodDisruptionBudget: RESOURCES.podDisruptionBudget,
  NetworkPolicy: RESOURCES.networkPolicy,
};

export interface PoolControllerOptions {
  /** The operator's --buildkit-image. */
  defaultImage: string;
  /** Where the operator's pods run, when it asks builders for their cache usage (PoolContext). */
  operatorNamespace?: string;
  workers: number;
  clusterDomain?: string;
  now?: () => Date;
  /** Sizes the architectures with spec.autoscaling from the builds' demand (autoscale.ts). */
  autoscaler?: Autoscaler;
  /**
   * What else wakes a pool: the informers whose events change an autoscaled architecture's
   * demand (ImageBuilds and their Jobs), mapped to pool keys.
   */
  demandWatches?: Watched[];
}

/**
 * How long a status change of only the queued and running counts may wait, so that a busy
 * queue costs a pool status write every few seconds, not one per build transition.
 */
export const COUNTS_SETTLE_MS = 2000;

export class PoolReconciler {
  private readonly client: KubeClient;
  private readonly manager: Manager;
  private readonly caches: PoolCaches;
  private readonly options: PoolControllerOptions;
  private serverVersion: KubeVersion | undefined;
  /** When this process last wrote each pool's status (ms), for COUNTS_SETTLE_MS. */
  private readonly statusWrites = new Map<string, number>();

  /** A deleted pool leaves nothing behind. */
  forget(pool: KubernetesObject): void {
    this.statusWrites.delete(`${pool.metadata?.namespace}/${pool.metadata?.name}`);
  }

  constructor(manager: Manager, caches: PoolCaches, options: PoolControllerOptions) {
    this.manager = manager;
    this.client = manager.client;
    this.caches = caches;
    this.options = options;
  }

  private now(): Date {
    return this.options.now?.() ?? new Date();
  }

  /** Read once: the AppArmor field depends on it, and it does not change under a running operator often enough to matter. */
  private async version(): Promise<KubeVersion> {
    this.serverVersion ??= parseKubeVersion(await this.client.request("GET", "/version"));
    return this.serverVersion;
  }

  readonly reconcile = async (
    { namespace, name }: ReconcileRequest,
    { log }: ReconcileContext,
  ): Promise<ReconcileResult | undefined> => {
    const raw = this.caches.pools.get(namespace, name);
    if (!raw || raw.metadata?.deletionTimestamp) return undefined; // children go by garbage collection
    const now = this.now();
    let pool: BuilderPool;
    try {
      pool = parseBuilderPool(raw);
    } catch (error) {
      if (error instanceof SpecError) return this.reportInvalid(raw, error, now);
      throw error;
    }

    const stored = {
      caSecret: await this.storedSecret(namespace, caSecretName(name)),
      serverSecret: await this.storedSecret(namespace, serverSecretName(name)),
    };
    const certificates = await ensureCertificates(pool, stored, {
      now,
      clusterDomain: this.options.clusterDomain,
    });
    const scale = this.options.autoscaler?.scale(pool, this.currentReplicas(pool), now);
    // A scale-down waits one round when builders' deletion costs had to be set: the
    // ReplicaSet controller ranks pods from its own cache, which must show the costs first.
    const held = scale ? await this.protectBusyBuilders(pool, scale.replicas, log) : {};
    const replicas =
      scale && Object.keys(scale.replicas).length > 0 ? { ...scale.replicas, ...held } : undefined;
    let desired: DesiredPool;
    try {
      desired = desiredPool(pool, {
        serverVersion: await this.version(),
        certHash: certificates.certHash,
        defaultImage: this.options.defaultImage,
        clusterDomain: this.options.clusterDomain,
        replicas,
        ...(this.options.operatorNamespace
          ? { operatorNamespace: this.options.operatorNamespace }
          : {}),
      });
    } catch (error) {
      if (error instanceof SpecError) return this.reportInvalid(raw, error, now);
      throw error;
    }

    const written: string[] = [];
    try {
      await this.applyChildren(raw, pool, stored, certificates, desired, written, scale?.demand);
    } catch (error) {
      if (error instanceof NotOwnedError)
        return this.reportBlocked(raw, REASONS.nameConflict, error, now, CONFLICT_RETRY_MS);
      if (error instanceof ChildRejectedError)
        return this.reportBlocked(raw, REASONS.childRejected, error, now);
      throw error;
    } finally {
      if (written.length > 0) log.info({ changed: written }, "children reconciled");
    }

    const status = poolStatus(
      pool,
      {
        workloads: this.workloads(pool),
        nodes: this.caches.nodes.list(),
        userNamespaces: this.userNamespaces(pool),
        certNotAfter: certificates.notAfter,
        replicas,
        ...(scale ? { demand: scale.demand } : {}),
      },
      now,
    );
    const settle = this.countsSettleMs(raw, status, now);
    if (settle === undefined && (await this.writePoolStatus(raw, status)) === "gone")
      return undefined;
    const renewal = Math.max(
      1000,
      Math.min(MAX_REQUEUE_MS, certificates.renewAt.getTime() - now.getTime()),
    );
    // A pending scale-down is looked at when its delay has passed: no event would wake it.
    return {
      requeueAfter: Math.min(
        renewal,
        scale?.requeueAfterMs ?? Infinity,
        settle ?? Infinity,
        Object.keys(held).length > 0 ? COSTS_SEEN_MS : Infinity,
      ),
    };
  };

  /**
   * When the new status differs from the stored one only in the queued and running counts and
   * a status was written less than COUNTS_SETTLE_MS ago: how long until it may be written.
   */
  private countsSettleMs(
    raw: KubernetesObject,
    status: BuilderPoolStatus,
    now: Date,
  ): number | undefined {
    const key = `${raw.metadata?.namespace}/${raw.metadata?.name}`;
    const previous = (raw as { status?: BuilderPoolStatus }).status;
    const withoutCounts = (value: BuilderPoolStatus | undefined) => ({
      ...value,
      architectures: (value?.architectures ?? []).map(
        ({ queued: _queued, running: _running, ...rest }) => rest,
      ),
    });
    const last = this.statusWrites.get(key);
    if (
      previous !== undefined &&
      last !== undefined &&
      now.getTime() - last < COUNTS_SETTLE_MS &&
      !deepEqual(previous, status) &&
      deepEqual(withoutCounts(previous), withoutCounts(status))
    )
      return COUNTS_SETTLE_MS - (now.getTime() - last);
    if (!deepEqual(previous ?? {}, status)) this.statusWrites.set(key, now.getTime());
    return undefined;
  }

  /**
   * Before an autoscaled Deployment scales down: each builder's pod-deletion-cost set to the
   * builds running on it, so the ReplicaSet removes idle builders first. (A StatefulSet always
   * removes its highest ordinals; nothing to set there.) Returns the architectures whose
   * scale-down waits, with the replicas they keep meanwhile: those whose costs were just set,
   * until the next round finds them set.
   */
  private async protectBusyBuilders(
    pool: BuilderPool,
    replicas: Readonly<Record<string, number>>,
    log: ReconcileContext["log"],
  ): Promise<Record<string, number>> {
    const held: Record<string, number> = {};
    if (pool.spec.cache.type === "Persistent" || !this.options.autoscaler) return held;
    const current = this.currentReplicas(pool);
    for (const [arch, wanted] of Object.entries(replicas)) {
      const now = current[arch];
      if (now === undefined || wanted >= now) continue;
      const costs = this.options.autoscaler.deletionCostsFor(pool, arch);
      if (costs.length > 0) held[arch] = now;
      for (const { name, cost } of costs) {
        try {
          await this.client.patch(RESOURCES.pod, pool.metadata.namespace, name, {
            metadata: { annotations: { [DELETION_COST]: cost } },
          });
          log.debug({ pod: name, cost }, "builder deletion cost set");
        } catch (error) {
          if (!isNotFound(error)) throw error;
        }
      }
    }
    return held;
  }

  /** The replicas of each architecture's workload as cached (undefined: none yet). */
  private currentReplicas(pool: BuilderPool): Record<string, number | undefined> {
    return Object.fromEntries(
      Object.entries(this.workloads(pool)).map(([arch, workload]) => [
        arch,
        workload?.spec?.replicas,
      ]),
    );
  }

  /**
   * Creates or replaces what differs, then deletes what no longer belongs. Each Event is
   * recorded as soon as the write it reports has succeeded, so a reconcile that fails halfway
   * neither loses it (the next one finds nothing left to do) nor reports what did not happen.
   */
  private async applyChildren(
    raw: KubernetesObject,
    pool: BuilderPool,
    stored: StoredSecrets,
    certificates: PoolCertificates,
    desired: DesiredPool,
    written: string[],
    demand?: Readonly<Record<string, Demand>>,
  ): Promise<void> {
    const namespace = pool.metadata.namespace;
    const workloadsBefore = this.workloads(pool);
    const { issued } = certificates;
    const eventsOnWrite = new Map<KubernetesObject, PoolEvent[]>([
      [certificates.caSecret, issued.ca ? certificateEvents({ ca: issued.ca }) : []],
      [
        certificates.serverSecret,
        issued.server ? certificateEvents({ server: issued.server }) : [],
      ],
      ...desired.architectures.map(
        (entry) =>
          [entry.workload.object, scalingEvents([entry], workloadsBefore, demand)] as const,
      ),
    ]);
    const children: [KubernetesObject, KubernetesObject | undefined][] = [
      [certificates.caSecret, stored.caSecret],
      [certificates.serverSecret, stored.serverSecret],
      ...desired.objects.map(
        (object) =>
          [
            object,
            this.cacheFor(object.kind as string).get(namespace, object.metadata?.name as string),
          ] as [KubernetesObject, KubernetesObject | undefined],
      ),
    ];
    for (const [object, current] of children) {
      const type = KIND_RESOURCES[object.kind as string] as ResourceType;
      const result = await ensure(this.client, type, object, current, {
        owner: raw,
        ...(object.kind === "Service"
          ? {
              preserve: preserveServiceFields as (
                current: KubernetesObject,
                desired: KubernetesObject,
              ) => KubernetesObject,
            }
          : {}),
      }).catch((error: unknown) => {
        if (isInvalid(error)) throw new ChildRejectedError(type, object, error as KubeApiError);
        throw error;
      });
      if (result === "exists") throw cacheBehind(type, object);
      if (result === "unchanged") continue;
      written.push(`${object.kind}/${object.metadata?.name}`);
      for (const event of eventsOnWrite.get(object) ?? [])
        this.manager.events.record(raw, event.type, event.reason, event.message);
    }
    for (const obsolete of obsoleteChildren(pool, desired.objects, this.owned(raw))) {
      await this.client.delete(
        KIND_RESOURCES[obsolete.kind as string] as ResourceType,
        namespace,
        obsolete.metadata?.name as string,
        { propagationPolicy: "Background" },
      );
      written.push(`-${obsolete.kind}/${obsolete.metadata?.name}`);
    }
  }

  /**
   * A child cannot be written as desired until a person acts: its name is taken by an object
   * this pool does not control (NameConflict; that object is outside the caches, so its
   * deletion wakes nothing and the pool looks again after `retryMs`), or the API server
   * refuses it (ChildRejected; a change of the pool or of the child wakes the controller).
   */
  private async reportBlocked(
    raw: KubernetesObject,
    reason: string,
    error: Error,
    now: Date,
    retryMs?: number,
  ): Promise<ReconcileResult | undefined> {
    const wrote = await this.writePoolStatus(
      raw,
      notReadyStatus(raw, { reason, message: error.message }, now),
    );
    if (wrote === true) this.manager.events.record(raw, "Warning", reason, error.message);
    return retryMs === undefined || wrote === "gone" ? undefined : { requeueAfter: retryMs };
  }

  private async reportInvalid(
    raw: KubernetesObject,
    error: SpecError,
    now: Date,
  ): Promise<undefined> {
    const wrote = await this.writePoolStatus(raw, invalidSpecStatus(raw, error, now));
    if (wrote === true)
      this.manager.events.record(raw, "Warning", "InvalidSpec", error.issues.join("; "));
    return undefined;
  }

  /**
   * writeStatus, except that a pool deleted meanwhile (404) is nothing to report: a
   * reconcile that read the pool just before its deletion ends quietly, and the deletion's
   * own event finds it gone.
   */
  private async writePoolStatus(
    raw: KubernetesObject,
    status: BuilderPoolStatus,
  ): Promise<boolean | "gone"> {
    try {
      return await writeStatus(
        this.client,
        BUILDER_POOL_RESOURCE,
        raw as KubernetesObject & { status?: unknown },
        status,
      );
    } catch (error) {
      if (isNotFound(error)) return "gone";
      throw error;
    }
  }

  /**
   * A certificate Secret from the cache or, when the cache has none, from the API server. A
   * Secret this operator created moments ago may not have reached the cache yet; issuing a
   * new CA then (its create fails, AlreadyExists) would put the hash of a certificate nobody
   * keeps on the builders' pod template and roll them, on every reconcile until the cache
   * catches up. The read costs a GET only while the Secret is missing.
   */
  private async storedSecret(namespace: string, name: string): Promise<V1Secret | undefined> {
    return (
      this.caches.secrets.get(namespace, name) ??
      (await this.client.get<V1Secret>(RESOURCES.secret, namespace, name))
    );
  }

  private cacheFor(kind: string): Informer<KubernetesObject> {
    const caches: Record<string, Informer<KubernetesObject>> = {
      ConfigMap: this.caches.configMaps,
      Secret: this.caches.secrets,
      Service: this.caches.services,
      Deployment: this.caches.deployments,
      StatefulSet: this.caches.statefulSets,
      PodDisruptionBudget: this.caches.podDisruptionBudgets,
      NetworkPolicy: this.caches.networkPolicies,
    };
    const cache = caches[kind];
    if (!cache) throw new Error(`no cache for ${kind}`);
    return cache;
  }

  /** Per architecture, a builder that crash-loops for want of user namespaces (userns.ts). */
  private userNamespaces(pool: BuilderPool): Record<string, UserNamespaceProblem | undefined> {
    const builders = this.caches.pods.byIndex(
      BUILDERS_BY_POOL,
      `${pool.metadata.namespace}/${pool.metadata.name}`,
    );
    return Object.fromEntries(
      pool.spec.architectures.map((arch) => [
        arch.name,
        userNamespaceProblem(
          builders.filter((pod) => pod.metadata?.labels?.[LABELS.arch] === arch.name),
          CONTAINER_NAME,
        ),
      ]),
    );
  }

  private workloads(pool: BuilderPool): Record<string, V1Deployment | V1StatefulSet | undefined> {
    const out: Record<string, V1Deployment | V1StatefulSet | undefined> = {};
    const persistent = pool.spec.cache.type === "Persistent";
    for (const arch of pool.spec.architectures) {
      const name = `${pool.metadata.name}-${arch.name}`;
      out[arch.name] = persistent
        ? this.caches.statefulSets.get(pool.metadata.namespace, name)
        : this.caches.deployments.get(pool.metadata.namespace, name);
    }
    return out;
  }

  private owned(pool: KubernetesObject): KubernetesObject[] {
    const uid = pool.metadata?.uid as string;
    return [
      this.caches.deployments,
      this.caches.statefulSets,
      this.caches.services,
      this.caches.podDisruptionBudgets,
    ].flatMap((cache) => cache.byIndex("owner", uid));
  }
}

/** Registers the BuilderPool controller on the manager. */
export function setupPoolController(
  manager: Manager,
  options: PoolControllerOptions,
  caches = poolCaches(manager, sharedCaches(manager)),
): PoolReconciler {
  const reconciler = new PoolReconciler(manager, caches, options);
  manager.addController({
    name: "builderpool",
    for: caches.pools,
    owns: [
      caches.secrets,
      caches.configMaps,
      caches.services,
      caches.deployments,
      caches.statefulSets,
      caches.podDisruptionBudgets,
      caches.networkPolicies,
    ],
    // A node joining or leaving can make an architecture schedulable or not.
    watches: [
      {
        informer: caches.nodes,
        map: () =>
          caches.pools.list().map((pool) => `${pool.metadata?.namespace}/${pool.metadata?.name}`),
      },
      // A builder that starts crash-looping for want of user namespaces changes no workload's
      // status (it was not ready before either): its pod's termination says why.
      {
        informer: caches.pods,
        map: poolOfBuilder,
        changed: (previous, current) =>
          userNamespaceProblem([previous as V1Pod], CONTAINER_NAME)?.message !==
          userNamespaceProblem([current as V1Pod], CONTAINER_NAME)?.message,
      },
      ...(options.demandWatches ?? []),
    ],
    reconcile: reconciler.reconcile,
    workers: options.workers,
  });
  caches.pools.addHandlers({
    onDelete: (pool) => {
      options.autoscaler?.forget(pool);
      reconciler.forget(pool);
    },
  });
  return reconciler;
}
