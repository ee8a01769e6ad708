// The Deployment and ReplicaSet controllers: a Deployment owns one ReplicaSet per pod template
// (`<deployment>-<pod-template-hash>`), rolls from the old to the new one within maxSurge and
// maxUnavailable (or Recreate), and reports status with the Available and Progressing
// conditions (progressDeadlineSeconds included); a ReplicaSet keeps `replicas` pods.
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment";
import type { IReplicaSet } from "kubernetes-models/apps/v1/ReplicaSet";
import { clone, jsonEqual, type KubeObject, nowTime, type Stored } from "../objects.ts";
import type { Store } from "../store.ts";
import { WorkQueue } from "./queue.ts";
import {
  controllerOf,
  controllerRef,
  isActive,
  isReady,
  owned,
  ownedPods,
  podFromTemplate,
  scaledValue,
  templateHash,
} from "./workloads.ts";

/** Which pods a ReplicaSet removes first when it scales down: the lower cost first. */
const DELETION_COST = "controller.kubernetes.io/pod-deletion-cost";

type Deployment = Stored<IDeployment & KubeObject>;
type ReplicaSet = Stored<IReplicaSet & KubeObject>;

const RS = "replicasets.apps";
const DEPLOY = "deployments.apps";
const HASH = "pod-template-hash";
const REVISION = "deployment.kubernetes.io/revision";

export class ReplicaSetController {
  private readonly store: Store;
  private readonly queue: WorkQueue;
  private readonly unsubscribe: () => void;

  constructor(store: Store) {
    this.store = store;
    this.queue = new WorkQueue((key) => this.reconcile(key));
    this.unsubscribe = store.onChange((event, info) => {
      const meta = event.object.metadata;
      if (info.resource === "replicasets" && info.group === "apps")
        this.queue.add(`${meta.namespace}/${meta.name}`);
      else if (info.resource === "pods" && !info.group) {
        const owner = controllerOf(event.object);
        if (owner?.kind === "ReplicaSet") this.queue.add(`${meta.namespace}/${owner.name}`);
      }
    });
    for (const rs of store.objects(RS))
      this.queue.add(`${rs.metadata.namespace}/${rs.metadata.name}`);
  }

  stop(): void {
    this.unsubscribe();
    this.queue.stop();
  }

  private reconcile(key: string): void {
    const [namespace, name] = key.split("/") as [string, string];
    const rs = this.store.get<IReplicaSet & KubeObject>(RS, namespace, name) as
      | ReplicaSet
      | undefined;
    if (!rs || rs.metadata.deletionTimestamp) return;
    const pods = ownedPods(this.store, rs.metadata.uid!);
    const active = pods.filter(isActive);
    const want = rs.spec?.replicas ?? 1;
    if (active.length < want) {
      for (let i = active.length; i < want; i++)
        this.store.create(
          "pods",
          podFromTemplate(
            rs.spec?.template,
            rs as Stored<KubeObject & { apiVersion: string; kind: string }>,
            { generateName: `${name}-` },
          ),
          {
            namespace,
          },
        );
    } else if (active.length > want) {
      // The ReplicaSet controller's order (ActivePodsWithRanks): unscheduled, then not running,
      // then not ready; then the lower controller.kubernetes.io/pod-deletion-cost; then newest.
      const rank = (pod: (typeof active)[number]) =>
        !pod.spec?.nodeName ? 0 : pod.status?.phase !== "Running" ? 1 : !isReady(pod) ? 2 : 3;
      const cost = (pod: (typeof active)[number]) => {
        const value = Number.parseInt(pod.metadata.annotations?.[DELETION_COST] ?? "0", 10);
        return Number.isFinite(value) ? value : 0;
      };
      const victims = [...active]
        .sort(
          (a, b) =>
            rank(a) - rank(b) ||
            cost(a) - cost(b) ||
            (b.metadata.creationTimestamp ?? "").localeCompare(a.metadata.creationTimestamp ?? ""),
        )
        .slice(0, active.length - want);
      for (const pod of victims)
        this.store.delete("pods", namespace, pod.metadata.name!, {
          preconditions: { uid: pod.metadata.uid! },
        });
    }
    const ready = active.filter(isReady).length;
    const status = {
      replicas: active.length,
      fullyLabeledReplicas: active.length,
      readyReplicas: ready,
      availableReplicas: ready,
      observedGeneration: rs.metadata.generation,
    };
    const current = rs.status ?? {};
    if (!jsonEqual({ ...current, ...status }, current))
      this.store.mutate(
        RS,
        namespace,
        name,
        (draft) => {
          draft.status = { ...(draft.status as object), ...status };
        },
        { subresource: "status" },
      );
  }
}

