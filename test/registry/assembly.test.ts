// assembleIndex, the pure core of `assemble`: fetched manifests in, index document out.
import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parsePlatform } from "../../src/api/platform.ts";
import {
  AssemblyError,
  type AssemblyInput,
  assembleIndex,
  type ManifestNode,
} from "../../src/registry/assembly.ts";
import type { Descriptor, ImageConfig, ImageManifest } from "../../src/registry/manifest.ts";
import {
  type AttestationIndexFixture,
  type ImageFixture,
  makeAttestationIndex,
  makeImage,
} from "./fixtures.ts";

const json = (bytes: Uint8Array) => JSON.parse(Buffer.from(bytes).toString("utf8"));

/** A top-level image as resolve.ts hands it over: manifest plus config. */
function imageNode(image: ImageFixture, descriptor: Partial<Descriptor> = {}): ManifestNode {
  return {
    kind: "image",
    descriptor: {
      mediaType: image.manifest.mediaType,
      digest: image.manifest.digest,
      size: image.manifest.size,
      ...descriptor,
    },
    manifest: json(image.manifest.bytes) as ImageManifest,
    config: json(image.config.bytes) as ImageConfig,
  };
}

/** An attestation index as resolve.ts hands it over: its children fetched, no configs needed. */
function indexNode(fixture: AttestationIndexFixture): ManifestNode {
  const index = json(fixture.index.bytes);
  const children: ManifestNode[] = (index.manifests as Descriptor[]).map((descriptor) => {
    const manifest =
      descriptor.digest === fixture.image.manifest.digest
        ? fixture.image.manifest
        : fixture.attestation.manifest;
    return { kind: "image", descriptor, manifest: json(manifest.bytes) as ImageManifest };
  });
  return {
    kind: "index",
    descriptor: {
      mediaType: fixture.index.mediaType,
      digest: fixture.index.digest,
      size: fixture.index.size,
    },
    index,
    children,
  };
}

function input(platform: string, node: ManifestNode): AssemblyInput {
  return { platform: parsePlatform(platform), digest: node.descriptor.digest, node };
}

function problemsOf(run: () => unknown): string[] {
  try {
    run();
    return [];
  } catch (error) {
    if (error instanceof AssemblyError) return error.problems;
    throw error;
  }
}

const amd64 = makeImage({ platform: { os: "linux", architecture: "amd64" }, format: "oci" });
const arm64 = makeImage({ platform: { os: "linux", architecture: "arm64" }, format: "oci" });
const dockerAmd64 = makeImage({
  platform: { os: "linux", architecture: "amd64" },
  format: "docker",
});
const dockerArm64 = makeImage({
  platform: { os: "linux", architecture: "arm64" },
  format: "docker",
});

