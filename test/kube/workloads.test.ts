// The simulated scheduler, kubelet and workload controllers: Deployments scheduled by required
// node affinity, nodeSelector and taints; rolling updates; scaling; readiness; StatefulSets.
import { AppsV1Api, CoreV1Api, type V1Deployment, type V1Pod } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectStatus, mergePatch } from "./client.ts";
import { type Kube, startKube } from "./index.ts";

let kube: Kube;
let apps: AppsV1Api;
let core: CoreV1Api;
/** Pods a readiness test holds back, by name prefix. */
const notReady = new Set<string>();

beforeAll(async () => {
  kube = await startKube({
    namespaces: ["wl"],
    nodes: [
      { name: "amd-1", arch: "amd64" },
      { name: "amd-2", arch: "amd64" },
      {
        name: "tainted",
        arch: "amd64",
        labels: { pool: "gpu" },
        taints: [{ key: "gpu", value: "true", effect: "NoSchedule" }],
      },
    ],
    readiness: (pod) => ![...notReady].some((prefix) => pod.metadata.name?.startsWith(prefix)),
    probePeriodMs: 20,
    timeScale: 0.05,
  });
  apps = kube.kubeConfig().makeApiClient(AppsV1Api);
  core = kube.kubeConfig().makeApiClient(CoreV1Api);
});
afterAll(() => kube.stop());

function builders(
  name: string,
  arch: string,
  replicas = 2,
  extra: Partial<V1Deployment["spec"]> = {},
): V1Deployment {
  return {
    metadata: { name },
    spec: {
      replicas,
      progressDeadlineSeconds: 20,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: {
          affinity: {
            nodeAffinity: {
              requiredDuringSchedulingIgnoredDuringExecution: {
                nodeSelectorTerms: [
                  {
                    matchExpressions: [
                      { key: "kubernetes.io/arch", operator: "In", values: [arch] },
                    ],
                  },
                ],
              },
            },
          },
          containers: [{ name: "buildkitd", image: "moby/buildkit:v0.16.0-rootless" }],
        },
      },
      ...extra,
    },
  };
}

const podsOf = async (app: string) =>
  (await core.listNamespacedPod({ namespace: "wl", labelSelector: `app=${app}` })).items;
const read = (name: string) => apps.readNamespacedDeployment({ namespace: "wl", name });
const condition = (d: V1Deployment, type: string) =>
  d.status?.conditions?.find((c) => c.type === type);

