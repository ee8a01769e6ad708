// A thin REST client over @kubernetes/client-node's KubeConfig: its authentication, TLS and
// Watch, with objects kept as the JSON the API server sent. client-node's typed models turn
// timestamps into Date objects; controllers compare, hash and patch objects, which is simpler
// and cheaper on the wire form (the same reason controller-runtime users reach for
// unstructured objects).

import { STATUS_CODES } from "node:http";
import {
  HttpMethod,
  type KubeConfig,
  type KubernetesObject,
  RequestContext,
  type V1Status,
} from "@kubernetes/client-node";
import { type Dispatcher, fetch, request as undiciRequest } from "undici";

export interface ResourceType {
  group: string;
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
}

export const apiVersionOf = (type: ResourceType) =>
  type.group === "" ? type.version : `${type.group}/${type.version}`;

const core = (kind: string, plural: string, namespaced = true): ResourceType => ({
  group: "",
  version: "v1",
  kind,
  plural,
  namespaced,
});

export const RESOURCES = {
  namespace: core("Namespace", "namespaces", false),
  node: core("Node", "nodes", false),
  secret: core("Secret", "secrets"),
  configMap: core("ConfigMap", "configmaps"),
  service: core("Service", "services"),
  pod: core("Pod", "pods"),
  event: core("Event", "events"),
  persistentVolumeClaim: core("PersistentVolumeClaim", "persistentvolumeclaims"),
  deployment: {
    group: "apps",
    version: "v1",
    kind: "Deployment",
    plural: "deployments",
    namespaced: true,
  },
  statefulSet: {
    group: "apps",
    version: "v1",
    kind: "StatefulSet",
    plural: "statefulsets",
    namespaced: true,
  },
  job: { group: "batch", version: "v1", kind: "Job", plural: "jobs", namespaced: true },
  podDisruptionBudget: {
    group: "policy",
    version: "v1",
    kind: "PodDisruptionBudget",
    plural: "poddisruptionbudgets",
    namespaced: true,
  },
  networkPolicy: {
    group: "networking.k8s.io",
    version: "v1",
    kind: "NetworkPolicy",
    plural: "networkpolicies",
    namespaced: true,
  },
  lease: {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    namespaced: true,
  },
} as const satisfies Record<string, ResourceType>;

/** An error answer of the API server, with its Status reason and code. */
export class KubeApiError extends Error {
  readonly code: number;
  readonly reason: string;
  readonly status: Partial<V1Status> | undefined;
  readonly retryAfterSeconds: number | undefined;
  constructor(
    code: number,
    status: Partial<V1Status> | undefined,
    fallback: string,
    retryAfter?: number,
  ) {
    super(status?.message || fallback);
    this.name = "KubeApiError";
    this.code = code;
    this.reason = status?.reason ?? "";
    this.status = status;
    this.retryAfterSeconds = retryAfter;
  }
}

export const isNotFound = (error: unknown) => error instanceof KubeApiError && error.code === 404;
export const isConflict = (error: unknown) =>
  error instanceof KubeApiError && error.code === 409 && error.reason !== "AlreadyExists";
export const isAlreadyExists = (error: unknown) =>
  error instanceof KubeApiError && error.code === 409 && error.reason === "AlreadyExists";
export const isGone = (error: unknown) => error instanceof KubeApiError && error.code === 410;

export interface ListResult<T> {
  items: T[];
  resourceVersion: string;
}

export interface ListOptions {
  labelSelector?: string;
  fieldSelector?: string;
  limit?: number;
  continue?: string;
  resourceVersion?: string;
}

export type PatchType = "merge" | "json" | "strategic";
const PATCH_CONTENT_TYPE: Record<PatchType, string> = {
  merge: "application/merge-patch+json",
  json: "application/json-patch+json",
  strategic: "application/strategic-merge-patch+json",
};

export interface DeleteOptions {
  propagationPolicy?: "Background" | "Foreground" | "Orphan";
  preconditions?: { uid?: string; resourceVersion?: string };
  gracePeriodSeconds?: number;
}

export interface WatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: T;
}

export interface WatchOptions {
  resourceVersion: string;
  labelSelector?: string;
  timeoutSeconds: number;
}

/** Observes every request the client makes; the operator counts them as metrics. */
export type RequestObserver = (
  verb: string,
  resource: string,
  code: number,
  seconds: number,
) => void;

/** How long one connection pool serves requests before a fresh one takes the credentials anew. */
const DISPATCHER_REUSE_MS = 5 * 60_000;

