// `buildfarm assemble`: combine per-platform images, pushed by digest, into one multi-arch
// index, push it by digest, then tag it. The index Job of an ImageBuild runs this; its result
// is one JSON line on stdout and, for Kubernetes, in the termination message file.
import { writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import pino from "pino";
import { z } from "zod";
import {
  formatPlatform,
  isUnknownPlatform,
  PLATFORM_SPEC,
  parsePlatform,
  platformKey,
} from "../api/platform.ts";
import { HOST_AND_PORT, TAG } from "../api/reference.ts";
import { assemble } from "../registry/assemble.ts";
import { AssemblyError } from "../registry/assembly.ts";
import { RegistryClient } from "../registry/client.ts";
import { SHA256_DIGEST } from "../registry/digest.ts";
import { RegistryError } from "../registry/errors.ts";
import type { Logger } from "../registry/logger.ts";
import { apiHost, parseReference, parseRepository, sameRepository } from "../registry/reference.ts";
import type { DigestClaim } from "../registry/resolve.ts";

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

export interface AssembleOutput {
  digest: string;
  image: string;
  mediaType: string;
  platforms: string[];
  tags: string[];
}

/** The result line, shortened (tags dropped from the end) to fit a termination message. */
export function terminationMessage(
  output: AssembleOutput,
  limit = TERMINATION_MESSAGE_LIMIT,
): string {
  let tags = output.tags;
  for (;;) {
    const omitted = output.tags.length - tags.length;
    const text = JSON.stringify({
      ...output,
      tags,
      ...(omitted > 0 ? { tagsOmitted: omitted } : {}),
    });
    if (Buffer.byteLength(text) <= limit || tags.length === 0) return text;
    tags = tags.slice(0, -1);
  }
}

function truncateBytes(text: string, maxBytes: number): string {
  let out = text;
  while (Buffer.byteLength(out) > maxBytes)
    out = `${out.slice(0, Math.floor(out.length * 0.9) - 1)}…`;
  return out;
}

function makeLogger(format: "text" | "json", level: string): Logger {
  if (format === "json") {
    return pino(
      { level, base: { component: "assemble" }, timestamp: pino.stdTimeFunctions.isoTime },
      pino.destination({ dest: 2, sync: true }),
    );
  }
  const order = ["debug", "info", "warn", "error"];
  const min = order.indexOf(level);
  const line =
    (name: string) =>
    (fields: Record<string, unknown>, message: string): void => {
      if (order.indexOf(name) < min) return;
      const extra = Object.entries(fields)
        .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
        .join(" ");
      process.stderr.write(
        `${name === "info" ? "" : `${name}: `}${message}${extra ? ` ${extra}` : ""}\n`,
      );
    };
  return { debug: line("debug"), info: line("info"), warn: line("warn"), error: line("error") };
}

export async function assembleCommand(argv: string[]): Promise<number> {
  const parsed = parseAssembleArgs(argv);
  if (parsed.kind === "help") {
    process.stdout.write(ASSEMBLE_USAGE);
    return 0;
  }
  if (parsed.kind === "usage") {
    process.stderr.write(`buildfarm assemble: ${parsed.message}\n\n${ASSEMBLE_USAGE}`);
    return 2;
  }
  const flags = parsed.flags;
  const logger = makeLogger(flags["log-format"], flags["log-level"]);
  const repository = parseRepository(flags.image);
  const dockerConfig =
    flags["docker-config"] ?? process.env.DOCKER_CONFIG ?? join(homedir(), ".docker");
  const terminationPath = flags["termination-message-path"];

  let client: RegistryClient | undefined;
  try {
    client = await RegistryClient.create({
      dockerConfig,
      insecureHosts: flags["insecure-registry"].map(apiHost),
      ...(flags["ca-file"] ? { caFile: flags["ca-file"] } : {}),
      logger,
      userAgent: "buildfarm-assemble",
    });
    const result = await assemble(
      client,
      {
        repository,
        inputs: flags.digest.map(({ platform, digest }) => ({ platform, digest })),
        tags: [...new Set(flags.tag)],
        format: flags.format,
        annotations: Object.fromEntries(flags.annotation),
        ...(flags["expect-digest"] ? { expectDigest: flags["expect-digest"] } : {}),
      },
      logger,
    );
    const output: AssembleOutput = {
      digest: result.index.digest,
      image: `${flags.image}@${result.index.digest}`,
      mediaType: result.index.mediaType,
      platforms: result.index.platforms,
      tags: result.tags,
    };
    const line = JSON.stringify(output);
    if (terminationPath) await writeFile(terminationPath, terminationMessage(output));
    process.stdout.write(`${line}\n`);
    return 0;
  } catch (error) {
    const known = error instanceof RegistryError || error instanceof AssemblyError;
    const raw = error instanceof Error ? error.message : String(error);
    const reason = (client ? client.redactor.redact(raw) : raw).replace(/\s*\n\s*/g, " ");
    if (flags["log-format"] === "json") logger.error({ known }, reason);
    else process.stderr.write(`buildfarm assemble: ${reason}\n`);
    if (terminationPath) {
      const message = JSON.stringify({
        error: truncateBytes(reason, TERMINATION_MESSAGE_LIMIT - 64),
      });
      await writeFile(terminationPath, message).catch(() => {});
    }
    return 1;
  } finally {
    await client?.close();
  }
}