describe("scheduling by required node affinity", () => {
  it("runs an amd64-pinned Deployment on amd64 nodes only, and reports it available", async () => {
    await apps.createNamespacedDeployment({
      namespace: "wl",
      body: builders("pool-amd64", "amd64"),
    });
    const ready = await kube.waitFor(async () => {
      const d = await read("pool-amd64");
      return d.status?.readyReplicas === 2 && d;
    });
    expect(ready.status).toMatchObject({
      replicas: 2,
      updatedReplicas: 2,
      availableReplicas: 2,
      observedGeneration: 1,
    });
    expect(condition(ready, "Available")).toMatchObject({
      status: "True",
      reason: "MinimumReplicasAvailable",
    });
    expect(condition(ready, "Progressing")).toMatchObject({
      status: "True",
      reason: "NewReplicaSetAvailable",
    });
    const pods = await podsOf("pool-amd64");
    expect(pods.map((p) => p.spec?.nodeName).sort()).toEqual(["amd-1", "amd-2"]);
    for (const pod of pods) {
      expect(pod.status?.phase).toBe("Running");
      expect(pod.status?.podIP).toMatch(/^10\.244\./);
      expect(pod.metadata?.ownerReferences?.[0]).toMatchObject({
        kind: "ReplicaSet",
        controller: true,
      });
      expect(pod.metadata?.labels?.["pod-template-hash"]).toBeTruthy();
    }
  });

  it("leaves an arm64-pinned Deployment unready with Unschedulable pods when no arm64 node exists", async () => {
    await apps.createNamespacedDeployment({
      namespace: "wl",
      body: builders("pool-arm64", "arm64", 1),
    });
    const pod = await kube.waitFor(async () => {
      const [p] = await podsOf("pool-arm64");
      return p?.status?.conditions?.some((c) => c.type === "PodScheduled") && p;
    });
    expect(pod.status?.phase).toBe("Pending");
    expect(pod.spec?.nodeName).toBeUndefined();
    expect(pod.status?.conditions).toEqual([
      expect.objectContaining({
        type: "PodScheduled",
        status: "False",
        reason: "Unschedulable",
        message:
          "0/3 nodes are available: 1 node(s) had untolerated taint {gpu: true}, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
      }),
    ]);
    const d = await read("pool-arm64");
    expect(d.status?.readyReplicas ?? 0).toBe(0);
    expect(condition(d, "Available")).toMatchObject({
      status: "False",
      reason: "MinimumReplicasUnavailable",
    });
  });

  it("reports ProgressDeadlineExceeded once the deadline passes without progress", async () => {
    const d = await kube.waitFor(async () => {
      const current = await read("pool-arm64");
      return condition(current, "Progressing")?.reason === "ProgressDeadlineExceeded" && current;
    });
    expect(condition(d, "Progressing")).toMatchObject({
      status: "False",
      message: expect.stringMatching(/^ReplicaSet "pool-arm64-\w+" has timed out progressing\.$/),
    });
  });

  it("schedules the pending pods once an arm64 node joins", async () => {
    kube.nodes.add({ name: "arm-1", arch: "arm64" });
    const d = await kube.waitFor(async () => {
      const current = await read("pool-arm64");
      return current.status?.readyReplicas === 1 && current;
    });
    expect(condition(d, "Available")?.status).toBe("True");
    expect((await podsOf("pool-arm64"))[0]?.spec?.nodeName).toBe("arm-1");
  });

  it("honours nodeSelector and taints with tolerations", async () => {
    const spec = (tolerate: boolean): V1Deployment => ({
      metadata: { name: tolerate ? "gpu-ok" : "gpu-no" },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: tolerate ? "gpu-ok" : "gpu-no" } },
        template: {
          metadata: { labels: { app: tolerate ? "gpu-ok" : "gpu-no" } },
          spec: {
            nodeSelector: { pool: "gpu" },
            ...(tolerate
              ? {
                  tolerations: [
                    { key: "gpu", operator: "Equal", value: "true", effect: "NoSchedule" },
                  ],
                }
              : {}),
            containers: [{ name: "c", image: "busybox" }],
          },
        },
      },
    });
    await apps.createNamespacedDeployment({ namespace: "wl", body: spec(true) });
    await apps.createNamespacedDeployment({ namespace: "wl", body: spec(false) });
    const ok = await kube.waitFor(async () => (await podsOf("gpu-ok"))[0]?.spec?.nodeName);
    expect(ok).toBe("tainted");
    const refused = await kube.waitFor(async () => {
      const [p] = await podsOf("gpu-no");
      return p?.status?.conditions?.find((c) => c.type === "PodScheduled");
    });
    expect(refused.message).toContain("1 node(s) had untolerated taint {gpu: true}");
  });
});

