// Informer transforms the controllers share: what a cache keeps of an object it reads little of.
import type { KubernetesObject } from "@kubernetes/client-node";
import { stableHash } from "./hash.ts";

/**
 * An object reduced to its name, uid and labels, for kinds whose labels are all that is read
 * (nodes: which architectures exist; namespaces: allowedNamespaces). The labels' hash stands in
 * for the resourceVersion, so the cache ignores every other change (a node's status changes
 * every few seconds) and hands on label changes only.
 */
export function labelsOnly<T extends KubernetesObject>(object: T): T {
  return {
    apiVersion: object.apiVersion,
    kind: object.kind,
    metadata: {
      name: object.metadata?.name,
      uid: object.metadata?.uid,
      resourceVersion: stableHash(object.metadata?.labels ?? {}),
      labels: object.metadata?.labels,
    },
  } as T;
}
