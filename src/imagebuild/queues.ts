// Every pool's queue, kept between reconciles (queue-index.ts) and brought up to date from the
// caches before it is read: the build reconciler reads a build's place from it, the pool's
// autoscaler its demand, and the wake-ups its head. One instance serves all three, so they
// never disagree about who is waiting.
import type { KubernetesObject } from "@kubernetes/client-node";
import type { BuilderPool, ImageBuild } from "../api/resources.ts";
import { parseBuilderPool, parseImageBuild } from "../api/resources.ts";
import type { Demand } from "../builderpool/autoscale.ts";
import { BY_OWNER, keyOf } from "../runtime/informer.ts";
import { targetsOf } from "./admission.ts";
import { type BuildCaches, BY_POOL, poolKeyOf } from "./caches.ts";
import { jobsOf } from "./decide.ts";
import { Expectations } from "./expectations.ts";
import { type ObservedJob, observeJob } from "./observe.ts";
import { demandOf, type QueueState, slotRequestsOf } from "./queue.ts";
import { QueueIndex } from "./queue-index.ts";

/** How many places of each architecture's queue are woken, and so kept exact, when it moves. */
export const QUEUE_HEAD = 5;

export class BuildQueues {
  private readonly caches: BuildCaches;
  /**
   * Objects created by this process until the cache shows them: an expected Job counts as
   * created and unstarted, for its build and in the pool's queue.
   */
  readonly expected = new Expectations();
  /** Parsed cached builds, by the cached object (null: invalid); see parsed(). */
  private readonly parses = new WeakMap<KubernetesObject, ImageBuild | null>();
  /** Parsed cached pools, by the cached object (null: invalid). */
  private readonly poolParses = new WeakMap<KubernetesObject, BuilderPool | null>();
  /** Every pool's queue: each build's slot requests, kept between reconciles. */
  private readonly index = new QueueIndex();
  /** Builds whose slot requests must be computed again before the queues are read. */
  private readonly stale = new Set<string>();

  constructor(caches: BuildCaches) {
    this.caches = caches;
    this.expected.onChange = (key) => this.changed(key);
  }

  /** The build, its Jobs or its expected objects changed: its slot requests are recomputed. */
  changed(buildKey: string): void {
    this.stale.add(buildKey);
  }

  /** The pool changed (capacity, architectures, validity, existence): so may all its builds. */
  poolChanged(poolKey: string): void {
    for (const build of this.caches.builds.byIndex(BY_POOL, poolKey)) this.stale.add(keyOf(build));
  }

  /**
   * The pool's queue with the build being reconciled as this reconcile sees it (its own
   * admission, its status as last written, its Jobs) in place of what the cache says.
   */
  queue(
    pool: BuilderPool,
    current: ImageBuild,
    admitted: boolean,
    jobs: Readonly<Record<string, ObservedJob | undefined>>,
  ): QueueState {
    this.refresh();
    const mapped = targetsOf(current, pool);
    const requests =
      "verdict" in mapped ? [] : slotRequestsOf(current, mapped.targets, jobs, admitted);
    return this.index.state(`${pool.metadata.namespace}/${pool.metadata.name}`, pool.spec, {
      key: `${current.metadata.namespace}/${current.metadata.name}`,
      requests,
    });
  }

  /** The pool's demand per architecture (queued and running platforms), for its autoscaling. */
  demand(pool: BuilderPool): Record<string, Demand> {
    this.refresh();
    return demandOf(
      this.index.state(`${pool.metadata.namespace}/${pool.metadata.name}`, pool.spec),
    );
  }

  /**
   * The builds at the head of a pool's queue: those that may start now, and those whose place
   * is at most `depth` on some architecture. When the queue moves, only they are woken; builds
   * further back refresh their position when they look again (WAIT_REQUEUE_MS), so a release
   * costs a bounded number of reconciles and status writes however long the queue is.
   */
  head(poolKey: string, depth = QUEUE_HEAD): string[] {
    const pool = this.parsedPool(poolKey);
    if (!pool) return [];
    this.refresh();
    return this.index.head(poolKey, pool.spec, depth);
  }

  /**
   * Jobs this process created for the build that the cache does not show yet, as Jobs that
   * have not started: so the next reconcile neither creates them again nor hands their slots
   * to another build (client-go's "expectations"). Forgotten once the cache shows them, or
   * after EXPECTATION_MS.
   */
  expectedJobsOf(build: ImageBuild, cached: readonly ObservedJob[]): ObservedJob[] {
    const uid = build.metadata.uid ?? "";
    const out: ObservedJob[] = [];
    for (const name of this.expected.namesOf("Job", uid)) {
      if (cached.some((job) => job.name === name)) continue;
      out.push({
        name,
        controllerUid: uid,
        deleting: false,
        active: 0,
        succeeded: 0,
        failed: 0,
        pods: [],
      });
    }
    return out;
  }

  /**
   * A cached build, parsed once per version: the queue reads every build of the pool on each
   * reconcile, and the cache hands out a new object for every new version.
   */
  parsed(raw: KubernetesObject): ImageBuild | undefined {
    return parseOnce(this.parses, raw, parseImageBuild);
  }

  /** A cached pool, parsed once per version; undefined when missing or invalid. */
  private parsedPool(poolKey: string): BuilderPool | undefined {
    const raw = this.caches.pools.getByKey(poolKey);
    if (!raw) return undefined;
    return parseOnce(this.poolParses, raw, parseBuilderPool);
  }

  /**
   * Brings the queues up to date with the caches: each build that changed since the last read
   * has its slot requests computed again from its cached object and Jobs (without pods),
   * expected Jobs counting as started.
   */
  private refresh(): void {
    this.expected.expire();
    for (const key of this.stale) {
      const raw = this.caches.builds.getByKey(key);
      const build = raw && this.parsed(raw);
      const poolKey = raw && poolKeyOf(raw);
      const pool = poolKey && this.parsedPool(poolKey);
      const mapped = build && pool ? targetsOf(build, pool) : undefined;
      if (!build || !poolKey || !mapped || "verdict" in mapped) {
        this.index.delete(key);
        continue;
      }
      const cached = this.caches.jobs
        .byIndex(BY_OWNER, build.metadata.uid ?? "")
        .map((job) => observeJob(job, []));
      const { jobs } = jobsOf(build, [...cached, ...this.expectedJobsOf(build, cached)]);
      this.index.set(key, poolKey, slotRequestsOf(build, mapped.targets, jobs));
    }
    this.stale.clear();
  }
}

/** `parse(raw)` once per cached object (a new version is a new object); undefined if invalid. */
function parseOnce<T>(
  parses: WeakMap<KubernetesObject, T | null>,
  raw: KubernetesObject,
  parse: (raw: KubernetesObject) => T,
): T | undefined {
  if (!parses.has(raw)) {
    let parsed: T | null;
    try {
      parsed = parse(raw);
    } catch {
      parsed = null;
    }
    parses.set(raw, parsed);
  }
  return parses.get(raw) ?? undefined;
}
