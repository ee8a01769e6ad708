// `buildfarm assemble` as a child process against a real registry (Debian's docker-registry,
// plain HTTP on loopback), with skopeo as the independent judge of what was pushed.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  inspectRaw,
  listTags,
  type RunningRegistry,
  skipWithoutRegistryTools,
  startRegistry,
} from "../support/registry.ts";
import { flags, outputOf, runAssemble } from "./cli.ts";
import {
  type AttestationIndexFixture,
  makeAttestationIndex,
  makeImage,
  pushAttestationIndex,
  pushImage,
} from "./fixtures.ts";
import { type FaultyProxy, startFaultyProxy } from "./proxy.ts";
import { tempDirs } from "./temp.ts";

const temp = tempDirs("buildfarm-assemble");

const skip = skipWithoutRegistryTools("registry assemble tests");

const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";

type IndexJson = {
  mediaType: string;
  manifests: {
    mediaType: string;
    digest: string;
    size: number;
    platform?: { os: string; architecture: string; variant?: string };
    annotations?: Record<string, string>;
  }[];
  annotations?: Record<string, string>;
};

describe.skipIf(skip)("buildfarm assemble against a real registry", () => {
  let registry: RunningRegistry;
  const base = () => [
    "--insecure-registry",
    registry.host,
    "--docker-config",
    registry.dockerConfigDir,
  ];

  beforeAll(async () => {
    registry = await startRegistry();
  });
  afterAll(async () => {
    await registry?.stop();
  });

  /** Every tag resolves (for skopeo) to the index, and the repository has exactly these tags. */
  async function expectTagged(repository: string, digest: string, tags: string[]) {
    for (const tag of tags) {
      expect((await inspectRaw(registry, `${registry.host}/${repository}:${tag}`)).digest).toBe(
        digest,
      );
    }
    expect(await listTags(registry, `${registry.host}/${repository}`)).toEqual([...tags].sort());
  }

  describe("two Docker v2 images", () => {
    it("become one OCI index with both platforms, pushed by digest and tagged", async () => {
      const repo = "demo/docker-v2";
      const amd64 = makeImage({
        platform: { os: "linux", architecture: "amd64" },
        format: "docker",
      });
      const arm64 = makeImage({
        platform: { os: "linux", architecture: "arm64" },
        format: "docker",
      });
      await pushImage(registry, repo, amd64);
      await pushImage(registry, repo, arm64);

      const result = await runAssemble([
        ...flags({
          image: `${registry.host}/${repo}`,
          digest: [`linux/amd64=${amd64.manifest.digest}`, `linux/arm64=${arm64.manifest.digest}`],
          tag: ["v1", "latest"],
        }),
        ...base(),
      ]);
      const out = outputOf(result);
      expect(out.mediaType).toBe(OCI_INDEX);
      expect(out.image).toBe(`${registry.host}/${repo}@${out.digest}`);
      expect(out.platforms).toEqual(["linux/amd64", "linux/arm64"]);
      expect(out.tags).toEqual(["v1", "latest"]);

      const pushed = await inspectRaw(registry, `${registry.host}/${repo}@${out.digest}`);
      expect(pushed.digest).toBe(out.digest);
      const index = pushed.json as IndexJson;
      expect(index.mediaType).toBe(OCI_INDEX);
      expect(index.manifests).toEqual([
        {
          mediaType: amd64.manifest.mediaType,
          digest: amd64.manifest.digest,
          size: amd64.manifest.size,
          platform: { architecture: "amd64", os: "linux" },
        },
        {
          mediaType: arm64.manifest.mediaType,
          digest: arm64.manifest.digest,
          size: arm64.manifest.size,
          platform: { architecture: "arm64", os: "linux" },
        },
      ]);
      await expectTagged(repo, out.digest, ["v1", "latest"]);
    });

    it("become a Docker manifest list with --format docker", async () => {
      const repo = "demo/docker-list";
      const amd64 = makeImage({
        platform: { os: "linux", architecture: "amd64" },
        format: "docker",
      });
      const armv7 = makeImage({
        platform: { os: "linux", architecture: "arm", variant: "v7" },
        format: "docker",
      });
      await pushImage(registry, repo, amd64);
      await pushImage(registry, repo, armv7);

      const out = outputOf(
        await runAssemble([
          ...flags({
            image: `${registry.host}/${repo}`,
            digest: [
              `linux/amd64=${amd64.manifest.digest}`,
              `linux/arm/v7=${armv7.manifest.digest}`,
            ],
            format: "docker",
            tag: "v1",
          }),
          ...base(),
        ]),
      );
      expect(out.mediaType).toBe(DOCKER_LIST);
      expect(out.platforms).toEqual(["linux/amd64", "linux/arm/v7"]);
      const pushed = await inspectRaw(registry, `${registry.host}/${repo}:v1`);
      expect(pushed.digest).toBe(out.digest);
      expect((pushed.json as IndexJson).mediaType).toBe(DOCKER_LIST);
      expect((pushed.json as IndexJson).manifests.map((m) => m.platform)).toEqual([
        { architecture: "amd64", os: "linux" },
        { architecture: "arm", os: "linux", variant: "v7" },
      ]);
    });
  });

  describe("two OCI images", () => {
    it("become one OCI index carrying the --annotation values, platforms read from the configs", async () => {
      const repo = "demo/oci";
      const amd64 = makeImage({ platform: { os: "linux", architecture: "amd64" }, format: "oci" });
      // BuildKit writes arm64 configs with variant v8; `linux/arm64` names the same platform.
      const arm64 = makeImage({
        platform: { os: "linux", architecture: "arm64", variant: "v8" },
        format: "oci",
      });
      await pushImage(registry, repo, amd64);
      await pushImage(registry, repo, arm64);

      const out = outputOf(
        await runAssemble([
          ...flags({
            image: `${registry.host}/${repo}`,
            digest: [
              `linux/amd64=${amd64.manifest.digest}`,
              `linux/arm64=${arm64.manifest.digest}`,
            ],
            annotation: [
              "org.opencontainers.image.source=https://example.com/app.git",
              "org.opencontainers.image.revision=0123abc",
            ],
            tag: "main",
          }),
          ...base(),
        ]),
      );
      expect(out.platforms).toEqual(["linux/amd64", "linux/arm64/v8"]);
      const index = (await inspectRaw(registry, `${registry.host}/${repo}@${out.digest}`))
        .json as IndexJson;
      expect(index.mediaType).toBe(OCI_INDEX);
      expect(index.annotations).toEqual({
        "org.opencontainers.image.revision": "0123abc",
        "org.opencontainers.image.source": "https://example.com/app.git",
      });
      expect(index.manifests.map((m) => [m.mediaType, m.digest, m.platform])).toEqual([
        [amd64.manifest.mediaType, amd64.manifest.digest, { architecture: "amd64", os: "linux" }],
        [
          arm64.manifest.mediaType,
          arm64.manifest.digest,
          { architecture: "arm64", os: "linux", variant: "v8" },
        ],
      ]);
      await expectTagged(repo, out.digest, ["main"]);
    });

    it("are refused with --format docker, and nothing is pushed", async () => {
      const repo = "demo/oci-as-docker";
      const amd64 = makeImage({ platform: { os: "linux", architecture: "amd64" }, format: "oci" });
      await pushImage(registry, repo, amd64);
      const result = await runAssemble([
        ...flags({
          image: `${registry.host}/${repo}`,
          digest: `linux/amd64=${amd64.manifest.digest}`,
          format: "docker",
          tag: "v1",
        }),
        ...base(),
      ]);
      expect(result.code).toBe(1);
      expect(result.stdout).toBe("");
      expect(lastLine(result.stderr)).toContain(
        `--format docker needs Docker v2 images only, but ${amd64.manifest.digest} is application/vnd.oci.image.manifest.v1+json`,
      );
      expect(await listTags(registry, `${registry.host}/${repo}`)).toEqual([]);
    });
  });

  /** Pushes an amd64 and an arm64 attestation index as BuildKit would, and assembles them. */
  async function assembleAttested(repo: string, tag: string, options: { sbom?: boolean } = {}) {
    const [amd64, arm64] = (["amd64", "arm64"] as const).map((architecture) =>
      makeAttestationIndex(
        makeImage({ platform: { os: "linux", architecture }, format: "oci" }),
        options,
      ),
    ) as [AttestationIndexFixture, AttestationIndexFixture];
    await pushAttestationIndex(registry, repo, amd64);
    await pushAttestationIndex(registry, repo, arm64);
    const out = outputOf(
      await runAssemble([
        ...flags({
          image: `${registry.host}/${repo}`,
          digest: [`linux/amd64=${amd64.index.digest}`, `linux/arm64=${arm64.index.digest}`],
          tag,
        }),
        ...base(),
      ]),
    );
    return { amd64, arm64, out };
  }

  describe("attestation indexes as inputs (BuildKit with provenance)", () => {
    it("are flattened: each image with its attestation manifest, no nested index", async () => {
      const repo = "demo/attested";
      const { amd64, arm64, out } = await assembleAttested(repo, "v2");
      expect(out.platforms).toEqual(["linux/amd64", "linux/arm64"]);
      const index = (await inspectRaw(registry, `${registry.host}/${repo}:v2`)).json as IndexJson;
      expect(index.manifests.some((m) => m.mediaType.includes("index"))).toBe(false);
      expect(index.manifests).toEqual([
        expect.objectContaining({
          digest: amd64.image.manifest.digest,
          platform: { architecture: "amd64", os: "linux" },
        }),
        expect.objectContaining({
          digest: arm64.image.manifest.digest,
          platform: { architecture: "arm64", os: "linux" },
        }),
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: amd64.attestation.manifest.digest,
          size: amd64.attestation.manifest.size,
          platform: { architecture: "unknown", os: "unknown" },
          annotations: {
            "vnd.docker.reference.digest": amd64.image.manifest.digest,
            "vnd.docker.reference.type": "attestation-manifest",
          },
        },
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: arm64.attestation.manifest.digest,
          size: arm64.attestation.manifest.size,
          platform: { architecture: "unknown", os: "unknown" },
          annotations: {
            "vnd.docker.reference.digest": arm64.image.manifest.digest,
            "vnd.docker.reference.type": "attestation-manifest",
          },
        },
      ]);
      // Every child is in the repository, as skopeo sees it.
      for (const child of index.manifests) {
        expect(
          (await inspectRaw(registry, `${registry.host}/${repo}@${child.digest}`)).digest,
        ).toBe(child.digest);
      }
      await expectTagged(repo, out.digest, ["v2"]);
    });
  });

  describe("SBOM attestation indexes as inputs (BuildKit with attest:sbom)", () => {
    it("are flattened with both in-toto layers readable, and the result line lists the attestations", async () => {
      const repo = "demo/sbom";
      const { amd64, arm64, out } = await assembleAttested(repo, "v1", { sbom: true });
      const types = ["https://spdx.dev/Document", "https://slsa.dev/provenance/v0.2"];
      expect(out.attestations).toEqual([
        {
          platform: "linux/amd64",
          digest: amd64.attestation.manifest.digest,
          predicateTypes: types,
        },
        {
          platform: "linux/arm64",
          digest: arm64.attestation.manifest.digest,
          predicateTypes: types,
        },
      ]);
      const index = (await inspectRaw(registry, `${registry.host}/${repo}:v1`)).json as IndexJson;
      const attestations = index.manifests.filter(
        (m) => m.annotations?.["vnd.docker.reference.type"] === "attestation-manifest",
      );
      expect(attestations.map((m) => m.annotations?.["vnd.docker.reference.digest"])).toEqual([
        amd64.image.manifest.digest,
        arm64.image.manifest.digest,
      ]);
      // Each attestation manifest, read back by skopeo, still holds the SPDX and SLSA layers.
      for (const entry of attestations) {
        const manifest = (await inspectRaw(registry, `${registry.host}/${repo}@${entry.digest}`))
          .json as { layers: { annotations?: Record<string, string> }[] };
        expect(manifest.layers.map((l) => l.annotations?.["in-toto.io/predicate-type"])).toEqual(
          types,
        );
      }
    });
  });

  describe("wrong inputs: a clear error and nothing tagged", () => {
    it("a digest that is not in the repository", async () => {
      const repo = "demo/wrong-digest";
      const amd64 = makeImage({ platform: { os: "linux", architecture: "amd64" }, format: "oci" });
      await pushImage(registry, repo, amd64);
      const missing = `sha256:${"0".repeat(64)}`;
      const result = await runAssemble([
        ...flags({
          image: `${registry.host}/${repo}`,
          digest: [`linux/amd64=${amd64.manifest.digest}`, `linux/arm64=${missing}`],
          tag: ["v1", "latest"],
        }),
        ...base(),
      ]);
      expect(result.code).toBe(1);
      expect(result.stdout).toBe("");
      expect(lastLine(result.stderr)).toBe(
        `buildfarm assemble: linux/arm64=${missing}: the manifest ${missing} is not in ${registry.host}/${repo}; every platform must have been pushed by digest to this repository`,
      );
      expect(await listTags(registry, `${registry.host}/${repo}`)).toEqual([]);
    });

    it("an image whose platform is not the one its --digest claims", async () => {
      const repo = "demo/mismatch";
      const amd64 = makeImage({
        platform: { os: "linux", architecture: "amd64" },
        format: "docker",
      });
      const arm64 = makeImage({
        platform: { os: "linux", architecture: "arm64" },
        format: "docker",
      });
      await pushImage(registry, repo, amd64);
      await pushImage(registry, repo, arm64);
      const result = await runAssemble([
        ...flags({
          image: `${registry.host}/${repo}`,
          digest: [`linux/amd64=${arm64.manifest.digest}`, `linux/arm64=${amd64.manifest.digest}`],
          tag: "v1",
        }),
        ...base(),
      ]);
      expect(result.code).toBe(1);
      expect(lastLine(result.stderr)).toBe(
        `buildfarm assemble: linux/amd64=${arm64.manifest.digest}: the image is linux/arm64, not linux/amd64; linux/arm64=${amd64.manifest.digest}: the image is linux/amd64, not linux/arm64`,
      );
      expect(await listTags(registry, `${registry.host}/${repo}`)).toEqual([]);
    });

    it("a digest of another repository is a usage error (exit 2)", async () => {
      const result = await runAssemble([
        ...flags({
          image: `${registry.host}/demo/app`,
          digest: `linux/amd64=${registry.host}/demo/other@sha256:${"a".repeat(64)}`,
        }),
        ...base(),
      ]);
      expect(result.code).toBe(2);
      expect(result.stderr.split("\n")[0]).toContain(
        `--digest "linux/amd64=${registry.host}/demo/other@sha256:${"a".repeat(64)}": ${registry.host}/demo/other is not the --image repository`,
      );
    });
  });

  describe("a busy registry", () => {
    let proxy: FaultyProxy;
    afterAll(async () => {
      await proxy?.stop();
    });

    it("is retried after a 503, honouring Retry-After, and the run succeeds", async () => {
      const repo = "demo/retried";
      const amd64 = makeImage({ platform: { os: "linux", architecture: "amd64" }, format: "oci" });
      await pushImage(registry, repo, amd64);
      let failed = 0;
      proxy = await startFaultyProxy(registry.url, (method, path) => {
        if (failed === 0 && method === "GET" && path.includes("/manifests/")) {
          failed++;
          return { status: 503, headers: { "retry-after": "1" } };
        }
        return undefined;
      });
      const result = await runAssemble([
        ...flags({
          image: `${proxy.host}/${repo}`,
          digest: `linux/amd64=${amd64.manifest.digest}`,
          tag: "v1",
          "insecure-registry": proxy.host,
          "docker-config": registry.dockerConfigDir,
        }),
      ]);
      const out = outputOf(result);
      expect(result.stderr).toMatch(/registry busy, retrying .*status=503 attempt=1 delayMs=1000/);
      const [first, second] = proxy.requests;
      expect(first).toMatchObject({ method: "GET", status: 503 });
      expect(second).toMatchObject({ method: "GET", path: first?.path, status: 200 });
      expect((second?.at ?? 0) - (first?.at ?? 0)).toBeGreaterThanOrEqual(950);
      expect((await inspectRaw(registry, `${registry.host}/${repo}:v1`)).digest).toBe(out.digest);
    });
  });

  describe("the result", () => {
    it("is the same index digest for the same inputs, so a later run can add the tags", async () => {
      const repo = "demo/idempotent";
      const amd64 = makeImage({ platform: { os: "linux", architecture: "amd64" }, format: "oci" });
      await pushImage(registry, repo, amd64);
      const args = [
        "--image",
        `${registry.host}/${repo}`,
        "--digest",
        `linux/amd64=${amd64.manifest.digest}`,
        ...base(),
      ];
      const untagged = outputOf(await runAssemble(args));
      expect(untagged.tags).toEqual([]);
      expect(await listTags(registry, `${registry.host}/${repo}`)).toEqual([]);
      const tagged = outputOf(await runAssemble([...args, "--tag", "v1"]));
      expect(tagged.digest).toBe(untagged.digest);
      await expectTagged(repo, untagged.digest, ["v1"]);
    });

    it("tags with --expect-digest only the index of that digest, and otherwise pushes and tags nothing", async () => {
      const repo = "demo/expected";
      const amd64 = makeImage({ platform: { os: "linux", architecture: "amd64" }, format: "oci" });
      const arm64 = makeImage({ platform: { os: "linux", architecture: "arm64" }, format: "oci" });
      await pushImage(registry, repo, amd64);
      await pushImage(registry, repo, arm64);
      const image = ["--image", `${registry.host}/${repo}`, ...base()];
      const checked = outputOf(
        await runAssemble([...image, "--digest", `linux/amd64=${amd64.manifest.digest}`]),
      );
      // Other inputs make another index: refused before anything is pushed or tagged.
      const other = await runAssemble([
        ...image,
        "--digest",
        `linux/amd64=${amd64.manifest.digest}`,
        "--digest",
        `linux/arm64=${arm64.manifest.digest}`,
        "--tag",
        "v1",
        "--expect-digest",
        checked.digest,
      ]);
      expect(other.code).toBe(1);
      expect(lastLine(other.stderr)).toMatch(
        new RegExp(`not the expected ${checked.digest}; nothing was pushed or tagged$`),
      );
      expect(await listTags(registry, `${registry.host}/${repo}`)).toEqual([]);
      // The same inputs: tagged.
      const tagged = outputOf(
        await runAssemble([
          ...image,
          "--digest",
          `linux/amd64=${amd64.manifest.digest}`,
          "--tag",
          "v1",
          "--expect-digest",
          checked.digest,
        ]),
      );
      expect(tagged.digest).toBe(checked.digest);
      await expectTagged(repo, checked.digest, ["v1"]);
    });

    it("is written to --termination-message-path too: the result, or the error", async () => {
      const repo = "demo/termination";
      const amd64 = makeImage({ platform: { os: "linux", architecture: "amd64" }, format: "oci" });
      await pushImage(registry, repo, amd64);
      const dir = await temp.make();
      const file = join(dir, "termination-log");
      const ok = await runAssemble([
        ...flags({
          image: `${registry.host}/${repo}`,
          digest: `linux/amd64=${amd64.manifest.digest}`,
          tag: "v1",
          "termination-message-path": file,
        }),
        ...base(),
      ]);
      expect(JSON.parse(await readFile(file, "utf8"))).toEqual(outputOf(ok));

      const failed = await runAssemble([
        ...flags({
          image: `${registry.host}/${repo}`,
          digest: `linux/arm64=${amd64.manifest.digest}`,
          "termination-message-path": file,
          "log-format": "json",
        }),
        ...base(),
      ]);
      expect(failed.code).toBe(1);
      const error = JSON.parse(await readFile(file, "utf8")) as { error: string };
      expect(error.error).toContain("the image is linux/amd64, not linux/arm64");
      // JSON logs: every stderr line is a pino record, the last one the failure.
      const records = failed.stderr
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as { level: number; msg: string });
      expect(records.at(-1)).toMatchObject({ level: 50, msg: error.error });
    });
  });
});

function lastLine(text: string): string {
  return text.trim().split("\n").at(-1) ?? "";
}
