// (a) A burst of two-platform ImageBuilds: wall time from the first create until every
// platform Job exists, beside the floor, the same writes issued by a plain client-node loop
// (bench/floor.ts) with as many workers as the operator has.
//
// The builds go to two pools of 1,000 slots per architecture (the schema's maximum), so that
// every build may start at once and "every Job exists" is reachable without waiting for slots.
// Their buildctl containers are held (as in a build that runs for minutes): the operator sees
// pods created and starting, not finishing. Both runs use a fresh test/kube with the same nodes,
// kubelet and player; the builds are created by this process, `inFlight` requests at a time.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { caSecretName } from "../src/naming.ts";
import type { KubeObject } from "../test/kube/index.ts";
import { REPO_ROOT } from "../test/support/files.ts";
import { type BenchCluster, NS, startBenchCluster } from "./cluster.ts";
import { createBuilds, isLease, isWrite, metric, operatorRequests } from "./measure.ts";

export interface BurstResult {
  builds: number;
  workers: number;
  inFlight: number;
  operatorMs: number;
  floorMs: number;
  ratio: number;
  operatorCpuSeconds: number;
  floorCpuSeconds: number;
  reconciles: number;
  operatorWrites: number;
  floorWrites: number;
}

const POOLS = ["farm-a", "farm-b"];
const poolOf = (index: number) => POOLS[index % POOLS.length] as string;

/** Resolves with the time the `count`-th platform Job of the named builds appeared. */
function whenJobs(cluster: BenchCluster, prefix: string, count: number): Promise<number> {
  let seen = 0;
  return new Promise((resolve) => {
    const stop = cluster.kube.store.onChange((event, info) => {
      if (info.resource !== "jobs" || event.type !== "ADDED") return;
      const name = event.object.metadata.name as string;
      if (!name.startsWith(prefix) || !/-(amd64|arm64)$/.test(name)) return;
      if (++seen === count) {
        stop();
        resolve(performance.now());
      }
    });
  });
}

type Json = Record<string, unknown>;

/** An object as a client would send it: no server-set fields, the owner's uid a placeholder. */
function asSent(object: KubeObject): Json {
  const copy = structuredClone(object) as Json & { metadata: Json; spec?: Json; status?: unknown };
  for (const field of [
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
  ])
    delete copy.metadata[field];
  for (const reference of (copy.metadata.ownerReferences ?? []) as Json[])
    reference.uid = "$OWNER_UID";
  delete copy.status;
  const spec = copy.spec as { selector?: unknown; template?: { metadata?: { labels?: Json } } };
  if (spec?.template) {
    delete spec.selector;
    const labels = spec.template.metadata?.labels ?? {};
    for (const label of [
      "batch.kubernetes.io/controller-uid",
      "batch.kubernetes.io/job-name",
      "controller-uid",
      "job-name",
    ])
      delete labels[label];
  }
  return copy;
}

