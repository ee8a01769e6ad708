// The ImageBuild metrics: builds finished by result, how long builds and platforms take, how
// many build steps the cache served, and how many platforms wait in each pool architecture's
// queue.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { ImageBuildStatus } from "../api/imagebuild-status.ts";
import { isTerminal } from "../api/imagebuild-status.ts";
import type { BuilderPool, ImageBuild } from "../api/resources.ts";
import type { QueueState } from "./queue.ts";

const BUILD_BUCKETS = [15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200];

const seconds = (from: string | undefined, to: string | undefined) =>
  from && to ? Math.max(0, (Date.parse(to) - Date.parse(from)) / 1000) : undefined;

export class BuildMetrics {
  readonly builds: Counter<"pool" | "result">;
  readonly buildDuration: Histogram<"pool">;
  readonly platformDuration: Histogram<"pool" | "arch">;
  readonly queueDepth: Gauge<"pool" | "arch">;
  readonly steps: Counter<"pool" | "architecture" | "result">;

  constructor(registry: Registry) {
    const registers = [registry];
    this.builds = new Counter({
      name: "buildfarm_builds_total",
      help: "ImageBuilds finished, by pool (<namespace>/<name>) and result (Succeeded, Failed, Cancelled)",
      labelNames: ["pool", "result"],
      registers,
    });
    this.buildDuration = new Histogram({
      name: "buildfarm_build_duration_seconds",
      help: "Time from an ImageBuild's creation to its end",
      labelNames: ["pool"],
      buckets: BUILD_BUCKETS,
      registers,
    });
    this.platformDuration = new Histogram({
      name: "buildfarm_platform_build_duration_seconds",
      help: "Time one platform's build Job ran",
      labelNames: ["pool", "arch"],
      buckets: BUILD_BUCKETS,
      registers,
    });
    this.steps = new Counter({
      name: "buildfarm_build_steps_total",
      help: "Build steps of pushed platforms, by pool, architecture and result (cached: taken from BuildKit's cache; executed: ran), from each platform's cache report",
      labelNames: ["pool", "architecture", "result"],
      registers,
    });
    this.queueDepth = new Gauge({
      name: "buildfarm_queue_depth",
      help: "Platforms waiting for a builder slot, by pool and architecture",
      labelNames: ["pool", "arch"],
      registers,
    });
  }

  /** Counts what a status write changed: a finished build, finished platforms. `pool` is `<namespace>/<name>`. */
  observeTransition(build: ImageBuild, next: ImageBuildStatus, pool: string): void {
    const previous = build.status;
    if (next.phase && isTerminal(next.phase) && !isTerminal(previous?.phase)) {
      this.builds.inc({ pool, result: next.phase });
      const duration = seconds(String(build.metadata.creationTimestamp ?? ""), next.completionTime);
      if (duration !== undefined) this.buildDuration.observe({ pool }, duration);
    }
    const before = new Map(
      (previous?.platforms ?? []).map((platform) => [platform.platform, platform.phase]),
    );
    for (const platform of next.platforms ?? []) {
      if (platform.phase !== "Succeeded" || before.get(platform.platform) === "Succeeded") continue;
      const architecture = platform.architecture ?? "unknown";
      const duration = seconds(platform.startTime, platform.completionTime);
      if (duration !== undefined)
        this.platformDuration.observe({ pool, arch: architecture }, duration);
      if (platform.cache) {
        // inc(0) still creates the series, so a pool's cached and executed both show.
        this.steps.inc({ pool, architecture, result: "cached" }, platform.cache.cached);
        this.steps.inc({ pool, architecture, result: "executed" }, platform.cache.executed);
      }
    }
  }

  /** A deleted pool's queue depth series go with it, instead of showing their last value. */
  async forgetPool(poolKey: string): Promise<void> {
    // remove() takes a series' whole label set: find the pool's series first.
    for (const { labels } of (await this.queueDepth.get()).values)
      if (labels.pool === poolKey) this.queueDepth.remove(labels as { pool: string; arch: string });
  }

  observeQueue(pool: BuilderPool, queue: QueueState): void {
    for (const arch of queue.architectures) {
      this.queueDepth.set(
        { pool: `${pool.metadata.namespace}/${pool.metadata.name}`, arch: arch.architecture },
        arch.waiting,
      );
    }
  }
}
