// The BuilderPool controller end to end: the real Manager (informers, work queue, controller)
// and PoolReconciler talk HTTP through client-node to test/kube, whose simulated scheduler,
// kubelet and workload controllers run the builders. Fixtures are written through
// `kube.store`, which bypasses the request log, so the log holds only the operator's requests.
import { afterEach, describe, expect, it } from "vitest";
import { DEFAULT_BUILDKIT_IMAGE } from "../../src/api/builderpool.ts";
import { loadConfig } from "../../src/config.ts";
import { startOperator } from "../../src/main.ts";
import { setupPoolController } from "../../src/pool/controller.ts";
import { APPARMOR_ANNOTATION } from "../../src/pool/workload.ts";
import { type Kube, type KubeOptions, startKube } from "../kube/index.ts";
import type { KubeObject, Stored } from "../kube/objects.ts";
import {
  describeRequests,
  reconcileCount,
  reconciles,
  startTestOperator,
  type TestOperator,
  testLogger,
  writesSince,
} from "../support/operator.ts";

const NS = "builders";
const POOLS = "builderpools.buildfarm.dev";
const ARCH_LABEL = "kubernetes.io/arch";
const CERT_HASH = "buildfarm.dev/cert-hash";
const DAY = 86_400_000;

// biome-ignore lint/suspicious/noExplicitAny: tests read stored JSON freely
type Json = any;

const running: { kube?: Kube; operators: TestOperator[] } = { operators: [] };

afterEach(async () => {
  for (const operator of running.operators.splice(0)) await operator.stop();
  await running.kube?.stop();
  running.kube = undefined;
});

async function cluster(options: KubeOptions = {}): Promise<Kube> {
  const kube = await startKube({
    version: "1.31",
    nodes: [
      { name: "amd-1", arch: "amd64" },
      { name: "amd-2", arch: "amd64" },
      { name: "arm-1", arch: "arm64" },
    ],
    namespaces: [NS],
    // Builder pods stop at once when deleted (grace periods are scaled down).
    timeScale: 0.01,
    ...options,
  });
  running.kube = kube;
  return kube;
}

interface OperatorOptions {
  now?: () => Date;
  resyncMs?: number;
}

async function operator(kube: Kube, options: OperatorOptions = {}): Promise<TestOperator> {
  const started = await startTestOperator(kube, {
    resyncMs: options.resyncMs ?? 60_000,
    setup: (manager) => {
      setupPoolController(manager, {
        defaultImage: DEFAULT_BUILDKIT_IMAGE,
        workers: 2,
        now: options.now,
      });
    },
  });
  running.operators.push(started);
  return started;
}

function poolSpec(spec: Json = {}): Json {
  return {
    architectures: [
      { name: "amd64", replicas: 2 },
      { name: "arm64", replicas: 1 },
    ],
    cache: { type: "EmptyDir", size: "20Gi" },
    ...spec,
  };
}

function createPool(kube: Kube, name: string, spec: Json = poolSpec()): Stored {
  return kube.store.create(POOLS, {
    apiVersion: "buildfarm.dev/v1alpha1",
    kind: "BuilderPool",
    metadata: { name, namespace: NS },
    spec,
  });
}

function changePool(kube: Kube, name: string, change: (spec: Json) => void): void {
  kube.store.mutate<Json>(POOLS, NS, name, (pool) => change(pool.spec));
}

const pool = (kube: Kube, name: string): Json => kube.store.get(POOLS, NS, name);
const get = (kube: Kube, resource: string, name: string): Json =>
  kube.store.get(resource, NS, name);
const ready = (kube: Kube, name: string): Json =>
  pool(kube, name)?.status?.conditions?.find((c: Json) => c.type === "Ready");

/** Waits until the pool's Ready condition, for its current generation, matches. */
async function waitForReady(
  kube: Kube,
  name: string,
  expected: { status: string; reason?: string },
  timeout = 10_000,
): Promise<Json> {
  return kube.waitFor(
    () => {
      const current = pool(kube, name);
      const condition = ready(kube, name);
      return (
        condition?.status === expected.status &&
        (expected.reason === undefined || condition.reason === expected.reason) &&
        current.status.observedGeneration === current.metadata.generation &&
        condition
      );
    },
    {
      timeout,
      message: `pool ${name} Ready=${expected.status} ${expected.reason ?? ""} (now ${JSON.stringify(ready(kube, name))})`,
    },
  );
}

