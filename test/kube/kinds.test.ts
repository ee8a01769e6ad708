// Every kind the operator uses round-trips through its typed client-node API; plus the
// kind-specific behaviour an operator leans on (Service clusterIP, Lease concurrency).
import {
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  EventsV1Api,
  NetworkingV1Api,
  PolicyV1Api,
  type V1Lease,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectStatus } from "./client.ts";
import { type Kube, startKube } from "./index.ts";

/**
 * A MicroTime as the real server takes it (six fractional digits). client-node serializes a
 * Date with toISOString (three), which a real server refuses (kubernetes-client/javascript#828),
 * so the string goes where its types say Date.
 */
const micro = (date: Date) => date.toISOString().replace("Z", "000Z") as unknown as Date;

let kube: Kube;

beforeAll(async () => {
  kube = await startKube({ namespaces: ["k"], historySize: 10, nodes: [] });
});
afterAll(() => kube.stop());

interface Case {
  kind: string;
  create(): Promise<{ metadata?: { name?: string; uid?: string } }>;
  read(): Promise<{ metadata?: { name?: string; uid?: string } }>;
  list(): Promise<{ items: unknown[] }>;
  remove(): Promise<unknown>;
}

function cases(): Case[] {
  const kc = kube.kubeConfig();
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
  const policy = kc.makeApiClient(PolicyV1Api);
  const networking = kc.makeApiClient(NetworkingV1Api);
  const coordination = kc.makeApiClient(CoordinationV1Api);
  const events = kc.makeApiClient(EventsV1Api);
  const namespace = "k";
  const name = "x";
  const pod = { containers: [{ name: "c", image: "busybox" }] };
  return [
    {
      kind: "Service",
      create: () =>
        core.createNamespacedService({
          namespace,
          body: { metadata: { name }, spec: { ports: [{ port: 1234 }] } },
        }),
      read: () => core.readNamespacedService({ namespace, name }),
      list: () => core.listNamespacedService({ namespace }),
      remove: () => core.deleteNamespacedService({ namespace, name }),
    },
    {
      kind: "ServiceAccount",
      create: () =>
        core.createNamespacedServiceAccount({ namespace, body: { metadata: { name } } }),
      read: () => core.readNamespacedServiceAccount({ namespace, name }),
      list: () => core.listNamespacedServiceAccount({ namespace }),
      remove: () => core.deleteNamespacedServiceAccount({ namespace, name }),
    },
    {
      kind: "Event",
      create: () =>
        core.createNamespacedEvent({
          namespace,
          body: {
            metadata: { name },
            involvedObject: { kind: "Pod", name: "p", namespace },
            reason: "Built",
            message: "ok",
          },
        }),
      read: () => core.readNamespacedEvent({ namespace, name }),
      list: () => core.listNamespacedEvent({ namespace, fieldSelector: "involvedObject.name=p" }),
      remove: () => core.deleteNamespacedEvent({ namespace, name }),
    },
    {
      kind: "Endpoints",
      create: () => core.createNamespacedEndpoints({ namespace, body: { metadata: { name } } }),
      read: () => core.readNamespacedEndpoints({ namespace, name }),
      list: () => core.listNamespacedEndpoints({ namespace }),
      remove: () => core.deleteNamespacedEndpoints({ namespace, name }),
    },
    {
      kind: "PersistentVolumeClaim",
      create: () =>
        core.createNamespacedPersistentVolumeClaim({
          namespace,
          body: {
            metadata: { name },
            spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } },
          },
        }),
      read: () => core.readNamespacedPersistentVolumeClaim({ namespace, name }),
      list: () => core.listNamespacedPersistentVolumeClaim({ namespace }),
      remove: () => core.deleteNamespacedPersistentVolumeClaim({ namespace, name }),
    },
    {
      kind: "Node",
      create: () =>
        core.createNode({
          body: { metadata: { name, labels: { "kubernetes.io/arch": "arm64" } } },
        }),
      read: () => core.readNode({ name }),
      list: () => core.listNode({ labelSelector: "kubernetes.io/arch=arm64" }),
      remove: () => core.deleteNode({ name }),
    },
    {
      kind: "StatefulSet",
      create: () =>
        apps.createNamespacedStatefulSet({
          namespace,
          body: {
            metadata: { name },
            spec: {
              serviceName: name,
              selector: { matchLabels: { a: "b" } },
              template: { metadata: { labels: { a: "b" } }, spec: pod },
            },
          },
        }),
      read: () => apps.readNamespacedStatefulSet({ namespace, name }),
      list: () => apps.listNamespacedStatefulSet({ namespace }),
      remove: () => apps.deleteNamespacedStatefulSet({ namespace, name }),
    },
    {
      kind: "PodDisruptionBudget",
      create: () =>
        policy.createNamespacedPodDisruptionBudget({
          namespace,
          body: {
            metadata: { name },
            spec: { maxUnavailable: 1, selector: { matchLabels: { a: "b" } } },
          },
        }),
      read: () => policy.readNamespacedPodDisruptionBudget({ namespace, name }),
      list: () => policy.listNamespacedPodDisruptionBudget({ namespace }),
      remove: () => policy.deleteNamespacedPodDisruptionBudget({ namespace, name }),
    },
    {
      kind: "NetworkPolicy",
      create: () =>
        networking.createNamespacedNetworkPolicy({
          namespace,
          body: {
            metadata: { name },
            spec: { podSelector: { matchLabels: { a: "b" } }, policyTypes: ["Ingress"] },
          },
        }),
      read: () => networking.readNamespacedNetworkPolicy({ namespace, name }),
      list: () => networking.listNamespacedNetworkPolicy({ namespace }),
      remove: () => networking.deleteNamespacedNetworkPolicy({ namespace, name }),
    },
    {
      kind: "Lease",
      create: () =>
        coordination.createNamespacedLease({
          namespace,
          body: { metadata: { name }, spec: { holderIdentity: "a" } },
        }),
      read: () => coordination.readNamespacedLease({ namespace, name }),
      list: () => coordination.listNamespacedLease({ namespace }),
      remove: () => coordination.deleteNamespacedLease({ namespace, name }),
    },
    {
      kind: "Event (events.k8s.io)",
      create: () =>
        events.createNamespacedEvent({
          namespace,
          body: {
            metadata: { name },
            eventTime: micro(new Date()),
            reportingController: "buildfarm.dev/operator",
            reportingInstance: "operator-0",
            action: "Build",
            reason: "Started",
            type: "Normal",
            regarding: { kind: "ImageBuild", name: "b", namespace },
          },
        }),
      read: () => events.readNamespacedEvent({ namespace, name }),
      list: () => events.listNamespacedEvent({ namespace, fieldSelector: "regarding.name=b" }),
      remove: () => events.deleteNamespacedEvent({ namespace, name }),
    },
  ];
}

