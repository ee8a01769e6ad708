// The assemble contract (src/imagebuild/assemble-contract.ts) both ways: what the index and
// tag Jobs pass `buildfarm assemble` is what the command reads, and what the command reports
// is what the operator reads back, for arbitrary valid builds and results.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { output as outputSchema } from "../../src/api/imagebuild.ts";
import { ARCHITECTURES, canonicalPlatform, parsePlatform } from "../../src/api/platform.ts";
import { REGISTRY_HOST, REPOSITORY, TAG } from "../../src/api/reference.ts";
import {
  type AssembleOutput,
  type AssembleStep,
  assembleArgs,
  failureMessageLine,
  type PlatformDigest,
  parseAssembleArgs,
  parseAssembleResult,
  TERMINATION_MESSAGE_LIMIT,
  terminationMessage,
} from "../../src/imagebuild/assemble-contract.ts";
import { BUILD_PATHS } from "../../src/naming.ts";
import { exampleBuild, examplePlan, INDEX_DIGEST } from "./fixtures.ts";

const matching = (pattern: RegExp, maxLength: number) =>
  fc.stringMatching(pattern).filter((s) => s.length > 0 && s.length <= maxLength);
const digestArb = fc
  .uint8Array({ minLength: 32, maxLength: 32 })
  .map((bytes) => `sha256:${Buffer.from(bytes).toString("hex")}`);
const specPlatformArb = fc
  .tuple(fc.constantFrom(...ARCHITECTURES), fc.option(fc.integer({ min: 0, max: 9 })))
  .map(([arch, variant]) => `linux/${arch}${variant === null ? "" : `/v${variant}`}`);

const base = exampleBuild();
const basePlan = examplePlan();

/** An admitted build's inputs to assembleArgs: platforms distinct as admission requires. */
const invocationArb = fc
  .record({
    output: fc
      .record(
        {
          image: matching(REPOSITORY, 200),
          tags: fc.uniqueArray(matching(TAG, 128), { maxLength: 16 }),
          pushSecretRef: fc.constant({ name: "registry-push" }),
        },
        { requiredKeys: ["image", "tags"] },
      )
      .map((output) => outputSchema.safeParse(output))
      .filter((parsed) => parsed.success)
      .map((parsed) => parsed.data),
    digests: fc.uniqueArray(fc.record({ platform: specPlatformArb, digest: digestArb }), {
      selector: (d) => canonicalPlatform(d.platform),
      minLength: 1,
      maxLength: 8,
    }),
    insecureRegistries: fc.uniqueArray(matching(REGISTRY_HOST, 64), { maxLength: 2 }),
    step: fc.record({ tags: fc.boolean(), expectDigest: digestArb }, { requiredKeys: ["tags"] }),
  })
  .map(({ output, digests, insecureRegistries, step }) => ({
    build: { ...base, spec: { ...base.spec, output } },
    plan: { ...basePlan, insecureRegistries },
    digests: digests as PlatformDigest[],
    step: step as AssembleStep,
  }));

describe("assembleArgs ↔ parseAssembleArgs", () => {
  it("the command reads back exactly what the Job asked for", () => {
    fc.assert(
      fc.property(invocationArb, ({ build, plan, digests, step }) => {
        const { output } = build.spec;
        const parsed = parseAssembleArgs(assembleArgs(build, plan, digests, step));
        expect(parsed).toEqual({
          kind: "ok",
          flags: {
            image: output.image,
            digest: digests.map(({ platform, digest }) => ({
              platform: parsePlatform(platform),
              digest,
            })),
            tag: step.tags ? output.tags : [],
            ...(step.expectDigest ? { "expect-digest": step.expectDigest } : {}),
            annotation: [],
            format: "oci",
            ...(output.pushSecretRef ? { "docker-config": BUILD_PATHS.dockerConfig } : {}),
            "insecure-registry": plan.insecureRegistries,
            "termination-message-path": BUILD_PATHS.terminationLog,
            "log-format": "text",
            "log-level": "info",
          },
        });
      }),
      { numRuns: 300 },
    );
  });

  it("the example build's index Job: every platform, the tags, credentials, the result path", () => {
    const digests = [
      { platform: "linux/amd64", digest: `sha256:${"a".repeat(64)}` },
      { platform: "linux/arm64", digest: `sha256:${"b".repeat(64)}` },
    ];
    expect(assembleArgs(base, basePlan, digests)).toEqual([
      "--image",
      "registry.example.com/demo/welcome-to-docker",
      "--digest",
      `linux/amd64=sha256:${"a".repeat(64)}`,
      "--digest",
      `linux/arm64=sha256:${"b".repeat(64)}`,
      "--tag",
      "latest",
      "--tag",
      "main",
      ...basePlan.insecureRegistries.flatMap((host) => ["--insecure-registry", host]),
      "--docker-config",
      BUILD_PATHS.dockerConfig,
      "--termination-message-path",
      BUILD_PATHS.terminationLog,
    ]);
  });
});

