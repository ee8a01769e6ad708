// Builders of ImageBuilds, pools, Jobs and pods for the build tests, shaped as the API server
// returns them (timestamps as strings).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { V1Job, V1Pod } from "@kubernetes/client-node";
import {
  type BuilderPool,
  type ImageBuild,
  parseBuilderPool,
  parseImageBuild,
} from "../../src/api/resources.ts";
import { admit, type BuildPlan } from "../../src/imagebuild/admission.ts";
import { type ObservedJob, observeJob } from "../../src/imagebuild/observe.ts";
import { REPO_ROOT, readYaml } from "../support/files.ts";

export const BUILD_UID = "0b5e7c1e-1111-4a4a-9b9b-000000000001";
export const POOL_UID = "0b5e7c1e-2222-4a4a-9b9b-000000000002";
export const T0 = new Date("2026-03-01T10:00:00Z");

export const at = (seconds: number) => new Date(T0.getTime() + seconds * 1000);

type Json = Record<string, unknown>;

/** Deep merge: objects merge, arrays and scalars replace, null deletes. */
export function merge(base: unknown, patch: unknown): unknown {
  if (patch === undefined) return base;
  if (patch === null) return undefined;
  if (typeof base !== "object" || base === null || Array.isArray(base)) return patch;
  if (typeof patch !== "object" || Array.isArray(patch)) return patch;
  const out: Json = { ...(base as Json) };
  for (const [key, value] of Object.entries(patch as Json)) {
    const merged = merge(out[key], value);
    if (merged === undefined) delete out[key];
    else out[key] = merged;
  }
  return out;
}

/** The example ImageBuild, with a spec patch merged in (null deletes a field), parsed. */
export function exampleBuild(
  patch: { spec?: Json; metadata?: Json; status?: Json } = {},
): ImageBuild {
  const raw = readYaml("examples/imagebuild.yaml");
  const withMeta = merge(raw, {
    metadata: {
      uid: BUILD_UID,
      generation: 1,
      creationTimestamp: "2026-03-01T09:59:00Z",
    },
  });
  return parseImageBuild(merge(withMeta, patch));
}

export function examplePool(patch: { spec?: Json; metadata?: Json } = {}): BuilderPool {
  const raw = readYaml("examples/builderpool.yaml");
  return parseBuilderPool(merge(merge(raw, { metadata: { uid: POOL_UID } }), patch));
}

/** The plan admission gives the example build on the example pool. */
export function examplePlan(build: ImageBuild = exampleBuild(), pool = examplePool()): BuildPlan {
  const admission = admit(build, {
    pool,
    buildNamespaceLabels: {},
    pushSecret: { type: "kubernetes.io/dockerconfigjson", keys: [".dockerconfigjson"] },
    secrets: Object.fromEntries(
      [
        build.spec.source.git?.authSecretRef?.name,
        ...(build.spec.secrets ?? []).map((s) => s.secretRef.name),
      ]
        .filter((name): name is string => name !== undefined)
        .map((name) => [
          name,
          { type: "Opaque", keys: ["token", "ssh-privatekey", "npmrc", "value"] },
        ]),
    ),
  });
  if (!admission.admitted) throw new Error(`example not admitted: ${admission.message}`);
  return admission.plan;
}

export function fixture(name: string): string {
  return readFileSync(join(REPO_ROOT, "test/imagebuild/fixtures", name), "utf8");
}

export const DIGEST_AMD64 = `sha256:${"a".repeat(64)}`;
export const DIGEST_ARM64 = `sha256:${"b".repeat(64)}`;
export const INDEX_DIGEST = `sha256:${"c".repeat(64)}`;

/** buildctl's metadata for a platform, shaped like BuildKit v0.24's. */
export function metadataJson(
  platform: string,
  digest: string,
  options: { cache?: boolean } = {},
): string {
  const [os, architecture, variant] = platform.split("/");
  return JSON.stringify({
    ...(options.cache === false
      ? {}
      : {
          "cache.manifest": JSON.stringify({
            mediaType: "application/vnd.oci.image.manifest.v1+json",
            digest: `sha256:${"d".repeat(64)}`,
            size: 900,
          }),
        }),
    "containerimage.config.digest": `sha256:${"e".repeat(64)}`,
    "containerimage.descriptor": {
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest,
      size: 664,
      platform: { architecture, os, ...(variant ? { variant } : {}) },
    },
    "containerimage.digest": digest,
    "image.name": "registry.example.com/demo/welcome-to-docker",
  });
}

export type PodState =
  | { phase: "Pending"; waiting?: { reason: string; message?: string } }
  /** buildctl (the init container) runs: Kubernetes still says Pending, `report` PodInitializing. */
  | { phase: "Initializing" }
  | { phase: "Running" }
  | { phase: "Succeeded"; report: string }
  | { phase: "Failed"; log: string; exitCode?: number; container?: string };

