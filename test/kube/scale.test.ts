// test/kube stays fast with the object counts the benchmark uses: 10,000 Jobs and 5,000
// ImageBuilds in store. Budgets are generous (a loaded 2-core machine); the point is to catch
// an O(n) scan per request, not to benchmark. TEST_KUBE_SCALE=full also creates every Job
// through HTTP and prints the timings.
import { BatchV1Api, CustomObjectsApi, type V1Job } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jsonPatch } from "./client.ts";
import { type Kube, startKube } from "./index.ts";

const JOBS = 10_000;
const BUILDS = 5_000;
const FULL = process.env.TEST_KUBE_SCALE === "full";

let kube: Kube;
let batch: BatchV1Api;
let custom: CustomObjectsApi;
const timings: Record<string, number> = {};

async function timed<T>(label: string, work: () => Promise<T> | T): Promise<T> {
  const started = performance.now();
  const result = await work();
  timings[label] = Math.round(performance.now() - started);
  return result;
}

const job = (i: number): V1Job => ({
  metadata: { name: `job-${i}`, labels: { build: `b-${i % 100}` } },
  spec: {
    template: {
      spec: {
        restartPolicy: "Never",
        containers: [
          {
            name: "build",
            image: "moby/buildkit:v0.16.0",
            args: ["build", "--frontend", "dockerfile.v0"],
          },
        ],
      },
    },
  },
});

const imageBuild = (i: number) => ({
  apiVersion: "buildfarm.dev/v1alpha1",
  kind: "ImageBuild",
  metadata: { name: `build-${i}`, namespace: "default" },
  spec: {
    poolRef: { name: "default" },
    source: { git: { url: "https://github.com/docker/welcome-to-docker.git" } },
    platforms: ["linux/amd64", "linux/arm64"],
    output: { image: "registry.example.com/demo/app" },
  },
});

beforeAll(async () => {
  // The API server alone: no controllers turn Jobs into pods here.
  kube = await startKube({
    nodes: [],
    controllers: { jobs: false, scheduler: false, kubelet: false },
  });
  batch = kube.kubeConfig().makeApiClient(BatchV1Api);
  custom = kube.kubeConfig().makeApiClient(CustomObjectsApi);
  const http = FULL ? JOBS : 1_000;
  await timed(`create ${http} Jobs over HTTP, 8 in flight`, async () => {
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < http)
          await batch.createNamespacedJob({ namespace: "default", body: job(next++) });
      }),
    );
  });
  await timed(`create ${JOBS - http} Jobs in store`, () => {
    for (let i = http; i < JOBS; i++)
      kube.store.create("jobs.batch", job(i), { namespace: "default" });
  });
  await timed(`create ${BUILDS} ImageBuilds in store`, () => {
    for (let i = 0; i < BUILDS; i++) kube.store.create("imagebuilds.buildfarm.dev", imageBuild(i));
  });
}, 120_000);

afterAll(async () => {
  if (FULL) console.table(timings);
  await kube.stop();
});

describe("at scale", () => {
  it("lists 10,000 Jobs through client-node", async () => {
    const list = await timed("list 10000 Jobs (client-node)", () =>
      batch.listJobForAllNamespaces(),
    );
    expect(list.items).toHaveLength(JOBS);
    expect(timings["list 10000 Jobs (client-node)"]).toBeLessThan(5_000);
  });

  it("selects by label without slowing down", async () => {
    const list = await timed("list by label", () =>
      batch.listNamespacedJob({ namespace: "default", labelSelector: "build=b-7" }),
    );
    expect(list.items).toHaveLength(JOBS / 100);
    expect(timings["list by label"]).toBeLessThan(1_000);
  });

  it("gets by name in constant time: a get never walks the table", async () => {
    // Counted, not timed: every way to visit the Jobs table's objects, during 1,000 gets.
    const table = kube.store.table("jobs.batch");
    let walked = 0;
    const restore: (() => void)[] = [];
    const count = <T extends object>(target: T, method: keyof T & string) => {
      const original = target[method] as (...args: unknown[]) => unknown;
      (target as Record<string, unknown>)[method] = (...args: unknown[]) => {
        walked++;
        return original.apply(target, args);
      };
      restore.push(() => delete (target as Record<string, unknown>)[method]);
    };
    for (const map of [table.objects, ...table.byNamespace.values()])
      for (const method of ["keys", "values", "entries", "forEach"] as const) count(map, method);
    count(table, "sortedKeys");
    try {
      await timed("1000 Job gets", async () => {
        for (let i = 0; i < 1_000; i++)
          await batch.readNamespacedJob({ namespace: "default", name: `job-${i * 9}` });
      });
      expect(walked).toBe(0);
      // The counter sees a walk: a list reads the sorted keys.
      await batch.listNamespacedJob({ namespace: "default", limit: 1 });
      expect(walked).toBeGreaterThan(0);
    } finally {
      for (const undo of restore) undo();
    }
  });

  it("pages through 10,000 Jobs", async () => {
    let token: string | undefined;
    let seen = 0;
    await timed("page 10000 Jobs by 500", async () => {
      do {
        const page = await batch.listJobForAllNamespaces({ limit: 500, _continue: token });
        seen += page.items.length;
        token = page.metadata?._continue;
      } while (token);
    });
    expect(seen).toBe(JOBS);
    expect(timings["page 10000 Jobs by 500"]).toBeLessThan(10_000);
  });

  it("lists 5,000 ImageBuilds and patches their status", async () => {
    const list = (await timed("list 5000 ImageBuilds", () =>
      custom.listClusterCustomObject({
        group: "buildfarm.dev",
        version: "v1alpha1",
        plural: "imagebuilds",
      }),
    )) as { items: unknown[] };
    expect(list.items).toHaveLength(BUILDS);
    await timed("200 ImageBuild status patches", async () => {
      for (let i = 0; i < 200; i++)
        await custom.patchNamespacedCustomObjectStatus(
          {
            group: "buildfarm.dev",
            version: "v1alpha1",
            namespace: "default",
            plural: "imagebuilds",
            name: `build-${i}`,
            body: [{ op: "add", path: "/status", value: { phase: "Queued" } }],
          },
          jsonPatch(),
        );
    });
    expect(timings["200 ImageBuild status patches"]).toBeLessThan(5_000);
  });

  it("resumes a watch from an old resourceVersion within the history", async () => {
    const rv = kube.store.resourceVersion;
    for (let i = 0; i < 100; i++)
      kube.store.mutate("jobs.batch", "default", `job-${i}`, (j) => {
        j.metadata.labels = { ...j.metadata.labels, touched: "yes" };
      });
    const response = await fetch(
      `${kube.url}/apis/batch/v1/jobs?watch=true&resourceVersion=${rv}&timeoutSeconds=1`,
    );
    const lines = (await response.text()).trim().split("\n");
    expect(lines).toHaveLength(100);
  });
});
