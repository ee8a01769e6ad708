// Shared by the pool controller's integration tests: test/kube with amd64 and arm64 nodes,
// the real Manager running the pool controller against it, fixtures written through
// `kube.store` (which bypasses the request log, so the log holds only the operator's
// requests), and readers of what the simulated cluster holds.
import { DEFAULT_BUILDKIT_IMAGE } from "../../src/api/builderpool.ts";
import { setupPoolController } from "../../src/builderpool/controller.ts";
import { type Kube, type KubeOptions, startKube } from "../kube/index.ts";
import type { KubeObject, Stored } from "../kube/objects.ts";
import { startTestOperator, type TestOperator, writesSince } from "../support/operator.ts";

export const NS = "builders";
export const POOLS = "builderpools.buildfarm.dev";
export const ARCH_LABEL = "kubernetes.io/arch";
export const CERT_HASH = "buildfarm.dev/cert-hash";
export const DAY = 86_400_000;

// biome-ignore lint/suspicious/noExplicitAny: tests read stored JSON freely
export type Json = any;

// What a test started, stopped after it whether it passed or not (`afterEach(stopAll)`).
const running: { kube?: Kube; operators: TestOperator[] } = { operators: [] };

/** Stops the operators and the API server the current test started. */
export async function stopAll(): Promise<void> {
  for (const operator of running.operators.splice(0)) await operator.stop();
  await running.kube?.stop();
  running.kube = undefined;
}

/** Registers an operator started some other way, so stopAll stops it too. */
export function track(operator: TestOperator): void {
  running.operators.push(operator);
}

/** test/kube (server 1.31 unless told) with two amd64 nodes, one arm64 node, namespace NS. */
export async function cluster(options: KubeOptions = {}): Promise<Kube> {
  const kube = await startKube({
    version: "1.31",
    nodes: [
      { name: "amd-1", arch: "amd64" },
      { name: "amd-2", arch: "amd64" },
      { name: "arm-1", arch: "arm64" },
    ],
    namespaces: [NS],
    // Builder pods stop at once when deleted (grace periods are scaled down).
    timeScale: 0.01,
    ...options,
  });
  running.kube = kube;
  return kube;
}

export interface OperatorOptions {
  now?: () => Date;
  resyncMs?: number;
}

/** The Manager with the pool controller, `now` its clock; resyncs every minute unless told. */
export async function operator(kube: Kube, options: OperatorOptions = {}): Promise<TestOperator> {
  const started = await startTestOperator(kube, {
    resyncMs: options.resyncMs ?? 60_000,
    setup: (manager) => {
      setupPoolController(manager, {
        defaultImage: DEFAULT_BUILDKIT_IMAGE,
        workers: 2,
        now: options.now,
      });
    },
  });
  running.operators.push(started);
  return started;
}

export function poolSpec(spec: Json = {}): Json {
  return {
    architectures: [
      { name: "amd64", replicas: 2 },
      { name: "arm64", replicas: 1 },
    ],
    cache: { type: "EmptyDir", size: "20Gi" },
    ...spec,
  };
}

export function createPool(kube: Kube, name: string, spec: Json = poolSpec()): Stored {
  return kube.store.create(POOLS, {
    apiVersion: "buildfarm.dev/v1alpha1",
    kind: "BuilderPool",
    metadata: { name, namespace: NS },
    spec,
  });
}

export function changePool(kube: Kube, name: string, change: (spec: Json) => void): void {
  kube.store.mutate<Json>(POOLS, NS, name, (pool) => change(pool.spec));
}

export const pool = (kube: Kube, name: string): Json => kube.store.get(POOLS, NS, name);
export const get = (kube: Kube, resource: string, name: string): Json =>
  kube.store.get(resource, NS, name);
export const ready = (kube: Kube, name: string): Json =>
  pool(kube, name)?.status?.conditions?.find((c: Json) => c.type === "Ready");

/** Waits until the pool's Ready condition, for its current generation, matches. */
export async function waitForReady(
  kube: Kube,
  name: string,
  expected: { status: string; reason?: string },
  timeout = 30_000,
): Promise<Json> {
  return kube.waitFor(
    () => {
      const current = pool(kube, name);
      const condition = ready(kube, name);
      return (
        condition?.status === expected.status &&
        (expected.reason === undefined || condition.reason === expected.reason) &&
        current.status.observedGeneration === current.metadata.generation &&
        condition
      );
    },
    {
      timeout,
      message: `pool ${name} Ready=${expected.status} ${expected.reason ?? ""} (now ${JSON.stringify(ready(kube, name))})`,
    },
  );
}

/** Pods of one architecture's builders that are not being deleted. */
export function builderPods(kube: Kube, pool: string, arch: string): Json[] {
  return kube.store
    .objects<Json>("pods", NS)
    .filter(
      (pod: Json) =>
        pod.metadata.labels?.["buildfarm.dev/pool"] === pool &&
        pod.metadata.labels?.["buildfarm.dev/arch"] === arch &&
        !pod.metadata.deletionTimestamp,
    );
}

export const isReady = (pod: Json) =>
  pod.status?.conditions?.some((c: Json) => c.type === "Ready" && c.status === "True");

/** Every object in the namespace whose controller owner reference is `uid`. */
export function childrenOf(kube: Kube, uid: string): string[] {
  const kinds = [
    "secrets",
    "configmaps",
    "services",
    "deployments.apps",
    "statefulsets.apps",
    "poddisruptionbudgets.policy",
    "networkpolicies.networking.k8s.io",
  ];
  return kinds.flatMap((resource) =>
    kube.store
      .objects<KubeObject>(resource, NS)
      .filter((object) =>
        object.metadata.ownerReferences?.some((ref) => ref.uid === uid && ref.controller),
      )
      .map((object) => `${resource.split(".")[0]}/${object.metadata.name}`),
  );
}

/**
 * Waits until the operator has written nothing for `quietMs`: converged. Resyncs and requeues
 * keep reconciling meanwhile, so a controller that flaps never gets quiet.
 */
export async function waitForQuiet(kube: Kube, quietMs: number, timeout = 30_000): Promise<void> {
  await kube.waitFor(
    () => {
      const last = writesSince(kube, 0).at(-1);
      return !last || Date.now() - last.time >= quietMs;
    },
    { timeout, interval: 50, message: "the operator to stop writing" },
  );
}

/** Successful creates per resource, Events left out: {secrets: 2, ...}. */
export function successfulCreates(kube: Kube): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const record of kube.requestLog.entries({ verb: "create", code: 201 })) {
    if (record.resource === "events" || !record.resource) continue;
    counts[record.resource] = (counts[record.resource] ?? 0) + 1;
  }
  return counts;
}
