// The contract between the operator's index and tag Jobs and `buildfarm assemble`, in one
// place, so the two sides cannot drift: the argv the Jobs run (assembleArgs) and how the
// command reads it (parseAssembleArgs); the result line the command prints and leaves in its
// termination message (AssembleOutput, terminationMessage, failureMessageLine) and how the
// operator reads it back (parseAssembleResult). test/imagebuild/assemble-contract.test.ts
// round-trips both. Light on purpose: the operator loads it without the registry client.
import { parseArgs } from "node:util";
import { z } from "zod";
import {
  formatPlatform,
  isUnknownPlatform,
  PLATFORM_SPEC,
  parsePlatform,
  platformKey,
} from "../api/platform.ts";
import { HOST_AND_PORT, TAG } from "../api/reference.ts";
import type { ImageBuild } from "../api/resources.ts";
import { BUILD_PATHS } from "../naming.ts";
import { SHA256_DIGEST } from "../registry/digest.ts";
import { parseReference, parseRepository, sameRepository } from "../registry/reference.ts";
import type { DigestClaim } from "../registry/resolve.ts";
import type { BuildPlan } from "./admission.ts";
import { type Parsed, parseObject } from "./metadata.ts";

/** One `--digest`: a platform as spec.platforms writes it, and the digest its Job pushed. */
export interface PlatformDigest {
  platform: string;
  digest: string;
}

/**
 * What one run of `assemble` does: the index Job pushes the index and, unless the build has
 * spec.verify, tags it; with spec.verify the tag Job applies the tags after the check passed,
 * to exactly the index that was checked (`--expect-digest`).
 */
export interface AssembleStep {
  tags: boolean;
  expectDigest?: string;
}

/** `buildfarm assemble`'s arguments (after the subcommand). */
export function assembleArgs(
  build: ImageBuild,
  plan: BuildPlan,
  digests: readonly PlatformDigest[],
  step: AssembleStep = { tags: true },
): string[] {
  const { output } = build.spec;
  return [
    "--image",
    output.image,
    ...digests.flatMap(({ platform, digest }) => ["--digest", `${platform}=${digest}`]),
    ...(step.tags ? output.tags.flatMap((tag) => ["--tag", tag]) : []),
    ...(step.expectDigest ? ["--expect-digest", step.expectDigest] : []),
    ...plan.insecureRegistries.flatMap((host) => ["--insecure-registry", host]),
    ...(output.pushSecretRef ? ["--docker-config", BUILD_PATHS.dockerConfig] : []),
    "--termination-message-path",
    BUILD_PATHS.terminationLog,
  ];
}

export const ASSEMBLE_USAGE = `usage: buildfarm assemble --image REPO --digest PLATFORM=sha256:... [--digest ...] [options]

Combines per-platform images, pushed by digest to REPO, into one multi-arch image index,
pushes it by digest, then applies each --tag. Prints one JSON line:
  {"digest":"sha256:...","image":"REPO@sha256:...","mediaType":"...","platforms":[...],"tags":[...]}

options:
  --image REPO                      repository, without tag or digest (required)
  --digest PLATFORM=DIGEST          os/arch[/variant]=sha256:..., one per platform (required,
                                    repeatable); DIGEST may be REPO@sha256:... of the same REPO
  --tag TAG                         tag to point at the index (repeatable)
  --expect-digest DIGEST            refuse, before pushing or tagging anything, unless the
                                    assembled index has this digest (tag a checked index)
  --annotation KEY=VALUE            annotation on the index (repeatable; OCI format only)
  --format oci|docker               OCI image index (default), or a Docker manifest list when
                                    every input is Docker v2
  --docker-config DIR               directory holding config.json with registry credentials
                                    (default $DOCKER_CONFIG, else ~/.docker); a file also works
  --insecure-registry HOST[:PORT]   reach this registry over plain HTTP (repeatable)
  --ca-file FILE                    PEM CA bundle trusted besides the system CAs
  --termination-message-path FILE   also write the result JSON (or {"error":...}) there
  --log-format text|json            stderr log lines for people (default) or as pino JSON
  --log-level debug|info|warn|error (default info)

exit codes: 0 done, 1 failed (one line on stderr says why), 2 usage error
`;

/** Kubernetes reads at most 4096 bytes of a termination message. */
export const TERMINATION_MESSAGE_LIMIT = 4096;

const ANNOTATION_KEY = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,252}$/;
const PRINTABLE = /^\P{Cc}*$/u;

