// The operator image, built as `npm run image` builds it: this checkout's Dockerfile through
// real BuildKit for linux/amd64 and linux/arm64 into one OCI index, from base images made on
// this machine (Node 24 from npm, Debian's libraries) passed as BuildKit named contexts, since
// no public registry can be reached here. Then it runs: `buildfarm --version` and
// `buildfarm assemble --help` from each platform's root filesystem under runc (arm64 under
// QEMU), and a real two-platform ImageBuild whose index Job runs `buildfarm assemble` from
// that image, as a cluster would pull it.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_OPERATOR_IMAGE } from "../../src/config.ts";
import { containerSecurityContext } from "../../src/imagebuild/jobs.ts";
import { COMPONENTS } from "../../src/naming.ts";
import {
  type BaseContexts,
  type BuiltOperatorImage,
  buildOperatorImage,
  contextFlags,
  getBlob,
  getManifest,
  type ImageBuildkitd,
  operatorBases,
  runImageContainer,
  startGitServer,
  startImageBuildkitd,
} from "../local-cluster/index.ts";
import { REPO_ROOT } from "../support/files.ts";
import {
  BUILD_NAMESPACE,
  imageBuild,
  POOL,
  POOL_NAMESPACE,
  type RealCluster,
  realClusterInputs,
  startRealCluster,
} from "./cluster.ts";
import { type BuildStatus, buildPods, explain, runBuild, waitForBuilders } from "./steps.ts";

const SUITE = "the operator image built and run (test/buildkit)";
const { tools, debs } = (await realClusterInputs(SUITE)) ?? {};
const ARCHES = ["amd64", "arm64"] as const;
const BUILD_TIMEOUT = 300_000;
/** The self-build runs npm ci and tsc in each platform's Job. */
const SELF_BUILD_TIMEOUT = 600_000;

/** This checkout's tracked files as they are in the working tree (what npm run image sends). */
function checkoutFiles(): Record<string, string> {
  const paths = execFileSync("git", ["ls-files", "-z"], { cwd: REPO_ROOT, encoding: "utf8" })
    .split("\0")
    .filter(Boolean);
  return Object.fromEntries(
    paths.map((path) => [path, readFileSync(join(REPO_ROOT, path), "utf8")]),
  );
}

interface IndexEntry {
  digest: string;
  platform?: { os: string; architecture: string; variant?: string };
}

