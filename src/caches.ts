// The caches both controllers read, built once by the composition root (src/operator.ts) and
// handed to each: BuilderPools, and the operator's own Secrets and ConfigMaps (those with its
// managed-by label). Each controller adds the caches only it reads (src/builderpool/caches.ts,
// src/imagebuild/caches.ts).
import type { KubernetesObject, V1ConfigMap, V1Secret } from "@kubernetes/client-node";
import { BUILDER_POOL_RESOURCE } from "./api/resources.ts";
import { COMPONENTS, LABELS, MANAGED_BY } from "./naming.ts";
import { RESOURCES } from "./runtime/client.ts";
import type { Informer } from "./runtime/informer.ts";
import type { Manager } from "./runtime/manager.ts";

/** Selects the objects the operator made: every child it caches carries this label. */
export const MANAGED_SELECTOR = `${LABELS.managedBy}=${MANAGED_BY}`;

export interface SharedCaches {
  pools: Informer<KubernetesObject>;
  secrets: Informer<V1Secret>;
  configMaps: Informer<V1ConfigMap>;
}

/**
 * Secrets as the shared cache keeps them. A build's client certificate Secret (one per build,
 * thousands of them) is only ever looked up for its existence, so its data is dropped; the
 * pools' CA and server Secrets, which are read, are kept whole.
 */
export function slimSecret(secret: V1Secret): V1Secret {
  if (secret.metadata?.labels?.[LABELS.component] !== COMPONENTS.build) return secret;
  const { data: _data, stringData: _stringData, ...kept } = secret;
  return kept;
}

export function sharedCaches(manager: Manager): SharedCaches {
  const managed = { labelSelector: MANAGED_SELECTOR };
  return {
    pools: manager.informer(BUILDER_POOL_RESOURCE),
    secrets: manager.informer<V1Secret>(RESOURCES.secret, { ...managed, transform: slimSecret }),
    configMaps: manager.informer<V1ConfigMap>(RESOURCES.configMap, managed),
  };
}
