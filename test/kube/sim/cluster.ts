// The simulated control plane and nodes behind test/kube: scheduler, kubelet, and the
// Deployment, ReplicaSet, StatefulSet, Job and PersistentVolumeClaim controllers, each optional.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { INode } from "kubernetes-models/v1/Node";
import { clone, type KubeObject } from "../objects.ts";
import type { Store } from "../store.ts";
import { DeploymentController, ReplicaSetController } from "./deployments.ts";
import type { Executor } from "./executor.ts";
import { JobController } from "./jobs.ts";
import { Kubelet, type ReadinessPolicy } from "./kubelet.ts";
import { type NodeSpec, nodeObject, Scheduler } from "./scheduler.ts";
import { ClaimController, StatefulSetController } from "./statefulsets.ts";

export interface SimulationOptions {
  /** Nodes to register at start (default one amd64 node `node-1`; [] for none). */
  nodes?: NodeSpec[];
  executor?: Executor;
  readiness?: ReadinessPolicy;
  probePeriodMs?: number;
  restartBackoffMs?: number;
  podFailureBackoffMs?: number;
  /** Multiplies the durations objects ask for (deadlines, TTLs, grace periods); default 1. */
  timeScale?: number;
  /** Turn parts off: e.g. `{ kubelet: false }` leaves bound pods Pending. */
  controllers?: Partial<
    Record<"scheduler" | "kubelet" | "deployments" | "statefulsets" | "jobs" | "claims", boolean>
  >;
}

export class Simulation {
  private readonly store: Store;
  private readonly stoppers: (() => void | Promise<void>)[] = [];
  readonly kubelet: Kubelet | undefined;
  private podsDir = "";
  private readonly kubeletVersion: string;

  private constructor(store: Store, kubelet: Kubelet | undefined, kubeletVersion: string) {
    this.store = store;
    this.kubelet = kubelet;
    this.kubeletVersion = kubeletVersion;
  }

  static async start(
    store: Store,
    options: SimulationOptions,
    kubeletVersion: string,
  ): Promise<Simulation> {
    const on = (name: keyof NonNullable<SimulationOptions["controllers"]>) =>
      options.controllers?.[name] !== false;
    const podsDir = await mkdtemp(join(tmpdir(), "test-kube-"));
    const kubelet = on("kubelet")
      ? new Kubelet(store, {
          executor: options.executor,
          readiness: options.readiness,
          probePeriodMs: options.probePeriodMs,
          restartBackoffMs: options.restartBackoffMs,
          podsDir,
          timeScale: options.timeScale,
        })
      : undefined;
    const sim = new Simulation(store, kubelet, kubeletVersion);
    sim.podsDir = podsDir;
    for (const node of options.nodes ?? [{ name: "node-1" }]) sim.addNode(node);
    if (kubelet) sim.stoppers.push(() => kubelet.stop());
    if (on("scheduler")) {
      const scheduler = new Scheduler(store);
      sim.stoppers.push(() => scheduler.stop());
    }
    if (on("deployments")) {
      const rs = new ReplicaSetController(store);
      const deployments = new DeploymentController(store, options.timeScale);
      sim.stoppers.push(
        () => rs.stop(),
        () => deployments.stop(),
      );
    }
    if (on("statefulsets")) {
      const sts = new StatefulSetController(store);
      sim.stoppers.push(() => sts.stop());
    }
    if (on("claims")) {
      const claims = new ClaimController(store);
      sim.stoppers.push(() => claims.stop());
    }
    if (on("jobs")) {
      const jobs = new JobController(store, {
        timeScale: options.timeScale,
        podFailureBackoffMs: options.podFailureBackoffMs,
      });
      sim.stoppers.push(() => jobs.stop());
    }
    return sim;
  }

  /** Registers a node (labels kubernetes.io/arch, os, hostname; Ready). */
  addNode(spec: NodeSpec): void {
    this.store.create("nodes", nodeObject(spec, this.kubeletVersion));
  }

  /** Deletes a node; its pods go with it (pod garbage collection). */
  removeNode(name: string): void {
    this.store.delete("nodes", undefined, name);
  }

  /** Marks a node NotReady (taint node.kubernetes.io/not-ready) or Ready again. */
  setNodeReady(name: string, ready: boolean): void {
    this.store.mutate<KubeObject & INode>("nodes", undefined, name, (draft) => {
      const taints = (draft.spec?.taints ?? []).filter(
        (t) => t.key !== "node.kubernetes.io/not-ready",
      );
      if (!ready) taints.push({ key: "node.kubernetes.io/not-ready", effect: "NoSchedule" });
      draft.spec = { ...draft.spec, taints };
      if (!taints.length) delete draft.spec.taints;
    });
    this.store.mutate<KubeObject & INode>(
      "nodes",
      undefined,
      name,
      (draft) => {
        const conditions = clone(draft.status?.conditions ?? []).map((c) =>
          c.type === "Ready"
            ? {
                ...c,
                status: ready ? "True" : "False",
                reason: ready ? "KubeletReady" : "KubeletNotReady",
              }
            : c,
        );
        draft.status = { ...draft.status, conditions };
      },
      { subresource: "status" },
    );
  }

  /** Cordons (spec.unschedulable) or uncordons a node. */
  setSchedulable(name: string, schedulable: boolean): void {
    this.store.mutate<KubeObject & INode>("nodes", undefined, name, (draft) => {
      draft.spec = { ...draft.spec, unschedulable: !schedulable || undefined };
    });
  }

  async stop(): Promise<void> {
    for (const stop of this.stoppers.reverse()) await stop();
    await rm(this.podsDir, { recursive: true, force: true });
  }
}
