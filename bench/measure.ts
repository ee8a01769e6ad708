// Small measuring helpers for the benchmark: the operator's requests from test/kube's request
// log, its metrics, percentiles, and waiting on store events without polling.
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

/** Resolves when every build named has reached one of `phases` (from the store's events). */
export function whenPhases(
  cluster: BenchCluster,
  names: readonly string[],
  phases: readonly string[] = ["Succeeded"],
  timeout = 600_000,
): Promise<void> {
  const left = new Set(names);
  const check = (object: { metadata?: { name?: string }; status?: { phase?: string } }) => {
    if (phases.includes(object.status?.phase ?? "")) left.delete(object.metadata?.name ?? "");
  };
  for (const name of names) {
    const current = cluster.kube.store.get("imagebuilds.buildfarm.dev", "builds", name);
    if (current) check(current as never);
  }
  return new Promise((resolve, reject) => {
    if (left.size === 0) {
      resolve();
      return;
    }
    const timer = setTimeout(
      () =>
        reject(
          new Error(
            `${left.size} builds did not reach ${phases.join("|")} in ${timeout} ms: ${[...left].slice(0, 5).join(", ")}`,
          ),
        ),
      timeout,
    );
    const stop = cluster.kube.store.onChange((event, info) => {
      if (info.resource !== "imagebuilds" || event.type === "DELETED") return;
      check(event.object as never);
      if (left.size === 0) {
        clearTimeout(timer);
        stop();
        resolve();
      }
    });
  });
}

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