describe("every kind the operator uses", () => {
  it.each([
    "Service",
    "ServiceAccount",
    "Event",
    "Endpoints",
    "PersistentVolumeClaim",
    "Node",
    "StatefulSet",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "Lease",
    "Event (events.k8s.io)",
  ])("%s: create, read, list, delete through client-node", async (kind) => {
    const c = cases().find((x) => x.kind === kind)!;
    const created = await c.create();
    expect(created.metadata?.uid).toBeTruthy();
    expect((await c.read()).metadata?.uid).toBe(created.metadata?.uid);
    expect((await c.list()).items).toHaveLength(1);
    await c.remove();
    await kube.waitFor(async () => {
      try {
        await c.read();
        return false;
      } catch {
        return true;
      }
    });
  });
});

describe("Services", () => {
  it("allocate a clusterIP and keep it when an update leaves it out", async () => {
    const core = kube.kubeConfig().makeApiClient(CoreV1Api);
    const created = await core.createNamespacedService({
      namespace: "k",
      body: {
        metadata: { name: "builders" },
        spec: { selector: { app: "b" }, ports: [{ port: 1234 }] },
      },
    });
    expect(created.spec).toMatchObject({
      type: "ClusterIP",
      sessionAffinity: "None",
      ipFamilies: ["IPv4"],
      ports: [{ port: 1234, protocol: "TCP", targetPort: 1234 }],
    });
    expect(created.spec?.clusterIP).toMatch(/^10\.96\./);
    const replaced = await core.replaceNamespacedService({
      namespace: "k",
      name: "builders",
      body: {
        metadata: { name: "builders", resourceVersion: created.metadata?.resourceVersion },
        spec: { ports: [{ port: 1234 }] },
      },
    });
    expect(replaced.spec?.clusterIP).toBe(created.spec?.clusterIP);
    const headless = await core.createNamespacedService({
      namespace: "k",
      body: { metadata: { name: "headless" }, spec: { clusterIP: "None", selector: { app: "b" } } },
    });
    expect(headless.spec?.clusterIP).toBe("None");
  });
});

