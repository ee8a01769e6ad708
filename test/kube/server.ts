// The HTTP face of test/kube: the API server's URL layout (/api, /apis, discovery, /version),
// request info as RBAC sees it, JSON bodies and Status errors, and the handlers for get, list,
// watch, create, update, patch, delete, deletecollection and the pods/log, pods/binding,
// */status subresources. Every answered request lands in the request log; fault injection
// runs before routing.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { FaultSpec, Faults } from "./faults.ts";
import { isObject, type KubeObject, type Stored } from "./objects.ts";
import type { RequestLog, RequestRecord } from "./request-log.ts";
import { apiGroup, apiResourceList, apiVersionOf, type ResourceInfo } from "./resources.ts";
import { checkFieldSelector, parseFieldSelector, parseLabelSelector } from "./selectors.ts";
import {
  badRequest,
  conflict,
  deletedStatus,
  fieldError,
  invalid,
  KubeError,
  methodNotAllowed,
  resourceNotFound,
  statusForCode,
  tooManyRequests,
} from "./status.ts";
import {
  type DeleteOptions,
  type ListOptions,
  type ListResult,
  patchTypes,
  type Store,
  type Table,
  unsupportedPatch,
} from "./store.ts";
import { apiJson, objectJson, WatchHub } from "./watch.ts";

export interface LogOptions {
  previous: boolean;
  tailLines?: number;
  limitBytes?: number;
  timestamps: boolean;
  sinceSeconds?: number;
}

/** Where pods/log reads from: the simulated kubelet. */
export interface PodLogSource {
  /** The container's log so far; throws a KubeError when it has none (not started). */
  read(pod: Stored, container: string, options: LogOptions): string;
  /** Streams new log text until the container ends; returns an unsubscribe function. */
  follow(
    pod: Stored,
    container: string,
    onText: (text: string) => void,
    onEnd: () => void,
  ): () => void;
}

export interface ServerVersion {
  major: string;
  minor: string;
  gitVersion: string;
}

export interface ServerOptions {
  store: Store;
  faults: Faults;
  requestLog: RequestLog;
  version: ServerVersion;
  bookmarkIntervalMs: number;
  /** Send a watch's response headers only with its first event. */
  holdWatchHeaders?: boolean;
  logs?: () => PodLogSource | undefined;
}

export interface RequestInfo {
  isResource: boolean;
  verb: string;
  apiGroup: string;
  apiVersion: string;
  resource?: string;
  subresource?: string;
  namespace?: string;
  name?: string;
  path: string;
}

const NAMESPACE_SUBRESOURCES = new Set(["status", "finalize"]);

/** k8s.io/apiserver's RequestInfoFactory, for the paths test/kube serves. */
export function parseRequest(method: string, url: URL): RequestInfo {
  const path = url.pathname.replace(/\/+$/, "") || "/";
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const base: RequestInfo = {
    isResource: false,
    verb: method.toLowerCase(),
    apiGroup: "",
    apiVersion: "",
    path,
  };
  let rest: string[];
  if (parts[0] === "api" && parts.length >= 3) {
    base.apiVersion = parts[1]!;
    rest = parts.slice(2);
  } else if (parts[0] === "apis" && parts.length >= 4) {
    base.apiGroup = parts[1]!;
    base.apiVersion = parts[2]!;
    rest = parts.slice(3);
  } else return base;
  let watchPath = false;
  if (rest[0] === "watch") {
    watchPath = true;
    rest = rest.slice(1);
  }
  if (rest[0] === "namespaces" && rest.length >= 2) {
    base.namespace = rest[1];
    if (rest.length > 2 && !NAMESPACE_SUBRESOURCES.has(rest[2]!)) rest = rest.slice(2);
  }
  base.isResource = true;
  base.resource = rest[0];
  base.name = rest[1];
  base.subresource = rest[2];
  const watch = watchPath || ["true", "1"].includes(url.searchParams.get("watch") ?? "");
  switch (method) {
    case "GET":
    case "HEAD":
      base.verb = watch ? "watch" : base.name ? "get" : "list";
      break;
    case "POST":
      base.verb = "create";
      break;
    case "PUT":
      base.verb = "update";
      break;
    case "PATCH":
      base.verb = "patch";
      break;
    case "DELETE":
      base.verb = base.name ? "delete" : "deletecollection";
      break;
  }
  return base;
}

const BUILD_DATE = "2024-08-13T07:28:49Z";

