// A cluster for the ImageBuild integration tests: test/kube with an amd64 and an arm64 node,
// the build player as the kubelet's executor, the real operator (pool and build controllers),
// a BuilderPool whose builders are up, and a push Secret. Helpers create builds the way a user
// would (through the API server) and wait on what the operator reports.
import type { KubernetesObject } from "@kubernetes/client-node";
import type { ImageBuildStatus } from "../../src/api/imagebuild-status.ts";
import { KubeClient, RESOURCES, type ResourceType } from "../../src/runtime/client.ts";
import { type Kube, type KubeOptions, startKube } from "../kube/index.ts";
import {
  startTestOperator,
  type TestOperator,
  type TestOperatorOptions,
  type WriteRequest,
} from "../support/build-operator.ts";
import { BuildPlayer } from "./player.ts";

export const NS = "builds";
export const POOL = "farm";
export const PUSH_SECRET = "registry-push";
export const IMAGE = "registry.example.com/demo/app";

export const BUILDS: ResourceType = {
  group: "buildfarm.dev",
  version: "v1alpha1",
  kind: "ImageBuild",
  plural: "imagebuilds",
  namespaced: true,
};
export const POOLS: ResourceType = { ...BUILDS, kind: "BuilderPool", plural: "builderpools" };

export type Build = KubernetesObject & {
  spec: Record<string, unknown>;
  status?: ImageBuildStatus;
};

type Json = Record<string, unknown>;

export interface BuildCluster {
  kube: Kube;
  player: BuildPlayer;
  /** The operator process now running (replaced by restart()). */
  operator: TestOperator;
  /** A user's client. */
  client: KubeClient;
  /** Kills the running operator (if alive) and starts a new process. */
  restart(): Promise<TestOperator>;
  createBuild(name: string, spec?: Json, namespace?: string): Promise<Build>;
  getBuild(name: string, namespace?: string): Promise<Build | undefined>;
  /** Waits until the build's status satisfies `check`; the message names the last status seen. */
  waitForBuild(
    name: string,
    check: (build: Build) => boolean,
    options?: { timeout?: number; namespace?: string },
  ): Promise<Build>;
  /** Every status the build had, in order, as the server stored them. */
  statuses(name: string, namespace?: string): ImageBuildStatus[];
  /** Names of the Jobs in the namespace (from the server, not a cache). */
  jobNames(namespace?: string): string[];
  /** How many times each Job (by name) was created: the store's ADDED events. */
  jobsCreated: ReadonlyMap<string, number>;
  /** Kills the running operator right before its (n+1)-th write for the build's objects. */
  crashBeforeWrite(build: string, n: number): void;
  stop(): Promise<void>;
}

export function poolSpec(patch: Json = {}): Json {
  return {
    architectures: [
      { name: "amd64", replicas: 1 },
      { name: "arm64", replicas: 1 },
    ],
    maxConcurrentBuilds: 4,
    cache: { type: "EmptyDir", size: "50Gi" },
    ...patch,
  };
}

export function buildSpec(patch: Json = {}): Json {
  return {
    poolRef: { name: POOL },
    source: { git: { url: "https://github.com/docker/welcome-to-docker.git", revision: "main" } },
    platforms: ["linux/amd64", "linux/arm64"],
    output: { image: IMAGE, tags: ["latest"], pushSecretRef: { name: PUSH_SECRET } },
    ...patch,
  };
}

export function pushSecret(namespace: string, name = PUSH_SECRET): KubernetesObject & Json {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, namespace },
    type: "kubernetes.io/dockerconfigjson",
    stringData: {
      ".dockerconfigjson": JSON.stringify({
        auths: { "registry.example.com": { auth: Buffer.from("ci:token").toString("base64") } },
      }),
    },
  };
}

export interface BuildClusterOptions {
  kube?: KubeOptions;
  pool?: Json;
  operator?: TestOperatorOptions;
  /** Namespaces besides NS, with labels. */
  namespaces?: Record<string, Record<string, string>>;
}

/**
 * test/kube with the builds' namespace, an amd64 and an arm64 node, and a kubelet whose
 * containers `player` plays; pods that fail are retried at once.
 */
export function startPlayedKube(player: BuildPlayer, options: KubeOptions = {}): Promise<Kube> {
  return startKube({
    namespaces: [NS],
    nodes: [
      { name: "amd-1", arch: "amd64" },
      { name: "arm-1", arch: "arm64" },
    ],
    executor: player.executor,
    podFailureBackoffMs: 5,
    restartBackoffMs: 5,
    ...options,
  });
}

