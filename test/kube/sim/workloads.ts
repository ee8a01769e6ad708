// Helpers the simulated workload controllers share: pods from templates with controller
// owner references, template hashes, and the owner/readiness questions they all ask.
import type { IPod } from "kubernetes-models/v1/Pod";
import { clone, isObject, type KubeObject, type Stored } from "../objects.ts";
import type { Store } from "../store.ts";

export interface Owner {
  apiVersion: string;
  kind: string;
  metadata: { name?: string; uid?: string; namespace?: string };
}

export function controllerRef(owner: Stored<Owner>) {
  return {
    apiVersion: owner.apiVersion,
    kind: owner.kind,
    name: owner.metadata.name!,
    uid: owner.metadata.uid!,
    controller: true,
    blockOwnerDeletion: true,
  };
}

interface Template {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: unknown;
}

/** A pod as a controller creates it from its template. */
export function podFromTemplate(
  template: Stored<Template> | undefined,
  owner: Stored<Owner>,
  naming: { name?: string; generateName?: string },
  extra: {
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    spec?: Record<string, unknown>;
  } = {},
): KubeObject {
  const t = clone(template ?? {}) as Template;
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      ...naming,
      namespace: owner.metadata.namespace,
      labels: { ...t.metadata?.labels, ...extra.labels },
      ...(t.metadata?.annotations || extra.annotations
        ? { annotations: { ...t.metadata?.annotations, ...extra.annotations } }
        : {}),
      ownerReferences: [controllerRef(owner)],
    },
    spec: { ...(isObject(t.spec) ? t.spec : {}), ...extra.spec },
  };
}

/** JSON with sorted keys, so equal objects hash equally. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (isObject(value))
    return `{${Object.keys(value)
      .filter((key) => value[key] !== undefined)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonicalJson(value[key])}`)
      .join(",")}}`;
  return JSON.stringify(value);
}

const SAFE = "bcdfghjklmnpqrstvwxz2456789";

/** A short hash of a pod template, spelled like rand.SafeEncodeString (pod-template-hash). */
export function templateHash(template: unknown): string {
  let hash = 0x811c9dc5;
  for (const char of canonicalJson(template)) {
    hash ^= char.charCodeAt(0);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  let out = "";
  let n = hash;
  do {
    out += SAFE[n % SAFE.length];
    n = Math.floor(n / SAFE.length);
  } while (n > 0);
  return out.padEnd(10, SAFE[0]).slice(0, 10);
}

type Pod = Stored<IPod & KubeObject>;

/** Pods a controller owns (controller owner reference to `uid`). */
export function ownedPods(store: Store, uid: string): Pod[] {
  return store
    .dependentsOf(uid)
    .filter(
      ({ table, object }) =>
        table.id === "pods" &&
        object.metadata.ownerReferences?.some((r) => r.uid === uid && r.controller),
    )
    .map(({ object }) => object as Pod);
}

export function owned(store: Store, uid: string, tableId: string): Stored[] {
  return store
    .dependentsOf(uid)
    .filter(
      ({ table, object }) =>
        table.id === tableId &&
        object.metadata.ownerReferences?.some((r) => r.uid === uid && r.controller),
    )
    .map(({ object }) => object);
}

export const isTerminal = (pod: Pod) =>
  pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed";
export const isActive = (pod: Pod) => !isTerminal(pod) && !pod.metadata.deletionTimestamp;
export const isReady = (pod: Pod) =>
  isActive(pod) &&
  (pod.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");

/** The controller owner reference of an object, if any. */
export function controllerOf(
  object: Stored,
): { kind: string; name: string; uid: string } | undefined {
  return object.metadata.ownerReferences?.find((ref) => ref.controller);
}

/** intstr: an int, or a percent of `total` rounded up or down. */
export function scaledValue(value: unknown, total: number, roundUp: boolean): number {
  if (typeof value === "number") return value;
  const text = String(value ?? "0");
  if (text.endsWith("%")) {
    const exact = (Number(text.slice(0, -1)) * total) / 100;
    return roundUp ? Math.ceil(exact) : Math.floor(exact);
  }
  return Number(text);
}