/** Pods of one architecture's builders that are not being deleted. */
function builderPods(kube: Kube, pool: string, arch: string): Json[] {
  return kube.store
    .objects<Json>("pods", NS)
    .filter(
      (pod: Json) =>
        pod.metadata.labels?.["buildfarm.dev/pool"] === pool &&
        pod.metadata.labels?.["buildfarm.dev/arch"] === arch &&
        !pod.metadata.deletionTimestamp,
    );
}

const isReady = (pod: Json) =>
  pod.status?.conditions?.some((c: Json) => c.type === "Ready" && c.status === "True");

/** Every object in the namespace whose controller owner reference is `uid`. */
function childrenOf(kube: Kube, uid: string): string[] {
  const kinds = [
    "secrets",
    "configmaps",
    "services",
    "deployments.apps",
    "statefulsets.apps",
    "poddisruptionbudgets.policy",
    "networkpolicies.networking.k8s.io",
  ];
  return kinds.flatMap((resource) =>
    kube.store
      .objects<KubeObject>(resource, NS)
      .filter((object) =>
        object.metadata.ownerReferences?.some((ref) => ref.uid === uid && ref.controller),
      )
      .map((object) => `${resource.split(".")[0]}/${object.metadata.name}`),
  );
}

/**
 * Waits until the operator has written nothing for `quietMs`: converged. Resyncs and requeues
 * keep reconciling meanwhile, so a controller that flaps never gets quiet.
 */
async function waitForQuiet(kube: Kube, quietMs: number, timeout = 10_000): Promise<void> {
  await kube.waitFor(
    () => {
      const last = writesSince(kube, 0).at(-1);
      return !last || Date.now() - last.time >= quietMs;
    },
    { timeout, interval: 50, message: "the operator to stop writing" },
  );
}

describe("a new pool", () => {
  it("gets per-architecture builders on native nodes, every child owned by the pool, then Ready", async () => {
    const held = new Set(["arm64"]);
    const kube = await cluster({
      // arm64 builders start unready, so Ready must wait for them.
      readiness: (pod) => !held.has(pod.metadata?.labels?.["buildfarm.dev/arch"] ?? ""),
    });
    await operator(kube);
    const created = createPool(kube, "farm");
    const uid = created.metadata.uid as string;

    // amd64 comes up; the pool waits for arm64.
    await kube.waitFor(
      () => ready(kube, "farm")?.message === "builders not ready: amd64 2/2, arm64 0/1",
      { message: "amd64 ready, arm64 not" },
    );
    expect(ready(kube, "farm")).toMatchObject({ status: "False", reason: "BuildersNotReady" });

    for (const arch of ["amd64", "arm64"]) {
      const deployment = get(kube, "deployments.apps", `farm-${arch}`);
      expect(deployment.metadata.ownerReferences).toEqual([
        {
          apiVersion: "buildfarm.dev/v1alpha1",
          kind: "BuilderPool",
          name: "farm",
          uid,
          controller: true,
          blockOwnerDeletion: true,
        },
      ]);
      const affinity = deployment.spec.template.spec.affinity.nodeAffinity;
      expect(
        affinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]
          .matchExpressions,
      ).toContainEqual({ key: ARCH_LABEL, operator: "In", values: [arch] });
      expect(deployment.spec.template.spec.containers[0].image).toBe(DEFAULT_BUILDKIT_IMAGE);
      // Pods land only on nodes of their architecture.
      const pods = builderPods(kube, "farm", arch);
      expect(pods.length).toBe(arch === "amd64" ? 2 : 1);
      for (const pod of pods) {
        const node = kube.store.get<Json>("nodes", undefined, pod.spec.nodeName);
        expect(node.metadata.labels[ARCH_LABEL]).toBe(arch);
      }
    }
    const service = get(kube, "services", "farm-amd64");
    expect(service.spec.clusterIP).not.toBe("None");
    expect(service.spec.ports).toMatchObject([{ port: 1234, targetPort: "buildkit" }]);
    expect(get(kube, "services", "farm-arm64-headless").spec.clusterIP).toBe("None");
    expect(get(kube, "secrets", "farm-buildkit-server").type).toBe("kubernetes.io/tls");
    expect(Object.keys(get(kube, "secrets", "farm-buildkit-ca").data).sort()).toEqual([
      "ca.crt",
      "ca.key",
    ]);
    expect(get(kube, "configmaps", "farm-buildkitd-config").data["buildkitd.toml"]).toContain(
      "[worker.oci]",
    );
    expect(childrenOf(kube, uid).sort()).toEqual(
      [
        "configmaps/farm-buildkitd-config",
        "deployments/farm-amd64",
        "deployments/farm-arm64",
        "networkpolicies/farm-builders",
        // amd64 runs two builders, arm64 one: only amd64 gets a disruption budget.
        "poddisruptionbudgets/farm-amd64",
        "secrets/farm-buildkit-ca",
        "secrets/farm-buildkit-server",
        "services/farm-amd64",
        "services/farm-amd64-headless",
        "services/farm-arm64",
        "services/farm-arm64-headless",
      ].sort(),
    );

    held.clear();
    const condition = await waitForReady(kube, "farm", { status: "True", reason: "Ready" });
    expect(condition.message).toBe("builders ready: amd64 2/2, arm64 1/1");
    const status = pool(kube, "farm").status;
    expect(status.observedGeneration).toBe(1);
    expect(status.summary).toBe("amd64 2/2, arm64 1/1");
    expect(status.architectures).toMatchObject([
      { name: "amd64", replicas: 2, readyReplicas: 2, conditions: [{ status: "True" }] },
      { name: "arm64", replicas: 1, readyReplicas: 1, conditions: [{ status: "True" }] },
    ]);
    expect(Date.parse(status.certificateNotAfter)).toBeGreaterThan(Date.now() + 80 * DAY);
    for (const arch of ["amd64", "arm64"])
      expect(builderPods(kube, "farm", arch).every(isReady)).toBe(true);
  });
});

