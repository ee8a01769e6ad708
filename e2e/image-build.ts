// The operator image's build, as `npm run image` runs it: the project's Dockerfile through
// BuildKit's Dockerfile frontend, for every platform at once, into one OCI image index that is
// pushed to a registry or written as an OCI layout tarball. `buildctl` runs from an argv array
// against any buildkitd (`--addr`, else $BUILDKIT_HOST, else buildctl's default socket), so no
// Docker engine is needed. The argv is a pure function of the options; test/e2e/image.test.ts
// checks it and test/buildkit/operator-image.test.ts runs it on real BuildKit.
import { execFileSync, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_OPERATOR_IMAGE } from "../src/config.ts";
import { errorMessage } from "../src/errors.ts";
import { parseReference } from "../src/registry/reference.ts";

export const IMAGE_PLATFORMS = ["linux/amd64", "linux/arm64"] as const;

export type ImageOutput =
  /** `repository` is the reference's canonical repository, where the index is pushed by digest. */
  | { kind: "push"; reference: string; repository: string }
  | { kind: "oci"; file: string; name: string };

/** The repository the chart and --operator-image name by default, without its tag. */
const DEFAULT_REPOSITORY = parseReference(DEFAULT_OPERATOR_IMAGE).repository.name;

export interface ImageOptions {
  /** The repository root: the build context and where the Dockerfile is. */
  root: string;
  platforms: string[];
  output: ImageOutput;
  /** BuildKit named contexts: `FROM <name>` resolves to the value (docker-image://…, oci-layout://…, a git or https URL). */
  contexts: Record<string, string>;
  /** What `buildfarm --version` prints, and the image's OCI labels. */
  version: string;
  revision: string;
  /** A registry reference to import the build cache from and export it to (mode=max). */
  cache?: string;
  progress: "auto" | "plain" | "tty" | "quiet" | "rawjson";
  /** buildctl's global flags before `build` (--addr, --tlscacert, ...). */
  global: string[];
  metadataFile: string;
}

export const IMAGE_USAGE = `usage: npm run image -- (--push REGISTRY/REPO:TAG | --oci FILE [--name REF]) [options]

Builds the operator image (the Dockerfile) for linux/amd64 and linux/arm64 with BuildKit into one
OCI image index: pushed by --push, or written by --oci as an OCI layout tarball for
\`kind load image-archive FILE\` or \`ctr images import FILE\`. No Docker engine is needed.

  --push REF             push the index as REF (the registry must be reachable from buildkitd)
  --oci FILE             write an OCI layout tarball (--name REF names it for the importer;
                         default ghcr.io/buildfarm-dev/buildfarm:<version>)
  --platform LIST        comma-separated platforms (default linux/amd64,linux/arm64)
  --addr ADDR            the buildkitd (default $BUILDKIT_HOST, else buildctl's default socket);
                         e.g. unix:///run/buildkit/buildkitd.sock, tcp://host:1234,
                         docker-container://NAME, kube-pod://NAME
  --buildctl-flag FLAG   another of buildctl's global flags (repeatable: --tlscacert=…)
  --context NAME=VALUE   a BuildKit named context (repeatable): FROM NAME builds from VALUE instead,
                         e.g. node:24-bookworm-slim=docker-image://mirror.example/node@sha256:…
  --cache REF            import and export the build cache at this registry reference
  --progress MODE        auto, plain, tty, quiet or rawjson (default auto)
  --metadata-file FILE   where buildctl writes the build's metadata (default: a temporary file)
  --revision REV         the source revision for --version and the labels (default: git HEAD)
`;

/** buildctl's argv for the build (global flags first, then `build ...`). */
export function imageBuildArgv(options: ImageOptions): string[] {
  const output =
    options.output.kind === "push"
      ? `type=image,name=${options.output.reference},push=true,oci-mediatypes=true`
      : `type=oci,dest=${options.output.file},name=${options.output.name}`;
  const argv = [
    ...options.global,
    "build",
    "--frontend",
    "dockerfile.v0",
    "--local",
    `context=${options.root}`,
    "--local",
    `dockerfile=${options.root}`,
    "--opt",
    "filename=Dockerfile",
    "--opt",
    `platform=${options.platforms.join(",")}`,
    "--opt",
    `build-arg:BUILDFARM_VERSION=${options.version}`,
    "--opt",
    `build-arg:BUILDFARM_REVISION=${options.revision}`,
  ];
  for (const [name, value] of Object.entries(options.contexts))
    argv.push("--opt", `context:${name}=${value}`);
  if (options.cache) {
    argv.push("--import-cache", `type=registry,ref=${options.cache}`);
    argv.push(
      "--export-cache",
      `type=registry,ref=${options.cache},mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true`,
    );
  }
  argv.push(
    "--output",
    output,
    "--progress",
    options.progress,
    "--metadata-file",
    options.metadataFile,
  );
  return argv;
}

const PROGRESS = new Set(["auto", "plain", "tty", "quiet", "rawjson"]);

