// Secrets never reach a log line or an error message: every text that leaves the client
// passes through the Redactor, which knows each credential and token the client holds.

export const REDACTED = "[redacted]";

export class Redactor {
  readonly #secrets = new Set<string>();

  /** Remembers a secret (and its common encodings) so that redact() removes it. */
  add(secret: string | undefined): void {
    if (!secret) return;
    this.#secrets.add(secret);
    const encoded = encodeURIComponent(secret);
    if (encoded !== secret) this.#secrets.add(encoded);
  }

  redact(text: string): string {
    let out = text;
    // Longest first, so that a secret containing another is removed whole.
    for (const secret of [...this.#secrets].sort((a, b) => b.length - a.length)) {
      out = out.split(secret).join(REDACTED);
    }
    return out;
  }

  /** Redacts every string inside a log record's fields. */
  redactFields(fields: Record<string, unknown>): Record<string, unknown> {
    if (this.#secrets.size === 0) return fields;
    return JSON.parse(this.redact(JSON.stringify(fields))) as Record<string, unknown>;
  }
}
