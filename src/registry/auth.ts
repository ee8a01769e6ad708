// Registry authentication: Basic, and the Bearer token flow of the Distribution token spec
// (`WWW-Authenticate: Bearer realm,service,scope` → token from the realm → retry). What a
// registry asked for once is remembered per host, and tokens are cached per scope, so later
// requests carry the right Authorization from the start.
import { z } from "zod";
import { type Challenge, parseWwwAuthenticate } from "./challenge.ts";
import { basicToken, type Credential, type CredentialStore } from "./credentials.ts";
import { describeErrorBody, RegistryError } from "./errors.ts";
import type { Logger } from "./logger.ts";
import type { Redactor } from "./redact.ts";
import { readBody, readText, type Transport } from "./transport.ts";

export type Action = "pull" | "push";

/** `repository:team/app:pull` or `repository:team/app:pull,push`. */
export function repositoryScope(path: string, action: Action): string {
  return `repository:${path}:${action === "push" ? "pull,push" : "pull"}`;
}

type HostState =
  | { scheme: "basic" }
  | { scheme: "bearer"; realm: string; service: string | undefined };

interface CachedToken {
  token: string;
  expiresAt: number;
}

const tokenResponse = z
  .object({
    token: z.string().optional(),
    access_token: z.string().optional(),
    expires_in: z.number().optional(),
  })
  .loose();

/** Tokens are refreshed this long before they expire. */
const EXPIRY_SKEW_MS = 10_000;
/** The token spec's floor: a token without expires_in lives 60 s. */
const MIN_TOKEN_LIFETIME_S = 60;

export interface AuthenticatorOptions {
  credentials: CredentialStore;
  transport: Transport;
  redactor: Redactor;
  logger: Logger;
  now?: () => number;
}

export class Authenticator {
  readonly #hosts = new Map<string, HostState>();
  readonly #tokens = new Map<string, CachedToken>();
  readonly #inflight = new Map<string, Promise<string>>();
  readonly #options: AuthenticatorOptions;
  readonly #now: () => number;
  /** How many tokens were fetched, for tests and logs. */
  tokenRequests = 0;

