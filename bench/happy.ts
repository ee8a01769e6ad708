// (b) API requests per build on the happy path, and writes at rest; then (d) the latency from
// create to Jobs present with 100 creates in flight, on the same cluster.
//
// Happy path: two-platform builds created one after another, each waited for until Succeeded;
// the player finishes every container at once, so pods finish well within the 5 s after which
// progress (`Running`) would be written. Every request whose User-Agent is the operator's
// (`buildfarm/<identity>`) from the first create until the last build settled is counted,
// Lease renewals apart, and divided by the builds. At rest: nothing changes for `restMs` while
// the operator runs with `--sync-period` short enough that every build is reconciled again
// several times (resyncs included); its writes are counted.
import type { RequestRecord } from "../test/kube/index.ts";
import type { BenchCluster } from "./cluster.ts";
import {
  byVerb,
  cpuSeconds,
  createBuilds,
  isEvent,
  isLease,
  isWrite,
  metric,
  operatorRequests,
  percentile,
  sleep,
} from "./measure.ts";

export interface HappyResult {
  builds: number;
  /** Per build, by `verb resource`, Events and Leases apart. */
  perBuild: Record<string, number>;
  writesPerBuild: number;
  eventsPerBuild: number;
  readsPerBuild: number;
  /** Conflicts and other refused writes, per build. */
  refusedPerBuild: number;
  msPerBuild: number;
}

export interface RestResult {
  seconds: number;
  syncPeriodSeconds: number;
  reconciles: number;
  writes: number;
  /** What the writes were, if any. */
  writeKinds: Record<string, number>;
  reads: number;
  leaseWrites: number;
}

export interface LatencyResult {
  samples: number;
  inFlight: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** CPU seconds per wall second over the rounds: a process near 1 holds a core and sets the pace. */
  operatorCores: number;
  kubeCores: number;
}

const round = (value: number, digits = 2) => Math.round(value * 10 ** digits) / 10 ** digits;

export async function happyPath(cluster: BenchCluster, builds: number): Promise<HappyResult> {
  const kube = cluster.kube;
  // One build first, uncounted: the first certificate issued warms the crypto code paths.
  await createBuilds(cluster, ["warmup"], () => "farm", 1);
  await kube.waitPhases(["warmup"]);
  await sleep(1000);
  const mark = await kube.mark();
  const started = performance.now();
  for (let i = 0; i < builds; i++) {
    const name = `happy-${i}`;
    await createBuilds(cluster, [name], () => "farm", 1);
    await kube.waitPhases([name]);
  }
  const elapsed = performance.now() - started;
  // Events are written in the background; let the last ones land.
  await sleep(1500);
  const records = operatorRequests(await kube.since(mark)).filter((record) => !isLease(record));
  const counted = records.filter((record) => !isEvent(record));
  const ok = (record: RequestRecord) => record.code < 300;
  const perBuild = Object.fromEntries(
    Object.entries(byVerb(counted)).map(([key, count]) => [key, round(count / builds)]),
  );
  return {
    builds,
    perBuild,
    writesPerBuild: round(counted.filter((r) => isWrite(r) && ok(r)).length / builds),
    eventsPerBuild: round(records.filter((r) => isEvent(r) && isWrite(r)).length / builds),
    readsPerBuild: round(counted.filter((r) => !isWrite(r)).length / builds),
    refusedPerBuild: round(counted.filter((r) => isWrite(r) && !ok(r)).length / builds),
    msPerBuild: Math.round(elapsed / builds),
  };
}

export async function atRest(
  cluster: BenchCluster,
  restMs: number,
  syncPeriodSeconds: number,
): Promise<RestResult> {
  const operator = cluster.operator;
  if (!operator) throw new Error("no operator");
  const before = await metric(operator, "controller_runtime_reconcile_total");
  const mark = await cluster.kube.mark();
  await sleep(restMs);
  const after = await metric(operator, "controller_runtime_reconcile_total");
  const records = operatorRequests(await cluster.kube.since(mark));
  const writes = records.filter((r) => isWrite(r) && !isLease(r));
  return {
    seconds: restMs / 1000,
    syncPeriodSeconds,
    reconciles: after - before,
    writes: writes.length,
    writeKinds: byVerb(writes),
    reads: records.filter((r) => !isWrite(r) && r.verb !== "watch" && !isLease(r)).length,
    leaseWrites: records.filter((r) => isWrite(r) && isLease(r)).length,
  };
}

/**
 * Rounds of `inFlight` builds created at once (that many create requests in flight); each
 * build's latency runs from its create's response to the moment its second platform Job is
 * in the store (both clocks are the epoch's: the API server runs in a process of its own).
 * Each round waits for the previous one to finish.
 */
export async function latency(
  cluster: BenchCluster,
  rounds: number,
  inFlight: number,
): Promise<LatencyResult> {
  const created = new Map<string, number>();
  await cluster.kube.call("trackJobs", "lat-");
  const operatorPid = cluster.operator?.pid as number;
  const cpu = { operator: cpuSeconds(operatorPid), kube: cpuSeconds(cluster.kube.pid) };
  const started = Date.now();
  let present: Record<string, number> = {};
  try {
    for (let r = 0; r < rounds; r++) {
      const names = Array.from({ length: inFlight }, (_, i) => `lat-${r}-${i}`);
      await createBuilds(
        cluster,
        names,
        () => "farm",
        inFlight,
        (name) => created.set(name, Date.now()),
      );
      await cluster.kube.waitPhases(names);
    }
  } finally {
    present = await cluster.kube.call<Record<string, number>>("jobTimes", "lat-");
  }
  const wallSeconds = (Date.now() - started) / 1000;
  const cores = (seconds: number) => Math.round((seconds / wallSeconds) * 100) / 100;
  const samples = [...created].map(([name, at]) => (present[name] ?? Number.NaN) - at);
  if (samples.some(Number.isNaN)) throw new Error("a build's Jobs were never seen");
  return {
    samples: samples.length,
    inFlight,
    p50Ms: Math.round(percentile(samples, 50)),
    p99Ms: Math.round(percentile(samples, 99)),
    maxMs: Math.round(Math.max(...samples)),
    operatorCores: cores(cpuSeconds(operatorPid) - cpu.operator),
    kubeCores: cores(cpuSeconds(cluster.kube.pid) - cpu.kube),
  };
}
