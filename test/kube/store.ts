// The storage and registry layer of test/kube: what the API server's generic registry does
// between a request and etcd. One monotonically increasing resourceVersion across all kinds;
// create/update/patch/delete with the real preconditions, defaults, validation, generation and
// status-subresource rules; finalizers and deletionTimestamp; a bounded watch history per
// resource. The HTTP server and the simulated controllers both write through it, so a
// controller's write is indistinguishable from a client's.
import { randomUUID } from "node:crypto";
import type { EventType, StoreEvent } from "./history.ts";
import {
  clone,
  deepFreeze,
  generateName,
  isObject,
  type JsonObject,
  jsonEqual,
  type KubeObject,
  nowTime,
  objectKey,
  type Stored,
} from "./objects.ts";
import {
  JSON_PATCH,
  jsonPatch,
  MERGE_PATCH,
  mergePatch,
  STRATEGIC_MERGE_PATCH,
  strategicMergePatch,
} from "./patch.ts";
import {
  apiVersionOf,
  builtinResources,
  groupKindOf,
  type ResourceInfo,
  resourceFromCrd,
  resourceId,
} from "./resources.ts";
import {
  alreadyExists,
  badRequest,
  conflict,
  type FieldError,
  fieldError,
  forbiddenRequest,
  invalid,
  invalidValue,
  KubeError,
  notFound,
  unknownError,
  unsupportedMediaType,
} from "./status.ts";
import {
  pruneObjectMeta,
  STRATEGIES,
  type Strategy,
  type StrategyContext,
  validateObjectMeta,
  validateObjectMetaUpdate,
} from "./strategies/index.ts";
import { type ListOptions, type ListResult, listTable, Table } from "./table.ts";

export type { EventType, StoreEvent } from "./history.ts";
export { type ListOptions, type ListResult, Table } from "./table.ts";

export interface DeleteOptions {
  propagationPolicy?: "Background" | "Foreground" | "Orphan";
  gracePeriodSeconds?: number;
  orphanDependents?: boolean;
  preconditions?: { uid?: string; resourceVersion?: string };
  dryRun?: boolean;
}

export interface WriteOptions {
  /** The namespace of the request URL (objects without one get it). */
  namespace?: string;
  /** The name of the request URL, checked against the object's. */
  name?: string;
  subresource?: "status" | "binding" | "finalize";
  dryRun?: boolean;
}

export interface DeleteResult {
  object: Stored;
  /** True when the object is gone; false when it waits for finalizers or a grace period. */
  deleted: boolean;
}

/** Anything that wants every committed change: watches, garbage collector, controllers. */
export type StoreListener = (event: StoreEvent, info: ResourceInfo) => void;

export interface StoreWatcher {
  deliver(event: StoreEvent): void;
}

const ORPHAN = "orphan";
const FOREGROUND = "foregroundDeletion";
const PROTECTED_NAMESPACES = new Set(["default", "kube-system", "kube-public"]);

export interface StoreOptions {
  historySize: number;
  serverVersion: { major: number; minor: number };
}

export class Store {
  private rv = 1;
  private readonly tables = new Map<string, Table>();
  private readonly byGroupResource = new Map<string, Table>();
  private readonly byKind = new Map<string, Table>();
  private readonly uids = new Map<string, { table: Table; key: string }>();
  /** owner uid → dependents as `<resource id>\0<key>`. */
  private readonly dependents = new Map<string, Set<string>>();
  private readonly listeners = new Set<StoreListener>();
  private readonly options: StoreOptions;
  private nextClusterIP = 10;
  private readonly strategyContext: StrategyContext;

  constructor(options: StoreOptions) {
    this.options = options;
    this.strategyContext = {
      serverVersion: options.serverVersion,
      allocateClusterIP: () => {
        const n = this.nextClusterIP++;
        return `10.96.${Math.floor(n / 250)}.${(n % 250) + 1}`;
      },
    };
    for (const info of builtinResources()) this.register(info);
  }

  get serverVersion() {
    return this.options.serverVersion;
  }

  /** The latest resourceVersion handed out. */
  get resourceVersion(): number {
    return this.rv;
  }

  // -------------------------------------------------------------------------------------------
  // Resources

