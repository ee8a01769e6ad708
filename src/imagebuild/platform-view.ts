// One platform's state, from its Job (if any), the status already written and the queue.
// The status is the memory of what can no longer be observed: a digest once recorded stays,
// whatever happened to the Job since (TTL, a restart, someone deleting it).

import type { PlatformStatus } from "../api/imagebuild-status.ts";
import type { SpecPlatform } from "../api/platform.ts";
import type { ImageBuild } from "../api/resources.ts";
import { buildJobName } from "../naming.ts";
import { parseCacheReport } from "./cache-report.ts";
import { CONTAINERS } from "./jobs.ts";
import { cacheExportError, failureMessage, parseBuildMetadata } from "./metadata.ts";
import type { ObservedJob, ObservedPod } from "./observe.ts";
import type { SlotVerdict } from "./queue.ts";
import type { Route } from "./routing.ts";

/** A succeeded platform's message says what happened to its cache; it is read back on later passes. */
export const PUSHED = "image pushed";
export const CACHE_EXPORTED = `${PUSHED}; registry cache exported`;
export const CACHE_FAILED = `${PUSHED}; registry cache export failed: `;

export type CacheOutcome = { exported: true } | { exported: false; message: string };

/** Reads a succeeded platform's cache outcome back from its message. */
export function cacheOutcomeOf(status: PlatformStatus): CacheOutcome | undefined {
  if (status.message === CACHE_EXPORTED) return { exported: true };
  if (status.message?.startsWith(CACHE_FAILED)) {
    return { exported: false, message: status.message.slice(CACHE_FAILED.length) };
  }
  return undefined;
}

export type PlatformState =
  | { kind: "succeeded"; digest: string }
  | { kind: "failed"; reason: string }
  | { kind: "running" }
  | { kind: "start" }
  | { kind: "queued"; position: number }
  /** Its slot is free, but its autoscaled architecture has no builder for it yet. */
  | { kind: "scaling" }
  | { kind: "waiting" };

export interface PlatformView {
  status: PlatformStatus;
  state: PlatformState;
  /** A Job to delete so the platform runs again (its finished pod, and digest, were lost). */
  rebuild?: string;
  /** Why a platform that just pushed has no cache report (the reconciler logs it at debug). */
  noCacheReport?: string;
}

export interface PlatformContext {
  build: ImageBuild;
  now: string;
  /** The Job named for this platform, if one exists (owned or not). */
  job?: ObservedJob | undefined;
  previous?: PlatformStatus | undefined;
  /** The queue's verdict, when the platform has no Job and the build is admitted. */
  slot?: SlotVerdict | undefined;
  /** Why no Job may be created (the build is not admitted), when that is so. */
  blocked?: string | undefined;
  /** The pool architecture building it, once admitted. */
  architecture?: string | undefined;
  /** Where a Job created now would send buildctl (routing), for a platform that may start. */
  route?: Route | undefined;
  logs?: Readonly<Record<string, string>> | undefined;
}

/** Whether the Job is this build's (its controller owner reference carries the build's uid). */
export function ownedBy(job: ObservedJob, build: ImageBuild): boolean {
  return build.metadata.uid === undefined || job.controllerUid === build.metadata.uid;
}

function lastFailure(job: ObservedJob): string | undefined {
  for (const pod of [...job.pods].reverse()) {
    for (const name of [CONTAINERS.buildctl, CONTAINERS.report, CONTAINERS.cacheReport]) {
      const container = pod.containers[name];
      if (container?.state === "terminated" && container.exitCode !== 0) {
        return failureMessage(
          container.message,
          `container ${name} of pod ${pod.name} exited with code ${container.exitCode}${container.reason ? ` (${container.reason})` : ""}`,
        );
      }
    }
  }
  return undefined;
}

/**
 * Whether a pod's build has started: buildctl runs as the init container, so the pod is still
 * Pending (Kubernetes' phase) while the build runs.
 */
function started(pod: ObservedPod): boolean {
  const buildctl = pod.containers[CONTAINERS.buildctl];
  return (
    pod.phase === "Running" ||
    pod.phase === "Succeeded" ||
    pod.phase === "Failed" ||
    buildctl?.state === "running" ||
    buildctl?.state === "terminated"
  );
}