describe("the platform of each image", () => {
  it("comes from the image config for a top-level manifest, variant and os.version included", () => {
    const armv7 = makeImage({
      platform: { os: "linux", architecture: "arm", variant: "v7" },
      format: "oci",
    });
    const windows = makeImage({
      platform: { os: "windows", architecture: "amd64" },
      configPlatform: {
        os: "windows",
        architecture: "amd64",
        "os.version": "10.0.20348.2113",
      },
      format: "oci",
    });
    const index = assembleIndex(
      [input("linux/arm/v7", imageNode(armv7)), input("windows/amd64", imageNode(windows))],
      { format: "oci" },
    );
    expect(index.platforms).toEqual(["linux/arm/v7", "windows/amd64"]);
    expect((index.document.manifests as Descriptor[]).map((m) => m.platform)).toEqual([
      { architecture: "arm", os: "linux", variant: "v7" },
      { architecture: "amd64", os: "windows", "os.version": "10.0.20348.2113" },
    ]);
  });

  it("comes from the descriptor when the parent index gives one", () => {
    const noConfigPlatform = makeImage({
      platform: { os: "linux", architecture: "amd64" },
      configPlatform: null,
      format: "oci",
    });
    const node = imageNode(noConfigPlatform, { platform: { os: "linux", architecture: "amd64" } });
    expect(assembleIndex([input("linux/amd64", node)], { format: "oci" }).platforms).toEqual([
      "linux/amd64",
    ]);
  });

  it.each([
    ["linux/arm64", { os: "linux", architecture: "arm64", variant: "v8" }],
    ["linux/arm/v7", { os: "linux", architecture: "arm" }],
    ["linux/amd64", { os: "linux", architecture: "x86_64" }],
    ["linux/arm64", { os: "Linux", architecture: "aarch64" }],
  ])("matches the claim %s after normalisation (%o)", (claim, platform) => {
    const image = makeImage({ platform, format: "oci" });
    expect(
      problemsOf(() => assembleIndex([input(claim, imageNode(image))], { format: "oci" })),
    ).toEqual([]);
  });

  const cases: [string, () => AssemblyInput[], string[]][] = [
    [
      "a platform other than the claim",
      () => [input("linux/amd64", imageNode(arm64))],
      [`linux/amd64=${arm64.manifest.digest}: the image is linux/arm64, not linux/amd64`],
    ],
    [
      "a variant other than the claim",
      () => [
        input(
          "linux/arm/v6",
          imageNode(
            makeImage({
              platform: { os: "linux", architecture: "arm", variant: "v7" },
              format: "oci",
            }),
          ),
        ),
      ],
      [
        expect.stringMatching(
          /: the image is linux\/arm\/v7, not linux\/arm\/v6$/,
        ) as unknown as string,
      ],
    ],
    [
      "a config without os and architecture",
      () => [
        input(
          "linux/amd64",
          imageNode(
            makeImage({
              platform: { os: "linux", architecture: "amd64" },
              configPlatform: null,
              format: "oci",
            }),
          ),
        ),
      ],
      [
        expect.stringMatching(
          /: the image has no platform: neither its descriptor nor its config names os and architecture$/,
        ) as unknown as string,
      ],
    ],
    [
      "an unknown/unknown image (an attestation manifest passed as an input)",
      () => {
        const attestation = makeAttestationIndex(amd64).attestation;
        const node: ManifestNode = {
          kind: "image",
          descriptor: {
            mediaType: attestation.manifest.mediaType,
            digest: attestation.manifest.digest,
            size: attestation.manifest.size,
          },
          manifest: json(attestation.manifest.bytes),
          config: json(attestation.config.bytes),
        };
        return [input("linux/amd64", node)];
      },
      [
        expect.stringMatching(
          /: the image is unknown\/unknown \(an attestation or artifact\), not a runnable image$/,
        ) as unknown as string,
      ],
    ],
    [
      "an artifact whose config is not an image config",
      () => {
        const node = imageNode(amd64);
        if (node.kind === "image")
          node.manifest = {
            ...node.manifest,
            config: {
              ...node.manifest.config,
              mediaType: "application/vnd.cncf.helm.config.v1+json",
            },
          };
        return [input("linux/amd64", node)];
      },
      [
        expect.stringMatching(
          /: the image is not a container image \(its config is application\/vnd.cncf.helm.config.v1\+json\)$/,
        ) as unknown as string,
      ],
    ],
  ];
  it.each(cases)("refuses %s", (_, inputs, problems) => {
    expect(problemsOf(() => assembleIndex(inputs(), { format: "oci" }))).toEqual(problems);
  });
});

