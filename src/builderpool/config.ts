// buildkitd.toml for a pool's builders, and the ConfigMap that carries it. Keys are spelled as
// BuildKit v0.24 reads them (cmd/buildkitd/config: `gc`, `max-parallelism`, `rootless`,
// `[[worker.oci.gcpolicy]]` with `keepDuration`, `maxUsedSpace`, `all`; `[registry."host"]`
// with `http`, `insecure`). The older `keepBytes`/`gckeepstorage` spellings are deprecated.
import type { V1ConfigMap } from "@kubernetes/client-node";
import type { BuilderPool } from "../api/resources.ts";
import { configMapName } from "../naming.ts";
import { childMeta } from "./meta.ts";
import { quantityToBytes } from "./quantity.ts";
import { renderToml, type TomlSection } from "./toml.ts";

export const CONFIG_KEY = "buildkitd.toml";

function gcSections(pool: BuilderPool): TomlSection[] {
  const gc = pool.spec.buildkit.gc;
  if (!gc.enabled) return [];
  // Sizes go in as byte counts: BuildKit parses "40Gi"-style text with go-units, whose
  // prefixes are all binary, so Kubernetes' decimal "40G" would silently mean 40Gi there.
  const keep = quantityToBytes(gc.keepStorage).toString();
  return [
    {
      path: ["worker", "oci", "gcpolicy"],
      arrayItem: true,
      comment: `Cache records unused for ${gc.keepDuration} are pruned, whatever the space used.`,
      entries: [["keepDuration", gc.keepDuration]],
    },
    {
      path: ["worker", "oci", "gcpolicy"],
      arrayItem: true,
      comment: `Then unshared records, oldest first, until the cache is under ${gc.keepStorage}.`,
      entries: [["maxUsedSpace", keep]],
    },
    {
      path: ["worker", "oci", "gcpolicy"],
      arrayItem: true,
      comment: "Then shared and internal records too, if that was not enough.",
      entries: [
        ["all", true],
        ["maxUsedSpace", keep],
      ],
    },
  ];
}

/**
 * The buildkitd.toml text. Flags the pod passes (addresses, TLS files, --root,
 * --oci-worker-no-process-sandbox) stay out of it, so the file says only what the spec chose.
 */
export function buildkitdConfig(pool: BuilderPool): string {
  const { buildkit, registries } = pool.spec;
  const oci: [string, string | boolean | number][] = [
    ["enabled", true],
    ["rootless", true],
    ["gc", buildkit.gc.enabled],
  ];
  if (buildkit.maxParallelism !== undefined) oci.push(["max-parallelism", buildkit.maxParallelism]);
  const sections: TomlSection[] = [
    {
      path: ["worker", "oci"],
      comment:
        "The OCI worker in rootless mode: rootlesskit gives buildkitd a user namespace, runc runs build steps without cgroups.",
      entries: oci,
    },
    ...gcSections(pool),
    {
      path: ["worker", "containerd"],
      comment: "No containerd in the builder pod; skip probing for its socket.",
      entries: [["enabled", false]],
    },
  ];
  for (const registry of registries ?? []) {
    const entries: [string, boolean][] = [];
    if (registry.http) entries.push(["http", true]);
    if (registry.insecure) entries.push(["insecure", true]);
    if (entries.length > 0) sections.push({ path: ["registry", registry.host], entries });
  }
  return renderToml(
    `buildkitd.toml for BuilderPool ${pool.metadata.namespace}/${pool.metadata.name}, written by buildfarm from the pool's spec; edits are overwritten.`,
    sections,
  );
}

export function configMap(pool: BuilderPool): V1ConfigMap {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: childMeta(pool, configMapName(pool.metadata.name)),
    data: { [CONFIG_KEY]: buildkitdConfig(pool) },
  };
}
