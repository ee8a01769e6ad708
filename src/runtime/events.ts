// Kubernetes Events for `kubectl describe`: deduplicated (a repeat within the window bumps the
// count of the existing Event instead of creating another) and rate-limited per object (a
// token bucket like client-go's spam filter), written in the background so a failed Event
// never fails a reconcile.
import type { CoreV1Event, KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { errorMessage } from "../errors.ts";
import { isNotFound, type KubeClient, RESOURCES } from "./client.ts";
import { rfc3339 } from "./time.ts";

export type EventType = "Normal" | "Warning";

interface Seen {
  name: string;
  namespace: string;
  count: number;
  firstTimestamp: string;
  lastWrite: number;
}

export interface EventRecorderOptions {
  component: string;
  host?: string;
  log: Logger;
  /** Events per object allowed in a burst, then one per refillMs (client-go: 25, 5 min). */
  burst?: number;
  refillMs?: number;
  /** A repeat within this window increments the count (client-go: 10 min). */
  dedupeWindowMs?: number;
  now?: () => number;
}

const MAX_MESSAGE = 1024;

export class EventRecorder {
  private readonly client: KubeClient;
  private readonly options: Required<Omit<EventRecorderOptions, "host">> & { host?: string };
  private readonly seen = new Map<string, Seen>();
  /** Makes the names of Events written within one millisecond distinct. */
  private sequence = 0;
  private readonly buckets = new Map<string, { tokens: number; last: number }>();
  private pending = new Set<Promise<void>>();

  constructor(client: KubeClient, options: EventRecorderOptions) {
    this.client = client;
    this.options = {
      burst: 25,
      refillMs: 300_000,
      dedupeWindowMs: 600_000,
      now: () => Date.now(),
      ...options,
    };
  }

  /** Records an event about `object`; returns at once, the write happens in the background. */
  record(object: KubernetesObject, type: EventType, reason: string, message: string): void {
    const uid = object.metadata?.uid ?? "";
    if (!this.take(uid)) {
      this.options.log.debug({ reason }, "event dropped by rate limit");
      return;
    }
    const write = this.write(object, type, reason, message.slice(0, MAX_MESSAGE)).catch(
      (error: unknown) => {
        this.options.log.debug({ err: errorMessage(error), reason }, "event not recorded");
      },
    );
    this.pending.add(write);
    void write.finally(() => this.pending.delete(write));
  }

  /** Waits for background writes (tests and shutdown). */
  async flush(): Promise<void> {
    await Promise.all([...this.pending]);
  }

  private take(uid: string): boolean {
    const now = this.options.now();
    const bucket = this.buckets.get(uid) ?? { tokens: this.options.burst, last: now };
    bucket.tokens = Math.min(
      this.options.burst,
      bucket.tokens + (now - bucket.last) / this.options.refillMs,
    );
    bucket.last = now;
    this.buckets.set(uid, bucket);
    if (this.buckets.size > 10_000) this.buckets.delete(this.buckets.keys().next().value as string);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  private async write(
    object: KubernetesObject,
    type: EventType,
    reason: string,
    message: string,
  ): Promise<void> {
    const now = this.options.now();
    const timestamp = rfc3339(now);
    const namespace = object.metadata?.namespace || "default";
    const key = `${object.metadata?.uid}\u0000${type}\u0000${reason}\u0000${message}`;
    const previous = this.seen.get(key);
    if (previous && now - previous.lastWrite < this.options.dedupeWindowMs) {
      previous.count += 1;
      previous.lastWrite = now;
      try {
        await this.client.patch(RESOURCES.event, previous.namespace, previous.name, {
          count: previous.count,
          lastTimestamp: timestamp,
        });
        return;
      } catch (error) {
        // The Event expired (the API server keeps them an hour) or was deleted: a new one.
        if (!isNotFound(error)) throw error;
        this.seen.delete(key);
      }
    }
    const name = `${object.metadata?.name}.${(BigInt(now) * 1_000_000n + BigInt(this.sequence++ % 1_000_000)).toString(16)}`;
    const event: CoreV1Event = {
      apiVersion: "v1",
      kind: "Event",
      metadata: { name, namespace },
      involvedObject: {
        apiVersion: object.apiVersion,
        kind: object.kind,
        name: object.metadata?.name,
        namespace: object.metadata?.namespace,
        uid: object.metadata?.uid,
        resourceVersion: object.metadata?.resourceVersion,
      },
      reason,
      message,
      type,
      count: 1,
      firstTimestamp: timestamp as unknown as Date,
      lastTimestamp: timestamp as unknown as Date,
      source: {
        component: this.options.component,
        ...(this.options.host ? { host: this.options.host } : {}),
      },
      reportingComponent: this.options.component,
      reportingInstance: this.options.host ?? this.options.component,
    };
    // Remembered before the create returns, so that a repeat meanwhile counts on this Event;
    // forgotten if the create fails, so that a repeat creates it anew.
    const seen = { name, namespace, count: 1, firstTimestamp: timestamp, lastWrite: now };
    this.seen.set(key, seen);
    if (this.seen.size > 10_000) this.seen.delete(this.seen.keys().next().value as string);
    try {
      await this.client.create(RESOURCES.event, event);
    } catch (error) {
      if (this.seen.get(key) === seen) this.seen.delete(key);
      throw error;
    }
  }
}
