// The three patch formats the API server accepts besides server-side apply:
// JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch, the last one
// for the list fields an operator patches on built-in kinds (merge keys from the Go types'
// patchMergeKey/patchStrategy tags).
import { clone, isObject, type JsonObject, jsonEqual } from "./objects.ts";
import { badRequest, KubeError } from "./status.ts";

export const MERGE_PATCH = "application/merge-patch+json";
export const JSON_PATCH = "application/json-patch+json";
export const STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json";
export const APPLY_PATCH = "application/apply-patch+yaml";

export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

interface JsonPatchOperation {
  op: string;
  path: string;
  from?: string;
  value?: unknown;
}

function pointer(path: string): string[] {
  if (path === "") return [];
  if (!path.startsWith("/")) throw badRequest(`invalid JSON pointer: "${path}"`);
  return path
    .slice(1)
    .split("/")
    .map((part) => part.replaceAll("~1", "/").replaceAll("~0", "~"));
}

function patchFailed(message: string): KubeError {
  return new KubeError({ message, reason: "Invalid", code: 422 });
}

function parentOf(document: unknown, parts: string[], path: string): unknown {
  let current = document;
  for (const part of parts.slice(0, -1)) {
    if (Array.isArray(current)) current = current[Number(part)];
    else if (isObject(current)) current = current[part];
    else current = undefined;
    if (current === undefined) throw patchFailed(`doc is missing path: "${path}": missing value`);
  }
  return current;
}

function getAt(document: unknown, path: string): unknown {
  let current = document;
  for (const part of pointer(path)) {
    if (Array.isArray(current)) current = current[Number(part)];
    else if (isObject(current)) current = current[part];
    else return undefined;
  }
  return current;
}

function arrayIndex(list: unknown[], part: string, path: string, forInsert: boolean): number {
  if (part === "-" && forInsert) return list.length;
  if (!/^(0|[1-9][0-9]*)$/.test(part))
    throw patchFailed(`invalid array index "${part}" in "${path}"`);
  const index = Number(part);
  if (index > list.length || (!forInsert && index === list.length))
    throw patchFailed(`doc is missing path: "${path}": missing value`);
  return index;
}

function addAt(document: unknown, path: string, value: unknown): unknown {
  const parts = pointer(path);
  if (parts.length === 0) return clone(value);
  const parent = parentOf(document, parts, path);
  const last = parts[parts.length - 1]!;
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, path, true), 0, clone(value));
  else if (isObject(parent)) parent[last] = clone(value);
  else throw patchFailed(`doc is missing path: "${path}": missing value`);
  return document;
}

function removeAt(document: unknown, path: string): unknown {
  const parts = pointer(path);
  const parent = parentOf(document, parts, path);
  const last = parts[parts.length - 1]!;
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, path, false), 1);
  else if (isObject(parent) && Object.hasOwn(parent, last)) delete parent[last];
  else throw patchFailed(`Unable to remove nonexistent key: ${last}: missing value`);
  return document;
}

export function jsonPatch(target: unknown, operations: unknown): unknown {
  if (!Array.isArray(operations))
    throw badRequest("json: cannot unmarshal object into Go value of type jsonpatch.Patch");
  let document = clone(target);
  for (const operation of operations as JsonPatchOperation[]) {
    if (!isObject(operation) || typeof operation.path !== "string")
      throw badRequest("invalid JSON patch operation");
    switch (operation.op) {
      case "add":
        document = addAt(document, operation.path, operation.value);
        break;
      case "remove":
        document = removeAt(document, operation.path);
        break;
      case "replace":
        if (getAt(document, operation.path) === undefined && operation.path !== "")
          throw patchFailed(
            `replace operation does not apply: doc is missing key: ${operation.path}: missing value`,
          );
        document = removeAt(document, operation.path);
        document = addAt(document, operation.path, operation.value);
        break;
      case "move": {
        const value = getAt(document, operation.from ?? "");
        if (value === undefined) throw patchFailed(`doc is missing from path: "${operation.from}"`);
        document = removeAt(document, operation.from ?? "");
        document = addAt(document, operation.path, value);
        break;
      }
      case "copy": {
        const value = getAt(document, operation.from ?? "");
        if (value === undefined) throw patchFailed(`doc is missing from path: "${operation.from}"`);
        document = addAt(document, operation.path, value);
        break;
      }
      case "test":
        if (!jsonEqual(getAt(document, operation.path), operation.value))
          throw patchFailed(`testing value ${operation.path} failed: test failed`);
        break;
      default:
        throw badRequest(`Unexpected kind: ${String(operation.op)}`);
    }
  }
  return document;
}

