// Issue 21 on the build side, without BuildKit: spec.attestations as buildctl argv, the
// attestations assemble reports landing in status, and the trust rule of Untrusted pools for
// registry cache refs. Real provenance builds are in test/buildkit/attestations.test.ts.
import { describe, expect, it } from "vitest";
import { admit } from "../../src/imagebuild/admission.ts";
import { buildctlArgv } from "../../src/imagebuild/argv.ts";
import { terminationMessage } from "../../src/imagebuild/assemble-contract.ts";
import { decideNextStep } from "../../src/imagebuild/decide.ts";
import type { Observed } from "../../src/imagebuild/decision.ts";
import { buildJob, indexJob } from "../../src/imagebuild/jobs.ts";
import { isUntrustedCacheRef } from "../../src/imagebuild/trust.ts";
import {
  DIGEST_AMD64,
  DIGEST_ARM64,
  exampleBuild,
  examplePlan,
  examplePool,
  INDEX_DIGEST,
  job,
  metadataJson,
  T0,
} from "./fixtures.ts";

type Json = Record<string, unknown>;
const DOCKER = { type: "kubernetes.io/dockerconfigjson", keys: [".dockerconfigjson"] };

/** The --opt values of an argv that start with attest:. */
const attestOpts = (argv: string[]) =>
  argv.flatMap((element, i) =>
    argv[i - 1] === "--opt" && element.startsWith("attest:") ? [element] : [],
  );

function argvOf(spec: Json, pool: Json = {}): string[] {
  const build = exampleBuild({ spec });
  const plan = examplePlan(build, examplePool({ spec: pool }));
  return buildctlArgv(build, plan, plan.targets[0]!);
}

describe("spec.attestations in buildctl's argv", () => {
  it("adds nothing by default: no attest option at all (buildctl adds no provenance of its own)", () => {
    expect(attestOpts(argvOf({}))).toEqual([]);
  });

  it.each([
    ["provenance without a mode (min)", { provenance: {} }, ["attest:provenance=mode=min"]],
    ["provenance mode max", { provenance: { mode: "max" } }, ["attest:provenance=mode=max"]],
    [
      "an SBOM, with the pool's default scanner",
      { sbom: {} },
      ["attest:sbom=generator=docker/buildkit-syft-scanner:stable-1"],
    ],
    [
      "both",
      { provenance: { mode: "max" }, sbom: {} },
      ["attest:provenance=mode=max", "attest:sbom=generator=docker/buildkit-syft-scanner:stable-1"],
    ],
  ])("%s", (_, attestations, expected) => {
    const argv = argvOf({ attestations });
    expect(attestOpts(argv)).toEqual(expected);
    // Before --output, after the build's own options, each as `--opt <value>`.
    expect(argv.indexOf(expected[0]!)).toBeLessThan(argv.indexOf("--output"));
  });

  it("runs the scanner the pool names (a mirror), as buildx's --sbom generator= does", () => {
    const argv = argvOf(
      { attestations: { sbom: {} } },
      { buildkit: { sbomGenerator: "registry.example.com/mirror/buildkit-syft-scanner:1.4.0" } },
    );
    expect(attestOpts(argv)).toEqual([
      "attest:sbom=generator=registry.example.com/mirror/buildkit-syft-scanner:1.4.0",
    ]);
  });

  it("leaves the plan of a build without an SBOM as it was (no sbomGenerator, no untrusted)", () => {
    expect(examplePlan()).not.toHaveProperty("sbomGenerator");
    expect(examplePlan()).not.toHaveProperty("untrusted");
  });
});

