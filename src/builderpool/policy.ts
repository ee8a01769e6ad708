// Who may reach the builders and how many may be down at once: the pool's NetworkPolicy, the
// PodDisruptionBudgets, and the namespace rule the ImageBuild controller must apply the same way
// when it admits a build (one function, so admission and the network agree).
import type {
  V1LabelSelector,
  V1NetworkPolicy,
  V1NetworkPolicyIngressRule,
  V1NetworkPolicyPeer,
  V1NetworkPolicySpec,
  V1PodDisruptionBudget,
} from "@kubernetes/client-node";
import type { ArchitectureSpec } from "../api/builderpool.ts";
import type { BuilderPool } from "../api/resources.ts";
import {
  BUILDKIT_PORT,
  COMPONENTS,
  LABELS,
  MANAGED_BY,
  networkPolicyName,
  pdbName,
} from "../naming.ts";
import { builderSelector, childMeta } from "./meta.ts";

/**
 * A NetworkPolicy as it goes on the wire. client-node's model names the ingress peers `_from`
 * (a TypeScript-side rename); the API server and the runtime's raw-JSON client use `from`.
 */
export type NetworkPolicyObject = Omit<V1NetworkPolicy, "spec"> & {
  spec: Omit<V1NetworkPolicySpec, "ingress"> & {
    ingress?: (Omit<V1NetworkPolicyIngressRule, "_from"> & { from?: V1NetworkPolicyPeer[] })[];
  };
};

export const NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name";

/**
 * The namespaces whose builds may use the pool besides its own: spec.allowedNamespaces when it
 * says anything. Absent, or an empty selector (which Kubernetes would read as "every
 * namespace"), admits no other namespace; the API documents that.
 */
export function allowedNamespaceSelector(pool: BuilderPool): V1LabelSelector | undefined {
  const selector = pool.spec.allowedNamespaces;
  const hasLabels = Object.keys(selector?.matchLabels ?? {}).length > 0;
  const hasExpressions = (selector?.matchExpressions ?? []).length > 0;
  if (!selector || (!hasLabels && !hasExpressions)) return undefined;
  return {
    ...(hasLabels ? { matchLabels: { ...selector.matchLabels } } : {}),
    ...(hasExpressions
      ? {
          matchExpressions: (selector.matchExpressions ?? []).map((expression) => ({
            key: expression.key,
            operator: expression.operator,
            ...(expression.values ? { values: [...expression.values] } : {}),
          })),
        }
      : {}),
  };
}

/** The pool's own namespace, by the label the API server puts on every namespace. */
export function ownNamespaceSelector(pool: BuilderPool): V1LabelSelector {
  return { matchLabels: { [NAMESPACE_NAME_LABEL]: pool.metadata.namespace } };
}

/** Whether a label selector matches a label set, with the Kubernetes semantics. */
export function selectorMatches(
  selector: V1LabelSelector,
  labels: Readonly<Record<string, string>>,
): boolean {
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) {
    if (labels[key] !== value) return false;
  }
  for (const { key, operator, values = [] } of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, key);
    const value = labels[key];
    switch (operator) {
      case "In":
        if (!has || !values.includes(value as string)) return false;
        break;
      case "NotIn":
        if (has && values.includes(value as string)) return false;
        break;
      case "Exists":
        if (!has) return false;
        break;
      case "DoesNotExist":
        if (has) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

/**
 * Whether builds in a namespace may use the pool. `labels` are the namespace's labels; the
 * kubernetes.io/metadata.name label is assumed even if the caller's copy lacks it.
 */
export function poolAdmitsNamespace(
  pool: BuilderPool,
  namespace: { name: string; labels?: Readonly<Record<string, string>> },
): boolean {
  if (namespace.name === pool.metadata.namespace) return true;
  const selector = allowedNamespaceSelector(pool);
  return (
    selector !== undefined &&
    selectorMatches(selector, { ...namespace.labels, [NAMESPACE_NAME_LABEL]: namespace.name })
  );
}

/**
 * The operator's pods, by the labels the chart gives them (its selector labels), which ask the
 * builders for their cache usage (src/builderpool/cache-usage.ts).
 */
export const OPERATOR_POD_LABELS = {
  "app.kubernetes.io/name": "buildfarm",
  "app.kubernetes.io/component": "operator",
} as const;

/**
 * Builders accept TCP 1234 only from build pods of this pool (buildPodLabels in naming.ts) in
 * the allowed namespaces, and, when `operatorNamespace` is given, from the operator's pods
 * there. Other ingress is denied; egress stays open (registries, git). Enforced only where the
 * cluster's network plugin implements NetworkPolicy.
 */
export function networkPolicy(pool: BuilderPool, operatorNamespace?: string): NetworkPolicyObject {
  const name = pool.metadata.name;
  const buildPods: V1LabelSelector = {
    matchLabels: {
      [LABELS.managedBy]: MANAGED_BY,
      [LABELS.component]: COMPONENTS.build,
      [LABELS.pool]: name,
      [LABELS.poolNamespace]: pool.metadata.namespace,
    },
  };
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: childMeta(pool, networkPolicyName(name)),
    spec: {
      podSelector: {
        matchLabels: { [LABELS.pool]: name, [LABELS.component]: COMPONENTS.builder },
      },
      policyTypes: ["Ingress"],
      ingress: [
        {
          // Each peer pairs a namespace selector with the build-pod selector: the pod AND its
          // namespace must match. The pool's own namespace is always a peer, as admission
          // always admits it (poolAdmitsNamespace).
          from: [
            ...[ownNamespaceSelector(pool), allowedNamespaceSelector(pool)]
              .filter((selector): selector is V1LabelSelector => selector !== undefined)
              .map((namespaceSelector) => ({ namespaceSelector, podSelector: buildPods })),
            ...(operatorNamespace
              ? [
                  {
                    namespaceSelector: {
                      matchLabels: { [NAMESPACE_NAME_LABEL]: operatorNamespace },
                    },
                    podSelector: { matchLabels: { ...OPERATOR_POD_LABELS } },
                  },
                ]
              : []),
          ],
          ports: [{ protocol: "TCP", port: BUILDKIT_PORT }],
        },
      ],
    },
  };
}

/**
 * At most one builder of an architecture down for voluntary disruptions (drains, upgrades),
 * when there is more than one. Not-ready builders may always be evicted, so a broken builder
 * never blocks a node drain.
 */
export function podDisruptionBudget(
  pool: BuilderPool,
  arch: ArchitectureSpec,
  replicas: number,
): V1PodDisruptionBudget | undefined {
  if (replicas <= 1) return undefined;
  return {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: childMeta(pool, pdbName(pool.metadata.name, arch.name), { arch: arch.name }),
    spec: {
      maxUnavailable: 1,
      selector: builderSelector(pool.metadata.name, arch.name),
      unhealthyPodEvictionPolicy: "AlwaysAllow",
    },
  };
}
