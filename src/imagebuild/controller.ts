// The ImageBuild reconciler: reads the build, its pool, its Jobs and pods and the pool's queue
// from the caches, asks decideNextStep what to do, and does it. Every write is idempotent by
// name (a restarted operator finds what it made), and status is written only when it changed.
import type {
  KubernetesObject,
  V1ConfigMap,
  V1Job,
  V1Namespace,
  V1Pod,
  V1Secret,
} from "@kubernetes/client-node";
import type { BuildPhase, ImageBuildStatus } from "../api/imagebuild.ts";
import {
  type BuilderPool,
  IMAGE_BUILD_RESOURCE,
  type ImageBuild,
  parseBuilderPool,
  parseImageBuild,
  SpecError,
} from "../api/resources.ts";
import { type BuilderLoad, DELETION_COST, type Demand } from "../builderpool/autoscale.ts";
import { MANAGED_SELECTOR, poolCaches } from "../builderpool/controller.ts";
import {
  COMPONENTS,
  caSecretName,
  clientSecretName,
  inlineContextName,
  LABELS,
  MANAGED_BY,
} from "../naming.ts";
import { clientCommonName, issueClientCertificate } from "../pki/certificates.ts";
import { readCaSecret, tlsSecretData } from "../pki/secrets.ts";
import { ownerReference } from "../runtime/apply.ts";
import {
  isAlreadyExists,
  isNotFound,
  type KubeClient,
  RESOURCES,
  type ResourceType,
} from "../runtime/client.ts";
import {
  type ReconcileContext,
  type ReconcileRequest,
  type ReconcileResult,
  specOrMetaChanged,
  type Watched,
} from "../runtime/controller.ts";
import { deepEqual, stableHash } from "../runtime/hash.ts";
import { BY_OWNER, type Informer, keyOf } from "../runtime/informer.ts";
import type { Manager } from "../runtime/manager.ts";
import {
  type Admission,
  admit,
  poolNamespaceOf,
  referencedSecrets,
  type SecretSummary,
  targetsOf,
} from "./admission.ts";
import {
  architectureKey,
  builderPodsOf,
  indexBuilderPods,
  indexPlatformJobs,
  isReadyBuilder,
  poolOfBuilderPod,
  RoutedJobs,
  routesFor,
} from "./builders.ts";
import { isTerminal } from "./conditions.ts";
import { type Action, decideNextStep, jobsOf, logRequests, WAIT_REQUEUE_MS } from "./decide.ts";
import { Expectations } from "./expectations.ts";
import { BuildMetrics } from "./metrics.ts";
import { isFinished, type ObservedJob, observeJob } from "./observe.ts";
import { demandOf, type QueueState, slotRequestsOf, standsInLine } from "./queue.ts";
import { QueueIndex } from "./queue-index.ts";
import { STATUS_SETTLE_MS, statusChange } from "./settle.ts";
import { slimJob, slimPod } from "./transforms.ts";

const BY_POOL = "pool";
const BY_JOB = "job";
const JOB_NAME_LABEL = "batch.kubernetes.io/job-name";
/** How many places of each architecture's queue are woken, and so kept exact, when it moves. */
const QUEUE_HEAD = 5;
/** The first poll of a build that waits for a Secret; it doubles up to WAIT_REQUEUE_MS. */
const PENDING_POLL_MS = 1000;

const earliest = (a: number | undefined, b: number | undefined) =>
  a === undefined ? b : b === undefined ? a : Math.min(a, b);

export interface BuildControllerOptions {
  /** The operator's own image: index Jobs run `buildfarm assemble` in it. */
  operatorImage: string;
  workers: number;
  now?: () => Date;
  /** How long status progress may wait to be written with a transition (STATUS_SETTLE_MS). */
  statusSettleMs?: number;
}

export interface BuildCaches {
  builds: Informer<KubernetesObject>;
  pools: Informer<KubernetesObject>;
  jobs: Informer<V1Job>;
  pods: Informer<V1Pod>;
  secrets: Informer<V1Secret>;
  configMaps: Informer<V1ConfigMap>;
  namespaces: Informer<V1Namespace>;
}

