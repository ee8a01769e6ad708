// Deletion: finalizers and deletionTimestamp, owner-reference garbage collection in the
// background, in the foreground and orphaning, propagationPolicy from body or query, the
// batch/v1 Job default, graceful pod deletion, namespace deletion, preconditions.
import { BatchV1Api, CoreV1Api, CustomObjectsApi, type V1ConfigMap } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectStatus, mergePatch } from "./client.ts";
import { type Kube, startKube } from "./index.ts";

let kube: Kube;
let core: CoreV1Api;

beforeAll(async () => {
  kube = await startKube({ namespaces: ["del"] });
  core = kube.kubeConfig().makeApiClient(CoreV1Api);
});
afterAll(() => kube.stop());

const ownerRef = (owner: V1ConfigMap, block = false) => ({
  apiVersion: "v1",
  kind: "ConfigMap",
  name: owner.metadata!.name!,
  uid: owner.metadata!.uid!,
  ...(block ? { blockOwnerDeletion: true } : {}),
});

async function family(prefix: string, block = false) {
  const owner = await core.createNamespacedConfigMap({
    namespace: "del",
    body: { metadata: { name: `${prefix}-owner` } },
  });
  const child = await core.createNamespacedConfigMap({
    namespace: "del",
    body: { metadata: { name: `${prefix}-child`, ownerReferences: [ownerRef(owner, block)] } },
  });
  return { owner, child };
}

const exists = (name: string) => kube.store.get("configmaps", "del", name) !== undefined;

describe("finalizers", () => {
  it("keeps a deleted object with finalizers, sets deletionTimestamp, and removes it with the last finalizer", async () => {
    await core.createNamespacedConfigMap({
      namespace: "del",
      body: { metadata: { name: "fin", finalizers: ["example.com/cleanup"] } },
    });
    // A delete that leaves the object in place answers with the object, not a Status.
    const response = await fetch(`${kube.url}/api/v1/namespaces/del/configmaps/fin`, {
      method: "DELETE",
    });
    const deleted = (await response.json()) as { kind: string; metadata: Record<string, unknown> };
    expect(response.status).toBe(200);
    expect(deleted.kind).toBe("ConfigMap");
    expect(deleted.metadata.deletionGracePeriodSeconds).toBe(0);
    const read = await core.readNamespacedConfigMap({ namespace: "del", name: "fin" });
    expect(read.metadata?.deletionTimestamp).toBeInstanceOf(Date);
    expect(read.metadata?.finalizers).toEqual(["example.com/cleanup"]);

    const status = await expectStatus(
      core.patchNamespacedConfigMap(
        {
          namespace: "del",
          name: "fin",
          body: { metadata: { finalizers: ["example.com/cleanup", "example.com/new"] } },
        },
        mergePatch(),
      ),
    );
    expect(status.details?.causes?.[0]).toEqual({
      reason: "FieldValueForbidden",
      field: "metadata.finalizers",
      message:
        'Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{"example.com/new"}',
    });

    await core.patchNamespacedConfigMap(
      { namespace: "del", name: "fin", body: { metadata: { finalizers: null } } },
      mergePatch(),
    );
    expect(exists("fin")).toBe(false);
  });

  it("bumps generation when deletion starts, for kinds that track it", async () => {
    const custom = kube.kubeConfig().makeApiClient(CustomObjectsApi);
    const pools = {
      group: "buildfarm.dev",
      version: "v1alpha1",
      namespace: "del",
      plural: "builderpools",
    };
    await custom.createNamespacedCustomObject({
      ...pools,
      body: {
        apiVersion: "buildfarm.dev/v1alpha1",
        kind: "BuilderPool",
        metadata: { name: "gen", finalizers: ["buildfarm.dev/cleanup"] },
        spec: { architectures: [{ name: "amd64", replicas: 1 }] },
      },
    });
    await custom.deleteNamespacedCustomObject({ ...pools, name: "gen" });
    const pool = (await custom.getNamespacedCustomObject({ ...pools, name: "gen" })) as {
      metadata: { generation: number; deletionTimestamp?: string };
    };
    expect(pool.metadata.generation).toBe(2);
    expect(pool.metadata.deletionTimestamp).toBeTruthy();
  });

  it("checks delete preconditions", async () => {
    const cm = await core.createNamespacedConfigMap({
      namespace: "del",
      body: { metadata: { name: "pre" } },
    });
    const status = await expectStatus(
      core.deleteNamespacedConfigMap({
        namespace: "del",
        name: "pre",
        body: { preconditions: { resourceVersion: "1" } },
      }),
    );
    expect(status).toMatchObject({
      code: 409,
      message: `Operation cannot be fulfilled on ConfigMap "pre": the ResourceVersion in the precondition (1) does not match the ResourceVersion in record (${cm.metadata?.resourceVersion}). The object might have been modified`,
    });
  });
});

