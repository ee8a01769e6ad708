// How the build reconciler writes status: through the status subresource, only when it
// changed, transitions at once and progress once it has lasted (settle.ts); and what it
// remembers of its own writes so that a cache that has not caught up with them is not read.
import type { KubernetesObject } from "@kubernetes/client-node";
import type { ImageBuildStatus } from "../api/imagebuild-status.ts";
import { IMAGE_BUILD_RESOURCE, type SpecError } from "../api/resources.ts";
import { isNotFound, type KubeClient } from "../runtime/client.ts";
import type { EventRecorder } from "../runtime/events.ts";
import { deepEqual } from "../runtime/hash.ts";
import { type Informer, keyOf } from "../runtime/informer.ts";
import { rfc3339 } from "../runtime/time.ts";
import { STATUS_SETTLE_MS, statusChange } from "./settle.ts";

export class StatusWriter {
  private readonly client: KubeClient;
  private readonly builds: Informer<KubernetesObject>;
  private readonly events: EventRecorder;
  private readonly settleMs: number;
  /**
   * The build as this process last wrote its status, by key, with the resourceVersion it was
   * written over. Until the cache shows that write (or anything newer) the reconciler reads
   * this instead: a status computed from the older cached object would only meet 409 Conflict.
   */
  private readonly written = new Map<
    string,
    { base: string | undefined; object: KubernetesObject }
  >();
  /** Since when a build's status has had progress not yet written, by key (see settle.ts). */
  private readonly progressSince = new Map<string, number>();

  constructor(options: {
    client: KubeClient;
    builds: Informer<KubernetesObject>;
    events: EventRecorder;
    /** How long status progress may wait to be written with a transition. */
    settleMs?: number;
  }) {
    this.client = options.client;
    this.builds = options.builds;
    this.events = options.events;
    this.settleMs = options.settleMs ?? STATUS_SETTLE_MS;
  }

  /** The cached build, or this process's own newer write of it while the cache lags. */
  current(namespace: string, name: string): KubernetesObject | undefined {
    const cached = this.builds.get(namespace, name);
    const key = `${namespace}/${name}`;
    const mine = this.written.get(key);
    if (!cached) {
      this.written.delete(key);
      return undefined;
    }
    if (!mine) return cached;
    if (cached.metadata?.resourceVersion === mine.base) return mine.object;
    this.written.delete(key);
    return cached;
  }

  /** Called for every cached version of a build: a write of ours the cache now shows is dropped. */
  forgetWritten(object: KubernetesObject): void {
    const key = keyOf(object);
    const mine = this.written.get(key);
    if (mine && object.metadata?.resourceVersion !== mine.base) this.written.delete(key);
  }

  /** The build is gone: nothing of it is kept. */
  forget(object: KubernetesObject): void {
    this.written.delete(keyOf(object));
    this.progressSince.delete(keyOf(object));
  }

  /**
   * Writes a transition at once and progress once it has lasted settleMs (see settle.ts);
   * otherwise says when to look again.
   */
  async settle(
    raw: KubernetesObject,
    status: ImageBuildStatus,
    now: Date,
  ): Promise<{ wrote: boolean; settleAfterMs?: number }> {
    const key = keyOf(raw);
    const change = statusChange((raw as { status?: ImageBuildStatus }).status, status);
    if (change === "progress") {
      const since = this.progressSince.get(key) ?? now.getTime();
      this.progressSince.set(key, since);
      const waited = now.getTime() - since;
      if (waited < this.settleMs) return { wrote: false, settleAfterMs: this.settleMs - waited };
    }
    this.progressSince.delete(key);
    return { wrote: change !== "none" && (await this.write(raw, status)) };
  }

  /** Writes the status through the status subresource unless it is what `raw` holds. */
  private async write(raw: KubernetesObject, status: unknown): Promise<boolean> {
    const object = raw as KubernetesObject & { status?: unknown };
    if (deepEqual(object.status ?? {}, status ?? {})) return false;
    let updated: KubernetesObject;
    try {
      updated = await this.client.replace(IMAGE_BUILD_RESOURCE, { ...object, status }, "status");
    } catch (error) {
      // Deleted since the cache saw it (without a finalizer it goes at once): nothing to report.
      if (isNotFound(error)) return false;
      throw error;
    }
    this.written.set(keyOf(raw), { base: raw.metadata?.resourceVersion, object: updated });
    return true;
  }

  /** A build whose spec the schema refuses: Failed with InvalidSpec, once. */
  async reportInvalid(raw: KubernetesObject, error: SpecError, now: Date): Promise<undefined> {
    const status = (raw as { status?: { phase?: string } }).status;
    if (status?.phase === "Failed") return undefined;
    const time = rfc3339(now);
    const message = error.issues.join("\n");
    const generation = raw.metadata?.generation;
    const condition = (type: string, value: "True" | "False") => ({
      type,
      status: value,
      reason: "InvalidSpec",
      message,
      lastTransitionTime: time,
      ...(generation === undefined ? {} : { observedGeneration: generation }),
    });
    const wrote = await this.write(raw, {
      ...(generation === undefined ? {} : { observedGeneration: generation }),
      phase: "Failed",
      completionTime: time,
      conditions: [
        condition("Succeeded", "False"),
        condition("Ready", "False"),
        condition("Stalled", "True"),
      ],
    });
    if (wrote) this.events.record(raw, "Warning", "InvalidSpec", error.issues.join("; "));
    return undefined;
  }
}
