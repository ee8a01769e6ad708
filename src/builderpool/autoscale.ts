// Builders that scale with the queue. An architecture with `autoscaling` is sized from its
// demand, the platform builds that stand in its queue plus those running (the ImageBuild
// controller's queue, build/queue.ts, computes both) up to the architecture's slots:
// ceil(demand / buildsPerReplica), clamped to [minReplicas, maxReplicas]. Up at once; down only once the demand has stayed
// lower for scaleDownDelay, and then to the most it asked for during that time (the
// stabilization window of the HorizontalPodAutoscaler), so demand that comes and goes does not
// make builders come and go. The first queued build of an idle architecture wakes it.
//
// The policy (desiredReplicas) is pure; the Autoscaler keeps its memory (since when demand has
// been lower) per pool architecture, in this process only: a restarted operator starts the
// delay anew, which postpones a scale-down and never hastens one.
import { type ArchitectureSpec, capacityOf } from "../api/builderpool.ts";
import { parseDuration } from "../api/meta.ts";
import type { BuilderPool } from "../api/resources.ts";

export interface Demand {
  /** Platforms without a Job that stand in the architecture's queue. */
  queued: number;
  /** Platform Jobs that have not finished. */
  running: number;
}

type Autoscaling = NonNullable<ArchitectureSpec["autoscaling"]>;

/**
 * The demand builders can serve: no more builds run at once on an architecture than its
 * slots (`maxConcurrentBuilds`), so builds queued past them ask for no builder; Jobs that
 * already run keep theirs even when the slots shrank.
 */
export function servableDemand(demand: Demand, slots: number): Demand {
  return {
    queued: Math.min(demand.queued, Math.max(0, slots - demand.running)),
    running: demand.running,
  };
}

/** What the demand alone asks for. */
export function targetReplicas(autoscaling: Autoscaling, demand: Demand): number {
  const wanted = Math.ceil((demand.queued + demand.running) / autoscaling.buildsPerReplica);
  return Math.min(autoscaling.maxReplicas, Math.max(autoscaling.minReplicas, wanted));
}

/** The memory of one architecture between decisions. */
export interface ScaleMemory {
  /** Replicas last decided. */
  replicas?: number;
  /** Since when (ms) the target has been below the replicas, and the most it was since. */
  lowSince?: number;
  peak?: number;
}

export interface ScaleDecision {
  replicas: number;
  memory: ScaleMemory;
  /** When a scale-down waits: how long until it may happen. */
  requeueAfterMs?: number;
}

/**
 * The replicas for an autoscaled architecture. `current` is what runs now (the last decision,
 * else the workload's spec.replicas; undefined before the workload exists).
 */
export function desiredReplicas(
  autoscaling: Autoscaling,
  demand: Demand,
  current: number | undefined,
  memory: ScaleMemory,
  nowMs: number,
): ScaleDecision {
  const target = targetReplicas(autoscaling, demand);
  if (current === undefined) return { replicas: target, memory: { replicas: target } };
  // A changed spec moves the bounds at once.
  const now = Math.min(autoscaling.maxReplicas, Math.max(autoscaling.minReplicas, current));
  if (target >= now) return { replicas: target, memory: { replicas: target } };
  const lowSince = memory.lowSince ?? nowMs;
  const peak = Math.max(memory.peak ?? target, target);
  const delay = parseDuration(autoscaling.scaleDownDelay);
  const waited = nowMs - lowSince;
  if (waited < delay) {
    return {
      replicas: now,
      memory: { replicas: now, lowSince, peak },
      requeueAfterMs: delay - waited,
    };
  }
  // Down to the most the demand asked for while it stayed lower; if that is still above the
  // target, the next delay starts now.
  const replicas = Math.min(now, peak);
  if (replicas > target) {
    return {
      replicas,
      memory: { replicas, lowSince: nowMs, peak: target },
      requeueAfterMs: delay,
    };
  }
  return { replicas, memory: { replicas } };
}

