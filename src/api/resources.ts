// Typed views of the two custom resources as read from the cluster, and the one place that
// turns an unknown object into a typed one or into an error a person can act on.
import type { V1ObjectMeta } from "@kubernetes/client-node";
import type { z } from "zod";
import {
  type BuilderPoolSpec,
  type BuilderPoolStatus,
  builderPoolSpec,
  builderPoolStatus,
} from "./builderpool.ts";
import { type ImageBuildSpec, imageBuildSpec } from "./imagebuild.ts";
import { type ImageBuildStatus, imageBuildStatus } from "./imagebuild-status.ts";
import { API_VERSION, GROUP, VERSION } from "./meta.ts";

/** The REST coordinates of the two kinds, for the runtime's client and informers. */
export const BUILDER_POOL_RESOURCE = {
  group: GROUP,
  version: VERSION,
  kind: "BuilderPool",
  plural: "builderpools",
  namespaced: true,
} as const;
export const IMAGE_BUILD_RESOURCE = {
  group: GROUP,
  version: VERSION,
  kind: "ImageBuild",
  plural: "imagebuilds",
  namespaced: true,
} as const;

/** Metadata of an object the API server returned: name and namespace always set. */
export type ObjectMeta = V1ObjectMeta & { name: string; namespace: string };

export interface BuilderPool {
  apiVersion: typeof API_VERSION;
  kind: "BuilderPool";
  metadata: ObjectMeta;
  spec: BuilderPoolSpec;
  status?: BuilderPoolStatus;
}

export interface ImageBuild {
  apiVersion: typeof API_VERSION;
  kind: "ImageBuild";
  metadata: ObjectMeta;
  spec: ImageBuildSpec;
  status?: ImageBuildStatus;
}

/**
 * An ImageBuild as the API server holds it, for clients that read it without parsing it (the
 * CLI): the spec as written and admitted by the CRD, defaults not necessarily applied.
 */
export interface StoredImageBuild {
  apiVersion: typeof API_VERSION;
  kind: "ImageBuild";
  metadata: ObjectMeta;
  spec: z.input<typeof imageBuildSpec>;
  status?: ImageBuildStatus;
}

/** Name limits that keep every derived child name valid (see docs/architecture.md). */
export const MAX_POOL_NAME = 40;
export const MAX_BUILD_NAME = 52;

export interface KindInfo {
  kind: "BuilderPool" | "ImageBuild";
  plural: string;
  singular: string;
  shortName: string;
  maxNameLength: number;
  nameMessage: string;
  spec: z.ZodType;
  status: z.ZodType;
}

export const BUILDER_POOL: KindInfo = {
  kind: "BuilderPool",
  plural: "builderpools",
  singular: "builderpool",
  shortName: "bp",
  maxNameLength: MAX_POOL_NAME,
  nameMessage: `a BuilderPool name must be a DNS-1035 label of at most ${MAX_POOL_NAME} characters, because its builders are named <pool>-<arch>`,
  spec: builderPoolSpec,
  status: builderPoolStatus,
};

export const IMAGE_BUILD: KindInfo = {
  kind: "ImageBuild",
  plural: "imagebuilds",
  singular: "imagebuild",
  shortName: "ib",
  maxNameLength: MAX_BUILD_NAME,
  nameMessage: `an ImageBuild name must be a DNS-1123 label of at most ${MAX_BUILD_NAME} characters, because its Jobs are named <build>-<arch>`,
  spec: imageBuildSpec,
  status: imageBuildStatus,
};

const NAME_PATTERN = {
  BuilderPool: /^[a-z]([-a-z0-9]*[a-z0-9])?$/,
  ImageBuild: /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/,
};

/** A validation failure, rendered one issue per line as `path: message`. */
export class SpecError extends Error {
  readonly issues: readonly string[];
  constructor(issues: readonly string[]) {
    super(issues.join("; "));
    this.name = "SpecError";
    this.issues = issues;
  }
}

/** Renders a zod path the way kubectl shows field paths: spec.platforms[1].name. */
export function fieldPath(prefix: string, path: readonly PropertyKey[]): string {
  let out = prefix;
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else if (typeof part === "string" && /^[A-Za-z_][A-Za-z0-9_]*$/.test(part))
      out += out ? `.${part}` : part;
    else out += `[${JSON.stringify(String(part))}]`;
  }
  return out;
}

/** One line per problem, e.g. `spec.platforms[1]: must be os/arch[/variant]`. */
export function formatIssues(error: z.ZodError, prefix: string): string[] {
  const lines = error.issues.map((issue) => {
    const where = fieldPath(prefix, issue.path);
    return `${where || "(root)"}: ${friendlyMessage(issue)}`;
  });
  return [...new Set(lines)];
}

function friendlyMessage(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case "invalid_type":
      return issue.input === undefined ? "is required" : `must be ${article(issue.expected)}`;
    case "too_big":
      return issue.origin === "string"
        ? `must be at most ${issue.maximum} characters`
        : issue.origin === "array"
          ? `must have at most ${issue.maximum} items`
          : `must be at most ${issue.maximum}`;
    case "too_small":
      return issue.origin === "string" && issue.minimum === 1
        ? "must not be empty"
        : issue.origin === "array"
          ? `must have at least ${issue.minimum} item${issue.minimum === 1 ? "" : "s"}`
          : issue.message.startsWith("Too small")
            ? `must be at least ${issue.minimum}`
            : issue.message;
    case "unrecognized_keys":
      return `unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.join(", ")}`;
    default:
      return issue.message;
  }
}

function article(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

function validateName(info: KindInfo, metadata: unknown): string[] {
  const meta = (metadata ?? {}) as { name?: unknown; namespace?: unknown };
  const problems: string[] = [];
  if (typeof meta.name !== "string" || meta.name === "")
    problems.push("metadata.name: is required");
  else if (meta.name.length > info.maxNameLength || !NAME_PATTERN[info.kind].test(meta.name))
    problems.push(`metadata.name: ${info.nameMessage}`);
  if (typeof meta.namespace !== "string" || meta.namespace === "")
    problems.push("metadata.namespace: is required");
  return problems;
}

function parseResource<T>(info: KindInfo, object: unknown): T {
  if (typeof object !== "object" || object === null)
    throw new SpecError([`(root): must be a ${info.kind} object`]);
  const raw = object as Record<string, unknown>;
  const problems: string[] = [];
  if (raw.apiVersion !== API_VERSION) problems.push(`apiVersion: must be ${API_VERSION}`);
  if (raw.kind !== info.kind) problems.push(`kind: must be ${info.kind}`);
  problems.push(...validateName(info, raw.metadata));
  const spec = info.spec.safeParse(raw.spec);
  if (!spec.success) problems.push(...formatIssues(spec.error, "spec"));
  if (problems.length > 0) throw new SpecError(problems);
  // Status is the operator's own writing; one it cannot read (an older version's) starts over.
  const status = raw.status === undefined ? undefined : info.status.safeParse(raw.status);
  return {
    ...raw,
    spec: spec.data,
    status: status?.success ? status.data : undefined,
  } as T;
}

/** Validates and defaults a BuilderPool; throws SpecError with one line per problem. */
export function parseBuilderPool(object: unknown): BuilderPool {
  return parseResource<BuilderPool>(BUILDER_POOL, object);
}

/** Validates and defaults an ImageBuild; throws SpecError with one line per problem. */
export function parseImageBuild(object: unknown): ImageBuild {
  return parseResource<ImageBuild>(IMAGE_BUILD, object);
}
