// The BuilderPool controller end to end, one behaviour per describe: the real Manager and
// PoolReconciler talk HTTP through client-node to test/kube, whose simulated scheduler,
// kubelet and workload controllers run the builders (see harness.ts).
import { afterEach, describe, expect, it } from "vitest";
import { DEFAULT_BUILDKIT_IMAGE } from "../../src/api/builderpool.ts";
import { APPARMOR_ANNOTATION } from "../../src/builderpool/workload.ts";
import { describeRequests, writesSince } from "../support/operator.ts";
import {
  ARCH_LABEL,
  builderPods,
  CERT_HASH,
  changePool,
  childrenOf,
  cluster,
  createPool,
  DAY,
  get,
  isReady,
  type Json,
  NS,
  operator,
  POOLS,
  pool,
  poolSpec,
  ready,
  stopAll,
  waitForQuiet,
  waitForReady,
} from "./harness.ts";

afterEach(stopAll);

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
    expect(container.resources).toEqual({
      requests: { cpu: "1", memory: "2Gi", "ephemeral-storage": "20Gi" },
    });
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
    // Settled, so that no StatefulSet status change wakes the controller again below.
    await kube.waitFor(() => {
      const set = get(kube, "statefulsets.apps", "farm-amd64");
      return (
        set.status?.readyReplicas === 1 && set.status.observedGeneration === set.metadata.generation
      );
    });
    await waitForQuiet(kube, 300);

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
    // retried six times before the operator went quiet for 300 ms). One more attempt comes
    // from a status write that met 409, if any.
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
    const rotated = await kube.waitFor(
      () => {
        const secret = get(kube, "secrets", "farm-buildkit-server");
        return secret.data["tls.crt"] !== server.data["tls.crt"] && secret;
      },
      { timeout: 30_000, message: "the server certificate renewed" },
    );
    expect(rotated.metadata.uid).toBe(server.metadata.uid);
    expect(rotated.data["tls.key"]).not.toBe(server.data["tls.key"]);
    expect(get(kube, "secrets", "farm-buildkit-ca").data).toEqual(ca.data);
    await kube.waitFor(
      () =>
        get(kube, "deployments.apps", "farm-amd64").spec.template.metadata.annotations[
          CERT_HASH
        ] !== hash,
      { timeout: 30_000, message: "the new certificate hash in the pod template" },
    );
    // Every old builder is replaced by one that mounted the new certificate.
    await kube.waitFor(
      () => {
        const pods = builderPods(kube, "farm", "amd64");
        return (
          pods.length === 2 &&
          pods.every((pod) => !oldPods.includes(pod.metadata.name) && isReady(pod))
        );
      },
      { timeout: 30_000, message: "both builders replaced by ready ones" },
    );
    await kube.waitFor(() => pool(kube, "farm").status.certificateNotAfter !== notAfter, {
      timeout: 30_000,
      message: "status.certificateNotAfter updated",
    });
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
