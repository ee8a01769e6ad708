// Metadata every child of a pool carries: its namespace, labels from naming.ts and a controller
// owner reference, so deleting the pool garbage-collects it and a restarted operator finds it.
import type { V1LabelSelector, V1ObjectMeta, V1OwnerReference } from "@kubernetes/client-node";
import type { BuilderPool } from "../api/resources.ts";
import { COMPONENTS, LABELS, poolLabels } from "../naming.ts";
import { ownerReference } from "../runtime/apply.ts";

export function poolOwnerReference(pool: BuilderPool): V1OwnerReference {
  if (!pool.metadata.uid) {
    throw new Error(
      `BuilderPool ${pool.metadata.namespace}/${pool.metadata.name} has no uid; read it from the API server before deriving its children`,
    );
  }
  return ownerReference(pool);
}

export function childMeta(
  pool: BuilderPool,
  name: string,
  options: { arch?: string; component?: string; annotations?: Record<string, string> } = {},
): V1ObjectMeta {
  return {
    name,
    namespace: pool.metadata.namespace,
    labels: poolLabels(pool.metadata.name, options.component ?? COMPONENTS.builder, options.arch),
    ...(options.annotations ? { annotations: options.annotations } : {}),
    ownerReferences: [poolOwnerReference(pool)],
  };
}

/**
 * The labels that pick one architecture's builder pods: the workload selector (immutable once
 * created, so it holds only what never changes), the Services' selector and the PDB's.
 */
export function builderSelectorLabels(pool: string, arch: string): Record<string, string> {
  return {
    [LABELS.pool]: pool,
    [LABELS.arch]: arch,
    [LABELS.component]: COMPONENTS.builder,
  };
}

export function builderSelector(pool: string, arch: string): V1LabelSelector {
  return { matchLabels: builderSelectorLabels(pool, arch) };
}