export interface PoolScale {
  /** Replicas per autoscaled architecture. */
  replicas: Record<string, number>;
  /** The demand each autoscaled architecture was sized from. */
  demand: Record<string, Demand>;
  /** The earliest pending scale-down. */
  requeueAfterMs?: number;
}

/**
 * Which builder a ReplicaSet removes when it scales down is its own choice: among Ready pods,
 * the lowest `controller.kubernetes.io/pod-deletion-cost` first, then the newest. Before an
 * autoscaled Deployment scales down, each builder's cost is set to the builds running on it,
 * so idle builders go first and a builder in the middle of a build stays when it can.
 */
export const DELETION_COST = "controller.kubernetes.io/pod-deletion-cost";

/** A builder pod, the platform builds routed to it that run, and its deletion cost as set. */
export interface BuilderLoad {
  name: string;
  running: number;
  cost?: string;
}

/** The deletion costs to set (those that differ from the builds running on each builder). */
export function deletionCosts(builders: readonly BuilderLoad[]): { name: string; cost: string }[] {
  return builders
    .filter((builder) => (builder.cost ?? "0") !== String(builder.running))
    .map((builder) => ({ name: builder.name, cost: String(builder.running) }));
}

export interface AutoscalerSources {
  /** The demand per architecture; undefined while it cannot tell (no builds' caches). */
  demand: (pool: BuilderPool) => Readonly<Record<string, Demand>> | undefined;
  /** The builder pods of an architecture with the builds running on each. */
  builders?: (pool: BuilderPool, arch: string) => readonly BuilderLoad[];
}

/** Sizes the autoscaled architectures of pools from a demand source; remembers what it decided. */
export class Autoscaler {
  private readonly sources: AutoscalerSources;
  private readonly memory = new Map<string, ScaleMemory>();

  constructor(sources: AutoscalerSources) {
    this.sources = sources;
  }

  /** The deletion costs to set on an architecture's builders before it scales down. */
  deletionCostsFor(pool: BuilderPool, arch: string): { name: string; cost: string }[] {
    return deletionCosts(this.sources.builders?.(pool, arch) ?? []);
  }

  /**
   * The replicas of the pool's autoscaled architectures; `current` holds the replicas of each
   * architecture's workload as read (undefined when it does not exist yet).
   */
  scale(
    pool: BuilderPool,
    current: Readonly<Record<string, number | undefined>>,
    now: Date,
  ): PoolScale {
    const out: PoolScale = { replicas: {}, demand: {} };
    const prefix = `${pool.metadata.uid ?? `${pool.metadata.namespace}/${pool.metadata.name}`}/`;
    const scaled = pool.spec.architectures.filter((arch) => arch.autoscaling);
    // Architectures no longer autoscaled, or no longer in the pool, leave nothing behind.
    const kept = new Set(scaled.map((arch) => `${prefix}${arch.name}`));
    for (const key of this.memory.keys())
      if (key.startsWith(prefix) && !kept.has(key)) this.memory.delete(key);
    if (scaled.length === 0) return out;
    const demand = this.sources.demand(pool);
    for (const arch of scaled) {
      const autoscaling = arch.autoscaling as Autoscaling;
      const key = `${prefix}${arch.name}`;
      const remembered = this.memory.get(key) ?? {};
      const seen = demand?.[arch.name] ?? { queued: 0, running: 0 };
      const decision = desiredReplicas(
        autoscaling,
        servableDemand(seen, capacityOf(pool.spec, arch.name)),
        remembered.replicas ?? current[arch.name],
        remembered,
        now.getTime(),
      );
      this.memory.set(key, decision.memory);
      out.replicas[arch.name] = decision.replicas;
      out.demand[arch.name] = seen;
      if (decision.requeueAfterMs !== undefined)
        out.requeueAfterMs = Math.min(out.requeueAfterMs ?? Infinity, decision.requeueAfterMs);
    }
    return out;
  }

  /** A deleted pool leaves nothing behind. */
  forget(pool: { metadata?: { uid?: string } }): void {
    const prefix = `${pool.metadata?.uid}/`;
    for (const key of this.memory.keys()) if (key.startsWith(prefix)) this.memory.delete(key);
  }
}