describe("attestation indexes (BuildKit with provenance or SBOM)", () => {
  const attestedAmd64 = makeAttestationIndex(amd64);
  const attestedArm64 = makeAttestationIndex(arm64);

  it("are flattened: images first, then each attestation manifest with its annotations", () => {
    const index = assembleIndex(
      [
        input("linux/amd64", indexNode(attestedAmd64)),
        input("linux/arm64", indexNode(attestedArm64)),
      ],
      { format: "oci" },
    );
    expect(index.platforms).toEqual(["linux/amd64", "linux/arm64"]);
    const manifests = index.document.manifests as Descriptor[];
    expect(manifests.map((m) => m.digest)).toEqual([
      amd64.manifest.digest,
      arm64.manifest.digest,
      attestedAmd64.attestation.manifest.digest,
      attestedArm64.attestation.manifest.digest,
    ]);
    expect(manifests[2]).toEqual({
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: attestedAmd64.attestation.manifest.digest,
      size: attestedAmd64.attestation.manifest.size,
      platform: { architecture: "unknown", os: "unknown" },
      annotations: {
        "vnd.docker.reference.digest": amd64.manifest.digest,
        "vnd.docker.reference.type": "attestation-manifest",
      },
    });
  });

  it("keep an SBOM attestation (SPDX beside provenance) whole, and report what each attests", () => {
    const sbomAmd64 = makeAttestationIndex(amd64, { sbom: true });
    const sbomArm64 = makeAttestationIndex(arm64, { sbom: true });
    const index = assembleIndex(
      [input("linux/amd64", indexNode(sbomAmd64)), input("linux/arm64", indexNode(sbomArm64))],
      { format: "oci" },
    );
    const manifests = index.document.manifests as Descriptor[];
    // The attestation manifests are the very ones BuildKit pushed (same digest, so the same
    // two layers), unknown/unknown, each pointing at its own platform's image.
    expect(manifests.slice(2)).toEqual(
      [sbomAmd64, sbomArm64].map((fixture) => ({
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        digest: fixture.attestation.manifest.digest,
        size: fixture.attestation.manifest.size,
        platform: { architecture: "unknown", os: "unknown" },
        annotations: {
          "vnd.docker.reference.digest": fixture.image.manifest.digest,
          "vnd.docker.reference.type": "attestation-manifest",
        },
      })),
    );
    expect(json(sbomAmd64.attestation.manifest.bytes).layers).toHaveLength(2);
    expect(index.attestations).toEqual([
      {
        platform: "linux/amd64",
        digest: sbomAmd64.attestation.manifest.digest,
        predicateTypes: ["https://spdx.dev/Document", "https://slsa.dev/provenance/v0.2"],
      },
      {
        platform: "linux/arm64",
        digest: sbomArm64.attestation.manifest.digest,
        predicateTypes: ["https://spdx.dev/Document", "https://slsa.dev/provenance/v0.2"],
      },
    ]);
  });

  it("report no attestations for plain images", () => {
    const index = assembleIndex([input("linux/amd64", imageNode(amd64))], { format: "oci" });
    expect(index.attestations).toEqual([]);
  });

  it("mix with plain images", () => {
    const index = assembleIndex(
      [input("linux/amd64", indexNode(attestedAmd64)), input("linux/arm64", imageNode(arm64))],
      { format: "oci" },
    );
    expect((index.document.manifests as Descriptor[]).map((m) => m.digest)).toEqual([
      amd64.manifest.digest,
      arm64.manifest.digest,
      attestedAmd64.attestation.manifest.digest,
    ]);
  });

  it("refuse an attestation that refers to another image", () => {
    const stray = makeAttestationIndex(amd64, { subject: arm64.manifest.digest });
    expect(
      problemsOf(() => assembleIndex([input("linux/amd64", indexNode(stray))], { format: "oci" })),
    ).toEqual([
      `linux/amd64=${stray.index.digest}: attestation manifest ${stray.attestation.manifest.digest} refers to ${arm64.manifest.digest}, not to the image ${amd64.manifest.digest}`,
    ]);
  });

  it("refuse an index holding several platforms, or none, or a nested index", () => {
    const multi: ManifestNode = {
      kind: "index",
      descriptor: {
        mediaType: "application/vnd.oci.image.index.v1+json",
        digest: `sha256:${"1".repeat(64)}`,
        size: 1,
      },
      index: { schemaVersion: 2, manifests: [] },
      children: [
        {
          ...imageNode(amd64),
          descriptor: {
            ...imageNode(amd64).descriptor,
            platform: { os: "linux", architecture: "amd64" },
          },
        },
        {
          ...imageNode(arm64),
          descriptor: {
            ...imageNode(arm64).descriptor,
            platform: { os: "linux", architecture: "arm64" },
          },
        },
      ],
    };
    const empty: ManifestNode = {
      ...multi,
      descriptor: { ...multi.descriptor, digest: `sha256:${"2".repeat(64)}` },
      children: [],
    };
    const nested: ManifestNode = {
      ...multi,
      descriptor: { ...multi.descriptor, digest: `sha256:${"3".repeat(64)}` },
      children: [
        { ...empty, descriptor: { ...empty.descriptor, digest: `sha256:${"4".repeat(64)}` } },
      ],
    };
    expect(
      problemsOf(() =>
        assembleIndex(
          [input("linux/amd64", multi), input("linux/arm64", empty), input("linux/s390x", nested)],
          {
            format: "oci",
          },
        ),
      ),
    ).toEqual([
      `linux/amd64=sha256:${"1".repeat(64)}: the index holds 2 images (linux/amd64, linux/arm64); pass each platform's own manifest`,
      `linux/arm64=sha256:${"2".repeat(64)}: the index holds no runnable image`,
      `linux/s390x=sha256:${"3".repeat(64)}: its manifest sha256:${"4".repeat(64)} is itself an index; nested indexes are not flattened`,
      `linux/s390x=sha256:${"3".repeat(64)}: the index holds no runnable image`,
    ]);
  });

  it("refuse an unknown/unknown child that is not marked as an attestation", () => {
    const fixture = makeAttestationIndex(amd64);
    const node = indexNode(fixture);
    if (node.kind !== "index") throw new Error("not an index");
    const [image, attestation] = node.children as [ManifestNode, ManifestNode];
    const unmarked = { ...attestation, descriptor: { ...attestation.descriptor, annotations: {} } };
    const problems = problemsOf(() =>
      assembleIndex([input("linux/amd64", { ...node, children: [image, unmarked] })], {
        format: "oci",
      }),
    );
    expect(problems).toEqual([
      `linux/amd64=${fixture.index.digest}: its manifest ${fixture.attestation.manifest.digest} is unknown/unknown (an attestation or artifact), not a runnable image`,
    ]);
  });
});