describe.skipIf(!tools || !debs)(SUITE, () => {
  let cluster: RealCluster;
  let buildkitd: ImageBuildkitd;
  let built: BuiltOperatorImage;
  let warm: BuiltOperatorImage;
  /** `<registry>/buildfarm@<digest>`: the pushed build, which the operator runs. */
  let image = "";
  let scratch = "";
  let contexts: BaseContexts;

  beforeAll(async () => {
    cluster = await startRealCluster(tools!, debs!, {
      operatorImage: async (local) => {
        buildkitd = await startImageBuildkitd(tools!, [local.registry.host]);
        local.onStop(() => buildkitd.stop());
        contexts = await operatorBases(local.registry);
        built = await buildOperatorImage({
          buildctl: tools!.buildctl,
          buildkitd,
          args: [...contextFlags(contexts), "--push", `${local.registry.host}/buildfarm:test`],
        });
        // The same build again, every step from BuildKit's cache, into an OCI layout tarball
        // as `npm run image -- --oci` writes it for `kind load image-archive`, with its
        // default name.
        const dir = await mkdtemp(join(tmpdir(), "buildfarm-image-oci-"));
        scratch = dir;
        local.onStop(() => rm(dir, { recursive: true, force: true }));
        warm = await buildOperatorImage({
          buildctl: tools!.buildctl,
          buildkitd,
          args: [...contextFlags(contexts), "--oci", join(dir, "buildfarm.tar")],
        });
        process.stderr.write(
          `operator image: cold build ${(built.durationMs / 1000).toFixed(1)} s, warm ${(warm.durationMs / 1000).toFixed(1)} s\n`,
        );
        if (!built.image) throw new Error("the pushed build named no image");
        image = built.image;
        return image;
      },
    });
    await waitForBuilders(cluster);
  }, 900_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  /** The architectures of an index's linux images (attestation manifests left out). */
  const linuxArchitectures = async (repository: string, digest: string) =>
    (((await getManifest(cluster.registry, repository, digest)).manifests ?? []) as IndexEntry[])
      .filter((m) => m.platform?.os === "linux")
      .map((m) => m.platform?.architecture)
      .sort();

  /** Runs a container of the image on a node of the architecture, as a restricted pod. */
  const runIn = async (image: string, arch: string, args: string[], command?: string[]) => {
    const result = await runImageContainer({
      registry: cluster.registry,
      image,
      architecture: arch,
      container: {
        args,
        ...(command ? { command } : {}),
        // What the operator's Jobs ask (src/imagebuild/jobs.ts containerSecurityContext).
        securityContext: containerSecurityContext(),
      },
      hostname: `run-${arch}`,
    });
    if ("error" in result) throw new Error(result.error);
    return result.run;
  };

  const index = async () => getManifest(cluster.registry, "buildfarm", built.digest);
  const platformManifest = async (arch: string) => {
    const entry = ((await index()).manifests as IndexEntry[]).find(
      (m) => m.platform?.architecture === arch,
    );
    const manifest = await getManifest(cluster.registry, "buildfarm", entry!.digest);
    const config = JSON.parse(
      (
        await getBlob(
          cluster.registry,
          "buildfarm",
          (manifest as { config: { digest: string } }).config.digest,
        )
      ).toString("utf8"),
    ) as { architecture: string; config: Record<string, unknown> };
    const size = (manifest.layers ?? []).reduce(
      (sum, layer) => sum + ((layer as { size?: number }).size ?? 0),
      0,
    );
    return { entry: entry!, config, size };
  };

  it("a warm rebuild writes the same index as an OCI layout tarball, named for ctr import, with both platforms' blobs", async () => {
    const tarball = join(scratch, "buildfarm.tar");
    const files = execFileSync("tar", ["-tf", tarball], { encoding: "utf8" }).split("\n");
    const layout = JSON.parse(
      execFileSync("tar", ["-xOf", tarball, "index.json"], { encoding: "utf8" }),
    ) as {
      manifests: { digest: string; annotations?: Record<string, string> }[];
    };
    expect(layout.manifests).toHaveLength(1);
    expect(layout.manifests[0]).toMatchObject({
      digest: built.digest,
      annotations: { "io.containerd.image.name": DEFAULT_OPERATOR_IMAGE },
    });
    for (const arch of ARCHES) {
      const { entry } = await platformManifest(arch);
      expect(files).toContain(`blobs/sha256/${entry.digest.slice("sha256:".length)}`);
    }
  });

  it("is one OCI index of exactly linux/amd64 and linux/arm64, and a warm rebuild gives the same index", async () => {
    const manifests = (await index()).manifests as IndexEntry[];
    expect((await index()).mediaType).toBe("application/vnd.oci.image.index.v1+json");
    expect(manifests.map((m) => `${m.platform?.os}/${m.platform?.architecture}`).sort()).toEqual([
      "linux/amd64",
      "linux/arm64",
    ]);
    expect(warm.digest).toBe(built.digest);
    for (const arch of ARCHES) {
      const { size } = await platformManifest(arch);
      process.stderr.write(
        `operator image linux/${arch}: ${(size / 1024 / 1024).toFixed(1)} MiB compressed layers\n`,
      );
    }
  });

  it.each(ARCHES)(
    "linux/%s: its config runs as 65532:65532 from /app, node on dist/cli.js operator, labelled with the revision",
    async (arch) => {
      const { config } = await platformManifest(arch);
      expect(config.architecture).toBe(arch);
      expect(config.config).toMatchObject({
        User: "65532:65532",
        WorkingDir: "/app",
        Entrypoint: ["/nodejs/bin/node", "/app/dist/cli.js"],
        Cmd: ["operator"],
      });
      expect(
        (config.config.Labels as Record<string, string>)["org.opencontainers.image.revision"],
      ).toBe(built.revision);
    },
  );

  it.each(ARCHES)(
    "linux/%s: buildfarm --version and assemble --help run from its root filesystem",
    async (arch) => {
      const run = (args: string[], command?: string[]) => runIn(image, arch, args, command);
      const version = await run(["--version"]);
      expect(version).toMatchObject({ exitCode: 0, uid: 65532, gid: 65532, cwd: "/app" });
      expect(version.argv).toEqual(["/nodejs/bin/node", "/app/dist/cli.js", "--version"]);
      expect(version.output.trim()).toBe(`buildfarm ${built.version} (${built.revision})`);
      // The image's node is that architecture's (arm64 runs under QEMU here).
      const node = await run(["-p", "process.arch"], ["/nodejs/bin/node"]);
      expect(node.output.trim()).toBe(arch === "amd64" ? "x64" : "arm64");
      const help = await run(["assemble", "--help"]);
      expect(help.exitCode, help.output).toBe(0);
      expect(help.output).toMatch(
        /^usage: buildfarm assemble --image REPO --digest PLATFORM=sha256:/,
      );
    },
  );

  it("a two-platform ImageBuild's index Job runs buildfarm assemble from that image", async () => {
    const status: BuildStatus = await runBuild(
      cluster,
      imageBuild(cluster, {
        name: "from-image-1",
        image: `${cluster.registry.host}/app`,
        tags: ["v1"],
      }),
      undefined,
      BUILD_TIMEOUT,
    );
    expect(status.phase, await explain(cluster, "from-image-1")).toBe("Succeeded");
    const indexPods = buildPods(cluster, "from-image-1").filter(
      (pod) => pod.metadata.labels?.["app.kubernetes.io/component"] === COMPONENTS.index,
    );
    expect(indexPods.length).toBeGreaterThan(0);
    const runs = cluster.images.filter((r) => indexPods.some((pod) => pod.metadata.name === r.pod));
    const succeeded = runs.find((r) => r.exitCode === 0);
    expect(succeeded, JSON.stringify(runs.map((r) => ({ ...r, env: undefined })))).toBeDefined();
    const { entry } = await platformManifest(succeeded!.architecture);
    expect(succeeded).toMatchObject({
      image,
      manifest: entry.digest,
      uid: 65532,
      cwd: "/app",
    });
    expect(succeeded!.argv.slice(0, 3)).toEqual([
      "/nodejs/bin/node",
      "/app/dist/cli.js",
      "assemble",
    ]);
    // What it printed is the index the build reports.
    expect(succeeded!.output).toContain(`"digest":"${status.digest}"`);
    expect(await linuxArchitectures("app", status.digest!)).toEqual(["amd64", "arm64"]);
  });
  it(
    "builds itself: an ImageBuild of this repository with the bases as spec.contexts makes the operator image through the operator's Jobs, and the next build's index Job runs from it",
    async () => {
      const git = await startGitServer("buildfarm", { main: checkoutFiles() });
      try {
        const revision = git.commits.main ?? "";
        const status = await runBuild(
          cluster,
          {
            apiVersion: "buildfarm.dev/v1alpha1",
            kind: "ImageBuild",
            metadata: { name: "self-1", namespace: BUILD_NAMESPACE },
            spec: {
              poolRef: { name: POOL, namespace: POOL_NAMESPACE },
              source: { git: { url: git.url, revision: "main" } },
              platforms: ["linux/amd64", "linux/arm64"],
              contexts: Object.entries(contexts).map(([name, value]: [string, string]) => ({
                name,
                image: value.replace(/^docker-image:\/\//, ""),
              })),
              buildArgs: [
                { name: "BUILDFARM_VERSION", value: built.version },
                { name: "BUILDFARM_REVISION", value: revision },
              ],
              output: { image: `${cluster.registry.host}/buildfarm-self`, tags: ["v1"] },
              timeout: "20m",
              retries: 0,
            },
          },
          undefined,
          SELF_BUILD_TIMEOUT,
        );
        expect(status.phase, await explain(cluster, "self-1")).toBe("Succeeded");
        expect(await linuxArchitectures("buildfarm-self", status.digest!)).toEqual([
          "amd64",
          "arm64",
        ]);
        const seconds = (from?: string, to?: string) =>
          from && to ? (Date.parse(to) - Date.parse(from)) / 1000 : Number.NaN;
        process.stderr.write(
          `self-build: ${(status.platforms ?? []).map((p) => `${p.platform} ${seconds(p.startTime, p.completionTime)} s`).join(", ")}; whole build ${seconds(status.startTime, status.completionTime)} s\n`,
        );
        const selfImage = `${cluster.registry.host}/buildfarm-self@${status.digest}`;
        for (const arch of ARCHES) {
          const version = await runIn(selfImage, arch, ["--version"]);
          expect(version).toMatchObject({ exitCode: 0, uid: 65532, gid: 65532 });
          expect(version.output.trim()).toBe(`buildfarm ${built.version} (${revision})`);
        }

        await cluster.restartOperator([`--operator-image=${selfImage}`]);
        const next = await runBuild(
          cluster,
          imageBuild(cluster, { name: "after-self-1", image: `${cluster.registry.host}/app` }),
          undefined,
          BUILD_TIMEOUT,
        );
        expect(next.phase, await explain(cluster, "after-self-1")).toBe("Succeeded");
        const indexPods = buildPods(cluster, "after-self-1").filter(
          (pod) => pod.metadata.labels?.["app.kubernetes.io/component"] === COMPONENTS.index,
        );
        const runs = cluster.images.filter((r) =>
          indexPods.some((pod) => pod.metadata.name === r.pod),
        );
        expect(runs.find((r) => r.exitCode === 0)).toMatchObject({ image: selfImage, uid: 65532 });
      } finally {
        await git.stop();
      }
    },
    SELF_BUILD_TIMEOUT + 2 * BUILD_TIMEOUT,
  );
});
