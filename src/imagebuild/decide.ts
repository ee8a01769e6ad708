import type {
  AttestationStatus,
  BuildPhase,
  ImageBuildStatus,
  PlatformStatus,
  VerifyStatus,
} from "../api/imagebuild-status.ts";
import { isTerminal } from "../api/imagebuild-status.ts";
import { type SpecPlatform, specPlatforms } from "../api/platform.ts";
import type { ImageBuild } from "../api/resources.ts";
import {
  buildJobName,
  caSecretName,
  clientSecretName,
  indexJobName,
  inlineContextName,
  tagJobName,
  verifyJobName,
} from "../naming.ts";
import { rfc3339 } from "../runtime/time.ts";
import type { PlatformTarget } from "./admission.ts";
import { builderEndpoint } from "./argv.ts";
import { cachedSteps } from "./cache-report.ts";
import { buildConditions, type CacheCondition, type Outcome } from "./conditions.ts";
import {
  type Action,
  type BuildEvent,
  type Decision,
  deleteJob,
  type Observed,
} from "./decision.ts";
import { buildJob, CONTAINERS, inlineContextConfigMap } from "./jobs.ts";
import { cacheExportError } from "./metadata.ts";
import { isFinished, type ObservedJob } from "./observe.ts";
import { cacheOutcomeOf, ownedBy, type PlatformView, platformView } from "./platform-view.ts";
import { publish } from "./publish.ts";
import { slotKey } from "./queue.ts";
import type { Route } from "./routing.ts";

/** How often a build that waits (queued, or for a pool or Secret) is looked at again. */
export const WAIT_REQUEUE_MS = 30_000;

/**
 * Sorts the Jobs found for a build (listed by the buildfarm.dev/build label) into platform
 * Jobs by slug and the index Job, by their deterministic names.
 */
export function jobsOf(
  build: ImageBuild,
  jobs: readonly ObservedJob[],
): {
  jobs: Record<string, ObservedJob>;
  indexJob?: ObservedJob;
  verifyJob?: ObservedJob;
  tagJob?: ObservedJob;
} {
  const byName = new Map(jobs.map((job) => [job.name, job]));
  const platformJobs: Record<string, ObservedJob> = {};
  for (const { slug } of specPlatforms(build.spec.platforms)) {
    const job = byName.get(buildJobName(build.metadata.name, slug));
    if (job) platformJobs[slug] = job;
  }
  const name = build.metadata.name;
  const steps = {
    indexJob: byName.get(indexJobName(name)),
    verifyJob: byName.get(verifyJobName(name)),
    tagJob: byName.get(tagJobName(name)),
  };
  return {
    jobs: platformJobs,
    ...Object.fromEntries(Object.entries(steps).filter(([, job]) => job !== undefined)),
  };
}

/** The Jobs of the build besides its platforms' (index, verify, tag), those that exist. */
function stepJobs(observed: Observed): ObservedJob[] {
  return [observed.indexJob, observed.verifyJob, observed.tagJob].filter(
    (job): job is ObservedJob => job !== undefined,
  );
}

export interface LogRequest {
  pod: string;
  container: string;
  platform: string;
}

/**
 * The buildctl logs decide() wants: pods of platforms that just finished without exporting
 * the cache, whose log holds the registry's reason. Rarely any; read them with
 * pods/log?container=buildctl&tailLines=200 and pass them as Observed.logs.
 */
export function logRequests(build: ImageBuild, observed: Pick<Observed, "jobs">): LogRequest[] {
  if (build.spec.cache.disabled || isTerminal(build.status?.phase)) return [];
  const requests: LogRequest[] = [];
  for (const entry of specPlatforms(build.spec.platforms)) {
    const job = observed.jobs[entry.slug];
    const recorded = build.status?.platforms?.find((p) => p.platform === entry.platform);
    if (!job || recorded?.digest || !ownedBy(job, build) || job.outcome?.type !== "Complete")
      continue;
    const view = platformView(entry, { build, now: "", job });
    if (view.state.kind === "succeeded" && cacheOutcomeOf(view.status)?.exported === false) {
      const pod = job.pods.find((candidate) => candidate.phase === "Succeeded");
      if (pod) {
        requests.push({ pod: pod.name, container: CONTAINERS.buildctl, platform: entry.platform });
      }
    }
  }
  return requests;
}

