// Optimistic concurrency, the status subresource, and metadata.generation.
import {
  AppsV1Api,
  BatchV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type V1Deployment,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectStatus, mergePatch } from "./client.ts";
import { type Kube, startKube } from "./index.ts";

let kube: Kube;
let core: CoreV1Api;
let apps: AppsV1Api;
let custom: CustomObjectsApi;

beforeAll(async () => {
  // No controllers: status writes in these tests come from the test alone.
  kube = await startKube({
    namespaces: ["u"],
    nodes: [],
    controllers: { deployments: false, jobs: false, scheduler: false, kubelet: false },
  });
  core = kube.kubeConfig().makeApiClient(CoreV1Api);
  apps = kube.kubeConfig().makeApiClient(AppsV1Api);
  custom = kube.kubeConfig().makeApiClient(CustomObjectsApi);
});
afterAll(() => kube.stop());

const IB = { group: "buildfarm.dev", version: "v1alpha1", namespace: "u", plural: "imagebuilds" };

const imageBuild = (name: string) => ({
  apiVersion: "buildfarm.dev/v1alpha1",
  kind: "ImageBuild",
  metadata: { name },
  spec: {
    poolRef: { name: "default" },
    source: { git: { url: "https://github.com/docker/welcome-to-docker.git" } },
    platforms: ["linux/amd64"],
    output: { image: "registry.example.com/demo/app" },
  },
});

type Obj = {
  metadata: { resourceVersion?: string; generation?: number; labels?: Record<string, string> };
  spec?: unknown;
  status?: unknown;
};

const deployment = (name: string): V1Deployment => ({
  metadata: { name },
  spec: {
    replicas: 1,
    selector: { matchLabels: { app: name } },
    template: {
      metadata: { labels: { app: name } },
      spec: { containers: [{ name: "c", image: "busybox:1" }] },
    },
  },
});

describe("optimistic concurrency", () => {
  it("refuses a PUT with a stale resourceVersion with 409 Conflict", async () => {
    const first = await core.createNamespacedConfigMap({
      namespace: "u",
      body: { metadata: { name: "cm" }, data: { a: "1" } },
    });
    await core.replaceNamespacedConfigMap({
      namespace: "u",
      name: "cm",
      body: { ...first, data: { a: "2" } },
    });
    const status = await expectStatus(
      core.replaceNamespacedConfigMap({
        namespace: "u",
        name: "cm",
        body: { ...first, data: { a: "3" } },
      }),
    );
    expect(status).toEqual({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message:
        'Operation cannot be fulfilled on configmaps "cm": the object has been modified; please apply your changes to the latest version and try again',
      reason: "Conflict",
      details: { name: "cm", kind: "configmaps" },
      code: 409,
    });
  });

  it("lets a built-in PUT without resourceVersion through (unconditional update)", async () => {
    const updated = await core.replaceNamespacedConfigMap({
      namespace: "u",
      name: "cm",
      body: { metadata: { name: "cm" }, data: { a: "4" } },
    });
    expect(updated.data).toEqual({ a: "4" });
  });

  it("requires a resourceVersion on a custom resource PUT", async () => {
    await custom.createNamespacedCustomObject({ ...IB, body: imageBuild("no-rv") });
    const status = await expectStatus(
      custom.replaceNamespacedCustomObject({ ...IB, name: "no-rv", body: imageBuild("no-rv") }),
    );
    expect(status).toMatchObject({
      code: 422,
      reason: "Invalid",
      message:
        'ImageBuild.buildfarm.dev "no-rv" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update',
    });
  });

  it("keeps the resourceVersion when an update changes nothing", async () => {
    const current = await core.readNamespacedConfigMap({ namespace: "u", name: "cm" });
    const again = await core.replaceNamespacedConfigMap({
      namespace: "u",
      name: "cm",
      body: current,
    });
    expect(again.metadata?.resourceVersion).toBe(current.metadata?.resourceVersion);
  });

  it("refuses a body whose name differs from the URL's with 400", async () => {
    const status = await expectStatus(
      core.replaceNamespacedConfigMap({
        namespace: "u",
        name: "cm",
        body: { metadata: { name: "other" } },
      }),
    );
    expect(status).toMatchObject({
      code: 400,
      message: "the name of the object (other) does not match the name on the URL (cm)",
    });
  });

  it("answers a PUT to a missing object with 404", async () => {
    const status = await expectStatus(
      core.replaceNamespacedConfigMap({
        namespace: "u",
        name: "missing",
        body: { metadata: { name: "missing" } },
      }),
    );
    expect(status.code).toBe(404);
  });
});

