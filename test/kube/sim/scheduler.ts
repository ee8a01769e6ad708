// Nodes and the scheduler: a pod goes to a node only when the node satisfies the pod's
// nodeSelector and required node affinity and the pod tolerates the node's NoSchedule and
// NoExecute taints; otherwise it stays Pending with PodScheduled=False, reason Unschedulable,
// and the scheduler's "0/N nodes are available: ..." message. Pending pods are retried when
// nodes change.
import type { INode } from "kubernetes-models/v1/Node";
import type { INodeSelectorRequirement } from "kubernetes-models/v1/NodeSelectorRequirement";
import type { IPod } from "kubernetes-models/v1/Pod";
import type { ITaint } from "kubernetes-models/v1/Taint";
import type { IToleration } from "kubernetes-models/v1/Toleration";
import { clone, type KubeObject, nowTime, objectKey, type Stored } from "../objects.ts";
import type { Store } from "../store.ts";
import { WorkQueue } from "./queue.ts";

export interface NodeSpec {
  name: string;
  /** kubernetes.io/arch (default amd64). */
  arch?: string;
  /** kubernetes.io/os (default linux). */
  os?: string;
  labels?: Record<string, string>;
  taints?: ITaint[];
  unschedulable?: boolean;
  /** Allocatable resources (default cpu 8, memory 32Gi, pods 110). */
  capacity?: Record<string, string>;
}

let nodeAddress = 10;

/** A Node object like a kubelet registers it. */
export function nodeObject(spec: NodeSpec, kubeletVersion: string): KubeObject {
  const arch = spec.arch ?? "amd64";
  const os = spec.os ?? "linux";
  const capacity = {
    cpu: "8",
    memory: "32Gi",
    pods: "110",
    "ephemeral-storage": "100Gi",
    ...spec.capacity,
  };
  const now = nowTime();
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name: spec.name,
      labels: {
        "kubernetes.io/arch": arch,
        "kubernetes.io/os": os,
        "kubernetes.io/hostname": spec.name,
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": os,
        ...spec.labels,
      },
    },
    spec: {
      ...(spec.taints?.length ? { taints: spec.taints } : {}),
      ...(spec.unschedulable ? { unschedulable: true } : {}),
    },
    status: {
      capacity,
      allocatable: capacity,
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "KubeletReady",
          message: "kubelet is posting ready status",
          lastHeartbeatTime: now,
          lastTransitionTime: now,
        },
      ],
      addresses: [
        { type: "InternalIP", address: `10.0.0.${nodeAddress++}` },
        { type: "Hostname", address: spec.name },
      ],
      nodeInfo: {
        architecture: arch,
        operatingSystem: os,
        kubeletVersion,
        kubeProxyVersion: kubeletVersion,
        containerRuntimeVersion: "containerd://1.7.22",
        osImage: "Debian GNU/Linux 12 (bookworm)",
        kernelVersion: "6.1.0",
        machineID: "",
        systemUUID: "",
        bootID: "",
      },
    },
  };
}

type Pod = Stored<IPod>;
type Node = Stored<INode>;

function matchRequirement(
  requirement: Stored<INodeSelectorRequirement>,
  value: string | undefined,
): boolean {
  const values = requirement.values ?? [];
  switch (requirement.operator) {
    case "In":
      return value !== undefined && values.includes(value);
    case "NotIn":
      return value === undefined || !values.includes(value);
    case "Exists":
      return value !== undefined;
    case "DoesNotExist":
      return value === undefined;
    case "Gt":
      return value !== undefined && Number(value) > Number(values[0]);
    case "Lt":
      return value !== undefined && Number(value) < Number(values[0]);
    default:
      return false;
  }
}

/** nodeSelector and requiredDuringSchedulingIgnoredDuringExecution. */
export function nodeMatchesAffinity(pod: Pod, node: Node): boolean {
  const labels = node.metadata?.labels ?? {};
  for (const [key, value] of Object.entries(pod.spec?.nodeSelector ?? {})) {
    if (labels[key] !== value) return false;
  }
  const required = pod.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution;
  if (!required) return true;
  // Terms are ORed; the requirements of a term are ANDed. An empty term matches nothing.
  return required.nodeSelectorTerms.some((term) => {
    const expressions = term.matchExpressions ?? [];
    const fields = term.matchFields ?? [];
    if (expressions.length === 0 && fields.length === 0) return false;
    return (
      expressions.every((requirement) => matchRequirement(requirement, labels[requirement.key])) &&
      fields.every((requirement) =>
        matchRequirement(
          requirement,
          requirement.key === "metadata.name" ? node.metadata?.name : undefined,
        ),
      )
    );
  });
}

