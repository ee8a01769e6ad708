// Watch streams as the API server's cacher serves them: newline-delimited JSON events,
// synthetic ADDED events for a watch without a resourceVersion, replay from the bounded history
// (or one ERROR event carrying a 410 Expired Status when it is too old), label- and
// field-selector transitions turned into ADDED/DELETED, BOOKMARK events, timeoutSeconds.
import type { ServerResponse } from "node:http";
import type { StoreEvent } from "./history.ts";
import type { Stored } from "./objects.ts";
import { matchesRecord, type RecordFilter, type RequestRecord } from "./request-log.ts";
import { apiVersionOf } from "./resources.ts";
import {
  type FieldSelector,
  type LabelSelector,
  matchesFields,
  matchesLabels,
} from "./selectors.ts";
import { expired, type KubeError, timeoutError } from "./status.ts";
import type { Store, StoreWatcher, Table } from "./store.ts";

export interface WatchParams {
  namespace?: string;
  labelSelector: LabelSelector;
  fieldSelector: FieldSelector;
  resourceVersion?: string;
  timeoutSeconds?: number;
  allowWatchBookmarks: boolean;
  sendInitialEvents: boolean;
}

const serialized = new WeakMap<object, string>();

/**
 * JSON as the API server writes it: Go's encoder escapes U+2028 and U+2029. Clients that split
 * a watch stream into lines with Node's readline (client-node's Watch) treat them as line
 * breaks, so a raw one would cut an event in two, and the event would be lost.
 */
export function apiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[\u2028\u2029]/g, (c) =>
    c === "\u2028" ? "\\u2028" : "\\u2029",
  );
}

/** An object's JSON, cached: stored objects never change, and a watch fans out to many. */
export function objectJson(object: Stored): string {
  let json = serialized.get(object);
  if (json === undefined) {
    json = apiJson(object);
    serialized.set(object, json);
  }
  return json;
}

class ActiveWatch implements StoreWatcher {
  readonly table: Table;
  readonly record: RequestRecord;
  private readonly response: ServerResponse;
  private readonly params: WatchParams;
  private readonly hub: WatchHub;
  private timers: NodeJS.Timeout[] = [];
  private closed = false;

  constructor(
    hub: WatchHub,
    table: Table,
    response: ServerResponse,
    params: WatchParams,
    record: RequestRecord,
  ) {
    this.hub = hub;
    this.table = table;
    this.response = response;
    this.params = params;
    this.record = record;
  }

  get allowsBookmarks(): boolean {
    return this.params.allowWatchBookmarks;
  }

  private matches(object: Stored): boolean {
    const meta = object.metadata;
    if (this.params.namespace && meta.namespace !== this.params.namespace) return false;
    if (this.params.labelSelector.length && !matchesLabels(this.params.labelSelector, meta.labels))
      return false;
    if (this.params.fieldSelector.length && !matchesFields(this.params.fieldSelector, object))
      return false;
    return true;
  }

  deliver(event: StoreEvent): void {
    if (this.closed) return;
    const now = this.matches(event.object);
    if (event.type === "ADDED") {
      if (now) this.send("ADDED", objectJson(event.object));
    } else if (event.type === "DELETED") {
      if (now) this.send("DELETED", objectJson(event.object));
    } else {
      const before = event.previous ? this.matches(event.previous) : false;
      if (now && before) this.send("MODIFIED", objectJson(event.object));
      else if (now) this.send("ADDED", objectJson(event.object));
      else if (before) {
        // The object left the selection: the cacher sends its previous state, at the new RV.
        const previous = event.previous!;
        this.send(
          "DELETED",
          JSON.stringify({
            ...previous,
            metadata: { ...previous.metadata, resourceVersion: String(event.rv) },
          }),
        );
      }
    }
  }