const options = {
  image: { type: "string" },
  digest: { type: "string", multiple: true },
  tag: { type: "string", multiple: true },
  "expect-digest": { type: "string" },
  annotation: { type: "string", multiple: true },
  format: { type: "string" },
  "docker-config": { type: "string" },
  "insecure-registry": { type: "string", multiple: true },
  "ca-file": { type: "string" },
  "termination-message-path": { type: "string" },
  "log-format": { type: "string" },
  "log-level": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

const nonEmptyPath = z.string().min(1, { message: "must not be empty" });

const digestFlag = z.string().transform((value, ctx): DigestClaim & { repository?: string } => {
  const eq = value.indexOf("=");
  const platformText = eq < 0 ? "" : value.slice(0, eq);
  const target = eq < 0 ? "" : value.slice(eq + 1);
  if (eq < 0 || !PLATFORM_SPEC.test(platformText)) {
    ctx.addIssue({
      code: "custom",
      message: "must be os/arch[/variant]=sha256:<64 hex digits>, e.g. linux/arm64=sha256:…",
    });
    return z.NEVER;
  }
  const platform = parsePlatform(platformText);
  if (isUnknownPlatform(platform)) {
    ctx.addIssue({ code: "custom", message: `${platformText} is not a runnable platform` });
    return z.NEVER;
  }
  if (SHA256_DIGEST.test(target)) return { platform, digest: target };
  const at = target.lastIndexOf("@");
  if (at > 0 && SHA256_DIGEST.test(target.slice(at + 1))) {
    return { platform, digest: target.slice(at + 1), repository: target.slice(0, at) };
  }
  ctx.addIssue({
    code: "custom",
    message: "the digest must be sha256:<64 lower-case hex digits> (or REPO@sha256:…)",
  });
  return z.NEVER;
});

const annotationFlag = z.string().transform((value, ctx) => {
  const eq = value.indexOf("=");
  const key = eq < 0 ? value : value.slice(0, eq);
  if (eq < 0 || !ANNOTATION_KEY.test(key) || !PRINTABLE.test(value)) {
    ctx.addIssue({
      code: "custom",
      message: "must be KEY=VALUE with a key such as org.opencontainers.image.source",
    });
    return z.NEVER;
  }
  return [key, value.slice(eq + 1)] as const;
});

const flagsSchema = z
  .object({
    image: z
      .string({ error: "is required" })
      .min(1, { message: "is required" })
      .superRefine((value, ctx) => {
        try {
          parseRepository(value);
        } catch (error) {
          ctx.addIssue({ code: "custom", message: (error as Error).message });
        }
      }),
    digest: z
      .array(digestFlag, { error: "is required: one per platform" })
      .min(1, { message: "is required: one per platform" })
      .max(32),
    tag: z
      .array(
        z.string().regex(TAG, {
          message:
            "must be at most 128 letters, digits, '.', '_' or '-', not starting with '.' or '-'",
        }),
      )
      .max(64)
      .default([]),
    "expect-digest": z
      .string()
      .regex(SHA256_DIGEST, { message: "must be sha256:<64 lower-case hex digits>" })
      .optional(),
    annotation: z.array(annotationFlag).max(64).default([]),
    format: z.enum(["oci", "docker"], { error: "must be oci or docker" }).default("oci"),
    "docker-config": nonEmptyPath.optional(),
    "insecure-registry": z
      .array(z.string().regex(HOST_AND_PORT, { message: "must be host or host:port" }))
      .default([]),
    "ca-file": nonEmptyPath.optional(),
    "termination-message-path": nonEmptyPath.optional(),
    "log-format": z.enum(["text", "json"], { error: "must be text or json" }).default("text"),
    "log-level": z
      .enum(["debug", "info", "warn", "error"], { error: "must be debug, info, warn or error" })
      .default("info"),
  })
  .superRefine((flags, ctx) => {
    const repository = (() => {
      try {
        return parseRepository(flags.image);
      } catch {
        return undefined;
      }
    })();
    const seen = new Map<string, number>();
    flags.digest.forEach((claim, i) => {
      const key = platformKey(claim.platform);
      const first = seen.get(key);
      if (first !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["digest", i],
          message: `${formatPlatform(claim.platform)} is given twice; an index holds one image per platform`,
        });
      }
      seen.set(key, i);
      if (claim.repository !== undefined && repository) {
        let other: ReturnType<typeof parseReference> | undefined;
        try {
          other = parseReference(claim.repository);
        } catch (error) {
          ctx.addIssue({ code: "custom", path: ["digest", i], message: (error as Error).message });
          return;
        }
        if (!sameRepository(other.repository, repository) || other.tag !== undefined) {
          ctx.addIssue({
            code: "custom",
            path: ["digest", i],
            message: `${claim.repository} is not the --image repository ${flags.image}; every platform must be pushed by digest to the repository of the index`,
          });
        }
      }
    });
    const keys = new Set<string>();
    flags.annotation.forEach(([key], i) => {
      if (keys.has(key))
        ctx.addIssue({ code: "custom", path: ["annotation", i], message: `${key} is given twice` });
      keys.add(key);
    });
  });

