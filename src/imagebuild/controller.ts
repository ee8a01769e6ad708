// The ImageBuild reconciler: reads the build, its pool, its Jobs and pods and the pool's queue
// from the caches, asks decideNextStep what to do, and does it (perform.ts). Every write is
// idempotent by name (a restarted operator finds what it made), and status is written only
// when it changed (status-writer.ts). Its watches are wired in setup.ts.
import type { KubernetesObject, V1Pod, V1Secret } from "@kubernetes/client-node";
import { isTerminal } from "../api/imagebuild-status.ts";
import {
  type BuilderPool,
  type ImageBuild,
  parseBuilderPool,
  parseImageBuild,
  SpecError,
} from "../api/resources.ts";
import { caSecretName, clientSecretName, inlineContextName } from "../naming.ts";
import { isNotFound, type KubeClient, RESOURCES } from "../runtime/client.ts";
import type { ReconcileContext, ReconcileRequest, ReconcileResult } from "../runtime/controller.ts";
import { BY_OWNER } from "../runtime/informer.ts";
import type { Manager } from "../runtime/manager.ts";
import {
  type Admission,
  admit,
  poolNamespaceOf,
  referencedSecrets,
  type SecretSummary,
} from "./admission.ts";
import { type Builders, routesFor } from "./builders.ts";
import { type BuildCaches, BY_JOB, JOB_NAME_LABEL, phaseOf } from "./caches.ts";
import { decideNextStep, jobsOf, logRequests, WAIT_REQUEUE_MS } from "./decide.ts";
import { BuildMetrics } from "./metrics.ts";
import { type ObservedJob, observeJob } from "./observe.ts";
import { perform } from "./perform.ts";
import type { BuildQueues } from "./queues.ts";
import { StatusWriter } from "./status-writer.ts";

/** The first poll of a build that waits for a Secret; it doubles up to WAIT_REQUEUE_MS. */
const PENDING_POLL_MS = 1000;

const earliest = (a: number | undefined, b: number | undefined) =>
  a === undefined ? b : b === undefined ? a : Math.min(a, b);

export interface BuildControllerOptions {
  /** The operator's own image: index Jobs run `buildfarm assemble` in it. */
  operatorImage: string;
  /** The platforms it is built for: index and tag Jobs run only on nodes of these. */
  operatorImagePlatforms?: readonly string[];
  workers: number;
  now?: () => Date;
  /** How long status progress may wait to be written with a transition (STATUS_SETTLE_MS). */
  statusSettleMs?: number;
}

/** What the reconciler reads and shares: the caches, the pools' queues and their builders. */
export interface BuildState {
  caches: BuildCaches;
  queues: BuildQueues;
  builders: Builders;
}

/** The `pool` label of the build metrics: `<namespace>/<name>`, as pools are namespaced. */
export function poolLabel(build: ImageBuild): string {
  return `${poolNamespaceOf(build)}/${build.spec.poolRef.name}`;
}

interface SecretFacts {
  push?: SecretSummary;
  secrets: Record<string, SecretSummary>;
}

export class BuildReconciler {
  private readonly manager: Manager;
  private readonly client: KubeClient;
  private readonly caches: BuildCaches;
  private readonly queues: BuildQueues;
  private readonly builders: Builders;
  private readonly options: BuildControllerOptions;
  readonly metrics: BuildMetrics;
  readonly status: StatusWriter;
  /**
   * What admission learnt about the referenced Secrets, per build uid: read with GETs while a
   * build waits to be admitted, then kept, so a queued build does not read them on every
   * reconcile. Lost on restart and read again once.
   */
  private readonly secretFacts = new Map<string, SecretFacts>();
  /** How often a build that may not run yet (a Secret it needs is missing) was polled, by uid. */
  private readonly pendingPolls = new Map<string, number>();

  constructor(manager: Manager, state: BuildState, options: BuildControllerOptions) {
    this.manager = manager;
    this.client = manager.client;
    this.caches = state.caches;
    this.queues = state.queues;
    this.builders = state.builders;
    this.options = options;
    this.metrics = new BuildMetrics(manager.metrics.registry);
    this.status = new StatusWriter({
      client: manager.client,
      builds: state.caches.builds,
      events: manager.events,
      ...(options.statusSettleMs === undefined ? {} : { settleMs: options.statusSettleMs }),
    });
  }

  private now(): Date {
    return this.options.now?.() ?? new Date();
  }