describe("the attestations assemble reports reach status.attestations", () => {
  const PROVENANCE = "https://slsa.dev/provenance/v0.2";
  const attestations = [
    { platform: "linux/amd64", digest: `sha256:${"1".repeat(64)}`, predicateTypes: [PROVENANCE] },
    { platform: "linux/arm64", digest: `sha256:${"2".repeat(64)}`, predicateTypes: [PROVENANCE] },
  ];
  const report = terminationMessage({
    digest: INDEX_DIGEST,
    image: `registry.example.com/demo/welcome-to-docker@${INDEX_DIGEST}`,
    mediaType: "application/vnd.oci.image.index.v1+json",
    platforms: ["linux/amd64", "linux/arm64"],
    tags: ["latest"],
    attestations,
  });

  function observed(build = exampleBuild()): Observed {
    const plan = examplePlan(build);
    const [amd64, arm64] = plan.targets as [(typeof plan.targets)[0], (typeof plan.targets)[0]];
    const done = (text: string) => ({
      pods: [{ phase: "Succeeded" as const, report: text }],
      outcome: { type: "Complete" as const },
    });
    return {
      now: T0,
      admission: admit(build, {
        pool: examplePool(),
        buildNamespaceLabels: {},
        pushSecret: DOCKER,
      }),
      slots: new Map(),
      clientSecret: true,
      inlineContext: false,
      jobs: {
        amd64: job(buildJob(build, plan, amd64), done(metadataJson("linux/amd64", DIGEST_AMD64))),
        arm64: job(buildJob(build, plan, arm64), done(metadataJson("linux/arm64", DIGEST_ARM64))),
      },
      indexJob: job(
        indexJob(
          build,
          plan,
          [
            { platform: "linux/amd64", digest: DIGEST_AMD64 },
            { platform: "linux/arm64", digest: DIGEST_ARM64 },
          ],
          { image: "ghcr.io/buildfarm/buildfarm:0.1.0" },
        ),
        done(report),
      ),
      logs: {},
      operatorImage: "ghcr.io/buildfarm/buildfarm:0.1.0",
    };
  }

  it("keeps them beside the digest once the index Job succeeded", () => {
    const build = exampleBuild({ spec: { attestations: { provenance: {} } } });
    const decision = decideNextStep(build, observed(build));
    expect(decision.status.phase).toBe("Succeeded");
    expect(decision.status.digest).toBe(INDEX_DIGEST);
    expect(decision.status.attestations).toEqual(attestations);
    // A later reconcile without the index Job's report keeps them, as it keeps the digest.
    const again = decideNextStep(
      { ...build, status: decision.status },
      { ...observed(build), indexJob: undefined },
    );
    expect(again.status.attestations).toEqual(attestations);
  });

  it("has no attestations field for an index without any (today's status, unchanged)", () => {
    const plain = terminationMessage({
      digest: INDEX_DIGEST,
      image: `registry.example.com/demo/welcome-to-docker@${INDEX_DIGEST}`,
      mediaType: "application/vnd.oci.image.index.v1+json",
      platforms: ["linux/amd64", "linux/arm64"],
      tags: [],
    });
    expect(JSON.parse(plain)).not.toHaveProperty("attestations");
    const world = observed();
    const index = world.indexJob as NonNullable<Observed["indexJob"]>;
    const pod = index.pods[0]!;
    const decision = decideNextStep(exampleBuild(), {
      ...world,
      indexJob: {
        ...index,
        pods: [
          { ...pod, containers: { assemble: { ...pod.containers.assemble!, message: plain } } },
        ],
      },
    });
    expect(decision.status.phase).toBe("Succeeded");
    expect(decision.status).not.toHaveProperty("attestations");
  });

  it("drops tags first, then attestations, to fit the 4096-byte termination message", () => {
    const many = Array.from({ length: 16 }, (_, i) => ({
      platform: "linux/amd64",
      digest: `sha256:${i.toString(16).padStart(64, "0")}`,
      predicateTypes: ["https://spdx.dev/Document", PROVENANCE, "x".repeat(100)],
    }));
    const text = terminationMessage({
      digest: INDEX_DIGEST,
      image: `r.example.com/a@${INDEX_DIGEST}`,
      mediaType: "application/vnd.oci.image.index.v1+json",
      platforms: ["linux/amd64"],
      tags: Array.from({ length: 16 }, (_, i) => `tag-${i}-${"t".repeat(100)}`),
      attestations: many,
    });
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(4096);
    const parsed = JSON.parse(text);
    expect(parsed.tags).toEqual([]);
    expect(parsed.tagsOmitted).toBe(16);
    expect(parsed.attestations.length + parsed.attestationsOmitted).toBe(16);
    expect(parsed.attestations.length).toBeGreaterThan(0);
    expect(parsed.digest).toBe(INDEX_DIGEST);
  });
});