describe("garbage collection", () => {
  it("deletes dependents after their owner in the background (the default)", async () => {
    const { child } = await family("bg");
    await core.deleteNamespacedConfigMap({ namespace: "del", name: "bg-owner" });
    expect(exists("bg-owner")).toBe(false);
    await kube.waitFor(() => !exists("bg-child"));
    expect(child.metadata?.name).toBe("bg-child");
  });

  it("keeps a dependent that still has another owner, dropping the dangling reference", async () => {
    const a = await core.createNamespacedConfigMap({
      namespace: "del",
      body: { metadata: { name: "two-a" } },
    });
    const b = await core.createNamespacedConfigMap({
      namespace: "del",
      body: { metadata: { name: "two-b" } },
    });
    await core.createNamespacedConfigMap({
      namespace: "del",
      body: { metadata: { name: "two-child", ownerReferences: [ownerRef(a), ownerRef(b)] } },
    });
    await core.deleteNamespacedConfigMap({ namespace: "del", name: "two-a" });
    await kube.waitFor(
      () =>
        kube.store.get("configmaps", "del", "two-child")?.metadata.ownerReferences?.length === 1,
    );
    expect(exists("two-child")).toBe(true);
  });

  it("in the foreground keeps the owner under foregroundDeletion until blocking dependents are gone", async () => {
    await family("fg", true);
    await core.patchNamespacedConfigMap(
      {
        namespace: "del",
        name: "fg-child",
        body: { metadata: { finalizers: ["example.com/hold"] } },
      },
      mergePatch(),
    );
    await core.deleteNamespacedConfigMap({
      namespace: "del",
      name: "fg-owner",
      propagationPolicy: "Foreground",
    });
    const owner = await core.readNamespacedConfigMap({ namespace: "del", name: "fg-owner" });
    expect(owner.metadata?.finalizers).toEqual(["foregroundDeletion"]);
    expect(owner.metadata?.deletionTimestamp).toBeTruthy();
    await kube.waitFor(
      () => kube.store.get("configmaps", "del", "fg-child")?.metadata.deletionTimestamp,
    );
    await kube.settled();
    expect(exists("fg-owner")).toBe(true);
    await core.patchNamespacedConfigMap(
      { namespace: "del", name: "fg-child", body: { metadata: { finalizers: null } } },
      mergePatch(),
    );
    await kube.waitFor(() => !exists("fg-owner"));
  });

  it("takes propagationPolicy from the DeleteOptions body too", async () => {
    await family("body", true);
    await core.deleteNamespacedConfigMap({
      namespace: "del",
      name: "body-owner",
      body: { propagationPolicy: "Foreground" },
    });
    // The child has no finalizer, so the owner goes right after it.
    await kube.waitFor(() => !exists("body-owner") && !exists("body-child"));
  });

  it("orphans: strips the owner reference from dependents, then deletes the owner", async () => {
    await family("orph");
    await core.deleteNamespacedConfigMap({
      namespace: "del",
      name: "orph-owner",
      propagationPolicy: "Orphan",
    });
    await kube.waitFor(() => !exists("orph-owner"));
    await kube.settled();
    const child = await core.readNamespacedConfigMap({ namespace: "del", name: "orph-child" });
    expect(child.metadata?.ownerReferences).toBeUndefined();
  });

  it("collects a dependent whose owner never existed (or lives in another namespace)", async () => {
    await core.createNamespacedConfigMap({
      namespace: "del",
      body: {
        metadata: {
          name: "dangling",
          ownerReferences: [
            {
              apiVersion: "v1",
              kind: "ConfigMap",
              name: "ghost",
              uid: "00000000-0000-0000-0000-000000000000",
            },
          ],
        },
      },
    });
    await kube.waitFor(() => !exists("dangling"));
  });

  it("orphans a batch/v1 Job's pods by default, with the API server's warning", async () => {
    const batch = kube.kubeConfig().makeApiClient(BatchV1Api);
    await batch.createNamespacedJob({
      namespace: "del",
      body: {
        metadata: { name: "orphaning" },
        spec: {
          template: {
            spec: { restartPolicy: "Never", containers: [{ name: "c", image: "busybox" }] },
          },
        },
      },
    });
    await kube.waitFor(() =>
      kube.store
        .objects("pods", "del")
        .some((p) => p.metadata.labels?.["job-name"] === "orphaning"),
    );
    const response = await fetch(`${kube.url}/apis/batch/v1/namespaces/del/jobs/orphaning`, {
      method: "DELETE",
    });
    expect(response.headers.get("warning")).toBe(
      '299 - "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress this warning"',
    );
    await kube.waitFor(() => !kube.store.get("jobs.batch", "del", "orphaning"));
    await kube.settled();
    const pods = kube.store
      .objects("pods", "del")
      .filter((p) => p.metadata.labels?.["job-name"] === "orphaning");
    expect(pods).toHaveLength(1);
    expect(pods[0]?.metadata.ownerReferences).toBeUndefined();
  });
});