/** Stops every unfinished Job of the build (platforms and index) that is not already going. */
function stopRunning(build: ImageBuild, observed: Observed, reason: string): Action[] {
  return [...Object.values(observed.jobs), ...stepJobs(observed)]
    .filter((job): job is ObservedJob => job !== undefined)
    .filter((job) => ownedBy(job, build) && !isFinished(job) && !job.deleting)
    .map((job) => deleteJob(job, reason));
}

function cacheCondition(
  build: ImageBuild,
  platforms: readonly PlatformStatus[],
  phase: BuildPhase,
): CacheCondition | undefined {
  if (build.spec.cache.disabled) return undefined;
  const outcomes = platforms
    .filter((platform) => platform.digest !== undefined)
    .map((platform) => ({ platform: platform.platform, outcome: cacheOutcomeOf(platform) }));
  const refused = outcomes.filter(({ outcome }) => outcome?.exported === false);
  if (refused.length > 0) {
    return {
      status: "False",
      reason: "ExportFailed",
      message: refused
        .map(
          ({ platform, outcome }) =>
            `${platform}: ${outcome?.exported === false ? outcome.message : ""}`,
        )
        .join("\n")
        .concat(
          build.spec.cache.failOnExportError
            ? ""
            : "\nThe image was pushed; set spec.cache.failOnExportError to fail builds instead.",
        ),
    };
  }
  const exported = outcomes.filter(({ outcome }) => outcome?.exported === true).length;
  if (exported === platforms.length && platforms.length > 0) {
    return {
      status: "True",
      reason: "Exported",
      message: "every platform exported its registry cache",
    };
  }
  if (isTerminal(phase)) {
    // Nothing will export any more: say so rather than leave the condition waiting. A platform
    // that failed on a refused export (failOnExportError) carries BuildKit's error line.
    const exportErrors = platforms
      .filter((platform) => platform.phase === "Failed")
      .flatMap((platform) => {
        const error = cacheExportError(platform.message ?? "");
        return error ? [`${platform.platform}: ${error}`] : [];
      });
    return exportErrors.length > 0
      ? { status: "False", reason: "ExportFailed", message: exportErrors.join("\n") }
      : {
          status: "False",
          reason: "NotExported",
          message: `the build ended (${phase}) before every platform exported its registry cache`,
        };
  }
  return {
    status: "Unknown",
    reason: "Pending",
    message: "the cache is exported as each platform finishes",
  };
}

interface Draft {
  outcome: Outcome;
  platforms: PlatformStatus[];
  actions: Action[];
  digest?: string;
  /** The check's state, for builds with spec.verify once it has an index digest. */
  verify?: VerifyStatus;
  attestations?: AttestationStatus[];
  requeueAfterMs?: number;
  queuePosition?: number;
}

function finish(build: ImageBuild, observed: Observed, draft: Draft): Decision {
  const previous = build.status ?? {};
  const now = rfc3339(observed.now);
  const { phase } = draft.outcome;
  const started = draft.platforms.some((platform) => platform.job !== undefined || platform.digest);
  const startTime = previous.startTime ?? (started ? now : undefined);
  const completionTime = isTerminal(phase) ? (previous.completionTime ?? now) : undefined;
  const digest = draft.digest ?? previous.digest;
  const verify = draft.verify ?? previous.verify;
  const attestations = draft.attestations ?? previous.attestations;
  const cached = cachedSteps(draft.platforms.map((platform) => platform.cache));
  const status: ImageBuildStatus = {
    ...(build.metadata.generation === undefined
      ? {}
      : { observedGeneration: build.metadata.generation }),
    phase,
    ...(draft.queuePosition === undefined ? {} : { queuePosition: draft.queuePosition }),
    platforms: draft.platforms,
    ...(verify ? { verify } : {}),
    ...(digest ? { digest, image: `${build.spec.output.image}@${digest}` } : {}),
    ...(attestations ? { attestations } : {}),
    ...(cached ? { cachedSteps: cached } : {}),
    ...(startTime ? { startTime } : {}),
    ...(completionTime ? { completionTime } : {}),
    conditions: buildConditions(
      previous.conditions,
      draft.outcome,
      cacheCondition(build, draft.platforms, phase),
      build.metadata.generation,
      observed.now,
    ),
  };
  // A build that finishes now is looked at again when its TTL passes: no event would wake it.
  const ttl = build.spec.ttlSecondsAfterFinished;
  const requeueAfterMs = isTerminal(phase) && ttl !== undefined ? ttl * 1000 : draft.requeueAfterMs;
  return {
    status,
    actions: draft.actions,
    events: eventsFor(build, previous, status, draft.outcome),
    ...(requeueAfterMs === undefined ? {} : { requeueAfterMs }),
  };
}