/** The phase a cached (unparsed) build reports. */
function phaseOf(build: KubernetesObject): BuildPhase | undefined {
  return (build as { status?: { phase?: BuildPhase } }).status?.phase;
}

/** The key of the pool a build names, `<namespace>/<name>`. */
function poolKeyOf(build: KubernetesObject): string {
  const spec = (build as { spec?: { poolRef?: { name?: string; namespace?: string } } }).spec;
  return `${spec?.poolRef?.namespace ?? build.metadata?.namespace}/${spec?.poolRef?.name ?? ""}`;
}

/** The `pool` label of the build metrics: `<namespace>/<name>`, as pools are namespaced. */
export function poolLabel(build: ImageBuild): string {
  return `${poolNamespaceOf(build)}/${build.spec.poolRef.name}`;
}

export function buildCaches(manager: Manager): BuildCaches {
  const shared = poolCaches(manager);
  const builds = manager.informer(IMAGE_BUILD_RESOURCE);
  builds.addIndex(BY_POOL, (build) => [poolKeyOf(build)]);
  const jobs = manager.informer<V1Job>(RESOURCES.job, {
    labelSelector: MANAGED_SELECTOR,
    transform: slimJob,
  });
  const pods = manager.informer<V1Pod>(RESOURCES.pod, {
    labelSelector: MANAGED_SELECTOR,
    transform: slimPod,
  });
  indexBuilderPods(pods);
  indexPlatformJobs(jobs);
  pods.addIndex(BY_JOB, (pod) => {
    const job = pod.metadata?.labels?.[JOB_NAME_LABEL] ?? pod.metadata?.labels?.["job-name"];
    return job ? [`${pod.metadata?.namespace}/${job}`] : [];
  });
  // Admission reads namespace labels (allowedNamespaces); the labels' hash as the cached
  // resourceVersion hands on label changes only.
  const namespaces = manager.informer<V1Namespace>(RESOURCES.namespace, {
    namespaces: [],
    transform: (namespace) => ({
      apiVersion: namespace.apiVersion,
      kind: namespace.kind,
      metadata: {
        name: namespace.metadata?.name,
        uid: namespace.metadata?.uid,
        resourceVersion: stableHash(namespace.metadata?.labels ?? {}),
        labels: namespace.metadata?.labels,
      },
    }),
  });
  return {
    builds,
    pools: shared.pools,
    jobs,
    pods,
    secrets: shared.secrets,
    configMaps: shared.configMaps,
    namespaces,
  };
}

interface SecretFacts {
  push?: SecretSummary;
  secrets: Record<string, SecretSummary>;
}

export class BuildReconciler {
  private readonly manager: Manager;
  private readonly client: KubeClient;
  private readonly caches: BuildCaches;
  private readonly options: BuildControllerOptions;
  readonly metrics: BuildMetrics;
  /**
   * What admission learnt about the referenced Secrets, per build uid: read with GETs while a
   * build waits to be admitted, then kept, so a queued build does not read them on every
   * reconcile. Lost on restart and read again once.
   */
  private readonly secretFacts = new Map<string, SecretFacts>();
  /**
   * The build as this process last wrote its status, by key, with the resourceVersion it was
   * written over. Until the cache shows that write (or anything newer) the reconciler reads
   * this instead: a status computed from the older cached object would only meet 409 Conflict.
   */
  private readonly written = new Map<
    string,
    { base: string | undefined; object: KubernetesObject }
  >();
  /** Since when a build's status has had progress not yet written, by key (see settle.ts). */
  private readonly progressSince = new Map<string, number>();
  /** Objects created by this process until the cache shows them (see expectedJobsOf). */
  private readonly expected = new Expectations();
  /** Platform Jobs this process routed to a builder pod, until the Jobs cache shows them. */
  private readonly routed = new RoutedJobs();
  /** Parsed cached builds, by the cached object (null: invalid); see parsed(). */
  private readonly parses = new WeakMap<KubernetesObject, ImageBuild | null>();
  /** Parsed cached pools, by the cached object (null: invalid). */
  private readonly poolParses = new WeakMap<KubernetesObject, BuilderPool | null>();
  /** Every pool's queue: each build's slot requests, kept between reconciles. */
  private readonly queues = new QueueIndex();
  /** Builds whose slot requests must be computed again before the queues are read. */
  private readonly staleQueue = new Set<string>();
  /** How often a build that may not run yet (a Secret it needs is missing) was polled, by uid. */
  private readonly pendingPolls = new Map<string, number>();