describe("an architecture without nodes", () => {
  it("reports NoNodesForArchitecture naming it, and becomes Ready when such a node joins", async () => {
    const kube = await cluster({ nodes: [{ name: "amd-1", arch: "amd64" }] });
    await operator(kube);
    createPool(kube, "farm", poolSpec({ architectures: [{ name: "amd64" }, { name: "arm64" }] }));

    const condition = await waitForReady(kube, "farm", {
      status: "False",
      reason: "NoNodesForArchitecture",
    });
    expect(condition.message).toBe(
      "arm64: no node has the label kubernetes.io/arch=arm64: add arm64 nodes to the cluster, or remove arm64 from spec.architectures",
    );
    expect(pool(kube, "farm").status.architectures[1].conditions[0]).toMatchObject({
      status: "False",
      reason: "NoNodesForArchitecture",
    });
    // The builder waits, unschedulable, rather than landing on an amd64 node.
    const [pending] = builderPods(kube, "farm", "arm64");
    expect(pending.spec.nodeName).toBeUndefined();

    // Nothing about the pool changes; only the node watch can wake the controller.
    kube.nodes.add({ name: "arm-1", arch: "arm64" });
    await waitForReady(kube, "farm", { status: "True", reason: "Ready" });
    expect(builderPods(kube, "farm", "arm64")[0].spec.nodeName).toBe("arm-1");
  });
});

