// What the tests ask of a real cluster: wait for builds and builders, read build logs through
// pods/log, ask each builder's buildkitd what it built, and explain a failure with the state and
// logs that matter.
import { CoreV1Api } from "@kubernetes/client-node";
import type { KubeObject, Stored } from "../kube/index.ts";
import { BUILD_NAMESPACE, POOL, POOL_NAMESPACE, type RealCluster } from "./cluster.ts";

export interface BuildStatus {
  phase?: string;
  digest?: string;
  image?: string;
  platforms?: {
    platform: string;
    phase: string;
    job?: string;
    builder?: string;
    builderPod?: string;
    digest?: string;
    message?: string;
    startTime?: string;
    completionTime?: string;
    cache?: { steps: number; cached: number; executed: number; executedSeconds: number };
  }[];
  startTime?: string;
  completionTime?: string;
  cachedSteps?: string;
  conditions?: { type: string; status: string; reason?: string; message?: string }[];
  verify?: { phase: string; image?: string; architecture?: string; message?: string };
}

type Build = Stored<KubeObject & { status?: BuildStatus }>;
interface PodStatus {
  phase?: string;
  conditions?: { type: string; status: string }[];
  initContainerStatuses?: { name: string; state?: { terminated?: { exitCode: number } } }[];
}
type PodObject = Stored<KubeObject & { spec?: { nodeName?: string }; status?: PodStatus }>;

export function build(cluster: RealCluster, name: string): Build | undefined {
  return cluster.kube.store.get<KubeObject & { status?: BuildStatus }>(
    "imagebuilds.buildfarm.dev",
    BUILD_NAMESPACE,
    name,
  );
}

export function condition(status: BuildStatus | undefined, type: string) {
  return status?.conditions?.find((c) => c.type === type);
}

/** The pods of a build's Jobs. */
export function buildPods(cluster: RealCluster, name: string): PodObject[] {
  return cluster.kube.store
    .objects<KubeObject & { status?: PodStatus; spec?: { nodeName?: string } }>(
      "pods",
      BUILD_NAMESPACE,
    )
    .filter((pod) => pod.metadata.labels?.["buildfarm.dev/build"] === name);
}

/** The builder pods of the pool, per architecture label. */
export function builderPods(cluster: RealCluster): PodObject[] {
  return cluster.kube.store
    .objects<KubeObject & { status?: PodStatus; spec?: { nodeName?: string } }>(
      "pods",
      POOL_NAMESPACE,
    )
    .filter(
      (pod) =>
        pod.metadata.labels?.["buildfarm.dev/pool"] === POOL &&
        pod.metadata.labels?.["app.kubernetes.io/component"] === "builder",
    );
}

