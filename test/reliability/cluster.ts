// A cluster for the reliability tests that run the real operator as child processes
// (test/support/operator-process.ts): test/kube with an amd64 and an arm64 node, the build player
// as the kubelet's executor, a push Secret and a BuilderPool, all written through the store
// (so fault injection never touches the test's own setup). It records, from the store's events,
// every Job ever added and every status each build had, so a test can say afterwards what
// existed at any time, whatever the operator's caches believed.
import type { ImageBuildStatus } from "../../src/api/imagebuild-status.ts";
import {
  buildSpec,
  IMAGE,
  NS,
  POOL,
  poolSpec,
  pushSecret,
  startPlayedKube,
} from "../imagebuild/cluster.ts";
import { BuildPlayer, digestOf, indexDigestOf } from "../imagebuild/player.ts";
import { seededRandom } from "../kube/faults.ts";
import type { Kube, KubeOptions } from "../kube/index.ts";
import { writeKubeconfig } from "../support/operator-process.ts";

export { NS, POOL, seededRandom };

type Json = Record<string, unknown>;

export interface History {
  /** Times each Job name was added to the store. */
  jobsAdded: Map<string, number>;
  /** Job names deleted from the store. */
  jobsDeleted: string[];
  /** Each build's statuses in order, as the server stored them. */
  statuses: Map<string, ImageBuildStatus[]>;
}

export interface ReliabilityCluster {
  kube: Kube;
  player: BuildPlayer;
  kubeconfig: string;
  history: History;
  createBuild(name: string, spec?: Json): void;
  status(name: string): ImageBuildStatus | undefined;
  phases(): Record<string, number>;
  /** Resolves once every named build is Succeeded or Failed; the message names a few that are not. */
  waitForFinished(names: readonly string[], timeout: number): Promise<void>;
  waitForPoolReady(timeout?: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startReliabilityCluster(
  options: { kube?: KubeOptions; pool?: Json } = {},
): Promise<ReliabilityCluster> {
  const player = new BuildPlayer();
  const kube = await startPlayedKube(player, { historySize: 20_000, ...options.kube });
  const history: History = { jobsAdded: new Map(), jobsDeleted: [], statuses: new Map() };
  kube.store.onChange((event, info) => {
    const name = event.object.metadata.name as string;
    if (info.resource === "jobs") {
      if (event.type === "ADDED")
        history.jobsAdded.set(name, (history.jobsAdded.get(name) ?? 0) + 1);
      if (event.type === "DELETED") history.jobsDeleted.push(name);
      return;
    }
    if (info.resource !== "imagebuilds" || event.type === "DELETED") return;
    const status = (event.object as { status?: ImageBuildStatus }).status;
    const previous = (event.previous as { status?: ImageBuildStatus } | undefined)?.status;
    if (!status || JSON.stringify(status) === JSON.stringify(previous)) return;
    history.statuses.set(name, [...(history.statuses.get(name) ?? []), status]);
  });
  kube.store.create("secrets", pushSecret(NS));
  kube.store.create("builderpools.buildfarm.dev", {
    apiVersion: "buildfarm.dev/v1alpha1",
    kind: "BuilderPool",
    metadata: { name: POOL, namespace: NS },
    spec: poolSpec(options.pool),
  });
  const kubeconfig = writeKubeconfig(kube.kubeConfig({ namespace: NS }).exportConfig());
  const status = (name: string) =>
    (
      kube.store.get("imagebuilds.buildfarm.dev", NS, name) as
        | { status?: ImageBuildStatus }
        | undefined
    )?.status;
  return {
    kube,
    player,
    kubeconfig,
    history,
    createBuild(name, spec = {}) {
      kube.store.create("imagebuilds.buildfarm.dev", {
        apiVersion: "buildfarm.dev/v1alpha1",
        kind: "ImageBuild",
        metadata: { name, namespace: NS },
        spec: buildSpec(spec),
      });
    },
    status,
    phases() {
      const out: Record<string, number> = {};
      for (const build of kube.store.objects("imagebuilds.buildfarm.dev", NS)) {
        const phase = (build as { status?: ImageBuildStatus }).status?.phase ?? "(none)";
        out[phase] = (out[phase] ?? 0) + 1;
      }
      return out;
    },
    async waitForFinished(names, timeout) {
      let left: string[] = [];
      try {
        await kube.waitFor(
          () => {
            left = names.filter(
              (name) => !["Succeeded", "Failed"].includes(status(name)?.phase ?? ""),
            );
            return left.length === 0;
          },
          { timeout, interval: 100 },
        );
      } catch {
        throw new Error(
          `${left.length} builds unfinished after ${timeout} ms, e.g. ${left
            .slice(0, 3)
            .map((name) => `${name}: ${JSON.stringify(status(name))}`)
            .join("; ")}`,
        );
      }
    },
    async waitForPoolReady(timeout = 30_000) {
      await kube.waitFor(
        () => {
          const pool = kube.store.get("builderpools.buildfarm.dev", NS, POOL) as
            | { status?: { conditions?: Json[] } }
            | undefined;
          return pool?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
        },
        { timeout, interval: 50, message: "the BuilderPool did not become Ready" },
      );
    },
    stop: () => kube.stop(),
  };
}

/** The digests a build must end with: each platform's as the player pushed it, and the index. */
export function expectedDigests(build: string) {
  const amd64 = digestOf(`${build}-amd64`);
  const arm64 = digestOf(`${build}-arm64`);
  const index = indexDigestOf([amd64, arm64]);
  return { amd64, arm64, index, image: `${IMAGE}@${index}` };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
