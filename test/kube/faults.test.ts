// Fault injection and the request log.
import { BatchV1Api, CoreV1Api, CustomObjectsApi } from "@kubernetes/client-node";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { apiStatus, expectStatus, mergePatch } from "./client.ts";
import { type Kube, startKube } from "./index.ts";

let kube: Kube;
let core: CoreV1Api;

beforeAll(async () => {
  kube = await startKube({ namespaces: ["f"], nodes: [] });
  core = kube.kubeConfig().makeApiClient(CoreV1Api);
});
afterAll(() => kube.stop());
beforeEach(() => {
  kube.faults.clear();
  kube.requestLog.reset();
});

const getConfigMaps = () => core.listNamespacedConfigMap({ namespace: "f" });

describe("failing requests", () => {
  it("fails the next N matching requests with 500 InternalError, then serves again", async () => {
    kube.faults.failNext(2, { code: 500, match: { verb: "list", resource: "configmaps" } });
    await core.readNamespace({ name: "f" });
    const first = await expectStatus(getConfigMaps());
    expect(first).toMatchObject({
      code: 500,
      reason: "InternalError",
      message: "Internal error occurred: injected fault",
    });
    await expectStatus(getConfigMaps());
    await getConfigMaps();
    expect(kube.requestLog.count({ verb: "list", resource: "configmaps", code: 500 })).toBe(2);
    expect(kube.requestLog.entries({ code: 500 })[0]?.fault).toBe("injected 500");
  });

  it("throttles with 429 TooManyRequests and a Retry-After header", async () => {
    kube.faults.failNext(1, { code: 429, retryAfterSeconds: 3 });
    const response = await fetch(`${kube.url}/api/v1/namespaces/f/configmaps`);
    expect(response.status).toBe(429);
    expect(response.headers.get("retry-after")).toBe("3");
    expect(await response.json()).toMatchObject({
      reason: "TooManyRequests",
      message: "Too many requests, please try again later.",
      details: { retryAfterSeconds: 3 },
    });
  });

  it("answers 409 Conflict on a matching write, naming the object", async () => {
    await core.createNamespacedConfigMap({ namespace: "f", body: { metadata: { name: "c" } } });
    kube.faults.failNext(1, { code: 409, match: { verb: ["update", "patch"], name: "c" } });
    const status = await expectStatus(
      core.patchNamespacedConfigMap(
        { namespace: "f", name: "c", body: { data: { a: "1" } } },
        mergePatch(),
      ),
    );
    expect(status.message).toBe(
      'Operation cannot be fulfilled on configmaps "c": the object has been modified; please apply your changes to the latest version and try again',
    );
  });

  it("fails a seeded fraction of requests, the same ones for the same seed", async () => {
    const run = async () => {
      kube.faults.clear();
      kube.faults.failRate(0.3, { seed: 42, match: { resource: "configmaps" } });
      const outcomes: number[] = [];
      for (let i = 0; i < 40; i++)
        outcomes.push(
          await getConfigMaps().then(
            () => 200,
            (e) => apiStatus(e)?.code ?? 0,
          ),
        );
      return outcomes;
    };
    const first = await run();
    const second = await run();
    expect(first).toEqual(second);
    const failures = first.filter((code) => code === 500).length;
    expect(failures).toBeGreaterThan(4);
    expect(failures).toBeLessThan(20);
  });

  it("fails custom resources by group-qualified name", async () => {
    kube.faults.failNext(1, { code: 503, match: { resource: "imagebuilds.buildfarm.dev" } });
    await getConfigMaps();
    const custom = kube.kubeConfig().makeApiClient(CustomObjectsApi);
    const status = await expectStatus(
      custom.listNamespacedCustomObject({
        group: "buildfarm.dev",
        version: "v1alpha1",
        namespace: "f",
        plural: "imagebuilds",
      }),
    );
    expect(status).toMatchObject({ code: 503, reason: "ServiceUnavailable" });
  });
});