describe("a spec change", () => {
  it("updates the builders in place and records the scaling", async () => {
    const kube = await cluster();
    await operator(kube);
    createPool(kube, "farm");
    await waitForReady(kube, "farm", { status: "True" });
    const before = get(kube, "deployments.apps", "farm-amd64");

    changePool(kube, "farm", (spec) => {
      spec.architectures[0].replicas = 3;
      spec.architectures[0].resources = { requests: { cpu: "1", memory: "2Gi" } };
      spec.buildkit = { image: "moby/buildkit:v0.23.2-rootless" };
    });
    await kube.waitFor(() => get(kube, "deployments.apps", "farm-amd64").spec.replicas === 3);
    const after = get(kube, "deployments.apps", "farm-amd64");
    expect(after.metadata.uid).toBe(before.metadata.uid);
    const container = after.spec.template.spec.containers[0];
    expect(container.image).toBe("moby/buildkit:v0.23.2-rootless");
    expect(container.resources).toEqual({ requests: { cpu: "1", memory: "2Gi" } });
    await waitForReady(kube, "farm", { status: "True" });
    expect(pool(kube, "farm").status).toMatchObject({
      observedGeneration: 2,
      summary: "amd64 3/3, arm64 1/1",
    });
    // The rollout replaced every amd64 builder with the new image.
    await kube.waitFor(() => {
      const pods = builderPods(kube, "farm", "amd64");
      return (
        pods.length === 3 &&
        pods.every(
          (pod) =>
            pod.spec.containers[0].image === "moby/buildkit:v0.23.2-rootless" && isReady(pod),
        )
      );
    });
    const events = await kube.waitFor(() => {
      const found = kube.store
        .objects<Json>("events", NS)
        .filter((event) => event.involvedObject.name === "farm" && event.reason === "ScaledUp");
      return found.length > 0 && found;
    });
    expect(events.map((event: Json) => event.message)).toEqual(["amd64 builders 2 → 3"]);
  });

  it("deletes the Deployment, Services and budget of a removed architecture", async () => {
    const kube = await cluster();
    await operator(kube);
    createPool(
      kube,
      "farm",
      poolSpec({
        architectures: [
          { name: "amd64", replicas: 2 },
          { name: "arm64", replicas: 2 },
        ],
      }),
    );
    await waitForReady(kube, "farm", { status: "True" });
    expect(get(kube, "poddisruptionbudgets.policy", "farm-arm64")).toBeDefined();
    const uid = pool(kube, "farm").metadata.uid;

    changePool(kube, "farm", (spec) => {
      spec.architectures = [{ name: "amd64", replicas: 1 }];
    });
    await waitForReady(kube, "farm", { status: "True" });
    await kube.waitFor(() => builderPods(kube, "farm", "arm64").length === 0);
    // One amd64 replica needs no budget either.
    expect(childrenOf(kube, uid).sort()).toEqual([
      "configmaps/farm-buildkitd-config",
      "deployments/farm-amd64",
      "networkpolicies/farm-builders",
      "secrets/farm-buildkit-ca",
      "secrets/farm-buildkit-server",
      "services/farm-amd64",
      "services/farm-amd64-headless",
    ]);
    expect(pool(kube, "farm").status.summary).toBe("amd64 1/1");
  });

  it("swaps the Deployments for StatefulSets when the cache becomes Persistent", async () => {
    const kube = await cluster();
    await operator(kube);
    createPool(kube, "farm");
    await waitForReady(kube, "farm", { status: "True" });

    changePool(kube, "farm", (spec) => {
      spec.cache = { type: "Persistent", size: "20Gi" };
    });
    await waitForReady(kube, "farm", { status: "True" });
    for (const arch of ["amd64", "arm64"]) {
      expect(get(kube, "deployments.apps", `farm-${arch}`)).toBeUndefined();
      const set = get(kube, "statefulsets.apps", `farm-${arch}`);
      expect(set.spec.serviceName).toBe(`farm-${arch}-headless`);
    }
    await kube.waitFor(() =>
      ["amd64", "arm64"].every((arch) =>
        builderPods(kube, "farm", arch).every((pod) =>
          pod.metadata.ownerReferences?.some((ref: Json) => ref.kind === "StatefulSet"),
        ),
      ),
    );
    expect(
      builderPods(kube, "farm", "amd64")
        .map((pod) => pod.metadata.name)
        .sort(),
    ).toEqual(["farm-amd64-0", "farm-amd64-1"]);
    expect(
      kube.store.objects<Json>("persistentvolumeclaims", NS).map((claim) => claim.metadata.name),
    ).toContain("state-farm-amd64-0");
  });
});

describe("a certificate near expiry", () => {
  it("is renewed, the new hash rolls the builders, and an Event says so", async () => {
    const kube = await cluster();
    let clock = Date.now();
    await operator(kube, { now: () => new Date(clock), resyncMs: 300 });
    createPool(kube, "farm");
    await waitForReady(kube, "farm", { status: "True" });
    const server = get(kube, "secrets", "farm-buildkit-server");
    const ca = get(kube, "secrets", "farm-buildkit-ca");
    const hash = get(kube, "deployments.apps", "farm-amd64").spec.template.metadata.annotations[
      CERT_HASH
    ];
    const oldPods = builderPods(kube, "farm", "amd64").map((pod) => pod.metadata.name);
    const notAfter = pool(kube, "farm").status.certificateNotAfter;

    // Two thirds of the 90-day server certificate have passed; the one-year CA is fine.
    clock += 61 * DAY;
    const rotated = await kube.waitFor(() => {
      const secret = get(kube, "secrets", "farm-buildkit-server");
      return secret.data["tls.crt"] !== server.data["tls.crt"] && secret;
    });
    expect(rotated.metadata.uid).toBe(server.metadata.uid);
    expect(rotated.data["tls.key"]).not.toBe(server.data["tls.key"]);
    expect(get(kube, "secrets", "farm-buildkit-ca").data).toEqual(ca.data);
    await kube.waitFor(
      () =>
        get(kube, "deployments.apps", "farm-amd64").spec.template.metadata.annotations[
          CERT_HASH
        ] !== hash,
    );
    // Every old builder is replaced by one that mounted the new certificate.
    await kube.waitFor(() => {
      const pods = builderPods(kube, "farm", "amd64");
      return (
        pods.length === 2 &&
        pods.every((pod) => !oldPods.includes(pod.metadata.name) && isReady(pod))
      );
    });
    await kube.waitFor(() => pool(kube, "farm").status.certificateNotAfter !== notAfter);
    const event = await kube.waitFor(() =>
      kube.store
        .objects<Json>("events", NS)
        .find((e) => e.involvedObject.name === "farm" && e.reason === "CertificateRotated"),
    );
    expect(event.message).toContain("issued a new buildkitd server certificate (NearExpiry)");
    expect(JSON.stringify(event)).not.toContain("PRIVATE KEY");
  });
});