describe("pods", () => {
  it("deletes a running pod gracefully: deletionTimestamp first, then the kubelet's final delete", async () => {
    await core.createNamespacedPod({
      namespace: "del",
      body: {
        metadata: { name: "graceful" },
        spec: { containers: [{ name: "c", image: "busybox" }] },
      },
    });
    await kube.waitFor(
      () =>
        kube.store.get<{ status?: { phase?: string } }>("pods", "del", "graceful")?.status
          ?.phase === "Running",
    );
    const deleted = await core.deleteNamespacedPod({ namespace: "del", name: "graceful" });
    expect(deleted.kind).toBe("Pod");
    expect(deleted.metadata?.deletionGracePeriodSeconds).toBe(30);
    await kube.waitFor(() => !kube.store.get("pods", "del", "graceful"));
  });

  it("deletes a pod that is not scheduled at once, answering with the pod", async () => {
    await core.createNamespacedPod({
      namespace: "del",
      body: {
        metadata: { name: "pending" },
        spec: { nodeSelector: { nowhere: "true" }, containers: [{ name: "c", image: "busybox" }] },
      },
    });
    const deleted = await core.deleteNamespacedPod({ namespace: "del", name: "pending" });
    expect(deleted.metadata?.name).toBe("pending");
    expect(kube.store.get("pods", "del", "pending")).toBeUndefined();
  });
});

describe("namespaces", () => {
  it("terminates a namespace: its content is deleted, then the namespace", async () => {
    await core.createNamespace({ body: { metadata: { name: "doomed" } } });
    await core.createNamespacedConfigMap({
      namespace: "doomed",
      body: { metadata: { name: "x", finalizers: ["example.com/f"] } },
    });
    await core.deleteNamespace({ name: "doomed" });
    const ns = await core.readNamespace({ name: "doomed" });
    expect(ns.status?.phase).toBe("Terminating");
    expect(ns.spec?.finalizers).toEqual(["kubernetes"]);
    const refused = await expectStatus(
      core.createNamespacedConfigMap({ namespace: "doomed", body: { metadata: { name: "y" } } }),
    );
    expect(refused).toMatchObject({
      code: 403,
      reason: "Forbidden",
      message:
        'configmaps "y" is forbidden: unable to create new content in namespace doomed because it is being terminated',
    });
    await kube.waitFor(
      () => kube.store.get("configmaps", "doomed", "x")?.metadata.deletionTimestamp,
    );
    expect(kube.store.get("namespaces", undefined, "doomed")).toBeDefined();
    await core.patchNamespacedConfigMap(
      { namespace: "doomed", name: "x", body: { metadata: { finalizers: null } } },
      mergePatch(),
    );
    await kube.waitFor(() => !kube.store.get("namespaces", undefined, "doomed"));
  });

  it("refuses to delete the default namespace", async () => {
    const status = await expectStatus(core.deleteNamespace({ name: "default" }));
    expect(status).toMatchObject({
      code: 403,
      message: 'namespaces "default" is forbidden: this namespace may not be deleted',
    });
  });
});
