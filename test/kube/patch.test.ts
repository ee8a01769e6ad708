// The three patch formats, through client-node (which picks the Content-Type) and directly.
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubernetesObjectApi,
  PatchStrategy,
  type V1Deployment,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectStatus, jsonPatch, mergePatch, strategicMergePatch } from "./client.ts";
import { type Kube, startKube } from "./index.ts";
import {
  jsonPatch as applyJsonPatch,
  mergePatch as applyMergePatch,
  strategicMergePatch as applySmp,
} from "./patch.ts";

let kube: Kube;
let core: CoreV1Api;
let apps: AppsV1Api;

beforeAll(async () => {
  kube = await startKube({ namespaces: ["p"], nodes: [], controllers: { deployments: false } });
  core = kube.kubeConfig().makeApiClient(CoreV1Api);
  apps = kube.kubeConfig().makeApiClient(AppsV1Api);
  await apps.createNamespacedDeployment({ namespace: "p", body: deployment() });
});
afterAll(() => kube.stop());

function deployment(): V1Deployment {
  return {
    metadata: {
      name: "d",
      labels: { app: "d", keep: "yes" },
      finalizers: ["example.com/a"],
    },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: "d" } },
      template: {
        metadata: { labels: { app: "d" } },
        spec: {
          containers: [
            { name: "main", image: "busybox:1", env: [{ name: "A", value: "1" }] },
            { name: "sidecar", image: "busybox:1" },
          ],
        },
      },
    },
  };
}

describe("client-node's patch content types", () => {
  it("sends application/json-patch+json from typed patch methods by default", async () => {
    const patched = await core.patchNamespace({
      name: "p",
      body: [{ op: "add", path: "/metadata/labels/patched", value: "json" }],
    });
    expect(patched.metadata?.labels?.patched).toBe("json");
    const status = await expectStatus(
      core.patchNamespace({ name: "p", body: { metadata: { labels: { x: "y" } } } }),
    );
    expect(status).toMatchObject({
      code: 400,
      message: "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
    });
  });

  it("sends strategic merge patch from KubernetesObjectApi.patch by default", async () => {
    const client = KubernetesObjectApi.makeApiClient(kube.kubeConfig());
    const patched = await client.patch({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: "p", labels: { via: "object-api" } },
    });
    expect(patched.metadata?.labels?.via).toBe("object-api");
    const custom = await expectStatus(
      client.patch(
        {
          apiVersion: "buildfarm.dev/v1alpha1",
          kind: "ImageBuild",
          metadata: { name: "x", namespace: "p" },
        },
        undefined,
        undefined,
        undefined,
        undefined,
        PatchStrategy.StrategicMergePatch,
      ),
    );
    // 415 before the object is looked up, as the real patch handler checks the type first.
    expect(custom.code).toBe(415);
  });
});

describe("merge patch", () => {
  it("merges maps and deletes keys set to null", async () => {
    const patched = await apps.patchNamespacedDeployment(
      {
        namespace: "p",
        name: "d",
        body: { metadata: { labels: { keep: null, added: "1" } }, spec: { replicas: 3 } },
      },
      mergePatch(),
    );
    expect(patched.metadata?.labels).toEqual({ app: "d", added: "1" });
    expect(patched.spec?.replicas).toBe(3);
  });

  it("replaces lists whole", async () => {
    const patched = await apps.patchNamespacedDeployment(
      { namespace: "p", name: "d", body: { metadata: { finalizers: ["example.com/b"] } } },
      mergePatch(),
    );
    expect(patched.metadata?.finalizers).toEqual(["example.com/b"]);
  });

  it("checks a resourceVersion the patch carries (409 when stale)", async () => {
    const status = await expectStatus(
      apps.patchNamespacedDeployment(
        {
          namespace: "p",
          name: "d",
          body: { metadata: { resourceVersion: "1", labels: { a: "b" } } },
        },
        mergePatch(),
      ),
    );
    expect(status).toMatchObject({ code: 409, reason: "Conflict" });
  });

  it("answers a patch of a missing object with 404", async () => {
    const status = await expectStatus(
      apps.patchNamespacedDeployment(
        { namespace: "p", name: "missing", body: { spec: {} } },
        mergePatch(),
      ),
    );
    expect(status.message).toBe('deployments.apps "missing" not found');
  });
});

describe("JSON patch", () => {
  it("applies add, replace, remove and test", async () => {
    const patched = await apps.patchNamespacedDeployment(
      {
        namespace: "p",
        name: "d",
        body: [
          { op: "test", path: "/spec/replicas", value: 3 },
          { op: "replace", path: "/spec/replicas", value: 2 },
          { op: "add", path: "/metadata/annotations", value: { "a/b": "c" } },
          { op: "remove", path: "/metadata/labels/added" },
        ],
      },
      jsonPatch(),
    );
    expect(patched.spec?.replicas).toBe(2);
    expect(patched.metadata?.annotations).toEqual({ "a/b": "c" });
    expect(patched.metadata?.labels).toEqual({ app: "d" });
  });

  it("fails a failing test operation with 422 and changes nothing", async () => {
    const before = await apps.readNamespacedDeployment({ namespace: "p", name: "d" });
    const status = await expectStatus(
      apps.patchNamespacedDeployment(
        {
          namespace: "p",
          name: "d",
          body: [
            { op: "test", path: "/spec/replicas", value: 7 },
            { op: "replace", path: "/spec/replicas", value: 9 },
          ],
        },
        jsonPatch(),
      ),
    );
    expect(status.code).toBe(422);
    const after = await apps.readNamespacedDeployment({ namespace: "p", name: "d" });
    expect(after.metadata?.resourceVersion).toBe(before.metadata?.resourceVersion);
  });
});

