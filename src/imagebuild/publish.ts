// The last steps of a build, once every platform has pushed: assemble the index and tag it
// (the index Job), or with spec.verify push the index by digest only, run the check against
// it (the verify Job) and only then tag exactly that index (the tag Job). Pure, like
// decide.ts, whose decideNextStep calls publish() and turns the step into the status; both
// speak the types of decision.ts.
import type { AttestationStatus, PlatformStatus, VerifyStatus } from "../api/imagebuild-status.ts";
import type { ImageBuild } from "../api/resources.ts";
import { indexJobName, tagJobName, verifyJobName } from "../naming.ts";
import { rfc3339 } from "../runtime/time.ts";
import { type PlatformDigest, parseAssembleResult } from "./assemble-contract.ts";
import type { Outcome } from "./conditions.ts";
import { type Action, deleteJob, type Observed } from "./decision.ts";
import { CONTAINERS, indexJob, tagJob, verifyArchitecture, verifyJob } from "./jobs.ts";
import { failureMessage } from "./metadata.ts";
import type { ObservedJob } from "./observe.ts";
import { ownedBy } from "./platform-view.ts";

/** What publishing decided: the build's outcome, and what it learnt on the way. */
export interface PublishStep {
  outcome: Outcome;
  /** The index digest, once the build has shipped (Succeeded). */
  digest?: string;
  /** The check's state, for builds with spec.verify once the index digest is known. */
  verify?: VerifyStatus;
  /** Waiting for something no watch reports (admission): look again later. */
  wait?: boolean;
  /** The index's attestation manifests, as the assemble step that pushed it reported them. */
  attestations?: AttestationStatus[];
}

/** Where one `assemble` Job (index or tag) stands. */
type AssembleState =
  | { state: "missing" }
  | { state: "waiting"; message: string; action?: Action }
  | { state: "done"; digest: string; attestations?: AttestationStatus[] }
  | { state: "failed"; reason: string; message: string };

function assembleState(
  job: ObservedJob | undefined,
  build: ImageBuild,
  what: string,
  failedReason: string,
): AssembleState {
  if (!job) return { state: "missing" };
  if (!ownedBy(job, build)) {
    return {
      state: "waiting",
      message: `Job ${job.name} exists but does not belong to this ImageBuild; delete it`,
    };
  }
  if (job.outcome?.type === "Complete") {
    const pod = job.pods.find((candidate) => candidate.phase === "Succeeded");
    if (!pod) {
      return {
        state: "waiting",
        message: `Job ${job.name} completed but its pod is gone; ${what} again`,
        action: deleteJob(job, `its pod, and the index digest, are gone; ${what} again`),
      };
    }
    const result = parseAssembleResult(pod.containers[CONTAINERS.assemble]?.message);
    if (!result.ok) return { state: "failed", reason: failedReason, message: result.error };
    const { digest, attestations } = result.value;
    return { state: "done", digest, ...(attestations ? { attestations } : {}) };
  }
  if (job.outcome?.type === "Failed") {
    const pod = job.pods.at(-1);
    const container = pod?.containers[CONTAINERS.assemble];
    const timeout = job.outcome.reason === "DeadlineExceeded";
    return {
      state: "failed",
      reason: timeout ? "Timeout" : failedReason,
      message: timeout
        ? `${what} did not finish in time; Job ${job.name} was stopped`
        : `${what} failed: ${failureMessage(container?.message, job.outcome.message ?? `Job ${job.name} failed`)}`,
    };
  }
  return { state: "waiting", message: "" };
}

function digestsOf(platforms: readonly PlatformStatus[]): PlatformDigest[] {
  return platforms.map((p) => ({ platform: p.platform, digest: p.digest as string }));
}

function operatorImage(observed: Observed) {
  return {
    image: observed.operatorImage,
    ...(observed.operatorUser === undefined ? {} : { user: observed.operatorUser }),
  };
}

