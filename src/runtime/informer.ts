// An informer: list, then watch from the list's resourceVersion, keeping a local cache that
// controllers read instead of the API server. Watches resume from the last resourceVersion
// seen (bookmarks included), a 410 Gone relists, and a dropped watch reconnects with backoff.
import type { KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { errorMessage } from "../errors.ts";
import { isGone, type KubeClient, type ResourceType, type WatchEvent } from "./client.ts";

export type Key = string;

/** `namespace/name`, or `name` for cluster-scoped objects. */
export function keyOf(object: KubernetesObject): Key {
  const namespace = object.metadata?.namespace;
  return namespace ? `${namespace}/${object.metadata?.name}` : (object.metadata?.name ?? "");
}

export function splitKey(key: Key): { namespace: string; name: string } {
  const slash = key.indexOf("/");
  return slash === -1
    ? { namespace: "", name: key }
    : { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

export interface InformerHandlers<T> {
  onAdd?(object: T): void;
  onUpdate?(previous: T, current: T): void;
  onDelete?(object: T): void;
}

export type IndexFunction<T> = (object: T) => string[];

export interface InformerOptions<T> {
  type: ResourceType;
  /** Namespaces to watch; empty or undefined watches the whole cluster. */
  namespaces?: string[];
  labelSelector?: string;
  /** Drops what the controllers never read before caching (memory for thousands of Jobs). */
  transform?: (object: T) => T;
  /** Server-side watch timeout; the watch is then resumed from the last resourceVersion. */
  watchTimeoutSeconds?: number;
  /** Reconnect backoff after a failed list or watch: base doubling to max. */
  backoff?: { baseMs: number; maxMs: number };
  /** How often every cached object is handed to onUpdate again (0: never). */
  resyncMs?: number;
  log: Logger;
  onWatchEvent?: (type: ResourceType, event: string) => void;
}

/** Objects per page of a list, as client-go's reflector asks for. */
export const LIST_PAGE_SIZE = 500;

export const BY_NAMESPACE = "namespace";
/** Built-in index: dependents by their owners' uids. */
export const BY_OWNER = "owner";
export const ownerIndex: IndexFunction<KubernetesObject> = (object) =>
  (object.metadata?.ownerReferences ?? []).map((reference) => reference.uid);

export class Informer<T extends KubernetesObject> {
  readonly type: ResourceType;
  private readonly options: InformerOptions<T>;
  private readonly store = new Map<Key, T>();
  private readonly indexers = new Map<string, IndexFunction<T>>();
  private readonly indexes = new Map<string, Map<string, Set<Key>>>();
  private readonly handlers: InformerHandlers<T>[] = [];
  private readonly streams: NamespaceStream<T>[];
  private resyncTimer: NodeJS.Timeout | undefined;

  constructor(client: KubeClient, options: InformerOptions<T>) {
    this.type = options.type;
    this.options = options;
    this.addIndex(BY_OWNER, ownerIndex as IndexFunction<T>);
    this.addIndex(BY_NAMESPACE, (object) => [object.metadata?.namespace ?? ""]);
    const namespaces =
      options.type.namespaced && options.namespaces?.length ? options.namespaces : [undefined];
    this.streams = namespaces.map(
      (namespace) =>
        new NamespaceStream<T>(client, options, namespace, {
          prepare: (item) => this.prepare(item),
          replace: (items) => this.replace(namespace, items),
          apply: (event) => this.apply(event),
        }),
    );
  }

  addIndex(name: string, indexFunction: IndexFunction<T>): void {
    if (this.store.size > 0)
      throw new Error(`index ${name} must be added before the informer starts`);
    this.indexers.set(name, indexFunction);
    this.indexes.set(name, new Map());
  }

  addHandlers(handlers: InformerHandlers<T>): void {
    this.handlers.push(handlers);
  }

  get(namespace: string | undefined, name: string): T | undefined {
    return this.store.get(namespace ? `${namespace}/${name}` : name);
  }

  getByKey(key: Key): T | undefined {
    return this.store.get(key);
  }

  list(namespace?: string): T[] {
    return namespace ? this.byIndex(BY_NAMESPACE, namespace) : [...this.store.values()];
  }

  /** Objects whose index function returned `value`. */
  byIndex(name: string, value: string): T[] {
    const keys = this.indexes.get(name)?.get(value);
    if (!keys) return [];
    const out: T[] = [];
    for (const key of keys) {
      const object = this.store.get(key);
      if (object) out.push(object);
    }
    return out;
  }

  /** How many objects byIndex(name, value) would return, without building the list. */
  countByIndex(name: string, value: string): number {
    return this.indexes.get(name)?.get(value)?.size ?? 0;
  }

  get size(): number {
    return this.store.size;
  }

  /** True once every namespace stream has listed at least once. */
  get synced(): boolean {
    return this.streams.every((stream) => stream.synced);
  }

  async start(signal: AbortSignal): Promise<void> {
    for (const stream of this.streams) stream.run(signal);
    const resyncMs = this.options.resyncMs ?? 0;
    if (resyncMs > 0) {
      this.resyncTimer = setInterval(() => this.resync(), resyncMs);
      this.resyncTimer.unref();
    }
    signal.addEventListener("abort", () => clearInterval(this.resyncTimer), { once: true });
  }

  /** Resolves once synced, or rejects when the signal aborts first. */
  async waitForSync(signal: AbortSignal): Promise<void> {
    while (!this.synced) {
      if (signal.aborted) throw new Error(`${this.type.plural} cache did not sync`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  private resync(): void {
    for (const object of this.store.values())
      for (const handler of this.handlers) handler.onUpdate?.(object, object);
  }

  // --- store maintenance, called by the namespace streams ---

  /**
   * @internal Replaces the namespace's objects with a fresh list (already prepared), emitting
   * the differences.
   */
  replace(namespace: string | undefined, items: T[]): void {
    const fresh = new Map<Key, T>();
    for (const object of items) fresh.set(keyOf(object), object);
    for (const [key, old] of this.store) {
      const inScope = namespace === undefined || old.metadata?.namespace === namespace;
      if (inScope && !fresh.has(key)) this.remove(key, old);
    }
    for (const [key, object] of fresh) this.upsert(key, object);
  }

  /** @internal */
  apply(event: WatchEvent<T>): void {
    if (event.type === "BOOKMARK" || event.type === "ERROR") return;
    const object = this.prepare(event.object);
    const key = keyOf(object);
    if (event.type === "DELETED") {
      const old = this.store.get(key);
      if (old) this.remove(key, object);
    } else {
      this.upsert(key, object);
    }
  }

  /** @internal Fills in apiVersion/kind and applies the transform: what the cache keeps. */
  prepare(item: T): T {
    item.apiVersion ??=
      this.type.group === "" ? this.type.version : `${this.type.group}/${this.type.version}`;
    item.kind ??= this.type.kind;
    if (item.metadata) delete item.metadata.managedFields;
    return this.options.transform ? this.options.transform(item) : item;
  }

  private upsert(key: Key, object: T): void {
    const old = this.store.get(key);
    if (old && old.metadata?.resourceVersion === object.metadata?.resourceVersion) return;
    if (old) this.unindex(key, old);
    this.store.set(key, object);
    this.index(key, object);
    for (const handler of this.handlers) {
      if (old) handler.onUpdate?.(old, object);
      else handler.onAdd?.(object);
    }
  }

  private remove(key: Key, object: T): void {
    const old = this.store.get(key);
    if (old) this.unindex(key, old);
    this.store.delete(key);
    for (const handler of this.handlers) handler.onDelete?.(object);
  }

  private index(key: Key, object: T): void {
    for (const [name, indexFunction] of this.indexers) {
      const index = this.indexes.get(name) as Map<string, Set<Key>>;
      for (const value of indexFunction(object)) {
        const keys = index.get(value) ?? new Set<Key>();
        keys.add(key);
        index.set(value, keys);
      }
    }
  }

  private unindex(key: Key, object: T): void {
    for (const [name, indexFunction] of this.indexers) {
      const index = this.indexes.get(name) as Map<string, Set<Key>>;
      for (const value of indexFunction(object)) {
        const keys = index.get(value);
        keys?.delete(key);
        if (keys?.size === 0) index.delete(value);
      }
    }
  }
}

interface StreamSink<T> {
  prepare(item: T): T;
  replace(items: T[]): void;
  apply(event: WatchEvent<T>): void;
}

/** One list+watch loop for one namespace (or the whole cluster). */
class NamespaceStream<T extends KubernetesObject> {
  private readonly client: KubeClient;
  private readonly options: InformerOptions<T>;
  private readonly namespace: string | undefined;
  private readonly sink: StreamSink<T>;
  private resourceVersion = "";
  synced = false;

  constructor(
    client: KubeClient,
    options: InformerOptions<T>,
    namespace: string | undefined,
    sink: StreamSink<T>,
  ) {
    this.client = client;
    this.options = options;
    this.namespace = namespace;
    this.sink = sink;
  }

  async run(signal: AbortSignal): Promise<void> {
    const { baseMs, maxMs } = this.options.backoff ?? { baseMs: 200, maxMs: 30_000 };
    const log = this.options.log.child({
      resource: this.options.type.plural,
      namespace: this.namespace ?? "*",
    });
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (!this.resourceVersion) await this.relist();
        const started = Date.now();
        const outcome = await this.watchOnce(signal);
        if (outcome === "gone") {
          log.info("watch history expired (410 Gone); relisting");
          this.resourceVersion = "";
          failures = 0;
          continue;
        }
        // A watch that closes at once without an event counts as a failure, so a server that
        // keeps hanging up cannot make this loop spin.
        failures = outcome === "progress" || Date.now() - started > 1000 ? 0 : failures + 1;
      } catch (error) {
        if (signal.aborted) return;
        if (isGone(error)) {
          this.resourceVersion = "";
          continue;
        }
        failures++;
        log.warn({ err: describe(error), failures }, "list or watch failed; retrying with backoff");
      }
      if (failures > 0)
        await sleep(
          Math.min(maxMs, baseMs * 2 ** (failures - 1)) * (0.5 + Math.random() / 2),
          signal,
        );
    }
  }

  /**
   * Lists and replaces the cache. A method of its own so that nothing of the list outlives it:
   * held in run()'s frame, the untransformed items (every Job with its pod template) stayed
   * alive for as long as the watch that followed.
   */
  private async relist(): Promise<void> {
    // Page by page, each object transformed as its page arrives: the full list (thousands of
    // Jobs with their pod templates) is never held at once.
    const items: T[] = [];
    let resourceVersion = "";
    for await (const page of this.client.listPages<T>(this.options.type, this.namespace, {
      labelSelector: this.options.labelSelector,
      limit: LIST_PAGE_SIZE,
    })) {
      for (const item of page.items) items.push(this.sink.prepare(item));
      resourceVersion = page.resourceVersion;
    }
    this.sink.replace(items);
    this.resourceVersion = resourceVersion;
    this.synced = true;
    this.options.onWatchEvent?.(this.options.type, "LIST");
  }

  /** One watch connection: whether it delivered events, closed quietly or hit 410; throws on error. */
  private watchOnce(signal: AbortSignal): Promise<"progress" | "closed" | "gone"> {
    // A random timeout spreads the reconnects of many informers, as client-go does.
    const base = this.options.watchTimeoutSeconds ?? 300;
    const timeoutSeconds = Math.max(1, Math.round(base * (1 + Math.random())));
    return new Promise((resolve, reject) => {
      let progressed = false;
      let gone = false;
      let failed: unknown;
      let close: (() => void) | undefined;
      const onAbort = () => close?.();
      signal.addEventListener("abort", onAbort, { once: true });
      this.client
        .watch<T>(
          this.options.type,
          this.namespace,
          {
            resourceVersion: this.resourceVersion,
            labelSelector: this.options.labelSelector,
            timeoutSeconds,
          },
          (event) => {
            this.options.onWatchEvent?.(this.options.type, event.type);
            if (event.type === "ERROR") {
              if ((event.object as unknown as { code?: number }).code === 410) gone = true;
              return;
            }
            if (failed) return;
            try {
              this.sink.apply(event);
            } catch (error) {
              // client-node's Watch swallows what its callback throws: the event would be lost
              // without a word. Stop, say so, and relist so the cache is whole again.
              failed = error;
              close?.();
              return;
            }
            const version = event.object.metadata?.resourceVersion;
            if (version) this.resourceVersion = version;
            progressed = true;
          },
          (error) => {
            signal.removeEventListener("abort", onAbort);
            if (failed) {
              this.resourceVersion = "";
              reject(failed);
            } else if (gone || isGoneStatus(error)) resolve("gone");
            else if (error && !signal.aborted && !progressed) reject(error);
            else resolve(progressed ? "progress" : "closed");
          },
        )
        .then(
          (closer) => {
            close = closer;
            if (signal.aborted || failed) closer();
          },
          (error: unknown) => {
            signal.removeEventListener("abort", onAbort);
            reject(error);
          },
        );
    });
  }
}

function isGoneStatus(error: unknown): boolean {
  return (error as { statusCode?: number } | null)?.statusCode === 410;
}

function describe(error: unknown): string {
  return errorMessage(error);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