export class KubeServer {
  private readonly options: ServerOptions;
  private readonly server: Server;
  readonly watches: WatchHub;
  private readonly listItemJson = new WeakMap<object, string>();
  url = "";

  constructor(options: ServerOptions) {
    this.options = options;
    this.watches = new WatchHub(options.store, options.bookmarkIntervalMs);
    this.watches.holdHeaders = options.holdWatchHeaders ?? false;
    this.watches.expire = (record) => options.faults.takeExpiry(record);
    options.faults.attach(this.watches);
    this.server = createServer((req, res) => void this.handle(req, res));
    // Longer than any idle gap a test leaves on a client's pooled socket: with Node's 5 s
    // default, a request sent as the server closes an idle socket fails with ECONNRESET, which a
    // busy machine's pauses made happen (kube-apiserver keeps idle connections far longer).
    this.server.keepAliveTimeout = 90_000;
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const { port } = this.server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${port}`;
    return this.url;
  }

  async close(): Promise<void> {
    this.watches.closeAll();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = Date.now();
    const url = new URL(req.url ?? "/", "http://localhost");
    const info = parseRequest(req.method ?? "GET", url);
    const record: RequestRecord = {
      time: started,
      method: req.method ?? "GET",
      path: url.pathname,
      query: url.search,
      verb: info.verb,
      apiGroup: info.apiGroup,
      apiVersion: info.apiVersion,
      ...(info.isResource
        ? {
            resource: info.resource,
            subresource: info.subresource,
            namespace: info.namespace,
            name: info.name,
          }
        : { nonResourceURL: info.path }),
      code: 0,
      durationMs: 0,
      userAgent: req.headers["user-agent"],
    };
    res.on("close", () => {
      if (record.code === 0) {
        record.code = res.statusCode;
        record.durationMs = Date.now() - started;
        this.options.requestLog.add(record);
      }
    });
    try {
      const { faults } = this.options;
      await faults.gate();
      if (info.isResource) {
        const { delayMs, fault } = faults.decide(record);
        if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
        if (fault) {
          record.fault = `injected ${fault.code}`;
          throw faultError(fault, info, this.options.store);
        }
      }
      await this.route(req, res, url, info, record, started);
    } catch (error) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (error instanceof KubeError)
        this.send(res, record, started, error.code, error.status, error.headers);
      else {
        const message = error instanceof Error ? error.message : String(error);
        this.send(
          res,
          record,
          started,
          500,
          statusForCode(500, { group: "", resource: "" }, "", message).status,
        );
      }
    }
  }

  private send(
    res: ServerResponse,
    record: RequestRecord,
    started: number,
    code: number,
    body: unknown,
    headers: Record<string, string> = {},
  ): void {
    const text = typeof body === "string" ? body : apiJson(body);
    record.code = code;
    record.durationMs = Date.now() - started;
    this.options.requestLog.add(record);
    res.writeHead(code, {
      "Content-Type": "application/json",
      "Cache-Control": "no-cache, private",
      "Content-Length": Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  }

  private async route(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    info: RequestInfo,
    record: RequestRecord,
    started: number,
  ): Promise<void> {
    const { store } = this.options;
    const ok = (code: number, body: unknown, headers?: Record<string, string>) =>
      this.send(res, record, started, code, body, headers);
    if (!info.isResource) return this.nonResource(req, res, info, record, started);
    const table = store.tableFor(info.apiGroup, info.resource!);
    if (!table || table.info.version !== info.apiVersion) throw resourceNotFound();
    const resource = table.info;
    const sub = info.subresource;
    if (sub && !(resource.subresources as string[]).includes(sub)) throw resourceNotFound();
    const namespace = resource.namespaced ? info.namespace : undefined;
    if (resource.namespaced && info.name && !info.namespace) throw resourceNotFound();
    if (!resource.namespaced && info.namespace && resource.resource !== "namespaces")
      throw resourceNotFound();
    const query = url.searchParams;
    const dryRun = info.verb in DRY_RUN_OPTIONS && dryRunOf(query.getAll("dryRun"), info.verb);
    const name =
      resource.resource === "namespaces" && !resource.group ? (info.name ?? undefined) : info.name;

    switch (info.verb) {
      case "get": {
        if (sub === "log") return this.podLog(res, record, started, table, namespace, name!, query);
        if (sub === "binding") throw methodNotAllowed(resource);
        return ok(200, objectJson(store.mustGet(table, namespace, name!)));
      }
      case "list": {
        if (info.name) throw methodNotAllowed(resource);
        const result = store.list(table.info, this.listOptions(table, namespace, query));
        return ok(200, this.listJson(resource, result));
      }
      case "watch": {
        const fieldSelector = parseFieldSelector(query.get("fieldSelector"));
        checkFieldSelector(fieldSelector, resource.fieldSelectors);
        if (name) fieldSelector.push({ field: "metadata.name", operator: "=", value: name });
        const rv = query.get("resourceVersion") ?? undefined;
        if (rv && !/^[0-9]+$/.test(rv)) throw badRequest(`invalid resource version: ${rv}`);
        const timeout = query.get("timeoutSeconds");
        record.code = 200;
        record.durationMs = Date.now() - started;
        this.options.requestLog.add(record);
        this.watches.start(
          table,
          res,
          {
            namespace,
            labelSelector: parseLabelSelector(query.get("labelSelector")),
            fieldSelector,
            resourceVersion: rv,
            timeoutSeconds: timeout ? Number(timeout) : undefined,
            allowWatchBookmarks: query.get("allowWatchBookmarks") === "true",
            sendInitialEvents: query.get("sendInitialEvents") === "true",
          },
          record,
        );
        return;
      }
      case "create": {
        const body = await readJson(req);
        if (sub === "binding") return ok(201, this.bind(table, namespace, name!, body));
        if (info.name) throw methodNotAllowed(resource);
        return ok(201, objectJson(store.create(table.info, body, { namespace, dryRun })));
      }
      case "update": {
        if (!info.name || sub === "log" || sub === "binding") throw methodNotAllowed(resource);
        const body = await readJson(req);
        const subresource = sub as "status" | "finalize" | undefined;
        return ok(
          200,
          objectJson(store.update(table.info, body, { namespace, name, subresource, dryRun })),
        );
      }
      case "patch": {
        if (!info.name || sub === "log" || sub === "binding" || sub === "finalize")
          throw methodNotAllowed(resource);
        const contentType = req.headers["content-type"] ?? "";
        // Before the body is read: an apply patch is YAML, and its answer is 415, not 400.
        const patchType = contentType.split(";")[0]!.trim();
        const accepted = patchTypes(resource);
        if (!accepted.includes(patchType)) throw unsupportedPatch(patchType, accepted);
        const body = await readJson(req);
        const subresource = sub as "status" | undefined;
        return ok(
          200,
          objectJson(
            store.patch(table.info, namespace, name!, contentType, body, { subresource, dryRun }),
          ),
        );
      }
      case "delete": {
        if (sub) throw methodNotAllowed(resource);
        const options = await deleteOptions(req, query);
        const headers: Record<string, string> = {};
        if (
          resource.defaultPropagation === "Orphan" &&
          options.propagationPolicy === undefined &&
          options.orphanDependents === undefined
        )
          headers.Warning = `299 - "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress this warning"`;
        const result = store.delete(table.info, namespace, name!, options);
        const body =
          result.deleted && !resource.returnDeletedObject
            ? deletedStatus(resource, name!, result.object.metadata.uid!)
            : objectJson(result.object);
        const code = !result.deleted && options.orphanDependents === false ? 202 : 200;
        return ok(code, body, headers);
      }
      case "deletecollection": {
        const options = await deleteOptions(req, query);
        const listOptions = this.listOptions(table, namespace, query);
        const items = store.deleteCollection(table.info, listOptions, options);
        return ok(
          200,
          this.listJson(resource, { items, resourceVersion: String(store.resourceVersion) }),
        );
      }
      default:
        throw methodNotAllowed(resource);
    }
  }

  private listOptions(
    table: Table,
    namespace: string | undefined,
    query: URLSearchParams,
  ): ListOptions {
    const fieldSelector = parseFieldSelector(query.get("fieldSelector"));
    checkFieldSelector(fieldSelector, table.info.fieldSelectors);
    const limit = query.get("limit");
    return {
      namespace,
      labelSelector: parseLabelSelector(query.get("labelSelector")),
      fieldSelector,
      limit: limit ? Number(limit) : undefined,
      continue: query.get("continue") || undefined,
      resourceVersion: query.get("resourceVersion") || undefined,
      resourceVersionMatch: query.get("resourceVersionMatch") || undefined,
    };
  }

  /** A list body; items of built-in kinds carry no kind/apiVersion, as the real server sends them. */
  private listJson(info: ResourceInfo, result: ListResult): string {
    const items = result.items.map((item) =>
      info.builtin ? this.itemJson(item) : objectJson(item),
    );
    const metadata: Record<string, unknown> = { resourceVersion: result.resourceVersion };
    if (result.continue) metadata.continue = result.continue;
    if (result.remainingItemCount !== undefined)
      metadata.remainingItemCount = result.remainingItemCount;
    return `{"kind":"${info.listKind}","apiVersion":"${apiVersionOf(info)}","metadata":${JSON.stringify(metadata)},"items":[${items.join(",")}]}`;
  }

  private itemJson(object: Stored): string {
    let json = this.listItemJson.get(object);
    if (json === undefined) {
      const { kind: _kind, apiVersion: _apiVersion, ...rest } = object;
      json = apiJson(rest);
      this.listItemJson.set(object, json);
    }
    return json;
  }

  private bind(table: Table, namespace: string | undefined, name: string, body: unknown) {
    const { store } = this.options;
    const pod = store.mustGet(table, namespace, name);
    const target = isObject(body) && isObject(body.target) ? body.target : {};
    const node = String(target.name ?? "");
    if (!node) throw badRequest("Binding.target.name is required");
    const current = (pod.spec as { nodeName?: string } | undefined)?.nodeName;
    if (current)
      throw conflict(
        { group: "", resource: "pods/binding" },
        name,
        `pod ${name} is already assigned to node "${current}"`,
      );
    store.update(
      table.info,
      { ...(pod as KubeObject), spec: { ...(pod.spec as object), nodeName: node } },
      {
        namespace,
        subresource: "binding",
      },
    );
    return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Success", code: 201 };
  }

  private podLog(
    res: ServerResponse,
    record: RequestRecord,
    started: number,
    table: Table,
    namespace: string | undefined,
    name: string,
    query: URLSearchParams,
  ): void {
    const pod = this.options.store.mustGet(table, namespace, name);
    const spec = (pod.spec ?? {}) as {
      containers?: { name: string }[];
      initContainers?: { name: string }[];
    };
    const containers = (spec.containers ?? []).map((c) => c.name);
    const inits = (spec.initContainers ?? []).map((c) => c.name);
    let container = query.get("container") ?? "";
    if (!container) {
      if (containers.length === 1) container = containers[0]!;
      else
        throw badRequest(
          `a container name must be specified for pod ${name}, choose one of: [${containers.join(" ")}]${inits.length ? ` or one of the init containers: [${inits.join(" ")}]` : ""}`,
        );
    }
    if (!containers.includes(container) && !inits.includes(container))
      throw badRequest(`container ${container} is not valid for pod ${name}`);
    const source = this.options.logs?.();
    if (!source) throw badRequest(`pod ${name} does not have a host assigned`);
    const number = (key: string) => {
      const value = query.get(key);
      return value ? Number(value) : undefined;
    };
    const text = source.read(pod, container, {
      previous: query.get("previous") === "true",
      tailLines: number("tailLines"),
      limitBytes: number("limitBytes"),
      timestamps: query.get("timestamps") === "true",
      sinceSeconds: number("sinceSeconds"),
    });
    record.code = 200;
    record.durationMs = Date.now() - started;
    this.options.requestLog.add(record);
    res.writeHead(200, { "Content-Type": "text/plain", "Cache-Control": "no-cache, private" });
    if (query.get("follow") !== "true") {
      res.end(text);
      return;
    }
    res.write(text);
    const stop = source.follow(
      pod,
      container,
      (more) => res.write(more),
      () => res.end(),
    );
    res.on("close", stop);
  }

  private nonResource(
    _req: IncomingMessage,
    res: ServerResponse,
    info: RequestInfo,
    record: RequestRecord,
    started: number,
  ): void {
    const path = info.path;
    if (path === "/healthz" || path === "/livez" || path === "/readyz") {
      record.code = 200;
      record.durationMs = Date.now() - started;
      this.options.requestLog.add(record);
      res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" });
      res.end("ok");
      return;
    }
    const body = this.discovery(path);
    if (body === undefined) throw resourceNotFound();
    this.send(res, record, started, 200, body);
  }

  /** /version and the discovery documents, or undefined for an unknown path. */
  private discovery(path: string): unknown {
    const { store, version } = this.options;
    const resources = store.resources();
    if (path === "/version")
      return {
        major: version.major,
        minor: version.minor,
        gitVersion: version.gitVersion,
        gitCommit: "0000000000000000000000000000000000000000",
        gitTreeState: "clean",
        buildDate: BUILD_DATE,
        goVersion: "go1.22.5",
        compiler: "gc",
        platform: "linux/amd64",
      };
    if (path === "/api")
      return {
        kind: "APIVersions",
        versions: ["v1"],
        serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress: this.url.slice(7) }],
      };
    if (path === "/api/v1")
      return apiResourceList(
        "v1",
        resources.filter((r) => !r.group),
      );
    const groups = new Map<string, string>();
    for (const r of resources) if (r.group) groups.set(r.group, r.version);
    if (path === "/apis")
      return {
        kind: "APIGroupList",
        apiVersion: "v1",
        groups: [...groups]
          .map(([name, v]) => apiGroup(name, v))
          .map(({ kind: _k, apiVersion: _a, ...g }) => g),
      };
    const match = /^\/apis\/([^/]+)(?:\/([^/]+))?$/.exec(path);
    if (!match || !groups.has(match[1]!)) return undefined;
    const group = match[1]!;
    if (!match[2]) return apiGroup(group, groups.get(group)!);
    if (match[2] !== groups.get(group)) return undefined;
    return apiResourceList(
      `${group}/${match[2]}`,
      resources.filter((r) => r.group === group),
    );
  }
}

const DRY_RUN_OPTIONS: Record<string, string> = {
  create: "CreateOptions",
  update: "UpdateOptions",
  patch: "PatchOptions",
  delete: "DeleteOptions",
  deletecollection: "DeleteOptions",
};

/** ValidateDryRun: "All" is the only value; anything else is 422 on the verb's options. */
function dryRunOf(values: string[], verb: string): boolean {
  const unsupported = values.some((value) => value !== "All");
  if (unsupported)
    throw invalid({ group: "meta.k8s.io", kind: DRY_RUN_OPTIONS[verb]! }, "", [
      fieldError(
        "FieldValueNotSupported",
        "dryRun",
        `Unsupported value: []string{${values.map((v) => JSON.stringify(v)).join(", ")}}: supported values: "All"`,
      ),
    ]);
  return values.length > 0;
}

function faultError(fault: FaultSpec, info: RequestInfo, store: Store): KubeError {
  const table = info.resource ? store.tableFor(info.apiGroup, info.resource) : undefined;
  const gr = { group: info.apiGroup, resource: table?.info.resource ?? info.resource ?? "" };
  if (fault.code === 429) return tooManyRequests(fault.retryAfterSeconds ?? 1);
  const error = statusForCode(fault.code, gr, info.name ?? "", fault.message);
  if (fault.retryAfterSeconds !== undefined)
    error.headers["Retry-After"] = String(fault.retryAfterSeconds);
  return error;
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const text = await readBody(req);
  if (!text.trim()) throw badRequest("the request body is empty");
  try {
    return JSON.parse(text);
  } catch (error) {
    throw badRequest(`couldn't get version/kind; json parse error: ${(error as Error).message}`);
  }
}