const outputArb: fc.Arbitrary<AssembleOutput> = fc.record({
  digest: digestArb,
  image: matching(REPOSITORY, 200).chain((repository) =>
    digestArb.map((digest) => `${repository}@${digest}`),
  ),
  mediaType: fc.constantFrom(
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
  ),
  platforms: fc.uniqueArray(specPlatformArb.map(canonicalPlatform), { minLength: 1, maxLength: 8 }),
  // Short tags, or up to 64 long ones: more than a termination message holds.
  tags: fc.oneof(
    fc.uniqueArray(matching(TAG, 128), { maxLength: 16 }),
    fc
      .integer({ min: 0, max: 64 })
      .map((n) => Array.from({ length: n }, (_, i) => `${"t".repeat(120)}-${i}`)),
  ),
});

describe("AssembleOutput ↔ parseAssembleResult", () => {
  it("the stdout line and the termination message read back as the output", () => {
    fc.assert(
      fc.property(outputArb, (output) => {
        expect(parseAssembleResult(`${JSON.stringify(output)}\n`)).toEqual({
          ok: true,
          value: output,
        });
        const message = terminationMessage(output);
        expect(Buffer.byteLength(message)).toBeLessThanOrEqual(TERMINATION_MESSAGE_LIMIT);
        const read = parseAssembleResult(message);
        // Tags that do not fit are dropped from the end; all else is kept.
        expect(read.ok && read.value).toEqual({
          ...output,
          tags: output.tags.slice(0, read.ok ? read.value.tags.length : 0),
        });
        if (Buffer.byteLength(JSON.stringify(output)) <= TERMINATION_MESSAGE_LIMIT) {
          expect(read.ok && read.value).toEqual(output);
        } else {
          expect(JSON.parse(message).tagsOmitted).toBe(
            output.tags.length - (read.ok ? read.value.tags.length : 0),
          );
        }
      }),
      { numRuns: 300 },
    );
  });

  it("the failure line is never read as a result, and fits the termination message", () => {
    const reason = `denied: ${"x".repeat(10_000)}`;
    const line = failureMessageLine(reason);
    expect(Buffer.byteLength(line)).toBeLessThanOrEqual(TERMINATION_MESSAGE_LIMIT);
    expect(JSON.parse(line).error).toMatch(/^denied: x+…$/);
    expect(parseAssembleResult(line)).toEqual({
      ok: false,
      error: "the index Job's result has no valid digest",
    });
  });
});

describe("the index Job's result from buildfarm assemble", () => {
  const line = JSON.stringify({
    digest: INDEX_DIGEST,
    image: "registry.example.com/demo/welcome-to-docker",
    mediaType: "application/vnd.oci.image.index.v1+json",
    platforms: ["linux/amd64", "linux/arm64"],
    tags: ["latest", "main"],
  });
  it("reads the one JSON line", () => {
    expect(parseAssembleResult(`${line}\n`)).toEqual({ ok: true, value: JSON.parse(line) });
  });
  it.each([
    ["", /empty/],
    [line.slice(0, 50), /truncated or garbled/],
    [JSON.stringify({ image: "x" }), /no valid digest/],
  ])("refuses %j", (message, error) => {
    const parsed = parseAssembleResult(message);
    expect(!parsed.ok && parsed.error).toMatch(error);
  });
});
