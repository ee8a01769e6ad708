import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import {
  CoordinationV1Api,
  CoreV1Api,
  type V1ConfigMap,
  type V1LeaseSpec,
} from "@kubernetes/client-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Manager } from "../../src/runtime/manager.ts";
import { ExponentialFailureRateLimiter } from "../../src/runtime/workqueue.ts";
import { type Kube, startKube } from "../kube/index.ts";
import { type ReconcileRecord, SOURCE_LABEL, sampleManager } from "./sample.ts";

let kube: Kube;
let core: CoreV1Api;
const managers: Manager[] = [];

beforeEach(async () => {
  kube = await startKube({ historySize: 50 });
  core = kube.kubeConfig().makeApiClient(CoreV1Api);
});

afterEach(async () => {
  await Promise.all(managers.splice(0).map((manager) => manager.stop()));
  await kube.stop();
});

function track(manager: Manager): Manager {
  managers.push(manager);
  return manager;
}

function source(name: string, data: Record<string, string> = { a: "1" }): V1ConfigMap {
  return { metadata: { name, namespace: "default", labels: { [SOURCE_LABEL]: "source" } }, data };
}

function copyOf(name: string) {
  return kube.store.get("configmaps", "default", `${name}-copy`) as V1ConfigMap | undefined;
}

