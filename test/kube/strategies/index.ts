// What the API server does to a built-in object on create and update, kind by kind: the
// defaults the decoder applies (SetDefaults_*), PrepareForCreate/PrepareForUpdate, and the
// validation that answers 422 Invalid. Only what an operator meets is modelled; the rest of
// a built-in object is stored as sent.
import {
  configmaps,
  events,
  eventsV1,
  leases,
  namespaces,
  nodes,
  persistentvolumeclaims,
  poddisruptionbudgets,
  secrets,
  services,
} from "./core.ts";
import { pods } from "./pods.ts";
import type { Strategy } from "./strategy.ts";
import { deployments, jobs, replicasets, statefulsets } from "./workloads.ts";

export {
  pruneObjectMeta,
  validateName,
  validateObjectMeta,
  validateObjectMetaUpdate,
} from "./meta.ts";
export type { Strategy, StrategyContext } from "./strategy.ts";
export { JOB_LABELS } from "./workloads.ts";

export const STRATEGIES: Record<string, Strategy> = {
  pods,
  "deployments.apps": deployments,
  "replicasets.apps": replicasets,
  "statefulsets.apps": statefulsets,
  "jobs.batch": jobs,
  services,
  secrets,
  configmaps,
  namespaces,
  persistentvolumeclaims,
  "poddisruptionbudgets.policy": poddisruptionbudgets,
  "leases.coordination.k8s.io": leases,
  events,
  "events.events.k8s.io": eventsV1,
  nodes,
};
