// What the reconciler read about a Job and its pods, reduced to the facts a decision uses.
// Objects arrive as the API server's JSON (src/runtime keeps timestamps as strings), though
// client-node's types say Date; both are accepted.
import type { V1ContainerStatus, V1Job, V1Pod } from "@kubernetes/client-node";
import { ANNOTATIONS } from "../naming.ts";
import { rfc3339 } from "../runtime/time.ts";

export interface ContainerOutcome {
  state: "waiting" | "running" | "terminated";
  exitCode?: number;
  reason?: string;
  /** The termination message: the file's content, or the log tail under FallbackToLogsOnError. */
  message?: string;
  finishedAt?: string;
}

export interface ObservedPod {
  name: string;
  phase: string;
  createdAt?: string;
  /** Init and regular containers by name. */
  containers: Record<string, ContainerOutcome>;
}

/** A Job's terminal condition. */
export interface JobOutcome {
  type: "Complete" | "Failed";
  reason?: string;
  message?: string;
  at?: string;
}

export interface ObservedJob {
  name: string;
  uid?: string;
  /** The uid of the object whose controller owner reference the Job carries. */
  controllerUid?: string;
  deleting: boolean;
  active: number;
  succeeded: number;
  failed: number;
  startTime?: string;
  completionTime?: string;
  outcome?: JobOutcome;
  /** The Job's pods, oldest first. */
  pods: ObservedPod[];
  /** Where a platform Job sends buildctl (its annotations), and the builder pod if routed to one. */
  builder?: string;
  builderPod?: string;
}

function timeOf(value: Date | string | undefined): string | undefined {
  if (value === undefined) return undefined;
  return typeof value === "string" ? value : rfc3339(value);
}

function outcomeOf(status: V1ContainerStatus): ContainerOutcome {
  const { state } = status;
  if (state?.terminated) {
    const terminated = state.terminated;
    return {
      state: "terminated",
      exitCode: terminated.exitCode,
      ...(terminated.reason === undefined ? {} : { reason: terminated.reason }),
      ...(terminated.message === undefined ? {} : { message: terminated.message }),
      ...(terminated.finishedAt === undefined
        ? {}
        : { finishedAt: timeOf(terminated.finishedAt) as string }),
    };
  }
  if (state?.running) return { state: "running" };
  return {
    state: "waiting",
    ...(state?.waiting?.reason === undefined ? {} : { reason: state.waiting.reason }),
    ...(state?.waiting?.message === undefined ? {} : { message: state.waiting.message }),
  };
}

export function observePod(pod: V1Pod): ObservedPod {
  const containers: Record<string, ContainerOutcome> = {};
  for (const status of [
    ...(pod.status?.initContainerStatuses ?? []),
    ...(pod.status?.containerStatuses ?? []),
  ]) {
    containers[status.name] = outcomeOf(status);
  }
  const createdAt = timeOf(pod.metadata?.creationTimestamp);
  return {
    name: pod.metadata?.name ?? "",
    phase: pod.status?.phase ?? "Pending",
    ...(createdAt === undefined ? {} : { createdAt }),
    containers,
  };
}

/** Reduces a Job and the pods it owns (others are ignored) to an ObservedJob. */
export function observeJob(job: V1Job, pods: readonly V1Pod[]): ObservedJob {
  const uid = job.metadata?.uid;
  const controller = job.metadata?.ownerReferences?.find((reference) => reference.controller);
  const terminal = (job.status?.conditions ?? []).find(
    (condition) =>
      (condition.type === "Complete" || condition.type === "Failed") && condition.status === "True",
  );
  const owned = pods
    .filter((pod) =>
      (pod.metadata?.ownerReferences ?? []).some((reference) => uid && reference.uid === uid),
    )
    .map(observePod)
    .sort((a, b) =>
      (a.createdAt ?? "") === (b.createdAt ?? "")
        ? a.name.localeCompare(b.name)
        : (a.createdAt ?? "") < (b.createdAt ?? "")
          ? -1
          : 1,
    );
  const annotations = job.metadata?.annotations ?? {};
  const builder = annotations[ANNOTATIONS.builder];
  const builderPod = annotations[ANNOTATIONS.builderPod];
  const startTime = timeOf(job.status?.startTime);
  const completionTime = timeOf(job.status?.completionTime);
  const at = timeOf(terminal?.lastTransitionTime);
  return {
    name: job.metadata?.name ?? "",
    ...(uid === undefined ? {} : { uid }),
    ...(controller === undefined ? {} : { controllerUid: controller.uid }),
    deleting: job.metadata?.deletionTimestamp !== undefined,
    active: job.status?.active ?? 0,
    succeeded: job.status?.succeeded ?? 0,
    failed: job.status?.failed ?? 0,
    ...(startTime === undefined ? {} : { startTime }),
    ...(completionTime === undefined ? {} : { completionTime }),
    ...(terminal
      ? {
          outcome: {
            type: terminal.type as "Complete" | "Failed",
            ...(terminal.reason === undefined ? {} : { reason: terminal.reason }),
            ...(terminal.message === undefined ? {} : { message: terminal.message }),
            ...(at === undefined ? {} : { at }),
          },
        }
      : {}),
    pods: owned,
    ...(builder === undefined ? {} : { builder }),
    ...(builderPod === undefined ? {} : { builderPod }),
  };
}

/** A Job holds its builder slot until it has a terminal condition. */
export function isFinished(job: ObservedJob): boolean {
  return job.outcome !== undefined;
}