async function operatorRun(
  builds: number,
  workers: number,
  inFlight: number,
): Promise<{
  result: Pick<BurstResult, "operatorMs" | "operatorCpuSeconds" | "reconciles" | "operatorWrites">;
  templates: Record<string, Json>;
  seeds: KubeObject[][];
}> {
  const cluster = await startBenchCluster();
  try {
    cluster.player.holdAll = true;
    const operator = await cluster.startOperator({
      identity: "bench-burst",
      args: ["--build-workers", String(workers)],
    });
    for (const pool of POOLS) await cluster.createPool(pool, { maxConcurrentBuilds: 1000 });
    for (const pool of POOLS) await cluster.waitForPoolReady(pool);
    const names = Array.from({ length: builds }, (_, i) => `burst-${i}`);
    const cpu = await metric(operator, "process_cpu_seconds_total");
    const reconciles = await metric(operator, "controller_runtime_reconcile_total");
    const mark = cluster.kube.requestLog.mark();
    const done = whenJobs(cluster, "burst-", 2 * builds);
    const started = performance.now();
    await createBuilds(cluster, names, poolOf, inFlight);
    const ended = await done;
    const writes = operatorRequests(cluster.kube.requestLog.since(mark)).filter(
      (record) => isWrite(record) && !isLease(record) && record.resource !== "events",
    ).length;
    const result = {
      operatorMs: Math.round(ended - started),
      operatorCpuSeconds: (await metric(operator, "process_cpu_seconds_total")) - cpu,
      reconciles: (await metric(operator, "controller_runtime_reconcile_total")) - reconciles,
      operatorWrites: writes,
    };
    const store = cluster.kube.store;
    const templates: Record<string, Json> = {};
    for (const name of names) {
      const secret = store.get("secrets", NS, `${name}-buildkit-client`) as KubeObject;
      const jobs = ["amd64", "arm64"].map(
        (slug) => store.get("jobs.batch", NS, `${name}-${slug}`) as KubeObject,
      );
      const build = store.get("imagebuilds.buildfarm.dev", NS, name) as KubeObject;
      templates[name] = { secret: asSent(secret), jobs: jobs.map(asSent), status: build.status };
    }
    // The floor's cluster gets the pools and their CA Secrets, so the player checks the
    // replayed client certificates exactly as here.
    const seeds = [
      POOLS.map((pool) => store.get("builderpools.buildfarm.dev", NS, pool) as KubeObject),
      POOLS.map((pool) => store.get("secrets", NS, caSecretName(pool)) as KubeObject),
    ];
    return { result, templates, seeds };
  } finally {
    await cluster.stop();
  }
}

async function floorRun(
  builds: number,
  workers: number,
  inFlight: number,
  templates: Record<string, Json>,
  seeds: KubeObject[][],
): Promise<Pick<BurstResult, "floorMs" | "floorCpuSeconds" | "floorWrites">> {
  const cluster = await startBenchCluster();
  try {
    cluster.player.holdAll = true;
    const [pools, secrets] = seeds as [KubeObject[], KubeObject[]];
    for (const pool of pools) cluster.kube.store.seed("builderpools.buildfarm.dev", pool);
    for (const secret of secrets) cluster.kube.store.seed("secrets", secret);
    const file = join(mkdtempSync(join(tmpdir(), "buildfarm-floor-")), "templates.json");
    writeFileSync(file, JSON.stringify(templates));
    const child = spawn(
      process.execPath,
      [join(REPO_ROOT, "bench/floor.ts"), cluster.kubeconfig, NS, file, String(workers)],
      { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "inherit"], env: process.env },
    );
    const lines: Json[] = [];
    const waiters: (() => void)[] = [];
    child.stdout.setEncoding("utf8");
    let pending = "";
    child.stdout.on("data", (chunk: string) => {
      pending += chunk;
      for (let at = pending.indexOf("\n"); at !== -1; at = pending.indexOf("\n")) {
        lines.push(JSON.parse(pending.slice(0, at)) as Json);
        pending = pending.slice(at + 1);
        for (const wake of waiters.splice(0)) wake();
      }
    });
    const line = async (count: number) => {
      while (lines.length < count) await new Promise<void>((resolve) => waiters.push(resolve));
      return lines[count - 1] as Json;
    };
    await line(1); // watching
    const names = Array.from({ length: builds }, (_, i) => `burst-${i}`);
    const done = whenJobs(cluster, "burst-", 2 * builds);
    const started = performance.now();
    await createBuilds(cluster, names, poolOf, inFlight);
    const ended = await done;
    const summary = (await line(2)) as { writes: number; cpu: { user: number; system: number } };
    return {
      floorMs: Math.round(ended - started),
      floorCpuSeconds: (summary.cpu.user + summary.cpu.system) / 1e6,
      floorWrites: summary.writes,
    };
  } finally {
    await cluster.stop();
  }
}

export async function burst(builds: number, workers: number, inFlight = 32): Promise<BurstResult> {
  const { result, templates, seeds } = await operatorRun(builds, workers, inFlight);
  const floor = await floorRun(builds, workers, inFlight, templates, seeds);
  return {
    builds,
    workers,
    inFlight,
    ...result,
    ...floor,
    ratio: Math.round((result.operatorMs / floor.floorMs) * 100) / 100,
  };
}