export async function startBuildCluster(options: BuildClusterOptions = {}): Promise<BuildCluster> {
  const player = new BuildPlayer();
  const extra = options.namespaces ?? {};
  const kube = await startPlayedKube(player, {
    namespaces: [NS, ...Object.keys(extra)],
    timeScale: 0.01,
    ...options.kube,
  });
  for (const [name, labels] of Object.entries(extra)) {
    kube.store.mutate("namespaces", undefined, name, (draft) => {
      draft.metadata.labels = { ...draft.metadata.labels, ...labels };
    });
  }
  const client = new KubeClient(kube.kubeConfig());
  const history = new Map<string, ImageBuildStatus[]>();
  const jobsCreated = new Map<string, number>();
  kube.store.onChange((event, info) => {
    if (info.resource === "jobs" && event.type === "ADDED") {
      const name = event.object.metadata.name as string;
      jobsCreated.set(name, (jobsCreated.get(name) ?? 0) + 1);
    }
    if (info.resource !== "imagebuilds" || event.type === "DELETED") return;
    const key = `${event.object.metadata.namespace}/${event.object.metadata.name}`;
    const status = (event.object as { status?: ImageBuildStatus }).status;
    const previous = (event.previous as { status?: ImageBuildStatus } | undefined)?.status;
    if (!status || JSON.stringify(status) === JSON.stringify(previous)) return;
    history.set(key, [...(history.get(key) ?? []), status as ImageBuildStatus]);
  });
  let operator = await startTestOperator(kube, options.operator);
  await client.create(RESOURCES.secret, pushSecret(NS));
  await client.create(POOLS, {
    apiVersion: "buildfarm.dev/v1alpha1",
    kind: "BuilderPool",
    metadata: { name: POOL, namespace: NS },
    spec: poolSpec(options.pool),
  });
  await kube.waitFor(
    async () => {
      const pool = await client.get<KubernetesObject & { status?: { conditions?: Json[] } }>(
        POOLS,
        NS,
        POOL,
      );
      return pool?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
    },
    { timeout: 30_000, message: "the BuilderPool did not become Ready" },
  );

  const getBuild = (name: string, namespace = NS) => client.get<Build>(BUILDS, namespace, name);
  return {
    kube,
    player,
    get operator() {
      return operator;
    },
    client,
    async restart() {
      await operator.crash();
      operator = await startTestOperator(kube, options.operator);
      return operator;
    },
    async createBuild(name, spec = {}, namespace = NS) {
      return client.create<Build>(BUILDS, {
        apiVersion: "buildfarm.dev/v1alpha1",
        kind: "ImageBuild",
        metadata: { name, namespace },
        spec: buildSpec(spec),
      } as Build);
    },
    getBuild,
    async waitForBuild(name, check, { timeout = 30_000, namespace = NS } = {}) {
      let last: Build | undefined;
      try {
        return await kube.waitFor(
          async () => {
            last = await getBuild(name, namespace);
            return last && check(last) ? last : undefined;
          },
          { timeout },
        );
      } catch (error) {
        throw new Error(
          `ImageBuild ${namespace}/${name}: ${(error as Error).message}; last status: ${JSON.stringify(last?.status, null, 1)}`,
        );
      }
    },
    jobsCreated,
    crashBeforeWrite(build, n) {
      let seen = 0;
      operator.crashBefore((write) => isBuildWrite(build, write) && seen++ === n);
    },
    statuses(name, namespace = NS) {
      return history.get(`${namespace}/${name}`) ?? [];
    },
    jobNames(namespace = NS) {
      return kube.store
        .objects("jobs.batch", namespace)
        .map((job) => job.metadata.name as string)
        .sort();
    },
    async stop() {
      await operator.stop();
      await kube.stop();
    },
  };
}

/** The object a write is about: the body's name (a create), else the URL's. */
function nameOf(write: WriteRequest): string | undefined {
  const body = write.body as { metadata?: { name?: string } } | undefined;
  const parts = write.path.split("/").filter(Boolean);
  return body?.metadata?.name ?? (parts.at(-1) === "status" ? parts.at(-2) : parts.at(-1));
}

/** A write for the build's own objects (its status, Jobs, Secret), Events aside. */
function isBuildWrite(build: string, write: WriteRequest): boolean {
  if (write.path.includes("/events")) return false;
  const name = nameOf(write);
  return name === build || (name?.startsWith(`${build}-`) ?? false);
}

/** The condition of a type, from a build's status. */
export function condition(build: Build | undefined, type: string) {
  return build?.status?.conditions?.find((c) => c.type === type);
}

export const phaseIs =
  (...phases: string[]) =>
  (build: Build) =>
    phases.includes(build.status?.phase ?? "");
