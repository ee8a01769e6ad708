// Everything a pool should own besides its certificates, as one pure function of the pool and
// what the reconciler read, and the inverse question: which owned children no longer belong.
// The reconciler: ensureCertificates → desiredPool → ensure each object (runtime/apply.ts,
// which writes only when the spec hash changed) → delete obsoleteChildren → poolStatus.
import type {
  KubernetesObject,
  V1ConfigMap,
  V1PodDisruptionBudget,
  V1Service,
} from "@kubernetes/client-node";
import type { BuilderPool } from "../api/resources.ts";
import { isControlledBy } from "../runtime/apply.ts";
import { configMap } from "./config.ts";
import type { PoolContext } from "./context.ts";
import { type NetworkPolicyObject, networkPolicy, podDisruptionBudget } from "./policy.ts";
import { builderService, headlessService } from "./services.ts";
import { assertBuildable } from "./validate.ts";
import { type BuilderWorkload, builderWorkload, desiredReplicas } from "./workload.ts";

export interface DesiredArchitecture {
  arch: string;
  replicas: number;
  workload: BuilderWorkload;
  service: V1Service;
  headlessService: V1Service;
  /** Only with more than one replica. */
  podDisruptionBudget?: V1PodDisruptionBudget;
}

export interface DesiredPool {
  configMap: V1ConfigMap;
  networkPolicy: NetworkPolicyObject;
  architectures: DesiredArchitecture[];
  /**
   * Every object above in the order to apply them: configuration and policy first, then the
   * Services (a StatefulSet names its headless Service), the workloads, the budgets.
   */
  objects: KubernetesObject[];
}

/**
 * Everything but the certificates. Throws SpecError (see validate.ts) for a pool whose
 * builders could not work, which the reconciler reports as InvalidSpec like a parse error.
 */
export function desiredPool(pool: BuilderPool, context: PoolContext): DesiredPool {
  assertBuildable(pool, context.serverVersion);
  const architectures = pool.spec.architectures.map((arch): DesiredArchitecture => {
    const replicas = desiredReplicas(arch, context);
    const budget = podDisruptionBudget(pool, arch, replicas);
    return {
      arch: arch.name,
      replicas,
      workload: builderWorkload(pool, arch, context),
      service: builderService(pool, arch),
      headlessService: headlessService(pool, arch),
      ...(budget ? { podDisruptionBudget: budget } : {}),
    };
  });
  const config = configMap(pool);
  const policy = networkPolicy(pool, context.operatorNamespace);
  return {
    configMap: config,
    networkPolicy: policy,
    architectures,
    objects: [
      config,
      policy,
      ...architectures.flatMap((entry) => [entry.service, entry.headlessService]),
      ...architectures.map((entry) => entry.workload.object),
      ...architectures.flatMap((entry) =>
        entry.podDisruptionBudget ? [entry.podDisruptionBudget] : [],
      ),
    ],
  };
}

/**
 * The kinds a pool owns per architecture or per replica count. Only these are ever obsolete;
 * the pool-wide children (CA and server Secrets, ConfigMap, NetworkPolicy) live as long as
 * the pool and go with it through garbage collection.
 */
export const PRUNABLE_KINDS = ["Deployment", "StatefulSet", "Service", "PodDisruptionBudget"];

export const childKey = (object: KubernetesObject) => `${object.kind}/${object.metadata?.name}`;

/**
 * Owned children to delete: of a prunable kind, controlled by this pool (by uid, so a
 * same-named object of someone else is never touched), and absent from the desired objects.
 * That covers a removed architecture (its workload, both Services, its budget), a budget no
 * longer needed at one replica, and the other workload kind after spec.cache.type changed.
 * `owned` must carry kind and metadata (informer caches strip apiVersion/kind from typed
 * lists; set them before calling).
 */
export function obsoleteChildren(
  pool: BuilderPool,
  desired: readonly KubernetesObject[],
  owned: readonly KubernetesObject[],
): KubernetesObject[] {
  const keep = new Set(desired.map(childKey));
  return owned.filter(
    (object) =>
      PRUNABLE_KINDS.includes(object.kind ?? "") &&
      isControlledBy(object, pool) &&
      !keep.has(childKey(object)),
  );
}
