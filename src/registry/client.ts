// A small OCI Distribution client: manifests GET/HEAD/PUT and blob GET/HEAD in one
// repository, with authentication, TLS, retries and digest checks. What `assemble` needs,
// and no more.
import type { Response } from "undici";
import { type Action, Authenticator, repositoryScope } from "./auth.ts";
import { CredentialStore } from "./credentials.ts";
import { isSha256Digest, sha256Digest } from "./digest.ts";
import { describeErrorBody, RegistryError } from "./errors.ts";
import { type Logger, redactingLogger, silentLogger } from "./logger.ts";
import { isImageManifestMediaType, isIndexMediaType, MANIFEST_ACCEPT } from "./media-types.ts";
import { Redactor } from "./redact.ts";
import type { Repository } from "./reference.ts";
import type { RetryPolicy } from "./retry.ts";
import { discard, readBody, readText, Transport } from "./transport.ts";

/** Registries must accept manifests of at least 4 MiB; we read no larger one. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
export const MAX_CONFIG_BYTES = 8 * 1024 * 1024;

export interface RegistryClientOptions {
  /** A docker config directory (or file); absent means anonymous access. */
  dockerConfig?: string;
  /** Or credentials already loaded (tests); they must have been loaded with `redactor`. */
  credentials?: CredentialStore;
  redactor?: Redactor;
  insecureHosts?: readonly string[];
  caFile?: string;
  retry?: Partial<RetryPolicy>;
  timeoutMs?: number;
  userAgent?: string;
  logger?: Logger;
}

export interface Manifest {
  digest: string;
  mediaType: string;
  size: number;
  bytes: Uint8Array;
  /** The parsed JSON document. */
  json: Record<string, unknown>;
}

export interface ManifestHead {
  digest: string | undefined;
  mediaType: string | undefined;
  size: number | undefined;
}

export class RegistryClient {
  readonly #transport: Transport;
  readonly #auth: Authenticator;
  readonly #logger: Logger;
  readonly redactor: Redactor;

  private constructor(
    transport: Transport,
    auth: Authenticator,
    logger: Logger,
    redactor: Redactor,
  ) {
    this.#transport = transport;
    this.#auth = auth;
    this.#logger = logger;
    this.redactor = redactor;
  }

  static async create(options: RegistryClientOptions = {}): Promise<RegistryClient> {
    const redactor = options.redactor ?? new Redactor();
    const logger = redactingLogger(options.logger ?? silentLogger, redactor);
    const credentials =
      options.credentials ??
      (options.dockerConfig !== undefined
        ? await CredentialStore.load(options.dockerConfig, redactor, logger)
        : CredentialStore.empty());
    const transport = await Transport.create({
      logger,
      ...(options.insecureHosts ? { insecureHosts: options.insecureHosts } : {}),
      ...(options.caFile ? { caFile: options.caFile } : {}),
      ...(options.retry ? { retry: options.retry } : {}),
      ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
      ...(options.userAgent ? { userAgent: options.userAgent } : {}),
    });
    const auth = new Authenticator({ credentials, transport, redactor, logger });
    return new RegistryClient(transport, auth, logger, redactor);
  }

  /** Tokens fetched so far (the Bearer flow caches them per scope). */
  get tokenRequests(): number {
    return this.#auth.tokenRequests;
  }

  async close(): Promise<void> {
    await this.#transport.close();
  }