  readonly reconcile = async (
    { namespace, name }: ReconcileRequest,
    { log }: ReconcileContext,
  ): Promise<ReconcileResult | undefined> => {
    const raw = this.status.current(namespace, name);
    if (!raw) return undefined;
    const now = this.now();
    // Each version is validated once (the queues keep the result by object); only one that
    // failed is parsed again here, for the problems to report.
    let build: ImageBuild;
    try {
      build = this.queues.parsed(raw) ?? parseImageBuild(raw);
    } catch (error) {
      if (error instanceof SpecError) return this.status.reportInvalid(raw, error, now);
      throw error;
    }
    if (isTerminal(build.status?.phase)) this.secretFacts.delete(build.metadata.uid ?? "");

    const { pool, poolError } = this.readPool(build);
    const admission = isTerminal(build.status?.phase)
      ? undefined
      : await this.admission(build, pool, poolError);
    const observedJobs = await this.observedJobs(build);
    const { jobs, indexJob, verifyJob, tagJob } = jobsOf(build, observedJobs);
    const queue =
      pool && admission ? this.queues.queue(pool, build, admission.admitted, jobs) : undefined;
    const logs: Record<string, string> = {};
    for (const request of logRequests(build, { jobs })) {
      try {
        logs[request.pod] = await this.client.podLog(namespace, request.pod, {
          container: request.container,
          tailLines: 200,
        });
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
    }
    // Routes are chosen, and the Jobs routed recorded, with no await in between: a reconcile
    // of another build on another worker then counts them on their builders.
    const routes =
      pool && queue && admission?.admitted
        ? routesFor(
            build,
            admission.plan,
            pool,
            queue.verdicts,
            (target) => jobs[target.slug] !== undefined,
            (arch) => this.builders.podsOf(pool, arch),
          )
        : undefined;
    const decision = decideNextStep(build, {
      now,
      admission: admission ?? {
        admitted: false,
        phase: "Pending",
        reason: "Finished",
        message: "the build has finished",
      },
      slots: queue?.verdicts ?? new Map(),
      clientSecret:
        this.caches.secrets.get(namespace, clientSecretName(name)) !== undefined ||
        this.isExpected("Secret", namespace, clientSecretName(name)),
      poolCa:
        pool !== undefined &&
        this.caches.secrets.get(pool.metadata.namespace, caSecretName(pool.metadata.name)) !==
          undefined,
      inlineContext:
        this.caches.configMaps.get(namespace, inlineContextName(name)) !== undefined ||
        this.isExpected("ConfigMap", namespace, inlineContextName(name)),
      jobs,
      indexJob,
      verifyJob,
      tagJob,
      ...(routes ? { routes } : {}),
      logs,
      operatorImage: this.options.operatorImage,
      ...(this.options.operatorImagePlatforms
        ? { operatorImagePlatforms: this.options.operatorImagePlatforms }
        : {}),
    });
    const routed = this.builders.routed;
    for (const action of decision.actions)
      if (action.type === "CreateJob") routed.add(action.object);
    const context = {
      client: this.client,
      expected: this.queues.expected,
      secrets: this.caches.secrets,
      now: () => this.now(),
      log,
    };
    await perform(context, build, raw, decision.actions).catch((error: unknown) => {
      // Jobs not made run nowhere: their builders are not busy with them, and the next
      // reconcile routes them again. (One made meanwhile is in the Jobs cache soon; until then
      // its expectation counts it.)
      for (const action of decision.actions)
        if (
          action.type === "CreateJob" &&
          !this.isExpected(
            "Job",
            action.object.metadata?.namespace ?? "",
            action.object.metadata?.name ?? "",
          )
        )
          routed.forget(action.object);
      throw error;
    });
    const { wrote, settleAfterMs } = await this.status.settle(raw, decision.status, now);
    if (wrote) {
      for (const event of decision.events)
        this.manager.events.record(raw, event.type, event.reason, event.message);
      this.metrics.observeTransition(build, decision.status, poolLabel(build));
      log.debug({ phase: decision.status.phase }, "status written");
      for (const { platform, reason } of decision.noCacheReport ?? [])
        log.debug({ platform, reason }, "no cache report for the platform");
    }
    if (queue && pool) this.metrics.observeQueue(pool, queue);
    const requeueAfter = earliest(
      this.pendingRequeue(build, admission, decision.requeueAfterMs),
      settleAfterMs,
    );
    return requeueAfter === undefined ? undefined : { requeueAfter };
  };

  /** The build is gone: what this process kept of it goes too. */
  forgetDeleted(object: KubernetesObject): void {
    this.countCancelled(object);
    this.status.forget(object);
    this.pendingPolls.delete(object.metadata?.uid ?? "");
    this.secretFacts.delete(object.metadata?.uid ?? "");
  }

  /** The cache shows the object (or its deletion): no longer expected. */
  observed(object: KubernetesObject): void {
    this.queues.expected.observed(object.kind, object.metadata?.namespace, object.metadata?.name);
  }

  /** The pool is gone: its metrics series go too. */
  poolDeleted(poolKey: string): void {
    void this.metrics.forgetPool(poolKey);
  }

  /**
   * A build deleted before it finished (no finalizer holds it, so it is gone at once; garbage
   * collection stops its Jobs) counts as Cancelled in buildfarm_builds_total. Counted by the
   * leader only, so replicas do not count it twice; a build deleted while no operator ran is
   * not seen and not counted.
   */
  private countCancelled(object: KubernetesObject): void {
    if (!this.manager.isLeader) return;
    if (isTerminal(phaseOf(object))) return;
    const build = this.queues.parsed(object);
    if (build) this.metrics.builds.inc({ pool: poolLabel(build), result: "Cancelled" });
  }

  /**
   * A build waiting for something no watch reports (a Secret it references: the operator
   * caches only its own Secrets) is polled: after 1 s, then twice as long each time, up to
   * the decision's wait. Anything else keeps the decision's requeue.
   */
  private pendingRequeue(
    build: ImageBuild,
    admission: Admission | undefined,
    requeueAfterMs: number | undefined,
  ): number | undefined {
    const uid = build.metadata.uid ?? "";
    if (!admission || admission.admitted || admission.phase !== "Pending") {
      this.pendingPolls.delete(uid);
      return requeueAfterMs;
    }
    const polls = this.pendingPolls.get(uid) ?? 0;
    this.pendingPolls.set(uid, polls + 1);
    return Math.min(requeueAfterMs ?? WAIT_REQUEUE_MS, PENDING_POLL_MS * 2 ** polls);
  }

  private readPool(build: ImageBuild): { pool?: BuilderPool; poolError?: string } {
    const raw = this.caches.pools.get(poolNamespaceOf(build), build.spec.poolRef.name);
    if (!raw) return {};
    try {
      return { pool: parseBuilderPool(raw) };
    } catch (error) {
      if (error instanceof SpecError) return { poolError: error.message };
      throw error;
    }
  }

  private async admission(
    build: ImageBuild,
    pool: BuilderPool | undefined,
    poolError: string | undefined,
  ): Promise<Admission> {
    const namespace = this.caches.namespaces.get(undefined, build.metadata.namespace);
    const facts = await this.secretsOf(build);
    const admission = admit(build, {
      pool,
      poolError,
      buildNamespaceLabels: namespace?.metadata?.labels ?? {},
      pushSecret: facts.push,
      secrets: facts.secrets,
    });
    // Facts that did not admit the build are read again next time (a Secret may appear).
    if (!admission.admitted) this.secretFacts.delete(build.metadata.uid ?? "");
    return admission;
  }

  /** Type and key names of the referenced Secrets (never their data), read once per build. */
  private async secretsOf(build: ImageBuild): Promise<SecretFacts> {
    const uid = build.metadata.uid ?? "";
    const known = this.secretFacts.get(uid);
    if (known) return known;
    const { push, others } = referencedSecrets(build);
    const summary = async (name: string): Promise<SecretSummary | undefined> => {
      const secret = await this.client.get<V1Secret>(
        RESOURCES.secret,
        build.metadata.namespace,
        name,
      );
      return secret
        ? {
            type: secret.type ?? "Opaque",
            keys: Object.keys({ ...secret.data, ...secret.stringData }),
          }
        : undefined;
    };
    const facts: SecretFacts = { secrets: {} };
    if (push) {
      const found = await summary(push);
      if (found) facts.push = found;
    }
    for (const name of others) {
      const found = await summary(name);
      if (found) facts.secrets[name] = found;
    }
    this.secretFacts.set(uid, facts);
    return facts;
  }

  /**
   * The build's Jobs with their pods. The Jobs and pods caches are fed by separate watches,
   * so a Job can show its end before its pods show theirs; a decision about a finished Job is
   * final (a digest read, a failure's log tail, or "the pod is gone, build again"), so when
   * the cache holds fewer finished pods than the Job counts, they are listed from the server.
   */
  private async observedJobs(build: ImageBuild): Promise<ObservedJob[]> {
    const finished = isTerminal(build.status?.phase);
    const cached = await Promise.all(
      this.caches.jobs.byIndex(BY_OWNER, build.metadata.uid ?? "").map(async (job) => {
        const namespace = job.metadata?.namespace ?? build.metadata.namespace;
        const name = job.metadata?.name ?? "";
        const seen = observeJob(job, this.caches.pods.byIndex(BY_JOB, `${namespace}/${name}`));
        // A finished build's status is final: its pods are read no more. (A Job counts pods
        // that were evicted or collected since, so the gap below may never close.)
        if (finished) return seen;
        if (!seen.outcome || finishedPods(seen) >= seen.succeeded + seen.failed) return seen;
        const live = await this.client.list<V1Pod>(RESOURCES.pod, namespace, {
          labelSelector: `${JOB_NAME_LABEL}=${name}`,
        });
        return observeJob(job, live.items);
      }),
    );
    return [...cached, ...this.queues.expectedJobsOf(build, cached)];
  }

  /** Whether this process created the object and the cache does not show it yet. */
  private isExpected(kind: string, namespace: string, name: string): boolean {
    return this.queues.expected.has(kind, namespace, name);
  }
}

/** Pods of a Job that reached Succeeded or Failed. */
function finishedPods(job: ObservedJob): number {
  return job.pods.filter((pod) => pod.phase === "Succeeded" || pod.phase === "Failed").length;
}