describe("duplicates", () => {
  it("refuses two images of one platform, however the claims are spelled", () => {
    const other = makeImage({
      platform: { os: "linux", architecture: "arm64", variant: "v8" },
      format: "oci",
      content: "2",
    });
    expect(
      problemsOf(() =>
        assembleIndex(
          [input("linux/arm64", imageNode(arm64)), input("linux/arm64/v8", imageNode(other))],
          { format: "oci" },
        ),
      ),
    ).toEqual([
      `linux/arm64/v8 appears twice (linux/arm64=${arm64.manifest.digest} and linux/arm64/v8=${other.manifest.digest}); an index holds one image per platform`,
    ]);
  });

  it("refuses no inputs at all", () => {
    expect(problemsOf(() => assembleIndex([], { format: "oci" }))).toEqual([
      "no --digest given: nothing to assemble",
    ]);
  });
});

describe("formats and annotations", () => {
  it("writes an OCI index by default, with the annotations sorted by key", () => {
    const index = assembleIndex([input("linux/amd64", imageNode(dockerAmd64))], {
      format: "oci",
      annotations: {
        "org.opencontainers.image.version": "1.2.3",
        "org.opencontainers.image.created": "2025-01-01T00:00:00Z",
      },
    });
    expect(index.mediaType).toBe("application/vnd.oci.image.index.v1+json");
    expect(Buffer.from(index.bytes).toString("utf8")).toBe(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.index.v1+json",
        manifests: [
          {
            mediaType: dockerAmd64.manifest.mediaType,
            digest: dockerAmd64.manifest.digest,
            size: dockerAmd64.manifest.size,
            platform: { architecture: "amd64", os: "linux" },
          },
        ],
        annotations: {
          "org.opencontainers.image.created": "2025-01-01T00:00:00Z",
          "org.opencontainers.image.version": "1.2.3",
        },
      }),
    );
    expect(index.digest).toBe(`sha256:${createHash("sha256").update(index.bytes).digest("hex")}`);
  });

  it("writes a Docker manifest list with --format docker when every input is Docker v2", () => {
    const index = assembleIndex(
      [input("linux/amd64", imageNode(dockerAmd64)), input("linux/arm64", imageNode(dockerArm64))],
      { format: "docker" },
    );
    expect(index.mediaType).toBe("application/vnd.docker.distribution.manifest.list.v2+json");
    expect(index.document.mediaType).toBe(
      "application/vnd.docker.distribution.manifest.list.v2+json",
    );
  });

  it("refuses --format docker for OCI inputs, attestations and annotations", () => {
    const attested = makeAttestationIndex(amd64);
    expect(
      problemsOf(() =>
        assembleIndex(
          [input("linux/amd64", indexNode(attested)), input("linux/arm64", imageNode(dockerArm64))],
          {
            format: "docker",
            annotations: { a: "b" },
          },
        ),
      ),
    ).toEqual([
      `--format docker needs Docker v2 images only, but ${amd64.manifest.digest} is application/vnd.oci.image.manifest.v1+json; use --format oci`,
      `--format docker needs Docker v2 images only, but ${attested.attestation.manifest.digest} is application/vnd.oci.image.manifest.v1+json (an attestation manifest); use --format oci`,
      "--format docker: a Docker manifest list cannot carry --annotation; use --format oci",
    ]);
  });
});

