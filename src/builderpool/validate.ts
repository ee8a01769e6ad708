// Problems with a pool that the schema lets through but the builders would suffer from, in the
// same one-line-per-field form as parseBuilderPool, so the reconciler reports them the same way
// (Ready=False, InvalidSpec) instead of creating builders that cannot work.
import type { BuilderPool } from "../api/resources.ts";
import { SpecError } from "../api/resources.ts";
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

/** Throws SpecError when specProblems finds any. */
export function assertBuildable(pool: BuilderPool): void {
  const problems = specProblems(pool);
  if (problems.length > 0) throw new SpecError(problems);
}