  register(info: ResourceInfo): Table {
    const existing = this.byGroupResource.get(`${info.group}/${info.resource}`);
    if (existing) {
      Object.assign(existing.info, info);
      return existing;
    }
    const table = new Table(info, this.options.historySize, this.rv);
    this.tables.set(table.id, table);
    this.byGroupResource.set(`${info.group}/${info.resource}`, table);
    const kindKey = `${info.group}/${info.kind}`;
    if (!this.byKind.has(kindKey)) this.byKind.set(kindKey, table);
    return table;
  }

  private unregister(info: ResourceInfo): void {
    const table = this.byGroupResource.get(`${info.group}/${info.resource}`);
    if (!table) return;
    for (const key of [...table.objects.keys()]) {
      const object = table.objects.get(key)!;
      this.commit(table, "DELETED", clone(object), object);
    }
    this.tables.delete(table.id);
    this.byGroupResource.delete(`${info.group}/${info.resource}`);
    this.byKind.delete(`${info.group}/${info.kind}`);
  }

  resources(): ResourceInfo[] {
    return [...this.tables.values()].map((table) => table.info);
  }

  /**
   * A table by resource id (`pods`, `jobs.batch`, `imagebuilds.buildfarm.dev`), by kind
   * (`Job`, `ImageBuild`), or by apiVersion and kind.
   */
  table(resource: string | ResourceInfo): Table {
    const found = this.findTable(resource);
    if (!found)
      throw new Error(
        `test/kube serves no resource ${typeof resource === "string" ? resource : resourceId(resource)}`,
      );
    return found;
  }

  findTable(resource: string | ResourceInfo): Table | undefined {
    if (typeof resource !== "string")
      return this.byGroupResource.get(`${resource.group}/${resource.resource}`);
    const byId = this.tables.get(resource);
    if (byId) return byId;
    for (const table of this.tables.values()) {
      if (table.info.kind === resource || table.info.shortNames.includes(resource)) return table;
    }
    return undefined;
  }

  tableFor(group: string, resource: string): Table | undefined {
    return this.byGroupResource.get(`${group}/${resource}`);
  }

  tableForKind(apiVersion: string, kind: string): Table | undefined {
    const group = apiVersion.includes("/") ? apiVersion.slice(0, apiVersion.indexOf("/")) : "";
    return this.byKind.get(`${group}/${kind}`);
  }

  // -------------------------------------------------------------------------------------------
  // Reads

  get<T = KubeObject>(
    resource: string | ResourceInfo,
    namespace: string | undefined,
    name: string,
  ): Stored<T> | undefined {
    const table = this.table(resource);
    return table.objects.get(objectKey(table.info.namespaced ? namespace : undefined, name)) as
      | Stored<T>
      | undefined;
  }

  mustGet(table: Table, namespace: string | undefined, name: string): Stored {
    const object = table.objects.get(
      objectKey(table.info.namespaced ? namespace : undefined, name),
    );
    if (!object) throw notFound(table.info, name);
    return object;
  }

  byUid(uid: string): { table: Table; object: Stored } | undefined {
    const location = this.uids.get(uid);
    if (!location) return undefined;
    const object = location.table.objects.get(location.key);
    return object ? { table: location.table, object } : undefined;
  }

  /** Dependents of an owner uid, as (table, object) pairs. */
  dependentsOf(uid: string): { table: Table; object: Stored }[] {
    const out: { table: Table; object: Stored }[] = [];
    for (const entry of this.dependents.get(uid) ?? []) {
      const [id, key] = entry.split("\u0000") as [string, string];
      const table = this.tables.get(id);
      const object = table?.objects.get(key);
      if (table && object) out.push({ table, object });
    }
    return out;
  }

  /** Objects of one resource, optionally in one namespace, in etcd order; no copies. */
  objects<T = KubeObject>(resource: string | ResourceInfo, namespace?: string): Stored<T>[] {
    const table = this.table(resource);
    return table
      .sortedKeys(table.info.namespaced ? namespace : undefined)
      .map((key) => table.objects.get(key) as Stored<T>);
  }

  list(resource: string | ResourceInfo, options: ListOptions = {}): ListResult {
    return listTable(this.table(resource), this.rv, options);
  }

  /** Compacts every resource's history up to `rv` (default: now), as etcd's compactor does. */
  compact(rv = this.rv): void {
    for (const table of this.tables.values()) table.history.compact(rv);
  }

