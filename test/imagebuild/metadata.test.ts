import { describe, expect, it } from "vitest";
import { type Platform, parsePlatform, samePlatform } from "../../src/api/platform.ts";
import {
  cacheExportError,
  failureMessage,
  MAX_FAILURE_MESSAGE,
  parseBuildMetadata,
} from "../../src/imagebuild/metadata.ts";
import { observeJob } from "../../src/imagebuild/observe.ts";
import { DIGEST_AMD64, fixture, metadataJson } from "./fixtures.ts";

/** A descriptor's platform as another tool may spell it (upper case), which --digest refuses. */
function parsePlatformLoosely(text: string): Platform {
  const [os = "", architecture = "", variant] = text.split("/");
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

describe("buildctl's metadata file, as real BuildKit v0.24 writes it", () => {
  it("gives the digest, the descriptor and an exported cache", () => {
    expect(parseBuildMetadata(fixture("metadata.json"), "linux/amd64")).toEqual({
      ok: true,
      value: {
        digest: "sha256:3c3c3d05b0a8a68615ae510262fcf3391076f9b196a554c3e49f64890c1c93ec",
        descriptor: {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: "sha256:3c3c3d05b0a8a68615ae510262fcf3391076f9b196a554c3e49f64890c1c93ec",
          size: 476,
          platform: { os: "linux", architecture: "amd64" },
        },
        cacheExported: true,
      },
    });
  });

  it("has no cache.manifest when ignore-error swallowed a refused cache export", () => {
    const parsed = parseBuildMetadata(fixture("metadata-cache-refused.json"), "linux/amd64");
    expect(parsed.ok && parsed.value.cacheExported).toBe(false);
  });

  it("accepts arm64/v8 for arm64 and an index (attestations) without a platform", () => {
    expect(parseBuildMetadata(metadataJson("linux/arm64/v8", DIGEST_AMD64), "linux/arm64").ok).toBe(
      true,
    );
    const index = JSON.stringify({
      "containerimage.digest": DIGEST_AMD64,
      "containerimage.descriptor": {
        mediaType: "application/vnd.oci.image.index.v1+json",
        digest: DIGEST_AMD64,
        size: 1609,
      },
    });
    expect(parseBuildMetadata(index, "linux/arm64")).toMatchObject({
      ok: true,
      value: { digest: DIGEST_AMD64 },
    });
  });
});

describe("the metadata's platform is checked as assemble checks the pushed image", () => {
  // One rule (src/api/platform.ts) on both sides: a platform the index Job would accept for
  // this digest does not fail here first, and one it would refuse fails here, earlier.
  it.each([
    ["linux/aarch64", "linux/arm64", true],
    ["Linux/ARM64", "linux/arm64", true],
    ["linux/arm/7", "linux/arm", true],
    ["linux/armhf", "linux/arm/v7", true],
    ["linux/arm/v6", "linux/arm", false],
    ["linux/amd64/v3", "linux/amd64", false],
  ])("a descriptor for %s built %s: %s", (built, platform, ok) => {
    expect(parseBuildMetadata(metadataJson(built, DIGEST_AMD64), platform).ok).toBe(ok);
    expect(
      samePlatform(parsePlatformLoosely(built), parsePlatform(platform)),
      "assemble's own comparison",
    ).toBe(ok);
  });
});

describe("a termination message that is not usable metadata fails that platform clearly", () => {
  const good = metadataJson("linux/amd64", DIGEST_AMD64);
  it.each([
    ["empty", "", /metadata is empty/],
    [
      "cut at the front (the kubelet keeps the last 4096 bytes)",
      good.slice(40),
      /is not JSON \(cut at the kubelet's 4096-byte limit, or garbled\)/,
    ],
    ["cut at the end", good.slice(0, -30), /truncated or garbled JSON/],
    [
      "a log line instead",
      "cp: can't stat '/out/metadata.json': No such file or directory",
      /is not JSON/,
    ],
    [
      "JSON without a digest",
      JSON.stringify({ "image.name": "x" }),
      /no valid containerimage.digest/,
    ],
    [
      "a digest that is not sha256",
      good.replaceAll(DIGEST_AMD64, "sha256:abc"),
      /no valid containerimage.digest/,
    ],
    [
      "two different digests",
      JSON.stringify({ ...JSON.parse(good), "containerimage.digest": `sha256:${"f".repeat(64)}` }),
      /names two digests/,
    ],
    [
      "another platform than asked for",
      metadataJson("linux/arm64", DIGEST_AMD64),
      /says it built linux\/arm64, not linux\/amd64/,
    ],
  ])("%s", (_name, message, error) => {
    const parsed = parseBuildMetadata(message, "linux/amd64");
    expect(parsed.ok).toBe(false);
    expect(!parsed.ok && parsed.error).toMatch(error);
    expect(!parsed.ok && parsed.error).toMatch(/^the linux\/amd64 build's metadata/);
  });

  it("quotes at most 200 characters of a garbled message", () => {
    const parsed = parseBuildMetadata(`x${"y".repeat(5000)}`, "linux/amd64");
    expect(!parsed.ok && parsed.error.length).toBeLessThan(400);
  });
});

describe("the registry's reason for a refused cache export, from the buildctl log", () => {
  it("is the ERROR line of the `exporting cache` step (real BuildKit v0.24 log)", () => {
    expect(cacheExportError(fixture("cache-export-refused.txt"))).toBe(
      "error writing layer blob: unexpected status from POST request to http://127.0.0.1:5056/v2/demo/app/blobs/uploads/: 405 Method Not Allowed",
    );
  });
  it("ignores the cache import error every first build has", () => {
    const log =
      "#3 importing cache manifest from r/app:buildcache-amd64\n#3 ERROR: failed to configure registry cache importer: not found\n#8 exporting cache to registry\n#8 DONE 0.0s\n";
    expect(cacheExportError(log)).toBeUndefined();
  });
});

describe("a failed build's message", () => {
  it("leads with buildctl's error line, then the log tail (real BuildKit v0.24 log)", () => {
    const message = failureMessage(fixture("build-failed.txt"), "fallback");
    expect(message.split("\n")[0]).toMatch(
      /^failed to solve: failed to compute cache key: .*"\/missing.txt": not found$/,
    );
    expect(message).toContain("--- log tail ---");
    expect(message).toContain(">>> COPY missing.txt /");
  });
  it("is capped, keeping the end of the log", () => {
    const tail = `${"#5 step output line\n".repeat(500)}error: failed to solve: exit code 1`;
    const message = failureMessage(tail, "fallback");
    expect(message.length).toBeLessThanOrEqual(MAX_FAILURE_MESSAGE);
    expect(message.startsWith("failed to solve: exit code 1")).toBe(true);
    expect(message.endsWith("error: failed to solve: exit code 1")).toBe(true);
  });
  it("falls back when the log is empty", () => {
    expect(failureMessage(undefined, "container buildctl exited 1")).toBe(
      "container buildctl exited 1",
    );
  });
});

describe("observing a Job and its pods", () => {
  const job = {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name: "b-amd64",
      uid: "job-uid",
      ownerReferences: [
        {
          apiVersion: "buildfarm.dev/v1alpha1",
          kind: "ImageBuild",
          name: "b",
          uid: "build-uid",
          controller: true,
        },
      ],
    },
    status: {
      failed: 1,
      succeeded: 1,
      startTime: "2026-03-01T10:00:00Z",
      completionTime: "2026-03-01T10:05:00Z",
      conditions: [
        { type: "SuccessCriteriaMet", status: "True" },
        { type: "Complete", status: "True", lastTransitionTime: "2026-03-01T10:05:00Z" },
      ],
    },
  };
  const pod = (name: string, created: string, phase: string, owner = "job-uid") => ({
    metadata: {
      name,
      creationTimestamp: created,
      ownerReferences: [{ uid: owner, controller: true }],
    },
    status: {
      phase,
      initContainerStatuses: [
        {
          name: "buildctl",
          state: { terminated: { exitCode: phase === "Failed" ? 1 : 0, message: "tail" } },
        },
      ],
      containerStatuses: [
        {
          name: "report",
          state:
            phase === "Failed"
              ? { waiting: { reason: "PodInitializing" } }
              : { terminated: { exitCode: 0, message: "{}" } },
        },
      ],
    },
  });

  it("keeps the terminal condition, counts, owner and its own pods oldest first", () => {
    const observed = observeJob(
      job as never,
      [
        pod("b-amd64-2", "2026-03-01T10:02:00Z", "Succeeded"),
        pod("b-amd64-1", "2026-03-01T10:00:00Z", "Failed"),
        pod("other", "2026-03-01T10:01:00Z", "Running", "someone-else"),
      ] as never,
    );
    expect(observed).toMatchObject({
      name: "b-amd64",
      controllerUid: "build-uid",
      deleting: false,
      failed: 1,
      succeeded: 1,
      completionTime: "2026-03-01T10:05:00Z",
      outcome: { type: "Complete", at: "2026-03-01T10:05:00Z" },
    });
    expect(observed.pods.map((p) => p.name)).toEqual(["b-amd64-1", "b-amd64-2"]);
    expect(observed.pods[0]?.containers.buildctl).toEqual({
      state: "terminated",
      exitCode: 1,
      message: "tail",
    });
    expect(observed.pods[1]?.containers.report).toMatchObject({
      state: "terminated",
      exitCode: 0,
      message: "{}",
    });
  });

  it("accepts client-node's Date timestamps too", () => {
    const dated = {
      ...job,
      status: { ...job.status, startTime: new Date("2026-03-01T10:00:00.123Z") },
    };
    expect(observeJob(dated as never, []).startTime).toBe("2026-03-01T10:00:00Z");
  });
});