describe("properties", () => {
  const PLATFORMS = [
    "linux/amd64",
    "linux/arm64",
    "linux/arm/v7",
    "linux/arm/v6",
    "linux/ppc64le",
    "linux/s390x",
    "linux/riscv64",
    "linux/386",
  ];
  const arbitraryInputs = fc
    .uniqueArray(fc.constantFrom(...PLATFORMS), { minLength: 1, maxLength: PLATFORMS.length })
    .chain((platforms) =>
      fc.tuple(
        fc.constant(platforms),
        fc.array(fc.constantFrom("oci" as const, "docker" as const), {
          minLength: platforms.length,
          maxLength: platforms.length,
        }),
        fc.array(fc.boolean(), { minLength: platforms.length, maxLength: platforms.length }),
      ),
    )
    .map(([platforms, formats, attested]) =>
      platforms.map((platform, i) => {
        const image = makeImage({ platform: parsePlatform(platform), format: formats[i] ?? "oci" });
        return attested[i]
          ? input(platform, indexNode(makeAttestationIndex(image)))
          : input(platform, imageNode(image));
      }),
    );

  it("the index holds each claimed platform once, every attestation next to its image, never unknown as a platform", () => {
    fc.assert(
      fc.property(arbitraryInputs, (inputs) => {
        const index = assembleIndex(inputs, { format: "oci" });
        expect(index.platforms).toEqual(
          inputs.map(
            (i) =>
              `${i.platform.os}/${i.platform.architecture}${i.platform.variant ? `/${i.platform.variant}` : ""}`,
          ),
        );
        expect(index.platforms.some((p) => p.includes("unknown"))).toBe(false);
        const manifests = index.document.manifests as Descriptor[];
        const images = manifests.filter((m) => !m.annotations?.["vnd.docker.reference.type"]);
        const attestations = manifests.filter(
          (m) => m.annotations?.["vnd.docker.reference.type"] === "attestation-manifest",
        );
        expect(images).toHaveLength(inputs.length);
        expect(attestations).toHaveLength(inputs.filter((i) => i.node.kind === "index").length);
        for (const attestation of attestations) {
          expect(attestation.platform).toEqual({ architecture: "unknown", os: "unknown" });
          expect(images.map((m) => m.digest)).toContain(
            attestation.annotations?.["vnd.docker.reference.digest"],
          );
        }
        expect(
          manifests.every((m) => !m.mediaType.includes("index") && !m.mediaType.includes("list")),
        ).toBe(true);
        expect(index.digest).toBe(
          `sha256:${createHash("sha256").update(index.bytes).digest("hex")}`,
        );
      }),
      { numRuns: 60 },
    );
  });

  it("the same inputs give the same bytes; swapping two claims is always refused", () => {
    fc.assert(
      fc.property(
        arbitraryInputs.filter((inputs) => inputs.length >= 2),
        fc.nat(),
        (inputs, seed) => {
          expect(assembleIndex(inputs, { format: "oci" }).bytes).toEqual(
            assembleIndex(structuredClone(inputs), { format: "oci" }).bytes,
          );
          const i = seed % inputs.length;
          const j = (i + 1) % inputs.length;
          const swapped = inputs.map((x, k) =>
            k === i
              ? { ...x, platform: inputs[j]!.platform }
              : k === j
                ? { ...x, platform: inputs[i]!.platform }
                : x,
          );
          const problems = problemsOf(() => assembleIndex(swapped, { format: "oci" }));
          expect(problems.length).toBeGreaterThanOrEqual(2);
          expect(problems.every((p) => / is linux\/.*, not linux\//.test(p))).toBe(true);
        },
      ),
      { numRuns: 40 },
    );
  });
});
