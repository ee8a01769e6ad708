// A container runtime for the images the builds push, so a verify Job can run in the image it
// checks: a container whose image is in the test registry (`<host>/<repo>@sha256:…`) is
// pulled from it like a runtime pulls it (the index's manifest for the node's architecture,
// its config, its layers applied in order with whiteouts), and its command runs chrooted into
// that root as the pod's user, with the image's ENV under the container's env. What a chroot
// does not give: the pod's volumes are not mounted into the root (an image's /tmp is there and
// made writable instead), nor namespaces, capabilities or seccomp. Any other image goes to the
// fallback executor.
import { execFile } from "node:child_process";
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { ContainerContext, ContainerResult, Executor } from "../kube/sim/executor.ts";
import { runProcess } from "../kube/sim/real/process.ts";
import type { RunningRegistry } from "../support/registry.ts";
import { getBlob, getManifest } from "./registry.ts";

const execFileAsync = promisify(execFile);

/** One container run from a pushed image. */
export interface ImageRun {
  pod: string;
  image: string;
  /** The manifest that ran (the node's platform from the index). */
  manifest: string;
  architecture: string;
  argv: string[];
  env: Record<string, string>;
  uid: number;
  startMs: number;
  endMs?: number;
  exitCode?: number;
  output: string;
}

/** Removes what a layer's whiteouts delete (`.wh.<name>`, `.wh..wh..opq`). */
async function applyWhiteouts(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.name === ".wh..wh..opq") {
      await rm(path, { force: true });
    } else if (entry.name.startsWith(".wh.")) {
      await rm(join(dir, entry.name.slice(4)), { recursive: true, force: true });
      await rm(path, { force: true });
    } else if (entry.isDirectory()) {
      await applyWhiteouts(path);
    }
  }
}

export function pushedImageExecutor(
  registry: RunningRegistry,
  fallback: Executor,
): { executor: Executor; runs: ImageRun[] } {
  const runs: ImageRun[] = [];
  const executor: Executor = async (ctx) => {
    if (!ctx.image.startsWith(`${registry.host}/`) || !ctx.image.includes("@"))
      return fallback(ctx);
    return run(ctx);
  };

  async function run(ctx: ContainerContext): Promise<ContainerResult> {
    const [path, digest] = ctx.image.slice(registry.host.length + 1).split("@") as [string, string];
    const node = ctx.store.get("nodes", undefined, ctx.nodeName);
    const architecture = node?.metadata.labels?.["kubernetes.io/arch"] ?? "amd64";
    let manifest = await getManifest(registry, path, digest);
    let manifestDigest = digest;
    if (manifest.manifests) {
      const entry = manifest.manifests.find(
        (m) => m.platform?.os === "linux" && m.platform.architecture === architecture,
      );
      if (!entry)
        return {
          exitCode: 1,
          reason: "ErrImagePull",
          log: `no matching manifest for linux/${architecture} in ${ctx.image}\n`,
        };
      manifestDigest = entry.digest;
      manifest = await getManifest(registry, path, entry.digest);
    }
    const { config: configDescriptor } = manifest as { config?: { digest: string } };
    const config = JSON.parse(
      (await getBlob(registry, path, configDescriptor?.digest ?? "")).toString("utf8"),
    ) as { config?: { Env?: string[] } };
    // The image's root: its layers applied in order.
    const root = ctx.rootDir;
    await mkdir(root, { recursive: true });
    const scratch = await mkdtemp(join(tmpdir(), "bf-layer-"));
    try {
      for (const layer of manifest.layers ?? []) {
        const file = join(scratch, "layer");
        await writeFile(file, await getBlob(registry, path, layer.digest));
        await execFileAsync("tar", ["-xf", file, "-C", root, "--no-same-owner"]);
        await applyWhiteouts(root);
      }
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
    await mkdir(join(root, "tmp"), { recursive: true });
    await chmod(join(root, "tmp"), 0o1777);
    await chmod(root, 0o755);

    const env: Record<string, string> = {};
    for (const pair of config.config?.Env ?? []) {
      const eq = pair.indexOf("=");
      if (eq > 0) env[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
    Object.assign(env, ctx.env);
    const security = ctx.pod.spec?.securityContext ?? {};
    const own = ctx.container.securityContext ?? {};
    const uid = own.runAsUser ?? security.runAsUser ?? 0;
    const gid = own.runAsGroup ?? security.runAsGroup ?? 0;
    const argv = [...ctx.command, ...ctx.args];
    const record: ImageRun = {
      pod: ctx.pod.metadata.name,
      image: ctx.image,
      manifest: manifestDigest,
      architecture,
      argv,
      env,
      uid,
      startMs: Date.now(),
      output: "",
    };
    runs.push(record);
    const { exited } = runProcess({
      file: "/usr/sbin/chroot",
      args: [`--userspec=${uid}:${gid}`, root, ...argv],
      env,
      cwd: "/",
      identity: { uid: 0, gid: 0, groups: [], noNewPrivs: false },
      output: (text) => {
        record.output += text;
        ctx.log(text);
      },
      signal: ctx.signal,
      graceMs: 1000,
    });
    const exitCode = await exited;
    record.endMs = Date.now();
    record.exitCode = exitCode;
    return { exitCode };
  }

  return { executor, runs };
}
