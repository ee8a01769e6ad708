// The garbage collector and the namespace controller of kube-controller-manager, reduced to
// what they do to objects: dependents of a deleted owner are deleted (background), an owner
// deleted in the foreground waits under the `foregroundDeletion` finalizer until its blocking
// dependents are gone, an orphaning delete strips the owner references first; a deleted
// namespace is emptied, then finalized.
import type { KubeObject, OwnerReference, Stored } from "./objects.ts";
import { clone, objectKey } from "./objects.ts";
import { WorkQueue } from "./sim/queue.ts";
import { KubeError } from "./status.ts";
import type { Store, StoreEvent, Table } from "./store.ts";

const ORPHAN = "orphan";
const FOREGROUND = "foregroundDeletion";

type OwnerState = "solid" | "absent" | "waiting";

export class GarbageCollector {
  private readonly store: Store;
  private readonly queue: WorkQueue;
  private readonly unsubscribe: () => void;

  constructor(store: Store) {
    this.store = store;
    this.queue = new WorkQueue((key) => this.process(key));
    this.unsubscribe = store.onChange((event) => this.observe(event));
  }

  stop(): void {
    this.unsubscribe();
    this.queue.stop();
  }

  idle(): Promise<void> {
    return this.queue.idle();
  }

  private observe(event: StoreEvent): void {
    const meta = event.object.metadata;
    if (event.type === "DELETED") {
      for (const { table, object } of this.store.dependentsOf(meta.uid!))
        this.queue.add(
          `dependent:${table.id}:${objectKey(object.metadata.namespace, object.metadata.name!)}`,
        );
    } else {
      if (meta.deletionTimestamp && meta.finalizers?.includes(ORPHAN))
        this.queue.add(`orphan:${meta.uid}`);
      if (meta.deletionTimestamp && meta.finalizers?.includes(FOREGROUND))
        this.queue.add(`foreground:${meta.uid}`);
      const table = this.store.tableForKind(event.object.apiVersion!, event.object.kind!);
      for (const ref of meta.ownerReferences ?? []) {
        const owner = this.store.byUid(ref.uid);
        if (!owner && table)
          this.queue.add(`dependent:${table.id}:${objectKey(meta.namespace, meta.name!)}`);
      }
    }
    // A dependent's change may unblock an owner that waits for its dependents.
    for (const ref of (event.previous ?? event.object).metadata.ownerReferences ?? []) {
      const owner = this.store.byUid(ref.uid);
      if (owner?.object.metadata.finalizers?.includes(FOREGROUND))
        this.queue.add(`foreground:${ref.uid}`);
    }
  }

  private process(key: string): void {
    const [kind, ...rest] = key.split(":");
    if (kind === "dependent") {
      const [tableId, ...objectKeyParts] = rest;
      this.attemptToDelete(tableId!, objectKeyParts.join(":"));
    } else if (kind === "orphan") this.orphan(rest[0]!);
    else if (kind === "foreground") this.foreground(rest[0]!);
  }

  private ownerState(ref: OwnerReference, dependent: Stored): OwnerState {
    const found = this.store.byUid(ref.uid);
    if (!found) return "absent";
    const { table, object } = found;
    if (object.kind !== ref.kind || object.metadata.name !== ref.name) return "absent";
    // The collector looks a namespaced owner up in the dependent's namespace.
    if (table.info.namespaced && object.metadata.namespace !== dependent.metadata.namespace)
      return "absent";
    if (object.metadata.deletionTimestamp && object.metadata.finalizers?.includes(FOREGROUND))
      return "waiting";
    return "solid";
  }

  /** attemptToDeleteItem: delete a dependent whose owners are all gone or deleting in the foreground. */
  private attemptToDelete(tableId: string, key: string): void {
    const table = this.store.findTable(tableId);
    const object = table?.objects.get(key);
    if (!table || !object) return;
    const refs = object.metadata.ownerReferences ?? [];
    if (refs.length === 0) return;
    const states = refs.map((ref) => this.ownerState(ref, object));
    if (states.includes("solid")) {
      if (states.includes("absent")) {
        // Some owners remain: only the dangling references go.
        this.store.mutate(
          table.info,
          object.metadata.namespace,
          object.metadata.name!,
          (draft: KubeObject) => {
            draft.metadata.ownerReferences = (draft.metadata.ownerReferences ?? []).filter(
              (ref) => this.ownerState(ref, object) !== "absent",
            );
          },
        );
      }
      return;
    }
    if (object.metadata.deletionTimestamp) return;
    const hasDependents = this.store.dependentsOf(object.metadata.uid!).length > 0;
    const policy = states.includes("waiting") && hasDependents ? "Foreground" : "Background";
    this.delete(table, object, policy);
  }

