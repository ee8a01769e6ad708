// HTTP for the registry client: one undici Agent that trusts the system CAs plus an optional
// CA bundle, plain HTTP only for hosts named insecure, and retries of 429/5xx answers and
// network errors with bounded backoff.
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { getCACertificates } from "node:tls";
import { Agent, type Dispatcher, fetch, type Response } from "undici";
import { RegistryError } from "./errors.ts";
import type { Logger } from "./logger.ts";
import {
  DEFAULT_RETRY,
  isRetryableStatus,
  parseRetryAfter,
  type RetryPolicy,
  retryDelay,
} from "./retry.ts";

export interface TransportOptions {
  /** host[:port] values reached over plain HTTP; every other host over verified HTTPS. */
  insecureHosts?: readonly string[];
  /** PEM bundle trusted in addition to the system CAs. */
  caFile?: string;
  retry?: Partial<RetryPolicy>;
  /** Per request, headers and body included. */
  timeoutMs?: number;
  userAgent?: string;
  logger: Logger;
}

export interface SendOptions {
  method: "GET" | "HEAD" | "PUT" | "POST";
  headers?: Record<string, string>;
  body?: Uint8Array | string;
}

export class Transport {
  readonly #dispatcher: Dispatcher;
  readonly #insecure: Set<string>;
  readonly #retry: RetryPolicy;
  readonly #timeoutMs: number;
  readonly #userAgent: string;
  readonly #logger: Logger;

  private constructor(dispatcher: Dispatcher, options: TransportOptions) {
    this.#dispatcher = dispatcher;
    this.#insecure = new Set((options.insecureHosts ?? []).map((host) => host.toLowerCase()));
    this.#retry = { ...DEFAULT_RETRY, ...options.retry };
    this.#timeoutMs = options.timeoutMs ?? 60_000;
    this.#userAgent = options.userAgent ?? "buildfarm";
    this.#logger = options.logger;
  }

