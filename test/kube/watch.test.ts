// Watches through client-node's Watch and makeInformer: resume from a resourceVersion,
// synthetic ADDED events, bookmarks, 410 Expired as an ERROR event, timeoutSeconds,
// selector transitions, and an informer that survives dropped watches and relists after 410.
import { CoreV1Api, makeInformer, type V1ConfigMap, Watch } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mergePatch } from "./client.ts";
import { type Kube, startKube } from "./index.ts";

interface Event {
  type: string;
  object: {
    kind?: string;
    code?: number;
    reason?: string;
    message?: string;
    metadata?: { name?: string; resourceVersion?: string; annotations?: Record<string, string> };
  };
}

let kube: Kube;
let core: CoreV1Api;

beforeAll(async () => {
  kube = await startKube({
    namespaces: ["w"],
    historySize: 20,
    bookmarkIntervalMs: 100,
    nodes: [],
  });
  core = kube.kubeConfig().makeApiClient(CoreV1Api);
});
afterAll(() => kube.stop());

/** Starts a watch and collects its events until `done` fires. */
async function watch(path: string, query: Record<string, string | number | boolean | undefined>) {
  const events: Event[] = [];
  let ended: unknown = "open";
  const controller = await new Watch(kube.kubeConfig()).watch(
    path,
    query,
    (type, object) => events.push({ type, object }),
    (error) => {
      ended = error ?? null;
    },
  );
  return {
    events,
    ended: () => ended !== "open",
    error: () => ended,
    stop: () => controller.abort(),
  };
}

const PATH = "/api/v1/namespaces/w/configmaps";
const cm = (name: string, labels: Record<string, string> = {}) => ({ metadata: { name, labels } });

