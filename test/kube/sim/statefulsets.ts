// The StatefulSet controller: pods `<name>-<ordinal>` with stable identity (hostname,
// subdomain, pod-name and pod-index labels), a PersistentVolumeClaim per volumeClaimTemplate
// and ordinal (`<claim>-<name>-<ordinal>`, kept after the pods by default), OrderedReady or
// Parallel management, and rolling updates from the highest ordinal down. Also the
// PersistentVolumeClaim binder and protection controller: claims bind at once, and a deleted
// claim stays (finalizer `kubernetes.io/pvc-protection`) while a pod uses it.
import type { IStatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import type { IPersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import type { IPod } from "kubernetes-models/v1/Pod";
import { clone, jsonEqual, type KubeObject, type Stored } from "../objects.ts";
import { KubeError } from "../status.ts";
import type { Store } from "../store.ts";
import { WorkQueue } from "./queue.ts";
import {
  controllerOf,
  controllerRef,
  isActive,
  isReady,
  isTerminal,
  podFromTemplate,
  templateHash,
} from "./workloads.ts";

type StatefulSet = Stored<IStatefulSet & KubeObject>;
type Pod = Stored<IPod & KubeObject>;

const STS = "statefulsets.apps";
const REVISION = "controller-revision-hash";

export class StatefulSetController {
  private readonly store: Store;
  private readonly queue: WorkQueue;
  private readonly unsubscribe: () => void;

  constructor(store: Store) {
    this.store = store;
    this.queue = new WorkQueue((key) => this.reconcile(key));
    this.unsubscribe = store.onChange((event, info) => {
      const meta = event.object.metadata;
      if (info.resource === "statefulsets" && info.group === "apps")
        this.queue.add(`${meta.namespace}/${meta.name}`);
      else if (info.resource === "pods" && !info.group) {
        const owner = controllerOf(event.object);
        if (owner?.kind === "StatefulSet") this.queue.add(`${meta.namespace}/${owner.name}`);
      } else if (info.resource === "persistentvolumeclaims" && event.type === "DELETED") {
        // A pod waiting for a claim that was being deleted can now get a new one.
        for (const sts of store.objects(STS, meta.namespace))
          this.queue.add(`${meta.namespace}/${sts.metadata.name}`);
      }
    });
    for (const sts of store.objects(STS))
      this.queue.add(`${sts.metadata.namespace}/${sts.metadata.name}`);
  }

  stop(): void {
    this.unsubscribe();
    this.queue.stop();
  }

  private reconcile(key: string): void {
    const [namespace, name] = key.split("/") as [string, string];
    const sts = this.store.get<IStatefulSet & KubeObject>(STS, namespace, name) as
      | StatefulSet
      | undefined;
    if (!sts || sts.metadata.deletionTimestamp) return;
    const spec = sts.spec!;
    const replicas = spec.replicas ?? 1;
    const revision = `${name}-${templateHash(spec.template)}`;
    const parallel = spec.podManagementPolicy === "Parallel";
    const podAt = (ordinal: number) =>
      this.store.get<IPod & KubeObject>("pods", namespace, `${name}-${ordinal}`) as Pod | undefined;
    const ownedBy = (pod: Pod | undefined) =>
      pod?.metadata.ownerReferences?.some((r) => r.uid === sts.metadata.uid);

    // Failed pods are deleted and recreated.
    for (let i = 0; i < replicas; i++) {
      const pod = podAt(i);
      if (pod && ownedBy(pod) && isTerminal(pod) && !pod.metadata.deletionTimestamp)
        this.store.delete("pods", namespace, pod.metadata.name!, {
          preconditions: { uid: pod.metadata.uid! },
        });
    }
    // Create missing pods in order.
    for (let i = 0; i < replicas; i++) {
      const pod = podAt(i);
      if (!pod) {
        // As the real controller: no pod while one of its claims is being deleted ("pvc ... is
        // being deleted"); it would mount a claim on its way out and keep it from going.
        if (!this.ensureClaims(sts, i)) {
          if (!parallel) break;
          continue;
        }
        this.store.create("pods", this.podFor(sts, i, revision), { namespace });
        if (!parallel) break;
        continue;
      }
      if (!parallel && !(isReady(pod) && ownedBy(pod))) break;
    }
    // Scale down from the highest ordinal.
    const extra: Pod[] = [];
    for (const pod of this.store.objects<IPod & KubeObject>("pods", namespace) as Pod[]) {
      if (!ownedBy(pod)) continue;
      const ordinal = Number(pod.metadata.name!.slice(name.length + 1));
      if (ordinal >= replicas && !pod.metadata.deletionTimestamp) extra.push(pod);
    }
    extra.sort((a, b) =>
      b.metadata.name!.localeCompare(a.metadata.name!, undefined, { numeric: true }),
    );
    for (const pod of parallel ? extra : extra.slice(0, 1))
      this.store.delete("pods", namespace, pod.metadata.name!, {
        preconditions: { uid: pod.metadata.uid! },
      });
    // Rolling update: one outdated pod at a time, highest ordinal first, once all are ready.
    const pods = Array.from({ length: replicas }, (_, i) => podAt(i)).filter(
      (p): p is Pod => !!p && !!ownedBy(p),
    );
    const partition = spec.updateStrategy?.rollingUpdate?.partition ?? 0;
    if (
      spec.updateStrategy?.type !== "OnDelete" &&
      extra.length === 0 &&
      pods.length === replicas &&
      pods.every((pod) => isReady(pod))
    ) {
      for (let i = replicas - 1; i >= partition; i--) {
        const pod = podAt(i)!;
        if (pod.metadata.labels?.[REVISION] !== revision) {
          this.store.delete("pods", namespace, pod.metadata.name!, {
            preconditions: { uid: pod.metadata.uid! },
          });
          break;
        }
      }
    }
    const active = pods.filter(isActive);
    const updated = active.filter((pod) => pod.metadata.labels?.[REVISION] === revision);
    const ready = active.filter(isReady).length;
    const status = {
      observedGeneration: sts.metadata.generation,
      replicas: active.length,
      readyReplicas: ready,
      currentReplicas: updated.length,
      updatedReplicas: updated.length,
      availableReplicas: ready,
      currentRevision:
        updated.length === active.length
          ? revision
          : ((sts.status as { currentRevision?: string })?.currentRevision ?? revision),
      updateRevision: revision,
      collisionCount: 0,
    };
    const previous = (sts.status ?? {}) as Record<string, unknown>;
    if (!jsonEqual({ ...previous, ...status }, previous))
      this.store.mutate(
        STS,
        namespace,
        name,
        (draft) => {
          draft.status = { ...(draft.status as object), ...status };
        },
        { subresource: "status" },
      );
  }

  private claimName(sts: StatefulSet, template: string, ordinal: number): string {
    return `${template}-${sts.metadata.name}-${ordinal}`;
  }

  /** Creates the ordinal's missing claims; false while one of them is being deleted. */
  private ensureClaims(sts: StatefulSet, ordinal: number): boolean {
    const namespace = sts.metadata.namespace!;
    const deleteWithSet = sts.spec?.persistentVolumeClaimRetentionPolicy?.whenDeleted === "Delete";
    let usable = true;
    for (const template of sts.spec?.volumeClaimTemplates ?? []) {
      const name = this.claimName(sts, template.metadata?.name ?? "", ordinal);
      const existing = this.store.get("persistentvolumeclaims", namespace, name);
      if (existing?.metadata.deletionTimestamp) usable = false;
      if (existing) continue;
      const { status: _status, ...claim } = clone(template) as KubeObject;
      this.store.create(
        "persistentvolumeclaims",
        {
          ...claim,
          apiVersion: "v1",
          kind: "PersistentVolumeClaim",
          metadata: {
            name,
            namespace,
            labels: { ...template.metadata?.labels, ...sts.spec?.selector.matchLabels },
            ...(deleteWithSet
              ? {
                  ownerReferences: [
                    controllerRef(sts as Stored<KubeObject & { apiVersion: string; kind: string }>),
                  ],
                }
              : {}),
          },
        },
        { namespace },
      );
    }
    return usable;
  }

  private podFor(sts: StatefulSet, ordinal: number, revision: string): KubeObject {
    const name = `${sts.metadata.name}-${ordinal}`;
    const template = sts.spec?.template;
    const volumes = [...(clone(template?.spec?.volumes) ?? [])];
    for (const claim of sts.spec?.volumeClaimTemplates ?? []) {
      const volume = claim.metadata?.name ?? "";
      if (volumes.some((v) => v.name === volume)) continue;
      volumes.push({
        name: volume,
        persistentVolumeClaim: { claimName: this.claimName(sts, volume, ordinal) },
      });
    }
    return podFromTemplate(
      template,
      sts as Stored<KubeObject & { apiVersion: string; kind: string }>,
      { name },
      {
        labels: {
          [REVISION]: revision,
          "statefulset.kubernetes.io/pod-name": name,
          "apps.kubernetes.io/pod-index": String(ordinal),
        },
        spec: {
          hostname: name,
          ...(sts.spec?.serviceName ? { subdomain: sts.spec.serviceName } : {}),
          ...(volumes.length ? { volumes } : {}),
        },
      },
    );
  }
}

const PROTECTION = "kubernetes.io/pvc-protection";

/** Binds claims at once and keeps a deleted claim while a pod still uses it. */
export class ClaimController {
  private readonly store: Store;
  private readonly queue: WorkQueue;
  private readonly unsubscribe: () => void;

  constructor(store: Store) {
    this.store = store;
    this.queue = new WorkQueue((key) => this.reconcile(key));
    this.unsubscribe = store.onChange((event, info) => {
      const meta = event.object.metadata;
      if (info.resource === "persistentvolumeclaims" && !info.group && event.type !== "DELETED")
        this.queue.add(`${meta.namespace}/${meta.name}`);
      else if (info.resource === "pods" && !info.group && event.type === "DELETED") {
        for (const volume of (event.object as Pod).spec?.volumes ?? []) {
          if (volume.persistentVolumeClaim)
            this.queue.add(`${meta.namespace}/${volume.persistentVolumeClaim.claimName}`);
        }
      }
    });
    for (const pvc of store.objects("persistentvolumeclaims"))
      this.queue.add(`${pvc.metadata.namespace}/${pvc.metadata.name}`);
  }

  stop(): void {
    this.unsubscribe();
    this.queue.stop();
  }

  private reconcile(key: string): void {
    const [namespace, name] = key.split("/") as [string, string];
    const claim = this.store.get<IPersistentVolumeClaim & KubeObject>(
      "persistentvolumeclaims",
      namespace,
      name,
    );
    if (!claim) return;
    if (claim.metadata.deletionTimestamp) {
      if (!claim.metadata.finalizers?.includes(PROTECTION)) return;
      const inUse = (this.store.objects<IPod & KubeObject>("pods", namespace) as Pod[]).some(
        (pod) =>
          !isTerminal(pod) &&
          pod.spec?.volumes?.some((v) => v.persistentVolumeClaim?.claimName === name),
      );
      if (inUse) return;
      this.store.mutate("persistentvolumeclaims", namespace, name, (draft) => {
        const rest = (draft.metadata.finalizers ?? []).filter((f) => f !== PROTECTION);
        if (rest.length) draft.metadata.finalizers = rest;
        else delete draft.metadata.finalizers;
      });
      return;
    }
    if (claim.status?.phase === "Bound") return;
    const volumeName = `pvc-${claim.metadata.uid}`;
    try {
      this.store.mutate("persistentvolumeclaims", namespace, name, (draft) => {
        (draft.spec as { volumeName?: string }).volumeName = volumeName;
        draft.metadata.annotations = {
          ...draft.metadata.annotations,
          "pv.kubernetes.io/bind-completed": "yes",
          "pv.kubernetes.io/bound-by-controller": "yes",
        };
      });
      this.store.mutate(
        "persistentvolumeclaims",
        namespace,
        name,
        (draft) => {
          const spec = draft.spec as {
            accessModes?: string[];
            resources?: { requests?: Record<string, string> };
          };
          draft.status = {
            phase: "Bound",
            accessModes: spec.accessModes ?? [],
            capacity: { storage: spec.resources?.requests?.storage ?? "1Gi" },
          };
        },
        { subresource: "status" },
      );
    } catch (error) {
      if (!(error instanceof KubeError && error.code === 404)) throw error;
    }
  }
}