function eventsFor(
  build: ImageBuild,
  previous: ImageBuildStatus,
  next: ImageBuildStatus,
  outcome: Outcome,
): BuildEvent[] {
  const events: BuildEvent[] = [];
  const before = new Map((previous.platforms ?? []).map((p) => [p.platform, p]));
  for (const platform of next.platforms ?? []) {
    const was = before.get(platform.platform);
    if (platform.phase === was?.phase) continue;
    if (platform.phase === "Succeeded") {
      events.push({
        type: "Normal",
        reason: "PlatformSucceeded",
        message: `${platform.platform} pushed ${platform.digest}`,
      });
      const cache = cacheOutcomeOf(platform);
      if (cache?.exported === false) {
        events.push({
          type: "Warning",
          reason: "CacheExportFailed",
          message: `${platform.platform}: ${cache.message}`,
        });
      }
    } else if (platform.phase === "Failed") {
      events.push({
        type: "Warning",
        reason: "PlatformFailed",
        message: `${platform.platform}: ${(platform.message ?? "").split("\n")[0]}`,
      });
    }
  }
  if (next.verify?.phase === "Succeeded" && previous.verify?.phase !== "Succeeded") {
    events.push({
      type: "Normal",
      reason: "Verified",
      message: `the check passed on ${next.verify.image ?? "the image"}`,
    });
  }
  const previousReason = previous.conditions?.find((c) => c.type === "Succeeded")?.reason;
  if (
    next.phase !== previous.phase ||
    (outcome.reason !== previousReason && next.phase === "Pending")
  ) {
    const warning = next.phase === "Failed" || next.phase === "Pending";
    events.push({
      type: warning ? "Warning" : "Normal",
      reason: next.phase === "Building" ? "Started" : outcome.reason,
      message:
        next.phase === "Succeeded"
          ? `pushed ${next.image}${build.spec.output.tags.length ? ` and tagged ${build.spec.output.tags.join(", ")}` : ""}`
          : (outcome.message.split("\n")[0] ?? ""),
    });
  }
  return events;
}

/** Once finished: stop stragglers and, after ttlSecondsAfterFinished, delete the children. */
function decideFinished(build: ImageBuild, observed: Observed): Decision {
  const status = build.status as ImageBuildStatus;
  const actions = new Map<string, Action>();
  for (const action of stopRunning(build, observed, "the build has finished")) {
    actions.set(`job/${(action as { name: string }).name}`, action);
  }
  let requeueAfterMs: number | undefined;
  const ttl = build.spec.ttlSecondsAfterFinished;
  if (ttl !== undefined) {
    // A finished build always has a completionTime; without one, the TTL counts as passed.
    const finished =
      Date.parse(status.completionTime ?? "") ||
      Date.parse(
        status.conditions?.find((c) => c.type === "Succeeded")?.lastTransitionTime ?? "",
      ) ||
      0;
    const expires = finished + ttl * 1000;
    if (observed.now.getTime() >= expires) {
      const reason = `ttlSecondsAfterFinished (${ttl}s) has passed`;
      for (const job of [...Object.values(observed.jobs), ...stepJobs(observed)]) {
        if (job && ownedBy(job, build) && !job.deleting)
          actions.set(`job/${job.name}`, deleteJob(job, reason));
      }
      if (observed.clientSecret) {
        const name = clientSecretName(build.metadata.name);
        actions.set(`secret/${name}`, { type: "DeleteSecret", name, reason });
      }
      if (observed.inlineContext) {
        const name = inlineContextName(build.metadata.name);
        actions.set(`configmap/${name}`, { type: "DeleteConfigMap", name, reason });
      }
    } else {
      requeueAfterMs = expires - observed.now.getTime();
    }
  }
  return {
    status,
    actions: [...actions.values()],
    events: [],
    ...(requeueAfterMs === undefined ? {} : { requeueAfterMs }),
  };
}

