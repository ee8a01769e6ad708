// Errors of the registry client. Each message says what failed and what to do about it,
// and has passed through the Redactor before it is built (see client.ts).

export type RegistryErrorKind =
  /** 401 after credentials (or none) were offered: wrong or missing credentials. */
  | "unauthorized"
  /** 403: the credentials are valid but may not do this. */
  | "denied"
  | "not-found"
  /** The registry answered with something other than what the protocol promises. */
  | "protocol"
  /** Content does not hash to the digest it was asked for or claimed. */
  | "digest"
  /** The registry could not be reached, or kept failing after the retries. */
  | "unavailable"
  | "config";

export class RegistryError extends Error {
  override name = "RegistryError";
  readonly kind: RegistryErrorKind;
  readonly status: number | undefined;

  constructor(kind: RegistryErrorKind, message: string, status?: number) {
    super(message);
    this.kind = kind;
    this.status = status;
  }
}

/**
 * Failures about the registry rather than one manifest (unreachable, credentials, local
 * configuration): the same for every input, so reported once and without an input's name.
 */
export function isRegistryWide(kind: RegistryErrorKind): boolean {
  return (
    kind === "unavailable" || kind === "unauthorized" || kind === "denied" || kind === "config"
  );
}

/** The `errors` array of a Distribution API error body, as one short line. */
export function describeErrorBody(body: string): string {
  try {
    const parsed = JSON.parse(body) as { errors?: { code?: unknown; message?: unknown }[] };
    const parts = (parsed.errors ?? [])
      .map((error) =>
        [error.code, error.message].filter((part) => typeof part === "string" && part).join(": "),
      )
      .filter((part) => part.length > 0);
    if (parts.length > 0) return truncate(parts.join("; "), 300);
  } catch {
    // not JSON: fall through to the raw text
  }
  return truncate(body.replace(/\s+/g, " ").trim(), 200);
}

function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
