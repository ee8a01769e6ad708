// The shape of a per-kind strategy (the API server's RESTCreateStrategy/RESTUpdateStrategy,
// reduced to what test/kube models) and the small JSON helpers the strategies share.
import { isObject, type JsonObject, jsonEqual, type KubeObject } from "../objects.ts";
import { type FieldError, invalidValue } from "../status.ts";

export interface StrategyContext {
  serverVersion: { major: number; minor: number };
  allocateClusterIP(): string;
}

export interface Strategy {
  /**
   * What decoding the JSON into the Go type does: normalizes the fields it re-encodes (times)
   * and returns the decoder's error for a value it cannot parse, undefined when it decodes.
   */
  decode?(object: KubeObject): string | undefined;
  /** Defaults applied to every write, as decoding a request body does. */
  defaults?(object: KubeObject): void;
  /** PrepareForCreate: server-owned fields of a new object (status is reset before). */
  prepareForCreate?(object: KubeObject, context: StrategyContext): void;
  /** PrepareForUpdate: carries server-owned fields over from the stored object. */
  prepareForUpdate?(object: KubeObject, old: KubeObject): void;
  /** The status a new object starts with when the kind has a status subresource. */
  initialStatus?(object: KubeObject): JsonObject;
  validate?(object: KubeObject): FieldError[];
  validateUpdate?(object: KubeObject, old: KubeObject): FieldError[];
  /** Seconds of graceful deletion, 0 for immediate (pods only). */
  gracePeriodSeconds?(object: KubeObject, requested: number | undefined): number;
}

export type Obj = JsonObject;
export const obj = (value: unknown): Obj => (isObject(value) ? value : {});

/** parent[key] as an object, created when missing. */
export function child(parent: Obj | KubeObject, key: string): Obj {
  const record = parent as Obj;
  if (!isObject(record[key])) record[key] = {};
  return record[key] as Obj;
}
export const list = (value: unknown): Obj[] => (Array.isArray(value) ? value.filter(isObject) : []);

/** A field that may not change on update. */
export function immutable(field: string, value: unknown, old: unknown): FieldError[] {
  return jsonEqual(value, old) ? [] : [invalidValue(field, value, "field is immutable")];
}
