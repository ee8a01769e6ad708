// The pool's queue, run by the real operator: with maxConcurrentBuilds 1, three two-platform
// builds run one Job per architecture at a time, wait with their queue positions, and start
// in creation order as slots free up, per architecture.
import type { V1Job } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BuildCluster, phaseIs, startBuildCluster } from "./cluster.ts";
import { metricValue } from "./measure.ts";

let cluster: BuildCluster;
/** The most unfinished Jobs of one architecture seen at once, over the whole test. */
const peak: Record<string, number> = {};
/** Platform Jobs in the order they were created. */
const created: string[] = [];

const unfinished = (job: V1Job) =>
  !(job.status?.conditions ?? []).some(
    (c) => (c.type === "Complete" || c.type === "Failed") && c.status === "True",
  );

beforeAll(async () => {
  cluster = await startBuildCluster({ pool: { maxConcurrentBuilds: 1 } });
  cluster.player.holdAll = true;
  cluster.kube.store.onChange((event, info) => {
    if (info.resource !== "jobs") return;
    const job = event.object as unknown as V1Job;
    if (job.metadata?.labels?.["app.kubernetes.io/component"] !== "build") return;
    if (event.type === "ADDED") created.push(job.metadata?.name ?? "");
    const running: Record<string, number> = {};
    for (const other of cluster.kube.store.objects("jobs.batch") as unknown as V1Job[]) {
      const arch = other.metadata?.labels?.["buildfarm.dev/arch"];
      if (
        arch &&
        other.metadata?.labels?.["app.kubernetes.io/component"] === "build" &&
        unfinished(other)
      )
        running[arch] = (running[arch] ?? 0) + 1;
    }
    for (const [arch, count] of Object.entries(running))
      peak[arch] = Math.max(peak[arch] ?? 0, count);
  });
});
afterAll(() => cluster?.stop());

const depth = (arch: string) =>
  metricValue(cluster.operator.manager.metrics.registry, "buildfarm_queue_depth", {
    pool: "builds/farm",
    arch,
  });

describe("a pool with maxConcurrentBuilds 1", () => {
  it("runs the first build and queues the others with positions 1 and 2", async () => {
    await cluster.createBuild("q1");
    await cluster.waitForBuild("q1", phaseIs("Building"));
    await cluster.createBuild("q2");
    await cluster.createBuild("q3");
    const q2 = await cluster.waitForBuild("q2", (b) => b.status?.queuePosition === 1);
    const q3 = await cluster.waitForBuild("q3", (b) => b.status?.queuePosition === 2);
    expect(q2.status?.phase).toBe("Queued");
    expect(q3.status?.phase).toBe("Queued");
    expect(q3.status?.platforms?.map((p) => [p.phase, p.job])).toEqual([
      ["Queued", undefined],
      ["Queued", undefined],
    ]);
    expect(q3.status?.platforms?.[0]?.message).toBe(
      "waiting for a free amd64 builder: position 2 (1 of 1 running)",
    );
    expect(cluster.jobNames()).toEqual(["q1-amd64", "q1-arm64"]);
    await cluster.kube.waitFor(
      async () => (await depth("amd64")) === 2 && (await depth("arm64")) === 2,
      {
        message: "buildfarm_queue_depth is not 2 per architecture",
      },
    );
  });

  it("shows a platform Running once its build has run for a while", async () => {
    const q1 = await cluster.waitForBuild(
      "q1",
      (b) => b.status?.platforms?.every((p) => p.phase === "Running") ?? false,
      { timeout: 30_000 },
    );
    expect(q1.status?.platforms?.map((p) => p.attempts)).toEqual([1, 1]);
    expect(cluster.player.runningJobs()).toEqual(["q1-amd64", "q1-arm64"]);
  });

  it("gives a freed slot to the next build of that architecture at once", async () => {
    cluster.player.release("q1-amd64");
    const q2 = await cluster.waitForBuild(
      "q2",
      (b) => b.status?.platforms?.find((p) => p.platform === "linux/amd64")?.job === "q2-amd64",
    );
    // arm64 is still busy with q1: q2's arm64 half waits, first in line; q3 moved up.
    expect(q2.status?.phase).toBe("Building");
    expect(q2.status?.platforms?.find((p) => p.platform === "linux/arm64")?.phase).toBe("Queued");
    expect(q2.status?.queuePosition).toBe(1);
    // q3 moved up on amd64; on arm64 it still waits behind q2, so its position stays 2.
    const q3 = await cluster.waitForBuild(
      "q3",
      (b) => b.status?.platforms?.[0]?.message?.includes("position 1") ?? false,
    );
    expect(q3.status?.phase).toBe("Queued");
    expect(q3.status?.queuePosition).toBe(2);
    expect(cluster.jobNames().filter((name) => !name.endsWith("-index"))).toEqual([
      "q1-amd64",
      "q1-arm64",
      "q2-amd64",
    ]);
  });

  it("releases the rest in creation order, never more than one Job per architecture", async () => {
    for (const job of ["q1-arm64", "q2-amd64", "q2-arm64", "q3-amd64", "q3-arm64"]) {
      await cluster.kube.waitFor(() => cluster.jobNames().includes(job), {
        message: `${job} was not created`,
      });
      cluster.player.release(job);
    }
    for (const name of ["q1", "q2", "q3"]) {
      const build = await cluster.waitForBuild(name, phaseIs("Succeeded", "Failed"));
      expect(build.status?.phase).toBe("Succeeded");
      expect(build.status?.queuePosition).toBeUndefined();
    }
    expect(peak).toEqual({ amd64: 1, arm64: 1 });
    const byArch = (arch: string) => created.filter((name) => name.endsWith(`-${arch}`));
    expect(byArch("amd64")).toEqual(["q1-amd64", "q2-amd64", "q3-amd64"]);
    expect(byArch("arm64")).toEqual(["q1-arm64", "q2-arm64", "q3-arm64"]);
    expect(await depth("amd64")).toBe(0);
    expect(await depth("arm64")).toBe(0);
  });
});

describe("builds created at once", () => {
  it("start in creation order, whichever the operator looks at first", async () => {
    const names = ["burst-a", "burst-b", "burst-c", "burst-d"];
    // Created together in one tick: the operator's reconciles race for the one slot.
    await Promise.all(
      names.map((name) => cluster.createBuild(name, { platforms: ["linux/amd64"] })),
    );
    for (const name of names) {
      await cluster.kube.waitFor(() => cluster.jobNames().includes(`${name}-amd64`), {
        message: `${name}-amd64 was not created`,
      });
      cluster.player.release(`${name}-amd64`);
    }
    for (const name of names) await cluster.waitForBuild(name, phaseIs("Succeeded"));
    expect(created.filter((name) => name.startsWith("burst-"))).toEqual(
      names.map((name) => `${name}-amd64`),
    );
    expect(peak).toEqual({ amd64: 1, arm64: 1 });
  });
});
