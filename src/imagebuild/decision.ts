// What a decision reads and what it returns: the facts the reconciler gathered (Observed) and the
// status, writes (Action) and Events it asks for. decide.ts and publish.ts both speak them, so
// they live here and neither imports the other's types.
import type { V1ConfigMap, V1Job } from "@kubernetes/client-node";
import type { ImageBuildStatus } from "../api/imagebuild-status.ts";
import type { Admission } from "./admission.ts";
import type { ObservedJob } from "./observe.ts";
import type { SlotVerdict } from "./queue.ts";
import type { Route } from "./routing.ts";

export interface Observed {
  now: Date;
  admission: Admission;
  /** The pool queue's verdicts (assignSlots), by slotKey. */
  slots: ReadonlyMap<string, SlotVerdict>;
  /** Whether `<build>-buildkit-client` exists. */
  clientSecret: boolean;
  /**
   * Whether the pool's CA Secret, which issues the client certificate, exists; false while a
   * new pool's controller has not made it yet. Undefined counts as present.
   */
  poolCa?: boolean;
  /** Whether `<build>-context` exists (inline sources). */
  inlineContext: boolean;
  /** Platform Jobs found under their names, by platform slug. */
  jobs: Readonly<Record<string, ObservedJob | undefined>>;
  indexJob?: ObservedJob | undefined;
  /** `<build>-verify` and `<build>-tag`, for builds with spec.verify. */
  verifyJob?: ObservedJob | undefined;
  tagJob?: ObservedJob | undefined;
  /** buildctl log tails by pod name, fetched for the pods logRequests() named. */
  logs?: Readonly<Record<string, string>>;
  /**
   * Where each platform that may start now would go (cache-locality routing), by slug; a
   * platform without one goes to its architecture's Service.
   */
  routes?: Readonly<Record<string, Route>>;
  /** The operator's image, which runs `buildfarm assemble` in the index Job. */
  operatorImage: string;
  operatorUser?: number;
  /** The platforms that image is built for (--operator-image-platforms). */
  operatorImagePlatforms?: readonly string[];
}

export type Action =
  | { type: "CreateClientSecret"; name: string; pool: { name: string; namespace: string } }
  | { type: "CreateConfigMap"; object: V1ConfigMap }
  | { type: "CreateJob"; platform?: string; object: V1Job }
  | { type: "DeleteJob"; name: string; propagationPolicy: "Background"; reason: string }
  | { type: "DeleteSecret"; name: string; reason: string }
  | { type: "DeleteConfigMap"; name: string; reason: string };

export interface BuildEvent {
  type: "Normal" | "Warning";
  reason: string;
  message: string;
}

export interface Decision {
  status: ImageBuildStatus;
  /** In order: what a Job mounts is created before the Job. */
  actions: Action[];
  events: BuildEvent[];
  requeueAfterMs?: number;
  /** Platforms that pushed without a cache report, and why (logged at debug, never an error). */
  noCacheReport?: { platform: string; reason: string }[];
}

/** Deletes a Job and, in the background, its pods (Jobs default to orphaning them). */
export function deleteJob(job: ObservedJob, reason: string): Action {
  return { type: "DeleteJob", name: job.name, propagationPolicy: "Background", reason };
}
