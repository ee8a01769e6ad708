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
import type { BuildPhase } from "../api/imagebuild.ts";
import {
  type BuilderPool,
  IMAGE_BUILD_RESOURCE,
  type ImageBuild,
  parseBuilderPool,
  parseImageBuild,
  SpecError,
} from "../api/resources.ts";
import {
  COMPONENTS,
  caSecretName,
  clientSecretName,
  inlineContextName,
  LABELS,
  MANAGED_BY,
} from "../naming.ts";
import { issueClientCertificate } from "../pki/certificates.ts";
import { readCaSecret, tlsSecretData } from "../pki/secrets.ts";
import { MANAGED_SELECTOR, poolCaches } from "../pool/controller.ts";
import { ownerReference, writeStatus } from "../runtime/apply.ts";
import {
  isAlreadyExists,
  isNotFound,
  type KubeClient,
  RESOURCES,
  type ResourceType,
} from "../runtime/client.ts";
import type { ReconcileContext, ReconcileRequest, ReconcileResult } from "../runtime/controller.ts";
import { stableHash } from "../runtime/hash.ts";
import { BY_OWNER, type Informer, keyOf } from "../runtime/informer.ts";
import type { Manager } from "../runtime/manager.ts";
import {
  type Admission,
  admit,
  poolNamespaceOf,
  referencedSecrets,
  type SecretSummary,
} from "./admission.ts";
import { isTerminal } from "./conditions.ts";
import { type Action, decideNextStep, jobsOf, logRequests } from "./decide.ts";
import { BuildMetrics } from "./metrics.ts";
import { isFinished, type ObservedJob, observeJob } from "./observe.ts";
import { poolQueue, type QueueState } from "./queue.ts";

const BY_POOL = "pool";
const BY_JOB = "job";
const JOB_NAME_LABEL = "batch.kubernetes.io/job-name";