describe("deleting a pool", () => {
  it.each(["Background", "Foreground"] as const)(
    "garbage-collects every child through owner references (%s)",
    async (propagationPolicy) => {
      const kube = await cluster();
      await operator(kube, { resyncMs: 200 });
      const created = createPool(
        kube,
        "farm",
        poolSpec({ cache: { type: "Persistent", size: "20Gi" } }),
      );
      await waitForReady(kube, "farm", { status: "True" });
      const uid = created.metadata.uid as string;
      expect(childrenOf(kube, uid).length).toBe(11);
      expect(kube.store.objects("persistentvolumeclaims", NS).length).toBe(3);
      const mark = kube.requestLog.mark();

      kube.store.delete(POOLS, NS, "farm", { propagationPolicy });
      await kube.waitFor(
        () =>
          !pool(kube, "farm") &&
          childrenOf(kube, uid).length === 0 &&
          kube.store.objects("pods", NS).length === 0 &&
          kube.store.objects("persistentvolumeclaims", NS).length === 0,
        { message: "the pool and everything it made gone" },
      );
      await kube.settled();
      // The operator let the garbage collector work (resyncs went on while the pool was
      // terminating): it created, changed and deleted nothing. Only status writes of a
      // reconcile that still saw the pool may have gone out (and met 409 or 404).
      const writes = writesSince(kube, mark).filter(
        (record) => record.resource !== "events" && record.subresource !== "status",
      );
      expect(describeRequests(writes)).toEqual([]);
    },
  );
});

describe("an invalid pool", () => {
  it.each([
    {
      what: "GC keeping as much as the cache holds",
      spec: poolSpec({ buildkit: { gc: { keepStorage: "20Gi" } } }),
      field: "spec.buildkit.gc.keepStorage: 20Gi must be below spec.cache.size (20Gi)",
      fix: (spec: Json) => {
        spec.buildkit.gc.keepStorage = "10Gi";
      },
    },
    {
      what: "a nodeSelector key the CRD cannot pattern",
      spec: poolSpec({
        architectures: [{ name: "amd64", nodeSelector: { "not a key!": "x" } }],
      }),
      field: "spec.architectures[0].nodeSelector",
      fix: (spec: Json) => {
        spec.architectures[0].nodeSelector = { "kubernetes.io/os": "linux" };
      },
    },
  ])("reports InvalidSpec for $what, and recovers once fixed", async ({ spec, field, fix }) => {
    const kube = await cluster();
    await operator(kube);
    createPool(kube, "farm", spec);

    const condition = await waitForReady(kube, "farm", {
      status: "False",
      reason: "InvalidSpec",
    });
    expect(condition.message).toContain(field);
    // Nothing was built from a spec the operator refuses.
    expect(kube.store.objects("deployments.apps", NS)).toEqual([]);
    expect(kube.store.objects("secrets", NS)).toEqual([]);
    const warning = await kube.waitFor(() =>
      kube.store.objects<Json>("events", NS).find((e) => e.reason === "InvalidSpec"),
    );
    expect(warning.type).toBe("Warning");

    changePool(kube, "farm", fix);
    await waitForReady(kube, "farm", { status: "True", reason: "Ready" });
  });
});

