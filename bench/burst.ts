// (a) A burst of two-platform ImageBuilds: wall time from the first create until every
// platform Job exists, beside the floor, the same writes issued by a plain client-node loop
// (bench/floor.ts) with as many workers as the operator has.
//
// The builds go to two pools of 1,000 slots per architecture (the schema's maximum), so that
// every build may start at once and "every Job exists" is reachable without waiting for slots.
// Their buildctl containers are held (as in a build that runs for minutes): the operator sees
// pods created and starting, not finishing. Both runs use a fresh test/kube with the same nodes,
// kubelet and player, in a process of its own (bench/kube-host.ts); the builds are created by
// this process, `inFlight` requests at a time. So the operator, the floor, the API server and
// the user each have an event loop and a CPU figure of their own.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { caSecretName } from "../src/naming.ts";
import type { KubeObject } from "../test/kube/index.ts";
import { REPO_ROOT } from "../test/support/files.ts";
import { NS, startBenchCluster } from "./cluster.ts";
import { cpuSeconds, createBuilds, isLease, isWrite, metric, operatorRequests } from "./measure.ts";

/**
 * Node flags for the operator's or the floor's process: with BENCH_PROFILE=<dir>, a CPU
 * profile of the whole run (--cpu-prof) and --trace-gc on its stderr go there.
 */
function profileArgs(who: "operator" | "floor"): string[] {
  const dir = process.env.BENCH_PROFILE;
  if (!dir) return [];
  return ["--cpu-prof", `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${who}-burst.cpuprofile`];
}

export interface BurstResult {
  builds: number;
  workers: number;
  inFlight: number;
  operatorMs: number;
  floorMs: number;
  ratio: number;
  /** CPU of the operator's process from the first create to the last Job (/proc/<pid>/stat). */
  operatorCpuSeconds: number;
  /** CPU of the floor's process from its watch being open until its last write. */
  floorCpuSeconds: number;
  /** CPU of the API server's process (test/kube, controllers, kubelet) in each window. */
  kubeCpuSeconds: number;
  floorKubeCpuSeconds: number;
  /** Floor CPU / operator CPU, measured in this run. */
  cpuRatio: number;
  reconciles: number;
  operatorWrites: number;
  floorWrites: number;
}