export class KubeClient {
  readonly config: KubeConfig;
  private readonly server: string;
  /** The config watches authenticate with (it sets the User-Agent too). */
  private readonly watchConfig: KubeConfig;
  private readonly fieldManager: string;
  private readonly userAgent: string;
  observer: RequestObserver | undefined;
  /**
   * Called before every write; throws to refuse it. The manager fences writes this way when
   * leadership is lost, so a reconcile still in flight cannot write after another instance
   * has taken over.
   */
  writeGuard: (() => void) | undefined;

  /**
   * client-node builds a new undici Agent for every request it authenticates, so every request
   * opened a new TCP and TLS connection. One is kept for DISPATCHER_REUSE_MS and then replaced,
   * so that TLS credentials a kubeconfig rotates (an exec plugin's client certificate) are
   * picked up; the one replaced closes once its requests are done.
   */
  private kept:
    | { dispatcher: ReturnType<RequestContext["getDispatcher"]>; since: number }
    | undefined;

  private dispatcherOf(context: RequestContext): ReturnType<RequestContext["getDispatcher"]> {
    const now = performance.now();
    if (this.kept && now - this.kept.since < DISPATCHER_REUSE_MS) return this.kept.dispatcher;
    const previous = this.kept?.dispatcher as { close?: () => Promise<void> } | undefined;
    this.kept = { dispatcher: context.getDispatcher(), since: now };
    // Not at once: a request may hold the previous one without having sent on it yet.
    if (previous?.close)
      setTimeout(() => void previous.close?.().catch(() => undefined), 60_000).unref();
    return this.kept.dispatcher;
  }

  /** Every request (not watches or log streams) is abandoned after this long, when set. */
  private readonly requestTimeoutMs: number | undefined;

  constructor(
    config: KubeConfig,
    options: { fieldManager?: string; userAgent?: string; requestTimeoutMs?: number } = {},
  ) {
    this.requestTimeoutMs = options.requestTimeoutMs;
    const cluster = config.getCurrentCluster();
    if (!cluster) throw new Error("the kubeconfig has no current cluster");
    this.config = config;
    this.server = cluster.server.replace(/\/+$/, "");
    this.fieldManager = options.fieldManager ?? "buildfarm";
    // Like client-go's, so audit logs (and test/kube's request log) tell instances apart.
    const userAgent = options.userAgent ?? "buildfarm";
    this.userAgent = userAgent;
    // client-node's Watch takes its headers from the KubeConfig's authentication step only; a
    // view of the config that also sets the User-Agent makes watches say who they are too.
    const withUserAgent = Object.create(config) as KubeConfig;
    withUserAgent.applySecurityAuthentication = async (context) => {
      await config.applySecurityAuthentication(context);
      context.setHeaderParam("User-Agent", userAgent);
    };
    this.watchConfig = withUserAgent;
  }

  path(type: ResourceType, namespace?: string, name?: string, subresource?: string): string {
    let path = type.group === "" ? `/api/${type.version}` : `/apis/${type.group}/${type.version}`;
    if (type.namespaced && namespace) path += `/namespaces/${encodeURIComponent(namespace)}`;
    path += `/${type.plural}`;
    if (name !== undefined) path += `/${encodeURIComponent(name)}`;
    if (subresource) path += `/${subresource}`;
    return path;
  }

