// The pool's status as a pure function of what the reconciler observed: per architecture the
// builders desired and ready and a Ready condition, a pool Ready condition whose reason says
// what to do, a one-line summary, and observedGeneration. Conditions follow the Kubernetes
// conventions: lastTransitionTime moves only when a status flips.
import type { V1Deployment, V1Node, V1StatefulSet } from "@kubernetes/client-node";
import {
  type ArchitectureSpec,
  type ArchitectureStatus,
  type BuilderPoolStatus,
  builderPoolStatus,
} from "../api/builderpool.ts";
import type { Condition } from "../api/meta.ts";
import type { BuilderPool, SpecError } from "../api/resources.ts";
import { findCondition, setCondition } from "../runtime/conditions.ts";
import { rfc3339 } from "../runtime/time.ts";
import type { Demand } from "./autoscale.ts";
import { USER_NAMESPACES_UNAVAILABLE, type UserNamespaceProblem } from "./userns.ts";

export const READY = "Ready";

export const REASONS = {
  ready: "Ready",
  buildersReady: "BuildersReady",
  buildersNotReady: "BuildersNotReady",
  noNodes: "NoNodesForArchitecture",
  /** Builders crash-loop because their node forbids unprivileged user namespaces (userns.ts). */
  userNamespaces: USER_NAMESPACES_UNAVAILABLE,
  scaledToZero: "ScaledToZero",
  invalidSpec: "InvalidSpec",
  /** A child's name is taken by an object the pool does not control. */
  nameConflict: "NameConflict",
  /** The API server refuses a child as the pool wants it (e.g. an immutable field). */
  childRejected: "ChildRejected",
} as const;

const ARCH_LABEL = "kubernetes.io/arch";

export interface PoolObservation {
  /** The builder workload of each architecture as read, or undefined when there is none yet. */
  workloads: Readonly<Record<string, V1Deployment | V1StatefulSet | undefined>>;
  /** The cluster's nodes; only their labels are read. */
  nodes: readonly Pick<V1Node, "metadata">[];
  /** When the server certificate expires. */
  certNotAfter?: Date;
  /** Replicas decided by the autoscaler, as in PoolContext.replicas. */
  replicas?: Readonly<Record<string, number>>;
  /** The demand the autoscaled architectures were sized from: shown as queued and running. */
  demand?: Readonly<Record<string, Demand>>;
  /** Per architecture, a builder that failed for want of user namespaces (userNamespaceProblem). */
  userNamespaces?: Readonly<Record<string, UserNamespaceProblem | undefined>>;
}

type ConditionUpdate = Omit<Condition, "lastTransitionTime">;

function nodesFor(arch: ArchitectureSpec, nodes: PoolObservation["nodes"]): number {
  return nodes.filter((node) => {
    const labels = node.metadata?.labels ?? {};
    if (labels[ARCH_LABEL] !== arch.name) return false;
    return Object.entries(arch.nodeSelector ?? {}).every(([key, value]) => labels[key] === value);
  }).length;
}

function noNodesMessage(arch: ArchitectureSpec, index: number): string {
  const selector = Object.entries(arch.nodeSelector ?? {});
  if (selector.length === 0) {
    return `no node has the label ${ARCH_LABEL}=${arch.name}: add ${arch.name} nodes to the cluster, or remove ${arch.name} from spec.architectures`;
  }
  const wanted = selector.map(([key, value]) => `${key}=${value}`).join(", ");
  return `no ${arch.name} node (${ARCH_LABEL}=${arch.name}) has the labels ${wanted}: label ${arch.name} nodes with them, or change spec.architectures[${index}].nodeSelector`;
}

function archCondition(
  arch: ArchitectureSpec,
  index: number,
  desired: number,
  ready: number,
  nodeCount: number,
  generation: number | undefined,
  userNamespaces?: UserNamespaceProblem,
): ConditionUpdate {
  const base = {
    type: READY,
    ...(generation === undefined ? {} : { observedGeneration: generation }),
  };
  if (nodeCount === 0) {
    return {
      ...base,
      status: "False",
      reason: REASONS.noNodes,
      message: noNodesMessage(arch, index),
    };
  }
  if (desired === 0) {
    return {
      ...base,
      status: "True",
      reason: REASONS.scaledToZero,
      message: arch.autoscaling
        ? `no ${arch.name} builds queued or running, so no builders; the next queued build wakes them`
        : `no ${arch.name} builders are running (replicas: 0); builds go to the Service and wait there`,
    };
  }
  if (ready < desired && userNamespaces) {
    return {
      ...base,
      status: "False",
      reason: REASONS.userNamespaces,
      message: userNamespaces.message,
    };
  }
  if (ready < desired) {
    return {
      ...base,
      status: "False",
      reason: REASONS.buildersNotReady,
      message: `${ready} of ${desired} ${arch.name} builders ready`,
    };
  }
  return {
    ...base,
    status: "True",
    reason: REASONS.buildersReady,
    message: `${ready} of ${desired} ${arch.name} builders ready`,
  };
}