/** Every platform is pushed: assemble the index (and tag it), or go through spec.verify. */
export function publish(
  build: ImageBuild,
  observed: Observed,
  platforms: PlatformStatus[],
  actions: Action[],
): PublishStep {
  if (build.spec.verify) return verifyThenTag(build, observed, platforms, actions);
  const name = indexJobName(build.metadata.name);
  const admission = observed.admission;
  const waiting = (message: string): PublishStep => ({
    outcome: { phase: "Assembling", reason: "Assembling", message },
  });
  const step = assembleState(observed.indexJob, build, "assembling the index", "AssembleFailed");
  switch (step.state) {
    case "missing":
      if (!admission.admitted) return { ...waiting(admission.message), wait: true };
      actions.push({
        type: "CreateJob",
        object: indexJob(build, admission.plan, digestsOf(platforms), operatorImage(observed)),
      });
      return waiting(`every platform is pushed; Job ${name} assembles the index`);
    case "waiting":
      if (step.action) actions.push(step.action);
      return waiting(step.message || `every platform is pushed; Job ${name} assembles the index`);
    case "failed":
      return { outcome: { phase: "Failed", reason: step.reason, message: step.message } };
    case "done":
      return {
        outcome: {
          phase: "Succeeded",
          reason: "Succeeded",
          message: `pushed ${build.spec.output.image}@${step.digest}`,
        },
        digest: step.digest,
        ...(step.attestations ? { attestations: step.attestations } : {}),
      };
  }
}

/** Why a verify pod is not running yet, when its container waits for a reason worth saying. */
function verifyWaiting(job: ObservedJob): string | undefined {
  const pod = job.pods.at(-1);
  const container = pod?.containers[CONTAINERS.verify];
  if (
    container?.state !== "waiting" ||
    !container.reason ||
    container.reason === "ContainerCreating"
  )
    return undefined;
  return `pod ${pod?.name} waiting: ${container.reason}${container.message ? `: ${container.message}` : ""}`;
}

/**
 * spec.verify: the index is pushed by digest without tags (index Job), the check runs against
 * it (verify Job), and only then are the tags applied to that same digest (tag Job). The
 * digest and the check's outcome are kept in status.verify, so a restart neither loses the
 * one nor runs the other again.
 */