/** Pods that started building, retries included; finished pods may be gone, the Job counts them. */
function attemptsOf(job: ObservedJob): number {
  return Math.max(job.pods.filter(started).length, job.failed + job.succeeded);
}

/**
 * Waiting reasons worth a message: not PodInitializing, which the `report` container shows
 * for as long as buildctl (the init container) runs.
 */
function waitingReason(pod: ObservedPod) {
  const containers = [
    pod.containers[CONTAINERS.buildctl],
    ...Object.entries(pod.containers)
      .filter(([name]) => name !== CONTAINERS.buildctl)
      .map(([, container]) => container),
  ];
  return containers.find(
    (container) =>
      container?.state === "waiting" &&
      container.reason !== undefined &&
      container.reason !== "PodInitializing",
  );
}

function headline(message: string): string {
  return message.split("\n")[0] ?? message;
}

/** The cache outcome of a finished platform pod whose metadata lacks cache.manifest. */
function refusedCache(pod: ObservedPod, logs: PlatformContext["logs"]): CacheOutcome {
  const log = logs?.[pod.name];
  const error = log === undefined ? undefined : cacheExportError(log);
  return {
    exported: false,
    message:
      error ??
      `the registry refused the cache export; see the log of pod ${pod.name} (container ${CONTAINERS.buildctl})`,
  };
}

