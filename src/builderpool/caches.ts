// The caches the pool controller reads: the shared ones (pools, the operator's Secrets and
// ConfigMaps) and its own children's kinds, by the managed-by label, and nodes' labels.
import type {
  KubernetesObject,
  V1ConfigMap,
  V1Deployment,
  V1Node,
  V1Secret,
  V1Service,
  V1StatefulSet,
} from "@kubernetes/client-node";
import { MANAGED_SELECTOR, type SharedCaches } from "../caches.ts";
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
  };
}
