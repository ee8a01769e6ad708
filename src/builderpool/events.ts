// The Events a reconcile of a pool should record, derived from what it decided: certificates
// issued and builders scaled. The reconciler hands them to the runtime's EventRecorder.
import type { V1Deployment, V1StatefulSet } from "@kubernetes/client-node";
import type { Demand } from "./autoscale.ts";
import type { PoolCertificates } from "./certificates.ts";
import type { DesiredArchitecture } from "./desired.ts";

export interface PoolEvent {
  type: "Normal" | "Warning";
  reason: string;
  message: string;
}

export function certificateEvents(issued: PoolCertificates["issued"]): PoolEvent[] {
  const events: PoolEvent[] = [];
  if (issued.ca) {
    events.push({
      type: "Normal",
      reason: issued.ca.reason === "Missing" ? "CAIssued" : "CARotated",
      message: `issued a new CA (${issued.ca.reason}): ${issued.ca.message}`,
    });
  }
  if (issued.server) {
    events.push({
      type: "Normal",
      reason: issued.server.reason === "Missing" ? "CertificateIssued" : "CertificateRotated",
      message: `issued a new buildkitd server certificate (${issued.server.reason}): ${issued.server.message}; the builders roll to it`,
    });
  }
  return events;
}

/**
 * One event per architecture whose replica count changes (not when it is first created); for
 * an autoscaled architecture, with the demand it was sized from.
 */
export function scalingEvents(
  desired: readonly DesiredArchitecture[],
  current: Readonly<Record<string, V1Deployment | V1StatefulSet | undefined>>,
  demand?: Readonly<Record<string, Demand>>,
): PoolEvent[] {
  const events: PoolEvent[] = [];
  for (const entry of desired) {
    const existing = current[entry.arch];
    const before = existing?.spec?.replicas;
    if (existing === undefined || before === undefined || before === entry.replicas) continue;
    const seen = demand?.[entry.arch];
    events.push({
      type: "Normal",
      reason: before < entry.replicas ? "ScaledUp" : "ScaledDown",
      message: `${entry.arch} builders ${before} → ${entry.replicas}${seen ? ` (${seen.queued} queued, ${seen.running} running)` : ""}`,
    });
  }
  return events;
}