export function platformView(
  { platform, slug }: SpecPlatform,
  context: PlatformContext,
): PlatformView {
  const { build, now, job, previous } = context;
  const jobName = buildJobName(build.metadata.name, slug);
  const base: PlatformStatus = {
    platform,
    ...((context.architecture ?? previous?.architecture)
      ? { architecture: (context.architecture ?? previous?.architecture) as string }
      : {}),
    phase: "Pending",
    ...(previous?.job ? { job: previous.job } : {}),
    // Where the build was sent: the Job's own record of it (annotations), else the status's.
    ...(job?.builder !== undefined
      ? { builder: job.builder, ...(job.builderPod ? { builderPod: job.builderPod } : {}) }
      : {
          ...(previous?.builder ? { builder: previous.builder } : {}),
          ...(previous?.builderPod ? { builderPod: previous.builderPod } : {}),
        }),
    ...(previous?.startTime ? { startTime: previous.startTime } : {}),
    ...(previous?.attempts === undefined ? {} : { attempts: previous.attempts }),
  };

  // A recorded digest is final.
  if (previous?.digest) {
    return { status: previous, state: { kind: "succeeded", digest: previous.digest } };
  }
  if (previous?.phase === "Failed" && !job) {
    return { status: previous, state: { kind: "failed", reason: "BuildFailed" } };
  }

  if (job && !ownedBy(job, build)) {
    return {
      status: {
        ...base,
        phase: "Pending",
        message: job.deleting
          ? `waiting for Job ${job.name} of an earlier object to be deleted`
          : `Job ${job.name} exists but does not belong to this ImageBuild; delete it, or create the build under another name`,
      },
      state: { kind: "waiting" },
    };
  }

  if (job) {
    const attemptCount = Math.max(attemptsOf(job), previous?.attempts ?? 0);
    const building: PlatformStatus = {
      ...base,
      job: job.name,
      startTime: base.startTime ?? job.startTime ?? now,
      ...(attemptCount > 0 ? { attempts: attemptCount } : {}),
    };
    const completed = job.completionTime ?? job.outcome?.at ?? now;
    if (job.outcome?.type === "Complete") {
      const pod = job.pods.find((candidate) => candidate.phase === "Succeeded");
      if (!pod) {
        return {
          status: {
            ...building,
            phase: "Pending",
            message: `Job ${job.name} completed but its pod is gone, so the digest cannot be read; building again`,
          },
          state: { kind: "waiting" },
          rebuild: job.name,
        };
      }
      const parsed = parseBuildMetadata(pod.containers[CONTAINERS.report]?.message, platform);
      if (!parsed.ok) {
        return {
          status: {
            ...building,
            phase: "Failed",
            completionTime: completed,
            message: parsed.error,
          },
          state: { kind: "failed", reason: "InvalidMetadata" },
        };
      }
      const cache: CacheOutcome | undefined = build.spec.cache.disabled
        ? undefined
        : parsed.value.cacheExported
          ? { exported: true }
          : refusedCache(pod, context.logs);
      // A pod without the container (a Job made by an older operator) has no report either.
      const report = parseCacheReport(pod.containers[CONTAINERS.cacheReport]?.message);
      return {
        ...(report.ok ? {} : { noCacheReport: report.error }),
        status: {
          ...building,
          phase: "Succeeded",
          digest: parsed.value.digest,
          ...(report.ok ? { cache: report.value } : {}),
          completionTime: completed,
          message:
            cache === undefined
              ? PUSHED
              : cache.exported
                ? CACHE_EXPORTED
                : `${CACHE_FAILED}${cache.message}`.slice(0, 4096),
        },
        state: { kind: "succeeded", digest: parsed.value.digest },
      };
    }
    if (job.outcome?.type === "Failed") {
      const timeout = job.outcome.reason === "DeadlineExceeded";
      const message = timeout
        ? `did not finish within ${build.spec.timeout} (spec.timeout); Job ${job.name} was stopped`
        : (lastFailure(job) ??
          `Job ${job.name} failed${job.outcome.reason ? ` (${job.outcome.reason})` : ""}${job.outcome.message ? `: ${job.outcome.message}` : ""}`);
      return {
        status: { ...building, phase: "Failed", completionTime: completed, message },
        state: { kind: "failed", reason: timeout ? "Timeout" : "BuildFailed" },
      };
    }
    // The newest pod tells where the platform stands: building (buildctl running, or the
    // report container copying its result), failed with a retry to come, or not started yet.
    const pod = job.pods.at(-1);
    const failedLast = pod?.phase === "Failed";
    const running = pod !== undefined && !failedLast && started(pod);
    const waiting = pod && !running && !failedLast ? waitingReason(pod) : undefined;
    const retry = job.failed > 0 ? lastFailure(job) : undefined;
    const attempts = `attempt ${building.attempts} of ${build.spec.retries + 1}`;
    const parts = [
      job.deleting ? `Job ${job.name} is being stopped` : undefined,
      retry && failedLast && !job.deleting
        ? `${attempts} failed, retrying: ${headline(retry)}`
        : retry
          ? `${attempts}; the previous one failed: ${headline(retry)}`
          : undefined,
      waiting
        ? `pod ${pod?.name} waiting: ${waiting.reason}${waiting.message ? `: ${waiting.message}` : ""}`
        : undefined,
    ].filter((part): part is string => part !== undefined);
    return {
      status: {
        ...building,
        phase: running ? "Running" : "Pending",
        ...(parts.length > 0 ? { message: parts.join("; ").slice(0, 4096) } : {}),
      },
      state: { kind: "running" },
    };
  }

  // No Job (yet, or any more): nor a builder it was sent to.
  const { job: _gone, builder: _builder, builderPod: _pod, ...withoutJob } = base;
  if (context.blocked !== undefined) {
    return {
      status: { ...withoutJob, phase: "Pending", message: context.blocked },
      state: { kind: "waiting" },
    };
  }
  const slot = context.slot;
  const route = context.route;
  if (slot?.start && route?.kind === "wait") {
    return {
      status: {
        ...withoutJob,
        phase: "Queued",
        message: `waiting for a builder: ${route.message}`,
      },
      state: { kind: "scaling" },
    };
  }
  if (slot?.start) {
    return {
      status: {
        ...withoutJob,
        phase: "Pending",
        job: jobName,
        ...(route && route.kind !== "wait"
          ? { builder: route.address, ...(route.kind === "pod" ? { builderPod: route.pod } : {}) }
          : {}),
        startTime: base.startTime ?? now,
      },
      state: { kind: "start" },
    };
  }
  if (slot && !slot.start) {
    return {
      status: {
        ...withoutJob,
        phase: "Queued",
        message: `waiting for a free ${context.architecture} builder: position ${slot.position} (${slot.running} of ${slot.capacity} running)`,
      },
      state: { kind: "queued", position: slot.position },
    };
  }
  return {
    status: { ...withoutJob, phase: "Pending", message: "waiting for a builder slot" },
    state: { kind: "waiting" },
  };
}