describe("Untrusted pools and the registry cache (spec.isolation.trust)", () => {
  const untrusted = examplePool({ spec: { isolation: { trust: "Untrusted" } } });
  const admitOn = (pool: ReturnType<typeof examplePool>, cache: Json | null) =>
    admit(exampleBuild({ spec: { cache } }), {
      pool,
      buildNamespaceLabels: {},
      pushSecret: DOCKER,
    });

  it("reads a ref as untrusted by the -untrusted end of its tag, before the platform suffix", () => {
    expect(isUntrustedCacheRef("registry.example.com/app:buildcache-untrusted")).toBe(true);
    expect(isUntrustedCacheRef("registry.example.com:5000/app:pr-untrusted")).toBe(true);
    expect(isUntrustedCacheRef("registry.example.com/app:buildcache")).toBe(false);
    expect(isUntrustedCacheRef("registry.example.com/app-untrusted")).toBe(false);
    expect(isUntrustedCacheRef("registry.example.com:5000/app")).toBe(false);
    expect(isUntrustedCacheRef("registry.example.com/app:untrusted-cache")).toBe(false);
  });

  it("gives a build on an Untrusted pool its own default ref, exported and imported per platform", () => {
    const result = admitOn(untrusted, { ref: null });
    expect(result.admitted).toBe(true);
    if (!result.admitted) return;
    expect(result.plan.untrusted).toBe(true);
    const build = exampleBuild({ spec: { cache: { ref: null } } });
    const argv = buildctlArgv(build, result.plan, result.plan.targets[1]!);
    const ref = "registry.example.com/demo/welcome-to-docker:buildcache-untrusted-arm64";
    expect(argv[argv.indexOf("--export-cache") + 1]).toContain(`ref=${ref},`);
    expect(argv.filter((_, i) => argv[i - 1] === "--import-cache")).toEqual([
      `type=registry,ref=${ref}`,
    ]);
  });

  it("admits an Untrusted pool's build naming untrusted refs only", () => {
    const result = admitOn(untrusted, {
      ref: "registry.example.com/demo/app:pr-42-untrusted",
      importFrom: ["registry.example.com/demo/app:buildcache-untrusted"],
    });
    expect(result.admitted).toBe(true);
  });

  it.each([
    [
      "spec.cache.ref",
      { ref: "registry.example.com/demo/welcome-to-docker:buildcache" },
      "spec.cache.ref: ",
    ],
    [
      "spec.cache.importFrom[1]",
      {
        importFrom: [
          "registry.example.com/demo/app:main-untrusted",
          "registry.example.com/demo/app:buildcache",
        ],
        ref: "registry.example.com/demo/app:pr-untrusted",
      },
      "spec.cache.importFrom[1]: ",
    ],
  ])("refuses an Untrusted pool's build naming a trusted ref in %s", (_, cache, field) => {
    const result = admitOn(untrusted, cache);
    expect(result).toMatchObject({ admitted: false, phase: "Failed", reason: "TrustedCacheRef" });
    if (result.admitted) return;
    expect(result.message.startsWith(field)).toBe(true);
    expect(result.message).toContain("Untrusted pool buildfarm-builders/default");
    expect(result.message).toContain("-untrusted");
  });

  it("refuses a Trusted pool's build importing what untrusted builds wrote, naming the field", () => {
    const result = admitOn(examplePool(), {
      importFrom: ["registry.example.com/demo/welcome-to-docker:buildcache-untrusted"],
    });
    expect(result).toMatchObject({ admitted: false, phase: "Failed", reason: "UntrustedCacheRef" });
    if (result.admitted) return;
    expect(result.message).toMatch(/^spec\.cache\.importFrom\[0\]: .*never import or export it$/);
  });

  it("refuses a Trusted pool's build exporting under an untrusted ref too", () => {
    const result = admitOn(examplePool({ spec: { isolation: { trust: "Trusted" } } }), {
      ref: "registry.example.com/demo/app:x-untrusted",
    });
    expect(result).toMatchObject({ admitted: false, reason: "UntrustedCacheRef" });
  });

  it("lets a build without a registry cache through on either pool", () => {
    const disabled = {
      disabled: true,
      importFrom: ["registry.example.com/demo/app:buildcache"],
    };
    expect(admitOn(untrusted, disabled).admitted).toBe(true);
  });
});
