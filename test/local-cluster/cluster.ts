// A cluster on this machine where builds are real: test/kube's API server and simulated control
// plane, whose kubelet runs builder pods, build Jobs and the index Job as real processes
// (test/kube/sim/real), two nodes (amd64, arm64: arm64 RUN steps run under QEMU), a real
// registry holding the busybox base image, and the operator in this process dialling the
// builders through the cluster network as one of its pods would.
import { join } from "node:path";
import type { Logger } from "pino";
import { OPERATOR_POD_LABELS } from "../../src/builderpool/policy.ts";
import { DEFAULT_OPERATOR_IMAGE, loadConfig } from "../../src/config.ts";
import { type RunningOperator, startOperator } from "../../src/operator.ts";
import { createLogger } from "../../src/runtime/log.ts";
import { defaultExecutor, type Kube, type KubeObject, startKube } from "../kube/index.ts";
import { RealPods } from "../kube/sim/real/executor.ts";
import type { ClusterDns } from "../kube/sim/real/network.ts";
import type { BuildkitTools } from "../support/buildkit.ts";
import { REPO_ROOT } from "../support/files.ts";
import { type RunningRegistry, startRegistry } from "../support/registry.ts";
import { type ImageRun, pushedImageExecutor } from "./images.ts";
import { type Arch, pushBaseImage } from "./sources.ts";

/** Where the operator's pods would run; a stand-in pod there dials the builders for it. */
export const OPERATOR_NAMESPACE = "buildfarm-system";
/** The nodes, one per architecture. */
export const NODES = [
  { name: "amd64-node", arch: "amd64" },
  { name: "arm64-node", arch: "arm64" },
] as const;

export interface LocalClusterOptions {
  /** Namespaces created at start, besides Kubernetes' own (none: create them through the API). */
  namespaces?: string[];
  /** CRDs installed at start: crds/ (default), or [] to install them through the API. */
  crds?: KubeObject[];
  /** The cluster DNS the pods see (default CoreDNS). */
  clusterDns?: ClusterDns;
  /** What /version reports (test/kube's default, 1.31, unless given). */
  version?: string;
}

export interface LocalCluster {
  kube: Kube;
  pods: RealPods;
  /** Containers that ran a pushed image (verify Jobs), as pushedImageExecutor ran them. */
  images: ImageRun[];
  registry: RunningRegistry;
  /** `<registry>/base:busybox`: busybox for amd64 and arm64, one OCI index. */
  baseImage: string;
  /** Runs `step` on stop, before everything registered earlier (last in, first out). */
  onStop(step: () => Promise<unknown>): void;
  /** Stops everything: what onStop registered, the kubelet's processes, the servers. */
  stop(): Promise<void>;
}

export async function startLocalCluster(
  tools: BuildkitTools,
  debs: Record<Arch, string>,
  options: LocalClusterOptions = {},
): Promise<LocalCluster> {
  const stops: (() => Promise<unknown>)[] = [];
  const stop = async () => {
    for (const step of stops.splice(0).reverse()) await step().catch(() => {});
  };
  try {
    const registry = await startRegistry();
    stops.push(() => registry.stop());
    const baseImage = await pushBaseImage(registry, debs);
    // The images the builds push run too (a verify Job checks the image it built).
    const pushed = pushedImageExecutor(registry, defaultExecutor);
    const pods = new RealPods({
      programs: {
        buildkitd: tools.buildkitd,
        buildctl: tools.buildctl,
        rootlesskit: tools.rootlesskit,
        cli: join(REPO_ROOT, "src", "cli.ts"),
      },
      operatorImage: DEFAULT_OPERATOR_IMAGE,
      fallback: pushed.executor,
      ...(options.clusterDns ? { clusterDns: options.clusterDns } : {}),
    });
    const kube = await startKube({
      nodes: NODES.map((node) => ({ ...node })),
      namespaces: options.namespaces ?? [],
      ...(options.crds ? { crds: options.crds } : {}),
      ...(options.version ? { version: options.version } : {}),
      executor: pods.executor,
      readiness: pods.readiness,
      probePeriodMs: 200,
    });
    // Stopped in reverse: the kubelet first (its workers stop their containers and remove their
    // sandboxes, and nothing restarts), then whatever process is still winding down.
    stops.push(() => pods.stop());
    stops.push(() => kube.stop());
    return {
      kube,
      pods,
      images: pushed.runs,
      registry,
      baseImage,
      onStop: (step) => stops.push(step),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

export interface InClusterOperatorOptions {
  /** `buildfarm operator` flags after the ones every in-process run needs. */
  args?: string[];
  log?: Logger;
}

/**
 * Runs the operator in this process as `buildfarm operator` runs it (the same flags, parsed
 * by the same config), against the cluster; it stops with the cluster. It is not in a pod,
 * yet what it dials must cross the cluster network like its pods' connections would: a
 * stand-in pod in OPERATOR_NAMESPACE (which must exist) carries the chart's operator labels,
 * and the builders are dialled as from it, so the pools' NetworkPolicy must admit it.
 */
export async function startInClusterOperator(
  cluster: LocalCluster,
  options: InClusterOperatorOptions = {},
): Promise<RunningOperator> {
  const config = loadConfig(
    [
      "--leader-elect=false",
      "--metrics-bind-address=0",
      `--operator-image=${DEFAULT_OPERATOR_IMAGE}`,
      `--operator-namespace=${OPERATOR_NAMESPACE}`,
      ...(options.args ?? []),
    ],
    {},
  );
  // One stand-in for every operator started against the cluster (a restart reuses it).
  const standIn =
    cluster.kube.store.get("pods", OPERATOR_NAMESPACE, "operator") ??
    cluster.kube.store.create("pods", {
      metadata: {
        name: "operator",
        namespace: OPERATOR_NAMESPACE,
        labels: { ...OPERATOR_POD_LABELS },
      },
      spec: {
        restartPolicy: "Always",
        containers: [{ name: "operator", image: "stand-in.invalid/operator:1" }],
      },
    } as KubeObject);
  const from = { podUid: standIn.metadata.uid ?? "", namespace: OPERATOR_NAMESPACE };
  const operator = await startOperator(config, {
    kubeConfig: cluster.kube.kubeConfig(),
    log: options.log ?? createLogger({ level: config.logLevel }),
    apiAttempts: 1,
    hooks: {
      resolveBuilder: async (ip, port) => {
        const target = await cluster.pods.dialFrom(from, ip, port);
        if (!target) throw new Error(`${ip}:${port} is no address in the cluster`);
        const colon = target.lastIndexOf(":");
        return { host: target.slice(0, colon), port: Number(target.slice(colon + 1)) };
      },
    },
  });
  cluster.onStop(() => operator.manager.stop());
  return operator;
}