interface Condition {
  type: string;
  status: string;
  lastUpdateTime: string;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export class DeploymentController {
  private readonly store: Store;
  private readonly queue: WorkQueue;
  private readonly unsubscribe: () => void;
  private readonly timeScale: number;

  constructor(store: Store, timeScale = 1) {
    this.store = store;
    this.timeScale = timeScale;
    this.queue = new WorkQueue((key) => this.reconcile(key));
    this.unsubscribe = store.onChange((event, info) => {
      const meta = event.object.metadata;
      if (info.resource === "deployments" && info.group === "apps")
        this.queue.add(`${meta.namespace}/${meta.name}`);
      else if (info.resource === "replicasets" && info.group === "apps") {
        const owner = controllerOf(event.object);
        if (owner?.kind === "Deployment") this.queue.add(`${meta.namespace}/${owner.name}`);
      } else if (info.resource === "pods" && !info.group) {
        // Pod readiness changes reach the Deployment through its ReplicaSet's status, but the
        // pod's owner chain is cheap to follow and keeps the Deployment's status fresh.
        const owner = controllerOf(event.object);
        if (owner?.kind !== "ReplicaSet") return;
        const rs = store.get(RS, meta.namespace, owner.name);
        const deployment = rs && controllerOf(rs);
        if (deployment?.kind === "Deployment")
          this.queue.add(`${meta.namespace}/${deployment.name}`);
      }
    });
    for (const d of store.objects(DEPLOY))
      this.queue.add(`${d.metadata.namespace}/${d.metadata.name}`);
  }

  stop(): void {
    this.unsubscribe();
    this.queue.stop();
  }

  private reconcile(key: string): void {
    const [namespace, name] = key.split("/") as [string, string];
    const d = this.store.get<IDeployment & KubeObject>(DEPLOY, namespace, name) as
      | Deployment
      | undefined;
    if (!d || d.metadata.deletionTimestamp) return;
    const spec = d.spec!;
    const desired = spec.replicas ?? 1;
    const template = spec.template;
    const hash = templateHash(template);
    const sets = owned(this.store, d.metadata.uid!, RS) as ReplicaSet[];
    let newRS = sets.find((rs) => rs.metadata.labels?.[HASH] === hash);
    const olds = sets.filter((rs) => rs !== newRS);
    const rolling = spec.strategy?.type !== "Recreate";
    const maxSurge = rolling
      ? scaledValue(spec.strategy?.rollingUpdate?.maxSurge ?? "25%", desired, true)
      : 0;
    let maxUnavailable = rolling
      ? scaledValue(spec.strategy?.rollingUpdate?.maxUnavailable ?? "25%", desired, false)
      : desired;
    if (rolling && maxSurge === 0 && maxUnavailable === 0) maxUnavailable = 1;
    const podsOf = (rs: ReplicaSet) => ownedPods(this.store, rs.metadata.uid!).filter(isActive);
    const readyOf = (rs: ReplicaSet) => podsOf(rs).filter(isReady).length;
    const replicasOf = (rs: ReplicaSet) => rs.spec?.replicas ?? 0;
    let created = false;

    if (!spec.paused) {
      const oldTotal = olds.reduce((n, rs) => n + replicasOf(rs), 0);
      let newReplicas = newRS ? replicasOf(newRS) : 0;
      const oldsActive = olds.reduce((n, rs) => n + podsOf(rs).length, 0);
      if (!rolling) newReplicas = oldTotal > 0 || oldsActive > 0 ? 0 : desired;
      else if (newReplicas > desired) newReplicas = desired;
      else if (newReplicas < desired) {
        const allowed = desired + maxSurge - (oldTotal + newReplicas);
        if (allowed > 0) newReplicas = Math.min(desired, newReplicas + allowed);
      }
      if (!newRS) {
        const revision =
          1 + Math.max(0, ...sets.map((rs) => Number(rs.metadata.annotations?.[REVISION] ?? 0)));
        const labels = { ...template?.metadata?.labels, [HASH]: hash };
        newRS = this.store.create(
          RS,
          {
            apiVersion: "apps/v1",
            kind: "ReplicaSet",
            metadata: {
              name: `${name}-${hash}`,
              namespace,
              labels,
              annotations: {
                "deployment.kubernetes.io/desired-replicas": String(desired),
                "deployment.kubernetes.io/max-replicas": String(desired + maxSurge),
                [REVISION]: String(revision),
              },
              ownerReferences: [
                controllerRef(d as Stored<KubeObject & { apiVersion: string; kind: string }>),
              ],
            },
            spec: {
              replicas: newReplicas,
              ...(spec.minReadySeconds ? { minReadySeconds: spec.minReadySeconds } : {}),
              selector: {
                ...clone(spec.selector),
                matchLabels: { ...spec.selector.matchLabels, [HASH]: hash },
              },
              template: { ...clone(template), metadata: { ...clone(template?.metadata), labels } },
            },
          },
          { namespace },
        ) as ReplicaSet;
        created = true;
      } else if (replicasOf(newRS) !== newReplicas) this.scale(newRS, newReplicas, desired);

      // Scale old ReplicaSets down as far as availability allows.
      let reduce = 0;
      if (!rolling) reduce = oldTotal;
      else if (oldTotal > 0) {
        const minAvailable = desired - maxUnavailable;
        const newReady = readyOf(newRS);
        const available = newReady + olds.reduce((n, rs) => n + readyOf(rs), 0);
        const total = oldTotal + newReplicas;
        const newUnavailable = newReplicas - newReady;
        const maxScaledDown = total - minAvailable - newUnavailable;
        if (maxScaledDown > 0) {
          const oldUnhealthy = olds.reduce(
            (n, rs) => n + Math.max(0, replicasOf(rs) - readyOf(rs)),
            0,
          );
          const cleanup = Math.min(oldUnhealthy, maxScaledDown);
          reduce = Math.min(
            oldTotal,
            cleanup + Math.max(0, Math.min(maxScaledDown - cleanup, available - minAvailable)),
          );
        }
      }
      for (const rs of [...olds].sort((a, b) =>
        (a.metadata.creationTimestamp ?? "").localeCompare(b.metadata.creationTimestamp ?? ""),
      )) {
        if (reduce <= 0) break;
        const take = Math.min(reduce, replicasOf(rs));
        if (take > 0) this.scale(rs, replicasOf(rs) - take, desired);
        reduce -= take;
      }
      this.cleanUp(olds, spec.revisionHistoryLimit ?? 10);
    }

    // Status.
    const fresh = owned(this.store, d.metadata.uid!, RS) as ReplicaSet[];
    const current = fresh.find((rs) => rs.metadata.labels?.[HASH] === hash);
    const pods = fresh.flatMap(podsOf);
    const updated = current ? podsOf(current) : [];
    const ready = pods.filter(isReady).length;
    const minAvailable = desired - maxUnavailable;
    const complete =
      updated.length === desired &&
      pods.length === desired &&
      updated.filter(isReady).length === desired;
    const rsName = current?.metadata.name ?? `${name}-${hash}`;
    const counts = {
      observedGeneration: d.metadata.generation,
      replicas: pods.length,
      updatedReplicas: updated.length,
      readyReplicas: ready,
      availableReplicas: ready,
      unavailableReplicas: Math.max(0, desired - ready),
    };
    const previous = (d.status ?? {}) as Record<string, unknown>;
    const oldConditions = (previous.conditions ?? []) as Condition[];
    const progressed = !jsonEqual(
      { updated: counts.updatedReplicas, ready, replicas: counts.replicas },
      {
        updated: previous.updatedReplicas,
        ready: previous.readyReplicas,
        replicas: previous.replicas,
      },
    );
    const now = nowTime();
    const condition = (
      type: string,
      status: string,
      reason: string,
      message: string,
      touch: boolean,
    ): Condition => {
      const old = oldConditions.find((c) => c.type === type);
      const same = old && old.status === status;
      return {
        type,
        status,
        lastUpdateTime: same && old.reason === reason && !touch ? old.lastUpdateTime : now,
        lastTransitionTime: same ? old.lastTransitionTime : now,
        reason,
        message,
      };
    };
    const available =
      ready >= minAvailable
        ? condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            false,
          )
        : condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            false,
          );
    const oldProgressing = oldConditions.find((c) => c.type === "Progressing");
    const deadline = (spec.progressDeadlineSeconds ?? 600) * 1000 * this.timeScale;
    let progressing: Condition;
    if (spec.paused)
      progressing = condition(
        "Progressing",
        "Unknown",
        "DeploymentPaused",
        "Deployment is paused",
        false,
      );
    else if (complete)
      progressing = condition(
        "Progressing",
        "True",
        "NewReplicaSetAvailable",
        `ReplicaSet "${rsName}" has successfully progressed.`,
        false,
      );
    else if (created)
      progressing = condition(
        "Progressing",
        "True",
        "NewReplicaSetCreated",
        `Created new replica set "${rsName}"`,
        true,
      );
    else if (
      !progressed &&
      oldProgressing &&
      (oldProgressing.reason === "ProgressDeadlineExceeded" ||
        Date.now() - Date.parse(oldProgressing.lastUpdateTime) >= deadline)
    )
      progressing = condition(
        "Progressing",
        "False",
        "ProgressDeadlineExceeded",
        `ReplicaSet "${rsName}" has timed out progressing.`,
        false,
      );
    else
      progressing = condition(
        "Progressing",
        "True",
        "ReplicaSetUpdated",
        `ReplicaSet "${rsName}" is progressing.`,
        progressed,
      );
    if (!complete && !spec.paused && progressing.reason !== "ProgressDeadlineExceeded") {
      const since = Date.now() - Date.parse(progressing.lastUpdateTime);
      this.queue.addAfter(key, Math.max(10, deadline - since + 5));
    }
    const status = { ...counts, conditions: [available, progressing] };
    if (!jsonEqual({ ...previous, ...status }, previous))
      this.store.mutate(
        DEPLOY,
        namespace,
        name,
        (draft) => {
          draft.status = { ...(draft.status as object), ...status };
        },
        { subresource: "status" },
      );
  }

  private scale(rs: ReplicaSet, replicas: number, desired: number): void {
    this.store.mutate(RS, rs.metadata.namespace, rs.metadata.name!, (draft) => {
      (draft.spec as { replicas: number }).replicas = replicas;
      draft.metadata.annotations = {
        ...draft.metadata.annotations,
        "deployment.kubernetes.io/desired-replicas": String(desired),
      };
    });
  }

  /** Old ReplicaSets scaled to zero beyond revisionHistoryLimit are deleted, oldest first. */
  private cleanUp(olds: ReplicaSet[], limit: number): void {
    const idle = olds
      .filter(
        (rs) =>
          (rs.spec?.replicas ?? 0) === 0 && ownedPods(this.store, rs.metadata.uid!).length === 0,
      )
      .sort(
        (a, b) =>
          Number(a.metadata.annotations?.[REVISION] ?? 0) -
          Number(b.metadata.annotations?.[REVISION] ?? 0),
      );
    for (const rs of idle.slice(0, Math.max(0, idle.length - limit)))
      this.store.delete(RS, rs.metadata.namespace, rs.metadata.name!, {
        propagationPolicy: "Background",
      });
  }
}
