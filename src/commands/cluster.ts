// What the cluster-facing commands (status, logs) share: kubeconfig and namespace options, and
// reading one ImageBuild.
import { parseArgs } from "node:util";
import { IMAGE_BUILD_RESOURCE, type StoredImageBuild } from "../api/resources.ts";
import { errorMessage } from "../errors.ts";
import { KubeClient } from "../runtime/client.ts";
import { loadKubeConfig } from "../runtime/kubeconfig.ts";

export interface ClusterArgs {
  client: KubeClient;
  namespace: string;
  name: string;
  flags: Record<string, string | boolean | undefined>;
}

export class UsageError extends Error {}

/** Parses `<name> [-n ns] [--kubeconfig f]` plus the command's own boolean flags. */
export function clusterArgs(
  argv: string[],
  booleans: Record<string, string | undefined>,
): ClusterArgs {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    namespace: { type: "string", short: "n" },
    kubeconfig: { type: "string" },
  };
  for (const [flag, short] of Object.entries(booleans))
    options[flag] = short ? { type: "boolean", short } : { type: "boolean" };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(errorMessage(error));
  }
  const [name, ...extra] = parsed.positionals;
  if (!name || extra.length > 0) throw new UsageError("expected exactly one ImageBuild name");
  const config = loadKubeConfig(parsed.values.kubeconfig as string | undefined);
  const namespace =
    (parsed.values.namespace as string | undefined) ??
    config.getContextObject(config.getCurrentContext())?.namespace ??
    "default";
  return {
    client: new KubeClient(config, { userAgent: "buildfarm-cli" }),
    namespace,
    name,
    flags: parsed.values as ClusterArgs["flags"],
  };
}

export async function readBuild(
  client: KubeClient,
  namespace: string,
  name: string,
): Promise<StoredImageBuild> {
  const build = await client.get<StoredImageBuild>(IMAGE_BUILD_RESOURCE, namespace, name);
  if (!build) throw new Error(`imagebuild ${namespace}/${name} not found`);
  return build;
}