export function decideNextStep(build: ImageBuild, observed: Observed): Decision {
  const previous = build.status ?? {};
  if (isTerminal(previous.phase)) return decideFinished(build, observed);
  const now = rfc3339(observed.now);
  const admission = observed.admission;
  const plan = admission.admitted ? admission.plan : undefined;
  const before = new Map((previous.platforms ?? []).map((p) => [p.platform, p]));
  // Nothing starts without a client certificate, which the pool's CA issues.
  const noCa =
    plan && !observed.clientSecret && observed.poolCa === false
      ? `BuilderPool ${plan.poolNamespace}/${plan.pool} has no CA Secret ${caSecretName(plan.pool)} yet; its controller creates it`
      : undefined;

  // Where a Job created now goes: the reconciler's routing, else the architecture's Service.
  const routeOf = (target: PlatformTarget | undefined): Route | undefined =>
    plan && target
      ? (observed.routes?.[target.slug] ?? { kind: "service", ...builderEndpoint(plan, target) })
      : undefined;
  // Each platform with its target once admitted: the plan has one per platform, in order.
  const entries: { platform: SpecPlatform; target?: PlatformTarget }[] = plan
    ? plan.targets.map((target) => ({ platform: target, target }))
    : specPlatforms(build.spec.platforms).map((platform) => ({ platform }));
  const views: (PlatformView & { target?: PlatformTarget })[] = entries.map(
    ({ platform, target }) => ({
      ...platformView(platform, {
        build,
        now,
        job: observed.jobs[platform.slug],
        previous: before.get(platform.platform),
        slot: observed.slots.get(slotKey(build.metadata, platform.slug)),
        blocked: admission.admitted ? noCa : admission.message,
        architecture: target?.architecture,
        route: routeOf(target),
        logs: observed.logs,
      }),
      ...(target ? { target } : {}),
    }),
  );
  const platforms = views.map((view) => view.status);
  const actions: Action[] = views
    .filter((view) => view.rebuild !== undefined)
    .map((view) => ({
      type: "DeleteJob",
      name: view.rebuild as string,
      propagationPolicy: "Background",
      reason: "its pod, and the digest, are gone; building again",
    }));

  const noCacheReport = views.flatMap((view) =>
    view.noCacheReport === undefined
      ? []
      : [{ platform: view.status.platform, reason: view.noCacheReport }],
  );

  let draft: Draft;
  const failedPlatform = views.find((view) => view.state.kind === "failed");
  // When the build fails, platforms that have not finished are cancelled: never started
  // ones lose their planned Job name, running ones keep it (their Job is being stopped).
  const notBuilt = (why: string) =>
    views.map((view): PlatformStatus => {
      if (view.state.kind === "running") {
        return { ...view.status, phase: "Cancelled", message: `stopped: ${why}` };
      }
      if (view.state.kind === "succeeded" || view.state.kind === "failed") return view.status;
      const { job: _job, ...rest } = view.status;
      return { ...rest, phase: "Cancelled", message: `not built: ${why}` };
    });
  if (previous.digest) {
    // The index digest is final; a status that has it but no final phase is only repaired.
    draft = {
      outcome: {
        phase: "Succeeded",
        reason: "Succeeded",
        message: `pushed ${build.spec.output.image}@${previous.digest}`,
      },
      platforms,
      actions,
      digest: previous.digest,
    };
  } else if (build.metadata.deletionTimestamp) {
    actions.push(...stopRunning(build, observed, "the ImageBuild is being deleted"));
    draft = {
      outcome: {
        phase: "Cancelled",
        reason: "Cancelled",
        message: "the ImageBuild is being deleted",
      },
      platforms: notBuilt("the ImageBuild is being deleted"),
      actions,
    };
  } else if (!admission.admitted && admission.phase === "Failed") {
    actions.push(...stopRunning(build, observed, `the build failed: ${admission.reason}`));
    draft = {
      outcome: { phase: "Failed", reason: admission.reason, message: admission.message },
      platforms: notBuilt(admission.reason),
      actions,
    };
  } else if (failedPlatform) {
    const status = failedPlatform.status;
    const reason =
      failedPlatform.state.kind === "failed" ? failedPlatform.state.reason : "BuildFailed";
    actions.push(...stopRunning(build, observed, `${status.platform} failed`));
    draft = {
      outcome: {
        phase: "Failed",
        reason,
        message: `${status.platform}: ${status.message ?? "failed"}`,
      },
      platforms: notBuilt(`${status.platform} failed`),
      actions,
    };
  } else if (views.every((view) => view.state.kind === "succeeded")) {
    const step = publish(build, observed, platforms, actions);
    draft = {
      outcome: step.outcome,
      platforms,
      actions,
      ...(step.digest ? { digest: step.digest } : {}),
      ...(step.verify ? { verify: step.verify } : {}),
      ...(step.attestations ? { attestations: step.attestations } : {}),
      ...(step.wait ? { requeueAfterMs: WAIT_REQUEUE_MS } : {}),
    };
  } else {
    const starting = views.filter((view) => view.state.kind === "start");
    const unfinished = views.some((view) => view.state.kind === "running");
    if (plan && (starting.length > 0 || unfinished)) {
      // What the Jobs mount comes first: the client certificate and the inline context.
      if (!observed.clientSecret) {
        actions.push({
          type: "CreateClientSecret",
          name: clientSecretName(build.metadata.name),
          pool: { name: plan.pool, namespace: plan.poolNamespace },
        });
      }
      if (build.spec.source.inline && !observed.inlineContext) {
        actions.push({ type: "CreateConfigMap", object: inlineContextConfigMap(build, plan) });
      }
      for (const { target } of starting) {
        const route = routeOf(target);
        if (target && route && route.kind !== "wait") {
          const { address, serverName } = route;
          actions.push({
            type: "CreateJob",
            platform: target.platform,
            object: buildJob(
              build,
              plan,
              target,
              { address, serverName, ...(route.kind === "pod" ? { pod: route.pod } : {}) },
              {
                image: observed.operatorImage,
                ...(observed.operatorImagePlatforms
                  ? { platforms: observed.operatorImagePlatforms }
                  : {}),
              },
            ),
          });
        }
      }
    }
    const positions = views.flatMap((view) =>
      view.state.kind === "queued" ? [view.state.position] : [],
    );
    const started = platforms.some((p) => p.job !== undefined || p.digest !== undefined);
    const queuePosition = positions.length > 0 ? Math.max(...positions) : undefined;
    const scaling = views.filter((view) => view.state.kind === "scaling");
    const waits =
      positions.length > 0 || scaling.length > 0 || !admission.admitted || noCa !== undefined;
    const summary = platforms.map((p) => `${p.platform} ${p.phase.toLowerCase()}`).join(", ");
    const outcome: Outcome =
      !admission.admitted && !started
        ? { phase: "Pending", reason: admission.reason, message: admission.message }
        : noCa !== undefined && !started
          ? { phase: "Pending", reason: "PoolNotReady", message: noCa }
          : started
            ? { phase: "Building" as BuildPhase, reason: "Building", message: summary }
            : {
                phase: "Queued",
                // Waiting for an autoscaled architecture to get a builder, or for a slot.
                reason: scaling.length > 0 ? "ScalingUp" : "Queued",
                message: platforms.map((p) => `${p.platform}: ${p.message ?? p.phase}`).join("; "),
              };
    draft = {
      outcome,
      platforms,
      actions,
      ...(queuePosition === undefined ? {} : { queuePosition }),
      ...(waits ? { requeueAfterMs: WAIT_REQUEUE_MS } : {}),
    };
  }
  const decision = finish(build, observed, draft);
  return noCacheReport.length > 0 ? { ...decision, noCacheReport } : decision;
}