const IMAGE_FLAGS = {
  push: { type: "string" },
  oci: { type: "string" },
  name: { type: "string" },
  platform: { type: "string" },
  addr: { type: "string" },
  "buildctl-flag": { type: "string", multiple: true },
  context: { type: "string", multiple: true },
  cache: { type: "string" },
  progress: { type: "string" },
  "metadata-file": { type: "string" },
  revision: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** `npm run image`'s flags → options, or the message for a usage error. */
export function parseImageArgs(
  argv: string[],
  defaults: { root: string; version: string; revision: string; metadataFile: string },
): ImageOptions | { help: true } | { usage: string } {
  let values: ReturnType<typeof parseArgs<{ options: typeof IMAGE_FLAGS }>>["values"];
  try {
    values = parseArgs({ args: argv, strict: true, options: IMAGE_FLAGS }).values;
  } catch (error) {
    return { usage: errorMessage(error) };
  }
  if (values.help) return { help: true };
  if (Boolean(values.push) === Boolean(values.oci))
    return { usage: "give one of --push REF or --oci FILE" };
  if (values.name && !values.oci) return { usage: "--name goes with --oci" };
  const platforms = (values.platform ?? IMAGE_PLATFORMS.join(","))
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean);
  const badPlatform = platforms.find((p) => !/^[a-z0-9]+\/[a-z0-9]+(\/[a-z0-9]+)?$/.test(p));
  if (badPlatform !== undefined || platforms.length === 0)
    return { usage: `--platform: ${JSON.stringify(badPlatform ?? "")} is not os/arch[/variant]` };
  const contexts: Record<string, string> = {};
  for (const pair of values.context ?? []) {
    const eq = pair.indexOf("=");
    if (eq <= 0 || eq === pair.length - 1)
      return { usage: `--context ${JSON.stringify(pair)}: expected NAME=VALUE` };
    contexts[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const progress = values.progress ?? "auto";
  if (!PROGRESS.has(progress))
    return { usage: `--progress ${JSON.stringify(progress)}: one of ${[...PROGRESS].join(", ")}` };
  let output: ImageOutput;
  if (values.push) {
    let repository: string;
    try {
      const reference = parseReference(values.push);
      if (reference.digest) return { usage: "--push: give a tag, not a digest" };
      repository = reference.repository.name;
    } catch (error) {
      return { usage: `--push: ${errorMessage(error)}` };
    }
    output = { kind: "push", reference: values.push, repository };
  } else {
    output = {
      kind: "oci",
      file: values.oci as string,
      name: values.name ?? `${DEFAULT_REPOSITORY}:${defaults.version}`,
    };
  }
  return {
    root: defaults.root,
    platforms,
    output,
    contexts,
    version: defaults.version,
    revision: values.revision ?? defaults.revision,
    ...(values.cache ? { cache: values.cache } : {}),
    progress: progress as ImageOptions["progress"],
    global: [...(values.addr ? ["--addr", values.addr] : []), ...(values["buildctl-flag"] ?? [])],
    metadataFile: values["metadata-file"] ?? defaults.metadataFile,
  };
}

/** The checkout's revision: `git rev-parse HEAD`, with `-dirty` when files differ from it. */
export function gitRevision(root: string): string {
  try {
    const head = execFileSync("git", ["rev-parse", "HEAD"], { cwd: root, encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], {
      cwd: root,
      encoding: "utf8",
    }).trim();
    return dirty ? `${head}-dirty` : head;
  } catch {
    return "unknown";
  }
}

export async function packageVersion(root: string): Promise<string> {
  return (JSON.parse(await readFile(join(root, "package.json"), "utf8")) as { version: string })
    .version;
}

export interface ImageBuildResult {
  code: number;
  /** The index's digest, from buildctl's metadata file. */
  digest?: string;
  /** The last lines buildctl wrote, for an error message. */
  tail: string;
}

/** Runs buildctl with the argv; its progress goes to onOutput as it comes. */
export async function runImageBuild(
  buildctl: string,
  options: ImageOptions,
  onOutput: (text: string) => void = () => {},
  env: NodeJS.ProcessEnv = process.env,
): Promise<ImageBuildResult> {
  const child = spawn(buildctl, imageBuildArgv(options), {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let tail = "";
  const take = (chunk: Buffer) => {
    const text = chunk.toString("utf8");
    tail = (tail + text).slice(-8000);
    onOutput(text);
  };
  child.stdout.on("data", take);
  child.stderr.on("data", take);
  const code = await new Promise<number>((resolve) => {
    child.on("error", (error) => {
      tail += `\n${error.message}`;
      resolve(127);
    });
    child.on("close", (exit, signal) => resolve(exit ?? (signal ? 128 : 1)));
  });
  if (code !== 0) return { code, tail };
  const metadata = JSON.parse(await readFile(options.metadataFile, "utf8")) as Record<
    string,
    unknown
  >;
  const digest = metadata["containerimage.digest"];
  return { code, ...(typeof digest === "string" ? { digest } : {}), tail };
}