  static async create(options: TransportOptions): Promise<Transport> {
    const ca = new Set([...getCACertificates("default"), ...systemCertificates()]);
    if (options.caFile) {
      let pem: string;
      try {
        pem = await readFile(options.caFile, "utf8");
      } catch (error) {
        throw new RegistryError(
          "config",
          `cannot read the CA file ${options.caFile}: ${(error as Error).message}`,
        );
      }
      if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
        throw new RegistryError("config", `the CA file ${options.caFile} holds no PEM certificate`);
      }
      ca.add(pem);
    }
    const agent = new Agent({ connect: { ca: [...ca] }, keepAliveTimeout: 10_000 });
    return new Transport(agent, options);
  }

  isInsecure(host: string): boolean {
    return this.#insecure.has(host.toLowerCase());
  }

  /** `https://host` or, for a host named insecure, `http://host`. */
  origin(host: string): string {
    return `${this.isInsecure(host) ? "http" : "https"}://${host}`;
  }

  /**
   * One request, retried on network errors and 429/5xx answers. The last answer is returned
   * whatever its status; only a network failure after the last attempt throws.
   */
  async send(url: string, options: SendOptions): Promise<Response> {
    const headers = { "user-agent": this.#userAgent, ...options.headers };
    const what = `${options.method} ${redactQuery(url)}`;
    for (let attempt = 1; ; attempt++) {
      let response: Response;
      try {
        response = await fetch(url, {
          method: options.method,
          headers,
          body: options.body ?? null,
          dispatcher: this.#dispatcher,
          redirect: "follow",
          signal: AbortSignal.timeout(this.#timeoutMs),
        });
      } catch (error) {
        const failure = describeNetworkError(error);
        if (!failure.retryable || attempt >= this.#retry.attempts) {
          const tries = attempt > 1 ? ` (after ${attempt} attempts)` : "";
          throw new RegistryError("unavailable", `${what} failed: ${failure.message}${tries}`);
        }
        const delayMs = retryDelay(this.#retry, attempt, undefined);
        this.#logger.warn(
          { request: what, attempt, delayMs, error: failure.message },
          "registry unreachable, retrying",
        );
        await sleep(delayMs);
        continue;
      }
      if (isRetryableStatus(response.status) && attempt < this.#retry.attempts) {
        const retryAfterMs = parseRetryAfter(response.headers.get("retry-after"));
        const delayMs = retryDelay(this.#retry, attempt, retryAfterMs);
        await discard(response);
        this.#logger.warn(
          {
            request: what,
            status: response.status,
            attempt,
            delayMs,
            ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
          },
          "registry busy, retrying",
        );
        await sleep(delayMs);
        continue;
      }
      return response;
    }
  }

  async close(): Promise<void> {
    await this.#dispatcher.close();
  }
}

/** The system trust store, where this Node can read it; the bundled CAs otherwise suffice. */
function systemCertificates(): string[] {
  try {
    return getCACertificates("system");
  } catch {
    return [];
  }
}

/** Reads a body, refusing one larger than `maxBytes` (a manifest is at most a few MiB). */
export async function readBody(
  response: Response,
  maxBytes: number,
  what: string,
): Promise<Uint8Array> {
  const declared = Number(response.headers.get("content-length") ?? "NaN");
  if (Number.isFinite(declared) && declared > maxBytes) {
    await discard(response);
    throw new RegistryError(
      "protocol",
      `${what} is ${declared} bytes, more than the ${maxBytes} accepted`,
    );
  }
  if (!response.body) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of response.body) {
    total += chunk.byteLength;
    if (total > maxBytes) {
      throw new RegistryError("protocol", `${what} is more than the ${maxBytes} bytes accepted`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

export async function readText(response: Response, maxBytes = 64 * 1024): Promise<string> {
  try {
    return Buffer.from(await readBody(response, maxBytes, "the error body")).toString("utf8");
  } catch {
    return "";
  }
}

export async function discard(response: Response): Promise<void> {
  try {
    await response.body?.cancel();
  } catch {
    // already consumed or closed
  }
}

/** Drops a URL's query, where a token realm may carry an account name. */
function redactQuery(url: string): string {
  const q = url.indexOf("?");
  return q < 0 ? url : `${url.slice(0, q)}?…`;
}

const TLS_TRUST_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_UNTRUSTED",
  "UNABLE_TO_GET_ISSUER_CERT",
]);

/** What a person can act on, and whether trying again could help. */
export function describeNetworkError(error: unknown): { message: string; retryable: boolean } {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } })?.cause;
  const code = typeof cause?.code === "string" ? cause.code : undefined;
  const detail =
    typeof cause?.message === "string"
      ? cause.message
      : ((error as Error)?.message ?? String(error));
  if ((error as Error)?.name === "TimeoutError") return { message: "timed out", retryable: true };
  if (code && TLS_TRUST_CODES.has(code)) {
    return {
      message: `the registry's TLS certificate is not trusted (${code}); pass its CA with --ca-file`,
      retryable: false,
    };
  }
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
    return {
      message: `the registry's TLS certificate does not name this host (${detail})`,
      retryable: false,
    };
  }
  if (code === "CERT_HAS_EXPIRED") {
    return { message: "the registry's TLS certificate has expired", retryable: false };
  }
  if (code === "ERR_SSL_WRONG_VERSION_NUMBER" || /wrong version number/i.test(detail)) {
    return {
      message:
        "the registry did not answer TLS; if it serves plain HTTP, name it with --insecure-registry",
      retryable: false,
    };
  }
  return {
    message: code ? `${code}: ${detail}` : detail,
    retryable: code !== undefined && TRANSIENT_CODES.has(code),
  };
}

/** Network failures that another attempt may not meet. */
const TRANSIENT_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "ENOTFOUND",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_CLOSED",
]);