export const isReady = (pod: PodObject) =>
  !pod.metadata.deletionTimestamp &&
  pod.status?.phase === "Running" &&
  (pod.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");

/** The architecture of the node a pod runs on, from the node's kubernetes.io/arch label. */
export function nodeArch(cluster: RealCluster, pod: PodObject): string | undefined {
  const node = cluster.kube.store.get("nodes", undefined, pod.spec?.nodeName ?? "");
  return node?.metadata.labels?.["kubernetes.io/arch"];
}

/** A container's log through the API server's pods/log, as `kubectl logs -c` reads it. */
export async function podLog(
  cluster: RealCluster,
  namespace: string,
  pod: string,
  container: string,
): Promise<string> {
  const core = cluster.kube.kubeConfig().makeApiClient(CoreV1Api);
  return await core.readNamespacedPodLog({ namespace, name: pod, container });
}

/** Everything worth reading when a build did not end as expected. */
export async function explain(cluster: RealCluster, name: string): Promise<string> {
  const lines = [`ImageBuild ${name}: ${JSON.stringify(build(cluster, name)?.status, null, 1)}`];
  for (const pod of buildPods(cluster, name)) {
    lines.push(`pod ${pod.metadata.name} on ${pod.spec?.nodeName}: ${pod.status?.phase}`);
    for (const container of ["buildctl", "report", "assemble"]) {
      const log = cluster.kube.kubelet?.log(BUILD_NAMESPACE, pod.metadata.name!, container);
      if (log) lines.push(`--- ${container} ---`, log.slice(-3000));
    }
  }
  for (const pod of builderPods(cluster)) {
    const log = cluster.kube.kubelet?.log(POOL_NAMESPACE, pod.metadata.name!, "buildkitd") ?? "";
    lines.push(`--- builder ${pod.metadata.name} (${pod.status?.phase}) ---`, log.slice(-1500));
  }
  lines.push(`kube-proxy: ${JSON.stringify(cluster.pods.connections.slice(-10))}`);
  return lines.join("\n");
}

/** Creates the build and waits until it reaches one of `phases`. */
export async function runBuild(
  cluster: RealCluster,
  object: KubeObject,
  phases: string[] = ["Succeeded", "Failed"],
  timeoutMs = 180_000,
): Promise<BuildStatus> {
  cluster.kube.store.create("imagebuilds.buildfarm.dev", object);
  return await waitForBuild(cluster, object.metadata.name!, phases, timeoutMs);
}

export async function waitForBuild(
  cluster: RealCluster,
  name: string,
  phases: string[],
  timeoutMs = 180_000,
): Promise<BuildStatus> {
  try {
    await cluster.kube.waitFor(() => phases.includes(build(cluster, name)?.status?.phase ?? ""), {
      timeout: timeoutMs,
      interval: 100,
      message: `ImageBuild ${name} reaching ${phases.join(" or ")}`,
    });
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${await explain(cluster, name)}`);
  }
  return structuredClone(build(cluster, name)!.status!) as BuildStatus;
}

/** Waits until each architecture has a Ready builder that is none of `previous` (pod uids). */
export async function waitForBuilders(
  cluster: RealCluster,
  previous: Set<string> = new Set(),
  timeoutMs = 60_000,
): Promise<PodObject[]> {
  return await cluster.kube.waitFor(
    () => {
      const ready = builderPods(cluster).filter(
        (pod) => isReady(pod) && !previous.has(pod.metadata.uid!),
      );
      const archs = new Set(ready.map((pod) => pod.metadata.labels?.["buildfarm.dev/arch"]));
      const gone = builderPods(cluster).every((pod) => !previous.has(pod.metadata.uid!));
      return archs.has("amd64") && archs.has("arm64") && gone && ready;
    },
    { timeout: timeoutMs, interval: 100, message: "a Ready builder per architecture" },
  );
}

/** Deletes every builder pod and waits for fresh ones; returns them. Their state starts empty. */
export async function replaceBuilders(cluster: RealCluster): Promise<PodObject[]> {
  const old = builderPods(cluster);
  for (const pod of old)
    cluster.kube.store.delete("pods", POOL_NAMESPACE, pod.metadata.name!, {
      gracePeriodSeconds: 5,
    });
  return await waitForBuilders(cluster, new Set(old.map((pod) => pod.metadata.uid!)));
}

export interface HistoryRecord {
  Ref: string;
  FrontendAttrs?: Record<string, string>;
  Result?: { ResultDeprecated?: { digest?: string } };
  error?: { code?: number; message?: string };
  CompletedAt?: unknown;
}

/** What one builder's buildkitd says it built: `buildctl debug histories`, exec'd in the pod. */
export async function histories(cluster: RealCluster, pod: string): Promise<HistoryRecord[]> {
  const result = await cluster.pods.exec(POOL_NAMESPACE, pod, "buildkitd", [
    "buildctl",
    "debug",
    "histories",
    "--format",
    "{{json .}}",
  ]);
  if (result.code !== 0) throw new Error(`buildctl debug histories in ${pod}: ${result.output}`);
  // One event per record (STARTED, COMPLETE), the latest last: keep the latest per Ref.
  const records = new Map<string, HistoryRecord>();
  for (const line of result.output.split("\n")) {
    if (!line.startsWith("{")) continue;
    const { record } = JSON.parse(line) as { record: HistoryRecord };
    records.set(record.Ref, record);
  }
  return [...records.values()];
}

/** The `RUN` steps of buildctl's plain progress output and whether each was CACHED. */
export function runSteps(log: string): { step: string; title: string; cached: boolean }[] {
  const steps: { step: string; title: string; cached: boolean }[] = [];
  for (const match of log.matchAll(/^#(\d+) \[[^\]]*\] (RUN .*)$/gm)) {
    const step = match[1]!;
    if (steps.some((s) => s.step === step)) continue;
    steps.push({
      step,
      title: match[2]!,
      cached: new RegExp(`^#${step} CACHED$`, "m").test(log),
    });
  }
  return steps;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
