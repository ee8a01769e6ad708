// ImageBuild status: what the operator reports of a build, per platform and as a whole. Written
// only by the operator, through the status subresource.
import { z } from "zod";
import { conditions, keyedList, observedGeneration } from "./meta.ts";

export const BUILD_PHASES = [
  "Pending",
  "Queued",
  "Building",
  "Assembling",
  "Verifying",
  "Succeeded",
  "Failed",
  "Cancelled",
] as const;
export type BuildPhase = (typeof BUILD_PHASES)[number];
const TERMINAL_PHASES = new Set<BuildPhase>(["Succeeded", "Failed", "Cancelled"]);
/** Whether a build has finished: nothing it does changes any more. */
export function isTerminal(phase: BuildPhase | undefined): boolean {
  return phase !== undefined && TERMINAL_PHASES.has(phase);
}
export const PLATFORM_PHASES = [
  "Pending",
  "Queued",
  "Running",
  "Succeeded",
  "Failed",
  "Cancelled",
] as const;
export type PlatformPhase = (typeof PLATFORM_PHASES)[number];

const stepCount = (what: string) => z.number().int().min(0).max(1_000_000).describe(what);

export const cacheReport = z
  .object({
    steps: stepCount("Build steps (Dockerfile instructions other than FROM)."),
    cached: stepCount("Steps BuildKit took from its cache (local or registry)."),
    executed: stepCount("Steps that ran."),
    executedSeconds: z
      .number()
      .min(0)
      .describe("Seconds the executed steps ran, summed (parallel stages overlap)."),
  })
  .describe(
    "What the build did with the cache, from buildctl's progress stream; absent when it could not be read.",
  );

export const platformStatus = z
  .object({
    platform: z.string().max(32).describe("The platform, e.g. linux/arm64."),
    architecture: z.string().max(16).optional().describe("The pool architecture that builds it."),
    phase: z.enum(PLATFORM_PHASES).describe("Where this platform's build stands."),
    job: z.string().max(63).optional().describe("The Job that builds it."),
    builder: z.string().max(253).optional().describe("The builder address the build was sent to."),
    builderPod: z
      .string()
      .max(253)
      .optional()
      .describe(
        "The builder pod the build was routed to (cache-locality routing); absent when it went through the Service.",
      ),
    digest: z
      .string()
      .max(80)
      .optional()
      .describe("The pushed manifest (or attestation index) digest."),
    startTime: z.string().max(64).optional().describe("When the build started (RFC 3339)."),
    completionTime: z.string().max(64).optional().describe("When it finished (RFC 3339)."),
    attempts: z.number().int().min(0).optional().describe("Pods started for it, retries included."),
    cache: cacheReport.optional(),
    message: z
      .string()
      .max(4096)
      .optional()
      .describe("What happened; for a failure, the last lines of the log."),
  })
  .describe("The state of one platform's build.");
export type PlatformStatus = z.infer<typeof platformStatus>;

export const VERIFY_PHASES = ["Pending", "Running", "Succeeded", "Failed"] as const;
export type VerifyPhase = (typeof VERIFY_PHASES)[number];

export const verifyStatus = z
  .object({
    phase: z.enum(VERIFY_PHASES).describe("Where the check stands."),
    image: z
      .string()
      .max(400)
      .optional()
      .describe("The image checked: <repository>@<digest> of the index, pushed without tags."),
    job: z.string().max(63).optional().describe("The Job that runs the check."),
    architecture: z
      .string()
      .max(16)
      .optional()
      .describe("The node architecture the check runs on, when it runs in the built image."),
    startTime: z.string().max(64).optional().describe("When the check's Job was created."),
    completionTime: z.string().max(64).optional().describe("When the check finished."),
    message: z
      .string()
      .max(4096)
      .optional()
      .describe("What happened; for a failure, the last lines of the check's log."),
  })
  .describe("The check of spec.verify, run before any tag is applied.");
export type VerifyStatus = z.infer<typeof verifyStatus>;

export const attestationStatus = z
  .object({
    platform: z.string().max(32).describe("The platform whose image the attestation describes."),
    digest: z.string().max(80).describe("The attestation manifest's digest in the index."),
    predicateTypes: z
      .array(z.string().max(256))
      .max(8)
      .describe(
        "What it attests, e.g. https://slsa.dev/provenance/v0.2 or https://spdx.dev/Document.",
      ),
  })
  .describe("One attestation manifest of the index (platform unknown/unknown in the index).");
export type AttestationStatus = z.infer<typeof attestationStatus>;

export const imageBuildStatus = z
  .object({
    observedGeneration: observedGeneration("status"),
    phase: z
      .enum(BUILD_PHASES)
      .optional()
      .describe(
        "Pending, Queued, Building, Assembling, Verifying, Succeeded, Failed or Cancelled.",
      ),
    queuePosition: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe("Place in the pool's queue while Queued (1 runs next)."),
    platforms: keyedList(platformStatus, "platform", 8)
      .optional()
      .describe("Per platform: phase, job, builder, digest, timing."),
    verify: verifyStatus.optional(),
    digest: z.string().max(80).optional().describe("Digest of the multi-arch image index."),
    attestations: keyedList(attestationStatus, "digest", 16)
      .optional()
      .describe(
        "The attestation manifests the index holds (spec.attestations), from the step that assembled it; with spec.verify, those of the checked index.",
      ),
    image: z
      .string()
      .max(400)
      .optional()
      .describe("The pushed image by digest: <repository>@<digest>."),
    cachedSteps: z
      .string()
      .max(32)
      .optional()
      .describe(
        "Cached build steps over all steps, summed over the platforms that reported (e.g. 10/12).",
      ),
    startTime: z.string().max(64).optional().describe("When the first platform started building."),
    completionTime: z.string().max(64).optional().describe("When the build finished."),
    conditions: conditions.optional(),
  })
  .describe("The observed state of the build.");
export type ImageBuildStatus = z.infer<typeof imageBuildStatus>;
