// Builders that scale with the queue, with the real operator (pool and build controllers, as
// operator.ts registers them) against test/kube: an amd64 architecture with autoscaling sleeps at
// zero, the first queued build wakes it and waits Queued (ScalingUp) until a builder is
// ready, a burst scales it up at once to what the demand asks for (within maxReplicas), and it
// goes back to zero only once the demand has stayed lower for scaleDownDelay, with the pool
// waking itself for that.
import type { CoreV1Event, KubernetesObject, V1Deployment } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ArchitectureStatus } from "../../src/api/builderpool.ts";
import { RESOURCES } from "../../src/runtime/client.ts";
import {
  type BuildCluster,
  condition,
  NS,
  POOL,
  POOLS,
  phaseIs,
  poolSpec,
  startBuildCluster,
} from "./cluster.ts";

const DELAY_MS = 1500;
const AMD64_ONLY = { platforms: ["linux/amd64"] };

let cluster: BuildCluster;
/** Every replicas value the amd64 Deployment's spec had, with when. */
const scaled: { at: number; replicas: number }[] = [];

beforeAll(async () => {
  cluster = await startBuildCluster({
    pool: poolSpec({
      maxConcurrentBuilds: 4,
      architectures: [
        {
          name: "amd64",
          autoscaling: {
            minReplicas: 0,
            maxReplicas: 3,
            buildsPerReplica: 1,
            scaleDownDelay: `${DELAY_MS}ms`,
          },
        },
        { name: "arm64", replicas: 1 },
      ],
    }),
  });
  cluster.kube.store.onChange((event, info) => {
    if (info.resource !== "deployments" || event.object.metadata.name !== `${POOL}-amd64`) return;
    const replicas = (event.object as unknown as V1Deployment).spec?.replicas ?? -1;
    if (scaled.at(-1)?.replicas !== replicas) scaled.push({ at: Date.now(), replicas });
  });
});
afterAll(() => cluster?.stop());

const deployment = () =>
  cluster.kube.store.get("deployments.apps", NS, `${POOL}-amd64`) as unknown as
    | V1Deployment
    | undefined;
const amd64Status = async () =>
  (
    await cluster.client.get<
      KubernetesObject & { status?: { architectures?: ArchitectureStatus[] } }
    >(POOLS, NS, POOL)
  )?.status?.architectures?.find((arch) => arch.name === "amd64");

async function poolEvents(): Promise<CoreV1Event[]> {
  await cluster.operator.manager.events.flush();
  const { items } = await cluster.client.list<CoreV1Event & KubernetesObject>(RESOURCES.event, NS);
  return items.filter((event) => event.involvedObject.kind === "BuilderPool");
}

/** Waits for a pool Event `<reason>: <message>`: it is recorded right after the write it reports. */
async function poolEvent(text: string): Promise<void> {
  let seen: string[] = [];
  await cluster.kube
    .waitFor(
      async () => {
        seen = (await poolEvents()).map((e) => `${e.reason}: ${e.message}`);
        return seen.includes(text);
      },
      { timeout: 30_000, message: `Event ${text}` },
    )
    .catch((error: Error) => {
      throw new Error(`${error.message}; seen: ${JSON.stringify(seen)}`);
    });
}

/** Changes the amd64 architecture's scaleDownDelay in the pool's spec. */
function setScaleDownDelay(delay: string): void {
  cluster.kube.store.mutate("builderpools.buildfarm.dev", NS, POOL, (draft) => {
    const spec = draft.spec as {
      architectures: { name: string; autoscaling?: { scaleDownDelay?: string } }[];
    };
    const amd64 = spec.architectures.find((arch) => arch.name === "amd64");
    if (amd64?.autoscaling) amd64.autoscaling.scaleDownDelay = delay;
  });
}

async function scaledToZero() {
  await cluster.kube.waitFor(() => deployment()?.spec?.replicas === 0, {
    timeout: 30_000,
    message: "amd64 scaled to zero",
  });
}

describe("an idle autoscaled architecture", () => {
  it("runs no builder, and the pool is Ready and says why", async () => {
    await scaledToZero();
    const amd64 = await amd64Status();
    expect(amd64).toMatchObject({ replicas: 0, readyReplicas: 0, queued: 0, running: 0 });
    expect(amd64?.conditions?.[0]).toMatchObject({ status: "True", reason: "ScaledToZero" });
  });
});

