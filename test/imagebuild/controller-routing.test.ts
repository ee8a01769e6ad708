// Cache-locality routing with the real operator against test/kube: builds that share a cache
// key go to one builder pod of their architecture, dialled by its IP with the architecture's
// Service name as the TLS server name (no per-pod DNS name, which not every cluster DNS
// serves); the next one in the key's order takes over when that pod is full or not ready; the
// Service when no pod is ready. What each buildctl reached is checked from the builders' side
// by the player (a Ready pod with that IP, a server certificate that covers the server name).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ImageBuild } from "../../src/api/resources.ts";
import { parseImageBuild } from "../../src/api/resources.ts";
import { cacheKeyOf } from "../../src/imagebuild/builders.ts";
import { preferenceOrder } from "../../src/imagebuild/routing.ts";
import {
  type BuildCluster,
  buildSpec,
  NS,
  POOL,
  POOLS,
  phaseIs,
  poolSpec,
  startBuildCluster,
} from "./cluster.ts";

let cluster: BuildCluster;

type PodObject = {
  metadata: { name: string; labels?: Record<string, string>; deletionTimestamp?: string };
  status?: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[] };
};

const readyBuilders = (arch: string) =>
  (cluster.kube.store.objects("pods", NS) as unknown as PodObject[])
    .filter(
      (pod) =>
        pod.metadata.labels?.["app.kubernetes.io/component"] === "builder" &&
        pod.metadata.labels?.["buildfarm.dev/arch"] === arch &&
        !pod.metadata.deletionTimestamp &&
        (pod.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True"),
    )
    .map((pod) => pod.metadata.name)
    .sort();

/** The builder pods in the order a key prefers them, as routing.ts ranks them. */
function orderFor(spec: Record<string, unknown>, pods: string[]): string[] {
  const build = parseImageBuild({
    apiVersion: "buildfarm.dev/v1alpha1",
    kind: "ImageBuild",
    metadata: { name: "probe", namespace: NS },
    spec: buildSpec(spec),
  }) as ImageBuild;
  return preferenceOrder(cacheKeyOf(build), pods);
}

/** The builder pod the build's amd64 buildctl reached, as the player saw it. */
const reachedBy = (build: string) =>
  [...cluster.player.reached.values()]
    .filter((r) => r.job === `${build}-amd64`)
    .map((r) => r.builder);

const AMD64_ONLY = { platforms: ["linux/amd64"] };

beforeAll(async () => {
  // Three amd64 builders sharing 6 slots: 2 builds each before routing moves on.
  cluster = await startBuildCluster({
    pool: poolSpec({
      maxConcurrentBuilds: 6,
      architectures: [
        { name: "amd64", replicas: 3 },
        { name: "arm64", replicas: 1 },
      ],
    }),
  });
  await cluster.kube.waitFor(() => readyBuilders("amd64").length === 3, {
    message: "three Ready amd64 builders",
  });
});
afterAll(() => cluster?.stop());

describe("builds that share a cache key", () => {
  it("go to the same builder pod, the key's first, reached by its IP", async () => {
    const pods = readyBuilders("amd64");
    const [first] = orderFor(AMD64_ONLY, pods);
    for (const name of ["same-1", "same-2"]) {
      await cluster.createBuild(name, AMD64_ONLY);
      const build = await cluster.waitForBuild(name, phaseIs("Succeeded", "Failed"));
      expect(build.status?.phase).toBe("Succeeded");
      expect(build.status?.platforms?.[0]?.builderPod, name).toBe(first);
      expect(reachedBy(name), name).toEqual([first]);
    }
    const pod = cluster.kube.store.get("pods", NS, first as string) as unknown as PodObject;
    expect((await cluster.getBuild("same-2"))?.status?.platforms?.[0]?.builder).toBe(
      `tcp://${pod.status?.podIP}:1234`,
    );
    expect(cluster.player.problems).toEqual([]);
  });

  it("and spec.cacheKey puts builds of other sources on the key's builder", async () => {
    const pods = readyBuilders("amd64");
    const spec = { ...AMD64_ONLY, cacheKey: "shared/monorepo", dockerfile: "svc/Dockerfile" };
    const [first] = orderFor(spec, pods);
    await cluster.createBuild("keyed", spec);
    const build = await cluster.waitForBuild("keyed", phaseIs("Succeeded", "Failed"));
    expect(build.status?.platforms?.[0]?.builderPod).toBe(first);
    expect(reachedBy("keyed")).toEqual([first]);
  });
});

describe("a builder that is full or not ready", () => {
  it("hands the key's builds to the next builder in its order once the first runs two", async () => {
    const pods = readyBuilders("amd64");
    const [first, second] = orderFor(AMD64_ONLY, pods);
    cluster.player.holdAll = true;
    try {
      for (const name of ["full-1", "full-2", "full-3"]) {
        await cluster.createBuild(name, AMD64_ONLY);
        // One at a time: each is routed with the previous ones' Jobs counted.
        await cluster.kube.waitFor(() => cluster.player.runningJobs().includes(`${name}-amd64`), {
          message: `${name} running`,
        });
      }
      const routed = await Promise.all(
        ["full-1", "full-2", "full-3"].map(
          async (name) => (await cluster.getBuild(name))?.status?.platforms?.[0]?.builderPod,
        ),
      );
      expect(routed).toEqual([first, first, second]);
    } finally {
      cluster.player.holdAll = false;
      for (const name of ["full-1", "full-2", "full-3"]) cluster.player.release(`${name}-amd64`);
    }
    for (const name of ["full-1", "full-2", "full-3"])
      await cluster.waitForBuild(name, phaseIs("Succeeded"));
  });

  it("does not count a Job whose build's writes failed before it was created", async () => {
    const pods = readyBuilders("amd64");
    const [first] = orderFor(AMD64_ONLY, pods);
    cluster.player.holdAll = true;
    try {
      await cluster.createBuild("occupant", AMD64_ONLY);
      await cluster.kube.waitFor(() => cluster.player.runningJobs().includes("occupant-amd64"), {
        message: "occupant running",
      });
      // The next build is routed to the same builder (one slot of its two left), then its client
      // Secret's create fails: its Job is never created. Its retry must find that slot free,
      // not taken by the Job that was routed and never made.
      cluster.kube.faults.failNext(1, {
        code: 500,
        match: { verb: "create", resource: "secrets" },
      });
      await cluster.createBuild("retried", AMD64_ONLY);
      await cluster.kube.waitFor(() => cluster.player.runningJobs().includes("retried-amd64"), {
        message: "retried running",
      });
      expect(
        cluster.kube.requestLog.entries({ verb: "create", resource: "secrets", code: 500 }).length,
      ).toBe(1);
      const routed = await Promise.all(
        ["occupant", "retried"].map(
          async (name) => (await cluster.getBuild(name))?.status?.platforms?.[0]?.builderPod,
        ),
      );
      expect(routed).toEqual([first, first]);
    } finally {
      cluster.player.holdAll = false;
      for (const name of ["occupant", "retried"]) cluster.player.release(`${name}-amd64`);
    }
    for (const name of ["occupant", "retried"])
      await cluster.waitForBuild(name, phaseIs("Succeeded"));
  });

  it("skips the key's first builder while it is not ready", async () => {
    const pods = readyBuilders("amd64");
    const [first, second] = orderFor(AMD64_ONLY, pods);
    cluster.kube.kubelet?.setReadiness((pod) => pod.metadata.name !== first);
    try {
      await cluster.kube.waitFor(() => !readyBuilders("amd64").includes(first as string), {
        message: `${first} not ready`,
      });
      await cluster.createBuild("detour", AMD64_ONLY);
      const build = await cluster.waitForBuild("detour", phaseIs("Succeeded", "Failed"));
      expect(build.status?.platforms?.[0]?.builderPod).toBe(second);
      expect(reachedBy("detour")).toEqual([second]);
    } finally {
      cluster.kube.kubelet?.setReadiness(undefined);
    }
    await cluster.kube.waitFor(() => readyBuilders("amd64").length === 3, {
      message: "three Ready amd64 builders again",
    });
  });
});

describe("an architecture without a ready builder", () => {
  it("goes through its Service, where buildctl waits for a builder", async () => {
    // A merge patch: the pool controller writes the pool's status meanwhile, which would make a
    // read-then-replace fail with 409 now and then.
    await cluster.client.patch(POOLS, NS, POOL, {
      spec: poolSpec({
        maxConcurrentBuilds: 6,
        architectures: [
          { name: "amd64", replicas: 3 },
          { name: "arm64", replicas: 0 },
        ],
      }),
    });
    await cluster.kube.waitFor(() => readyBuilders("arm64").length === 0, {
      message: "no arm64 builder",
    });
    await cluster.createBuild("no-builder", { platforms: ["linux/arm64"] });
    const build = await cluster.waitForBuild("no-builder", (b) => b.status?.phase === "Building");
    expect(build.status?.platforms?.[0]).toMatchObject({
      builder: `tcp://${POOL}-arm64.${NS}.svc:1234`,
    });
    expect(build.status?.platforms?.[0]?.builderPod).toBeUndefined();
  });
});

describe("the operator", () => {
  it("left no reconcile error in its log but the one a test injected", () => {
    expect(
      cluster.operator.logs.filter(
        (line) => line.level === "error" && line.err !== "Internal error occurred: injected fault",
      ),
    ).toEqual([]);
  });
});
