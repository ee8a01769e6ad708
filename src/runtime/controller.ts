// A level-triggered controller: events of the primary kind, of the kinds it owns (through
// controller owner references) and of anything else it watches become keys in a work queue;
// workers call reconcile(key), which reads the caches, makes the smallest writes, and returns
// {requeueAfter?} or throws. The queue guarantees one reconcile per key at a time.
import { randomUUID } from "node:crypto";
import type { KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { errorMessage } from "../errors.ts";
import { isConflict, KubeApiError } from "./client.ts";
import { type Informer, type Key, keyOf, splitKey } from "./informer.ts";
import type { RuntimeMetrics } from "./metrics.ts";
import { type RateLimiter, WorkQueue } from "./workqueue.ts";

export interface ReconcileRequest {
  namespace: string;
  name: string;
}

export interface ReconcileResult {
  requeueAfter?: number;
}

export interface ReconcileContext {
  log: Logger;
  /** Aborted when the operator loses leadership or its shutdown deadline passes. */
  signal: AbortSignal;
  reconcileId: string;
}

export type Reconciler = (
  request: ReconcileRequest,
  context: ReconcileContext,
) => Promise<ReconcileResult | undefined>;

export interface Watched {
  // biome-ignore lint/suspicious/noExplicitAny: informers of any kind can map to keys
  informer: Informer<any>;
  map: (object: KubernetesObject) => Key[];
  /**
   * Whether an update matters to the mapped keys; without it every update (a status write of
   * the watched object included) wakes them. Adds and deletes always do.
   */
  changed?: (previous: KubernetesObject, current: KubernetesObject) => boolean;
}

export interface ControllerOptions {
  name: string;
  // biome-ignore lint/suspicious/noExplicitAny: the primary kind is typed by its reconciler
  for: Informer<any>;
  // biome-ignore lint/suspicious/noExplicitAny: owned kinds are only read for owner references
  owns?: Informer<any>[];
  watches?: Watched[];
  reconcile: Reconciler;
  workers?: number;
  rateLimiter?: RateLimiter;
  log: Logger;
  metrics: RuntimeMetrics;
}

/** Whether a primary-object update could change what reconcile does (not our own status write). */
export function specOrMetaChanged(previous: KubernetesObject, current: KubernetesObject): boolean {
  if (previous === current) return true; // a resync hands out the same object: reconcile
  const a = previous.metadata ?? {};
  const b = current.metadata ?? {};
  return (
    a.generation !== b.generation ||
    a.generation === undefined ||
    a.deletionTimestamp !== b.deletionTimestamp ||
    JSON.stringify(a.finalizers ?? []) !== JSON.stringify(b.finalizers ?? []) ||
    JSON.stringify(a.labels ?? {}) !== JSON.stringify(b.labels ?? {}) ||
    JSON.stringify(a.annotations ?? {}) !== JSON.stringify(b.annotations ?? {})
  );
}

export class Controller {
  readonly name: string;
  readonly queue: WorkQueue;
  private readonly options: ControllerOptions;
  private readonly log: Logger;
  private readonly inFlight = new Map<Key, AbortController>();
  private workers: Promise<void>[] = [];
  private running = false;

  constructor(options: ControllerOptions) {
    this.name = options.name;
    this.options = options;
    this.log = options.log.child({ controller: options.name });
    this.queue = new WorkQueue({
      rateLimiter: options.rateLimiter,
      metrics: options.metrics.queue(options.name),
    });
    const primaryKind = options.for.type;
    options.for.addHandlers({
      onAdd: (object) => this.enqueue(keyOf(object)),
      onUpdate: (previous, current) => {
        if (specOrMetaChanged(previous, current)) this.enqueue(keyOf(current));
      },
      onDelete: (object) => this.enqueue(keyOf(object)),
    });
    const group = primaryKind.group;
    const toOwner = (object: KubernetesObject): Key[] =>
      (object.metadata?.ownerReferences ?? [])
        .filter(
          (reference) =>
            reference.controller === true &&
            reference.kind === primaryKind.kind &&
            reference.apiVersion.split("/").length === (group === "" ? 1 : 2) &&
            (group === "" || reference.apiVersion.startsWith(`${group}/`)),
        )
        .map((reference) =>
          object.metadata?.namespace
            ? `${object.metadata.namespace}/${reference.name}`
            : reference.name,
        );
    for (const owned of options.owns ?? []) this.watch({ informer: owned, map: toOwner });
    for (const watched of options.watches ?? []) this.watch(watched);
  }

  private watch({ informer, map, changed }: Watched): void {
    informer.addHandlers({
      onAdd: (object: KubernetesObject) => this.enqueueAll(map(object)),
      onUpdate: (previous: KubernetesObject, current: KubernetesObject) => {
        if (changed && !changed(previous, current)) return;
        const keys = new Set([...map(previous), ...map(current)]);
        this.enqueueAll([...keys]);
      },
      onDelete: (object: KubernetesObject) => this.enqueueAll(map(object)),
    });
  }

  private enqueueAll(keys: Key[]): void {
    for (const key of keys) this.enqueue(key);
  }

  /** Queues a key for reconciliation (deduplicated). */
  enqueue(key: Key): void {
    this.queue.add(key);
  }

  /** Starts the workers; the caches must be synced first. */
  start(): void {
    if (this.running) return;
    this.running = true;
    const workers = this.options.workers ?? 2;
    this.options.metrics.maxConcurrentReconciles.set({ controller: this.name }, workers);
    // Everything already cached needs a first reconcile once this instance leads.
    for (const object of this.options.for.list()) this.enqueue(keyOf(object));
    this.workers = Array.from({ length: workers }, () => this.work());
  }

  private async work(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      const abort = new AbortController();
      this.inFlight.set(key, abort);
      this.options.metrics.activeWorkers.inc({ controller: this.name });
      try {
        await this.reconcileKey(key, abort.signal);
      } finally {
        this.options.metrics.activeWorkers.dec({ controller: this.name });
        this.inFlight.delete(key);
        this.queue.done(key);
      }
    }
  }

  private async reconcileKey(key: Key, signal: AbortSignal): Promise<void> {
    const { namespace, name } = splitKey(key);
    const reconcileId = randomUUID();
    const log = this.log.child({ namespace, name, reconcileID: reconcileId });
    const metrics = this.options.metrics;
    const end = metrics.reconcileTime.startTimer({ controller: this.name });
    try {
      const result = await this.options.reconcile(
        { namespace, name },
        { log, signal, reconcileId },
      );
      if (signal.aborted) return;
      this.queue.forget(key);
      if (result?.requeueAfter !== undefined && result.requeueAfter >= 0) {
        metrics.reconcileTotal.inc({ controller: this.name, result: "requeue_after" });
        this.queue.addAfter(key, result.requeueAfter);
      } else {
        metrics.reconcileTotal.inc({ controller: this.name, result: "success" });
      }
    } catch (error) {
      metrics.reconcileTotal.inc({ controller: this.name, result: "error" });
      metrics.reconcileErrors.inc({ controller: this.name });
      if (signal.aborted || this.queue.isShuttingDown) return;
      if (isConflict(error)) {
        // The cache was behind the API server; the watch brings the newer object shortly.
        log.debug({ err: messageOf(error) }, "conflict; requeued");
      } else {
        log.error(
          { err: messageOf(error), code: error instanceof KubeApiError ? error.code : undefined },
          "reconcile failed; requeued with backoff",
        );
      }
      this.queue.addRateLimited(key);
    } finally {
      end();
    }
  }

  /**
   * Stops taking work and waits up to `deadlineMs` for in-flight reconciles, then aborts them.
   * With deadline 0 (leadership lost) in-flight reconciles are aborted at once.
   */
  async stop(deadlineMs: number): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.queue.shutDown();
    if (deadlineMs <= 0)
      for (const abort of this.inFlight.values()) abort.abort(new Error("leadership lost"));
    const finished = Promise.all(this.workers);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), Math.max(0, deadlineMs));
    });
    if ((await Promise.race([finished, timedOut])) === "timeout" && this.inFlight.size > 0) {
      this.log.warn(
        { inFlight: [...this.inFlight.keys()] },
        "shutdown deadline passed; aborting in-flight reconciles",
      );
      for (const abort of this.inFlight.values())
        abort.abort(new Error("shutdown deadline passed"));
    }
    clearTimeout(timer);
  }

  get isRunning(): boolean {
    return this.running;
  }
}

function messageOf(error: unknown): string {
  return errorMessage(error);
}
