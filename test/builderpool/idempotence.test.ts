// The pool controller writes only what differs: nothing once converged (through resyncs and
// restarts, also midway and under leader election), nothing twice, and nothing from a stale
// view of its own writes or of someone else's.
import { afterEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.ts";
import { startOperator } from "../../src/operator.ts";
import {
  describeRequests,
  reconcileCount,
  reconciles,
  testLogger,
  writesSince,
} from "../support/operator.ts";
import {
  builderPods,
  childrenOf,
  cluster,
  createPool,
  get,
  type Json,
  NS,
  operator,
  POOLS,
  pool,
  stopAll,
  successfulCreates,
  track,
  waitForQuiet,
  waitForReady,
} from "./harness.ts";

afterEach(stopAll);

describe("a converged pool", () => {
  it("costs no writes through resyncs", async () => {
    const kube = await cluster();
    const current = await operator(kube, { resyncMs: 200 });
    createPool(kube, "farm");
    await waitForReady(kube, "farm", { status: "True" });
    await waitForQuiet(kube, 500);

    const mark = kube.requestLog.mark();
    // Every resync reconciles the pool again, once per informer that holds one of its children.
    await reconciles(kube, current.manager, "builderpool", 6);
    expect(describeRequests(writesSince(kube, mark))).toEqual([]);
  });

  it("is found as it is by a restarted operator, which writes nothing", async () => {
    const kube = await cluster();
    const first = await operator(kube);
    createPool(kube, "farm");
    await waitForReady(kube, "farm", { status: "True" });
    await waitForQuiet(kube, 300);
    await first.stop();

    const mark = kube.requestLog.mark();
    const second = await operator(kube, { resyncMs: 200 });
    await reconciles(kube, second.manager, "builderpool", 4);
    expect(describeRequests(writesSince(kube, mark))).toEqual([]);
  });
});

describe("children written by an older operator (another spec hash)", () => {
  it("are replaced once, keeping what the API server assigned and rolling nothing", async () => {
    const kube = await cluster();
    await operator(kube);
    createPool(kube, "farm");
    await waitForReady(kube, "farm", { status: "True" });
    await waitForQuiet(kube, 300);
    const before = {
      service: get(kube, "services", "farm-amd64"),
      deployment: get(kube, "deployments.apps", "farm-amd64"),
      secret: get(kube, "secrets", "farm-buildkit-server"),
      pods: builderPods(kube, "farm", "amd64").map((pod) => pod.metadata.name),
    };
    expect(before.service.spec.clusterIP).toMatch(/^10\./);

    const mark = kube.requestLog.mark();
    for (const [resource, name] of [
      ["services", "farm-amd64"],
      ["deployments.apps", "farm-amd64"],
      ["secrets", "farm-buildkit-server"],
    ] as const) {
      kube.store.mutate<Json>(resource, NS, name, (object) => {
        object.metadata.annotations["buildfarm.dev/spec-hash"] = "0000000000000000";
      });
    }
    await kube.waitFor(() =>
      [
        get(kube, "services", "farm-amd64"),
        get(kube, "deployments.apps", "farm-amd64"),
        get(kube, "secrets", "farm-buildkit-server"),
      ].every(
        (object) => object.metadata.annotations["buildfarm.dev/spec-hash"] !== "0000000000000000",
      ),
    );
    await waitForQuiet(kube, 500);
    // One replace each. A reconcile that runs before the watch brings back its own replace
    // sees the old hash and tries again with the old resourceVersion: 409, nothing written.
    const writes = writesSince(kube, mark);
    expect(describeRequests(writes.filter((record) => record.code < 300)).sort()).toEqual([
      "update deployments farm-amd64 200",
      "update secrets farm-buildkit-server 200",
      "update services farm-amd64 200",
    ]);
    expect(writes.filter((record) => record.code >= 300).every((r) => r.code === 409)).toBe(true);
    const service = get(kube, "services", "farm-amd64");
    expect(service.spec.clusterIP).toBe(before.service.spec.clusterIP);
    expect(service.metadata.uid).toBe(before.service.metadata.uid);
    // The same certificate, byte for byte: nothing to roll.
    expect(get(kube, "secrets", "farm-buildkit-server").data).toEqual(before.secret.data);
    const deployment = get(kube, "deployments.apps", "farm-amd64");
    expect(deployment.spec.template).toEqual(before.deployment.spec.template);
    expect(kube.store.objects("replicasets.apps", NS).length).toBe(2);
    expect(builderPods(kube, "farm", "amd64").map((pod) => pod.metadata.name)).toEqual(before.pods);
  });
});

describe("an operator restarted midway", () => {
  it("finishes the pool without duplicates, then writes nothing", async () => {
    const kube = await cluster();
    // The first operator gets as far as the Deployments, which the API server keeps refusing.
    const stopFailing = kube.faults.failNext(1000, {
      code: 500,
      match: { verb: "create", resource: "deployments.apps" },
    });
    const first = await operator(kube);
    createPool(kube, "farm");
    await kube.waitFor(
      () => kube.requestLog.count({ verb: "create", resource: "deployments.apps" }) >= 2,
      { message: "the first operator tried the Deployments" },
    );
    await first.stop();
    stopFailing();
    expect(get(kube, "secrets", "farm-buildkit-server")).toBeDefined();
    expect(get(kube, "services", "farm-arm64-headless")).toBeDefined();
    expect(get(kube, "deployments.apps", "farm-amd64")).toBeUndefined();
    const server = get(kube, "secrets", "farm-buildkit-server");

    const second = await operator(kube, { resyncMs: 200 });
    await waitForReady(kube, "farm", { status: "True" });
    await waitForQuiet(kube, 500);
    // Every child was created once: as many successful creates as children, nothing deleted
    // in between (a create is logged without a name; a second one of the same name needs a
    // delete first), and no create ran into an existing object.
    expect(successfulCreates(kube)).toEqual({
      secrets: 2,
      configmaps: 1,
      networkpolicies: 1,
      services: 4,
      deployments: 2,
      poddisruptionbudgets: 1,
    });
    expect(childrenOf(kube, pool(kube, "farm").metadata.uid).length).toBe(11);
    expect(kube.requestLog.count({ verb: "delete" })).toBe(0);
    expect(kube.requestLog.count({ verb: "create", code: 409 })).toBe(0);
    // The second operator kept the certificate the first one issued.
    expect(get(kube, "secrets", "farm-buildkit-server").data).toEqual(server.data);

    const mark = kube.requestLog.mark();
    await reconciles(kube, second.manager, "builderpool", 6);
    expect(describeRequests(writesSince(kube, mark))).toEqual([]);
  });
});

describe("the operator's entry point", () => {
  it("runs the pool controller under leader election, and a successor writes nothing", async () => {
    const kube = await cluster();
    const start = async (identity: string) => {
      const config = loadConfig(
        ["--identity", identity, "--metrics-bind-address", "0", "--lease-namespace", NS],
        {},
      );
      const started = await startOperator(config, {
        kubeConfig: kube.kubeConfig(),
        log: testLogger(),
        apiAttempts: 1,
      });
      track({ manager: started.manager, stop: () => started.manager.stop() });
      return started;
    };
    const lease = () =>
      kube.store.get<Json>("leases.coordination.k8s.io", NS, "buildfarm-operator");

    const first = await start("operator-a");
    createPool(kube, "farm");
    await waitForReady(kube, "farm", { status: "True" });
    expect(lease().spec.holderIdentity).toBe("operator-a");
    await waitForQuiet(kube, 300);
    // Slow Lease requests: stop() must wait for the release, not only for leading to end.
    const slowLeases = kube.faults.latency(100, { match: { resource: "leases" } });
    await first.manager.stop();
    expect(await first.outcome).toBe("stopped");
    expect(lease().spec.holderIdentity).toBe("");
    slowLeases();

    const mark = kube.requestLog.mark();
    const second = await start("operator-b");
    await kube.waitFor(() => lease().spec.holderIdentity === "operator-b");
    // Its first reconcile may be over before this line: count from its start.
    await kube.waitFor(async () => (await reconcileCount(second.manager, "builderpool")) >= 1);
    await second.manager.events.flush();
    expect(describeRequests(writesSince(kube, mark))).toEqual([]);
  });
});

describe("a cache behind the operator's own writes", () => {
  it("issues no second CA and rolls nothing", async () => {
    const kube = await cluster();
    await operator(kube);
    // The Secret cache keeps its first (empty) list: its watch is cut and cannot come back.
    const stopFailing = kube.faults.failRate(1, {
      code: 500,
      match: { verb: ["list", "watch"], resource: "secrets" },
    });
    expect(kube.faults.dropWatches({ match: { resource: "secrets" } })).toBe(1);
    createPool(kube, "farm");
    await waitForReady(kube, "farm", { status: "True" });
    await waitForQuiet(kube, 300);
    stopFailing();

    expect(successfulCreates(kube).secrets).toBe(2);
    expect(kube.requestLog.count({ verb: "create", code: 409 })).toBe(0);
    // The pod templates never carried the hash of a certificate nobody kept.
    expect(kube.requestLog.count({ verb: "update", resource: "deployments.apps" })).toBe(0);
    for (const arch of ["amd64", "arm64"]) {
      const sets = kube.store
        .objects<Json>("replicasets.apps", NS)
        .filter((set) => set.metadata.name.startsWith(`farm-${arch}-`));
      expect(sets.length).toBe(1);
    }
  });
});

describe("the pool's status", () => {
  it("is never written from a stale view over someone else's newer status", async () => {
    const kube = await cluster();
    await operator(kube);
    createPool(kube, "farm");
    await waitForReady(kube, "farm", { status: "True" });
    await waitForQuiet(kube, 300);

    // The operator's pool cache stops here: its watch is cut and cannot come back.
    const stopFailing = kube.faults.failRate(1, {
      code: 500,
      match: { verb: ["list", "watch"], resource: "builderpools" },
    });
    expect(kube.faults.dropWatches({ match: { resource: "builderpools" } })).toBe(1);
    // Another writer (the build queue) records two queued amd64 builds.
    kube.store.mutate<Json>(
      POOLS,
      NS,
      "farm",
      (object) => {
        object.status.architectures[0].queued = 2;
      },
      { subresource: "status" },
    );
    // The arm64 node goes: the operator's view of the status changes, on its stale pool.
    const mark = kube.requestLog.mark();
    kube.nodes.remove("arm-1");
    await kube.waitFor(
      () =>
        kube.requestLog.since(mark, {
          verb: "update",
          resource: "builderpools",
          subresource: "status",
          code: 409,
        }).length >= 2,
      { message: "status writes refused as stale" },
    );
    expect(pool(kube, "farm").status.architectures[0].queued).toBe(2);
    expect(
      kube.requestLog.since(mark, { verb: "update", resource: "builderpools", code: 200 }),
    ).toEqual([]);

    // Once the cache catches up, the status carries both.
    stopFailing();
    const condition = await waitForReady(kube, "farm", {
      status: "False",
      reason: "NoNodesForArchitecture",
    });
    expect(condition.message).toContain("arm64");
    expect(pool(kube, "farm").status.architectures[0].queued).toBe(2);
  });
});

describe("a child that lost the operator's labels", () => {
  it("is written back as desired, though the label-filtered cache no longer sees it", async () => {
    const kube = await cluster();
    await operator(kube);
    createPool(kube, "farm");
    await waitForReady(kube, "farm", { status: "True" });
    await waitForQuiet(kube, 300);
    const before = get(kube, "deployments.apps", "farm-amd64");

    // Another tool relabels it and scales it down.
    const mark = kube.requestLog.mark();
    kube.store.mutate<Json>("deployments.apps", NS, "farm-amd64", (deployment) => {
      deployment.metadata.labels["app.kubernetes.io/managed-by"] = "Helm";
      deployment.spec.replicas = 1;
    });
    await kube.waitFor(() => {
      const deployment = get(kube, "deployments.apps", "farm-amd64");
      return (
        deployment.metadata.labels["app.kubernetes.io/managed-by"] === "buildfarm" &&
        deployment.spec.replicas === 2
      );
    });
    await waitForReady(kube, "farm", { status: "True" });
    await waitForQuiet(kube, 300);
    expect(get(kube, "deployments.apps", "farm-amd64").metadata.uid).toBe(before.metadata.uid);
    // Its create found it (409), a read showed it is the pool's, one replace restored it.
    // (A reconcile before the watch brings it back may try the create again: 409 too.)
    const writes = writesSince(kube, mark).filter((record) => record.resource === "deployments");
    expect(describeRequests(writes.filter((record) => record.code < 300))).toEqual([
      "update deployments farm-amd64 200",
    ]);
    expect(describeRequests(writes.filter((record) => record.code >= 300))).toContain(
      "create deployments  409",
    );
    expect(writes.every((record) => record.code < 300 || record.verb === "create")).toBe(true);
  });
});
