// Platforms as OCI descriptors carry them, and the normalisation containerd applies before
// comparing two of them (linux/arm64 is linux/arm64/v8, linux/arm is linux/arm/v7).

// A type alias rather than an interface, so that it fits the loose zod descriptor type.
export type Platform = {
  os: string;
  architecture: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
};

/** What `--digest` accepts before the '=': os/arch[/variant], lower-case. */
export const PLATFORM_SPEC = /^[a-z0-9_-]+\/[a-z0-9_-]+(\/[a-z0-9_.-]+)?$/;

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

/** The comparable form: lower-case, Go architecture names, default variants spelled out. */
export function normalizePlatform(platform: Platform): {
  os: string;
  architecture: string;
  variant: string;
} {
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
  return { os, architecture, variant };
}

/** Same os, architecture and variant after normalisation. */
export function samePlatform(a: Platform, b: Platform): boolean {
  const x = normalizePlatform(a);
  const y = normalizePlatform(b);
  return x.os === y.os && x.architecture === y.architecture && x.variant === y.variant;
}

/** A key that two platforms share exactly when samePlatform says they are the same. */
export function platformKey(platform: Platform): string {
  const { os, architecture, variant } = normalizePlatform(platform);
  return `${os}/${architecture}/${variant}`;
}
