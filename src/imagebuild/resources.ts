// Requests and limits of a build's containers. Every container gets both, for CPU and memory:
// a namespace with a ResourceQuota on requests.* or limits.* refuses a pod that leaves one out.
// The defaults below are overridden per key by the pool's spec.jobResources, then by the build's
// own (spec.jobResources, spec.verify.resources). Pure functions; quantities compare exactly.
import type { V1ResourceRequirements } from "@kubernetes/client-node";
import type { PoolJobResources } from "../api/builderpool.ts";
import type { Resources } from "../api/meta.ts";
import { compareQuantities } from "../builderpool/quantity.ts";

export type JobContainer = "build" | "report" | "cacheReport" | "assemble" | "verify";

type Requirements = { requests: Record<string, string>; limits: Record<string, string> };

/**
 * What each container needs by default: buildctl streams the build's progress (the builder does
 * the work), `cp` copies a small file, assemble moves manifests (never layers), a check is the
 * user's program and gets a whole CPU.
 */
export const DEFAULT_JOB_RESOURCES: Readonly<Record<JobContainer, Requirements>> = {
  build: { requests: { cpu: "50m", memory: "64Mi" }, limits: { cpu: "500m", memory: "512Mi" } },
  report: { requests: { cpu: "10m", memory: "16Mi" }, limits: { cpu: "100m", memory: "32Mi" } },
  // Node reading the trace as a stream: its heap, not the trace's size.
  cacheReport: {
    requests: { cpu: "10m", memory: "48Mi" },
    limits: { cpu: "200m", memory: "256Mi" },
  },
  assemble: {
    requests: { cpu: "50m", memory: "128Mi" },
    limits: { cpu: "500m", memory: "512Mi" },
  },
  verify: { requests: { cpu: "100m", memory: "128Mi" }, limits: { cpu: "1", memory: "512Mi" } },
};

const strings = (list: Record<string, string | number> | undefined) =>
  Object.entries(list ?? {}).map(([key, value]) => [key, String(value)] as const);

/**
 * `base` with each level laid over it, key by key. A level that sets a request above the limit
 * it inherits raises that limit to the request; one that sets a limit below the request it
 * inherits lowers that request to the limit; so every level's own values hold, and no pod gets
 * a request above its limit (which the API server refuses).
 */
export function layerResources(
  base: Requirements,
  ...levels: (Resources | undefined)[]
): V1ResourceRequirements {
  const requests = { ...base.requests };
  const limits = { ...base.limits };
  for (const level of levels) {
    const ownRequests = strings(level?.requests);
    const ownLimits = strings(level?.limits);
    for (const [key, value] of ownRequests) requests[key] = value;
    for (const [key, value] of ownLimits) limits[key] = value;
    for (const [key, value] of ownRequests) {
      const limit = limits[key];
      const setLimit = ownLimits.some(([own]) => own === key);
      if (!setLimit && limit !== undefined && compareQuantities(value, limit) > 0)
        limits[key] = value;
    }
    for (const [key, value] of ownLimits) {
      const request = requests[key];
      const setRequest = ownRequests.some(([own]) => own === key);
      if (!setRequest && request !== undefined && compareQuantities(request, value) > 0)
        requests[key] = value;
    }
  }
  return { requests, limits };
}

/** The requests and limits of one container of a build on a pool. */
export function jobContainerResources(
  container: JobContainer,
  pool: PoolJobResources | undefined,
  build: Resources | undefined,
): V1ResourceRequirements {
  const poolLevel =
    container === "report" || container === "cacheReport" ? undefined : pool?.[container];
  return layerResources(DEFAULT_JOB_RESOURCES[container], poolLevel, build);
}