  async request<T>(
    method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE",
    path: string,
    options: {
      query?: Record<string, string | number | undefined>;
      body?: unknown;
      contentType?: string;
      /** Return the body as text (pods/log) instead of parsing JSON. */
      text?: boolean;
    } = {},
  ): Promise<T> {
    if (method !== "GET") this.writeGuard?.();
    const url = new URL(this.server + path);
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined && value !== "") url.searchParams.set(key, String(value));
    }
    const context = new RequestContext(url.toString(), HttpMethod[method]);
    await this.config.applySecurityAuthentication(context);
    const headers: Record<string, string> = {
      ...context.getHeaders(),
      Accept: "application/json",
      "User-Agent": this.userAgent,
    };
    if (options.body !== undefined)
      headers["Content-Type"] = options.contentType ?? "application/json";
    const started = performance.now();
    let code = 0;
    try {
      // undici's request(), not fetch(): the same connection pool without the WHATWG streams,
      // Headers and Request objects, which were a third of the CPU of each request in a burst.
      const signal = this.requestTimeoutMs ? AbortSignal.timeout(this.requestTimeoutMs) : undefined;
      let response: Dispatcher.ResponseData;
      let text: string;
      try {
        response = await undiciRequest(url, {
          method,
          headers,
          dispatcher: this.dispatcherOf(context) as Dispatcher | undefined,
          body: options.body === undefined ? null : JSON.stringify(options.body),
          ...(signal ? { signal } : {}),
        });
        code = response.statusCode;
        text = await response.body.text();
      } catch (error) {
        // As fetch() failed: a timeout is the signal's reason, a network failure a TypeError
        // (callers retry those; see commands/logs.ts).
        if (signal?.aborted) throw signal.reason;
        throw new TypeError("fetch failed", { cause: error });
      }
      const ok = code >= 200 && code < 300;
      if (ok && options.text) return text as T;
      let parsed: unknown;
      try {
        parsed = text ? (JSON.parse(text) as unknown) : undefined;
      } catch {
        parsed = undefined;
      }
      if (!ok) {
        const retryAfter = Number(response.headers["retry-after"]) || undefined;
        const status =
          (parsed as Partial<V1Status> | undefined)?.kind === "Status"
            ? (parsed as Partial<V1Status>)
            : undefined;
        throw new KubeApiError(code, status, `${method} ${path}: HTTP ${code}`, retryAfter);
      }
      return parsed as T;
    } finally {
      this.observer?.(method, path, code, (performance.now() - started) / 1000);
    }
  }

  async get<T extends KubernetesObject>(
    type: ResourceType,
    namespace: string | undefined,
    name: string,
  ): Promise<T | undefined> {
    try {
      return await this.request<T>("GET", this.path(type, namespace, name));
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async list<T extends KubernetesObject>(
    type: ResourceType,
    namespace?: string,
    options: ListOptions = {},
  ): Promise<ListResult<T>> {
    const items: T[] = [];
    let resourceVersion = "";
    for await (const page of this.listPages<T>(type, namespace, options)) {
      items.push(...page.items);
      resourceVersion = page.resourceVersion;
    }
    return { items, resourceVersion };
  }

  /**
   * A list page by page: with `limit`, each page is yielded as it arrives (the continue token
   * fetches the next one), so a caller that keeps only part of each object never holds the
   * whole list at once. All pages share the first page's resourceVersion.
   */
  async *listPages<T extends KubernetesObject>(
    type: ResourceType,
    namespace?: string,
    options: ListOptions = {},
  ): AsyncGenerator<ListResult<T>> {
    let continueToken: string | undefined;
    let resourceVersion = "";
    do {
      const page = await this.request<{
        items?: T[];
        metadata?: { resourceVersion?: string; continue?: string };
      }>("GET", this.path(type, namespace), {
        query: {
          labelSelector: options.labelSelector,
          fieldSelector: options.fieldSelector,
          limit: options.limit,
          continue: continueToken,
          resourceVersion: continueToken ? undefined : options.resourceVersion,
        },
      });
      const items = page.items ?? [];
      for (const item of items) {
        // List items omit apiVersion and kind; put them back so every cached object is complete.
        item.apiVersion ??= apiVersionOf(type);
        item.kind ??= type.kind;
      }
      resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
      continueToken = page.metadata?.continue || undefined;
      yield { items, resourceVersion };
    } while (continueToken && options.limit);
  }

  create<T extends KubernetesObject>(type: ResourceType, object: T): Promise<T> {
    return this.request<T>("POST", this.path(type, object.metadata?.namespace), {
      body: object,
      query: { fieldManager: this.fieldManager },
    });
  }

  /** PUT: fails with 409 Conflict when object.metadata.resourceVersion is stale. */
  replace<T extends KubernetesObject>(
    type: ResourceType,
    object: T,
    subresource?: string,
  ): Promise<T> {
    return this.request<T>(
      "PUT",
      this.path(type, object.metadata?.namespace, object.metadata?.name, subresource),
      {
        body: object,
        query: { fieldManager: this.fieldManager },
      },
    );
  }

  patch<T extends KubernetesObject>(
    type: ResourceType,
    namespace: string | undefined,
    name: string,
    patch: unknown,
    patchType: PatchType = "merge",
    subresource?: string,
  ): Promise<T> {
    return this.request<T>("PATCH", this.path(type, namespace, name, subresource), {
      body: patch,
      contentType: PATCH_CONTENT_TYPE[patchType],
      query: { fieldManager: this.fieldManager },
    });
  }

  /** Deletes; a missing object counts as deleted and returns false. */
  async delete(
    type: ResourceType,
    namespace: string | undefined,
    name: string,
    options: DeleteOptions = {},
  ): Promise<boolean> {
    try {
      await this.request("DELETE", this.path(type, namespace, name), {
        body: { apiVersion: "v1", kind: "DeleteOptions", ...options },
      });
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  /** The tail of a container's log (pods/log). */
  podLog(
    namespace: string,
    pod: string,
    options: { container?: string; tailLines?: number; limitBytes?: number } = {},
  ): Promise<string> {
    return this.request<string>("GET", `${this.path(RESOURCES.pod, namespace, pod)}/log`, {
      query: {
        container: options.container,
        tailLines: options.tailLines,
        limitBytes: options.limitBytes,
      },
      text: true,
    });
  }

  /**
   * Follows a container's log (pods/log?follow=true) line by line until the container ends,
   * the pod goes, or the signal aborts.
   */
  async *followPodLog(
    namespace: string,
    pod: string,
    options: { container?: string; signal?: AbortSignal } = {},
  ): AsyncGenerator<string> {
    const url = new URL(`${this.server}${this.path(RESOURCES.pod, namespace, pod)}/log`);
    url.searchParams.set("follow", "true");
    if (options.container) url.searchParams.set("container", options.container);
    const context = new RequestContext(url.toString(), HttpMethod.GET);
    await this.config.applySecurityAuthentication(context);
    const response = await fetch(url, {
      headers: { ...context.getHeaders(), "User-Agent": this.userAgent },
      dispatcher: this.dispatcherOf(context),
      signal: options.signal,
    });
    if (!response.ok || !response.body) {
      const text = await response.text();
      let status: Partial<V1Status> | undefined;
      try {
        status = JSON.parse(text) as Partial<V1Status>;
      } catch {
        status = undefined;
      }
      throw new KubeApiError(
        response.status,
        status,
        `log of ${namespace}/${pod}: HTTP ${response.status}`,
      );
    }
    const decoder = new TextDecoder();
    let pending = "";
    try {
      for await (const chunk of response.body) {
        pending += decoder.decode(chunk as Uint8Array, { stream: true });
        let newline = pending.indexOf("\n");
        while (newline !== -1) {
          yield pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          newline = pending.indexOf("\n");
        }
      }
    } catch (error) {
      if (!options.signal?.aborted) throw error;
    }
    if (pending) yield pending;
  }

  /**
   * Opens a watch; `onEvent` gets each event, `onDone` the error (or null) that ended it.
   * Returns a function that closes the watch, at once, before the connection is made.
   *
   * Not client-node's Watch: its watch() hands out the AbortController only once the response
   * headers arrive, so a watch whose headers a proxy holds back until the first event (a quiet
   * resource) could not be closed, and kept a stopped operator's process alive.
   */
  async watch<T extends KubernetesObject>(
    type: ResourceType,
    namespace: string | undefined,
    options: WatchOptions,
    onEvent: (event: WatchEvent<T>) => void,
    onDone: (error: unknown) => void,
  ): Promise<() => void> {
    const url = new URL(this.server + this.path(type, namespace));
    url.searchParams.set("watch", "true");
    url.searchParams.set("allowWatchBookmarks", "true");
    if (options.resourceVersion) url.searchParams.set("resourceVersion", options.resourceVersion);
    if (options.labelSelector) url.searchParams.set("labelSelector", options.labelSelector);
    url.searchParams.set("timeoutSeconds", String(options.timeoutSeconds));
    const context = new RequestContext(url.toString(), HttpMethod.GET);
    await this.watchConfig.applySecurityAuthentication(context);
    const controller = new AbortController();
    // A silent connection is given up just past the server's own timeout (a quiet resource is
    // normal; one that stays silent longer than the server promised is a dead connection).
    const silenceMs = (options.timeoutSeconds + 30) * 1000;
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    const resetTimer = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, silenceMs);
      timer.unref();
    };
    const started = performance.now();
    let done = false;
    const finish = (error: unknown) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      controller.abort();
      const code = (error as { statusCode?: number } | null)?.statusCode ?? 200;
      this.observer?.(
        "WATCH",
        this.path(type, namespace),
        code,
        (performance.now() - started) / 1000,
      );
      onDone(
        error && timedOut
          ? new DOMException("The operation was aborted due to timeout", "TimeoutError")
          : error,
      );
    };
    const run = async () => {
      resetTimer();
      const response = await fetch(url, {
        headers: { ...context.getHeaders(), "User-Agent": this.userAgent },
        dispatcher: context.getDispatcher(),
        signal: controller.signal,
      });
      if (response.status !== 200 || !response.body) {
        await response.body?.cancel().catch(() => undefined);
        const error = new Error(
          response.statusText || STATUS_CODES[response.status] || "Internal Server Error",
        ) as Error & { statusCode: number };
        error.statusCode = response.status;
        throw error;
      }
      const decoder = new TextDecoder();
      let pending = "";
      for await (const chunk of response.body) {
        resetTimer();
        pending += decoder.decode(chunk as Uint8Array, { stream: true });
        let newline = pending.indexOf("\n");
        while (newline !== -1) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          newline = pending.indexOf("\n");
          let event: WatchEvent<T>;
          try {
            event = JSON.parse(line) as WatchEvent<T>;
          } catch {
            continue; // as client-node: a line that is not JSON is skipped
          }
          onEvent({ type: event.type, object: event.object });
          if (done) return;
        }
      }
    };
    run().then(
      () => finish(null),
      (error: unknown) => finish(error),
    );
    return () => controller.abort();
  }
}