describe("AppArmor", () => {
  it.each([
    { version: "1.29", annotation: "unconfined", field: undefined },
    { version: "1.31", annotation: undefined, field: { type: "Unconfined" } },
  ])("on a $version server", async ({ version, annotation, field }) => {
    const kube = await cluster({ version });
    await operator(kube);
    createPool(kube, "farm");
    await waitForReady(kube, "farm", { status: "True" });
    const template = get(kube, "deployments.apps", "farm-arm64").spec.template;
    expect(template.metadata.annotations[APPARMOR_ANNOTATION]).toBe(annotation);
    expect(template.spec.containers[0].securityContext.appArmorProfile).toEqual(field);
  });
});

/** Successful creates per resource, Events left out: {secrets: 2, ...}. */
function successfulCreates(kube: Kube): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const record of kube.requestLog.entries({ verb: "create", code: 201 })) {
    if (record.resource === "events" || !record.resource) continue;
    counts[record.resource] = (counts[record.resource] ?? 0) + 1;
  }
  return counts;
}

describe("a converged pool", () => {
  it("costs no writes through resyncs", async () => {
    const kube = await cluster();
    const running = await operator(kube, { resyncMs: 200 });
    createPool(kube, "farm");
    await waitForReady(kube, "farm", { status: "True" });
    await waitForQuiet(kube, 500);

    const mark = kube.requestLog.mark();
    // Every resync reconciles the pool again, once per informer that holds one of its children.
    await reconciles(kube, running.manager, "builderpool", 6);
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

describe("a faulty API server", () => {
  it("converges with 15% of requests failing and watches dropped, without a hot loop", async () => {
    const kube = await cluster();
    // FAULT_SEED=n replays another sequence of failures.
    const seed = Number(process.env.FAULT_SEED ?? 7);
    kube.faults.failRate(0.1, { seed, code: 500 });
    kube.faults.failRate(0.05, { seed: seed + 1000, code: 429, retryAfterSeconds: 1 });
    // Watches are closed every 1.5 s and cut (connection reset) right after each change
    // below, so the events the operator waits for arrive through resumed watches; three
    // resumes get 410 Gone and relist. (Informers back off from watches that fail, or end
    // within a second without an event, as client-go's reflector does; quiet kinds cut more
    // often than that fall behind by up to 30 s, which would only make this test slow.)
    kube.faults.dropWatchesEvery(1_500, { mode: "close" });
    kube.faults.expireWatches(3);
    const running = await operator(kube, { resyncMs: 1_000 });
    createPool(kube, "farm");
    kube.faults.dropWatches({ mode: "reset" });
    await waitForReady(kube, "farm", { status: "True" }, 20_000);
    changePool(kube, "farm", (spec) => {
      spec.architectures[1].replicas = 2;
    });
    kube.faults.dropWatches({ mode: "reset" });
    await waitForReady(kube, "farm", { status: "True" }, 20_000);

    const uid = pool(kube, "farm").metadata.uid;
    expect(childrenOf(kube, uid).length).toBe(12); // the arm64 budget joined
    expect(pool(kube, "farm").status.summary).toBe("amd64 2/2, arm64 2/2");
    // One CA, one certificate, one ReplicaSet per architecture: nothing issued or rolled twice.
    expect(successfulCreates(kube).secrets).toBe(2);
    expect(kube.store.objects("replicasets.apps", NS).length).toBe(2);
    // Measured over seeds 1-20: 41 to 85 requests besides watches, 26 to 38 of them writes
    // (without faults: 36 and 24). A reconcile loop that does not back off blows through this.
    const requests = kube.requestLog.entries().filter((record) => record.verb !== "watch");
    expect(requests.length).toBeLessThan(200);
    expect(writesSince(kube, 0).length).toBeLessThan(80);

    // Once the faults stop, it settles and stays quiet.
    kube.faults.clear();
    await waitForQuiet(kube, 1_000, 20_000);
    const mark = kube.requestLog.mark();
    await reconciles(kube, running.manager, "builderpool", 2);
    expect(describeRequests(writesSince(kube, mark))).toEqual([]);
  });
});

describe("a child name taken by someone else's object", () => {
  it.each([
    { what: "outside the operator's caches", labels: { app: "other" } },
    {
      what: "in the caches (it carries the managed-by label)",
      labels: { "app.kubernetes.io/managed-by": "buildfarm" },
    },
  ])("is reported as NameConflict and left alone: $what", async ({ labels }) => {
    const kube = await cluster();
    await operator(kube);
    const foreign = kube.store.create("services", {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "farm-amd64", namespace: NS, labels },
      spec: { selector: { app: "other" }, ports: [{ port: 80 }] },
    });
    createPool(kube, "farm");

    const condition = await waitForReady(kube, "farm", { status: "False", reason: "NameConflict" });
    expect(condition.message).toBe(
      "Service builders/farm-amd64 already exists and is not managed by this object; rename or delete it",
    );
    expect(get(kube, "services", "farm-amd64").metadata.resourceVersion).toBe(
      foreign.metadata.resourceVersion,
    );
    const warning = await kube.waitFor(() =>
      kube.store.objects<Json>("events", NS).find((e) => e.reason === "NameConflict"),
    );
    expect(warning.type).toBe("Warning");

    // Once it is gone the pool gets its own (a change of the pool wakes the controller at once).
    kube.store.delete("services", NS, "farm-amd64");
    kube.store.mutate<Json>(POOLS, NS, "farm", (pool) => {
      pool.metadata.annotations = { nudge: "1" };
    });
    await waitForReady(kube, "farm", { status: "True" });
    expect(get(kube, "services", "farm-amd64").metadata.ownerReferences[0].name).toBe("farm");
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
      running.operators.push({ manager: started.manager, stop: () => started.manager.stop() });
      return started;
    };
    const lease = () =>
      kube.store.get<Json>("leases.coordination.k8s.io", NS, "buildfarm-operator");

    const first = await start("operator-a");
    createPool(kube, "farm");
    await waitForReady(kube, "farm", { status: "True" });
    expect(lease().spec.holderIdentity).toBe("operator-a");
    await waitForQuiet(kube, 300);
    await first.manager.stop();
    expect(await first.outcome).toBe("stopped");
    expect(lease().spec.holderIdentity).toBe("");

    const mark = kube.requestLog.mark();
    const second = await start("operator-b");
    await kube.waitFor(() => lease().spec.holderIdentity === "operator-b");
    // Its first reconcile may be over before this line: count from its start.
    await kube.waitFor(async () => (await reconcileCount(second.manager, "builderpool")) >= 1);
    await second.manager.events.flush();
    expect(describeRequests(writesSince(kube, mark))).toEqual([]);
  });
});

describe("a change the API server refuses", () => {
  it("reports ChildRejected for a Persistent pool's new cache size, and applies it once the StatefulSet is deleted", async () => {
    const kube = await cluster();
    await operator(kube);
    createPool(
      kube,
      "farm",
      poolSpec({ architectures: [{ name: "amd64" }], cache: { type: "Persistent", size: "20Gi" } }),
    );
    await waitForReady(kube, "farm", { status: "True" });
    const before = get(kube, "statefulsets.apps", "farm-amd64");

    changePool(kube, "farm", (spec) => {
      spec.cache.size = "30Gi";
    });
    const condition = await waitForReady(kube, "farm", {
      status: "False",
      reason: "ChildRejected",
    });
    expect(condition.message).toContain(
      'the API server refused StatefulSet builders/farm-amd64: StatefulSet.apps "farm-amd64" is invalid',
    );
    expect(condition.message).toContain("delete the StatefulSet farm-amd64");
    const warning = await kube.waitFor(() =>
      kube.store.objects<Json>("events", NS).find((e) => e.reason === "ChildRejected"),
    );
    expect(warning.type).toBe("Warning");
    // It does not retry what cannot succeed (with backoff from 5 ms, an error would have been
    // retried six times before the operator went quiet for 300 ms).
    await waitForQuiet(kube, 300);
    const refused = kube.requestLog.count({ verb: "update", resource: "statefulsets", code: 422 });
    expect(refused).toBeLessThanOrEqual(2);

    kube.store.delete("statefulsets.apps", NS, "farm-amd64");
    await waitForReady(kube, "farm", { status: "True" });
    const after = get(kube, "statefulsets.apps", "farm-amd64");
    expect(after.metadata.uid).not.toBe(before.metadata.uid);
    expect(after.spec.volumeClaimTemplates[0].spec.resources.requests.storage).toBe("30Gi");
    await kube.waitFor(
      () =>
        kube.store.get<Json>("persistentvolumeclaims", NS, "state-farm-amd64-0")?.spec.resources
          .requests.storage === "30Gi",
      { message: "a new claim of the new size" },
    );
  });
});