  start(store: Store): void {
    const { resourceVersion, sendInitialEvents } = this.params;
    if (sendInitialEvents || !resourceVersion || resourceVersion === "0") {
      for (const object of store.objects(this.table.info, this.params.namespace)) {
        if (this.matches(object)) this.send("ADDED", objectJson(object));
      }
      if (sendInitialEvents)
        this.sendBookmark(String(store.resourceVersion), { "k8s.io/initial-events-end": "true" });
    } else {
      const rv = Number(resourceVersion);
      if (rv > store.resourceVersion) {
        this.fail(
          timeoutError(`Too large resource version: ${rv}, current: ${store.resourceVersion}`, 1),
        );
        return;
      }
      const events = this.hub.expire(this.record) ? undefined : this.table.history.since(rv);
      if (!events) {
        this.fail(
          expired(`too old resource version: ${rv} (${this.table.history.oldestResumableRv()})`),
        );
        return;
      }
      for (const event of events) this.deliver(event);
    }
    this.table.watchers.add(this);
    const timeout = this.params.timeoutSeconds;
    if (timeout !== undefined && timeout > 0) this.later(() => this.close("close"), timeout * 1000);
    else this.later(() => this.close("close"), (1800 + Math.random() * 1800) * 1000);
    if (this.params.allowWatchBookmarks && this.hub.bookmarkIntervalMs > 0) {
      const timer = setInterval(() => this.bookmark(store), this.hub.bookmarkIntervalMs);
      timer.unref();
      this.timers.push(timer);
    }
    this.response.on("close", () => this.close("close"));
  }

  bookmark(store: Store): void {
    if (this.params.allowWatchBookmarks) this.sendBookmark(String(store.resourceVersion));
  }

  private sendBookmark(rv: string, annotations?: Record<string, string>): void {
    this.send(
      "BOOKMARK",
      JSON.stringify({
        kind: this.table.info.kind,
        apiVersion: apiVersionOf(this.table.info),
        metadata: { resourceVersion: rv, ...(annotations ? { annotations } : {}) },
      }),
    );
  }

  private fail(error: KubeError): void {
    this.send("ERROR", JSON.stringify(error.status));
    this.close("close");
  }

  private later(fn: () => void, ms: number): void {
    const timer = setTimeout(fn, ms);
    timer.unref();
    this.timers.push(timer);
  }

  private send(type: string, objectJson: string): void {
    if (this.closed) return;
    this.response.write(`{"type":"${type}","object":${objectJson}}\n`);
  }

  close(mode: "close" | "reset"): void {
    if (this.closed) return;
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.table.watchers.delete(this);
    this.hub.forget(this);
    if (mode === "reset") this.response.socket?.destroy();
    else this.response.end();
  }
}

export class WatchHub {
  private readonly store: Store;
  private readonly active = new Set<ActiveWatch>();
  bookmarkIntervalMs: number;
  /**
   * Sends a watch's response headers only with its first event, as some front-ends (proxies
   * that buffer until the first body byte) do: until then a client has no response to abort.
   */
  holdHeaders = false;

  /** Whether a watch resuming from a resourceVersion is to be told it expired (fault injection). */
  expire: (record: RequestRecord) => boolean = () => false;

  constructor(store: Store, bookmarkIntervalMs: number) {
    this.store = store;
    this.bookmarkIntervalMs = bookmarkIntervalMs;
  }

  start(table: Table, response: ServerResponse, params: WatchParams, record: RequestRecord): void {
    response.statusCode = 200;
    response.setHeader("Content-Type", "application/json");
    response.setHeader("Cache-Control", "no-cache, private");
    response.setHeader("Transfer-Encoding", "chunked");
    // Held back, the headers go out with the first write (the first event) or the end.
    if (!this.holdHeaders) response.flushHeaders();
    const watch = new ActiveWatch(this, table, response, params, record);
    this.active.add(watch);
    watch.start(this.store);
  }

  forget(watch: ActiveWatch): void {
    this.active.delete(watch);
  }

  /** Open watches, described like request log records. */
  list(): RequestRecord[] {
    return [...this.active].map((watch) => watch.record);
  }

  /** Sends a BOOKMARK now on every watch that allowed them. */
  bookmarkNow(): number {
    let n = 0;
    for (const watch of this.active) {
      if (watch.allowsBookmarks) {
        watch.bookmark(this.store);
        n++;
      }
    }
    return n;
  }

  drop(mode: "close" | "reset", match: RecordFilter = {}): number {
    let n = 0;
    for (const watch of [...this.active]) {
      if (!matchesRecord(watch.record, match)) continue;
      watch.close(mode);
      n++;
    }
    return n;
  }

  closeAll(): void {
    for (const watch of [...this.active]) watch.close("close");
  }
}