describe("a controller on the runtime, against test/kube", () => {
  it("syncs its cache, then turns events into reconciles: create, update, and a deleted child re-made", async () => {
    await core.createNamespacedConfigMap({ namespace: "default", body: source("before-start") });
    const manager = track(sampleManager({ kubeConfig: kube.kubeConfig(), instance: "a" }));
    await manager.start();
    expect(manager.synced).toBe(true);
    await kube.waitFor(() => copyOf("before-start"));

    await core.createNamespacedConfigMap({ namespace: "default", body: source("later") });
    await kube.waitFor(() => copyOf("later")?.data?.a === "1");
    await core
      .patchNamespacedConfigMap(
        { namespace: "default", name: "later", body: { data: { a: "2" } } },
        { middleware: [] } as never,
      )
      .catch(async () => {
        const current = await core.readNamespacedConfigMap({ namespace: "default", name: "later" });
        await core.replaceNamespacedConfigMap({
          namespace: "default",
          name: "later",
          body: { ...current, data: { a: "2" } },
        });
      });
    await kube.waitFor(() => copyOf("later")?.data?.a === "2");
    const uid = copyOf("later")?.metadata?.uid;
    await core.deleteNamespacedConfigMap({ namespace: "default", name: "later-copy" });
    await kube.waitFor(() => copyOf("later") && copyOf("later")?.metadata?.uid !== uid);
  });

  it("retries a conflict and converges", async () => {
    const records: ReconcileRecord[] = [];
    const manager = track(
      sampleManager({
        kubeConfig: kube.kubeConfig(),
        instance: "a",
        record: (r) => r.end && records.push(r),
      }),
    );
    await manager.start();
    await core.createNamespacedConfigMap({ namespace: "default", body: source("c") });
    await kube.waitFor(() => copyOf("c"));
    kube.faults.failNext(1, {
      code: 409,
      match: { verb: "update", resource: "configmaps", name: "c-copy" },
    });
    const current = await core.readNamespacedConfigMap({ namespace: "default", name: "c" });
    await core.replaceNamespacedConfigMap({
      namespace: "default",
      name: "c",
      body: { ...current, data: { a: "changed" } },
    });
    await kube.waitFor(() => copyOf("c")?.data?.a === "changed");
    expect(
      records.filter(
        (r) => r.key === "default/c" && r.error?.includes("Operation cannot be fulfilled"),
      ),
    ).toHaveLength(1);
    expect(
      kube.requestLog.count({ verb: "update", resource: "configmaps", name: "c-copy", code: 409 }),
    ).toBe(1);
    expect(
      kube.requestLog.count({ verb: "update", resource: "configmaps", name: "c-copy", code: 200 }),
    ).toBe(1);
  });

  it("requeues a failing key with exponential backoff until it succeeds", async () => {
    const starts: number[] = [];
    let failures = 4;
    const manager = track(
      sampleManager({
        kubeConfig: kube.kubeConfig(),
        instance: "a",
        rateLimiter: new ExponentialFailureRateLimiter(20, 10_000),
        hook: () => {
          starts.push(performance.now());
          if (failures-- > 0) throw new Error("transient");
        },
      }),
    );
    await manager.start();
    await core.createNamespacedConfigMap({ namespace: "default", body: source("flaky") });
    await kube.waitFor(() => copyOf("flaky"), { timeout: 30_000 });
    // Four failures, one success; the copy's creation may wake one more (owned) reconcile.
    expect(starts.length).toBeGreaterThanOrEqual(5);
    const attempts = starts.slice(0, 5);
    const gaps = attempts.slice(1).map((t, i) => t - (attempts[i] as number));
    // Delays are lower bounds: 20, 40, 80, 160 ms (timers may fire late, never early; 2 ms slack for clock rounding).
    gaps.forEach((gap, i) => {
      expect(gap).toBeGreaterThanOrEqual(20 * 2 ** i - 2);
    });
    const metrics =
      await manager.metrics.registry.getSingleMetricAsString("workqueue_retries_total");
    expect(metrics).toMatch(/workqueue_retries_total\{name="sample",controller="sample"\} 4/);
  });

  it("recovers from a dropped watch and from a resourceVersion too old to resume (410 → relist)", async () => {
    const manager = track(sampleManager({ kubeConfig: kube.kubeConfig(), instance: "a" }));
    await manager.start();
    kube.faults.dropWatches({ mode: "reset" });
    await core.createNamespacedConfigMap({ namespace: "default", body: source("after-drop") });
    await kube.waitFor(() => copyOf("after-drop"));

    // Keep the informer from reconnecting while more than historySize changes happen, so its
    // resourceVersion falls out of the server's history: it must relist, and notice a delete.
    await core.createNamespacedConfigMap({ namespace: "default", body: source("doomed") });
    await kube.waitFor(() => copyOf("doomed"));
    const release = kube.faults.failNext(1000, {
      code: 503,
      match: { verb: "watch", resource: "configmaps" },
    });
    kube.faults.dropWatches({ mode: "reset" });
    for (let i = 0; i < 60; i++)
      kube.store.create("configmaps", {
        metadata: { name: `noise-${i}`, namespace: "default" },
      });
    kube.store.delete("configmaps", "default", "doomed-copy");
    kube.store.create("configmaps", source("while-away") as never);
    release();
    await kube.waitFor(() => copyOf("while-away") && copyOf("doomed"), { timeout: 30_000 });
    const watches = kube.requestLog.entries({ verb: "watch", resource: "configmaps" });
    expect(watches.some((w) => w.code === 200 && /resourceVersion=\d/.test(w.query))).toBe(true);
    expect(kube.requestLog.count({ verb: "list", resource: "configmaps" })).toBeGreaterThanOrEqual(
      2,
    );
  });

  it("shuts down gracefully: no new work, the in-flight reconcile finishes, the Lease is released", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let entered!: () => void;
    const inside = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const manager = sampleManager({
      kubeConfig: kube.kubeConfig(),
      instance: "a",
      leaderElection: {
        leaseName: "sample",
        leaseNamespace: "default",
        leaseDurationMs: 3000,
        renewDeadlineMs: 2000,
        retryPeriodMs: 200,
      },
      hook: async (request) => {
        if (request.name === "slow") {
          entered();
          await gate;
        }
      },
    });
    await manager.start();
    await kube.waitFor(() => manager.isLeader);
    await core.createNamespacedConfigMap({ namespace: "default", body: source("slow") });
    await inside;
    let stopped = false;
    const stopping = manager.stop().then(() => {
      stopped = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(stopped).toBe(false);
    await core.createNamespacedConfigMap({ namespace: "default", body: source("too-late") });
    release();
    await stopping;
    expect(copyOf("slow")).toBeDefined(); // the in-flight reconcile finished its write
    expect(copyOf("too-late")).toBeUndefined(); // nothing new was taken
    const lease = await kube
      .kubeConfig()
      .makeApiClient(CoordinationV1Api)
      .readNamespacedLease({ namespace: "default", name: "sample" });
    expect(lease.spec?.holderIdentity ?? "").toBe("");
    expect(await manager.done).toBe("stopped");
  });

  it("gives up when its caches cannot sync, leaving nothing running: no health server, no watch", async () => {
    const fail = kube.faults.failRate(1, { code: 503, match: { resource: "configmaps" } });
    const manager = sampleManager({
      kubeConfig: kube.kubeConfig(),
      instance: "a",
      health: true,
      cacheSyncTimeoutMs: 500,
    });
    try {
      await expect(manager.start()).rejects.toThrow(/sync/);
      const { port } = manager.healthAddress;
      expect(port).toBeGreaterThan(0);
      await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
      // The informer stopped trying: after a while, no list request but the one that may have
      // been on its way when it gave up (the log has a request once it is answered, and a busy
      // machine can answer that one late). A retrying informer (backoff from 200 ms, doubling)
      // would list three times in these 4 s.
      const mark = kube.requestLog.mark();
      await new Promise((resolve) => setTimeout(resolve, 4000));
      expect(
        kube.requestLog.since(mark).filter((r) => r.resource === "configmaps").length,
      ).toBeLessThanOrEqual(1);
    } finally {
      fail();
    }
  });

  it("answers /metrics, /healthz, and /readyz only once the caches synced", async () => {
    kube.faults.latency(600, { match: { verb: "list", resource: "configmaps" } });
    const manager = track(
      sampleManager({ kubeConfig: kube.kubeConfig(), instance: "a", health: true }),
    );
    const starting = manager.start();
    await kube.waitFor(() => manager.healthAddress.port > 0);
    const base = `http://127.0.0.1:${manager.healthAddress.port}`;
    const early = await fetch(`${base}/readyz`);
    expect(early.status).toBe(503);
    expect(await early.text()).toContain("configmaps");
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    await starting;
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    await core.createNamespacedConfigMap({ namespace: "default", body: source("m") });
    await kube.waitFor(() => copyOf("m"));
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(
      /controller_runtime_reconcile_total\{controller="sample",result="success"\} [1-9]/,
    );
    expect(metrics).toMatch(/workqueue_adds_total\{name="sample",controller="sample"\} [1-9]/);
    expect(metrics).toContain("controller_runtime_reconcile_time_seconds_bucket");
    expect(metrics).toContain("workqueue_queue_duration_seconds_bucket");
    expect(metrics).toMatch(/rest_client_requests_total\{verb="POST",code="201"\} [1-9]/);
  });
});

describe("leader election between two instances", () => {
  const lease = {
    leaseName: "sample",
    leaseNamespace: "default",
    leaseDurationMs: 2000,
    renewDeadlineMs: 1500,
    retryPeriodMs: 200,
  };

  /** A Lease that cannot expire within a test: a takeover under it comes from a release. */
  const longLease = { ...lease, leaseDurationMs: 60_000, renewDeadlineMs: 45_000 };

  /** No key was ever inside reconcile in two instances at once. */
  function assertNoOverlap(records: ReconcileRecord[]): void {
    const byKey = new Map<string, ReconcileRecord[]>();
    for (const record of records) byKey.set(record.key, [...(byKey.get(record.key) ?? []), record]);
    for (const [key, list] of byKey) {
      const sorted = list.filter((r) => r.end !== undefined).sort((a, b) => a.start - b.start);
      for (let i = 1; i < sorted.length; i++) {
        const previous = sorted[i - 1] as ReconcileRecord;
        const current = sorted[i] as ReconcileRecord;
        if (previous.instance !== current.instance) {
          expect(
            current.start,
            `${key}: ${previous.instance} until ${previous.end}, ${current.instance} from ${current.start}`,
          ).toBeGreaterThanOrEqual(previous.end as number);
        }
      }
    }
  }

  it("hands over on a graceful stop through the released Lease, and only the leader reconciles", async () => {
    const records: ReconcileRecord[] = [];
    const record = (r: ReconcileRecord) => r.end !== undefined && records.push(r);
    const a = sampleManager({
      kubeConfig: kube.kubeConfig(),
      instance: "a",
      leaderElection: longLease,
      record,
    });
    const b = track(
      sampleManager({
        kubeConfig: kube.kubeConfig(),
        instance: "b",
        leaderElection: longLease,
        record,
      }),
    );
    await a.start();
    await kube.waitFor(() => a.isLeader);
    await b.start();
    await core.createNamespacedConfigMap({ namespace: "default", body: source("one") });
    await kube.waitFor(() => copyOf("one"));
    expect(b.isLeader).toBe(false);
    expect(records.filter((r) => r.instance === "b")).toEqual([]);

    await a.stop();
    // Released, so b need not wait out the lease duration: it takes over at its next retry.
    // The Lease lasts a minute, so only the release explains a takeover within 30 s, however
    // slow a busy machine makes the retries.
    await kube.waitFor(() => b.isLeader, { timeout: 30_000, message: "b leads" });
    await core.createNamespacedConfigMap({ namespace: "default", body: source("two") });
    // The copy is written inside the reconcile, and the record made when it returns.
    await kube.waitFor(() => records.some((r) => r.instance === "b" && r.key === "default/two"), {
      message: "b reconciled default/two",
    });
    expect(copyOf("two")).toBeDefined();
    assertNoOverlap(records);
  });

  it("stops at once when it cannot renew: an in-flight reconcile's write is refused by the fence", async () => {
    let entered!: () => void;
    const inside = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let resume!: () => void;
    const paused = new Promise<void>((resolve) => {
      resume = resolve;
    });
    const records: ReconcileRecord[] = [];
    const a = sampleManager({
      kubeConfig: kube.kubeConfig(),
      instance: "a",
      leaderElection: lease,
      record: (r) => r.end !== undefined && records.push(r),
      hook: async (request) => {
        if (request.name === "fenced") {
          entered();
          await paused;
        }
      },
    });
    await a.start();
    await kube.waitFor(() => a.isLeader);
    await core.createNamespacedConfigMap({ namespace: "default", body: source("fenced") });
    await inside;
    const cut = kube.faults.failNext(10_000, { code: 500, match: { resource: "leases" } });
    expect(await a.done).toBe("leadership-lost");
    resume();
    await kube.waitFor(() => records.some((r) => r.key === "default/fenced"));
    expect(records.find((r) => r.key === "default/fenced")?.error).toMatch(/not the leader/);
    expect(copyOf("fenced")).toBeUndefined();
    cut();
  });

  it("takes over once the killed leader's Lease expires, never before, without overlapping reconciles", async () => {
    const records: ReconcileRecord[] = [];
    const child = spawn(
      process.execPath,
      ["test/runtime/sample-process.ts", kube.url, "a", JSON.stringify(lease)],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const lines = createInterface(child.stdout);
    let ready = false;
    lines.on("line", (line) => {
      const message = JSON.parse(line) as ReconcileRecord & { ready?: boolean };
      if (message.ready) ready = true;
      else if (message.end !== undefined) records.push(message);
    });
    try {
      await kube.waitFor(() => ready, { timeout: 30_000 });
      const leaseApi = kube.kubeConfig().makeApiClient(CoordinationV1Api);
      await kube.waitFor(
        async () =>
          (await leaseApi.readNamespacedLease({ namespace: "default", name: "sample" })).spec
            ?.holderIdentity === "a",
      );
      // What the Lease said: a's renewals, then b's acquisition.
      const renewedByA: number[] = [];
      let acquiredByB: number | undefined;
      const stopWatching = kube.store.onChange((event, info) => {
        if (info.resource !== "leases" || event.object.metadata.name !== "sample") return;
        const spec = (event.object as { spec?: V1LeaseSpec }).spec;
        const renewed = Date.parse(String(spec?.renewTime ?? ""));
        if (spec?.holderIdentity === "a") renewedByA.push(renewed);
        if (spec?.holderIdentity === "b" && acquiredByB === undefined)
          acquiredByB = Date.parse(String(spec.acquireTime ?? ""));
      });
      const b = track(
        sampleManager({
          kubeConfig: kube.kubeConfig(),
          instance: "b",
          leaderElection: lease,
          record: (r) => r.end !== undefined && records.push(r),
        }),
      );
      await b.start();
      for (let i = 0; i < 20; i++)
        await core.createNamespacedConfigMap({ namespace: "default", body: source(`burst-${i}`) });
      await kube.waitFor(() =>
        records.some((r) => r.instance === "a" && r.key.startsWith("default/burst-")),
      );
      const before = (await leaseApi.readNamespacedLease({ namespace: "default", name: "sample" }))
        .spec;
      if (before?.holderIdentity === "a") renewedByA.push(Date.parse(String(before.renewTime)));
      child.kill("SIGKILL");
      await kube.waitFor(() => b.isLeader, { timeout: 30_000, message: "b leads" });
      stopWatching();
      // b took the Lease only once a's last renewal was a lease duration old (never early),
      // whenever a busy machine let b's retry run.
      const lastRenewal = Math.max(...renewedByA);
      expect(renewedByA.length).toBeGreaterThan(0);
      expect(acquiredByB).toBeDefined();
      expect((acquiredByB as number) - lastRenewal).toBeGreaterThanOrEqual(lease.leaseDurationMs);
      await kube.waitFor(
        () => Array.from({ length: 20 }, (_, i) => copyOf(`burst-${i}`)).every(Boolean),
        { timeout: 30_000 },
      );
      const held = (await leaseApi.readNamespacedLease({ namespace: "default", name: "sample" }))
        .spec;
      expect(held?.holderIdentity).toBe("b");
      expect(held?.leaseTransitions).toBe(1);
      assertNoOverlap(records);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