  private delete(table: Table, object: Stored, policy: "Foreground" | "Background"): void {
    try {
      this.store.delete(table.info, object.metadata.namespace, object.metadata.name!, {
        propagationPolicy: policy,
        preconditions: { uid: object.metadata.uid! },
      });
    } catch (error) {
      if (!(error instanceof KubeError && (error.code === 404 || error.code === 409))) throw error;
    }
  }

  private foreground(uid: string): void {
    const owner = this.store.byUid(uid);
    if (
      !owner?.object.metadata.deletionTimestamp ||
      !owner.object.metadata.finalizers?.includes(FOREGROUND)
    )
      return;
    let blocking = 0;
    for (const { table, object } of this.store.dependentsOf(uid)) {
      const ref = object.metadata.ownerReferences?.find((r) => r.uid === uid);
      if (ref?.blockOwnerDeletion) blocking++;
      if (!object.metadata.deletionTimestamp)
        this.attemptToDelete(table.id, objectKey(object.metadata.namespace, object.metadata.name!));
    }
    if (blocking === 0) this.removeFinalizer(owner.table, owner.object, FOREGROUND);
  }

  private orphan(uid: string): void {
    const owner = this.store.byUid(uid);
    if (
      !owner?.object.metadata.deletionTimestamp ||
      !owner.object.metadata.finalizers?.includes(ORPHAN)
    )
      return;
    for (const { table, object } of this.store.dependentsOf(uid)) {
      this.store.mutate(
        table.info,
        object.metadata.namespace,
        object.metadata.name!,
        (draft: KubeObject) => {
          const refs = (draft.metadata.ownerReferences ?? []).filter((ref) => ref.uid !== uid);
          if (refs.length) draft.metadata.ownerReferences = refs;
          else delete draft.metadata.ownerReferences;
        },
      );
    }
    this.removeFinalizer(owner.table, owner.object, ORPHAN);
  }

  private removeFinalizer(table: Table, object: Stored, finalizer: string): void {
    this.store.mutate(
      table.info,
      object.metadata.namespace,
      object.metadata.name!,
      (draft: KubeObject) => {
        const rest = (draft.metadata.finalizers ?? []).filter((f) => f !== finalizer);
        if (rest.length) draft.metadata.finalizers = rest;
        else delete draft.metadata.finalizers;
      },
    );
  }
}

/** Empties a namespace being deleted, then clears its `kubernetes` finalizer. */
export class NamespaceController {
  private readonly store: Store;
  private readonly queue: WorkQueue;
  private readonly unsubscribe: () => void;

  constructor(store: Store) {
    this.store = store;
    this.queue = new WorkQueue((name) => this.reconcile(name));
    this.unsubscribe = store.onChange((event, info) => {
      const meta = event.object.metadata;
      if (info.resource === "namespaces" && !info.group && meta.deletionTimestamp)
        this.queue.add(meta.name!);
      else if (event.type === "DELETED" && meta.namespace) {
        const ns = store.get("namespaces", undefined, meta.namespace);
        if (ns?.metadata.deletionTimestamp) this.queue.add(meta.namespace);
      }
    });
  }

  stop(): void {
    this.unsubscribe();
    this.queue.stop();
  }

  private reconcile(name: string): void {
    const ns = this.store.get("namespaces", undefined, name);
    if (!ns?.metadata.deletionTimestamp) return;
    let remaining = 0;
    for (const info of this.store.resources()) {
      if (!info.namespaced) continue;
      const table = this.store.table(info);
      const objects = table.byNamespace.get(name);
      if (!objects) continue;
      for (const object of [...objects.values()]) {
        remaining++;
        if (object.metadata.deletionTimestamp) continue;
        try {
          this.store.delete(info, name, object.metadata.name!, { propagationPolicy: "Background" });
        } catch (error) {
          if (!(error instanceof KubeError && error.code === 404)) throw error;
        }
      }
    }
    if (remaining > 0) return;
    const next = clone(ns);
    next.spec = { ...(next.spec as object), finalizers: [] };
    this.store.update("namespaces", next, { subresource: "finalize" });
  }
}
