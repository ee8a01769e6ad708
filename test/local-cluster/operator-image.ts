// The operator image built here as `npm run image` builds it (e2e/image-build.ts), by a
// buildkitd of this machine's own, from bases made here (node-bases.ts) and passed as BuildKit
// named contexts, into the test registry; so tests can run the index Job, `--version` and
// `assemble --help` from the image a cluster would pull.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  gitRevision,
  IMAGE_PLATFORMS,
  type ImageOptions,
  type ImageOutput,
  packageVersion,
  runImageBuild,
} from "../../e2e/image-build.ts";
import { type BuildkitTools, run } from "../support/buildkit.ts";
import type { RunningRegistry } from "../support/registry.ts";
import { type BaseContexts, pushOperatorBases } from "./node-bases.ts";

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

export interface ImageBuildkitd {
  addr: string;
  log(): string;
  stop(): Promise<void>;
}

/**
 * A rootful buildkitd (OCI worker on runc) with its own root and socket, trusting the
 * registries as plain HTTP: the kind of buildkitd `npm run image` is pointed at.
 */
export async function startImageBuildkitd(
  tools: Pick<BuildkitTools, "buildkitd" | "buildctl">,
  httpRegistries: string[],
): Promise<ImageBuildkitd> {
  const dir = await mkdtemp(join(tmpdir(), "buildfarm-image-buildkitd-"));
  const config = httpRegistries
    .map((host) => `[registry."${host}"]\n  http = true\n  insecure = true\n`)
    .join("");
  await writeFile(join(dir, "buildkitd.toml"), config);
  const addr = `unix://${join(dir, "buildkitd.sock")}`;
  let output = "";
  const child: ChildProcess = spawn(
    tools.buildkitd,
    ["--root", join(dir, "root"), "--addr", addr, "--config", join(dir, "buildkitd.toml")],
    {
      env: { ...process.env, PATH: `${dirname(tools.buildkitd)}:${process.env.PATH ?? ""}` },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const take = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-20_000);
  };
  child.stdout?.on("data", take);
  child.stderr?.on("data", take);
  const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
  const stop = async () => {
    child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(killer);
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    const probe = await run(tools.buildctl, ["--addr", addr, "debug", "workers"]);
    if (probe.code === 0) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`buildkitd did not start: ${probe.stderr}\n${output.slice(-4000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return { addr, log: () => output, stop };
}

export interface BuiltOperatorImage {
  /** `<registry host>/<repository>@<index digest>` */
  image: string;
  digest: string;
  revision: string;
  version: string;
  durationMs: number;
  log: string;
}

/** Builds the operator image with the options `npm run image` would pass. */
export async function buildOperatorImage(options: {
  buildctl: string;
  buildkitd: ImageBuildkitd;
  contexts: BaseContexts;
  output: ImageOutput;
  /** For the returned reference (the index is pushed to it by tag). */
  registry?: RunningRegistry;
  cache?: string;
}): Promise<BuiltOperatorImage> {
  const scratch = await mkdtemp(join(tmpdir(), "buildfarm-image-build-"));
  try {
    const version = await packageVersion(REPO_ROOT);
    const revision = gitRevision(REPO_ROOT);
    const imageOptions: ImageOptions = {
      root: REPO_ROOT,
      platforms: [...IMAGE_PLATFORMS],
      output: options.output,
      contexts: { ...options.contexts },
      version,
      revision,
      ...(options.cache ? { cache: options.cache } : {}),
      progress: "plain",
      global: ["--addr", options.buildkitd.addr],
      metadataFile: join(scratch, "metadata.json"),
    };
    const started = Date.now();
    const result = await runImageBuild(options.buildctl, imageOptions);
    const durationMs = Date.now() - started;
    if (result.code !== 0 || !result.digest)
      throw new Error(
        `npm run image's build failed (buildctl exit ${result.code}):\n${result.tail}\n--- buildkitd ---\n${options.buildkitd.log().slice(-3000)}`,
      );
    const repository =
      options.output.kind === "push" ? options.output.reference.replace(/:[^:/]+$/, "") : "";
    return {
      image: `${repository}@${result.digest}`,
      digest: result.digest,
      revision,
      version,
      durationMs,
      log: result.tail,
    };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The bases pushed to the registry, as named contexts; throws with the reason if it cannot. */
export async function operatorBases(registry: RunningRegistry): Promise<BaseContexts> {
  const contexts = await pushOperatorBases(registry);
  if (typeof contexts === "string") throw new Error(`the test's base images: ${contexts}`);
  return contexts;
}
