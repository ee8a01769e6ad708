// The simulated kubelet: runs every pod bound to a node in the store (see pod-worker.ts for
// one pod's life), confirms deletions, removes the pods of deleted nodes, and serves
// container logs to pods/log.
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IPod } from "kubernetes-models/v1/Pod";
import type { KubeObject, Stored } from "../objects.ts";
import { KubeError } from "../status.ts";
import type { Store } from "../store.ts";
import { defaultExecutor, type Executor } from "./executor.ts";
import { ContainerLogs } from "./logs.ts";
import { PodWorker } from "./pod-worker.ts";

export type Pod = Stored<IPod & KubeObject>;
export type Container = Stored<IContainer>;

/** Whether a running container counts as ready; re-evaluated every probe period. */
export type ReadinessPolicy = (pod: Pod, container: Container) => boolean | Promise<boolean>;

export interface KubeletOptions {
  executor?: Executor;
  /** Default: a container is ready as soon as it runs. */
  readiness?: ReadinessPolicy;
  /** How often a readiness policy is asked again (default 100 ms). */
  probePeriodMs?: number;
  /** First restart back-off (default 20 ms, doubling up to 1 s; the real kubelet: 10 s to 5 min). */
  restartBackoffMs?: number;
  /** Where pod sandboxes live (default a temporary directory, removed on stop). */
  podsDir: string;
  /** Multiplies grace periods (default 1). */
  timeScale?: number;
}

export class Kubelet {
  readonly store: Store;
  readonly options: KubeletOptions;
  readonly logs = new ContainerLogs();
  executor: Executor;
  private readonly workers = new Map<string, PodWorker>();
  private readonly unsubscribe: () => void;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly runs = new Set<Promise<void>>();
  private stopped = false;

  constructor(store: Store, options: KubeletOptions) {
    this.store = store;
    this.options = options;
    this.executor = options.executor ?? defaultExecutor;
    this.unsubscribe = store.onChange((event, info) => {
      if (info.group) return;
      if (info.resource === "pods") this.observe(event.type, event.object as Pod);
      else if (info.resource === "nodes") {
        const node = event.object.metadata.name!;
        for (const pod of store.objects<IPod & KubeObject>("pods")) {
          if (pod.spec?.nodeName !== node) continue;
          if (event.type === "DELETED") this.forceDelete(pod as Pod);
          else this.observe("MODIFIED", pod as Pod);
        }
      }
    });
    for (const pod of store.objects<IPod & KubeObject>("pods")) this.observe("ADDED", pod as Pod);
  }

  /** Replaces the readiness policy; running containers pick it up at their next probe. */
  setReadiness(policy: ReadinessPolicy | undefined): void {
    this.options.readiness = policy;
    for (const worker of this.workers.values()) worker.readinessChanged();
  }

  setExecutor(executor: Executor): void {
    this.executor = executor;
  }

  nodeIP(name: string): string {
    const node = this.store.get<
      KubeObject & { status?: { addresses?: { type: string; address: string }[] } }
    >("nodes", undefined, name);
    return node?.status?.addresses?.find((a) => a.type === "InternalIP")?.address ?? "";
  }

  private observe(type: string, pod: Pod): void {
    if (this.stopped) return;
    const uid = pod.metadata.uid!;
    const worker = this.workers.get(uid);
    if (type === "DELETED") {
      worker?.kill();
      this.workers.delete(uid);
      this.logs.forget(uid);
      return;
    }
    const node = pod.spec?.nodeName;
    if (!node || !this.store.get("nodes", undefined, node)) return;
    if (worker) {
      if (pod.metadata.deletionTimestamp)
        void worker.terminate(pod).catch((error) => this.report(error));
      return;
    }
    const phase = pod.status?.phase;
    if (pod.metadata.deletionTimestamp) {
      // Nothing runs (finished or never started here): the kubelet confirms the deletion.
      if ((pod.metadata.deletionGracePeriodSeconds ?? 0) > 0) this.forceDelete(pod);
      return;
    }
    if (phase === "Succeeded" || phase === "Failed" || pod.status?.startTime) return;
    const started = new PodWorker(this, pod);
    this.workers.set(uid, started);
    const run = started.run().catch((error) => this.report(error));
    this.runs.add(run);
    void run.finally(() => this.runs.delete(run));
  }

  private forceDelete(pod: Pod): void {
    setImmediate(() => {
      try {
        this.store.delete("pods", pod.metadata.namespace, pod.metadata.name!, {
          gracePeriodSeconds: 0,
          preconditions: { uid: pod.metadata.uid! },
        });
      } catch (error) {
        if (!(error instanceof KubeError && (error.code === 404 || error.code === 409)))
          this.report(error);
      }
    });
  }

  forget(worker: PodWorker): void {
    if (this.workers.get(worker.uid) === worker && !worker.terminating)
      this.workers.delete(worker.uid);
  }

  private report(error: unknown): void {
    if (!this.stopped) console.error("test/kube kubelet:", error);
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        resolve();
      }, ms);
      timer.unref();
      this.timers.add(timer);
      signal?.addEventListener(
        "abort",
        () => {
          clearTimeout(timer);
          this.timers.delete(timer);
          resolve();
        },
        { once: true },
      );
    });
  }

  /** Kills a running container with an exit code (default 137), as if its process died. */
  killContainer(namespace: string, pod: string, container: string, exitCode = 137): boolean {
    const found = this.store.get("pods", namespace, pod);
    return found
      ? (this.workers.get(found.metadata.uid!)?.killContainer(container, exitCode) ?? false)
      : false;
  }

  /** A container's log (current run, or the previous one). */
  log(namespace: string, pod: string, container: string, previous = false): string {
    const found = this.store.get("pods", namespace, pod);
    return found ? this.logs.text(found.metadata.uid!, container, previous) : "";
  }

  /** Pods with a running worker. */
  get running(): number {
    return this.workers.size;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe();
    for (const timer of this.timers) clearTimeout(timer);
    const workers = [...this.workers.values()];
    for (const worker of workers) worker.kill();
    this.workers.clear();
    // Let aborted containers wind down (an executor that ignores its signal gets 2 s).
    await Promise.race([
      Promise.allSettled([...this.runs]),
      new Promise((resolve) => setTimeout(resolve, 2_000).unref()),
    ]);
  }
}