describe("strategic merge patch", () => {
  it("merges containers by name and their env by name", async () => {
    const patched = await apps.patchNamespacedDeployment(
      {
        namespace: "p",
        name: "d",
        body: {
          spec: {
            template: {
              spec: {
                containers: [
                  { name: "main", image: "busybox:2", env: [{ name: "B", value: "2" }] },
                ],
              },
            },
          },
        },
      },
      strategicMergePatch(),
    );
    const containers = patched.spec?.template.spec?.containers ?? [];
    expect(containers.map((c) => [c.name, c.image])).toEqual([
      ["main", "busybox:2"],
      ["sidecar", "busybox:1"],
    ]);
    expect(containers[0]?.env).toEqual([
      { name: "A", value: "1" },
      { name: "B", value: "2" },
    ]);
  });

  it("deletes a container with $patch: delete", async () => {
    const patched = await apps.patchNamespacedDeployment(
      {
        namespace: "p",
        name: "d",
        body: {
          spec: { template: { spec: { containers: [{ name: "sidecar", $patch: "delete" }] } } },
        },
      },
      strategicMergePatch(),
    );
    expect(patched.spec?.template.spec?.containers.map((c) => c.name)).toEqual(["main"]);
  });

  it("merges finalizers as a set; removing one takes $deleteFromPrimitiveList", async () => {
    const added = await apps.patchNamespacedDeployment(
      { namespace: "p", name: "d", body: { metadata: { finalizers: ["example.com/c"] } } },
      strategicMergePatch(),
    );
    expect(added.metadata?.finalizers).toEqual(["example.com/b", "example.com/c"]);
    const removed = await apps.patchNamespacedDeployment(
      {
        namespace: "p",
        name: "d",
        body: { metadata: { "$deleteFromPrimitiveList/finalizers": ["example.com/b"] } },
      },
      strategicMergePatch(),
    );
    expect(removed.metadata?.finalizers).toEqual(["example.com/c"]);
  });

  it("merges owner references by uid", async () => {
    const ref = (uid: string) => ({ apiVersion: "v1", kind: "ConfigMap", name: uid, uid });
    await apps.patchNamespacedDeployment(
      { namespace: "p", name: "d", body: { metadata: { ownerReferences: [ref("u1")] } } },
      strategicMergePatch(),
    );
    const patched = await apps.patchNamespacedDeployment(
      { namespace: "p", name: "d", body: { metadata: { ownerReferences: [ref("u2")] } } },
      strategicMergePatch(),
    );
    expect(patched.metadata?.ownerReferences?.map((r) => r.uid)).toEqual(["u1", "u2"]);
  });

  it("is refused for custom resources with 415, as the API server does", async () => {
    const custom = kube.kubeConfig().makeApiClient(CustomObjectsApi);
    await custom.createNamespacedCustomObject({
      group: "buildfarm.dev",
      version: "v1alpha1",
      namespace: "p",
      plural: "builderpools",
      body: {
        apiVersion: "buildfarm.dev/v1alpha1",
        kind: "BuilderPool",
        metadata: { name: "smp" },
        spec: { architectures: [{ name: "amd64", replicas: 1 }] },
      },
    });
    const status = await expectStatus(
      custom.patchNamespacedCustomObject(
        {
          group: "buildfarm.dev",
          version: "v1alpha1",
          namespace: "p",
          plural: "builderpools",
          name: "smp",
          body: { metadata: { labels: { a: "b" } } },
        },
        strategicMergePatch(),
      ),
    );
    expect(status).toMatchObject({
      code: 415,
      reason: "UnsupportedMediaType",
      message:
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json",
    });
  });
});

describe("patch functions", () => {
  it.each([
    [{ a: 1, b: { c: 2 } }, { b: { c: null, d: 3 } }, { a: 1, b: { d: 3 } }],
    [{ a: [1, 2] }, { a: [3] }, { a: [3] }],
    [{ a: 1 }, { a: { b: 1 } }, { a: { b: 1 } }],
  ])("merge patch %j + %j = %j", (target, patch, expected) => {
    expect(applyMergePatch(target, patch)).toEqual(expected);
  });

  it.each([
    [{ a: [1, 2] }, [{ op: "add", path: "/a/-", value: 3 }], { a: [1, 2, 3] }],
    [{ a: [1, 2] }, [{ op: "add", path: "/a/0", value: 0 }], { a: [0, 1, 2] }],
    [{ "a/b": 1 }, [{ op: "move", from: "/a~1b", path: "/c" }], { c: 1 }],
    [{ a: { b: 1 } }, [{ op: "copy", from: "/a", path: "/c" }], { a: { b: 1 }, c: { b: 1 } }],
  ])("JSON patch %j with %j = %j", (target, patch, expected) => {
    expect(applyJsonPatch(target, patch)).toEqual(expected);
  });

  it("strategic merge replaces lists without a merge key and honours $patch: replace", () => {
    const target = {
      spec: { tolerations: [{ key: "a" }], containers: [{ name: "x", image: "1" }] },
    };
    expect(applySmp(target, { spec: { tolerations: [{ key: "b" }] } })).toEqual({
      spec: { tolerations: [{ key: "b" }], containers: [{ name: "x", image: "1" }] },
    });
    expect(applySmp(target, { spec: { $patch: "replace", containers: [] } })).toEqual({
      spec: { containers: [] },
    });
    expect(
      applySmp(
        { status: { conditions: [{ type: "Ready", status: "False" }] } },
        { status: { conditions: [{ type: "Ready", status: "True" }] } },
      ),
    ).toEqual({ status: { conditions: [{ type: "Ready", status: "True" }] } });
  });
});