describe("watch", () => {
  it("starts with ADDED events for what exists when no resourceVersion is given", async () => {
    await core.createNamespacedConfigMap({ namespace: "w", body: cm("existing") });
    const w = await watch(PATH, {});
    await kube.waitFor(() => w.events.some((e) => e.object.metadata?.name === "existing"));
    expect(w.events[0]?.type).toBe("ADDED");
    w.stop();
  });

  it("escapes U+2028 and U+2029 as the API server does, so a line-splitting client keeps the event", async () => {
    const w = await watch(PATH, {});
    const text = "one\u2028two\u2029three";
    await core.createNamespacedConfigMap({
      namespace: "w",
      body: { metadata: { name: "separators" }, data: { text } },
    });
    await kube.waitFor(() => w.events.some((e) => e.object.metadata?.name === "separators"));
    const event = w.events.find((e) => e.object.metadata?.name === "separators");
    expect((event?.object as { data?: Record<string, string> } | undefined)?.data?.text).toBe(text);
    w.stop();
  });

  it("resumes from a resourceVersion with exactly the later events", async () => {
    const created = await core.createNamespacedConfigMap({ namespace: "w", body: cm("resume") });
    await core.patchNamespacedConfigMap(
      { namespace: "w", name: "resume", body: { data: { a: "1" } } },
      mergePatch(),
    );
    await core.deleteNamespacedConfigMap({ namespace: "w", name: "resume" });
    const w = await watch(PATH, { resourceVersion: created.metadata?.resourceVersion });
    await kube.waitFor(() => w.events.length >= 2);
    expect(w.events.map((e) => [e.type, e.object.metadata?.name])).toEqual([
      ["MODIFIED", "resume"],
      ["DELETED", "resume"],
    ]);
    const [modified, deleted] = w.events.map((e) => Number(e.object.metadata?.resourceVersion));
    expect(deleted).toBeGreaterThan(modified!);
    w.stop();
  });

  it("sends a 410 Expired ERROR event and closes when the resourceVersion is too old", async () => {
    const first = await core.createNamespacedConfigMap({ namespace: "w", body: cm("old-0") });
    for (let i = 1; i <= 25; i++)
      await core.createNamespacedConfigMap({ namespace: "w", body: cm(`old-${i}`) });
    const w = await watch(PATH, { resourceVersion: first.metadata?.resourceVersion });
    await kube.waitFor(() => w.ended());
    expect(w.events).toHaveLength(1);
    expect(w.events[0]?.type).toBe("ERROR");
    expect(w.events[0]?.object).toMatchObject({
      kind: "Status",
      apiVersion: "v1",
      status: "Failure",
      reason: "Expired",
      code: 410,
    });
    expect(w.events[0]?.object.message).toMatch(
      new RegExp(`^too old resource version: ${first.metadata?.resourceVersion} \\(\\d+\\)$`),
    );
    expect(w.error()).toBeNull();
  });

  it("sends BOOKMARK events periodically and on request when allowed", async () => {
    const w = await watch(PATH, {
      resourceVersion: String(kube.store.resourceVersion),
      allowWatchBookmarks: true,
    });
    await kube.waitFor(() => w.events.some((e) => e.type === "BOOKMARK"));
    const bookmark = w.events.find((e) => e.type === "BOOKMARK")!;
    expect(bookmark.object).toEqual({
      kind: "ConfigMap",
      apiVersion: "v1",
      metadata: { resourceVersion: String(kube.store.resourceVersion) },
    });
    const before = w.events.length;
    expect(kube.watches.bookmarkNow()).toBeGreaterThanOrEqual(1);
    await kube.waitFor(() => w.events.length > before);
    w.stop();
  });

  it("sends no bookmarks to a watch that did not ask", async () => {
    const w = await watch(PATH, { resourceVersion: String(kube.store.resourceVersion) });
    kube.watches.bookmarkNow();
    await core.createNamespacedConfigMap({ namespace: "w", body: cm("marker") });
    await kube.waitFor(() => w.events.length > 0);
    expect(w.events.map((e) => e.type)).toEqual(["ADDED"]);
    w.stop();
  });

  it("ends the stream after timeoutSeconds", async () => {
    const started = Date.now();
    const w = await watch(PATH, {
      resourceVersion: String(kube.store.resourceVersion),
      timeoutSeconds: 1,
    });
    await kube.waitFor(() => w.ended(), { timeout: 30_000 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(w.error()).toBeNull();
  });

  it("turns label changes into ADDED and DELETED for a selecting watch", async () => {
    await core.createNamespacedConfigMap({ namespace: "w", body: cm("moving", { tier: "a" }) });
    const w = await watch(PATH, {
      resourceVersion: String(kube.store.resourceVersion),
      labelSelector: "tier=b",
    });
    await core.patchNamespacedConfigMap(
      { namespace: "w", name: "moving", body: { metadata: { labels: { tier: "b" } } } },
      mergePatch(),
    );
    await core.patchNamespacedConfigMap(
      { namespace: "w", name: "moving", body: { data: { x: "1" } } },
      mergePatch(),
    );
    await core.patchNamespacedConfigMap(
      { namespace: "w", name: "moving", body: { metadata: { labels: { tier: "c" } } } },
      mergePatch(),
    );
    await kube.waitFor(() => w.events.length >= 3);
    expect(w.events.map((e) => e.type)).toEqual(["ADDED", "MODIFIED", "DELETED"]);
    w.stop();
  });

  it("watches one object with a metadata.name field selector", async () => {
    const w = await watch(PATH, { fieldSelector: "metadata.name=marker" });
    await kube.waitFor(() => w.events.length > 0);
    expect(w.events.map((e) => e.object.metadata?.name)).toEqual(["marker"]);
    w.stop();
  });

  it("streams initial events then a bookmark with sendInitialEvents", async () => {
    const w = await watch(PATH, {
      sendInitialEvents: true,
      allowWatchBookmarks: true,
      resourceVersionMatch: "NotOlderThan",
      fieldSelector: "metadata.name=marker",
    });
    await kube.waitFor(() => w.events.some((e) => e.type === "BOOKMARK"));
    expect(w.events[0]?.type).toBe("ADDED");
    expect(w.events[1]?.object.metadata?.annotations).toEqual({
      "k8s.io/initial-events-end": "true",
    });
    w.stop();
  });
});

describe("makeInformer", () => {
  it("lists, then follows adds, updates and deletes", async () => {
    await core.createNamespace({ body: { metadata: { name: "inf" } } });
    await core.createNamespacedConfigMap({ namespace: "inf", body: cm("before") });
    const informer = makeInformer<V1ConfigMap>(
      kube.kubeConfig(),
      "/api/v1/namespaces/inf/configmaps",
      () => core.listNamespacedConfigMap({ namespace: "inf" }),
    );
    const seen: string[] = [];
    informer.on("add", (o) => seen.push(`add ${o.metadata?.name}`));
    informer.on("update", (o) => seen.push(`update ${o.metadata?.name}`));
    informer.on("delete", (o) => seen.push(`delete ${o.metadata?.name}`));
    await informer.start();
    expect(informer.list().map((o) => o.metadata?.name)).toEqual(["before"]);
    await core.createNamespacedConfigMap({ namespace: "inf", body: cm("after") });
    await core.patchNamespacedConfigMap(
      { namespace: "inf", name: "after", body: { data: { a: "1" } } },
      mergePatch(),
    );
    await core.deleteNamespacedConfigMap({ namespace: "inf", name: "before" });
    await kube.waitFor(() => seen.length >= 4);
    expect(seen).toEqual(["add before", "add after", "update after", "delete before"]);
    await informer.stop();
  });

  it("reconnects after a dropped watch and relists after 410 Gone", async () => {
    await core.createNamespace({ body: { metadata: { name: "inf2" } } });
    let lists = 0;
    const informer = makeInformer<V1ConfigMap>(
      kube.kubeConfig(),
      "/api/v1/namespaces/inf2/configmaps",
      () => {
        lists++;
        return core.listNamespacedConfigMap({ namespace: "inf2" });
      },
    );
    const connects: number[] = [];
    informer.on("connect", () => connects.push(Date.now()));
    await informer.start();
    expect(lists).toBe(1);

    // A dropped watch: the informer watches again from where it was.
    expect(kube.faults.dropWatches({ match: { namespace: "inf2" } })).toBe(1);
    await kube.waitFor(
      () => connects.length >= 2 && kube.watches.list().some((w) => w.namespace === "inf2"),
    );
    await core.createNamespacedConfigMap({ namespace: "inf2", body: cm("during") });
    await kube.waitFor(() => informer.get("during", "inf2"));
    expect(lists).toBe(1);

    // Held requests and a flood of events: the informer's resourceVersion falls out of the
    // history, the watch gets 410, the informer lists again.
    kube.faults.pause();
    kube.faults.dropWatches({ match: { namespace: "inf2" } });
    for (let i = 0; i < 30; i++)
      kube.store.create("configmaps", cm(`flood-${i}`), { namespace: "inf2" });
    kube.faults.unpause();
    await kube.waitFor(() => lists === 2, { timeout: 30_000 });
    await kube.waitFor(() => informer.list().length === 31);
    await informer.stop();
  });
});