async function deleteOptions(req: IncomingMessage, query: URLSearchParams): Promise<DeleteOptions> {
  const text = await readBody(req);
  let body: Record<string, unknown> = {};
  if (text.trim()) {
    try {
      const parsed = JSON.parse(text);
      if (isObject(parsed)) body = parsed;
    } catch (error) {
      throw badRequest(`couldn't get version/kind; json parse error: ${(error as Error).message}`);
    }
  }
  const options: DeleteOptions = {};
  const policy = (body.propagationPolicy ?? query.get("propagationPolicy") ?? undefined) as
    | string
    | undefined;
  if (policy !== undefined) {
    if (!["Background", "Foreground", "Orphan"].includes(policy))
      throw new KubeError({
        message: `DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "${policy}": supported values: "Foreground", "Background", "Orphan", "nil"`,
        reason: "Invalid",
        code: 422,
      });
    options.propagationPolicy = policy as DeleteOptions["propagationPolicy"];
  }
  const grace = body.gracePeriodSeconds ?? query.get("gracePeriodSeconds") ?? undefined;
  if (grace !== undefined && grace !== null) options.gracePeriodSeconds = Number(grace);
  const orphan = body.orphanDependents ?? query.get("orphanDependents") ?? undefined;
  if (orphan !== undefined && orphan !== null)
    options.orphanDependents = orphan === true || orphan === "true";
  if (isObject(body.preconditions))
    options.preconditions = body.preconditions as DeleteOptions["preconditions"];
  const dryRun = Array.isArray(body.dryRun) ? body.dryRun.map(String) : query.getAll("dryRun");
  if (dryRunOf(dryRun, "delete")) options.dryRun = true;
  return options;
}
