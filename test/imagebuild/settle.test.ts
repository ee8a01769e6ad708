import { describe, expect, it } from "vitest";
import type { ImageBuildStatus, PlatformStatus } from "../../src/api/imagebuild-status.ts";
import { statusChange } from "../../src/imagebuild/settle.ts";

const platform = (patch: Partial<PlatformStatus> = {}): PlatformStatus => ({
  platform: "linux/amd64",
  architecture: "amd64",
  phase: "Pending",
  job: "b-amd64",
  startTime: "2026-03-01T10:00:00Z",
  ...patch,
});

const status = (
  platforms: PlatformStatus[],
  patch: Partial<ImageBuildStatus> = {},
  message = "linux/amd64 pending",
): ImageBuildStatus => ({
  phase: "Building",
  platforms,
  conditions: [
    {
      type: "Succeeded",
      status: "Unknown",
      reason: "Building",
      message,
      lastTransitionTime: "2026-03-01T10:00:00Z",
    },
  ],
  ...patch,
});

const base = status([platform()]);

describe("a status change is progress or a transition", () => {
  it.each<[string, ImageBuildStatus | undefined, ImageBuildStatus, string]>([
    ["the same status", base, status([platform()]), "none"],
    ["a first status", undefined, base, "transition"],
    [
      "a pod running, with the summary that says so",
      base,
      status([platform({ phase: "Running", attempts: 1 })], {}, "linux/amd64 running"),
      "progress",
    ],
    [
      "a waiting reason",
      base,
      status([platform({ message: "pod b-amd64-x waiting: ImagePullBackOff" })]),
      "progress",
    ],
    [
      "a retry's message and attempt count",
      status([platform({ phase: "Running", attempts: 1 })]),
      status([platform({ phase: "Pending", attempts: 1, message: "attempt 1 of 2 failed" })]),
      "progress",
    ],
    [
      "a platform that pushed",
      base,
      status([platform({ phase: "Succeeded", digest: `sha256:${"a".repeat(64)}` })]),
      "transition",
    ],
    ["a platform that failed", base, status([platform({ phase: "Failed" })]), "transition"],
    [
      "a Job started for a queued platform",
      status([{ platform: "linux/amd64", phase: "Queued" }]),
      base,
      "transition",
    ],
    ["another place in the queue", base, status([platform()], { queuePosition: 2 }), "transition"],
    [
      "a queued platform's place on its architecture, the build's place unchanged",
      status([{ platform: "linux/amd64", phase: "Queued", message: "position 2" }], {
        queuePosition: 3,
      }),
      status([{ platform: "linux/amd64", phase: "Queued", message: "position 1" }], {
        queuePosition: 3,
      }),
      "progress",
    ],
    ["another phase", base, status([platform()], { phase: "Assembling" }), "transition"],
    [
      "the check of spec.verify starting to run",
      status([platform()], { phase: "Verifying", verify: { phase: "Pending", image: "r@d" } }),
      status([platform()], { phase: "Verifying", verify: { phase: "Running", image: "r@d" } }),
      "progress",
    ],
    [
      "the check of spec.verify passing",
      status([platform()], { phase: "Verifying", verify: { phase: "Running", image: "r@d" } }),
      status([platform()], { phase: "Verifying", verify: { phase: "Succeeded", image: "r@d" } }),
      "transition",
    ],
    [
      "the index digest recorded for the check",
      status([platform()], { phase: "Assembling" }),
      status([platform()], { phase: "Verifying", verify: { phase: "Pending", image: "r@d" } }),
      "transition",
    ],
    [
      "a condition's reason",
      base,
      {
        ...base,
        conditions: [{ ...base.conditions![0]!, reason: "PoolNotReady" }],
      },
      "transition",
    ],
  ])("%s", (_what, previous, next, change) => {
    expect(statusChange(previous, next)).toBe(change);
  });
});