  constructor(manager: Manager, caches: BuildCaches, options: BuildControllerOptions) {
    this.manager = manager;
    this.client = manager.client;
    this.caches = caches;
    this.options = options;
    this.metrics = new BuildMetrics(manager.metrics.registry);
    this.expected.onChange = (key) => this.queueChanged(key);
  }

  private now(): Date {
    return this.options.now?.() ?? new Date();
  }

  readonly reconcile = async (
    { namespace, name }: ReconcileRequest,
    { log }: ReconcileContext,
  ): Promise<ReconcileResult | undefined> => {
    const raw = this.current(namespace, name);
    if (!raw) return undefined;
    const now = this.now();
    let build: ImageBuild;
    try {
      build = parseImageBuild(raw);
    } catch (error) {
      if (error instanceof SpecError) return this.reportInvalid(raw, error, now);
      throw error;
    }
    if (isTerminal(build.status?.phase)) this.secretFacts.delete(build.metadata.uid ?? "");

    const { pool, poolError } = this.readPool(build);
    const admission = isTerminal(build.status?.phase)
      ? undefined
      : await this.admission(build, pool, poolError);
    const observedJobs = await this.observedJobs(build);
    const { jobs, indexJob, verifyJob, tagJob } = jobsOf(build, observedJobs);
    const queue = pool && admission ? this.queue(pool, build, admission.admitted, jobs) : undefined;
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
            (arch) => this.builderPods(pool, arch),
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
    });
    for (const action of decision.actions)
      if (action.type === "CreateJob") this.routed.add(action.object);
    await this.perform(build, raw, decision.actions, log).catch((error: unknown) => {
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
          this.routed.forget(action.object);
      throw error;
    });
    const { wrote, settleAfterMs } = await this.settleStatus(raw, decision.status, now);
    if (wrote) {
      for (const event of decision.events)
        this.manager.events.record(raw, event.type, event.reason, event.message);
      this.metrics.observeTransition(build, decision.status, poolLabel(build));
      log.debug({ phase: decision.status.phase }, "status written");
    }
    if (queue && pool) this.metrics.observeQueue(pool, queue);
    const requeueAfter = earliest(
      this.pendingRequeue(build, admission, decision.requeueAfterMs),
      settleAfterMs,
    );
    return requeueAfter === undefined ? undefined : { requeueAfter };
  };

  /**
   * Writes a transition at once and progress once it has lasted statusSettleMs (see
   * settle.ts); otherwise says when to look again.
   */
  private async settleStatus(
    raw: KubernetesObject,
    status: ImageBuildStatus,
    now: Date,
  ): Promise<{ wrote: boolean; settleAfterMs?: number }> {
    const key = keyOf(raw);
    const change = statusChange((raw as { status?: ImageBuildStatus }).status, status);
    if (change === "progress") {
      const since = this.progressSince.get(key) ?? now.getTime();
      this.progressSince.set(key, since);
      const waited = now.getTime() - since;
      const settle = this.options.statusSettleMs ?? STATUS_SETTLE_MS;
      if (waited < settle) return { wrote: false, settleAfterMs: settle - waited };
    }
    this.progressSince.delete(key);
    return { wrote: change !== "none" && (await this.writeStatus(raw, status)) };
  }

  /** The cached build, or this process's own newer write of it while the cache lags. */
  private current(namespace: string, name: string): KubernetesObject | undefined {
    const cached = this.caches.builds.get(namespace, name);
    const key = `${namespace}/${name}`;
    const mine = this.written.get(key);
    if (!cached) {
      this.written.delete(key);
      return undefined;
    }
    if (!mine) return cached;
    if (cached.metadata?.resourceVersion === mine.base) return mine.object;
    this.written.delete(key);
    return cached;
  }

  /** Called for every cached version of a build: a write of ours the cache now shows is dropped. */
  forgetWritten(object: KubernetesObject): void {
    const key = keyOf(object);
    const mine = this.written.get(key);
    if (mine && object.metadata?.resourceVersion !== mine.base) this.written.delete(key);
  }

  forgetDeleted(object: KubernetesObject): void {
    this.countCancelled(object);
    this.written.delete(keyOf(object));
    this.progressSince.delete(keyOf(object));
    this.pendingPolls.delete(object.metadata?.uid ?? "");
    this.secretFacts.delete(object.metadata?.uid ?? "");
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
    const build = this.parsed(object);
    if (build) this.metrics.builds.inc({ pool: poolLabel(build), result: "Cancelled" });
  }

  /** Writes the status through the status subresource unless it is what `raw` holds. */
  private async writeStatus(raw: KubernetesObject, status: unknown): Promise<boolean> {
    const object = raw as KubernetesObject & { status?: unknown };
    if (deepEqual(object.status ?? {}, status ?? {})) return false;
    let updated: KubernetesObject;
    try {
      updated = await this.client.replace(IMAGE_BUILD_RESOURCE, { ...object, status }, "status");
    } catch (error) {
      // Deleted since the cache saw it (without a finalizer it goes at once): nothing to report.
      if (isNotFound(error)) return false;
      throw error;
    }
    this.written.set(keyOf(raw), { base: raw.metadata?.resourceVersion, object: updated });
    return true;
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

  private async reportInvalid(
    raw: KubernetesObject,
    error: SpecError,
    now: Date,
  ): Promise<undefined> {
    const status = (raw as { status?: { phase?: string } }).status;
    if (status?.phase === "Failed") return undefined;
    const time = now.toISOString().replace(/\.\d{3}Z$/, "Z");
    const message = error.issues.join("\n");
    const generation = raw.metadata?.generation;
    const condition = (type: string, value: "True" | "False") => ({
      type,
      status: value,
      reason: "InvalidSpec",
      message,
      lastTransitionTime: time,
      ...(generation === undefined ? {} : { observedGeneration: generation }),
    });
    const wrote = await this.writeStatus(raw, {
      ...(generation === undefined ? {} : { observedGeneration: generation }),
      phase: "Failed",
      completionTime: time,
      conditions: [
        condition("Succeeded", "False"),
        condition("Ready", "False"),
        condition("Stalled", "True"),
      ],
    });
    if (wrote) this.manager.events.record(raw, "Warning", "InvalidSpec", error.issues.join("; "));
    return undefined;
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
    return [...cached, ...this.expectedJobsOf(build, cached)];
  }

  /**
   * Jobs this process created for the build that the cache does not show yet, as Jobs that
   * have not started: so the next reconcile neither creates them again nor hands their slots
   * to another build (client-go's "expectations"). Forgotten once the cache shows them, or
   * after EXPECTATION_MS.
   */
  private expectedJobsOf(build: ImageBuild, cached: readonly ObservedJob[]): ObservedJob[] {
    const uid = build.metadata.uid ?? "";
    const out: ObservedJob[] = [];
    for (const name of this.expected.namesOf("Job", uid)) {
      if (cached.some((job) => job.name === name)) continue;
      out.push({
        name,
        controllerUid: uid,
        deleting: false,
        active: 0,
        succeeded: 0,
        failed: 0,
        pods: [],
      });
    }
    return out;
  }

  /**
   * The builder pods of a pool architecture, with the platform Jobs routed to each, those this
   * process created and the cache does not show yet included.
   */
  private builderPods(pool: BuilderPool, arch: string) {
    const key = architectureKey(pool.metadata.namespace, pool.metadata.name, arch);
    return builderPodsOf(
      this.caches,
      { namespace: pool.metadata.namespace, name: pool.metadata.name },
      arch,
      this.routed.podsOf(
        key,
        (namespace, name) => this.caches.jobs.get(namespace, name) !== undefined,
      ),
    );
  }

  /** Whether this process created the object and the cache does not show it yet. */
  private isExpected(kind: string, namespace: string, name: string): boolean {
    return this.expected.has(kind, namespace, name);
  }

  /** The cache shows the object (or its deletion): no longer expected. */
  observed(object: KubernetesObject): void {
    this.expected.observed(object.kind, object.metadata?.namespace, object.metadata?.name);
  }

  /**
   * A cached build, parsed once per version: the queue reads every build of the pool on each
   * reconcile, and the cache hands out a new object for every new version.
   */
  private parsed(raw: KubernetesObject): ImageBuild | undefined {
    if (this.parses.has(raw)) return this.parses.get(raw) ?? undefined;
    let build: ImageBuild | null;
    try {
      build = parseImageBuild(raw);
    } catch {
      build = null;
    }
    this.parses.set(raw, build);
    return build ?? undefined;
  }

  /** A cached pool, parsed once per version; undefined when missing or invalid. */
  private parsedPool(poolKey: string): BuilderPool | undefined {
    const raw = this.caches.pools.getByKey(poolKey);
    if (!raw) return undefined;
    if (this.poolParses.has(raw)) return this.poolParses.get(raw) ?? undefined;
    let pool: BuilderPool | null;
    try {
      pool = parseBuilderPool(raw);
    } catch {
      pool = null;
    }
    this.poolParses.set(raw, pool);
    return pool ?? undefined;
  }

  /** The build, its Jobs or its expected objects changed: its slot requests are recomputed. */
  queueChanged(buildKey: string): void {
    this.staleQueue.add(buildKey);
  }

  /** The pool changed (capacity, architectures, validity, existence): so may all its builds. */
  /** The pool is gone: its metrics series go too. */
  poolDeleted(poolKey: string): void {
    void this.metrics.forgetPool(poolKey);
  }

  poolChanged(poolKey: string): void {
    for (const build of this.caches.builds.byIndex(BY_POOL, poolKey))
      this.staleQueue.add(keyOf(build));
  }

  /**
   * Brings the queues up to date with the caches: each build that changed since the last read
   * has its slot requests computed again from its cached object and Jobs (without pods),
   * expected Jobs counting as started.
   */
  private refreshQueues(): void {
    this.expected.expire();
    for (const key of this.staleQueue) {
      const raw = this.caches.builds.getByKey(key);
      const build = raw && this.parsed(raw);
      const poolKey = raw && poolKeyOf(raw);
      const pool = poolKey && this.parsedPool(poolKey);
      const mapped = build && pool ? targetsOf(build, pool) : undefined;
      if (!build || !poolKey || !mapped || "verdict" in mapped) {
        this.queues.delete(key);
        continue;
      }
      const cached = this.caches.jobs
        .byIndex(BY_OWNER, build.metadata.uid ?? "")
        .map((job) => observeJob(job, []));
      const { jobs } = jobsOf(build, [...cached, ...this.expectedJobsOf(build, cached)]);
      this.queues.set(key, poolKey, slotRequestsOf(build, mapped.targets, jobs));
    }
    this.staleQueue.clear();
  }

  /**
   * The pool's queue with the build being reconciled as this reconcile sees it (its own
   * admission, its status as last written, its Jobs) in place of what the cache says.
   */
  private queue(
    pool: BuilderPool,
    current: ImageBuild,
    admitted: boolean,
    jobs: Readonly<Record<string, ObservedJob | undefined>>,
  ): QueueState {
    this.refreshQueues();
    const mapped = targetsOf(current, pool);
    const requests =
      "verdict" in mapped ? [] : slotRequestsOf(current, mapped.targets, jobs, admitted);
    return this.queues.state(`${pool.metadata.namespace}/${pool.metadata.name}`, pool.spec, {
      key: `${current.metadata.namespace}/${current.metadata.name}`,
      requests,
    });
  }

  /** The pool's demand per architecture (queued and running platforms), for its autoscaling. */
  demand(pool: BuilderPool): Record<string, Demand> {
    this.refreshQueues();
    return demandOf(
      this.queues.state(`${pool.metadata.namespace}/${pool.metadata.name}`, pool.spec),
    );
  }

  /** An architecture's builder pods with the builds running on each, for its scale-down. */
  builderLoad(pool: BuilderPool, arch: string): BuilderLoad[] {
    return this.builderPods(pool, arch).map((builder) => {
      const cost = this.caches.pods.get(pool.metadata.namespace, builder.name)?.metadata
        ?.annotations?.[DELETION_COST];
      return { name: builder.name, running: builder.running, ...(cost ? { cost } : {}) };
    });
  }

  /**
   * The builds at the head of a pool's queue: those that may start now, and those whose place
   * is at most `depth` on some architecture. When the queue moves, only they are woken; builds
   * further back refresh their position when they look again (WAIT_REQUEUE_MS), so a release
   * costs a bounded number of reconciles and status writes however long the queue is.
   */
  headOfQueue(poolKey: string, depth = QUEUE_HEAD): string[] {
    const pool = this.parsedPool(poolKey);
    if (!pool) return [];
    this.refreshQueues();
    return this.queues.head(poolKey, pool.spec, depth);
  }

  private async perform(
    build: ImageBuild,
    raw: KubernetesObject,
    actions: readonly Action[],
    log: ReconcileContext["log"],
  ): Promise<void> {
    const namespace = build.metadata.namespace;
    for (const action of actions) {
      switch (action.type) {
        case "CreateClientSecret":
          await this.createClientSecret(build, raw, action.name, action.pool);
          break;
        case "CreateConfigMap":
          await this.createIgnoringExisting(RESOURCES.configMap, action.object, raw);
          break;
        case "CreateJob":
          if (await this.createIgnoringExisting(RESOURCES.job, action.object, raw)) {
            log.info(
              { job: action.object.metadata?.name, platform: action.platform },
              "job created",
            );
          }
          break;
        case "DeleteJob":
          if (
            await this.client.delete(RESOURCES.job, namespace, action.name, {
              propagationPolicy: action.propagationPolicy,
            })
          ) {
            log.info({ job: action.name, reason: action.reason }, "job deleted");
          }
          break;
        case "DeleteSecret":
          await this.client.delete(RESOURCES.secret, namespace, action.name);
          break;
        case "DeleteConfigMap":
          await this.client.delete(RESOURCES.configMap, namespace, action.name);
          break;
      }
    }
  }

  /**
   * Creates an object; one that exists already (a cache behind the server) is fine. Either
   * way it is expected in the cache (see expectedJobsOf).
   */
  private async createIgnoringExisting(
    type: ResourceType,
    object: KubernetesObject,
    owner: KubernetesObject,
  ): Promise<boolean> {
    let created = true;
    try {
      await this.client.create(type, object);
    } catch (error) {
      if (!isAlreadyExists(error)) throw error;
      created = false;
    }
    this.expected.expect(type.kind, object.metadata?.namespace ?? "", object.metadata?.name ?? "", {
      uid: owner.metadata?.uid ?? "",
      key: keyOf(owner),
    });
    return created;
  }

  /** A 24 h client certificate from the pool's CA, in a Secret the build owns. */
  private async createClientSecret(
    build: ImageBuild,
    raw: KubernetesObject,
    name: string,
    pool: { name: string; namespace: string },
  ): Promise<void> {
    const caSecret = this.caches.secrets.get(pool.namespace, caSecretName(pool.name));
    if (!caSecret)
      throw new Error(
        `the CA Secret of BuilderPool ${pool.namespace}/${pool.name} does not exist yet; the pool controller creates it`,
      );
    const issued = await issueClientCertificate(readCaSecret(caSecret.data), {
      commonName: clientCommonName(build.metadata.namespace, build.metadata.name),
      now: this.now(),
    });
    const secret: V1Secret = {
      apiVersion: "v1",
      kind: "Secret",
      type: "kubernetes.io/tls",
      metadata: {
        name,
        namespace: build.metadata.namespace,
        labels: {
          [LABELS.managedBy]: MANAGED_BY,
          [LABELS.build]: build.metadata.name,
          [LABELS.component]: COMPONENTS.build,
        },
        ownerReferences: [ownerReference(raw)],
      },
      data: tlsSecretData(issued),
    };
    await this.createIgnoringExisting(RESOURCES.secret, secret, raw);
  }
}

