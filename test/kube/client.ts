// Client-side helpers for tests that talk to test/kube (or a real cluster) with client-node.
import { ApiException, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { Status } from "./status.ts";

/** The metav1.Status a client-node ApiException carries, or undefined for other errors. */
export function apiStatus(error: unknown): Status | undefined {
  if (!(error instanceof ApiException)) return undefined;
  const body: unknown = error.body;
  if (typeof body === "string") {
    try {
      return JSON.parse(body) as Status;
    } catch {
      return undefined;
    }
  }
  return body as Status;
}

/** Awaits a call that must fail and returns its Status. */
export async function expectStatus(call: Promise<unknown>): Promise<Status> {
  try {
    await call;
  } catch (error) {
    const status = apiStatus(error);
    if (status) return status;
    throw error;
  }
  throw new Error("expected the call to fail with a Status");
}

/**
 * client-node 2.x sends `application/json-patch+json` from its typed patch methods unless a
 * middleware sets another Content-Type; these are the options that do it.
 */
export const mergePatch = () => setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
export const strategicMergePatch = () =>
  setHeaderOptions("Content-Type", PatchStrategy.StrategicMergePatch);
export const jsonPatch = () => setHeaderOptions("Content-Type", PatchStrategy.JsonPatch);
