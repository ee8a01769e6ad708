// The benchmark's cluster: test/kube with an amd64 and an arm64 node, the build player as the
// simulated kubelet's executor, push Secrets and BuilderPools, and the real operator as a child
// process (`node src/cli.ts operator`), so its memory and CPU are its own.
import type { KubernetesObject } from "@kubernetes/client-node";
import { KubeClient, RESOURCES } from "../src/runtime/client.ts";
import {
  BUILDS,
  buildSpec,
  POOLS,
  poolSpec,
  pushSecret,
  startPlayedKube,
} from "../test/imagebuild/cluster.ts";
import { BuildPlayer } from "../test/imagebuild/player.ts";
import type { Kube, KubeOptions } from "../test/kube/index.ts";
import {
  type OperatorProcess,
  type OperatorProcessOptions,
  spawnOperator,
  writeKubeconfig,
} from "../test/support/operator-process.ts";

export const NS = "builds";

type Json = Record<string, unknown>;

export interface BenchCluster {
  kube: Kube;
  player: BuildPlayer;
  /** A user's client (the benchmark's own requests carry User-Agent `bench`). */
  client: KubeClient;
  kubeconfig: string;
  operator: OperatorProcess | undefined;
  startOperator(options?: Partial<OperatorProcessOptions>): Promise<OperatorProcess>;
  createPool(name: string, spec?: Json): Promise<void>;
  waitForPoolReady(name: string, timeout?: number): Promise<void>;
  buildObject(name: string, pool: string, spec?: Json): KubernetesObject;
  stop(): Promise<void>;
}

export async function startBenchCluster(options: KubeOptions = {}): Promise<BenchCluster> {
  const player = new BuildPlayer();
  const kube = await startPlayedKube(player, { historySize: 20_000, ...options });
  const kubeconfig = writeKubeconfig(kube.kubeConfig({ namespace: NS }).exportConfig());
  const client = new KubeClient(kube.kubeConfig(), { userAgent: "bench" });
  await client.create(RESOURCES.secret, pushSecret(NS));
  const cluster: BenchCluster = {
    kube,
    player,
    client,
    kubeconfig,
    operator: undefined,
    async startOperator(more = {}) {
      const operator = await spawnOperator({ kubeconfig, logLevel: "warn", ...more });
      cluster.operator = operator;
      await operator.ready;
      return operator;
    },
    async createPool(name, spec = {}) {
      await client.create(POOLS, {
        apiVersion: "buildfarm.dev/v1alpha1",
        kind: "BuilderPool",
        metadata: { name, namespace: NS },
        spec: poolSpec(spec),
      } as KubernetesObject);
    },
    async waitForPoolReady(name, timeout = 60_000) {
      await kube.waitFor(
        () => {
          const pool = kube.store.get("builderpools.buildfarm.dev", NS, name) as
            | { status?: { conditions?: Json[] } }
            | undefined;
          return pool?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
        },
        { timeout, interval: 50, message: `BuilderPool ${name} did not become Ready` },
      );
    },
    buildObject(name, pool, spec = {}) {
      return {
        apiVersion: "buildfarm.dev/v1alpha1",
        kind: "ImageBuild",
        metadata: { name, namespace: NS },
        spec: buildSpec({ poolRef: { name: pool }, ...spec }),
      } as KubernetesObject;
    },
    async stop() {
      await cluster.operator?.kill("SIGKILL");
      await kube.stop();
    },
  };
  return cluster;
}

export { BUILDS };