/** Registers the ImageBuild controller on the manager. */
export function setupBuildController(
  manager: Manager,
  options: BuildControllerOptions,
  caches = buildCaches(manager),
): BuildReconciler {
  const reconciler = new BuildReconciler(manager, caches, options);
  caches.builds.addHandlers({
    onUpdate: (_previous, current) => reconciler.forgetWritten(current),
    onDelete: (object) => reconciler.forgetDeleted(object),
  });
  // The queues are kept between reconciles: whatever changes a build's slot requests marks it.
  caches.builds.addHandlers({
    onAdd: (build) => reconciler.queueChanged(keyOf(build)),
    onUpdate: (_previous, build) => reconciler.queueChanged(keyOf(build)),
    onDelete: (build) => reconciler.queueChanged(keyOf(build)),
  });
  const ownerBuilds = (job: KubernetesObject) => {
    for (const reference of job.metadata?.ownerReferences ?? [])
      if (reference.kind === "ImageBuild")
        reconciler.queueChanged(`${job.metadata?.namespace}/${reference.name}`);
  };
  caches.jobs.addHandlers({
    onAdd: ownerBuilds,
    onUpdate: (previous, current) => {
      ownerBuilds(previous);
      ownerBuilds(current);
    },
    onDelete: ownerBuilds,
  });
  caches.pools.addHandlers({
    onAdd: (pool) => reconciler.poolChanged(keyOf(pool)),
    // Only what the builds read (spec, labels): not the pool's own status writes.
    onUpdate: (previous, pool) => {
      if (specOrMetaChanged(previous, pool)) reconciler.poolChanged(keyOf(pool));
    },
    onDelete: (pool) => {
      reconciler.poolChanged(keyOf(pool));
      reconciler.poolDeleted(keyOf(pool));
    },
  });
  for (const cache of [
    caches.jobs,
    caches.secrets,
    caches.configMaps,
  ] as Informer<KubernetesObject>[]) {
    cache.addHandlers({
      onAdd: (object) => reconciler.observed(object),
      onUpdate: (_previous, object) => reconciler.observed(object),
      onDelete: (object) => reconciler.observed(object),
    });
  }
  // A pool's change (capacity, architectures, validity) concerns its unfinished builds.
  const buildsOfPool = (pool: KubernetesObject) =>
    caches.builds
      .byIndex(BY_POOL, keyOf(pool))
      .filter((build) => !isTerminal(phaseOf(build)))
      .map((build) => keyOf(build));
  const controller = manager.addController({
    name: "imagebuild",
    for: caches.builds,
    owns: [caches.secrets, caches.configMaps, caches.jobs],
    watches: [
      {
        informer: caches.pods,
        map: (pod) => {
          const build = pod.metadata?.labels?.[LABELS.build];
          return build ? [`${pod.metadata?.namespace}/${build}`] : [];
        },
      },
      { informer: caches.pools, map: buildsOfPool, changed: specOrMetaChanged },
      // A new pool's CA Secret lets its builds get their client certificates.
      {
        informer: caches.secrets,
        map: (secret) => {
          const pool = secret.metadata?.labels?.[LABELS.pool];
          return pool && secret.metadata?.name === caSecretName(pool)
            ? caches.builds
                .byIndex(BY_POOL, `${secret.metadata?.namespace}/${pool}`)
                .filter((build) => phaseOf(build) === "Pending")
                .map((build) => keyOf(build))
            : [];
        },
      },
    ],
    reconcile: reconciler.reconcile,
    workers: options.workers,
  });

  // The queue moves when a slot frees or a build leaves the line; then the builds at its head
  // are woken (the queue decides who starts; this only wakes them).
  const wakeWaiting = (poolKey: string) => {
    for (const key of reconciler.headOfQueue(poolKey)) controller.enqueue(key);
  };
  // A builder that becomes ready (or stops being so) changes where builds go, and lets builds
  // that wait for an autoscaled architecture's first builder start.
  caches.pods.addHandlers({
    onAdd: (pod) => {
      const pool = poolOfBuilderPod(pod);
      if (pool && isReadyBuilder(pod)) wakeWaiting(pool);
    },
    onUpdate: (previous, current) => {
      const pool = poolOfBuilderPod(current);
      if (pool && isReadyBuilder(previous) !== isReadyBuilder(current)) wakeWaiting(pool);
    },
    onDelete: (pod) => {
      const pool = poolOfBuilderPod(pod);
      if (pool && isReadyBuilder(pod)) wakeWaiting(pool);
    },
  });
  caches.jobs.addHandlers({
    // A Job holds its slot until it finishes or is gone.
    onUpdate: (previous, current) => {
      const pool = poolOfJob(current);
      if (pool && holdsSlot(previous) && !holdsSlot(current)) wakeWaiting(pool);
    },
    onDelete: (job) => {
      const pool = poolOfJob(job);
      if (pool && holdsSlot(job)) wakeWaiting(pool);
    },
  });
  caches.builds.addHandlers({
    // A build that leaves the line (not admitted after all, failed, cancelled, deleted) lets
    // the builds behind it move up. Building → Assembling is no such move: its last Job
    // finishing already woke them.
    onUpdate: (previous, current) => {
      if (standsInLine(previous) && !standsInLine(current) && phaseOf(current) !== "Assembling")
        wakeWaiting(poolKeyOf(current));
    },
    onDelete: (build) => {
      if (standsInLine(build)) wakeWaiting(poolKeyOf(build));
    },
  });
  return reconciler;
}

