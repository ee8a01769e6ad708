// Untrusted pools (spec.isolation.trust): builds of code nobody reviewed must not poison the
// registry cache that trusted builds import, nor read it. Which refs belong to which side is
// decided from the ref alone, without reading any other pool: a cache ref whose tag ends in
// -untrusted (before the per-platform suffix) is written by builds on Untrusted pools, every
// other ref by builds on Trusted ones. Each side may export and import only its own kind. The
// rule covers the refs the operator hands buildctl; what else may write a tag is the
// registry's permissions (docs/architecture.md, "Untrusted pools").
import { type Trust, trustOf } from "../api/builderpool.ts";
import { cacheRefOf, UNTRUSTED_CACHE_SUFFIX } from "../api/imagebuild.ts";
import type { BuilderPool, ImageBuild } from "../api/resources.ts";
import type { Verdict } from "./admission.ts";
import { splitTag } from "./cache-ref.ts";

/** Whether builds on Untrusted pools write this ref (its tag ends in -untrusted). */
export function isUntrustedCacheRef(ref: string): boolean {
  return splitTag(ref).tag?.endsWith(UNTRUSTED_CACHE_SUFFIX) ?? false;
}

/** The cache refs a build names, each with the field it is in. */
function namedRefs(build: ImageBuild): { field: string; ref: string }[] {
  const { cache } = build.spec;
  return [
    ...(cache.ref === undefined ? [] : [{ field: "spec.cache.ref", ref: cache.ref }]),
    ...(cache.importFrom ?? []).map((ref, index) => ({
      field: `spec.cache.importFrom[${index}]`,
      ref,
    })),
  ];
}

/**
 * Failed verdicts for cache refs of the other trust: on an Untrusted pool every named ref must
 * be an untrusted one (the default ref already is); on a Trusted pool none may be.
 */
export function cacheTrustVerdicts(build: ImageBuild, pool: BuilderPool): Verdict[] {
  if (build.spec.cache.disabled) return [];
  const trust: Trust = trustOf(pool.spec);
  const poolName = `${pool.metadata.namespace}/${pool.metadata.name}`;
  const verdicts: Verdict[] = [];
  for (const { field, ref } of namedRefs(build)) {
    const untrusted = isUntrustedCacheRef(ref);
    if (trust === "Untrusted" && !untrusted) {
      verdicts.push({
        phase: "Failed",
        reason: "TrustedCacheRef",
        message: `${field}: ${JSON.stringify(ref)} is a cache ref of trusted builds; builds on the Untrusted pool ${poolName} export and import only refs whose tag ends in ${UNTRUSTED_CACHE_SUFFIX} (such as ${JSON.stringify(cacheRefOf({ ...build.spec, cache: { ...build.spec.cache, ref: undefined } }, "Untrusted"))})`,
      });
    } else if (trust === "Trusted" && untrusted) {
      verdicts.push({
        phase: "Failed",
        reason: "UntrustedCacheRef",
        message: `${field}: ${JSON.stringify(ref)} ends in ${UNTRUSTED_CACHE_SUFFIX}, the cache that builds on Untrusted pools write; builds on the Trusted pool ${poolName} never import or export it`,
      });
    }
  }
  return verdicts;
}
