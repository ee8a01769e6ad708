// The operator image, built as `npm run image` builds it: this checkout's Dockerfile through
// real BuildKit for linux/amd64 and linux/arm64 into one OCI index, from base images made on
// this machine (Node 24 from npm, Debian's libraries) passed as BuildKit named contexts, since
// no public registry can be reached here. Then it runs: `buildfarm --version` and
// `buildfarm assemble --help` from each platform's root filesystem under runc (arm64 under
// QEMU), and a real two-platform ImageBuild whose index Job runs `buildfarm assemble` from
// that image, as a cluster would pull it.
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMPONENTS } from "../../src/naming.ts";
import { runImageContainer } from "../local-cluster/images.ts";
import { getBlob, getManifest } from "../local-cluster/index.ts";
import {
  type BuiltOperatorImage,
  buildOperatorImage,
  type ImageBuildkitd,
  operatorBases,
  startImageBuildkitd,
} from "../local-cluster/operator-image.ts";
import { imageBuild, type RealCluster, realClusterInputs, startRealCluster } from "./cluster.ts";
import { type BuildStatus, buildPods, explain, runBuild, waitForBuilders } from "./steps.ts";

const SUITE = "the operator image built and run (test/buildkit)";
const { tools, debs } = (await realClusterInputs(SUITE)) ?? {};
const ARCHES = ["amd64", "arm64"] as const;
const BUILD_TIMEOUT = 300_000;
const OCI_NAME = "ghcr.io/buildfarm-dev/buildfarm:0.1.0";

interface IndexEntry {
  digest: string;
  platform?: { os: string; architecture: string; variant?: string };
}

describe.skipIf(!tools || !debs)(SUITE, () => {
  let cluster: RealCluster;
  let buildkitd: ImageBuildkitd;
  let built: BuiltOperatorImage;
  let warm: BuiltOperatorImage;
  let scratch = "";

  beforeAll(async () => {
    cluster = await startRealCluster(tools!, debs!, {
      operatorImage: async (local) => {
        buildkitd = await startImageBuildkitd(tools!, [local.registry.host]);
        local.onStop(() => buildkitd.stop());
        const contexts = await operatorBases(local.registry);
        const output = {
          kind: "push",
          reference: `${local.registry.host}/buildfarm:test`,
        } as const;
        built = await buildOperatorImage({
          buildctl: tools!.buildctl,
          buildkitd,
          contexts,
          output,
        });
        // The same build again, every step from BuildKit's cache, into an OCI layout tarball
        // as `npm run image -- --oci` writes it for `kind load image-archive`.
        const dir = await mkdtemp(join(tmpdir(), "buildfarm-image-oci-"));
        scratch = dir;
        local.onStop(() => rm(dir, { recursive: true, force: true }));
        warm = await buildOperatorImage({
          buildctl: tools!.buildctl,
          buildkitd,
          contexts,
          output: { kind: "oci", file: join(dir, "buildfarm.tar"), name: OCI_NAME },
        });
        process.stderr.write(
          `operator image: cold build ${(built.durationMs / 1000).toFixed(1)} s, warm ${(warm.durationMs / 1000).toFixed(1)} s\n`,
        );
        return built.image;
      },
    });
    await waitForBuilders(cluster);
  }, 900_000);

  afterAll(async () => {
    await cluster?.stop();
  });

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
      annotations: { "io.containerd.image.name": OCI_NAME },
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
      const run = async (args: string[], command?: string[]) => {
        const result = await runImageContainer({
          registry: cluster.registry,
          image: built.image,
          architecture: arch,
          container: {
            args,
            ...(command ? { command } : {}),
            securityContext: { readOnlyRootFilesystem: true, runAsNonRoot: true },
          },
          hostname: `version-${arch}`,
        });
        if ("error" in result) throw new Error(result.error);
        return result.run;
      };
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
      image: built.image,
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
    const appIndex = await getManifest(cluster.registry, "app", status.digest!);
    expect(
      ((appIndex.manifests ?? []) as IndexEntry[])
        .filter((m) => m.platform?.os === "linux")
        .map((m) => m.platform?.architecture)
        .sort(),
    ).toEqual(["amd64", "arm64"]);
  });
});