/**
 * How strategic merge treats a list, by the field path leading to it (array indexes dropped):
 * a merge key, "primitive" (merged as a set), or undefined for atomic replacement.
 */
function listStrategy(path: readonly string[]): string | undefined {
  const field = path[path.length - 1];
  const parent = path[path.length - 2];
  const joined = path.join(".");
  if (joined === "metadata.finalizers") return "primitive";
  if (joined === "metadata.ownerReferences") return "uid";
  switch (field) {
    case "containers":
    case "initContainers":
    case "ephemeralContainers":
    case "imagePullSecrets":
      return "name";
    case "volumes":
      return parent === "spec" ? "name" : undefined;
    case "env":
      return "name";
    case "volumeMounts":
      return "mountPath";
    case "volumeDevices":
      return "devicePath";
    case "hostAliases":
      return "ip";
    case "ports":
      if (parent === "containers" || parent === "initContainers") return "containerPort";
      if (joined === "spec.ports") return "port";
      return undefined;
    case "conditions":
    case "addresses":
      return parent === "status" ? "type" : undefined;
    default:
      return undefined;
  }
}

/** Applies a strategic merge patch to a built-in object. */
export function strategicMergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) throw badRequest("strategic merge patch must be a JSON object");
  return smpObject(isObject(target) ? target : {}, patch, []);
}

function smpObject(target: JsonObject, patch: JsonObject, path: string[]): JsonObject {
  const directive = patch.$patch;
  if (directive === "replace") {
    const { $patch: _, ...rest } = patch;
    return clone(rest);
  }
  if (directive === "delete") return {};
  const out: JsonObject = { ...target };
  const deletions: Record<string, unknown[]> = {};
  for (const [key, value] of Object.entries(patch)) {
    if (key === "$patch" || key === "$retainKeys") continue;
    if (key.startsWith("$setElementOrder/")) continue;
    if (key.startsWith("$deleteFromPrimitiveList/")) {
      deletions[key.slice("$deleteFromPrimitiveList/".length)] = Array.isArray(value) ? value : [];
      continue;
    }
    const childPath = [...path, key];
    if (value === null) delete out[key];
    else if (Array.isArray(value)) out[key] = smpList(out[key], value, childPath);
    else if (isObject(value)) {
      if (value.$patch === "delete") delete out[key];
      else
        out[key] = smpObject(isObject(out[key]) ? (out[key] as JsonObject) : {}, value, childPath);
    } else out[key] = value;
  }
  for (const [key, values] of Object.entries(deletions)) {
    if (Array.isArray(out[key]))
      out[key] = (out[key] as unknown[]).filter((item) => !values.some((v) => jsonEqual(v, item)));
  }
  return out;
}

function smpList(target: unknown, patch: unknown[], path: string[]): unknown[] {
  const strategy = listStrategy(path);
  const current = Array.isArray(target) ? target : [];
  if (strategy === undefined) return clone(patch);
  if (strategy === "primitive") {
    const out = [...current];
    for (const item of patch)
      if (!out.some((existing) => jsonEqual(existing, item))) out.push(item);
    return out;
  }
  if (patch.some((item) => isObject(item) && item.$patch === "replace"))
    return clone(patch.filter((item) => !(isObject(item) && item.$patch === "replace")));
  const out = current.map((item) => item);
  for (const item of patch) {
    if (!isObject(item)) throw badRequest(`list ${path.join(".")} must hold objects`);
    const key = item[strategy];
    const index = out.findIndex((existing) => isObject(existing) && existing[strategy] === key);
    if (item.$patch === "delete") {
      if (index >= 0) out.splice(index, 1);
    } else if (index >= 0) {
      out[index] = smpObject(out[index] as JsonObject, item, path);
    } else {
      out.push(smpObject({}, item, path));
    }
  }
  return out;
}