function verifyThenTag(
  build: ImageBuild,
  observed: Observed,
  platforms: PlatformStatus[],
  actions: Action[],
): PublishStep {
  const now = rfc3339(observed.now);
  const admission = observed.admission;
  const plan = admission.admitted ? admission.plan : undefined;
  const repository = build.spec.output.image;
  const previous = build.status?.verify;
  // Attestations of the index, once an assemble step reported them (kept in status after).
  let attestations: AttestationStatus[] | undefined;
  const draft = (outcome: Outcome, verify?: VerifyStatus, wait?: boolean): PublishStep => ({
    outcome,
    ...(verify ? { verify } : {}),
    ...(wait ? { wait } : {}),
    ...(attestations ? { attestations } : {}),
  });

  // 1. The index, pushed by digest only.
  let image = previous?.image;
  if (!image) {
    const name = indexJobName(build.metadata.name);
    const assembling = (message: string, requeue?: boolean) =>
      draft({ phase: "Assembling", reason: "Assembling", message }, undefined, requeue);
    const step = assembleState(observed.indexJob, build, "assembling the index", "AssembleFailed");
    switch (step.state) {
      case "missing":
        if (!plan) return assembling(admission.admitted ? "" : admission.message, true);
        actions.push({
          type: "CreateJob",
          object: indexJob(build, plan, digestsOf(platforms), operatorImage(observed)),
        });
        return assembling(
          `every platform is pushed; Job ${name} assembles the index, untagged until spec.verify passes`,
        );
      case "waiting":
        if (step.action) actions.push(step.action);
        return assembling(
          step.message ||
            `every platform is pushed; Job ${name} assembles the index, untagged until spec.verify passes`,
        );
      case "failed":
        return draft({ phase: "Failed", reason: step.reason, message: step.message });
      case "done":
        image = `${repository}@${step.digest}`;
        attestations = step.attestations;
    }
  }
  const digest = image.slice(image.lastIndexOf("@") + 1);

  // 2. The check.
  const verifyName = verifyJobName(build.metadata.name);
  let verify: VerifyStatus =
    previous?.image === image ? { ...previous } : { phase: "Pending", image };
  const verifying = (reason: string, message: string, requeue?: boolean) =>
    draft({ phase: "Verifying", reason, message }, verify, requeue);
  if (verify.phase !== "Succeeded") {
    const job = observed.verifyJob;
    const architecture =
      build.spec.verify?.image === undefined && plan ? verifyArchitecture(plan) : undefined;
    if (!job) {
      if (!plan) {
        verify = {
          phase: "Pending",
          image,
          ...(admission.admitted ? {} : { message: admission.message }),
        };
        return verifying("Verifying", admission.admitted ? "" : admission.message, true);
      }
      actions.push({ type: "CreateJob", object: verifyJob(build, plan, image) });
      verify = {
        phase: "Pending",
        image,
        job: verifyName,
        ...(architecture ? { architecture } : {}),
        startTime: now,
      };
      return verifying("Verifying", `Job ${verifyName} checks ${image}`);
    }
    if (!ownedBy(job, build)) {
      const message = `Job ${job.name} exists but does not belong to this ImageBuild; delete it`;
      verify = { phase: "Pending", image, message };
      return verifying("Verifying", message);
    }
    verify = {
      ...verify,
      job: job.name,
      ...(architecture && !verify.architecture ? { architecture } : {}),
      startTime: verify.startTime ?? job.startTime ?? now,
    };
    const completed = job.completionTime ?? job.outcome?.at ?? now;
    if (job.outcome?.type === "Failed") {
      const pod = job.pods.at(-1);
      const container = pod?.containers[CONTAINERS.verify];
      const timeout = job.outcome.reason === "DeadlineExceeded";
      const waiting = timeout ? verifyWaiting(job) : undefined;
      const message = timeout
        ? `did not finish within ${build.spec.verify?.timeout} (spec.verify.timeout); Job ${job.name} was stopped${waiting ? `; ${waiting}` : ""}`
        : failureMessage(
            container?.message,
            container?.exitCode !== undefined
              ? `the check exited with code ${container.exitCode}${container.reason ? ` (${container.reason})` : ""}`
              : `Job ${job.name} failed${job.outcome.reason ? ` (${job.outcome.reason})` : ""}`,
          );
      const { message: _before, ...rest } = verify;
      verify = { ...rest, phase: "Failed", completionTime: completed, message };
      return draft(
        {
          phase: "Failed",
          reason: "VerificationFailed",
          message: `the check of ${image} failed, so no tag was applied: ${message}`,
        },
        verify,
      );
    }
    if (job.outcome?.type !== "Complete") {
      const pod = job.pods.at(-1);
      const running =
        pod?.phase === "Running" || pod?.containers[CONTAINERS.verify]?.state === "running";
      const waiting = verifyWaiting(job);
      const { message: _before, ...rest } = verify;
      verify = {
        ...rest,
        phase: running ? "Running" : "Pending",
        ...(waiting ? { message: waiting } : {}),
      };
      return verifying("Verifying", `Job ${job.name} checks ${image}`);
    }
    // A Job is Complete only when its pod succeeded: the check passed.
    verify = {
      ...verify,
      phase: "Succeeded",
      completionTime: completed,
      message: "the check passed",
    };
  }

  // 3. The tags, on exactly the checked index.
  const succeeded = () =>
    draft(
      {
        phase: "Succeeded",
        reason: "Succeeded",
        message: `pushed ${image}, verified`,
      },
      verify,
    );
  if (build.spec.output.tags.length === 0) return { ...succeeded(), digest };
  const tagName = tagJobName(build.metadata.name);
  const step = assembleState(observed.tagJob, build, "tagging", "TagFailed");
  switch (step.state) {
    case "missing":
      if (!plan) return verifying("Tagging", admission.admitted ? "" : admission.message, true);
      actions.push({
        type: "CreateJob",
        object: tagJob(build, plan, digestsOf(platforms), digest, operatorImage(observed)),
      });
      return verifying("Tagging", `the check passed; Job ${tagName} applies the tags to ${image}`);
    case "waiting":
      if (step.action) actions.push(step.action);
      return verifying(
        "Tagging",
        step.message || `the check passed; Job ${tagName} applies the tags to ${image}`,
      );
    case "failed":
      return draft({ phase: "Failed", reason: step.reason, message: step.message }, verify);
    case "done":
      if (step.digest !== digest) {
        return draft(
          {
            phase: "Failed",
            reason: "TagFailed",
            message: `Job ${tagName} tagged ${step.digest}, not the checked index ${digest}`,
          },
          verify,
        );
      }
      attestations = step.attestations ?? attestations;
      return { ...succeeded(), digest };
  }
}
