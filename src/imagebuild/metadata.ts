// Reading what the pods report. A platform pod's `report` container carries buildctl's
// --metadata-file as its termination message; the index pod carries `buildfarm assemble`'s
// one JSON line (read in assemble-contract.ts, with parseObject); a failed buildctl carries the tail of its log (FallbackToLogsOnError: at
// most 2048 bytes or 80 lines). The kubelet keeps at most the last 4096 bytes of a
// termination message file, so a message that does not start with `{` was cut or garbled.
//
// Metadata keys (BuildKit v0.24, seen from real builds): containerimage.digest,
// containerimage.descriptor {mediaType, digest, size, platform}, containerimage.config.digest,
// image.name, and cache.manifest when the registry cache was exported. With ignore-error=true
// a refused cache export leaves cache.manifest out and buildctl still exits 0; the registry's
// words are only in the build log, as `#N ERROR: …` under the `#N exporting cache to
// registry` step (solver/llbsolver/solver.go runCacheExporters swallows the error).
import { formatPlatform, normalizePlatform, parsePlatform, samePlatform } from "../api/platform.ts";

export const DIGEST = /^sha256:[a-f0-9]{64}$/;

const MANIFEST_TYPES = new Set([
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
]);

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
}

export interface BuildMetadata {
  /** containerimage.digest: the image manifest, or an index when attestations are on. */
  digest: string;
  descriptor: Descriptor;
  /** Whether the metadata reports an exported registry cache (cache.manifest). */
  cacheExported: boolean;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

const MAX_QUOTE = 200;

function quote(text: string): string {
  const trimmed = text.length > MAX_QUOTE ? `${text.slice(0, MAX_QUOTE)}…` : text;
  return JSON.stringify(trimmed);
}

/** One JSON object from a termination message, or why it is not one. */
export function parseObject(
  message: string | undefined,
  what: string,
): Parsed<Record<string, unknown>> {
  const text = (message ?? "").trim();
  if (text === "") return { ok: false, error: `${what} is empty` };
  if (!text.startsWith("{")) {
    return {
      ok: false,
      error: `${what} is not JSON (cut at the kubelet's 4096-byte limit, or garbled): ${quote(text)}`,
    };
  }
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return { ok: false, error: `${what} is not a JSON object: ${quote(text)}` };
    }
    return { ok: true, value: value as Record<string, unknown> };
  } catch {
    return {
      ok: false,
      error: `${what} is truncated or garbled JSON (${text.length} bytes): ${quote(text)}`,
    };
  }
}

function descriptorOf(value: unknown): Descriptor | string {
  if (typeof value !== "object" || value === null) return "has no containerimage.descriptor";
  const d = value as Record<string, unknown>;
  if (typeof d.mediaType !== "string" || !MANIFEST_TYPES.has(d.mediaType)) {
    return `has an unexpected descriptor media type ${quote(String(d.mediaType))}`;
  }
  if (typeof d.digest !== "string" || !DIGEST.test(d.digest))
    return "has no valid descriptor digest";
  if (typeof d.size !== "number" || !Number.isInteger(d.size) || d.size <= 0) {
    return "has no valid descriptor size";
  }
  const descriptor: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  const platform = d.platform as Record<string, unknown> | undefined;
  if (platform && typeof platform.os === "string" && typeof platform.architecture === "string") {
    descriptor.platform = {
      os: platform.os,
      architecture: platform.architecture,
      ...(typeof platform.variant === "string" ? { variant: platform.variant } : {}),
    };
  }
  return descriptor;
}

/**
 * Parses buildctl's metadata for one platform. A descriptor that names another platform
 * than the one requested is an error: the build ran on, or for, the wrong builder.
 */
export function parseBuildMetadata(
  message: string | undefined,
  platform: string,
): Parsed<BuildMetadata> {
  const what = `the ${platform} build's metadata`;
  const parsed = parseObject(message, what);
  if (!parsed.ok) return parsed;
  const metadata = parsed.value;
  const digest = metadata["containerimage.digest"];
  if (typeof digest !== "string" || !DIGEST.test(digest)) {
    return { ok: false, error: `${what} has no valid containerimage.digest` };
  }
  const descriptor = descriptorOf(metadata["containerimage.descriptor"]);
  if (typeof descriptor === "string") return { ok: false, error: `${what} ${descriptor}` };
  if (descriptor.digest !== digest) {
    return { ok: false, error: `${what} names two digests: ${digest} and ${descriptor.digest}` };
  }
  // The same comparison as assemble's, which checks the pushed image against this platform.
  if (descriptor.platform && !samePlatform(descriptor.platform, parsePlatform(platform))) {
    const built = formatPlatform(normalizePlatform(descriptor.platform));
    return { ok: false, error: `${what} says it built ${built}, not ${platform}` };
  }
  return {
    ok: true,
    value: {
      digest,
      descriptor,
      cacheExported: typeof metadata["cache.manifest"] === "string",
    },
  };
}

/** BuildKit's progress lines: `#7 exporting cache to registry`, `#7 ERROR: …`. */
const STEP = /^#(\d+) (.*)$/;

/**
 * The registry's message for a refused cache export, from a buildctl log (--progress plain).
 * Cache import errors (a missing cache on the first build) are not export errors.
 */
export function cacheExportError(log: string): string | undefined {
  const exportSteps = new Set<string>();
  let error: string | undefined;
  for (const line of log.split("\n")) {
    const match = STEP.exec(line.trimEnd());
    if (!match) continue;
    const [, step, text] = match as unknown as [string, string, string];
    if (/^exporting cache\b/.test(text)) exportSteps.add(step);
    else if (exportSteps.has(step) && text.startsWith("ERROR: ")) error = text.slice(7);
  }
  return error;
}

/** How much of a log tail a platform's status message keeps. */
export const MAX_FAILURE_MESSAGE = 2048;

/**
 * A failed build's message: buildctl's final `error:` line first (what went wrong), then the
 * last lines of the log (where), capped.
 */
export function failureMessage(tail: string | undefined, fallback: string): string {
  const text = (tail ?? "").replace(/\r/g, "").trimEnd();
  if (text === "") return fallback;
  const lines = text.split("\n");
  const headline = [...lines].reverse().find((line) => line.startsWith("error: "));
  const body = headline ? `${headline.slice(7)}\n--- log tail ---\n${text}` : text;
  if (body.length <= MAX_FAILURE_MESSAGE) return body;
  const head = headline ? `${headline.slice(7)}\n--- log tail ---\n` : "";
  const room = MAX_FAILURE_MESSAGE - head.length - 1;
  return room > 0 ? `${head}…${text.slice(-room)}` : head.slice(0, MAX_FAILURE_MESSAGE);
}