describe("Leases", () => {
  it("let exactly one of two candidates take an expired lease (optimistic concurrency)", async () => {
    const coordination = kube.kubeConfig().makeApiClient(CoordinationV1Api);
    const lease = await coordination.createNamespacedLease({
      namespace: "k",
      body: {
        metadata: { name: "buildfarm-leader" },
        spec: { holderIdentity: "old", leaseDurationSeconds: 15, renewTime: micro(new Date(0)) },
      },
    });
    const take = (holder: string): V1Lease => ({
      ...lease,
      spec: {
        ...lease.spec,
        holderIdentity: holder,
        acquireTime: micro(new Date()),
        renewTime: micro(new Date()),
        leaseTransitions: 1,
      },
    });
    const results = await Promise.allSettled([
      coordination.replaceNamespacedLease({
        namespace: "k",
        name: "buildfarm-leader",
        body: take("a"),
      }),
      coordination.replaceNamespacedLease({
        namespace: "k",
        name: "buildfarm-leader",
        body: take("b"),
      }),
    ]);
    expect(results.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
    const loser = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(await expectStatus(Promise.reject(loser.reason))).toMatchObject({
      code: 409,
      reason: "Conflict",
    });
    const current = await coordination.readNamespacedLease({
      namespace: "k",
      name: "buildfarm-leader",
    });
    expect(["a", "b"]).toContain(current.spec?.holderIdentity);
    const raw = (await (
      await fetch(`${kube.url}/apis/coordination.k8s.io/v1/namespaces/k/leases/buildfarm-leader`)
    ).json()) as {
      spec: { renewTime: string };
    };
    expect(raw.spec.renewTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  });
});

describe("edges of the protocol", () => {
  it("answers a continue token older than the history with 410 Expired", async () => {
    const core = kube.kubeConfig().makeApiClient(CoreV1Api);
    for (let i = 0; i < 3; i++)
      await core.createNamespacedConfigMap({
        namespace: "k",
        body: { metadata: { name: `page-${i}` } },
      });
    const first = await core.listNamespacedConfigMap({ namespace: "k", limit: 1 });
    for (let i = 0; i < 12; i++)
      await core.createNamespacedConfigMap({
        namespace: "k",
        body: { metadata: { name: `flood-${i}` } },
      });
    const status = await expectStatus(
      core.listNamespacedConfigMap({
        namespace: "k",
        limit: 1,
        _continue: first.metadata?._continue,
      }),
    );
    expect(status).toMatchObject({ code: 410, reason: "Expired" });
    expect(status.message).toMatch(
      /^The provided continue parameter is too old to display a consistent list result\./,
    );
  });

  it("answers an exact list at a resourceVersion older than the history with 410", async () => {
    const response = await fetch(
      `${kube.url}/api/v1/namespaces/k/configmaps?resourceVersion=2&resourceVersionMatch=Exact`,
    );
    expect(response.status).toBe(410);
    expect(await response.json()).toMatchObject({
      message: "The resourceVersion for the provided list is too old.",
    });
  });

  it("refuses server-side apply with 415", async () => {
    const response = await fetch(
      `${kube.url}/api/v1/namespaces/k/configmaps/page-0?fieldManager=test`,
      {
        method: "PATCH",
        headers: { "Content-Type": "application/apply-patch+yaml" },
        body: JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "page-0" } }),
      },
    );
    expect(response.status).toBe(415);
  });

  it("supports dryRun=All without storing", async () => {
    const response = await fetch(`${kube.url}/api/v1/namespaces/k/configmaps?dryRun=All`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ metadata: { name: "dry" } }),
    });
    expect(response.status).toBe(201);
    expect(kube.store.get("configmaps", "k", "dry")).toBeUndefined();
  });
});
