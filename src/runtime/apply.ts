// Writes that converge on a desired state and write nothing when it is already there:
// children carry a hash of their desired form, status is compared before it is written,
// finalizers and owner references are plain helpers.
import type { KubernetesObject, V1OwnerReference } from "@kubernetes/client-node";
import { apiVersionOf, isAlreadyExists, type KubeClient, type ResourceType } from "./client.ts";
import { deepEqual, stableHash } from "./hash.ts";

export const SPEC_HASH_ANNOTATION = "buildfarm.dev/spec-hash";

/** A controller owner reference to `owner`, so deleting it garbage-collects the child. */
export function ownerReference(owner: KubernetesObject): V1OwnerReference {
  return {
    apiVersion: owner.apiVersion as string,
    kind: owner.kind as string,
    name: owner.metadata?.name as string,
    uid: owner.metadata?.uid as string,
    controller: true,
    blockOwnerDeletion: true,
  };
}

export function isControlledBy(object: KubernetesObject, owner: KubernetesObject): boolean {
  return (object.metadata?.ownerReferences ?? []).some(
    (reference) => reference.controller === true && reference.uid === owner.metadata?.uid,
  );
}

/** The desired object with the hash of its own content in an annotation. */
export function withSpecHash<T extends KubernetesObject>(desired: T): T {
  const { [SPEC_HASH_ANNOTATION]: _ignored, ...annotations } = desired.metadata?.annotations ?? {};
  const hash = stableHash({ ...desired, metadata: { ...desired.metadata, annotations } });
  return {
    ...desired,
    metadata: {
      ...desired.metadata,
      annotations: { ...annotations, [SPEC_HASH_ANNOTATION]: hash },
    },
  };
}

export type EnsureResult = "created" | "updated" | "unchanged" | "exists";

export interface EnsureOptions<T> {
  /** Carries over fields the API server fills in and a replace must keep (e.g. a Service's clusterIP). */
  preserve?: (current: T, desired: T) => T;
  /** The owner the child must belong to; a same-named object of someone else is not touched. */
  owner?: KubernetesObject;
}

export class NotOwnedError extends Error {
  constructor(type: ResourceType, object: KubernetesObject) {
    super(
      `${type.kind} ${object.metadata?.namespace}/${object.metadata?.name} already exists and is not managed by this object; rename or delete it`,
    );
    this.name = "NotOwnedError";
  }
}

/**
 * Creates the child, or replaces it when its desired hash changed; `current` is what the
 * cache holds. "exists" means a create found an object of the owner that the cache has not
 * seen yet: the cache is behind. A same-named object of someone else throws NotOwnedError,
 * whether the cache holds it or not (a label-filtered cache never sees it). An object of the
 * owner that lost the desired labels, so that a label-filtered cache no longer holds it, is
 * written back as desired ("updated").
 */
export async function ensure<T extends KubernetesObject>(
  client: KubeClient,
  type: ResourceType,
  desired: T,
  current: T | undefined,
  options: EnsureOptions<T> = {},
): Promise<EnsureResult> {
  const hashed = withSpecHash(desired);
  if (!current) {
    try {
      await client.create(type, hashed);
      return "created";
    } catch (error) {
      if (!isAlreadyExists(error) || !options.owner) {
        if (isAlreadyExists(error)) return "exists";
        throw error;
      }
      const existing = await client.get<T>(
        type,
        hashed.metadata?.namespace,
        hashed.metadata?.name as string,
      );
      if (!existing) return "exists"; // deleted meanwhile: the next pass creates it
      if (!isControlledBy(existing, options.owner)) throw new NotOwnedError(type, existing);
      if (hasLabels(existing, hashed)) return "exists";
      await replace(client, type, hashed, existing, options);
      return "updated";
    }
  }
  if (options.owner && !isControlledBy(current, options.owner))
    throw new NotOwnedError(type, current);
  if (
    current.metadata?.annotations?.[SPEC_HASH_ANNOTATION] ===
    hashed.metadata?.annotations?.[SPEC_HASH_ANNOTATION]
  ) {
    return "unchanged";
  }
  await replace(client, type, hashed, current, options);
  return "updated";
}

function hasLabels(object: KubernetesObject, desired: KubernetesObject): boolean {
  const labels = object.metadata?.labels ?? {};
  return Object.entries(desired.metadata?.labels ?? {}).every(
    ([key, value]) => labels[key] === value,
  );
}

/** PUT `hashed` over `current`, conditional on its resourceVersion. */
async function replace<T extends KubernetesObject>(
  client: KubeClient,
  type: ResourceType,
  hashed: T,
  current: T,
  options: EnsureOptions<T>,
): Promise<void> {
  const base = options.preserve ? options.preserve(current, hashed) : hashed;
  const replacement = {
    ...base,
    apiVersion: apiVersionOf(type),
    kind: type.kind,
    metadata: {
      ...base.metadata,
      resourceVersion: current.metadata?.resourceVersion,
      uid: current.metadata?.uid,
      // Keep finalizers others put on the child.
      finalizers: current.metadata?.finalizers,
    },
  } as T;
  await client.replace(type, replacement);
}

/**
 * Writes `status` through the status subresource unless it equals what is stored. A PUT with
 * the cached resourceVersion fails with 409 when the cache is stale, so a status computed from
 * an old view never overwrites a newer one.
 */
export async function writeStatus<T extends KubernetesObject & { status?: unknown }>(
  client: KubeClient,
  type: ResourceType,
  object: T,
  status: T["status"],
): Promise<boolean> {
  if (deepEqual(object.status ?? {}, status ?? {})) return false;
  await client.replace(type, { ...object, status }, "status");
  return true;
}

/** Adds a finalizer (optimistically concurrent); false when it was already there. */
export async function addFinalizer(
  client: KubeClient,
  type: ResourceType,
  object: KubernetesObject,
  finalizer: string,
): Promise<boolean> {
  const finalizers = object.metadata?.finalizers ?? [];
  if (finalizers.includes(finalizer)) return false;
  await client.patch(type, object.metadata?.namespace, object.metadata?.name as string, {
    metadata: {
      finalizers: [...finalizers, finalizer],
      resourceVersion: object.metadata?.resourceVersion,
    },
  });
  return true;
}

/** Removes a finalizer; false when it was not there. */
export async function removeFinalizer(
  client: KubeClient,
  type: ResourceType,
  object: KubernetesObject,
  finalizer: string,
): Promise<boolean> {
  const finalizers = object.metadata?.finalizers ?? [];
  if (!finalizers.includes(finalizer)) return false;
  await client.patch(type, object.metadata?.namespace, object.metadata?.name as string, {
    metadata: {
      finalizers: finalizers.filter((item) => item !== finalizer),
      resourceVersion: object.metadata?.resourceVersion,
    },
  });
  return true;
}