export type AssembleFlags = z.infer<typeof flagsSchema>;

export type ParsedArgs =
  | { kind: "ok"; flags: AssembleFlags }
  | { kind: "help" }
  | { kind: "usage"; message: string };

/** argv → validated flags, or a usage error naming the flag. */
export function parseAssembleArgs(argv: string[]): ParsedArgs {
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }));
  } catch (error) {
    return { kind: "usage", message: (error as Error).message };
  }
  if (values.help) return { kind: "help" };
  const parsed = flagsSchema.safeParse(values);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const [flag, index] = issue.path;
      const list = Array.isArray(values[String(flag)])
        ? (values[String(flag)] as string[])
        : undefined;
      const given = typeof index === "number" && list ? ` ${JSON.stringify(list[index])}` : "";
      return `--${String(flag)}${given}: ${issue.message}`;
    });
    return { kind: "usage", message: lines.join("; ") };
  }
  return { kind: "ok", flags: parsed.data };
}

/** One attestation manifest of the index: the platform it describes and what it attests. */
export interface AssembleAttestation {
  platform: string;
  digest: string;
  predicateTypes: string[];
}

export interface AssembleOutput {
  digest: string;
  image: string;
  mediaType: string;
  platforms: string[];
  tags: string[];
  /** Present only when the index holds attestation manifests. */
  attestations?: AssembleAttestation[];
}

/**
 * The result line, shortened to fit a termination message: tags dropped from the end first,
 * then attestations (each omission counted), never the digest.
 */
export function terminationMessage(
  output: AssembleOutput,
  limit = TERMINATION_MESSAGE_LIMIT,
): string {
  let tags = output.tags;
  let attestations = output.attestations;
  for (;;) {
    const omitted = output.tags.length - tags.length;
    const attestationsOmitted = (output.attestations?.length ?? 0) - (attestations?.length ?? 0);
    const text = JSON.stringify({
      ...output,
      tags,
      ...(omitted > 0 ? { tagsOmitted: omitted } : {}),
      ...(attestations ? { attestations } : {}),
      ...(attestationsOmitted > 0 ? { attestationsOmitted } : {}),
    });
    if (Buffer.byteLength(text) <= limit) return text;
    if (tags.length > 0) tags = tags.slice(0, -1);
    else if (attestations && attestations.length > 0) attestations = attestations.slice(0, -1);
    else return text;
  }
}

/** The attestations of a result line, as status.attestations can hold them. */
const resultAttestations = z
  .array(
    z.object({
      platform: z.string().max(32),
      digest: z.string().regex(SHA256_DIGEST),
      predicateTypes: z.array(z.string().max(256)).max(8),
    }),
  )
  .max(16);

function attestationsOf(value: unknown): AssembleAttestation[] | undefined {
  const parsed = resultAttestations.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}

function truncateBytes(text: string, maxBytes: number): string {
  let out = text;
  while (Buffer.byteLength(out) > maxBytes)
    out = `${out.slice(0, Math.floor(out.length * 0.9) - 1)}…`;
  return out;
}

/** The line written to the termination message instead when assembling failed. */
export function failureMessageLine(reason: string): string {
  return JSON.stringify({ error: truncateBytes(reason, TERMINATION_MESSAGE_LIMIT - 64) });
}

/**
 * Reads the result back, as the index and tag Jobs' pods report it: the last line of the
 * termination message (terminationMessage's, or the error line, which has no digest).
 */
export function parseAssembleResult(message: string | undefined): Parsed<AssembleOutput> {
  const what = "the index Job's result";
  const parsed = parseObject(message?.trim().split("\n").at(-1), what);
  if (!parsed.ok) return parsed;
  const { digest, image, mediaType, platforms, tags, attestations } = parsed.value;
  if (typeof digest !== "string" || !SHA256_DIGEST.test(digest)) {
    return { ok: false, error: `${what} has no valid digest` };
  }
  if (typeof image !== "string" || image === "")
    return { ok: false, error: `${what} has no image` };
  const found = attestationsOf(attestations);
  const strings = (value: unknown) =>
    Array.isArray(value) && value.every((item) => typeof item === "string")
      ? (value as string[])
      : undefined;
  return {
    ok: true,
    value: {
      digest,
      image,
      mediaType: typeof mediaType === "string" ? mediaType : "",
      platforms: strings(platforms) ?? [],
      tags: strings(tags) ?? [],
      ...(found?.length ? { attestations: found } : {}),
    },
  };
}