describe("the first queued build", () => {
  it("wakes it: Queued with reason ScalingUp until a builder is ready, then built there", async () => {
    const before = scaled.length;
    await cluster.createBuild("wake", AMD64_ONLY);
    const build = await cluster.waitForBuild("wake", phaseIs("Succeeded", "Failed"));
    expect(build.status?.phase).toBe("Succeeded");
    const first = cluster.statuses("wake")[0];
    expect(first?.phase).toBe("Queued");
    expect(first?.conditions?.find((c) => c.type === "Succeeded")?.reason).toBe("ScalingUp");
    expect(first?.platforms?.[0]).toMatchObject({
      phase: "Queued",
      message: "waiting for a builder: no amd64 builder is ready yet; the pool is scaling up",
    });
    expect(scaled.slice(before).map((s) => s.replicas)[0]).toBe(1);
    expect(build.status?.platforms?.[0]?.builderPod).toMatch(new RegExp(`^${POOL}-amd64-`));
    await poolEvent("ScaledUp: amd64 builders 0 → 1 (1 queued, 0 running)");
  });

  it("and once idle it goes back to zero, only after scaleDownDelay, on its own", async () => {
    // The build finished: nothing wakes the pool but its own requeue when the delay passes.
    const up = scaled.findLast((s) => s.replicas === 1) as { at: number };
    await scaledToZero();
    const down = scaled.at(-1) as { at: number; replicas: number };
    expect(down.replicas).toBe(0);
    expect(down.at - up.at).toBeGreaterThanOrEqual(DELAY_MS);
    await poolEvent("ScaledDown: amd64 builders 1 → 0 (0 queued, 0 running)");
  });
});

describe("a burst", () => {
  it("scales up at once to the demand within maxReplicas, shows it, and spreads the builds", async () => {
    cluster.player.holdAll = true;
    const mark = cluster.kube.requestLog.mark();
    const names = ["burst-1", "burst-2", "burst-3", "burst-4"];
    const seen: ArchitectureStatus[] = [];
    try {
      for (const name of names) await cluster.createBuild(name, { ...AMD64_ONLY, cacheKey: name });
      await cluster.kube.waitFor(() => deployment()?.spec?.replicas === 3, {
        message: "three amd64 builders",
      });
      // Every builder sized for one build: three run, one waits for a fourth builder that
      // maxReplicas does not allow, so it goes to the first ready builder of its key.
      await cluster.kube.waitFor(
        async () => {
          const amd64 = await amd64Status();
          if (amd64) seen.push(amd64);
          return amd64?.running === 4;
        },
        { message: "four amd64 builds running" },
      );
      expect(seen.some((s) => (s.queued ?? 0) > 0)).toBe(true);
      expect(Math.max(...scaled.map((s) => s.replicas))).toBe(3);
    } finally {
      cluster.player.holdAll = false;
      for (const name of names) cluster.player.release(`${name}-amd64`);
    }
    const statusWrites = cluster.kube.requestLog.since(mark, {
      verb: "update",
      resource: "builderpools",
      subresource: "status",
    }).length;
    const pods = new Set<string>();
    for (const name of names) {
      const build = await cluster.waitForBuild(name, phaseIs("Succeeded"));
      pods.add(build.status?.platforms?.[0]?.builderPod ?? "");
    }
    await scaledToZero();
    expect([...pods], JSON.stringify(scaled)).toHaveLength(3);
    // Counts that change with every build transition are written every COUNTS_SETTLE_MS at
    // most: the burst (4 builds, 3 builders starting and getting ready) cost 6 to 11 pool
    // status writes here, depending on how the readiness changes fall.
    expect(statusWrites).toBeLessThanOrEqual(16);
  });
});