describe("latency and pausing", () => {
  it("adds latency to matching requests", async () => {
    // A latency far above what a busy machine adds to a request: only the matching one waits it.
    kube.faults.latency(2_000, { match: { verb: "list" } });
    const started = Date.now();
    await getConfigMaps();
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_990);
    const quick = Date.now();
    await core.readNamespace({ name: "f" });
    expect(Date.now() - quick).toBeLessThan(1_990);
  });

  it("holds requests while paused and serves them on unpause", async () => {
    kube.faults.pause();
    let done = false;
    const pending = getConfigMaps().then(() => {
      done = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(done).toBe(false);
    kube.faults.unpause();
    await pending;
    expect(done).toBe(true);
  });

  it("drops open watches periodically", async () => {
    const stop = kube.faults.dropWatchesEvery(50);
    const response = await fetch(
      `${kube.url}/api/v1/namespaces/f/configmaps?watch=true&resourceVersion=${kube.store.resourceVersion}`,
    );
    const text = await response.text();
    expect(response.status).toBe(200);
    expect(text).toBe("");
    stop();
  });
});

describe("expired watches", () => {
  it("answers the next resuming watch with a 410 ERROR event, like a resourceVersion out of the history", async () => {
    kube.faults.expireWatches(1, { match: { resource: "configmaps" } });
    const rv = kube.store.resourceVersion;
    const response = await fetch(
      `${kube.url}/api/v1/namespaces/f/configmaps?watch=true&resourceVersion=${rv}`,
    );
    expect(response.status).toBe(200);
    const [line, ...rest] = (await response.text()).trim().split("\n");
    expect(rest).toEqual([]);
    expect(JSON.parse(line!)).toMatchObject({
      type: "ERROR",
      object: { kind: "Status", code: 410, reason: "Expired" },
    });
    const again = await fetch(
      `${kube.url}/api/v1/namespaces/f/configmaps?watch=true&resourceVersion=${rv}&timeoutSeconds=1`,
    );
    expect(await again.text()).toBe("");
  });
});

describe("request log", () => {
  it("records each request as RBAC sees it", async () => {
    const batch = kube.kubeConfig().makeApiClient(BatchV1Api);
    await batch.listNamespacedJob({ namespace: "f" });
    await core.createNamespacedPod({
      namespace: "f",
      body: { metadata: { name: "p" }, spec: { containers: [{ name: "c", image: "busybox" }] } },
    });
    await core.replaceNamespacedPodStatus({
      namespace: "f",
      name: "p",
      body: {
        metadata: { name: "p" },
        spec: { containers: [{ name: "c", image: "busybox" }] },
        status: { phase: "Pending" },
      },
    });
    await expectStatus(core.readNamespacedPodLog({ namespace: "f", name: "p" }));
    await core.deleteCollectionNamespacedConfigMap({ namespace: "f" });
    const watch = await fetch(`${kube.url}/api/v1/namespaces/f/pods?watch=1&timeoutSeconds=1`);
    await watch.text();

    const described = kube.requestLog
      .entries()
      .map(({ verb, apiGroup, resource, subresource, namespace, name, code }) => ({
        verb,
        apiGroup,
        resource,
        subresource,
        namespace,
        name,
        code,
      }));
    expect(described).toEqual([
      {
        verb: "list",
        apiGroup: "batch",
        resource: "jobs",
        subresource: undefined,
        namespace: "f",
        name: undefined,
        code: 200,
      },
      {
        verb: "create",
        apiGroup: "",
        resource: "pods",
        subresource: undefined,
        namespace: "f",
        name: undefined,
        code: 201,
      },
      {
        verb: "update",
        apiGroup: "",
        resource: "pods",
        subresource: "status",
        namespace: "f",
        name: "p",
        code: 200,
      },
      {
        verb: "get",
        apiGroup: "",
        resource: "pods",
        subresource: "log",
        namespace: "f",
        name: "p",
        code: 400,
      },
      {
        verb: "deletecollection",
        apiGroup: "",
        resource: "configmaps",
        subresource: undefined,
        namespace: "f",
        name: undefined,
        code: 200,
      },
      {
        verb: "watch",
        apiGroup: "",
        resource: "pods",
        subresource: undefined,
        namespace: "f",
        name: undefined,
        code: 200,
      },
    ]);
    expect(kube.requestLog.counts()).toEqual({
      "list jobs.batch": 1,
      "create pods": 1,
      "update pods/status": 1,
      "get pods/log": 1,
      "deletecollection configmaps": 1,
      "watch pods": 1,
    });
    expect(kube.requestLog.rbac()).toEqual([
      { apiGroup: "", resource: "configmaps", verb: "deletecollection", count: 1 },
      { apiGroup: "", resource: "pods", verb: "create", count: 1 },
      { apiGroup: "", resource: "pods", verb: "watch", count: 1 },
      { apiGroup: "", resource: "pods/log", verb: "get", count: 1 },
      { apiGroup: "", resource: "pods/status", verb: "update", count: 1 },
      { apiGroup: "batch", resource: "jobs", verb: "list", count: 1 },
    ]);
  });

  it("marks a point to read what came after, and logs discovery as non-resource URLs", async () => {
    const mark = kube.requestLog.mark();
    await fetch(`${kube.url}/version`);
    await getConfigMaps();
    const since = kube.requestLog.since(mark);
    expect(since.map((r) => [r.verb, r.nonResourceURL ?? r.resource])).toEqual([
      ["get", "/version"],
      ["list", "configmaps"],
    ]);
    expect(since[1]?.time).toBeGreaterThan(0);
    expect(since[1]?.durationMs).toBeGreaterThanOrEqual(0);
  });

  it("leaves direct store access out of the log", async () => {
    kube.store.create("configmaps", { metadata: { name: "direct" } }, { namespace: "f" });
    expect(kube.requestLog.size).toBe(0);
  });
});