  /** GET a manifest by tag or digest, checked against the digest asked for or announced. */
  async getManifest(repo: Repository, reference: string): Promise<Manifest> {
    const what = `manifest ${repo.name}${referenceSuffix(reference)}`;
    const response = await this.#request(repo, "pull", "GET", `manifests/${reference}`, {
      headers: { accept: MANIFEST_ACCEPT },
    });
    if (response.status !== 200) throw await this.#failure(response, repo, "pull", what);
    const bytes = await readBody(response, MAX_MANIFEST_BYTES, what);
    const digest = sha256Digest(bytes);
    this.#checkDigest(what, digest, isSha256Digest(reference) ? reference : undefined, response);

    let json: unknown;
    try {
      json = JSON.parse(Buffer.from(bytes).toString("utf8"));
    } catch {
      throw new RegistryError("protocol", `${what} is not JSON`);
    }
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      throw new RegistryError("protocol", `${what} is not a JSON object`);
    }
    const document = json as Record<string, unknown>;
    const declared = typeof document.mediaType === "string" ? document.mediaType : undefined;
    const mediaType = declared ?? contentType(response) ?? "";
    if (!isIndexMediaType(mediaType) && !isImageManifestMediaType(mediaType)) {
      throw new RegistryError(
        "protocol",
        `${what} has media type ${JSON.stringify(mediaType)}, not an OCI or Docker v2 image manifest or index`,
      );
    }
    return { digest, mediaType, size: bytes.byteLength, bytes, json: document };
  }

  /** HEAD a manifest; undefined when the registry has no such manifest. */
  async headManifest(repo: Repository, reference: string): Promise<ManifestHead | undefined> {
    const what = `manifest ${repo.name}${referenceSuffix(reference)}`;
    const response = await this.#request(repo, "pull", "HEAD", `manifests/${reference}`, {
      headers: { accept: MANIFEST_ACCEPT },
    });
    if (response.status === 404) return undefined;
    if (response.status !== 200) throw await this.#failure(response, repo, "pull", what);
    await discard(response);
    const length = Number(response.headers.get("content-length") ?? "NaN");
    return {
      digest: response.headers.get("docker-content-digest") ?? undefined,
      mediaType: contentType(response),
      size: Number.isFinite(length) ? length : undefined,
    };
  }

  /** The digest a tag (or digest) resolves to now: HEAD, or GET when HEAD does not say. */
  async resolveDigest(repo: Repository, reference: string): Promise<string | undefined> {
    const head = await this.headManifest(repo, reference);
    if (!head) return undefined;
    if (head.digest && isSha256Digest(head.digest)) return head.digest;
    return (await this.getManifest(repo, reference)).digest;
  }

  /**
   * PUT a manifest under a tag or its digest. Returns its digest, after checking that the
   * registry's Docker-Content-Digest (when it sends one) is the sha256 of the bytes sent.
   */
  async putManifest(
    repo: Repository,
    reference: string,
    bytes: Uint8Array,
    mediaType: string,
  ): Promise<string> {
    const digest = sha256Digest(bytes);
    if (isSha256Digest(reference) && reference !== digest) {
      throw new RegistryError(
        "digest",
        `cannot push content with digest ${digest} as ${reference}`,
      );
    }
    if (bytes.byteLength > MAX_MANIFEST_BYTES) {
      throw new RegistryError(
        "protocol",
        `the manifest is ${bytes.byteLength} bytes, more than registries accept`,
      );
    }
    const what = `manifest ${repo.name}${referenceSuffix(reference)}`;
    const response = await this.#request(repo, "push", "PUT", `manifests/${reference}`, {
      headers: { "content-type": mediaType },
      body: bytes,
    });
    if (response.status < 200 || response.status > 299) {
      throw await this.#failure(response, repo, "push", `pushing ${what}`);
    }
    await discard(response);
    const stored = response.headers.get("docker-content-digest");
    if (stored && stored !== digest) {
      throw new RegistryError(
        "digest",
        `pushing ${what}: the registry stored ${stored}, but the bytes sent hash to ${digest}`,
      );
    }
    this.#logger.debug(
      { manifest: `${repo.name}${referenceSuffix(reference)}`, digest },
      "pushed manifest",
    );
    return digest;
  }

  /** GET a blob (an image config), checked against its digest. */
  async getBlob(
    repo: Repository,
    digest: string,
    maxBytes = MAX_CONFIG_BYTES,
  ): Promise<Uint8Array> {
    const what = `blob ${repo.name}@${digest}`;
    const response = await this.#request(repo, "pull", "GET", `blobs/${digest}`, {});
    if (response.status !== 200) throw await this.#failure(response, repo, "pull", what);
    const bytes = await readBody(response, maxBytes, what);
    const actual = sha256Digest(bytes);
    if (actual !== digest) {
      throw new RegistryError(
        "digest",
        `${what}: the registry sent content that hashes to ${actual}`,
      );
    }
    return bytes;
  }

  async blobExists(repo: Repository, digest: string): Promise<boolean> {
    const response = await this.#request(repo, "pull", "HEAD", `blobs/${digest}`, {});
    await discard(response);
    if (response.status === 200) return true;
    if (response.status === 404) return false;
    throw await this.#failure(response, repo, "pull", `blob ${repo.name}@${digest}`);
  }

  #checkDigest(
    what: string,
    actual: string,
    requested: string | undefined,
    response: Response,
  ): void {
    if (requested && actual !== requested) {
      throw new RegistryError(
        "digest",
        `${what}: the registry sent content that hashes to ${actual}`,
      );
    }
    const announced = response.headers.get("docker-content-digest");
    if (announced && isSha256Digest(announced) && announced !== actual) {
      throw new RegistryError(
        "digest",
        `${what}: the registry announced ${announced}, but the content hashes to ${actual}`,
      );
    }
  }

  /** A request with authentication: anonymous or cached credentials first, one retry after a 401. */
  async #request(
    repo: Repository,
    action: Action,
    method: "GET" | "HEAD" | "PUT",
    path: string,
    init: { headers?: Record<string, string>; body?: Uint8Array },
  ): Promise<Response> {
    const url = `${this.#transport.origin(repo.host)}/v2/${repo.path}/${path}`;
    const scope = repositoryScope(repo.path, action);
    let authorization = await this.#auth.authorization(repo.registry, repo.host, scope);
    for (let round = 0; ; round++) {
      const headers = { ...init.headers, ...(authorization ? { authorization } : {}) };
      const response = await this.#transport.send(url, {
        method,
        headers,
        ...(init.body ? { body: init.body } : {}),
      });
      if (response.status !== 401) return response;
      const header = response.headers.get("www-authenticate");
      if (round > 0) {
        const detail = describeErrorBody(this.redactor.redact(await readText(response)));
        throw this.#auth.rejected(repo.registry, repo.host, scope, authorization, detail);
      }
      await discard(response);
      await this.#auth.challenge(repo.registry, repo.host, scope, header, authorization);
      authorization = await this.#auth.authorization(repo.registry, repo.host, scope);
    }
  }

  /** The error for an unexpected answer: what failed, the registry's reason, what to do. */
  async #failure(
    response: Response,
    repo: Repository,
    action: Action,
    what: string,
  ): Promise<RegistryError> {
    const body = response.status >= 400 ? await readText(response) : "";
    await discard(response);
    const detail = describeErrorBody(this.redactor.redact(body));
    const reason = `${response.status}${detail ? ` ${detail}` : ""}`;
    const credential = this.#auth.credentialFor(repo.registry);
    const who = credential
      ? `the credentials for ${repo.registry} from ${this.#auth.source}`
      : `anonymous access (${this.#auth.source} has no credentials for ${repo.registry})`;
    switch (response.status) {
      case 401:
        return new RegistryError(
          "unauthorized",
          `${what}: ${repo.host} refused ${who} to ${action} (${reason})`,
          401,
        );
      case 403:
        return new RegistryError(
          "denied",
          `${what}: ${repo.host} denied ${who} to ${action} (${reason})`,
          403,
        );
      case 404:
        return new RegistryError("not-found", `${what} does not exist (${reason})`, 404);
      default:
        return new RegistryError(
          response.status === 429 || response.status >= 500 ? "unavailable" : "protocol",
          `${what}: ${repo.host} answered ${reason}`,
          response.status,
        );
    }
  }
}

function referenceSuffix(reference: string): string {
  return isSha256Digest(reference) ? `@${reference}` : `:${reference}`;
}

function contentType(response: Response): string | undefined {
  return response.headers.get("content-type")?.split(";")[0]?.trim() || undefined;
}
