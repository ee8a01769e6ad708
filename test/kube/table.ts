// One resource's objects with the indexes lists and watches need, and lists as the API server
// serves them: etcd key order, selectors, limit/continue from a consistent snapshot rebuilt
// from the watch history (410 Expired once it is gone).
import { EventHistory } from "./history.ts";
import { objectKey, type Stored } from "./objects.ts";
import { type ResourceInfo, resourceId } from "./resources.ts";
import {
  type FieldSelector,
  type LabelSelector,
  matchesFields,
  matchesLabels,
} from "./selectors.ts";
import { badRequest, expired, timeoutError } from "./status.ts";
import type { StoreWatcher } from "./store.ts";

export interface ListOptions {
  namespace?: string;
  labelSelector?: LabelSelector;
  fieldSelector?: FieldSelector;
  limit?: number;
  continue?: string;
  resourceVersion?: string;
  resourceVersionMatch?: string;
}

export interface ListResult {
  items: Stored[];
  resourceVersion: string;
  continue?: string;
  remainingItemCount?: number;
}

const CONTINUE_EXPIRED =
  "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/** The objects of one resource, with the indexes a list or a watch needs. */
export class Table {
  readonly info: ResourceInfo;
  readonly id: string;
  readonly objects = new Map<string, Stored>();
  readonly byNamespace = new Map<string, Map<string, Stored>>();
  readonly history: EventHistory;
  readonly watchers = new Set<StoreWatcher>();
  private sortedAll: string[] | undefined;
  private readonly sortedByNamespace = new Map<string, string[]>();

  constructor(info: ResourceInfo, historySize: number, rv: number) {
    this.info = info;
    this.id = resourceId(info);
    this.history = new EventHistory(historySize, rv);
  }

  set(key: string, namespace: string, name: string, object: Stored): void {
    const isNew = !this.objects.has(key);
    this.objects.set(key, object);
    let names = this.byNamespace.get(namespace);
    if (!names) {
      names = new Map();
      this.byNamespace.set(namespace, names);
    }
    names.set(name, object);
    if (isNew) {
      this.sortedAll = undefined;
      this.sortedByNamespace.delete(namespace);
    }
  }

  remove(key: string, namespace: string, name: string): void {
    this.objects.delete(key);
    const names = this.byNamespace.get(namespace);
    names?.delete(name);
    if (names?.size === 0) this.byNamespace.delete(namespace);
    this.sortedAll = undefined;
    this.sortedByNamespace.delete(namespace);
  }

  /** Keys in etcd order (namespace/name), cached until an object is added or removed. */
  sortedKeys(namespace?: string): string[] {
    if (namespace === undefined) {
      this.sortedAll ??= [...this.objects.keys()].sort();
      return this.sortedAll;
    }
    let keys = this.sortedByNamespace.get(namespace);
    if (!keys) {
      const names = this.byNamespace.get(namespace);
      keys = names ? [...names.keys()].sort().map((name) => objectKey(namespace, name)) : [];
      this.sortedByNamespace.set(namespace, keys);
    }
    return keys;
  }
}

export function listTable(table: Table, currentRv: number, options: ListOptions = {}): ListResult {
  const namespace = table.info.namespaced ? options.namespace || undefined : undefined;
  let listRv = currentRv;
  let start = "";
  if (options.continue) {
    const token = decodeContinue(options.continue);
    listRv = token.rv;
    start = token.start;
  } else if (options.resourceVersionMatch === "Exact" && options.resourceVersion) {
    listRv = Number(options.resourceVersion);
    if (!Number.isInteger(listRv))
      throw badRequest(`invalid resource version: ${options.resourceVersion}`);
  }
  let source: Map<string, Stored> | undefined;
  let keys: string[];
  if (listRv > currentRv)
    throw timeoutError(`Too large resource version: ${listRv}, current: ${currentRv}`, 1);
  if (listRv < currentRv) {
    source = snapshot(table, namespace, listRv, !!options.continue);
    keys = [...source.keys()].sort();
  } else keys = table.sortedKeys(namespace);
  const objects = source ?? table.objects;
  const matches = (object: Stored) =>
    (!options.labelSelector?.length ||
      matchesLabels(options.labelSelector, object.metadata.labels)) &&
    (!options.fieldSelector?.length || matchesFields(options.fieldSelector, object));
  let first = 0;
  if (start) {
    let low = 0;
    let high = keys.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (keys[mid]! < start) low = mid + 1;
      else high = mid;
    }
    first = low;
  }
  const limit = options.limit && options.limit > 0 ? options.limit : Number.POSITIVE_INFINITY;
  const items: Stored[] = [];
  let index = first;
  for (; index < keys.length && items.length < limit; index++) {
    const object = objects.get(keys[index]!)!;
    if (matches(object)) items.push(object);
  }
  let remaining = 0;
  let more = false;
  for (let i = index; i < keys.length; i++) {
    if (matches(objects.get(keys[i]!)!)) {
      more = true;
      remaining++;
      if (options.labelSelector?.length || options.fieldSelector?.length) break;
    }
  }
  const result: ListResult = { items, resourceVersion: String(listRv) };
  if (more) {
    result.continue = encodeContinue(listRv, `${keys[index - 1]}\u0000`);
    if (!options.labelSelector?.length && !options.fieldSelector?.length)
      result.remainingItemCount = remaining;
  }
  return result;
}

/** The table as it was at `rv`, rebuilt from the watch history; 410 when it is too old. */
function snapshot(table: Table, namespace: string | undefined, rv: number, paging: boolean) {
  const events = table.history.since(rv);
  if (!events) {
    throw expired(
      paging ? CONTINUE_EXPIRED : "The resourceVersion for the provided list is too old.",
    );
  }
  const out = new Map<string, Stored>();
  for (const key of table.sortedKeys(namespace)) out.set(key, table.objects.get(key)!);
  for (let i = events.length - 1; i >= 0; i--) {
    const event = events[i]!;
    const meta = (event.previous ?? event.object).metadata;
    if (namespace !== undefined && meta.namespace !== namespace) continue;
    const key = objectKey(meta.namespace, meta.name!);
    if (event.type === "ADDED") out.delete(key);
    else out.set(key, event.previous!);
  }
  return out;
}

function encodeContinue(rv: number, start: string): string {
  return Buffer.from(JSON.stringify({ v: "meta.k8s.io/v1", rv, start })).toString("base64");
}

function decodeContinue(token: string): { rv: number; start: string } {
  try {
    const parsed = JSON.parse(Buffer.from(token, "base64").toString("utf8")) as {
      v?: string;
      rv?: number;
      start?: string;
    };
    if (
      parsed.v !== "meta.k8s.io/v1" ||
      typeof parsed.rv !== "number" ||
      typeof parsed.start !== "string"
    )
      throw new Error("bad token");
    return { rv: parsed.rv, start: parsed.start };
  } catch {
    throw badRequest(`invalid continue token: ${token}`);
  }
}