  // -------------------------------------------------------------------------------------------
  // Listeners and watches

  onChange(listener: StoreListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // -------------------------------------------------------------------------------------------
  // Writes

  create(resource: string | ResourceInfo, input: unknown, options: WriteOptions = {}): Stored {
    const table = this.table(resource);
    const info = table.info;
    const object = this.decode(input, info);
    this.ensureNamespace(info, object, options.namespace);
    if (info.namespaced)
      this.admitNamespace(info, object.metadata.namespace!, object.metadata.name ?? "");
    if (object.metadata.resourceVersion)
      throw unknownError("resourceVersion should not be set on objects to be created");
    const meta = object.metadata;
    delete meta.deletionTimestamp;
    delete meta.deletionGracePeriodSeconds;
    delete meta.selfLink;
    delete meta.managedFields;
    meta.uid = randomUUID();
    meta.creationTimestamp = nowTime();
    if (info.generation === "spec") meta.generation = 1;
    else delete meta.generation;
    if (!meta.name && meta.generateName) {
      do meta.name = generateName(meta.generateName);
      while (table.objects.has(objectKey(meta.namespace, meta.name)));
    }
    const strategy = this.strategy(info);
    if (info.subresources.includes("status")) {
      const initial = info.builtin ? strategy.initialStatus?.(object) : undefined;
      if (initial !== undefined) object.status = initial;
      else delete object.status;
    }
    strategy.defaults?.(object);
    if (meta.name) strategy.prepareForCreate?.(object, this.strategyContext);
    const errors = validateObjectMeta(meta, info);
    if (meta.name && errors.length === 0) {
      errors.push(...(strategy.validate?.(object) ?? []));
      if (info.validator) errors.push(...info.validator.admit(object));
    }
    if (errors.length) throw invalid(groupKindOf(info), meta.name ?? "", errors);
    const key = objectKey(meta.namespace, meta.name!);
    if (table.objects.has(key)) throw alreadyExists(info, meta.name!);
    if (options.dryRun) return deepFreeze(object);
    const stored = this.commit(table, "ADDED", object);
    if (info.resource === "customresourcedefinitions") this.afterCrdWrite(stored);
    return stored;
  }

  update(resource: string | ResourceInfo, input: unknown, options: WriteOptions = {}): Stored {
    const table = this.table(resource);
    const info = table.info;
    const object = this.decode(input, info);
    this.ensureNamespace(info, object, options.namespace);
    const name = object.metadata.name ?? "";
    if (options.name !== undefined && name !== options.name)
      throw badRequest(
        `the name of the object (${name}) does not match the name on the URL (${options.name})`,
      );
    const existing = this.mustGet(table, object.metadata.namespace, name);
    const rv = object.metadata.resourceVersion;
    if (!rv) {
      if (!info.allowUnconditionalUpdate)
        throw invalid(groupKindOf(info), name, [
          fieldError(
            "FieldValueInvalid",
            "metadata.resourceVersion",
            "Invalid value: 0x0: must be specified for an update",
          ),
        ]);
    } else if (rv !== existing.metadata.resourceVersion) throw conflict(info, name);
    return this.applyUpdate(table, object, existing, options);
  }

  patch(
    resource: string | ResourceInfo,
    namespace: string | undefined,
    name: string,
    contentType: string,
    patch: unknown,
    options: WriteOptions = {},
  ): Stored {
    const table = this.table(resource);
    const info = table.info;
    const type = contentType.split(";")[0]!.trim();
    // The content type is checked before the object is read: an apply patch to a missing
    // object would otherwise answer 404 as if server-side apply were there.
    const accepted = patchTypes(info);
    if (!accepted.includes(type)) throw unsupportedPatch(type, accepted);
    const existing = this.mustGet(table, namespace, name);
    let patched: unknown;
    if (type === MERGE_PATCH) {
      if (!isObject(patch)) throw badRequest("merge patch must be a JSON object");
      patched = mergePatch(clone(existing), patch);
    } else if (type === JSON_PATCH) patched = jsonPatch(clone(existing), patch);
    else if (type === STRATEGIC_MERGE_PATCH && info.builtin)
      patched = strategicMergePatch(clone(existing), patch);
    else throw unsupportedPatch(type, accepted);
    if (!isObject(patched) || !isObject(patched.metadata))
      throw badRequest("the patch turned the object into something that is not an object");
    const object = patched as KubeObject;
    // The patched JSON is decoded like a body; an error is the patcher's 422 on field "patch".
    const decodeError = this.decodeFields(object, info);
    if (decodeError)
      throw invalid({ group: "", kind: "" }, "", [
        invalidValue("patch", JSON.stringify(patched), decodeError),
      ]);
    if (object.metadata.name !== name)
      throw badRequest(
        `the name of the object (${String(object.metadata.name)}) does not match the name on the URL (${name})`,
      );
    const rv = object.metadata.resourceVersion;
    if (rv !== undefined && rv !== existing.metadata.resourceVersion) throw conflict(info, name);
    object.metadata.resourceVersion = existing.metadata.resourceVersion;
    if (info.namespaced) object.metadata.namespace = existing.metadata.namespace;
    return this.applyUpdate(table, object, existing, options);
  }

  /**
   * Reads the current object, lets `mutate` change a copy, and writes it back with optimistic
   * concurrency; for simulated controllers and tests. Returns undefined when it is gone.
   */
  mutate<T extends KubeObject = KubeObject>(
    resource: string | ResourceInfo,
    namespace: string | undefined,
    name: string,
    mutate: (object: T) => void,
    options: WriteOptions = {},
  ): Stored | undefined {
    const existing = this.findTable(resource) ? this.get(resource, namespace, name) : undefined;
    if (!existing) return undefined;
    const draft = clone(existing) as T;
    mutate(draft);
    return this.update(resource, draft, { ...options, namespace });
  }

  private applyUpdate(table: Table, object: KubeObject, existing: Stored, options: WriteOptions) {
    const info = table.info;
    const old = clone(existing);
    const strategy = this.strategy(info);
    let next: KubeObject;
    if (options.subresource === "status" || options.subresource === "finalize") {
      next = clone(existing);
      if (options.subresource === "status") {
        if (object.status !== undefined) next.status = object.status;
        else delete next.status;
      } else {
        next.spec = object.spec;
      }
    } else if (options.subresource === "binding") {
      // pods/binding sets the node and the PodScheduled condition in one write.
      next = clone(existing);
      (next.spec as JsonObject).nodeName = (object.spec as JsonObject | undefined)?.nodeName;
      const status = (next.status ?? {}) as JsonObject;
      const conditions = ((status.conditions ?? []) as JsonObject[]).filter(
        (c) => c.type !== "PodScheduled",
      );
      conditions.push({
        type: "PodScheduled",
        status: "True",
        lastProbeTime: null,
        lastTransitionTime: nowTime(),
      });
      next.status = { ...status, conditions };
    } else {
      next = object;
      const meta = next.metadata;
      for (const field of [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
      ] as const) {
        const value = existing.metadata[field];
        if (value !== undefined) (meta as Record<string, unknown>)[field] = value;
        else delete meta[field];
      }
      delete meta.selfLink;
      delete meta.managedFields;
      if (info.subresources.includes("status")) {
        if (existing.status !== undefined) next.status = clone(existing.status);
        else delete next.status;
      }
      strategy.defaults?.(next);
      strategy.prepareForUpdate?.(next, old);
    }
    next.apiVersion = apiVersionOf(info);
    next.kind = info.kind;
    next.metadata.resourceVersion = existing.metadata.resourceVersion;
    const errors: FieldError[] = [];
    if (info.validator) errors.push(...info.validator.admit(next, old));
    if (info.generation === "spec" && generationChanges(info, next, old))
      next.metadata.generation = (old.metadata.generation ?? 0) + 1;
    errors.push(
      ...validateObjectMeta(next.metadata, info),
      ...validateObjectMetaUpdate(next.metadata, old.metadata),
      ...(strategy.validate?.(next) ?? []),
      ...(options.subresource ? [] : (strategy.validateUpdate?.(next, old) ?? [])),
    );
    if (errors.length) throw invalid(groupKindOf(info), next.metadata.name ?? "", errors);
    if (jsonEqual(next, existing)) return existing;
    if (options.dryRun) return deepFreeze(next);
    if (shouldDeleteDuringUpdate(info, next, existing))
      return this.commit(table, "DELETED", next, existing);
    const stored = this.commit(table, "MODIFIED", next, existing);
    if (info.resource === "customresourcedefinitions") this.afterCrdWrite(stored);
    return stored;
  }

  delete(
    resource: string | ResourceInfo,
    namespace: string | undefined,
    name: string,
    options: DeleteOptions = {},
  ): DeleteResult {
    const table = this.table(resource);
    const info = table.info;
    const existing = this.mustGet(table, namespace, name);
    const meta = existing.metadata;
    const kindResource = { group: info.group, resource: info.kind };
    if (options.preconditions?.uid !== undefined && options.preconditions.uid !== meta.uid)
      throw conflict(
        kindResource,
        name,
        `the UID in the precondition (${options.preconditions.uid}) does not match the UID in record (${meta.uid}). The object might have been deleted and then recreated`,
      );
    if (
      options.preconditions?.resourceVersion !== undefined &&
      options.preconditions.resourceVersion !== meta.resourceVersion
    )
      throw conflict(
        kindResource,
        name,
        `the ResourceVersion in the precondition (${options.preconditions.resourceVersion}) does not match the ResourceVersion in record (${meta.resourceVersion}). The object might have been modified`,
      );
    if (info.resource === "namespaces" && !info.group && PROTECTED_NAMESPACES.has(name))
      throw forbiddenRequest(info, name, "this namespace may not be deleted");

    let requested = options.gracePeriodSeconds;
    if (requested !== undefined && requested < 0) requested = 1;
    const next = clone(existing);
    let graceful = false;
    if (meta.deletionTimestamp) {
      const current = meta.deletionGracePeriodSeconds ?? 0;
      if (current > 0) {
        if (requested === undefined || requested >= current)
          return { object: existing, deleted: false };
        const base = Date.parse(meta.deletionTimestamp) - current * 1000;
        next.metadata.deletionTimestamp = nowTime(base + requested * 1000);
        next.metadata.deletionGracePeriodSeconds = requested;
        graceful = requested > 0;
      }
    } else {
      const grace =
        this.strategy(info).gracePeriodSeconds?.(existing as KubeObject, requested) ?? 0;
      if (grace > 0) {
        graceful = true;
        next.metadata.deletionTimestamp = nowTime(Date.now() + grace * 1000);
        next.metadata.deletionGracePeriodSeconds = grace;
        if ((meta.generation ?? 0) > 0) next.metadata.generation = meta.generation! + 1;
      }
    }
    const finalizers = gcFinalizers(info, meta.finalizers ?? [], options);
    if (finalizers.length) next.metadata.finalizers = finalizers;
    else delete next.metadata.finalizers;
    const namespacePending =
      info.resource === "namespaces" &&
      ((existing.spec as JsonObject)?.finalizers as unknown[])?.length;
    if (graceful || finalizers.length || namespacePending) {
      if (!graceful) {
        if (!meta.deletionTimestamp && (meta.generation ?? 0) > 0)
          next.metadata.generation = meta.generation! + 1;
        if (!meta.deletionTimestamp) next.metadata.deletionTimestamp = nowTime();
        next.metadata.deletionGracePeriodSeconds = 0;
        if (namespacePending)
          next.status = { ...(next.status as JsonObject), phase: "Terminating" };
      }
      if (options.dryRun || jsonEqual(next, existing)) return { object: existing, deleted: false };
      return { object: this.commit(table, "MODIFIED", next, existing), deleted: false };
    }
    if (options.dryRun) return { object: existing, deleted: true };
    return { object: this.commit(table, "DELETED", clone(existing), existing), deleted: true };
  }

  deleteCollection(
    resource: string | ResourceInfo,
    listOptions: ListOptions,
    deleteOptions: DeleteOptions = {},
  ): Stored[] {
    const { items } = this.list(resource, {
      ...listOptions,
      limit: undefined,
      continue: undefined,
    });
    const out: Stored[] = [];
    for (const item of items) {
      try {
        out.push(
          this.delete(resource, item.metadata.namespace, item.metadata.name!, deleteOptions).object,
        );
      } catch (error) {
        if (!(error instanceof KubeError && error.code === 404)) throw error;
      }
    }
    return out;
  }

  /** Seeds objects as-is (status included), bypassing admission; for test fixtures. */
  seed(resource: string | ResourceInfo, input: KubeObject): Stored {
    const table = this.table(resource);
    const object = this.decode(input, table.info);
    const meta = object.metadata;
    if (table.info.namespaced) meta.namespace ??= "default";
    meta.uid ??= randomUUID();
    meta.creationTimestamp ??= nowTime();
    if (table.info.generation === "spec") meta.generation ??= 1;
    this.strategy(table.info).defaults?.(object);
    const existing = table.objects.get(objectKey(meta.namespace, meta.name!));
    return this.commit(table, existing ? "MODIFIED" : "ADDED", object, existing);
  }

  // -------------------------------------------------------------------------------------------

  private strategy(info: ResourceInfo): Strategy {
    return STRATEGIES[resourceId(info)] ?? {};
  }

  private decode(input: unknown, info: ResourceInfo): KubeObject {
    if (!isObject(input)) throw badRequest("the request body is not a JSON object");
    const object = clone(input) as KubeObject;
    if (!isObject(object.metadata)) object.metadata = {};
    if (object.kind !== undefined && object.kind !== info.kind)
      throw badRequest(
        `${object.kind} in version "${String(object.apiVersion ?? "")}" cannot be handled as a ${info.kind}: the kind does not match`,
      );
    object.apiVersion = apiVersionOf(info);
    object.kind = info.kind;
    const error = this.decodeFields(object, info);
    if (error)
      throw badRequest(
        `${info.kind} in version "${info.version}" cannot be handled as a ${info.kind}: ${error}`,
      );
    return object;
  }

  /** What decoding into the Go type does to a body; the decoder's error, if any. */
  private decodeFields(object: KubeObject, info: ResourceInfo): string | undefined {
    pruneObjectMeta(object.metadata as Record<string, unknown>);
    return this.strategy(info).decode?.(object);
  }

  /** rest.EnsureObjectNamespaceMatchesRequestNamespace. */
  private ensureNamespace(info: ResourceInfo, object: KubeObject, requestNamespace?: string) {
    const meta = object.metadata;
    if (!info.namespaced) {
      delete meta.namespace;
      return;
    }
    if (requestNamespace === undefined) {
      if (!meta.namespace) meta.namespace = "default";
      return;
    }
    if (!meta.namespace) meta.namespace = requestNamespace;
    else if (meta.namespace !== requestNamespace)
      throw badRequest(
        "the namespace of the provided object does not match the namespace sent on the request",
      );
  }

  /** The NamespaceLifecycle admission plugin. */
  private admitNamespace(info: ResourceInfo, namespace: string, name: string): void {
    const ns = this.tableFor("", "namespaces")!.objects.get(namespace);
    if (!ns) throw notFound({ group: "", resource: "namespaces" }, namespace);
    if (ns.metadata.deletionTimestamp) {
      const error = forbiddenRequest(
        info,
        name,
        `unable to create new content in namespace ${namespace} because it is being terminated`,
      );
      error.status.details!.causes = [
        {
          reason: "NamespaceTerminating",
          message: `namespace ${namespace} is being terminated`,
          field: "metadata.namespace",
        },
      ];
      throw error;
    }
  }

  private commit(table: Table, type: EventType, object: KubeObject, previous?: Stored): Stored {
    this.rv += 1;
    object.metadata.resourceVersion = String(this.rv);
    const stored = deepFreeze(object) as Stored;
    const meta = stored.metadata;
    const key = objectKey(meta.namespace, meta.name!);
    const namespace = meta.namespace ?? "";
    const dependentKey = `${table.id}\u0000${key}`;
    for (const ref of previous?.metadata.ownerReferences ?? []) {
      const set = this.dependents.get(ref.uid);
      set?.delete(dependentKey);
      if (set?.size === 0) this.dependents.delete(ref.uid);
    }
    if (type === "DELETED") {
      table.remove(key, namespace, meta.name!);
      this.uids.delete(meta.uid!);
    } else {
      table.set(key, namespace, meta.name!, stored);
      this.uids.set(meta.uid!, { table, key });
      for (const ref of meta.ownerReferences ?? []) {
        let set = this.dependents.get(ref.uid);
        if (!set) {
          set = new Set();
          this.dependents.set(ref.uid, set);
        }
        set.add(dependentKey);
      }
    }
    const event: StoreEvent = { type, object: stored, previous, rv: this.rv };
    table.history.push(event);
    for (const watcher of table.watchers) watcher.deliver(event);
    for (const listener of this.listeners) {
      // A listener's bug must not turn a committed write into a failed request.
      try {
        listener(event, table.info);
      } catch (error) {
        console.error("test/kube store listener failed:", error);
      }
    }
    if (type === "DELETED" && table.id === "customresourcedefinitions.apiextensions.k8s.io")
      this.unregister(resourceFromCrd(clone(stored)));
    return stored;
  }

  /** A created or updated CRD registers (or re-registers) its resource and turns Established. */
  private afterCrdWrite(crd: Stored): void {
    const info = resourceFromCrd(clone(crd));
    this.register(info);
    const status = crd.status as JsonObject | undefined;
    if (Array.isArray(status?.conditions)) return;
    const table = this.table("customresourcedefinitions.apiextensions.k8s.io");
    const next = clone(crd);
    const now = nowTime();
    const names = (next.spec as { names: JsonObject }).names;
    next.status = {
      acceptedNames: names,
      storedVersions: [info.version],
      conditions: [
        {
          type: "NamesAccepted",
          status: "True",
          reason: "NoConflicts",
          message: "no conflicts found",
          lastTransitionTime: now,
        },
        {
          type: "Established",
          status: "True",
          reason: "InitialNamesAccepted",
          message: "the initial names have been accepted",
          lastTransitionTime: now,
        },
      ],
    };
    this.commit(table, "MODIFIED", next, crd);
  }
}

/** The patch Content-Types a resource takes: no strategic merge patch for custom resources. */
export function patchTypes(info: ResourceInfo): string[] {
  return info.builtin
    ? [JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH]
    : [JSON_PATCH, MERGE_PATCH];
}

/** 415 for a patch type the resource does not take; server-side apply is not implemented. */
export function unsupportedPatch(type: string, accepted: string[]): KubeError {
  return unsupportedMediaType(
    accepted,
    type.startsWith("application/apply-patch")
      ? " (test/kube does not implement server-side apply)"
      : "",
  );
}

/** registry.ShouldDeleteDuringUpdate: the last finalizer of a deleted object went away. */
function shouldDeleteDuringUpdate(info: ResourceInfo, next: KubeObject, existing: Stored): boolean {
  const meta = next.metadata;
  if (!meta.deletionTimestamp || meta.finalizers?.length) return false;
  if ((meta.deletionGracePeriodSeconds ?? 0) !== 0) return false;
  if (info.resource === "namespaces" && !info.group)
    return !((next.spec as JsonObject | undefined)?.finalizers as unknown[] | undefined)?.length;
  return !!existing.metadata.finalizers?.length;
}

/** Whether an update bumps metadata.generation (per the kind's PrepareForUpdate). */
function generationChanges(info: ResourceInfo, next: KubeObject, old: KubeObject): boolean {
  const strip = (object: KubeObject) => {
    const { metadata: _, status, ...rest } = object;
    return info.subresources.includes("status") ? rest : { ...rest, status };
  };
  if (!jsonEqual(strip(next), strip(old))) return true;
  // Deployment annotations are copied to ReplicaSets, so changing them bumps the generation.
  return (
    info.resource === "deployments" &&
    !jsonEqual(next.metadata.annotations ?? {}, old.metadata.annotations ?? {})
  );
}

/** deletionFinalizersForGarbageCollection: the orphan/foregroundDeletion finalizers a delete sets. */
function gcFinalizers(info: ResourceInfo, existing: readonly string[], options: DeleteOptions) {
  const policy = options.propagationPolicy;
  let orphan: boolean;
  if (options.orphanDependents !== undefined) orphan = options.orphanDependents;
  else if (policy) orphan = policy === "Orphan";
  else if (existing.includes(ORPHAN)) orphan = true;
  else if (existing.includes(FOREGROUND)) orphan = false;
  else orphan = info.defaultPropagation === "Orphan";
  let foreground: boolean;
  if (options.orphanDependents !== undefined) foreground = false;
  else if (policy) foreground = policy === "Foreground";
  else foreground = existing.includes(FOREGROUND) && !existing.includes(ORPHAN);
  const out = existing.filter((f) => f !== ORPHAN && f !== FOREGROUND);
  if (orphan) out.push(ORPHAN);
  if (foreground) out.push(FOREGROUND);
  if (jsonEqual([...out].sort(), [...existing].sort())) return [...existing];
  return out;
}
