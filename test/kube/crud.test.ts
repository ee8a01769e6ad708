// CRUD through the real client-node, the Status bodies errors come back with, lists and
// selectors, discovery and /version.
import {
  AppsV1Api,
  BatchV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubernetesObject,
  KubernetesObjectApi,
  VersionApi,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectStatus } from "./client.ts";
import { type Kube, startKube } from "./index.ts";

let kube: Kube;
let core: CoreV1Api;
let batch: BatchV1Api;

beforeAll(async () => {
  kube = await startKube({ namespaces: ["crud", "other"], version: "1.29" });
  core = kube.kubeConfig().makeApiClient(CoreV1Api);
  batch = kube.kubeConfig().makeApiClient(BatchV1Api);
});
afterAll(() => kube.stop());

const configMap = (name: string, labels: Record<string, string> = {}) => ({
  metadata: { name, labels },
  data: { key: "value" },
});

describe("create, get, update, delete", () => {
  it("creates an object with uid, resourceVersion and creationTimestamp, and reads it back", async () => {
    const created = await core.createNamespacedConfigMap({
      namespace: "crud",
      body: configMap("a"),
    });
    expect(created.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(Number(created.metadata?.resourceVersion)).toBeGreaterThan(0);
    expect(created.metadata?.creationTimestamp).toBeInstanceOf(Date);
    expect(created.metadata?.generation).toBeUndefined();
    const read = await core.readNamespacedConfigMap({ namespace: "crud", name: "a" });
    expect(read).toEqual(created);
  });

  it("gives generateName a random 5-character suffix", async () => {
    const created = await core.createNamespacedConfigMap({
      namespace: "crud",
      body: { metadata: { generateName: "gen-" } },
    });
    expect(created.metadata?.name).toMatch(/^gen-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
  });

  it("answers a missing object with 404 NotFound naming the resource", async () => {
    const status = await expectStatus(
      core.readNamespacedConfigMap({ namespace: "crud", name: "nope" }),
    );
    expect(status).toEqual({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: 'configmaps "nope" not found',
      reason: "NotFound",
      details: { name: "nope", kind: "configmaps" },
      code: 404,
    });
  });

  it("names the group in errors about grouped and custom resources", async () => {
    const jobs = await expectStatus(batch.readNamespacedJob({ namespace: "crud", name: "x" }));
    expect(jobs.message).toBe('jobs.batch "x" not found');
    expect(jobs.details).toEqual({ name: "x", group: "batch", kind: "jobs" });
    const custom = kube.kubeConfig().makeApiClient(CustomObjectsApi);
    const build = await expectStatus(
      custom.getNamespacedCustomObject({
        group: "buildfarm.dev",
        version: "v1alpha1",
        namespace: "crud",
        plural: "imagebuilds",
        name: "x",
      }),
    );
    expect(build.message).toBe('imagebuilds.buildfarm.dev "x" not found');
  });

  it("refuses to create an existing name with 409 AlreadyExists", async () => {
    await core.createNamespacedConfigMap({ namespace: "crud", body: configMap("dup") });
    const status = await expectStatus(
      core.createNamespacedConfigMap({ namespace: "crud", body: configMap("dup") }),
    );
    expect(status).toMatchObject({
      reason: "AlreadyExists",
      code: 409,
      message: 'configmaps "dup" already exists',
      details: { name: "dup", kind: "configmaps" },
    });
  });

  it("refuses a body whose namespace differs from the URL's with 400", async () => {
    const status = await expectStatus(
      core.createNamespacedConfigMap({
        namespace: "crud",
        body: { metadata: { name: "x", namespace: "other" } },
      }),
    );
    expect(status).toMatchObject({
      code: 400,
      reason: "BadRequest",
      message:
        "the namespace of the provided object does not match the namespace sent on the request",
    });
  });

  it("refuses objects in a namespace that does not exist (NamespaceLifecycle)", async () => {
    const status = await expectStatus(
      core.createNamespacedConfigMap({ namespace: "ghost", body: configMap("x") }),
    );
    expect(status).toMatchObject({
      code: 404,
      reason: "NotFound",
      message: 'namespaces "ghost" not found',
    });
  });

  it("answers a create carrying a resourceVersion with the storage layer's 500", async () => {
    const status = await expectStatus(
      core.createNamespacedConfigMap({
        namespace: "crud",
        body: { metadata: { name: "rv", resourceVersion: "5" } },
      }),
    );
    expect(status).toMatchObject({
      code: 500,
      message: "resourceVersion should not be set on objects to be created",
    });
  });

  it("validates built-in kinds with 422 Invalid and field causes", async () => {
    const status = await expectStatus(
      batch.createNamespacedJob({
        namespace: "crud",
        body: { metadata: { name: "no-template" }, spec: {} as never },
      }),
    );
    expect(status.code).toBe(422);
    expect(status.reason).toBe("Invalid");
    expect(status.details).toMatchObject({ name: "no-template", group: "batch", kind: "Job" });
    expect(status.details?.causes).toEqual(
      expect.arrayContaining([
        {
          reason: "FieldValueRequired",
          message: "Required value",
          field: "spec.template.spec.containers",
        },
        {
          reason: "FieldValueNotSupported",
          message: 'Unsupported value: "Always": supported values: "OnFailure", "Never"',
          field: "spec.template.spec.restartPolicy",
        },
      ]),
    );
    expect(status.message).toMatch(/^Job\.batch "no-template" is invalid: \[/);
  });

  it("refuses invalid names and label values", async () => {
    const status = await expectStatus(
      core.createNamespacedConfigMap({
        namespace: "crud",
        body: { metadata: { name: "Bad_Name", labels: { app: "x".repeat(64) } } },
      }),
    );
    expect(status.details?.causes?.map((c) => c.field)).toEqual([
      "metadata.name",
      "metadata.labels",
    ]);
    expect(status.details?.causes?.[1]?.message).toContain("must be no more than 63 characters");
  });

  it("deletes, answering with a Success Status that names the object", async () => {
    const cm = await core.createNamespacedConfigMap({ namespace: "crud", body: configMap("gone") });
    const status = await core.deleteNamespacedConfigMap({ namespace: "crud", name: "gone" });
    expect(status).toMatchObject({
      status: "Success",
      details: { name: "gone", kind: "configmaps", uid: cm.metadata?.uid },
    });
    await expectStatus(core.readNamespacedConfigMap({ namespace: "crud", name: "gone" }));
  });

  it("turns Secret stringData into base64 data", async () => {
    const secret = await core.createNamespacedSecret({
      namespace: "crud",
      body: { metadata: { name: "s" }, stringData: { token: "hunter2" } },
    });
    expect(secret.data).toEqual({ token: Buffer.from("hunter2").toString("base64") });
    expect(secret.stringData).toBeUndefined();
    expect(secret.type).toBe("Opaque");
  });

  it("requires the keys of typed Secrets", async () => {
    const status = await expectStatus(
      core.createNamespacedSecret({
        namespace: "crud",
        body: { metadata: { name: "tls" }, type: "kubernetes.io/tls", data: { "tls.crt": "" } },
      }),
    );
    expect(status.details?.causes).toEqual([
      { reason: "FieldValueRequired", message: "Required value", field: "data[tls.key]" },
    ]);
  });

  it("applies the defaults the decoder applies to pod templates", async () => {
    const apps = kube.kubeConfig().makeApiClient(AppsV1Api);
    const created = await apps.createNamespacedDeployment({
      namespace: "crud",
      body: {
        metadata: { name: "defaults" },
        spec: {
          selector: { matchLabels: { app: "d" } },
          template: {
            metadata: { labels: { app: "d" } },
            spec: { containers: [{ name: "c", image: "busybox" }] },
          },
        },
      },
    });
    expect(created.spec).toMatchObject({
      replicas: 1,
      revisionHistoryLimit: 10,
      progressDeadlineSeconds: 600,
      strategy: {
        type: "RollingUpdate",
        rollingUpdate: { maxSurge: "25%", maxUnavailable: "25%" },
      },
    });
    expect(created.spec?.template.spec).toMatchObject({
      restartPolicy: "Always",
      dnsPolicy: "ClusterFirst",
      terminationGracePeriodSeconds: 30,
      schedulerName: "default-scheduler",
    });
    expect(created.spec?.template.spec?.containers[0]).toMatchObject({
      imagePullPolicy: "Always",
      terminationMessagePath: "/dev/termination-log",
      terminationMessagePolicy: "File",
    });
  });

  it("generates a Job's selector and labels its pod template", async () => {
    const job = await batch.createNamespacedJob({
      namespace: "crud",
      body: {
        metadata: { name: "labelled" },
        spec: {
          template: {
            spec: { restartPolicy: "Never", containers: [{ name: "c", image: "busybox" }] },
          },
        },
      },
    });
    const uid = job.metadata?.uid ?? "";
    expect(job.spec?.selector).toEqual({
      matchLabels: { "batch.kubernetes.io/controller-uid": uid },
    });
    expect(job.spec?.template.metadata?.labels).toEqual({
      "batch.kubernetes.io/controller-uid": uid,
      "batch.kubernetes.io/job-name": "labelled",
      "controller-uid": uid,
      "job-name": "labelled",
    });
    expect(job.spec).toMatchObject({ backoffLimit: 6, completions: 1, parallelism: 1 });
  });
});

describe("lists", () => {
  beforeAll(async () => {
    for (const [namespace, name, tier] of [
      ["crud", "l-1", "web"],
      ["crud", "l-2", "db"],
      ["other", "l-3", "web"],
      ["other", "l-4", "cache"],
    ] as const)
      await core.createNamespacedConfigMap({
        namespace,
        body: configMap(name, { suite: "lists", tier }),
      });
  });

  const names = (list: { items: { metadata?: { name?: string } }[] }) =>
    list.items.map((i) => i.metadata?.name);

  it("lists one namespace or all of them, in name order, at the current resourceVersion", async () => {
    const one = await core.listNamespacedConfigMap({
      namespace: "other",
      labelSelector: "suite=lists",
    });
    expect(names(one)).toEqual(["l-3", "l-4"]);
    const newest = Math.max(...one.items.map((i) => Number(i.metadata?.resourceVersion)));
    const all = await core.listConfigMapForAllNamespaces({ labelSelector: "suite=lists" });
    expect(names(all)).toEqual(["l-1", "l-2", "l-3", "l-4"]);
    expect(Number(all.metadata?.resourceVersion)).toBeGreaterThanOrEqual(newest);
    expect(Number(all.metadata?.resourceVersion)).toBeLessThanOrEqual(kube.store.resourceVersion);
  });

  it.each([
    ["tier=web", ["l-1", "l-3"]],
    ["tier==web", ["l-1", "l-3"]],
    ["tier!=web", ["l-2", "l-4"]],
    ["tier in (db,cache)", ["l-2", "l-4"]],
    ["tier notin (db,cache)", ["l-1", "l-3"]],
    ["tier", ["l-1", "l-2", "l-3", "l-4"]],
    ["!tier", []],
  ])("selects labels with %s", async (selector, expected) => {
    const list = await core.listConfigMapForAllNamespaces({
      labelSelector: `suite=lists,${selector}`,
    });
    expect(names(list)).toEqual(expected);
  });

  it("selects fields metadata.name and metadata.namespace, and refuses others", async () => {
    const byName = await core.listConfigMapForAllNamespaces({ fieldSelector: "metadata.name=l-4" });
    expect(names(byName)).toEqual(["l-4"]);
    const byNamespace = await core.listConfigMapForAllNamespaces({
      labelSelector: "suite=lists",
      fieldSelector: "metadata.namespace!=other",
    });
    expect(names(byNamespace)).toEqual(["l-1", "l-2"]);
    const status = await expectStatus(
      core.listConfigMapForAllNamespaces({ fieldSelector: "data.key=value" }),
    );
    expect(status).toMatchObject({
      code: 400,
      reason: "BadRequest",
      message: "field label not supported: data.key",
    });
  });

  it("pages with limit and continue, counting what remains", async () => {
    const first = await core.listConfigMapForAllNamespaces({ limit: 3 });
    expect(first.items).toHaveLength(3);
    expect(first.metadata?._continue).toBeTruthy();
    const total = kube.store.objects("configmaps").length;
    expect(first.metadata?.remainingItemCount).toBe(total - 3);
    const seen = [...names(first)];
    let token = first.metadata?._continue;
    while (token) {
      const page = await core.listConfigMapForAllNamespaces({ limit: 3, _continue: token });
      seen.push(...names(page));
      expect(page.metadata?.resourceVersion).toBe(first.metadata?.resourceVersion);
      token = page.metadata?._continue;
    }
    expect(seen).toHaveLength(total);
  });

  it("serves a paginated list at the snapshot of its first page", async () => {
    const first = await core.listNamespacedConfigMap({ namespace: "other", limit: 1 });
    await core.createNamespacedConfigMap({
      namespace: "other",
      body: configMap("l-5", { suite: "lists" }),
    });
    const rest = await core.listNamespacedConfigMap({
      namespace: "other",
      limit: 100,
      _continue: first.metadata?._continue,
    });
    expect(names(rest)).not.toContain("l-5");
  });

  it("omits kind and apiVersion from the items of built-in lists, like the real server", async () => {
    const response = await fetch(`${kube.url}/api/v1/namespaces/other/configmaps`);
    const body = (await response.json()) as {
      kind: string;
      apiVersion: string;
      items: Record<string, unknown>[];
    };
    expect(body.kind).toBe("ConfigMapList");
    expect(body.apiVersion).toBe("v1");
    expect(body.items[0]).not.toHaveProperty("kind");
    expect(body.items[0]).not.toHaveProperty("apiVersion");
  });
});

describe("one resourceVersion across kinds", () => {
  it("increases on every write, whatever the kind", async () => {
    const a = await core.createNamespacedConfigMap({ namespace: "crud", body: configMap("rv-a") });
    const b = await core.createNamespacedSecret({
      namespace: "crud",
      body: { metadata: { name: "rv-b" } },
    });
    const c = await core.replaceNamespacedConfigMap({
      namespace: "crud",
      name: "rv-a",
      body: { ...a, data: { k: "2" } },
    });
    const rvs = [a, b, c].map((o) => Number(o.metadata?.resourceVersion));
    expect(rvs[1]).toBeGreaterThan(rvs[0]!);
    expect(rvs[2]).toBeGreaterThan(rvs[1]!);
  });
});

describe("discovery and version", () => {
  it("serves the configured version", async () => {
    const version = await kube.kubeConfig().makeApiClient(VersionApi).getCode();
    expect(version).toMatchObject({ major: "1", minor: "29", gitVersion: "v1.29.0" });
    const other = await startKube({ version: "1.31", nodes: [] });
    const newer = await other.kubeConfig().makeApiClient(VersionApi).getCode();
    expect(newer.minor).toBe("31");
    await other.stop();
  });

  it("lets KubernetesObjectApi discover resources and read any kind", async () => {
    const client = KubernetesObjectApi.makeApiClient(kube.kubeConfig());
    const pool: KubernetesObject & { spec: unknown } = {
      apiVersion: "buildfarm.dev/v1alpha1",
      kind: "BuilderPool",
      metadata: { name: "pool", namespace: "crud" },
      spec: { architectures: [{ name: "amd64", replicas: 1 }] },
    };
    const created = await client.create(pool);
    expect(created.metadata?.uid).toBeTruthy();
    const read = await client.read({
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "defaults", namespace: "crud" },
    });
    expect(read.kind).toBe("Deployment");
    const list = await client.list("v1", "ConfigMap", "other");
    expect(list.items.length).toBeGreaterThan(0);
  });

  it("describes groups and resources with their subresources and verbs", async () => {
    const groups = (await (await fetch(`${kube.url}/apis`)).json()) as {
      groups: { name: string }[];
    };
    expect(groups.groups.map((g) => g.name)).toEqual(
      expect.arrayContaining([
        "apps",
        "batch",
        "policy",
        "networking.k8s.io",
        "coordination.k8s.io",
        "buildfarm.dev",
      ]),
    );
    const v1 = (await (await fetch(`${kube.url}/api/v1`)).json()) as {
      resources: { name: string; verbs: string[] }[];
    };
    expect(v1.resources.map((r) => r.name)).toEqual(
      expect.arrayContaining(["pods", "pods/log", "pods/status", "secrets"]),
    );
    const custom = (await (await fetch(`${kube.url}/apis/buildfarm.dev/v1alpha1`)).json()) as {
      resources: { name: string; shortNames?: string[] }[];
    };
    expect(custom.resources).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ name: "imagebuilds", shortNames: ["ib"] }),
        expect.objectContaining({ name: "imagebuilds/status" }),
      ]),
    );
  });

  it("answers an unknown resource with 404 and the server's message", async () => {
    const response = await fetch(`${kube.url}/apis/example.com/v1/widgets`);
    expect(response.status).toBe(404);
    expect(await response.json()).toMatchObject({
      message: "the server could not find the requested resource",
    });
  });
});