type ContainerState = Record<string, unknown>;

function containerStatus(name: string, state: ContainerState) {
  return {
    name,
    image: "moby/buildkit:v0.24.0-rootless",
    imageID: "",
    ready: false,
    restartCount: 0,
    state,
  };
}

/** A pod of a Job, owned by it; `index` orders pods by creation. */
export function pod(job: V1Job, index: number, state: PodState): V1Pod {
  const name = `${job.metadata?.name}-${"abcdefghij"[index] ?? "z"}${index}`;
  const created = new Date(T0.getTime() + index * 60_000).toISOString().replace(".000Z", "Z");
  const terminated = (exitCode: number, message?: string): ContainerState => ({
    terminated: { exitCode, ...(message === undefined ? {} : { message }), finishedAt: created },
  });
  // Index, tag and verify pods have one container and no init container.
  const component = job.metadata?.labels?.["app.kubernetes.io/component"];
  const single =
    component === "index" || component === "tag"
      ? "assemble"
      : component === "verify"
        ? "verify"
        : undefined;
  const isIndex = single !== undefined;
  const main = single ?? "report";
  // The init container (buildctl) and the main container (report or assemble), by state.
  let init: ContainerState | undefined;
  let last: ContainerState | undefined;
  switch (state.phase) {
    case "Pending":
      if (isIndex) last = { waiting: state.waiting ?? { reason: "ContainerCreating" } };
      else init = { waiting: state.waiting ?? { reason: "PodInitializing" } };
      break;
    case "Initializing":
      init = { running: {} };
      last = { waiting: { reason: "PodInitializing" } };
      break;
    case "Running":
      init = { running: {} };
      if (isIndex) last = { running: {} };
      break;
    case "Succeeded":
      init = terminated(0);
      last = terminated(0, state.report);
      break;
    case "Failed":
      if (isIndex || state.container === "report") {
        init = terminated(0);
        last = terminated(state.exitCode ?? 1, state.log);
      } else {
        init = terminated(state.exitCode ?? 1, state.log);
      }
      break;
  }
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      namespace: job.metadata?.namespace ?? "",
      creationTimestamp: created as unknown as Date,
      ownerReferences: [
        {
          apiVersion: "batch/v1",
          kind: "Job",
          name: job.metadata?.name ?? "",
          uid: job.metadata?.uid ?? "",
          controller: true,
        },
      ],
    },
    status: {
      phase: state.phase === "Initializing" ? "Pending" : state.phase,
      initContainerStatuses: isIndex || !init ? [] : [containerStatus("buildctl", init)],
      containerStatuses: last ? [containerStatus(main, last)] : [],
    },
  } as V1Pod;
}

export interface JobState {
  pods?: PodState[];
  /** Terminal condition. */
  outcome?: { type: "Complete" | "Failed"; reason?: string; message?: string };
  ownerUid?: string;
  deleting?: boolean;
}

/** A Job as the API server would return it after the Job controller saw these pods. */
export function job(object: V1Job, state: JobState = {}): ObservedJob {
  const uid = `uid-${object.metadata?.name}`;
  const withUid: V1Job = {
    ...object,
    metadata: {
      ...object.metadata,
      uid,
      ...(state.deleting ? { deletionTimestamp: T0.toISOString() as unknown as Date } : {}),
      ownerReferences: (object.metadata?.ownerReferences ?? []).map((reference) => ({
        ...reference,
        uid: state.ownerUid ?? reference.uid,
      })),
    },
  };
  const pods = (state.pods ?? []).map((podState, index) => pod(withUid, index, podState));
  const phases = (state.pods ?? []).map((p) => p.phase);
  const finishedAt = new Date(T0.getTime() + 30 * 60_000).toISOString().replace(".000Z", "Z");
  withUid.status = {
    active: state.outcome
      ? 0
      : phases.filter((p) => p === "Pending" || p === "Initializing" || p === "Running").length,
    succeeded: phases.filter((p) => p === "Succeeded").length,
    failed: phases.filter((p) => p === "Failed").length,
    startTime: T0.toISOString().replace(".000Z", "Z") as unknown as Date,
    ...(state.outcome?.type === "Complete"
      ? { completionTime: finishedAt as unknown as Date }
      : {}),
    ...(state.outcome
      ? {
          conditions: [
            {
              type: state.outcome.type,
              status: "True",
              ...(state.outcome.reason ? { reason: state.outcome.reason } : {}),
              ...(state.outcome.message ? { message: state.outcome.message } : {}),
              lastTransitionTime: finishedAt as unknown as Date,
            },
          ],
        }
      : {}),
  };
  return observeJob(withUid, pods);
}
