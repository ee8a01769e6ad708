// Problems with a pool that the schema lets through but the builders would suffer from, in the
// same one-line-per-field form as parseBuilderPool, so the reconciler reports them the same way
// (Ready=False, InvalidSpec) instead of creating builders that cannot work.
import type { BuilderPool } from "../api/resources.ts";
import { SpecError } from "../api/resources.ts";
import { atLeast, type KubeVersion } from "./context.ts";
import { quantityToBytes } from "./quantity.ts";

const ARCH_LABEL = "kubernetes.io/arch";

function bytes(quantity: string | number): bigint | undefined {
  try {
    return quantityToBytes(quantity);
  } catch {
    return undefined;
  }
}

export function specProblems(pool: BuilderPool): string[] {
  const problems: string[] = [];
  const { cache, buildkit } = pool.spec;
  const size = bytes(cache.size);
  if (size === undefined || size === 0n) {
    problems.push("spec.cache.size: must be a positive size such as 20Gi");
  }
  const keep = bytes(buildkit.gc.keepStorage);
  if (keep === undefined) {
    problems.push("spec.buildkit.gc.keepStorage: must be a non-negative size such as 10Gi");
  } else if (buildkit.gc.enabled && size !== undefined && size > 0n && keep >= size) {
    problems.push(
      `spec.buildkit.gc.keepStorage: ${buildkit.gc.keepStorage} must be below spec.cache.size (${cache.size}); ${
        cache.type === "EmptyDir"
          ? "a builder whose cache outgrows its emptyDir is evicted"
          : "a builder whose cache fills its volume fails its builds"
      }. Leave room for the builds running between two collections.`,
    );
  }
  pool.spec.architectures.forEach((arch, index) => {
    const pinned = arch.nodeSelector?.[ARCH_LABEL];
    if (pinned !== undefined && pinned !== arch.name) {
      problems.push(
        `spec.architectures[${index}].nodeSelector: ${ARCH_LABEL}=${pinned} contradicts the architecture ${arch.name}; remove it, the operator pins ${ARCH_LABEL} itself`,
      );
    }
  });
  return problems;
}

/**
 * The first Kubernetes minor whose API server keeps a pod's hostUsers by default: the field
 * came in 1.25 behind the UserNamespacesSupport feature gate, off by default until 1.33, and
 * with the gate off the API server drops it without a word (pkg/api/pod dropDisabledFields),
 * so a builder asked to run in a user namespace would silently run in the host's.
 */
export const USER_NAMESPACES_BY_DEFAULT = { major: 1, minor: 33 } as const;

/** What the spec asks that this API server cannot give. */
export function serverProblems(pool: BuilderPool, version: KubeVersion): string[] {
  const { major, minor } = USER_NAMESPACES_BY_DEFAULT;
  if (pool.spec.isolation?.hostUsers === false && !atLeast(version, major, minor)) {
    return [
      `spec.isolation.hostUsers: false needs Kubernetes >= ${major}.${minor}, where user namespaces (feature gate UserNamespacesSupport) are on by default; this API server is ${version.major}.${version.minor}, which drops the pod's hostUsers field unless the gate is on, so the builders would run in the host's user namespace. Upgrade, or remove hostUsers`,
    ];
  }
  return [];
}

/** Throws SpecError when specProblems or serverProblems finds any. */
export function assertBuildable(pool: BuilderPool, version?: KubeVersion): void {
  const problems = [...specProblems(pool), ...(version ? serverProblems(pool, version) : [])];
  if (problems.length > 0) throw new SpecError(problems);
}