describe("rollouts and scaling", () => {
  it("rolls a template change without ever dropping below the desired ready count (maxUnavailable 0)", async () => {
    await apps.createNamespacedDeployment({
      namespace: "wl",
      body: builders("roll", "amd64", 3, {
        strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      }),
    });
    await kube.waitFor(async () => (await read("roll")).status?.readyReplicas === 3);
    let lowest = 3;
    let highest = 0;
    const stop = kube.store.onChange((event) => {
      if (event.object.kind !== "Pod" || !event.object.metadata.labels?.app?.startsWith("roll"))
        return;
      const pods = kube.store
        .objects<V1Pod>("pods", "wl")
        .filter((p) => p.metadata?.labels?.app === "roll" && !p.metadata.deletionTimestamp);
      const ready = pods.filter((p) =>
        p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
      ).length;
      lowest = Math.min(lowest, ready);
      highest = Math.max(highest, pods.length);
    });
    await apps.patchNamespacedDeployment(
      {
        namespace: "wl",
        name: "roll",
        body: {
          spec: {
            template: {
              spec: {
                containers: [{ name: "buildkitd", image: "moby/buildkit:v0.17.0-rootless" }],
              },
            },
          },
        },
      },
      mergePatch(),
    );
    const done = await kube.waitFor(async () => {
      const d = await read("roll");
      return (
        d.status?.observedGeneration === 2 &&
        d.status.updatedReplicas === 3 &&
        d.status.replicas === 3 &&
        d.status.readyReplicas === 3 &&
        d
      );
    });
    stop();
    expect(lowest).toBe(3);
    expect(highest).toBe(4);
    expect(condition(done, "Progressing")?.reason).toBe("NewReplicaSetAvailable");
    const images = (await podsOf("roll"))
      .filter((p) => !p.metadata?.deletionTimestamp)
      .map((p) => p.spec?.containers[0]?.image);
    expect(images).toEqual(Array(3).fill("moby/buildkit:v0.17.0-rootless"));
    const sets = kube.store
      .objects<{ metadata: { name?: string }; spec?: { replicas?: number } }>(
        "replicasets.apps",
        "wl",
      )
      .filter((rs) => rs.metadata.name?.startsWith("roll-"));
    expect(sets.map((rs) => rs.spec?.replicas).sort()).toEqual([0, 3]);
  });

  it("scales up and down", async () => {
    await apps.patchNamespacedDeployment(
      { namespace: "wl", name: "roll", body: { spec: { replicas: 5 } } },
      mergePatch(),
    );
    await kube.waitFor(async () => (await read("roll")).status?.readyReplicas === 5);
    await apps.patchNamespacedDeployment(
      { namespace: "wl", name: "roll", body: { spec: { replicas: 1 } } },
      mergePatch(),
    );
    await kube.waitFor(async () => {
      const d = await read("roll");
      return d.status?.replicas === 1 && d.status.readyReplicas === 1;
    });
    await kube.waitFor(async () => (await podsOf("roll")).length === 1);
  });

  it("removes the pods with the lowest pod-deletion-cost first when scaling down", async () => {
    await apps.createNamespacedDeployment({
      namespace: "wl",
      body: builders("costly", "amd64", 3),
    });
    await kube.waitFor(async () => (await read("costly")).status?.readyReplicas === 3);
    const names = (await podsOf("costly")).map((pod) => pod.metadata?.name as string);
    const costs = ["5", "10"];
    for (const [i, name] of names.slice(0, 2).entries()) {
      await core.patchNamespacedPod(
        {
          namespace: "wl",
          name,
          body: {
            metadata: { annotations: { "controller.kubernetes.io/pod-deletion-cost": costs[i] } },
          },
        },
        mergePatch(),
      );
    }
    await apps.patchNamespacedDeployment(
      { namespace: "wl", name: "costly", body: { spec: { replicas: 1 } } },
      mergePatch(),
    );
    await kube.waitFor(async () => (await podsOf("costly")).length === 1);
    // Whatever their ages: the costliest stays.
    expect((await podsOf("costly")).map((pod) => pod.metadata?.name)).toEqual([names[1]]);
    await apps.deleteNamespacedDeployment({ namespace: "wl", name: "costly" });
  });

  it("follows the readiness policy", async () => {
    notReady.add("held-");
    await apps.createNamespacedDeployment({ namespace: "wl", body: builders("held", "amd64", 1) });
    const pod = await kube.waitFor(async () => {
      const [p] = await podsOf("held");
      return p?.status?.phase === "Running" && p;
    });
    expect(pod.status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({
      status: "False",
      reason: "ContainersNotReady",
      message: "containers with unready status: [buildkitd]",
    });
    expect((await read("held")).status?.readyReplicas ?? 0).toBe(0);
    notReady.delete("held-");
    await kube.waitFor(async () => (await read("held")).status?.readyReplicas === 1);
  });

  it("deletes a Deployment's ReplicaSets and pods with it", async () => {
    await apps.deleteNamespacedDeployment({ namespace: "wl", name: "held" });
    await kube.waitFor(async () => (await podsOf("held")).length === 0);
    expect(
      kube.store
        .objects("replicasets.apps", "wl")
        .some((rs) => rs.metadata.name?.startsWith("held-")),
    ).toBe(false);
  });
});

describe("StatefulSets", () => {
  it("creates ordinal pods in order, each with its claim, and keeps the claims on scale-down", async () => {
    await apps.createNamespacedStatefulSet({
      namespace: "wl",
      body: {
        metadata: { name: "cache" },
        spec: {
          replicas: 2,
          serviceName: "cache",
          selector: { matchLabels: { app: "cache" } },
          template: {
            metadata: { labels: { app: "cache" } },
            spec: {
              containers: [
                {
                  name: "buildkitd",
                  image: "moby/buildkit",
                  volumeMounts: [{ name: "state", mountPath: "/home/user/.local/share/buildkit" }],
                },
              ],
            },
          },
          volumeClaimTemplates: [
            {
              metadata: { name: "state" },
              spec: {
                accessModes: ["ReadWriteOnce"],
                resources: { requests: { storage: "10Gi" } },
              },
            },
          ],
        },
      },
    });
    const sts = await kube.waitFor(async () => {
      const s = await apps.readNamespacedStatefulSet({ namespace: "wl", name: "cache" });
      return s.status?.readyReplicas === 2 && s;
    });
    expect(sts.status).toMatchObject({ replicas: 2, currentReplicas: 2, updatedReplicas: 2 });
    const pods = (await podsOf("cache")).sort((a, b) =>
      a.metadata!.name!.localeCompare(b.metadata!.name!),
    );
    expect(pods.map((p) => p.metadata?.name)).toEqual(["cache-0", "cache-1"]);
    expect(pods[0]?.metadata?.labels).toMatchObject({
      "statefulset.kubernetes.io/pod-name": "cache-0",
      "apps.kubernetes.io/pod-index": "0",
    });
    expect(pods[0]?.spec).toMatchObject({ hostname: "cache-0", subdomain: "cache" });
    expect(pods[0]?.spec?.volumes).toContainEqual({
      name: "state",
      persistentVolumeClaim: { claimName: "state-cache-0" },
    });
    expect(Date.parse(String(pods[0]?.metadata?.creationTimestamp))).toBeLessThanOrEqual(
      Date.parse(String(pods[1]?.metadata?.creationTimestamp)),
    );
    const claim = await core.readNamespacedPersistentVolumeClaim({
      namespace: "wl",
      name: "state-cache-1",
    });
    expect(claim.status?.phase).toBe("Bound");
    expect(claim.metadata?.finalizers).toEqual(["kubernetes.io/pvc-protection"]);

    await apps.patchNamespacedStatefulSet(
      { namespace: "wl", name: "cache", body: { spec: { replicas: 1 } } },
      mergePatch(),
    );
    await kube.waitFor(async () => (await podsOf("cache")).length === 1);
    expect(
      (await core.readNamespacedPersistentVolumeClaim({ namespace: "wl", name: "state-cache-1" }))
        .metadata?.name,
    ).toBe("state-cache-1");
  });

  it("makes a recreated set's pod wait until its claim being deleted is gone, then a new claim", async () => {
    const set = (storage: string) => ({
      metadata: { name: "recache" },
      spec: {
        replicas: 1,
        serviceName: "recache",
        selector: { matchLabels: { app: "recache" } },
        persistentVolumeClaimRetentionPolicy: { whenDeleted: "Delete", whenScaled: "Retain" },
        template: {
          metadata: { labels: { app: "recache" } },
          spec: {
            containers: [
              {
                name: "buildkitd",
                image: "moby/buildkit",
                volumeMounts: [{ name: "state", mountPath: "/state" }],
              },
            ],
          },
        },
        volumeClaimTemplates: [
          {
            metadata: { name: "state" },
            spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage } } },
          },
        ],
      },
    });
    const claim = () =>
      core.readNamespacedPersistentVolumeClaim({ namespace: "wl", name: "state-recache-0" });
    await apps.createNamespacedStatefulSet({ namespace: "wl", body: set("10Gi") });
    await kube.waitFor(async () => (await podsOf("recache")).some((pod) => pod.status?.podIP));
    const old = await claim();

    // Deleted with the set, the claim stays (pvc-protection) until its pod is gone.
    await apps.deleteNamespacedStatefulSet({ namespace: "wl", name: "recache" });
    await apps.createNamespacedStatefulSet({ namespace: "wl", body: set("20Gi") });
    const fresh = await kube.waitFor(
      async () => {
        const current = await claim().catch(() => undefined);
        return current?.metadata?.uid !== old.metadata?.uid && current;
      },
      { message: "a new claim" },
    );
    expect(fresh.spec?.resources?.requests?.storage).toBe("20Gi");
    const [pod] = await kube.waitFor(async () => {
      const pods = await podsOf("recache");
      return pods.length === 1 && pods[0]?.status?.phase === "Running" && pods;
    });
    expect(pod?.spec?.volumes).toContainEqual({
      name: "state",
      persistentVolumeClaim: { claimName: "state-recache-0" },
    });
  });

  it("refuses changes to volumeClaimTemplates", async () => {
    const sts = await apps.readNamespacedStatefulSet({ namespace: "wl", name: "cache" });
    const changed = {
      ...sts,
      spec: {
        ...sts.spec!,
        volumeClaimTemplates: [
          {
            ...sts.spec!.volumeClaimTemplates![0]!,
            spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "20Gi" } } },
          },
        ],
      },
    };
    const status = await expectStatus(
      apps.replaceNamespacedStatefulSet({ namespace: "wl", name: "cache", body: changed }),
    );
    expect(status.code).toBe(422);
    expect(status.details?.causes?.[0]).toMatchObject({
      field: "spec",
      reason: "FieldValueForbidden",
    });
    expect(status.details?.causes?.[0]?.message).toMatch(
      /^Forbidden: updates to statefulset spec for fields other than/,
    );
  });
});

describe("kubelet.setReadiness", () => {
  it("reaches running containers, also when the kubelet started without a policy", async () => {
    const own = await startKube({ namespaces: ["wl"], probePeriodMs: 10 });
    try {
      const ownCore = own.kubeConfig().makeApiClient(CoreV1Api);
      await ownCore.createNamespacedPod({
        namespace: "wl",
        body: {
          metadata: { name: "probe" },
          spec: { containers: [{ name: "c", image: "moby/buildkit:v0.16.0-rootless" }] },
        },
      });
      const ready = async () =>
        (
          await ownCore.readNamespacedPod({ namespace: "wl", name: "probe" })
        ).status?.conditions?.find((c) => c.type === "Ready")?.status;
      await own.waitFor(async () => (await ready()) === "True", { timeout: 30_000 });
      own.kubelet?.setReadiness(() => false);
      await own.waitFor(async () => (await ready()) === "False", { timeout: 30_000 });
      // And a second policy replaces the first one for the same running container.
      own.kubelet?.setReadiness(() => true);
      await own.waitFor(async () => (await ready()) === "True", { timeout: 30_000 });
    } finally {
      await own.stop();
    }
  });
});
