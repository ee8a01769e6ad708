// Registry credentials from a docker config file (`~/.docker/config.json`, or the
// `.dockerconfigjson` of a kubernetes.io/dockerconfigjson Secret mounted as config.json).
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { RegistryError } from "./errors.ts";
import type { Logger } from "./logger.ts";
import type { Redactor } from "./redact.ts";
import { normalizeRegistry } from "./reference.ts";

export interface Credential {
  username?: string;
  password?: string;
  /** An OAuth2 refresh token (`identitytoken`), exchanged at the token realm. */
  identityToken?: string;
  /** A bearer token to send as it is (`registrytoken`). */
  registryToken?: string;
}

const authEntry = z
  .object({
    auth: z.string().optional(),
    username: z.string().optional(),
    password: z.string().optional(),
    identitytoken: z.string().optional(),
    registrytoken: z.string().optional(),
  })
  .loose();

const dockerConfig = z
  .object({
    auths: z.record(z.string(), authEntry).optional(),
    credsStore: z.string().optional(),
    credHelpers: z.record(z.string(), z.string()).optional(),
  })
  .loose();

/** `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/v2` → `host:5000`. */
export function authKeyRegistry(key: string): string {
  const withoutScheme = key.replace(/^[a-z][a-z0-9+.-]*:\/\//i, "");
  const host = withoutScheme.split("/")[0] ?? "";
  return normalizeRegistry(host);
}

export class CredentialStore {
  readonly #byRegistry: Map<string, Credential>;
  /** Where the credentials came from, for messages: a path, never content. */
  readonly source: string | undefined;

  constructor(entries: Map<string, Credential> = new Map(), source?: string) {
    this.#byRegistry = entries;
    this.source = source;
  }

  static empty(): CredentialStore {
    return new CredentialStore();
  }

  /** The credential for a registry (`docker.io`, `host:port`), if the config has one. */
  lookup(registry: string): Credential | undefined {
    return this.#byRegistry.get(normalizeRegistry(registry));
  }

  registries(): string[] {
    return [...this.#byRegistry.keys()];
  }

  /**
   * Reads `<path>/config.json` (or `path` itself when it is a file). A missing file means
   * anonymous access. Every secret read is handed to the redactor before anything else.
   */
  static async load(path: string, redactor: Redactor, logger?: Logger): Promise<CredentialStore> {
    let file = path;
    try {
      if ((await stat(path)).isDirectory()) file = join(path, "config.json");
    } catch {
      file = join(path, "config.json");
    }
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") {
        logger?.info(
          { dockerConfig: file },
          "no docker config file: registries are accessed anonymously",
        );
        return new CredentialStore(new Map(), `${file} (not found)`);
      }
      throw new RegistryError(
        "config",
        `cannot read the docker config ${file}: ${(error as Error).message}`,
      );
    }
    // The parser's message may quote the file's content, and so a secret: never pass it on.
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      throw new RegistryError("config", `the docker config ${file} is not valid JSON`);
    }
    return CredentialStore.fromConfig(raw, file, redactor, logger);
  }

  static fromConfig(
    raw: unknown,
    file: string,
    redactor: Redactor,
    logger?: Logger,
  ): CredentialStore {
    const parsed = dockerConfig.safeParse(raw);
    if (!parsed.success) {
      const where = parsed.error.issues[0]?.path.join(".") ?? "";
      throw new RegistryError(
        "config",
        `the docker config ${file} is not a docker config file (at ${where || "the top level"})`,
      );
    }
    const config = parsed.data;
    // The legacy .dockercfg layout has the auths map at the top level.
    const auths =
      config.auths ??
      (isLegacyDockercfg(raw) ? (raw as Record<string, z.infer<typeof authEntry>>) : {});

    const entries = new Map<string, Credential>();
    for (const [key, entry] of Object.entries(auths)) {
      const credential = toCredential(key, entry, file, redactor);
      if (credential) entries.set(authKeyRegistry(key), credential);
    }

    const helpers = [
      ...(config.credsStore ? [`credsStore "${config.credsStore}"`] : []),
      ...Object.keys(config.credHelpers ?? {}).map((host) => `credHelpers for ${host}`),
    ];
    if (helpers.length > 0) {
      logger?.warn(
        { dockerConfig: file },
        `the docker config names ${helpers.join(", ")}; credential helpers are programs on a workstation and cannot run inside a pod, so they are ignored: put the credentials in "auths" (kubectl create secret docker-registry does)`,
      );
    }
    return new CredentialStore(entries, file);
  }
}

/** The legacy .dockercfg layout: `{ "host": { "auth": "…" } }` without an `auths` map. */
function isLegacyDockercfg(raw: unknown): boolean {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return false;
  const values = Object.values(raw);
  return (
    values.length > 0 &&
    values.every((value) => typeof authEntry.safeParse(value).data?.auth === "string")
  );
}

function toCredential(
  key: string,
  entry: z.infer<typeof authEntry>,
  file: string,
  redactor: Redactor,
): Credential | undefined {
  for (const secret of [entry.auth, entry.password, entry.identitytoken, entry.registrytoken]) {
    redactor.add(secret);
  }
  const credential: Credential = {};
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon <= 0) {
      throw new RegistryError(
        "config",
        `the docker config ${file} has an "auth" for ${JSON.stringify(key)} that is not base64 of username:password`,
      );
    }
    credential.username = decoded.slice(0, colon);
    credential.password = decoded.slice(colon + 1);
  } else if (entry.username !== undefined || entry.password !== undefined) {
    credential.username = entry.username ?? "";
    credential.password = entry.password ?? "";
  }
  if (entry.identitytoken) credential.identityToken = entry.identitytoken;
  if (entry.registrytoken) credential.registryToken = entry.registrytoken;
  if (credential.password !== undefined) {
    redactor.add(credential.password);
    redactor.add(basicToken(credential.username ?? "", credential.password));
  }
  const empty =
    credential.username === undefined &&
    credential.identityToken === undefined &&
    credential.registryToken === undefined;
  return empty ? undefined : credential;
}

/** The value after `Basic `. */
export function basicToken(username: string, password: string): string {
  return Buffer.from(`${username}:${password}`, "utf8").toString("base64");
}
