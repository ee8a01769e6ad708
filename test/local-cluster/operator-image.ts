// The operator image built here as `npm run image` builds it (e2e/image-build.ts), by a
// buildkitd of this machine's own, from bases made here (node-bases.ts) and passed as BuildKit
// named contexts, into the test registry; so tests can run the index Job, `--version` and
// `assemble --help` from the image a cluster would pull.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import {
  gitRevision,
  packageVersion,
  parseImageArgs,
  runImageBuild,
} from "../../e2e/image-build.ts";
import { type BuildkitTools, run } from "../support/buildkit.ts";
import { REPO_ROOT } from "../support/files.ts";
import type { RunningRegistry } from "../support/registry.ts";
import { type BaseContexts, pushOperatorBases } from "./node-bases.ts";

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
  /** `<repository>@<index digest>` when pushed. */
  image?: string;
  digest: string;
  revision: string;
  version: string;
  durationMs: number;
  log: string;
}

/**
 * Runs `npm run image`'s build with these flags (after `--addr`, which names the buildkitd), as
 * e2e/image.ts would: the same flag parsing, argv and defaults.
 */
export async function buildOperatorImage(options: {
  buildctl: string;
  buildkitd: ImageBuildkitd;
  args: string[];
}): Promise<BuiltOperatorImage> {
  const scratch = await mkdtemp(join(tmpdir(), "buildfarm-image-build-"));
  try {
    const parsed = parseImageArgs(["--addr", options.buildkitd.addr, ...options.args], {
      root: REPO_ROOT,
      version: await packageVersion(REPO_ROOT),
      revision: gitRevision(REPO_ROOT),
      metadataFile: join(scratch, "metadata.json"),
    });
    if (!("root" in parsed)) throw new Error(`npm run image refused ${JSON.stringify(parsed)}`);
    const started = Date.now();
    const result = await runImageBuild(options.buildctl, parsed);
    const durationMs = Date.now() - started;
    if (result.code !== 0 || !result.digest)
      throw new Error(
        `npm run image's build failed (buildctl exit ${result.code}):\n${result.tail}\n--- buildkitd ---\n${options.buildkitd.log().slice(-3000)}`,
      );
    return {
      ...(parsed.output.kind === "push"
        ? { image: `${parsed.output.repository}@${result.digest}` }
        : {}),
      digest: result.digest,
      revision: parsed.revision,
      version: parsed.version,
      durationMs,
      log: result.tail,
    };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The bases as `npm run image` flags: `--context NAME=VALUE` for each. */
export function contextFlags(contexts: BaseContexts): string[] {
  return Object.entries(contexts).flatMap(([name, value]) => ["--context", `${name}=${value}`]);
}

/** The bases pushed to the registry, as named contexts; throws with the reason if it cannot. */
export async function operatorBases(registry: RunningRegistry): Promise<BaseContexts> {
  const contexts = await pushOperatorBases(registry);
  if (typeof contexts === "string") throw new Error(`the test's base images: ${contexts}`);
  return contexts;
}