/** Pools of 1,000 slots per architecture, enough for every build at once (at least two). */
const poolsFor = (builds: number) =>
  Array.from(
    { length: Math.max(2, Math.ceil(builds / 1000)) },
    (_, i) => `farm-${String.fromCharCode(97 + i)}`,
  );

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
  result: Pick<
    BurstResult,
    "operatorMs" | "operatorCpuSeconds" | "kubeCpuSeconds" | "reconciles" | "operatorWrites"
  >;
  templates: Record<string, Json>;
  seeds: KubeObject[][];
}> {
  const cluster = await startBenchCluster();
  const POOLS = poolsFor(builds);
  const poolOf = (index: number) => POOLS[index % POOLS.length] as string;
  try {
    await cluster.kube.call("holdAll", true);
    const operator = await cluster.startOperator({
      identity: "bench-burst",
      args: ["--build-workers", String(workers)],
      nodeArgs: profileArgs("operator"),
    });
    for (const pool of POOLS) await cluster.createPool(pool, { maxConcurrentBuilds: 1000 });
    for (const pool of POOLS) await cluster.waitForPoolReady(pool);
    const names = Array.from({ length: builds }, (_, i) => `burst-${i}`);
    const reconciles = await metric(operator, "controller_runtime_reconcile_total");
    const mark = await cluster.kube.mark();
    await cluster.kube.call("trackJobs", "burst-");
    const done = cluster.kube.call<number>("jobsSeen", "burst-", 2 * builds);
    const cpu = cpuSeconds(operator.pid);
    const kubeCpu = cpuSeconds(cluster.kube.pid);
    const started = Date.now();
    await createBuilds(cluster, names, poolOf, inFlight);
    const ended = await done;
    const operatorCpuSeconds = cpuSeconds(operator.pid) - cpu;
    const kubeCpuSeconds = cpuSeconds(cluster.kube.pid) - kubeCpu;
    await cluster.kube.call("jobTimes", "burst-");
    const writes = operatorRequests(await cluster.kube.since(mark)).filter(
      (record) => isWrite(record) && !isLease(record) && record.resource !== "events",
    ).length;
    const result = {
      operatorMs: Math.round(ended - started),
      operatorCpuSeconds,
      kubeCpuSeconds,
      reconciles: (await metric(operator, "controller_runtime_reconcile_total")) - reconciles,
      operatorWrites: writes,
    };
    const keys: [string, string, string][] = names.flatMap((name) => [
      ["secrets", NS, `${name}-buildkit-client`],
      ["jobs.batch", NS, `${name}-amd64`],
      ["jobs.batch", NS, `${name}-arm64`],
      ["imagebuilds.buildfarm.dev", NS, name],
    ]);
    const objects = await cluster.kube.call<KubeObject[]>("getMany", keys);
    const templates: Record<string, Json> = {};
    names.forEach((name, i) => {
      const [secret, amd64, arm64, build] = objects.slice(4 * i, 4 * i + 4) as KubeObject[];
      templates[name] = {
        secret: asSent(secret as KubeObject),
        jobs: [amd64, arm64].map((job) => asSent(job as KubeObject)),
        status: (build as KubeObject).status,
      };
    });
    // The floor's cluster gets the pools and their CA Secrets, so the player checks the
    // replayed client certificates exactly as here.
    const seeds = [
      await cluster.kube.call<KubeObject[]>(
        "getMany",
        POOLS.map((pool) => ["builderpools.buildfarm.dev", NS, pool]),
      ),
      await cluster.kube.call<KubeObject[]>(
        "getMany",
        POOLS.map((pool) => ["secrets", NS, caSecretName(pool)]),
      ),
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
): Promise<
  Pick<BurstResult, "floorMs" | "floorCpuSeconds" | "floorKubeCpuSeconds" | "floorWrites">
> {
  const cluster = await startBenchCluster();
  const POOLS = poolsFor(builds);
  const poolOf = (index: number) => POOLS[index % POOLS.length] as string;
  try {
    await cluster.kube.call("holdAll", true);
    const [pools, secrets] = seeds as [KubeObject[], KubeObject[]];
    await cluster.kube.seed("builderpools.buildfarm.dev", pools);
    await cluster.kube.seed("secrets", secrets);
    const file = join(mkdtempSync(join(tmpdir(), "buildfarm-floor-")), "templates.json");
    writeFileSync(file, JSON.stringify(templates));
    const child = spawn(
      process.execPath,
      [
        ...profileArgs("floor"),
        join(REPO_ROOT, "bench/floor.ts"),
        cluster.kubeconfig,
        NS,
        file,
        String(workers),
      ],
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
    await cluster.kube.call("trackJobs", "burst-");
    const done = cluster.kube.call<number>("jobsSeen", "burst-", 2 * builds);
    const kubeCpu = cpuSeconds(cluster.kube.pid);
    const started = Date.now();
    await createBuilds(cluster, names, poolOf, inFlight);
    const ended = await done;
    const floorKubeCpuSeconds = cpuSeconds(cluster.kube.pid) - kubeCpu;
    const summary = (await line(2)) as { writes: number; cpu: { user: number; system: number } };
    return {
      floorMs: Math.round(ended - started),
      floorCpuSeconds: (summary.cpu.user + summary.cpu.system) / 1e6,
      floorKubeCpuSeconds,
      floorWrites: summary.writes,
    };
  } finally {
    await cluster.stop();
  }
}

/** The operator's side of the burst alone (the growth lines: CPU per build at each size). */
export async function operatorBurst(builds: number, workers: number, inFlight = 32) {
  return (await operatorRun(builds, workers, inFlight)).result;
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
    cpuRatio: Math.round((result.operatorCpuSeconds / floor.floorCpuSeconds) * 100) / 100,
  };
}
