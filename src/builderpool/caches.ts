// The caches the pool controller reads: the shared ones (pools, the operator's Secrets and
// ConfigMaps) and its own children's kinds, by the managed-by label, nodes' labels, and the
// operator's pods, of which it reads the builders' statuses (why a builder crash-loops).
import type {
  KubernetesObject,
  V1ConfigMap,
  V1Deployment,
  V1Node,
  V1Pod,
  V1Secret,
  V1Service,
  V1StatefulSet,
} from "@kubernetes/client-node";
import { MANAGED_SELECTOR, type SharedCaches } from "../caches.ts";
import { COMPONENTS, LABELS } from "../naming.ts";
import { RESOURCES } from "../runtime/client.ts";
import type { Informer } from "../runtime/informer.ts";
import type { Manager } from "../runtime/manager.ts";
import { labelsOnly } from "../runtime/transforms.ts";

export interface PoolCaches {
  pools: Informer<KubernetesObject>;
  secrets: Informer<V1Secret>;
  configMaps: Informer<V1ConfigMap>;
  services: Informer<V1Service>;
  deployments: Informer<V1Deployment>;
  statefulSets: Informer<V1StatefulSet>;
  podDisruptionBudgets: Informer<KubernetesObject>;
  networkPolicies: Informer<KubernetesObject>;
  nodes: Informer<V1Node>;
  /** The operator's pods; the pool controller reads its builders by BUILDERS_BY_POOL. */
  pods: Informer<V1Pod>;
}

/** Builder pods by their pool, `<namespace>/<pool>`. */
export const BUILDERS_BY_POOL = "builders-by-pool";

/** The pool key (`<namespace>/<name>`) of a builder pod; none for other pods. */
export function poolOfBuilder(pod: KubernetesObject): string[] {
  const labels = pod.metadata?.labels ?? {};
  if (labels[LABELS.component] !== COMPONENTS.builder || !labels[LABELS.pool]) return [];
  return [`${pod.metadata?.namespace}/${labels[LABELS.pool]}`];
}

export function poolCaches(manager: Manager, shared: SharedCaches): PoolCaches {
  const managed = { labelSelector: MANAGED_SELECTOR };
  return {
    ...shared,
    services: manager.informer<V1Service>(RESOURCES.service, managed),
    deployments: manager.informer<V1Deployment>(RESOURCES.deployment, managed),
    statefulSets: manager.informer<V1StatefulSet>(RESOURCES.statefulSet, managed),
    podDisruptionBudgets: manager.informer(RESOURCES.podDisruptionBudget, managed),
    networkPolicies: manager.informer(RESOURCES.networkPolicy, managed),
    // Only the labels of nodes matter (which architectures exist).
    nodes: manager.informer<V1Node>(RESOURCES.node, { namespaces: [], transform: labelsOnly }),
    pods: builderPods(manager),
  };
}

/**
 * The operator's pods, the one informer both controllers read: the manager hands out one per
 * resource, so where the build controller's caches were made first (src/operator.ts) this is
 * theirs, which keeps builder pods' statuses whole.
 */
function builderPods(manager: Manager): Informer<V1Pod> {
  const pods = manager.informer<V1Pod>(RESOURCES.pod, { labelSelector: MANAGED_SELECTOR });
  pods.addIndex(BUILDERS_BY_POOL, poolOfBuilder);
  return pods;
}