/**
 * What changes the demand of a pool's autoscaled architectures, for the pool controller to be
 * woken by: a build that stands in line (arriving, moving, leaving it), and a platform Job
 * (created, finished, gone). Pools without autoscaling are not woken.
 */
export function demandWatches(caches: BuildCaches): Watched[] {
  const ifAutoscaled = (poolKey: string | undefined): string[] => {
    if (!poolKey) return [];
    const pool = caches.pools.getByKey(poolKey) as
      | { spec?: { architectures?: { autoscaling?: unknown }[] } }
      | undefined;
    return pool?.spec?.architectures?.some((arch) => arch.autoscaling) ? [poolKey] : [];
  };
  return [
    // Progress within the line (a queue position, a status message) is no change of demand.
    {
      informer: caches.builds,
      map: (build) => (standsInLine(build) ? ifAutoscaled(poolKeyOf(build)) : []),
      changed: (previous, current) => standsInLine(previous) !== standsInLine(current),
    },
    {
      informer: caches.jobs,
      map: (job) =>
        job.metadata?.labels?.[LABELS.component] === COMPONENTS.build
          ? ifAutoscaled(poolOfJob(job))
          : [],
      changed: (previous, current) => holdsSlot(previous) !== holdsSlot(current),
    },
  ];
}

/** A platform Job holds its slot until it finishes (or is gone). */
function holdsSlot(job: KubernetesObject): boolean {
  return !isFinished(observeJob(job as V1Job, []));
}

/** The pool key (`<namespace>/<name>`) a Job's labels name. */
function poolOfJob(job: KubernetesObject): string | undefined {
  const labels = job.metadata?.labels ?? {};
  const pool = labels[LABELS.pool];
  return pool ? `${labels[LABELS.poolNamespace] ?? job.metadata?.namespace}/${pool}` : undefined;
}

/** Pods of a Job that reached Succeeded or Failed. */
function finishedPods(job: ObservedJob): number {
  return job.pods.filter((pod) => pod.phase === "Succeeded" || pod.phase === "Failed").length;
}