export interface BuildControllerOptions {
  /** The operator's own image: index Jobs run `buildfarm assemble` in it. */
  operatorImage: string;
  workers: number;
  now?: () => Date;
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

/** Jobs keep what a decision reads; their pod templates (most of their size) are dropped. */
function slimJob(job: V1Job): V1Job {
  const { template: _template, ...spec } = job.spec ?? ({} as NonNullable<V1Job["spec"]>);
  return {
    apiVersion: job.apiVersion,
    kind: job.kind,
    metadata: job.metadata,
    spec: spec as V1Job["spec"],
    status: job.status,
  };
}

/** Pods keep metadata and status (termination messages); their specs are dropped. */
function slimPod(pod: V1Pod): V1Pod {
  return {
    apiVersion: pod.apiVersion,
    kind: pod.kind,
    metadata: pod.metadata,
    spec: { nodeName: pod.spec?.nodeName, containers: [] },
    status: pod.status,
  };
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

  constructor(manager: Manager, caches: BuildCaches, options: BuildControllerOptions) {
    this.manager = manager;
    this.client = manager.client;
    this.caches = caches;
    this.options = options;
    this.metrics = new BuildMetrics(manager.metrics.registry);
  }

  private now(): Date {
    return this.options.now?.() ?? new Date();
  }

  readonly reconcile = async (
    { namespace, name }: ReconcileRequest,
    { log }: ReconcileContext,
  ): Promise<ReconcileResult | undefined> => {
    const raw = this.caches.builds.get(namespace, name);
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
    const observedJobs = this.observedJobs(build);
    const { jobs, indexJob } = jobsOf(build, observedJobs);
    const queue = pool && admission ? this.queue(pool, build, admission.admitted) : undefined;
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
    const decision = decideNextStep(build, {
      now,
      admission: admission ?? {
        admitted: false,
        phase: "Pending",
        reason: "Finished",
        message: "the build has finished",
      },
      slots: queue?.verdicts ?? new Map(),
      clientSecret: this.caches.secrets.get(namespace, clientSecretName(name)) !== undefined,
      inlineContext: this.caches.configMaps.get(namespace, inlineContextName(name)) !== undefined,
      jobs,
      indexJob,
      logs,
      operatorImage: this.options.operatorImage,
    });
    await this.perform(build, raw, decision.actions, log);
    const wrote = await writeStatus(
      this.client,
      IMAGE_BUILD_RESOURCE,
      raw as KubernetesObject & { status?: unknown },
      decision.status,
    );
    if (wrote) {
      for (const event of decision.events)
        this.manager.events.record(raw, event.type, event.reason, event.message);
      this.metrics.observeTransition(
        build,
        decision.status,
        pool?.metadata.name ?? build.spec.poolRef.name,
      );
      log.debug({ phase: decision.status.phase }, "status written");
    }
    if (queue && pool) this.metrics.observeQueue(pool, queue);
    return decision.requeueAfterMs === undefined
      ? undefined
      : { requeueAfter: decision.requeueAfterMs };
  };

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
    const wrote = await writeStatus(
      this.client,
      IMAGE_BUILD_RESOURCE,
      raw as KubernetesObject & { status?: unknown },
      {
        ...(generation === undefined ? {} : { observedGeneration: generation }),
        phase: "Failed",
        completionTime: time,
        conditions: [
          condition("Succeeded", "False"),
          condition("Ready", "False"),
          condition("Stalled", "True"),
        ],
      },
    );
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

  private observedJobs(build: ImageBuild): ObservedJob[] {
    return this.caches.jobs
      .byIndex(BY_OWNER, build.metadata.uid ?? "")
      .map((job) =>
        observeJob(
          job,
          this.caches.pods.byIndex(BY_JOB, `${job.metadata?.namespace}/${job.metadata?.name}`),
        ),
      );
  }

  /** The pool's queue from every build that names it; Jobs are read without their pods. */
  private queue(pool: BuilderPool, current: ImageBuild, admitted: boolean): QueueState {
    const members = this.caches.builds
      .byIndex(BY_POOL, `${pool.metadata.namespace}/${pool.metadata.name}`)
      .flatMap((raw) => {
        let build: ImageBuild;
        try {
          build =
            raw === this.caches.builds.get(current.metadata.namespace, current.metadata.name)
              ? current
              : parseImageBuild(raw);
        } catch {
          return [];
        }
        const observed = this.caches.jobs
          .byIndex(BY_OWNER, build.metadata.uid ?? "")
          .map((job) => observeJob(job, []));
        return [{ build, jobs: jobsOf(build, observed).jobs }];
      });
    return poolQueue(pool, members, {
      namespace: current.metadata.namespace,
      name: current.metadata.name,
      admitted,
    });
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
          await this.createIgnoringExisting(RESOURCES.configMap, action.object);
          break;
        case "CreateJob":
          if (await this.createIgnoringExisting(RESOURCES.job, action.object)) {
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

  /** Creates an object; one that exists already (a cache behind the server) is fine. */
  private async createIgnoringExisting(
    type: ResourceType,
    object: KubernetesObject,
  ): Promise<boolean> {
    try {
      await this.client.create(type, object);
      return true;
    } catch (error) {
      if (isAlreadyExists(error)) return false;
      throw error;
    }
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
      commonName: `${build.metadata.namespace}/${build.metadata.name}`,
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
    await this.createIgnoringExisting(RESOURCES.secret, secret);
  }
}

/** Registers the ImageBuild controller on the manager. */
export function setupBuildController(
  manager: Manager,
  options: BuildControllerOptions,
  caches = buildCaches(manager),
): BuildReconciler {
  const reconciler = new BuildReconciler(manager, caches, options);
  const buildsOfPool = (pool: KubernetesObject) =>
    caches.builds.byIndex(BY_POOL, keyOf(pool)).map((build) => keyOf(build));
  /**
   * A Job that finishes frees a slot of its pool: the builds that may now start are the
   * unfinished ones of the same pool (the queue decides which; this only wakes them).
   */
  const buildsWaitingOnPoolOf = (job: KubernetesObject): string[] => {
    const owner = job.metadata?.ownerReferences?.find(
      (reference) => reference.controller && reference.kind === "ImageBuild",
    );
    if (!owner) return [];
    const build = caches.builds.get(job.metadata?.namespace, owner.name);
    if (!build) return [];
    const observed = observeJob(job as V1Job, []);
    if (!isFinished(observed) && !job.metadata?.deletionTimestamp) return [keyOf(build)];
    return caches.builds
      .byIndex(BY_POOL, poolKeyOf(build))
      .filter((other) => other === build || !isTerminal(phaseOf(other)))
      .map((other) => keyOf(other));
  };
  manager.addController({
    name: "imagebuild",
    for: caches.builds,
    owns: [caches.secrets, caches.configMaps],
    watches: [
      { informer: caches.jobs, map: buildsWaitingOnPoolOf },
      {
        informer: caches.pods,
        map: (pod) => {
          const build = pod.metadata?.labels?.[LABELS.build];
          return build ? [`${pod.metadata?.namespace}/${build}`] : [];
        },
      },
      { informer: caches.pools, map: buildsOfPool },
      // A build that finished (or went away) frees its pool's slots for the builds behind it.
      {
        informer: caches.builds,
        map: (build) =>
          isTerminal(phaseOf(build)) || build.metadata?.deletionTimestamp
            ? caches.builds
                .byIndex(BY_POOL, poolKeyOf(build))
                .filter((other) => !isTerminal(phaseOf(other)))
                .map((other) => keyOf(other))
            : [],
      },
    ],
    reconcile: reconciler.reconcile,
    workers: options.workers,
  });
  return reconciler;
}