describe("a scale-down while a builder is busy", () => {
  it("removes the idle builder and leaves the busy one building", async () => {
    cluster.player.holdAll = true;
    try {
      await cluster.createBuild("keep-1", { ...AMD64_ONLY, cacheKey: "keep-1" });
      await cluster.kube.waitFor(() => cluster.player.runningJobs().includes("keep-1-amd64"), {
        message: "keep-1 running",
      });
      // The second builder is strictly newer (creation times have whole seconds): the one a
      // ReplicaSet removes first when nothing says otherwise.
      await new Promise((resolve) => setTimeout(resolve, 1100));
      await cluster.createBuild("keep-2", { ...AMD64_ONLY, cacheKey: "keep-2" });
      await cluster.kube.waitFor(() => cluster.player.runningJobs().includes("keep-2-amd64"), {
        message: "keep-2 running",
      });
      const older = (await cluster.getBuild("keep-1"))?.status?.platforms?.[0]?.builderPod;
      const newer = (await cluster.getBuild("keep-2"))?.status?.platforms?.[0]?.builderPod;
      expect(older).toBeDefined();
      expect(newer).toBeDefined();
      expect(newer).not.toBe(older);
      // The order of what the store saw: the busy builder's cost, then the smaller Deployment
      // (a ReplicaSet controller ranks pods from its own cache, which must have the cost).
      const seen: string[] = [];
      const stop = cluster.kube.store.onChange((event, info) => {
        const object = event.object as {
          metadata: { name?: string; annotations?: Record<string, string> };
          spec?: { replicas?: number };
        };
        if (
          info.resource === "pods" &&
          object.metadata.name === newer &&
          object.metadata.annotations?.["controller.kubernetes.io/pod-deletion-cost"] === "1"
        )
          seen.push("cost");
        if (info.resource === "deployments" && object.spec?.replicas === 1) seen.push("replicas");
      });
      // The older builder's build ends: one builder is enough, after the delay.
      cluster.player.release("keep-1-amd64");
      await cluster.waitForBuild("keep-1", phaseIs("Succeeded"));
      await cluster.kube.waitFor(() => deployment()?.spec?.replicas === 1, {
        message: "amd64 scaled to one",
      });
      await cluster.kube.waitFor(() => !cluster.kube.store.get("pods", NS, older as string), {
        message: `the idle builder ${older} removed`,
      });
      stop();
      expect(seen.indexOf("cost")).toBeGreaterThanOrEqual(0);
      expect(seen.indexOf("cost")).toBeLessThan(seen.indexOf("replicas"));
      const busy = cluster.kube.store.get("pods", NS, newer as string);
      expect(busy?.metadata.deletionTimestamp).toBeUndefined();
      expect(busy?.metadata.annotations?.["controller.kubernetes.io/pod-deletion-cost"]).toBe("1");
      expect(cluster.player.stopped.filter((pod) => pod.startsWith("keep-2-"))).toEqual([]);
    } finally {
      cluster.player.holdAll = false;
      cluster.player.release("keep-1-amd64");
      cluster.player.release("keep-2-amd64");
    }
    expect(
      (await cluster.waitForBuild("keep-2", phaseIs("Succeeded", "Failed"))).status?.phase,
    ).toBe("Succeeded");
    await scaledToZero();
  });
});

describe("an operator restarted while a scale-down waits", () => {
  it("starts the delay anew: it postpones the scale-down, never hastens it", async () => {
    // Longer than the file's delay, so that a busy machine still restarts the operator
    // while the scale-down waits.
    const delayMs = 4000;
    setScaleDownDelay(`${delayMs}ms`);
    try {
      await cluster.createBuild("before-restart", AMD64_ONLY);
      await cluster.waitForBuild("before-restart", phaseIs("Succeeded"));
      expect(deployment()?.spec?.replicas).toBe(1);
      const restarted = Date.now();
      await cluster.restart();
      await scaledToZero();
      expect((scaled.at(-1) as { at: number }).at - restarted).toBeGreaterThanOrEqual(delayMs);
    } finally {
      setScaleDownDelay(`${DELAY_MS}ms`);
    }
  });
});

describe("demand that comes and goes within scaleDownDelay", () => {
  it("does not make builders come and go", async () => {
    // A delay no busy machine outlasts between two builds: the second comes within it.
    setScaleDownDelay("10m");
    try {
      await cluster.createBuild("again-1", AMD64_ONLY);
      await cluster.waitForBuild("again-1", phaseIs("Succeeded"));
      const mark = scaled.length;
      // Idle for a while, then another build: the builder stays.
      await new Promise((resolve) => setTimeout(resolve, DELAY_MS));
      await cluster.createBuild("again-2", AMD64_ONLY);
      const build = await cluster.waitForBuild("again-2", phaseIs("Succeeded"));
      expect(scaled.slice(mark)).toEqual([]);
      // It found a ready builder: it never waited for one.
      expect(
        cluster
          .statuses("again-2")
          .every((s) => condition({ status: s } as never, "Succeeded")?.reason !== "ScalingUp"),
      ).toBe(true);
      expect(build.status?.phase).toBe("Succeeded");
    } finally {
      setScaleDownDelay(`${DELAY_MS}ms`);
    }
    await scaledToZero();
  });
});

describe("the operator", () => {
  it("left no reconcile error in its log", () => {
    expect(cluster.operator.logs.filter((line) => line.level === "error")).toEqual([]);
  });
});