export function summaryLine(architectures: readonly ArchitectureStatus[]): string {
  return architectures
    .map((arch) => `${arch.name} ${arch.readyReplicas}/${arch.replicas}`)
    .join(", ")
    .slice(0, 256);
}

/** The status to write for a pool whose children were reconciled and observed. */
export function poolStatus(
  pool: BuilderPool,
  observed: PoolObservation,
  now: Date,
): BuilderPoolStatus {
  const generation = pool.metadata.generation;
  const previous = pool.status;
  const architectures: ArchitectureStatus[] = [];
  const failing: { arch: string; condition: ConditionUpdate }[] = [];
  pool.spec.architectures.forEach((arch, index) => {
    const desired = observed.replicas?.[arch.name] ?? arch.replicas;
    const workload = observed.workloads[arch.name];
    const ready = Math.min(workload?.status?.readyReplicas ?? 0, desired);
    const update = archCondition(
      arch,
      index,
      desired,
      ready,
      nodesFor(arch, observed.nodes),
      generation,
      observed.userNamespaces?.[arch.name],
    );
    if (update.status !== "True") failing.push({ arch: arch.name, condition: update });
    const before = previous?.architectures?.find((entry) => entry.name === arch.name);
    const demand = observed.demand?.[arch.name];
    architectures.push({
      name: arch.name,
      replicas: desired,
      readyReplicas: ready,
      // Autoscaled architectures show the demand they were sized from; others keep what
      // another writer may have put there.
      ...(demand
        ? { queued: demand.queued, running: demand.running }
        : {
            ...(before?.queued === undefined ? {} : { queued: before.queued }),
            ...(before?.running === undefined ? {} : { running: before.running }),
          }),
      conditions: setCondition(before?.conditions, update, now),
    });
  });

  const summary = summaryLine(architectures);
  const noNodes = failing.filter((entry) => entry.condition.reason === REASONS.noNodes);
  const noUserNamespaces = failing.filter(
    (entry) => entry.condition.reason === REASONS.userNamespaces,
  );
  const base = {
    type: READY,
    ...(generation === undefined ? {} : { observedGeneration: generation }),
  };
  let ready: ConditionUpdate;
  if (noNodes.length > 0) {
    ready = {
      ...base,
      status: "False",
      reason: REASONS.noNodes,
      message: noNodes.map((entry) => `${entry.arch}: ${entry.condition.message}`).join("\n"),
    };
  } else if (noUserNamespaces.length > 0) {
    // More specific than BuildersNotReady: what a person must change on the nodes.
    ready = {
      ...base,
      status: "False",
      reason: REASONS.userNamespaces,
      message: noUserNamespaces
        .map((entry) => `${entry.arch}: ${entry.condition.message}`)
        .join("\n"),
    };
  } else if (failing.length > 0) {
    ready = {
      ...base,
      status: "False",
      reason: REASONS.buildersNotReady,
      message: `builders not ready: ${summary}`,
    };
  } else {
    ready = {
      ...base,
      status: "True",
      reason: REASONS.ready,
      message: `builders ready: ${summary}`,
    };
  }

  return {
    ...(generation === undefined ? {} : { observedGeneration: generation }),
    conditions: setCondition(previous?.conditions, ready, now),
    architectures,
    summary,
    ...(observed.certNotAfter ? { certificateNotAfter: rfc3339(observed.certNotAfter) } : {}),
  };
}

/**
 * The status for a pool the operator cannot read: Ready=False, InvalidSpec, one line per
 * problem. What was observed before is kept, since the children stay as they were. Takes the
 * object as read, since parseBuilderPool threw.
 */
export function invalidSpecStatus(
  pool: { metadata?: { generation?: number }; status?: unknown },
  error: SpecError,
  now: Date,
): BuilderPoolStatus {
  return notReadyStatus(
    pool,
    { reason: REASONS.invalidSpec, message: error.issues.join("\n") },
    now,
  );
}

/**
 * Ready=False for a reason that stops the reconcile before the children could be observed
 * (InvalidSpec, NameConflict, ChildRejected); the rest of the previous status is kept.
 */
export function notReadyStatus(
  pool: { metadata?: { generation?: number }; status?: unknown },
  problem: { reason: string; message: string },
  now: Date,
): BuilderPoolStatus {
  const generation = pool.metadata?.generation;
  // The raw object's status, read with the schema; one the operator cannot read starts over.
  const parsed = builderPoolStatus.safeParse(pool.status ?? {});
  const previous: BuilderPoolStatus = parsed.success ? parsed.data : {};
  return {
    ...previous,
    ...(generation === undefined ? {} : { observedGeneration: generation }),
    conditions: setCondition(
      previous.conditions,
      {
        type: READY,
        status: "False",
        reason: problem.reason,
        message: problem.message,
        ...(generation === undefined ? {} : { observedGeneration: generation }),
      },
      now,
    ),
  };
}

/** The pool's Ready condition, if any: what the ImageBuild controller checks before queueing. */
export function poolReady(status: BuilderPoolStatus | undefined): Condition | undefined {
  return findCondition(status?.conditions, READY);
}
