// Measurements for the build integration tests: API requests of one build from the request
// log, and metric values from the operator's registry.
import type { Registry } from "prom-client";
import type { RequestRecord } from "../kube/index.ts";

export interface BuildRequests {
  /** Successful creates by resource (jobs, secrets, configmaps). */
  creates: Record<string, number>;
  /** Successful status writes (PUT or PATCH of imagebuilds/status). */
  statusWrites: number;
  /** Successful other updates and patches of the build's objects. */
  updates: number;
  deletes: number;
  /** Writes the server refused (409 conflicts, AlreadyExists, …). */
  failed: number;
  /** creates + statusWrites + updates + deletes: what the benchmark counts, Events excluded. */
  total: number;
  /** Event creates and patches, counted apart. */
  events: number;
  /** GETs (not lists or watches) by resource[/subresource], ImageBuilds aside. */
  reads: Record<string, number>;
}

const WRITES = new Set(["create", "update", "patch", "delete"]);

/**
 * The requests a build caused, from the records of a window in which only this build was
 * active. A create has no name in its URL, so creates in the window are attributed to the
 * build by resource; other requests by name (the build's own, or `<build>-…`).
 */
export function writesOf(records: readonly RequestRecord[], build: string): BuildRequests {
  const out: BuildRequests = {
    creates: {},
    statusWrites: 0,
    updates: 0,
    deletes: 0,
    failed: 0,
    total: 0,
    events: 0,
    reads: {},
  };
  const ours = (record: RequestRecord) =>
    record.name === undefined ||
    record.name === build ||
    record.name.startsWith(`${build}-`) ||
    record.name.startsWith(`${build}.`);
  for (const record of records) {
    if (!record.resource) continue;
    if (record.verb === "get" && record.resource !== "imagebuilds") {
      // Reads name other objects (the push Secret); the window's are the build's. ImageBuild
      // GETs are the test's own polling.
      const key = record.subresource ? `${record.resource}/${record.subresource}` : record.resource;
      out.reads[key] = (out.reads[key] ?? 0) + 1;
      continue;
    }
    if (!ours(record)) continue;
    const ok = record.code < 300;
    if (record.resource === "events") {
      if (WRITES.has(record.verb) && ok) out.events++;
      continue;
    }
    if (record.verb === "get") continue;
    if (!WRITES.has(record.verb)) continue;
    if (record.resource === "builderpools" || record.resource === "imagebuilds") {
      if (record.subresource !== "status" && record.verb === "create") continue; // the user's
    }
    if (!ok) {
      out.failed++;
      continue;
    }
    if (record.verb === "create")
      out.creates[record.resource] = (out.creates[record.resource] ?? 0) + 1;
    else if (record.verb === "delete") out.deletes++;
    else if (record.resource === "imagebuilds" && record.subresource === "status")
      out.statusWrites++;
    else out.updates++;
  }
  out.total =
    Object.values(out.creates).reduce((a, b) => a + b, 0) +
    out.statusWrites +
    out.updates +
    out.deletes;
  return out;
}

/** The value of a counter, gauge or histogram series (e.g. `_count`), 0 when absent. */
export async function metricValue(
  registry: Registry,
  name: string,
  labels: Record<string, string>,
): Promise<number> {
  const base = name.replace(/_(count|sum|bucket)$/, "");
  const metric = registry.getSingleMetric(base);
  if (!metric) throw new Error(`no metric ${base}`);
  const { values } = await metric.get();
  const match = values.find(
    (value) =>
      ((value as { metricName?: string }).metricName ?? base) === name &&
      Object.entries(labels).every(([key, v]) => String(value.labels[key]) === v) &&
      Object.keys(value.labels).filter((key) => key !== "le").length === Object.keys(labels).length,
  );
  return match?.value ?? 0;
}
