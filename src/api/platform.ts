// Platforms, one set of rules for the build side (spec.platforms, admission, the Jobs, the
// metadata a platform pod reports, `buildfarm logs`) and the registry side (assemble's
// --digest and its checks of what each digest names). Two spellings of one platform compare
// equal as containerd's platforms.Normalize has them: `linux/arm64/v8` is `linux/arm64`,
// `linux/arm` is `linux/arm/v7`, `linux/amd64/v1` is `linux/amd64`, and the aliases other tools
// write in descriptors (aarch64, x86_64, armhf...) are the Go names.
import { z } from "zod";

/** The architectures a pool may declare (Go's GOARCH names, as kubernetes.io/arch has them). */
export const ARCHITECTURES = [
  "amd64",
  "arm64",
  "arm",
  "ppc64le",
  "s390x",
  "riscv64",
  "386",
] as const;
export type Architecture = (typeof ARCHITECTURES)[number];

/** What spec.platforms (of a build, or of a pool's architecture) accepts. */
export const PLATFORM = /^linux\/(amd64|arm64|arm|ppc64le|s390x|riscv64|386)(\/v[0-9])?$/;
export const platform = z
  .string()
  .max(32)
  .regex(PLATFORM, { message: "must be os/arch[/variant], e.g. linux/arm64 or linux/arm/v7" });

/**
 * What `assemble --digest` accepts before the '=': any os/arch[/variant], lower-case, since the
 * command also assembles images built elsewhere. Every string PLATFORM accepts passes it.
 */
export const PLATFORM_SPEC = /^[a-z0-9_-]+\/[a-z0-9_-]+(\/[a-z0-9_.-]+)?$/;

/** A platform as OCI descriptors carry it. A type alias, so it fits the loose zod descriptor type. */
export type Platform = {
  os: string;
  architecture: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
};

/** The os and architecture BuildKit gives attestation manifests in an index. */
export const UNKNOWN = "unknown";

export function parsePlatform(text: string): Platform {
  if (!PLATFORM_SPEC.test(text)) {
    throw new Error(
      `${JSON.stringify(text)} is not a platform: use os/arch[/variant], e.g. linux/arm64`,
    );
  }
  const [os, architecture, variant] = text.split("/") as [string, string, string | undefined];
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

/** `linux/arm/v7`; os.version and os.features are not part of the short form. */
export function formatPlatform(platform: Platform): string {
  const base = `${platform.os}/${platform.architecture}`;
  return platform.variant ? `${base}/${platform.variant}` : base;
}

export function isUnknownPlatform(platform: Platform): boolean {
  return platform.os === UNKNOWN || platform.architecture === UNKNOWN;
}

const ARCH_ALIASES: Record<string, { architecture: string; variant?: string }> = {
  i386: { architecture: "386" },
  x86_64: { architecture: "amd64" },
  "x86-64": { architecture: "amd64" },
  aarch64: { architecture: "arm64" },
  armhf: { architecture: "arm", variant: "v7" },
  armel: { architecture: "arm", variant: "v6" },
};

/**
 * The comparable form: lower-case, Go architecture names, default variants dropped (arm64 v8,
 * amd64 v1) and arm's implied v7 spelled out; os.version and os.features left out.
 */
export function normalizePlatform(platform: Platform): Platform {
  const os = platform.os.toLowerCase();
  let architecture = platform.architecture.toLowerCase();
  let variant = (platform.variant ?? "").toLowerCase();
  const alias = ARCH_ALIASES[architecture];
  if (alias) {
    architecture = alias.architecture;
    if (alias.variant && variant === "") variant = alias.variant;
  }
  if (architecture === "arm64" && (variant === "v8" || variant === "8")) variant = "";
  if (architecture === "arm" && variant === "") variant = "v7";
  if (architecture === "arm" && /^[5-8]$/.test(variant)) variant = `v${variant}`;
  if (architecture === "amd64" && variant === "v1") variant = "";
  return variant === "" ? { os, architecture } : { os, architecture, variant };
}

/** A key that two platforms share exactly when samePlatform says they are the same. */
export function platformKey(platform: Platform): string {
  const { os, architecture, variant } = normalizePlatform(platform);
  return `${os}/${architecture}/${variant ?? ""}`;
}

/** Same os, architecture and variant after normalisation. */
export function samePlatform(a: Platform, b: Platform): boolean {
  return platformKey(a) === platformKey(b);
}

/** The canonical spelling of an os/arch[/variant] string: `linux/arm` is `linux/arm/v7`. */
export function canonicalPlatform(text: string): string {
  return formatPlatform(normalizePlatform(parsePlatform(text)));
}

/**
 * The platform's name in Job names, cache refs and the platform label: the architecture, with
 * a non-default variant after a dash (`amd64`, `arm64`, `arm-v7`). Only linux platforms pass
 * the schema, so the OS is left out.
 */
export function platformSlug(text: string): string {
  const { architecture, variant } = normalizePlatform(parsePlatform(text));
  return variant === undefined ? architecture : `${architecture}-${variant}`;
}

/** One entry of spec.platforms: as written, and the slug that names its Job and cache ref. */
export interface SpecPlatform {
  platform: string;
  slug: string;
}

/** The build's platforms in spec order, each with its slug: derived once, then carried. */
export function specPlatforms(platforms: readonly string[]): SpecPlatform[] {
  return platforms.map((platform) => ({ platform, slug: platformSlug(platform) }));
}