  constructor(options: AuthenticatorOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Where the credentials come from, for messages. */
  get source(): string {
    return this.#options.credentials.source ?? "the docker config";
  }

  credentialFor(registry: string): Credential | undefined {
    return this.#options.credentials.lookup(registry);
  }

  /**
   * The Authorization header for a request, from what this host's earlier challenges taught;
   * undefined before the first challenge (the request then goes anonymous and learns).
   */
  async authorization(registry: string, host: string, scope: string): Promise<string | undefined> {
    const state = this.#hosts.get(host);
    if (!state) return undefined;
    const credential = this.credentialFor(registry);
    if (state.scheme === "basic") {
      return credential?.password !== undefined
        ? `Basic ${basicToken(credential.username ?? "", credential.password)}`
        : undefined;
    }
    if (credential?.registryToken) return `Bearer ${credential.registryToken}`;
    const cached = this.#cachedToken(state, scope);
    if (cached) return `Bearer ${cached}`;
    return `Bearer ${await this.#fetchToken(registry, host, state, [scope])}`;
  }

  /**
   * Learns from a 401 answer. Returns when a retry with the next authorization() may succeed;
   * throws a RegistryError saying what to fix when it cannot.
   */
  async challenge(
    registry: string,
    host: string,
    scope: string,
    header: string | null,
    sent: string | undefined,
  ): Promise<void> {
    const challenges = parseWwwAuthenticate(header);
    const bearer = challenges.find((c) => c.scheme === "bearer");
    const basic = challenges.find((c) => c.scheme === "basic");
    const credential = this.credentialFor(registry);

    if (bearer) {
      const state = this.#bearerState(host, bearer);
      this.#hosts.set(host, state);
      if (sent?.startsWith("Bearer ")) this.#forget(state, scope, sent.slice("Bearer ".length));
      if (credential?.registryToken) {
        if (sent) throw this.#refused(registry, host, "the registrytoken");
        return;
      }
      // Another request may have fetched a fresh token meanwhile.
      if (this.#cachedToken(state, scope)) return;
      const scopes = [scope, ...(bearer.params.scope ? bearer.params.scope.split(" ") : [])];
      await this.#fetchToken(registry, host, state, [...new Set(scopes)]);
      return;
    }
    if (basic) {
      this.#hosts.set(host, { scheme: "basic" });
      if (credential?.password === undefined) {
        throw new RegistryError(
          "unauthorized",
          `${host} asks for a username and password, and ${this.source} has no "auths" entry for ${registry}`,
          401,
        );
      }
      if (sent?.startsWith("Basic "))
        throw this.#refused(registry, host, "the username and password");
      return;
    }
    const schemes = challenges.map((c) => c.scheme).join(", ") || "none";
    throw new RegistryError(
      "unauthorized",
      `${host} answered 401 with no Basic or Bearer challenge (schemes: ${schemes})`,
      401,
    );
  }

  #refused(registry: string, host: string, what: string): RegistryError {
    return new RegistryError(
      "unauthorized",
      `${host} refused ${what} for ${registry} from ${this.source} (401): check them`,
      401,
    );
  }

  /** The error for a 401 that a retry with fresh authorization did not cure. */
  rejected(
    registry: string,
    host: string,
    scope: string,
    sent: string | undefined,
    detail: string,
  ): RegistryError {
    const why = detail ? `: ${detail}` : "";
    if (sent?.startsWith("Basic "))
      return this.#refused(registry, host, "the username and password");
    const who = this.credentialFor(registry)
      ? `the credentials for ${registry} from ${this.source}`
      : `anonymous access (${this.source} has no credentials for ${registry})`;
    if (sent?.startsWith("Bearer ")) {
      return new RegistryError(
        "unauthorized",
        `${host} refused the token for ${scope} issued to ${who} (401${why}); do they have that access?`,
        401,
      );
    }
    return new RegistryError("unauthorized", `${host} refused ${who} to ${scope} (401${why})`, 401);
  }

  #bearerState(host: string, challenge: Challenge): HostState & { scheme: "bearer" } {
    const realm = challenge.params.realm;
    if (!realm)
      throw new RegistryError("protocol", `${host} sent a Bearer challenge without a realm`, 401);
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new RegistryError("protocol", `${host} sent a Bearer realm that is not a URL`, 401);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw new RegistryError("protocol", `${host} sent a Bearer realm that is not http(s)`, 401);
    }
    if (url.protocol === "http:" && !this.#options.transport.isInsecure(url.host)) {
      throw new RegistryError(
        "config",
        `${host}'s token service ${url.origin} is plain HTTP; buildfarm uses plain HTTP only for hosts named with --insecure-registry`,
      );
    }
    return { scheme: "bearer", realm, service: challenge.params.service };
  }

  #key(state: HostState & { scheme: "bearer" }, scope: string): string {
    return `${state.realm}\n${state.service ?? ""}\n${scope}`;
  }

  #cachedToken(state: HostState & { scheme: "bearer" }, scope: string): string | undefined {
    // A pull,push token serves a pull as well.
    const candidates = scope.endsWith(":pull") ? [scope, `${scope},push`] : [scope];
    for (const candidate of candidates) {
      const cached = this.#tokens.get(this.#key(state, candidate));
      if (cached && cached.expiresAt > this.#now()) return cached.token;
    }
    return undefined;
  }

  /** Drops a token the registry refused, unless it was already replaced. */
  #forget(state: HostState & { scheme: "bearer" }, scope: string, refused: string): void {
    for (const candidate of scope.endsWith(":pull") ? [scope, `${scope},push`] : [scope]) {
      const key = this.#key(state, candidate);
      if (this.#tokens.get(key)?.token === refused) this.#tokens.delete(key);
    }
  }

  /** Concurrent requests that need the same token wait for one fetch. */
  #fetchToken(
    registry: string,
    host: string,
    state: HostState & { scheme: "bearer" },
    scopes: string[],
  ): Promise<string> {
    const key = this.#key(state, scopes.join(" "));
    const pending = this.#inflight.get(key);
    if (pending) return pending;
    const fetching = this.#requestToken(registry, host, state, scopes).finally(() =>
      this.#inflight.delete(key),
    );
    this.#inflight.set(key, fetching);
    return fetching;
  }

  async #requestToken(
    registry: string,
    host: string,
    state: HostState & { scheme: "bearer" },
    scopes: string[],
  ): Promise<string> {
    const { transport, logger, redactor } = this.#options;
    const credential = this.credentialFor(registry);
    const url = new URL(state.realm);
    const headers: Record<string, string> = { accept: "application/json" };
    let response: Awaited<ReturnType<Transport["send"]>>;
    this.tokenRequests++;
    if (credential?.identityToken) {
      const form = new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: credential.identityToken,
        client_id: "buildfarm",
        scope: scopes.join(" "),
      });
      if (state.service) form.set("service", state.service);
      headers["content-type"] = "application/x-www-form-urlencoded";
      response = await transport.send(url.toString(), {
        method: "POST",
        headers,
        body: form.toString(),
      });
    } else {
      if (state.service) url.searchParams.set("service", state.service);
      for (const scope of scopes) url.searchParams.append("scope", scope);
      if (credential?.password !== undefined) {
        if (credential.username) url.searchParams.set("account", credential.username);
        headers.authorization = `Basic ${basicToken(credential.username ?? "", credential.password)}`;
      }
      response = await transport.send(url.toString(), { method: "GET", headers });
    }
    const who = credential
      ? `the credentials for ${registry} from ${this.source}`
      : "anonymous access";
    if (response.status === 401 || response.status === 403) {
      const detail = describeErrorBody(redactor.redact(await readText(response)));
      throw new RegistryError(
        "unauthorized",
        `the token service ${url.origin} refused ${who} to ${scopes.join(" ")} (${response.status}${detail ? `: ${detail}` : ""})${credential ? "" : `; add credentials for ${registry} to ${this.source}`}`,
        response.status,
      );
    }
    if (response.status < 200 || response.status > 299) {
      throw new RegistryError(
        "unavailable",
        `the token service ${url.origin} answered ${response.status} for ${scopes.join(" ")}`,
        response.status,
      );
    }
    let body: z.infer<typeof tokenResponse>;
    try {
      body = tokenResponse.parse(
        JSON.parse(Buffer.from(await readBody(response, 1 << 20, "the token")).toString("utf8")),
      );
    } catch {
      throw new RegistryError(
        "protocol",
        `the token service ${url.origin} did not answer a token (JSON)`,
      );
    }
    const token = body.token || body.access_token;
    if (!token)
      throw new RegistryError("protocol", `the token service ${url.origin} answered no token`);
    redactor.add(token);
    const lifetimeS = Math.max(body.expires_in ?? MIN_TOKEN_LIFETIME_S, MIN_TOKEN_LIFETIME_S);
    const expiresAt = this.#now() + lifetimeS * 1000 - EXPIRY_SKEW_MS;
    for (const scope of scopes) this.#tokens.set(this.#key(state, scope), { token, expiresAt });
    logger.debug({ host, scopes, lifetimeS }, "got a registry token");
    return token;
  }
}
