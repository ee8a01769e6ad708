// Which status changes are written at once, and which may wait a little. A build's status
// moves through transitions that matter to whoever watches it (a phase, a condition's status
// or reason, a Job started, a digest recorded, a platform finished, a place in the queue) and
// through progress that comes and goes within seconds: a pod going from Pending to Running,
// its attempt count, a waiting reason, a queued platform's place on its architecture, the
// check of spec.verify starting to run, the condition messages that summarize them. A
// transition is written at once. Progress is written once it has lasted STATUS_SETTLE_MS
// (or with the next transition): a platform that builds for minutes shows Running a few
// seconds after it started, and a flap that is over by then costs no write.
import type { ImageBuildStatus, PlatformStatus, VerifyStatus } from "../api/imagebuild-status.ts";
import { deepEqual } from "../runtime/hash.ts";

/** How long progress may wait for a transition to be written with. */
export const STATUS_SETTLE_MS = 5000;

export type StatusChange = "none" | "progress" | "transition";

const ACTIVE = new Set(["Pending", "Running"]);

/** A platform without its progress: what a transition of it changes. */
function platformTransition(platform: PlatformStatus): Partial<PlatformStatus> {
  if (platform.phase === "Queued") {
    // Its place per architecture; the build's queuePosition (the worst) is the transition.
    const { message: _message, ...rest } = platform;
    return rest;
  }
  if (!ACTIVE.has(platform.phase)) return platform;
  const { phase: _phase, message: _message, attempts: _attempts, ...rest } = platform;
  return rest;
}

/** The check of spec.verify: its pod starting and its waiting reasons are progress too. */
function verifyTransition(verify: VerifyStatus | undefined): unknown {
  if (!verify || !ACTIVE.has(verify.phase)) return verify;
  const { phase: _phase, message: _message, ...rest } = verify;
  return rest;
}

function transitionOf(status: ImageBuildStatus): unknown {
  return {
    ...status,
    verify: verifyTransition(status.verify),
    platforms: (status.platforms ?? []).map(platformTransition),
    conditions: (status.conditions ?? []).map(({ message: _m, lastTransitionTime: _t, ...c }) => c),
  };
}

/** Whether `next` differs from `previous`, and if so whether by a transition or by progress. */
export function statusChange(
  previous: ImageBuildStatus | undefined,
  next: ImageBuildStatus,
): StatusChange {
  if (deepEqual(previous ?? {}, next)) return "none";
  return deepEqual(transitionOf(previous ?? {}), transitionOf(next)) ? "progress" : "transition";
}