describe("status subresource", () => {
  it("drops status on create and ignores status changes through the main endpoint", async () => {
    const created = (await custom.createNamespacedCustomObject({
      ...IB,
      body: { ...imageBuild("st"), status: { phase: "Succeeded" } },
    })) as Obj;
    expect(created.status).toBeUndefined();
    const updated = (await custom.replaceNamespacedCustomObject({
      ...IB,
      name: "st",
      body: {
        ...created,
        status: { phase: "Succeeded" },
        metadata: { ...created.metadata, labels: { a: "b" } },
      },
    })) as Obj;
    expect(updated.status).toBeUndefined();
    expect(updated.metadata.labels).toEqual({ a: "b" });
  });

  it("takes only status through /status, bumping resourceVersion but not generation", async () => {
    const before = (await custom.getNamespacedCustomObject({ ...IB, name: "st" })) as Obj;
    const after = (await custom.replaceNamespacedCustomObjectStatus({
      ...IB,
      name: "st",
      body: {
        ...before,
        status: { phase: "Building" },
        metadata: { ...before.metadata, labels: { ignored: "yes" } },
      },
    })) as Obj;
    expect(after.status).toEqual({ phase: "Building" });
    expect(after.metadata.labels).toEqual({ a: "b" });
    expect(after.metadata.generation).toBe(before.metadata.generation);
    expect(Number(after.metadata.resourceVersion)).toBeGreaterThan(
      Number(before.metadata.resourceVersion),
    );
  });

  it("patches status through /status", async () => {
    const patched = (await custom.patchNamespacedCustomObjectStatus(
      { ...IB, name: "st", body: { status: { phase: "Failed" } } },
      mergePatch(),
    )) as Obj;
    expect(patched.status).toEqual({ phase: "Failed" });
  });

  it("works the same for built-in kinds (Deployment)", async () => {
    const created = await apps.createNamespacedDeployment({
      namespace: "u",
      body: deployment("dep-status"),
    });
    expect(created.status).toEqual({});
    const withStatus = await apps.replaceNamespacedDeploymentStatus({
      namespace: "u",
      name: "dep-status",
      body: { ...created, status: { replicas: 3, observedGeneration: 1 } },
    });
    expect(withStatus.status).toEqual({ replicas: 3, observedGeneration: 1 });
    const main = await apps.replaceNamespacedDeployment({
      namespace: "u",
      name: "dep-status",
      body: { ...withStatus, status: { replicas: 99 } },
    });
    expect(main.status).toEqual({ replicas: 3, observedGeneration: 1 });
  });
});

describe("generation", () => {
  it("starts at 1 and moves only when the spec changes", async () => {
    const created = (await custom.createNamespacedCustomObject({
      ...IB,
      body: {
        apiVersion: "buildfarm.dev/v1alpha1",
        kind: "BuilderPool",
        metadata: { name: "gen" },
        spec: { architectures: [{ name: "amd64", replicas: 1 }] },
      },
      plural: "builderpools",
    })) as Obj;
    expect(created.metadata.generation).toBe(1);
    const pools = { ...IB, plural: "builderpools", name: "gen" };
    const labelled = (await custom.patchNamespacedCustomObject(
      { ...pools, body: { metadata: { labels: { x: "y" } } } },
      mergePatch(),
    )) as Obj;
    expect(labelled.metadata.generation).toBe(1);
    const status = (await custom.patchNamespacedCustomObjectStatus(
      { ...pools, body: { status: { observedGeneration: 1 } } },
      mergePatch(),
    )) as Obj;
    expect(status.metadata.generation).toBe(1);
    const respecced = (await custom.patchNamespacedCustomObject(
      { ...pools, body: { spec: { architectures: [{ name: "amd64", replicas: 2 }] } } },
      mergePatch(),
    )) as Obj;
    expect(respecced.metadata.generation).toBe(2);
  });

  it("bumps a Deployment's generation on annotation changes too", async () => {
    const created = await apps.createNamespacedDeployment({
      namespace: "u",
      body: deployment("dep-gen"),
    });
    const annotated = await apps.patchNamespacedDeployment(
      { namespace: "u", name: "dep-gen", body: { metadata: { annotations: { note: "x" } } } },
      mergePatch(),
    );
    expect(annotated.metadata?.generation).toBe((created.metadata?.generation ?? 0) + 1);
    const labelled = await apps.patchNamespacedDeployment(
      { namespace: "u", name: "dep-gen", body: { metadata: { labels: { l: "x" } } } },
      mergePatch(),
    );
    expect(labelled.metadata?.generation).toBe(annotated.metadata?.generation);
  });

  it("is not set on kinds that do not track it (ConfigMap)", async () => {
    const cm = await core.readNamespacedConfigMap({ namespace: "u", name: "cm" });
    expect(cm.metadata?.generation).toBeUndefined();
  });

  it("refuses changes to a Job's template as immutable", async () => {
    const batch = kube.kubeConfig().makeApiClient(BatchV1Api);
    await batch.createNamespacedJob({
      namespace: "u",
      body: {
        metadata: { name: "immutable" },
        spec: {
          template: {
            spec: { restartPolicy: "Never", containers: [{ name: "c", image: "busybox:1" }] },
          },
        },
      },
    });
    const status = await expectStatus(
      batch.patchNamespacedJob(
        {
          namespace: "u",
          name: "immutable",
          body: {
            spec: { template: { spec: { containers: [{ name: "c", image: "busybox:2" }] } } },
          },
        },
        mergePatch(),
      ),
    );
    expect(status.code).toBe(422);
    expect(status.details?.causes?.[0]).toMatchObject({
      field: "spec.template",
      reason: "FieldValueInvalid",
    });
    expect(status.details?.causes?.[0]?.message).toMatch(/field is immutable$/);
  });
});
