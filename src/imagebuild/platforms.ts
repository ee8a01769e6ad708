// Platforms as BuildKit and containerd compare them, and the label-safe slug that names a
// platform's Job and cache ref. `linux/arm64/v8` is `linux/arm64`, `linux/arm` is
// `linux/arm/v7` and `linux/amd64/v1` is `linux/amd64` (containerd's platforms.Normalize), so
// a spec and a pool that spell one platform two ways still meet.

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** Splits an `os/arch[/variant]` string the schema accepted. */
export function parsePlatform(text: string): Platform {
  const [os = "", architecture = "", variant] = text.split("/");
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

/** The canonical form: default variants dropped (arm64 v8, amd64 v1), arm's implied v7 added. */
export function normalizePlatform(text: string): string {
  const { os, architecture, variant } = parsePlatform(text);
  let normalized = variant;
  if (architecture === "arm64" && variant === "v8") normalized = undefined;
  if (architecture === "amd64" && variant === "v1") normalized = undefined;
  if (architecture === "arm" && variant === undefined) normalized = "v7";
  return normalized === undefined ? `${os}/${architecture}` : `${os}/${architecture}/${normalized}`;
}

/**
 * The platform's name in Job names, cache refs and the platform label: the architecture, with
 * a non-default variant after a dash (`amd64`, `arm64`, `arm-v7`). Only linux platforms pass
 * the schema, so the OS is left out.
 */
export function platformSlug(text: string): string {
  const { architecture, variant } = parsePlatform(normalizePlatform(text));
  return variant === undefined ? architecture : `${architecture}-${variant}`;
}
