// The queue depth gauge follows the pools: a deleted pool's series go instead of showing their
// last value forever.
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import type { BuilderPool } from "../../src/api/resources.ts";
import { BuildMetrics } from "../../src/imagebuild/metrics.ts";
import type { QueueState } from "../../src/imagebuild/queue.ts";

const pool = (name: string) => ({ metadata: { namespace: "builds", name } }) as BuilderPool;
const queue = (waiting: number): QueueState => ({
  verdicts: new Map(),
  architectures: ["amd64", "arm64"].map((architecture) => ({
    architecture,
    capacity: 4,
    running: 4,
    waiting,
    queued: waiting + 4,
  })),
});

describe("buildfarm_queue_depth", () => {
  it("drops every series of a deleted pool and keeps the others", async () => {
    const registry = new Registry();
    const metrics = new BuildMetrics(registry);
    metrics.observeQueue(pool("gone"), queue(3));
    metrics.observeQueue(pool("kept"), queue(5));
    await metrics.forgetPool("builds/gone");
    const series = (await metrics.queueDepth.get()).values.map(
      (value) => `${value.labels.pool} ${value.labels.arch} ${value.value}`,
    );
    expect(series.sort()).toEqual(["builds/kept amd64 5", "builds/kept arm64 5"]);
  });
});
