// The manager wires the runtime together the way controller-runtime's does: shared informers
// (one per kind, started before leadership so a standby's caches are warm), controllers that
// run only while this instance leads, the health and metrics server, and graceful shutdown.
import type { KubeConfig, KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { KubeClient, type ResourceType } from "./client.ts";
import { Controller, type ControllerOptions } from "./controller.ts";
import { EventRecorder } from "./events.ts";
import { Informer, type InformerOptions } from "./informer.ts";
import { LeaderElector } from "./leader.ts";
import { RuntimeMetrics } from "./metrics.ts";
import { HealthServer } from "./server.ts";

export interface LeaderElectionConfig {
  leaseName: string;
  leaseNamespace: string;
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
}

export interface ManagerOptions {
  kubeConfig: KubeConfig;
  log: Logger;
  /** Namespaces whose objects are watched; empty watches the whole cluster. */
  namespaces?: string[];
  leaderElection?: LeaderElectionConfig;
  health?: { host?: string; port: number };
  metrics?: RuntimeMetrics;
  /** How long in-flight reconciles may finish after SIGTERM (default 30 s). */
  shutdownDeadlineMs?: number;
  cacheSyncTimeoutMs?: number;
  resyncMs?: number;
  watchTimeoutSeconds?: number;
  /** Component name on Events and the fieldManager of writes. */
  component?: string;
}

export class NotLeaderError extends Error {
  constructor() {
    super("this instance is not the leader; write refused");
    this.name = "NotLeaderError";
  }
}

export type ManagerOutcome = "stopped" | "leadership-lost";

export class Manager {
  readonly client: KubeClient;
  readonly events: EventRecorder;
  readonly metrics: RuntimeMetrics;
  readonly log: Logger;
  private readonly options: ManagerOptions;
  // biome-ignore lint/suspicious/noExplicitAny: informers of every kind share the map
  private readonly informers = new Map<string, Informer<any>>();
  private readonly controllers: Controller[] = [];
  private readonly elector: LeaderElector | undefined;
  /** The elector's run: settles once it has stopped leading and released the Lease. */
  private election: Promise<void> | undefined;
  private readonly stopInformers = new AbortController();
  private readonly stopElection = new AbortController();
  private health: HealthServer | undefined;
  private healthPort = 0;
  private started = false;
  private stopping: Promise<void> | undefined;
  private resolveDone!: (outcome: ManagerOutcome) => void;
  /** Settles when the manager stops, saying whether leadership was lost. */
  readonly done: Promise<ManagerOutcome>;

  constructor(options: ManagerOptions) {
    this.options = options;
    this.log = options.log;
    this.metrics = options.metrics ?? new RuntimeMetrics();
    const component = options.component ?? "buildfarm";
    const userAgent = `${component}/${options.leaderElection?.identity ?? "standalone"}`;
    this.client = new KubeClient(options.kubeConfig, { fieldManager: component, userAgent });
    this.client.observer = (verb, _path, code, seconds) => {
      this.metrics.apiRequests.inc({ verb, code: String(code) });
      this.metrics.apiLatency.observe({ verb }, seconds);
    };
    this.events = new EventRecorder(this.client, {
      component,
      host: options.leaderElection?.identity,
      log: options.log,
    });
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
    const election = options.leaderElection;
    if (election) {
      // The elector writes the Lease through its own client: the fence below must not block it.
      // A renewal that hangs must not outlast the renew deadline (as client-go bounds it), or a
      // leader that cannot reach the API server would not step down.
      const leaseClient = new KubeClient(options.kubeConfig, {
        fieldManager: component,
        userAgent,
        requestTimeoutMs: election.renewDeadlineMs ?? 10_000,
      });
      const elector = new LeaderElector(leaseClient, {
        ...election,
        log: options.log.child({ component: "leader-election" }),
        onStartedLeading: () => this.startControllers(),
        onStoppedLeading: () => this.onLostLeadership(),
        onStatus: (leading) =>
          this.metrics.leaderStatus.set({ name: election.leaseName }, leading ? 1 : 0),
      });
      this.elector = elector;
      this.client.writeGuard = () => {
        if (!elector.canWrite()) throw new NotLeaderError();
      };
    }
  }

  /** The shared informer for a kind; created on first use. */
  informer<T extends KubernetesObject>(
    type: ResourceType,
    options: Partial<Pick<InformerOptions<T>, "transform" | "labelSelector" | "namespaces">> = {},
  ): Informer<T> {
    const key = `${type.group}/${type.plural}`;
    const existing = this.informers.get(key);
    if (existing) return existing as Informer<T>;
    if (this.started) throw new Error(`informer for ${type.plural} requested after start`);
    const informer = new Informer<T>(this.client, {
      type,
      namespaces: options.namespaces ?? this.options.namespaces,
      labelSelector: options.labelSelector,
      transform: options.transform,
      resyncMs: this.options.resyncMs ?? 10 * 60_000,
      watchTimeoutSeconds: this.options.watchTimeoutSeconds,
      log: this.log.child({ component: "informer" }),
    });
    this.informers.set(key, informer);
    return informer;
  }

  addController(options: Omit<ControllerOptions, "log" | "metrics">): Controller {
    const controller = new Controller({ ...options, log: this.log, metrics: this.metrics });
    this.controllers.push(controller);
    return controller;
  }

  get isLeader(): boolean {
    return this.elector ? this.elector.isLeader : this.started;
  }

  get synced(): boolean {
    return [...this.informers.values()].every((informer) => informer.synced);
  }

  get healthAddress(): { port: number } {
    return { port: this.healthPort };
  }

  /** Starts caches, the health server and (once leading) the controllers. */
  async start(): Promise<void> {
    if (this.started) throw new Error("manager already started");
    this.started = true;
    if (this.options.health) {
      this.health = new HealthServer({
        ...this.options.health,
        registry: this.metrics.registry,
        ready: () => {
          const pending = [...this.informers.values()]
            .filter((informer) => !informer.synced)
            .map((i) => i.type.plural);
          return pending.length === 0
            ? { ready: true }
            : { ready: false, reason: `caches not synced: ${pending.join(", ")}` };
        },
      });
      this.healthPort = (await this.health.listen()).port;
    }
    const signal = this.stopInformers.signal;
    try {
      for (const informer of this.informers.values()) await informer.start(signal);
      const syncTimeout = AbortSignal.any([
        signal,
        AbortSignal.timeout(this.options.cacheSyncTimeoutMs ?? 120_000),
      ]);
      for (const informer of this.informers.values()) await informer.waitForSync(syncTimeout);
    } catch (error) {
      // Nothing may keep running: a process whose caches never synced must exit (and be
      // restarted by its Deployment), not stay up answering /healthz while it does nothing.
      this.stopInformers.abort();
      await this.health?.close();
      throw error;
    }
    this.log.info(
      { kinds: [...this.informers.values()].map((i) => i.type.plural) },
      "caches synced",
    );
    if (this.elector) {
      this.election = this.elector.run(this.stopElection.signal);
    } else {
      this.startControllers();
    }
  }

  private startControllers(): void {
    for (const controller of this.controllers) controller.start();
  }

  private onLostLeadership(): void {
    if (this.stopping) return;
    this.log.error("leadership lost; stopping all controllers");
    this.stopping = (async () => {
      await Promise.all(this.controllers.map((controller) => controller.stop(0)));
      this.stopInformers.abort();
      await this.health?.close();
    })();
    void this.stopping.then(() => this.resolveDone("leadership-lost"));
  }

  /**
   * Graceful shutdown: stop taking work, let in-flight reconciles finish within the deadline,
   * release the Lease, stop the caches.
   */
  async stop(): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      const deadline = this.options.shutdownDeadlineMs ?? 30_000;
      await Promise.all(this.controllers.map((controller) => controller.stop(deadline)));
      await this.events.flush();
      this.stopElection.abort();
      // Let the elector release the Lease before the process goes. Its leading flag drops
      // before the release is written, so wait for the run itself, within a deadline.
      if (this.election) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          this.election.catch(() => undefined),
          new Promise((resolve) => {
            timer = setTimeout(resolve, 5000);
          }),
        ]);
        clearTimeout(timer);
      }
      this.stopInformers.abort();
      await this.health?.close();
    })();
    await this.stopping;
    this.resolveDone("stopped");
  }
}