export function tolerates(
  tolerations: readonly Stored<IToleration>[],
  taint: Stored<ITaint>,
): boolean {
  return tolerations.some((toleration) => {
    if (toleration.effect && toleration.effect !== taint.effect) return false;
    if (toleration.operator === "Exists") return !toleration.key || toleration.key === taint.key;
    return toleration.key === taint.key && (toleration.value ?? "") === (taint.value ?? "");
  });
}

/** Why a node does not fit a pod, in the scheduler's words, or undefined when it fits. */
export function unfitReason(pod: Pod, node: Node): string | undefined {
  // The default filter plugins run in this order and a node reports the first that fails.
  if (node.spec?.unschedulable) return "node(s) were unschedulable";
  for (const taint of node.spec?.taints ?? []) {
    if (taint.effect !== "NoSchedule" && taint.effect !== "NoExecute") continue;
    if (!tolerates(pod.spec?.tolerations ?? [], taint))
      return `node(s) had untolerated taint {${taint.key}: ${taint.value ?? ""}}`;
  }
  if (!nodeMatchesAffinity(pod, node)) return "node(s) didn't match Pod's node affinity/selector";
  return undefined;
}

export class Scheduler {
  private readonly store: Store;
  private readonly queue: WorkQueue;
  private readonly unsubscribe: () => void;
  /** Pods bound per node, to spread pods. */
  private readonly load = new Map<string, Set<string>>();
  private readonly unschedulable = new Set<string>();

  constructor(store: Store) {
    this.store = store;
    this.queue = new WorkQueue((key) => this.schedule(key));
    this.unsubscribe = store.onChange((event, info) => {
      if (info.resource === "nodes" && !info.group) {
        for (const key of this.unschedulable) this.queue.add(key);
        return;
      }
      if (info.resource !== "pods" || info.group) return;
      const pod = event.object as Pod;
      const key = objectKey(pod.metadata?.namespace, pod.metadata!.name!);
      const node = pod.spec?.nodeName;
      if (event.type === "DELETED") {
        this.unschedulable.delete(key);
        if (node) this.load.get(node)?.delete(key);
        return;
      }
      if (node) {
        this.unschedulable.delete(key);
        let set = this.load.get(node);
        if (!set) {
          set = new Set();
          this.load.set(node, set);
        }
        set.add(key);
      } else if (event.type === "ADDED" || !this.unschedulable.has(key)) this.queue.add(key);
    });
    for (const pod of store.objects<IPod>("pods")) {
      if (!pod.spec?.nodeName)
        this.queue.add(objectKey(pod.metadata?.namespace, pod.metadata!.name!));
    }
  }

  stop(): void {
    this.unsubscribe();
    this.queue.stop();
  }

  private schedule(key: string): void {
    const [namespace, name] = key.split("/") as [string, string];
    const pod = this.store.get<IPod>("pods", namespace, name);
    if (!pod || pod.spec?.nodeName || pod.metadata?.deletionTimestamp) return;
    if ((pod.spec?.schedulerName ?? "default-scheduler") !== "default-scheduler") return;
    const nodes = this.store.objects<INode>("nodes");
    const reasons = new Map<string, number>();
    let best: Node | undefined;
    let bestLoad = Number.POSITIVE_INFINITY;
    for (const node of nodes) {
      const reason = unfitReason(pod, node);
      if (reason) {
        reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
        continue;
      }
      const load = this.load.get(node.metadata!.name!)?.size ?? 0;
      if (load < bestLoad) {
        best = node;
        bestLoad = load;
      }
    }
    if (best) {
      this.unschedulable.delete(key);
      this.store.update(
        "pods",
        { ...clone(pod), spec: { ...clone(pod.spec), nodeName: best.metadata!.name } },
        {
          namespace,
          subresource: "binding",
        },
      );
      return;
    }
    this.unschedulable.add(key);
    const message =
      nodes.length === 0
        ? "no nodes available to schedule pods"
        : `0/${nodes.length} nodes are available: ${[...reasons]
            .map(([reason, count]) => `${count} ${reason}`)
            .sort()
            .join(
              ", ",
            )}. preemption: 0/${nodes.length} nodes are available: ${nodes.length} Preemption is not helpful for scheduling.`;
    const condition = pod.status?.conditions?.find((c) => c.type === "PodScheduled");
    if (condition?.status === "False" && condition.message === message) return;
    this.store.mutate<KubeObject & IPod>(
      "pods",
      namespace,
      name,
      (draft) => {
        const status = draft.status ?? {};
        draft.status = status;
        const conditions = (status.conditions ?? []).filter((c) => c.type !== "PodScheduled");
        conditions.push({
          type: "PodScheduled",
          status: "False",
          lastProbeTime: null as unknown as string,
          lastTransitionTime: nowTime(),
          reason: "Unschedulable",
          message,
        });
        status.conditions = conditions;
      },
      { subresource: "status" },
    );
  }
}
