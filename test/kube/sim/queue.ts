// A tiny level-triggered work queue for the simulated controllers: keys are deduplicated,
// processed one at a time on a later tick, retried after a conflict, and delayed on request.
import { KubeError } from "../status.ts";

export type Reconcile = (key: string) => void | Promise<void>;

export class WorkQueue {
  private readonly pending = new Set<string>();
  private readonly timers = new Map<string, { timer: NodeJS.Timeout; due: number }>();
  private readonly reconcile: Reconcile;
  private readonly onError: (key: string, error: unknown) => void;
  private scheduled = false;
  private running = false;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];

  constructor(reconcile: Reconcile, onError?: (key: string, error: unknown) => void) {
    this.reconcile = reconcile;
    this.onError =
      onError ?? ((key, error) => console.error(`test/kube controller failed on ${key}:`, error));
  }

  add(key: string): void {
    if (this.stopped) return;
    this.pending.add(key);
    this.schedule();
  }

  /** Adds the key after `ms` (an earlier add still wins). */
  addAfter(key: string, ms: number): void {
    if (this.stopped) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const due = Date.now() + ms;
    const existing = this.timers.get(key);
    if (existing) {
      if (existing.due <= due) return;
      clearTimeout(existing.timer);
    }
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, ms);
    timer.unref();
    this.timers.set(key, { timer, due });
  }

  stop(): void {
    this.stopped = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.pending.clear();
  }

  /** Resolves once nothing is pending or running (timers aside). */
  idle(): Promise<void> {
    if (!this.scheduled && !this.running && this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(): void {
    if (this.scheduled || this.running) return;
    this.scheduled = true;
    setImmediate(() => void this.drain());
  }

  private async drain(): Promise<void> {
    this.scheduled = false;
    this.running = true;
    let conflicts = 0;
    let processed = 0;
    try {
      while (this.pending.size > 0 && !this.stopped) {
        const [key] = this.pending;
        this.pending.delete(key!);
        try {
          await this.reconcile(key!);
        } catch (error) {
          if (error instanceof KubeError && error.code === 409) {
            // Another writer won; the next pass reads the newer object.
            if (++conflicts < 1000) this.pending.add(key!);
          } else if (!(error instanceof KubeError && error.code === 404)) this.onError(key!, error);
        }
        // Let the HTTP server breathe between batches.
        if (++processed % 50 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      this.running = false;
      if (this.pending.size > 0 && !this.stopped) this.schedule();
      else {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const resolve of waiters) resolve();
      }
    }
  }
}
