// `npm run image`'s pure parts: its flags, the buildctl argv they make, and the Dockerfile's
// premise that the build stage may run on the build machine's platform for every target.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { imageBuildArgv, parseImageArgs } from "../../e2e/image-build.ts";
import { DEFAULT_OPERATOR_IMAGE } from "../../src/config.ts";

const ROOT = join(import.meta.dirname, "..", "..");
const DEFAULTS = { root: "/src", version: "1.2.3", revision: "abc", metadataFile: "/tmp/m.json" };

/** The value after each `--opt`. */
const opts = (argv: string[]) => argv.flatMap((arg, i) => (argv[i - 1] === "--opt" ? [arg] : []));

describe("npm run image", () => {
  it("builds both platforms from the Dockerfile through the built-in frontend and pushes one OCI index", () => {
    const parsed = parseImageArgs(["--push", "registry.example/buildfarm:1.2.3"], DEFAULTS);
    if (!("root" in parsed)) throw new Error(JSON.stringify(parsed));
    const argv = imageBuildArgv(parsed);
    expect(argv.slice(0, 3)).toEqual(["build", "--frontend", "dockerfile.v0"]);
    expect(argv).toEqual(expect.arrayContaining(["--local", "context=/src", "dockerfile=/src"]));
    expect(opts(argv)).toEqual([
      "filename=Dockerfile",
      "platform=linux/amd64,linux/arm64",
      "build-arg:BUILDFARM_VERSION=1.2.3",
      "build-arg:BUILDFARM_REVISION=abc",
    ]);
    expect(argv[argv.indexOf("--output") + 1]).toBe(
      "type=image,name=registry.example/buildfarm:1.2.3,push=true,oci-mediatypes=true",
    );
    expect(argv[argv.indexOf("--metadata-file") + 1]).toBe("/tmp/m.json");
    // Where the index is pushed by digest, as npm run image prints it.
    expect(parsed.output).toMatchObject({ repository: "registry.example/buildfarm" });
  });

  it("writes an OCI layout tarball named for the importer, and passes named contexts, cache and buildctl's flags", () => {
    const parsed = parseImageArgs(
      [
        "--oci",
        "/out/buildfarm.tar",
        "--addr",
        "tcp://buildkitd:1234",
        "--buildctl-flag=--tlscacert=/ca.pem",
        "--context",
        "node:24-bookworm-slim=docker-image://mirror.example/node@sha256:aa",
        "--cache",
        "registry.example/cache:buildfarm",
        "--platform",
        "linux/arm64",
      ],
      DEFAULTS,
    );
    if (!("root" in parsed)) throw new Error(JSON.stringify(parsed));
    const argv = imageBuildArgv(parsed);
    expect(argv.slice(0, 4)).toEqual([
      "--addr",
      "tcp://buildkitd:1234",
      "--tlscacert=/ca.pem",
      "build",
    ]);
    expect(opts(argv)).toContain(
      "context:node:24-bookworm-slim=docker-image://mirror.example/node@sha256:aa",
    );
    expect(opts(argv)).toContain("platform=linux/arm64");
    expect(argv[argv.indexOf("--output") + 1]).toBe(
      "type=oci,dest=/out/buildfarm.tar,name=ghcr.io/buildfarm-dev/buildfarm:1.2.3",
    );
    expect(argv[argv.indexOf("--import-cache") + 1]).toBe(
      "type=registry,ref=registry.example/cache:buildfarm",
    );
    expect(argv[argv.indexOf("--export-cache") + 1]).toMatch(
      /^type=registry,ref=registry\.example\/cache:buildfarm,mode=max,/,
    );
  });

  it.each([
    [[], "give one of --push REF or --oci FILE"],
    [["--push", "a:1", "--oci", "b.tar"], "give one of --push REF or --oci FILE"],
    [["--push", "a:1", "--name", "x"], "--name goes with --oci"],
    [["--push", "a:1", "--context", "node"], "expected NAME=VALUE"],
    [["--push", "a:1", "--platform", "linux"], "is not os/arch"],
    [["--push", "a:1", "--progress", "loud"], "one of auto, plain"],
    [["--push", "a:1", "--nope"], "Unknown option"],
    [["--push", "Registry.example/App:1"], "--push: "],
    [["--push", `r.example/app@sha256:${"a".repeat(64)}`], "--push: give a tag, not a digest"],
  ])("refuses %j with a usage message", (argv, message) => {
    const parsed = parseImageArgs(argv, DEFAULTS);
    expect("usage" in parsed && parsed.usage).toContain(message);
  });

  it("has no production dependency with native code or per-platform builds, so the build stage can run on the build platform", () => {
    // The Dockerfile's build stage is FROM --platform=$BUILDPLATFORM and its node_modules are
    // copied into every target's image: an os/cpu-specific or install-scripted production
    // package would be the build machine's, wrong on the other architecture.
    const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as {
      packages: Record<
        string,
        {
          dev?: boolean;
          os?: string[];
          cpu?: string[];
          hasInstallScript?: boolean;
          optional?: boolean;
        }
      >;
    };
    const platformSpecific = Object.entries(lock.packages)
      .filter(([path, entry]) => path !== "" && !entry.dev)
      .filter(([, entry]) => entry.os || entry.cpu || entry.hasInstallScript || entry.optional)
      .map(([path]) => path);
    expect(platformSpecific).toEqual([]);
    const dockerfile = readFileSync(join(ROOT, "Dockerfile"), "utf8");
    expect(dockerfile).toMatch(/^FROM --platform=\$BUILDPLATFORM node:24-bookworm-slim AS build$/m);
    expect(dockerfile).not.toMatch(/^# syntax=/m);
  });
});

describe("the release workflow", () => {
  const workflow = parse(readFileSync(join(ROOT, ".github/workflows/release.yml"), "utf8")) as {
    env: Record<string, string>;
    jobs: { image: { steps: { name?: string; run?: string }[] } };
  };
  const steps = workflow.jobs.image.steps;
  const check = steps.find((s) => s.name?.startsWith("Check the tag"))?.run ?? "";

  /** Runs the workflow's version check as the runner would for the tag. */
  const runCheck = (tag: string) => {
    const dir = mkdtempSync(join(tmpdir(), "buildfarm-release-"));
    try {
      const env = {
        ...process.env,
        ...workflow.env,
        GITHUB_REF_NAME: tag,
        GITHUB_ENV: join(dir, "env"),
      };
      const result = spawnSync("bash", ["-e", "-c", check], { cwd: ROOT, env, encoding: "utf8" });
      const written = result.status === 0 ? readFileSync(join(dir, "env"), "utf8") : "";
      return { status: result.status, written };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it("pushes the image the chart and the operator's default name, for the tag of package.json's version", () => {
    const version = (
      JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }
    ).version;
    expect(`${workflow.env.IMAGE_REPOSITORY}:${version}`).toBe(DEFAULT_OPERATOR_IMAGE);
    expect(runCheck(`v${version}`)).toEqual({ status: 0, written: `VERSION=${version}\n` });
    expect(steps.find((s) => s.name === "Build and push")?.run).toContain(
      'npm run image -- --addr docker-container://buildkitd --push "$IMAGE_REPOSITORY:$VERSION"',
    );
  });

  it("fails for a tag that is not package.json's version", () => {
    expect(runCheck("v9.9.9").status).not.toBe(0);
  });
});
