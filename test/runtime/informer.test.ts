// The informer lists page by page (client-go's 500), transforming each object as its page
// arrives, and starts over when a continue token has expired.
import type { V1ConfigMap } from "@kubernetes/client-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { KubeClient, RESOURCES } from "../../src/runtime/client.ts";
import { Informer, LIST_PAGE_SIZE } from "../../src/runtime/informer.ts";
import { type Kube, startKube } from "../kube/index.ts";
import { testLogger } from "../support/operator.ts";

let kube: Kube;
let stop: AbortController;

beforeEach(async () => {
  kube = await startKube({ nodes: [], historySize: 50 });
  stop = new AbortController();
  for (let i = 0; i < 1_200; i++)
    kube.store.create("configmaps", {
      metadata: { name: `cm-${String(i).padStart(4, "0")}`, namespace: "default" },
      data: { big: "x".repeat(1000), small: String(i) },
    });
});

afterEach(async () => {
  stop.abort();
  await kube.stop();
});

function informer(seen: V1ConfigMap[], onEach: () => void = () => undefined) {
  return new Informer<V1ConfigMap>(new KubeClient(kube.kubeConfig()), {
    type: RESOURCES.configMap,
    namespaces: ["default"],
    log: testLogger(),
    transform: (object) => {
      seen.push(object);
      onEach();
      return { ...object, data: { small: object.data?.small ?? "" } };
    },
  });
}

describe("an informer's list", () => {
  it("comes in pages of 500, each object transformed once", async () => {
    const seen: V1ConfigMap[] = [];
    const cache = informer(seen);
    const mark = kube.requestLog.mark();
    await cache.start(stop.signal);
    await cache.waitForSync(AbortSignal.timeout(10_000));
    const lists = kube.requestLog.since(mark, { verb: "list", resource: "configmaps" });
    expect(lists.map((record) => new URLSearchParams(record.query).get("limit"))).toEqual([
      String(LIST_PAGE_SIZE),
      String(LIST_PAGE_SIZE),
      String(LIST_PAGE_SIZE),
    ]);
    expect(cache.size).toBe(1_200);
    expect(seen.length).toBe(1_200);
    expect(cache.get("default", "cm-0042")?.data).toEqual({ small: "42" });
  });

  it("starts over when a continue token has expired (410)", async () => {
    const seen: V1ConfigMap[] = [];
    const cache = informer(seen, () => {
      // After the first page: more changes than the server's history keeps, so the snapshot
      // the continue token names is gone.
      if (seen.length === LIST_PAGE_SIZE)
        for (let i = 0; i < 60; i++)
          kube.store.create("configmaps", {
            metadata: { name: `churn-${i}`, namespace: "kube-public" },
          });
    });
    const mark = kube.requestLog.mark();
    await cache.start(stop.signal);
    await cache.waitForSync(AbortSignal.timeout(10_000));
    const lists = kube.requestLog.since(mark, { verb: "list", resource: "configmaps" });
    expect(
      lists.map((record) => [record.code, new URLSearchParams(record.query).has("continue")]),
    ).toEqual([
      [200, false],
      [410, true],
      [200, false],
      [200, true],
      [200, true],
    ]);
    expect(cache.size).toBe(1_200);
  });
});

describe("an informer's watch", () => {
  it("relists when handling an event throws, instead of losing the event", async () => {
    const seen: V1ConfigMap[] = [];
    let failOnce = true;
    const cache = informer(seen, () => {
      const last = seen.at(-1);
      if (failOnce && last?.metadata?.name === "late") {
        failOnce = false;
        throw new Error("a handler bug");
      }
    });
    await cache.start(stop.signal);
    await cache.waitForSync(AbortSignal.timeout(10_000));
    const mark = kube.requestLog.mark();
    kube.store.create("configmaps", {
      metadata: { name: "late", namespace: "default" },
      data: { small: "late" },
    });
    // The failed event is not lost: the relist brings the object in.
    await kube.waitFor(() => cache.get("default", "late")?.data?.small === "late", {
      message: "the object whose event failed is in the cache",
    });
    expect(failOnce).toBe(false);
    expect(
      kube.requestLog.since(mark, { verb: "list", resource: "configmaps" }).length,
    ).toBeGreaterThan(0);
  });
});
