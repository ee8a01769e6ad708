// Server-side printing through the json-proxy: the real kubectl 1.33 against test/kube shows the
// CRDs' printer columns for `get` and for each event of `get -w`, as against kube-apiserver.
import { execFile, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Kube, type KubeObject, startKube } from "../kube/index.ts";
import { type JsonProxy, startJsonProxy } from "./json-proxy.ts";
import { bodyToTable, humanDuration, jsonPathValue, type PrinterColumn } from "./tables.ts";
import { layerBinary } from "./tools.ts";

const run = promisify(execFile);

describe("printer columns", () => {
  const pool = {
    metadata: { name: "p", creationTimestamp: "2026-01-01T00:00:00Z", resourceVersion: "7" },
    status: {
      summary: "amd64 1/1",
      conditions: [
        { type: "Progressing", status: "False", reason: "Done" },
        { type: "Ready", status: "True", reason: "Ready" },
      ],
    },
  };

  it.each([
    [".status.summary", "amd64 1/1"],
    ['.status.conditions[?(@.type=="Ready")].status', "True"],
    ['.status.conditions[?(@.type=="Ready")].reason', "Ready"],
    ['.status.conditions[?(@.type=="Missing")].status', undefined],
    [".status.conditions[0].type", "Progressing"],
    [".status.nothing.here", undefined],
    ["status.summary", undefined], // not a JSONPath this evaluator knows: no value, not a guess
  ])("%s selects %s", (path, value) => {
    expect(jsonPathValue(pool, path)).toBe(value);
  });

  it.each([
    [5, "5s"],
    [119, "119s"],
    [200, "3m20s"],
    [600, "10m"],
    [3 * 3600 + 60, "3h1m"],
    [30 * 3600, "30h"],
    [3 * 86400 + 3600, "3d1h"],
    [400 * 86400, "400d"],
  ])("%i s is %s, as kubectl shows ages", (seconds, text) => {
    expect(humanDuration(seconds)).toBe(text);
  });

  it("a list becomes a Table: Name, then the columns; <none> as null; the list's resourceVersion", () => {
    const columns: PrinterColumn[] = [
      { name: "Ready", type: "string", jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
      { name: "Queue", type: "integer", jsonPath: ".status.queuePosition", priority: 1 },
    ];
    const table = bodyToTable({ items: [pool], metadata: { resourceVersion: "9" } }, columns) as {
      metadata: unknown;
      columnDefinitions: { name: string; priority: number }[];
      rows: { cells: unknown[]; object: { kind: string; metadata: unknown } }[];
    };
    expect(table.metadata).toEqual({ resourceVersion: "9" });
    expect(table.columnDefinitions.map((c) => [c.name, c.priority])).toEqual([
      ["Name", 0],
      ["Ready", 0],
      ["Queue", 1],
    ]);
    expect(table.rows[0]?.cells).toEqual(["p", "True", null]);
    expect(table.rows[0]?.object).toEqual({
      kind: "PartialObjectMetadata",
      apiVersion: "meta.k8s.io/v1",
      metadata: pool.metadata,
    });
  });
});

describe("kubectl get through the json-proxy", () => {
  let kube: Kube;
  let proxy: JsonProxy;
  let env: NodeJS.ProcessEnv;
  let cacheDir: string | undefined;
  const kubectl = (...args: string[]) => run(layerBinary("kubectl"), args, { env });

  beforeAll(async () => {
    kube = await startKube({ nodes: [], namespaces: ["apps"] });
    proxy = await startJsonProxy(kube.url);
    const kubeconfig = join(tmpdir(), `tables-${process.pid}.kubeconfig`);
    await writeFile(
      kubeconfig,
      JSON.stringify({
        apiVersion: "v1",
        kind: "Config",
        clusters: [{ name: "k", cluster: { server: proxy.url, "insecure-skip-tls-verify": true } }],
        users: [{ name: "k", user: {} }],
        contexts: [{ name: "k", context: { cluster: "k", user: "k", namespace: "apps" } }],
        "current-context": "k",
      }),
    );
    // A cache of its own: kubectl keeps discovery per host:port, and loopback ports are reused.
    cacheDir = await mkdtemp(join(tmpdir(), "kubectl-cache-"));
    env = { ...process.env, KUBECONFIG: kubeconfig, KUBECACHEDIR: cacheDir };
    kube.store.create("imagebuilds.buildfarm.dev", {
      apiVersion: "buildfarm.dev/v1alpha1",
      kind: "ImageBuild",
      metadata: { name: "app-1", namespace: "apps" },
      spec: {
        poolRef: { name: "farm" },
        source: { git: { url: "https://git.example/app.git", revision: "main" } },
        platforms: ["linux/amd64"],
        output: { image: "registry.example/app" },
      },
    } as KubeObject);
  });

  afterAll(async () => {
    await proxy?.stop();
    await kube?.stop();
    if (cacheDir) await rm(cacheDir, { recursive: true, force: true });
  });

  it("shows the CRD's columns, and the wide ones with -o wide", async () => {
    const { stdout } = await kubectl("get", "ib");
    expect(stdout).toMatch(/^NAME +PHASE +IMAGE +DIGEST +AGE\napp-1 +registry\.example\/app +/);
    const wide = await kubectl("get", "ib", "-o", "wide");
    expect(wide.stdout).toMatch(/^NAME +PHASE +IMAGE +DIGEST +POOL +QUEUE +CACHED +AGE\n/);
    expect(wide.stdout).toMatch(/registry\.example\/app +farm +/);
    // Other output formats still get the object itself.
    expect(
      (await kubectl("get", "ib", "app-1", "-o", "jsonpath={.spec.poolRef.name}")).stdout,
    ).toBe("farm");
  });

  it("prints each change of a watch as a row with the new values", async () => {
    // -v=6 logs each request on stderr: what a failure below shows beside the output.
    const watch = spawn(layerBinary("kubectl"), ["get", "ib", "-w", "-v=6"], { env });
    let text = "";
    let log = "";
    let exited: number | null | undefined;
    watch.stdout.on("data", (chunk: Buffer) => {
      text += chunk.toString("utf8");
    });
    watch.stderr.on("data", (chunk: Buffer) => {
      log += chunk.toString("utf8");
    });
    watch.once("exit", (code) => {
      exited = code;
    });
    const seen = async (pattern: RegExp) => {
      try {
        await kube.waitFor(() => pattern.test(text) || exited !== undefined, { timeout: 60_000 });
      } catch {
        // the deadline: reported below with what kubectl printed
      }
      if (!pattern.test(text))
        throw new Error(
          `kubectl get ib -w (exit ${exited}) printed no line matching ${pattern}:\n${text}\n--- its log ---\n${log}`,
        );
    };
    try {
      await seen(/^app-1 .*\n/m);
      kube.store.mutate(
        "imagebuilds.buildfarm.dev",
        "apps",
        "app-1",
        (draft) => {
          (draft as { status?: unknown }).status = { phase: "Building" };
        },
        { subresource: "status" },
      );
      await seen(/^app-1 +Building +registry\.example\/app/m);
    } finally {
      watch.kill("SIGTERM");
    }
  }, 90_000);
});
