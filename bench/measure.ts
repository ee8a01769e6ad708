// Small measuring helpers for the benchmark: the operator's requests from test/kube's request
// log, its metrics, CPU and RSS of a process from /proc, and percentiles.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import type { RequestRecord } from "../test/kube/index.ts";
import { metricSample, type OperatorProcess } from "../test/support/operator-process.ts";
import { type BenchCluster, BUILDS } from "./cluster.ts";

export const WRITE_VERBS = new Set(["create", "update", "patch", "delete", "deletecollection"]);

/** Requests the operator made (its User-Agent is `buildfarm/<identity>`). */
export function operatorRequests(records: readonly RequestRecord[]): RequestRecord[] {
  return records.filter((record) => record.userAgent?.startsWith("buildfarm/"));
}

/** `<verb> <resource>[/<subresource>]` → count. */
export function byVerb(records: readonly RequestRecord[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const record of records) {
    const what = record.resource
      ? `${record.resource}${record.subresource ? `/${record.subresource}` : ""}`
      : (record.nonResourceURL ?? record.path);
    const key = `${record.verb} ${what}`;
    out[key] = (out[key] ?? 0) + 1;
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b)));
}

export const isWrite = (record: RequestRecord) => WRITE_VERBS.has(record.verb);
export const isLease = (record: RequestRecord) => record.resource === "leases";
export const isEvent = (record: RequestRecord) => record.resource === "events";

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))] as number;
}

/** One metric of the operator process, summed over matching series. */
export async function metric(
  operator: OperatorProcess,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  return metricSample(await operator.metrics(), name, labels) ?? 0;
}

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command (in parentheses, which may hold spaces): utime is the 14th, stime the 15th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** Resident set size of a process in bytes, from /proc/<pid>/status (VmRSS). */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN) * 1024;
}

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** Creates the builds through the API server with `inFlight` requests at a time. */
export async function createBuilds(
  cluster: BenchCluster,
  names: readonly string[],
  pool: (index: number) => string,
  inFlight: number,
  onCreated?: (name: string, at: number) => void,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(inFlight, names.length) }, async () => {
      for (;;) {
        const index = next++;
        const name = names[index];
        if (name === undefined) return;
        await cluster.client.create(BUILDS, cluster.buildObject(name, pool(index)));
        onCreated?.(name, performance.now());
      }
    }),
  );
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export const mib = (bytes: number) => bytes / 1024 / 1024;
