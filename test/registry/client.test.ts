// The registry client against a small scripted server on loopback, for what a real registry
// will not do on demand: token flows with refresh tokens and revoked tokens, 429 and 5xx
// answers, lying digests, oversized manifests, and error bodies that echo secrets.
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { assemble } from "../../src/registry/assemble.ts";
import { RegistryClient } from "../../src/registry/client.ts";
import { CredentialStore } from "../../src/registry/credentials.ts";
import { RegistryError } from "../../src/registry/errors.ts";
import { type Logger, silentLogger } from "../../src/registry/logger.ts";
import { REDACTED, Redactor } from "../../src/registry/redact.ts";
import { parseRepository, type Repository } from "../../src/registry/reference.ts";
import { freePort } from "../support/registry.ts";
import { makeImage } from "./fixtures.ts";

type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;

interface Seen {
  method: string;
  url: string;
  authorization: string | undefined;
  body: string;
}

let server: Server;
let host: string;
let handler: Handler = (_req, _body, res) => res.writeHead(500).end();
const seen: Seen[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      seen.push({
        method: req.method ?? "",
        url: req.url ?? "",
        authorization: req.headers.authorization,
        body,
      });
      handler(req, body, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (typeof address !== "object" || address === null) throw new Error("no port");
  host = `127.0.0.1:${address.port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});
afterEach(() => {
  seen.length = 0;
});

const image = makeImage({ platform: { os: "linux", architecture: "amd64" }, format: "oci" });
const manifestBytes = Buffer.from(image.manifest.bytes);

function json(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
) {
  res
    .writeHead(status, { "content-type": "application/json", ...headers })
    .end(JSON.stringify(body));
}

function serveManifest(res: ServerResponse, headers: Record<string, string> = {}) {
  res
    .writeHead(200, {
      "content-type": image.manifest.mediaType,
      "docker-content-digest": image.manifest.digest,
      ...headers,
    })
    .end(manifestBytes);
}

async function client(config: unknown = { auths: {} }, logger?: Logger) {
  const redactor = new Redactor();
  const credentials = CredentialStore.fromConfig(config, "/test/config.json", redactor);
  return RegistryClient.create({
    credentials,
    redactor,
    insecureHosts: [host],
    retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 2_000 },
    ...(logger ? { logger } : {}),
  });
}

const repo = (): Repository => parseRepository(`${host}/team/app`);

async function failure(run: Promise<unknown>): Promise<RegistryError> {
  const error = await run.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof RegistryError))
    throw new Error(`expected a RegistryError, got ${String(error)}`);
  return error;
}

/** A token service and registry on one server: 401 with a Bearer challenge until a known token. */
function bearerRegistry(
  valid: Set<string>,
  issue: (req: IncomingMessage, body: string) => string | undefined,
): Handler {
  return (req, body, res) => {
    if (req.url?.startsWith("/token")) {
      const token = issue(req, body);
      if (!token)
        return json(res, 401, { errors: [{ code: "UNAUTHORIZED", message: "bad credentials" }] });
      valid.add(token);
      return json(res, 200, { access_token: token, expires_in: 300 });
    }
    const token = req.headers.authorization?.replace(/^Bearer /, "");
    if (!token || !valid.has(token)) {
      const scope =
        req.method === "PUT" ? "repository:team/app:pull,push" : "repository:team/app:pull";
      res
        .writeHead(401, {
          "www-authenticate": `Bearer realm="http://${host}/token",service="fake",scope="${scope}"`,
        })
        .end();
      return;
    }
    if (req.method === "PUT") {
      const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
      res.writeHead(201, { "docker-content-digest": digest }).end();
      return;
    }
    serveManifest(res);
  };
}

describe("the Bearer token flow", () => {
  it("exchanges an identitytoken (OAuth2 refresh token) by POST, once per scope", async () => {
    const valid = new Set<string>();
    handler = bearerRegistry(valid, (req, body) => {
      const form = new URLSearchParams(body);
      return req.method === "POST" &&
        form.get("grant_type") === "refresh_token" &&
        form.get("refresh_token") === "refresh-secret" &&
        form.get("service") === "fake"
        ? `token-for-${form.get("scope")}`
        : undefined;
    });
    const c = await client({ auths: { [host]: { identitytoken: "refresh-secret" } } });
    await c.getManifest(repo(), image.manifest.digest);
    await c.getManifest(repo(), image.manifest.digest);
    await c.putManifest(repo(), "v1", manifestBytes, image.manifest.mediaType);
    await c.close();
    const tokenCalls = seen.filter((s) => s.url.startsWith("/token"));
    expect(tokenCalls.map((s) => new URLSearchParams(s.body).get("scope"))).toEqual([
      "repository:team/app:pull",
      "repository:team/app:pull,push",
    ]);
    expect(c.tokenRequests).toBe(2);
  });

  it("sends a registrytoken as it is, without a token request", async () => {
    const valid = new Set(["static-token"]);
    handler = bearerRegistry(valid, () => undefined);
    const c = await client({ auths: { [host]: { registrytoken: "static-token" } } });
    await c.getManifest(repo(), image.manifest.digest);
    await c.getManifest(repo(), image.manifest.digest);
    await c.close();
    expect(seen.filter((s) => s.url.startsWith("/token"))).toEqual([]);
    expect(seen.at(-1)?.authorization).toBe("Bearer static-token");
  });

  it("fetches a fresh token when the registry stops accepting the cached one", async () => {
    const valid = new Set<string>();
    let n = 0;
    handler = bearerRegistry(valid, () => `token-${++n}`);
    const c = await client({ auths: { [host]: { username: "u", password: "p4ss" } } });
    await c.getManifest(repo(), image.manifest.digest);
    valid.clear(); // revoked, or expired early
    await c.getManifest(repo(), image.manifest.digest);
    await c.close();
    expect(c.tokenRequests).toBe(2);
    expect(seen.at(-1)?.authorization).toBe("Bearer token-2");
  });

  it("keeps an error body that echoes the password out of the message", async () => {
    handler = (req, _body, res) => {
      if (req.url?.startsWith("/token")) {
        return json(res, 401, {
          errors: [{ code: "UNAUTHORIZED", message: `bad password "hunter2-secret" for u` }],
        });
      }
      res
        .writeHead(401, {
          "www-authenticate": `Bearer realm="http://${host}/token",service="fake"`,
        })
        .end();
    };
    const c = await client({ auths: { [host]: { username: "u", password: "hunter2-secret" } } });
    const error = await failure(c.getManifest(repo(), image.manifest.digest));
    await c.close();
    expect(error.kind).toBe("unauthorized");
    expect(error.message).toBe(
      `the token service http://${host} refused the credentials for ${host} from /test/config.json to repository:team/app:pull (401: UNAUTHORIZED: bad password "${REDACTED}" for u)`,
    );
  });

  it("names the missing access when the token does not carry it", async () => {
    handler = (req, _body, res) => {
      if (req.url?.startsWith("/token")) return json(res, 200, { token: "read-only" });
      res
        .writeHead(401, {
          "www-authenticate": `Bearer realm="http://${host}/token",error="insufficient_scope"`,
        })
        .end(
          JSON.stringify({
            errors: [{ code: "DENIED", message: "requested access to the resource is denied" }],
          }),
        );
    };
    const c = await client({ auths: { [host]: { username: "u", password: "p4ss" } } });
    const error = await failure(
      c.putManifest(repo(), "v1", manifestBytes, image.manifest.mediaType),
    );
    await c.close();
    expect(error.message).toBe(
      `${host} refused the token for repository:team/app:pull,push issued to the credentials for ${host} from /test/config.json (401: DENIED: requested access to the resource is denied); do they have that access?`,
    );
  });
});

describe("retries", () => {
  it("wait as long as Retry-After says (an HTTP date here) and then succeed", async () => {
    let calls = 0;
    handler = (_req, _body, res) => {
      calls++;
      if (calls === 1) {
        return json(res, 429, {}, { "retry-after": new Date(Date.now() + 1_500).toUTCString() });
      }
      serveManifest(res);
    };
    const warnings: Record<string, unknown>[] = [];
    const logger: Logger = {
      debug: () => {},
      info: () => {},
      error: () => {},
      warn: (f) => warnings.push(f),
    };
    const c = await client(undefined, logger);
    const started = Date.now();
    await c.getManifest(repo(), image.manifest.digest);
    await c.close();
    // An HTTP date has one-second resolution: between 0.5 and 1.5 s from now.
    expect(Date.now() - started).toBeGreaterThanOrEqual(400);
    expect(warnings).toEqual([
      expect.objectContaining({ status: 429, attempt: 1, retryAfterMs: expect.any(Number) }),
    ]);
  });

  it("give up after the last attempt with the registry's answer", async () => {
    handler = (_req, _body, res) =>
      json(res, 503, { errors: [{ code: "UNAVAILABLE", message: "maintenance" }] });
    const c = await client();
    const error = await failure(c.getManifest(repo(), image.manifest.digest));
    await c.close();
    expect(seen).toHaveLength(3);
    expect(error.kind).toBe("unavailable");
    expect(error.message).toBe(
      `manifest ${host}/team/app@${image.manifest.digest}: ${host} answered 503 UNAVAILABLE: maintenance`,
    );
  });

  it("cover a registry that is not listening, and say so", async () => {
    const port = await freePort();
    const c = await RegistryClient.create({
      insecureHosts: [`127.0.0.1:${port}`],
      retry: { attempts: 2, baseDelayMs: 1 },
    });
    const error = await failure(c.getManifest(parseRepository(`127.0.0.1:${port}/a`), "latest"));
    await c.close();
    expect(error.message).toMatch(
      new RegExp(
        `^GET http://127.0.0.1:${port}/v2/a/manifests/latest failed: ECONNREFUSED: .* \\(after 2 attempts\\)$`,
      ),
    );
  });
});

describe("digests", () => {
  it("refuse a manifest that does not hash to the digest asked for", async () => {
    handler = (_req, _body, res) => serveManifest(res, { "docker-content-digest": "" });
    const c = await client();
    const other = `sha256:${"9".repeat(64)}`;
    const error = await failure(c.getManifest(repo(), other));
    await c.close();
    expect(error.kind).toBe("digest");
    expect(error.message).toBe(
      `manifest ${host}/team/app@${other}: the registry sent content that hashes to ${image.manifest.digest}`,
    );
  });

  it("refuse a Docker-Content-Digest that is not the content's", async () => {
    const wrong = `sha256:${"8".repeat(64)}`;
    handler = (_req, _body, res) => serveManifest(res, { "docker-content-digest": wrong });
    const c = await client();
    const error = await failure(c.getManifest(repo(), "latest"));
    await c.close();
    expect(error.message).toBe(
      `manifest ${host}/team/app:latest: the registry announced ${wrong}, but the content hashes to ${image.manifest.digest}`,
    );
  });

  it("check what the registry says it stored against the bytes sent", async () => {
    const wrong = `sha256:${"7".repeat(64)}`;
    handler = (_req, _body, res) => res.writeHead(201, { "docker-content-digest": wrong }).end();
    const c = await client();
    const error = await failure(
      c.putManifest(repo(), "v1", manifestBytes, image.manifest.mediaType),
    );
    expect(error.message).toBe(
      `pushing manifest ${host}/team/app:v1: the registry stored ${wrong}, but the bytes sent hash to ${image.manifest.digest}`,
    );
    expect(seen[0]).toMatchObject({ method: "PUT", url: "/v2/team/app/manifests/v1" });
    // Pushing by digest: the digest must be the bytes' own, checked before anything is sent.
    seen.length = 0;
    const mismatch = await failure(
      c.putManifest(repo(), wrong, manifestBytes, image.manifest.mediaType),
    );
    await c.close();
    expect(mismatch.message).toBe(
      `cannot push content with digest ${image.manifest.digest} as ${wrong}`,
    );
    expect(seen).toEqual([]);
  });
});

describe("what a registry may answer", () => {
  it("a manifest larger than 4 MiB is refused unread", async () => {
    handler = (_req, _body, res) =>
      res
        .writeHead(200, {
          "content-type": image.manifest.mediaType,
          "content-length": String(5 * 1024 * 1024),
        })
        .end();
    const c = await client();
    const error = await failure(c.getManifest(repo(), "latest"));
    await c.close();
    expect(error.message).toBe(
      `manifest ${host}/team/app:latest is 5242880 bytes, more than the 4194304 accepted`,
    );
  });

  it("a schema 1 or unknown manifest type is refused", async () => {
    handler = (_req, _body, res) =>
      res
        .writeHead(200, {
          "content-type": "application/vnd.docker.distribution.manifest.v1+prettyjws",
        })
        .end(JSON.stringify({ schemaVersion: 1, name: "team/app" }));
    const c = await client();
    const error = await failure(c.getManifest(repo(), "latest"));
    await c.close();
    expect(error.message).toBe(
      `manifest ${host}/team/app:latest has media type "application/vnd.docker.distribution.manifest.v1+prettyjws", not an OCI or Docker v2 image manifest or index`,
    );
  });

  it("403 names the credentials that lack the right", async () => {
    handler = (req, _body, res) => {
      if (!req.headers.authorization) {
        return res.writeHead(401, { "www-authenticate": 'Basic realm="r"' }).end();
      }
      json(res, 403, { errors: [{ code: "DENIED", message: "push not allowed" }] });
    };
    const c = await client({ auths: { [host]: { username: "reader", password: "r3ad" } } });
    const error = await failure(
      c.putManifest(repo(), "v1", manifestBytes, image.manifest.mediaType),
    );
    await c.close();
    expect(error.kind).toBe("denied");
    expect(error.message).toBe(
      `pushing manifest ${host}/team/app:v1: ${host} denied the credentials for ${host} from /test/config.json to push (403 DENIED: push not allowed)`,
    );
    expect(seen.map((s) => s.authorization)).toEqual([
      undefined,
      `Basic ${Buffer.from("reader:r3ad").toString("base64")}`,
    ]);
  });

  it("Accept lists every manifest and index media type", async () => {
    let accept: string | undefined;
    handler = (req, _body, res) => {
      accept = req.headers.accept;
      serveManifest(res);
    };
    const c = await client();
    await c.getManifest(repo(), "latest");
    await c.close();
    expect(accept?.split(", ")).toEqual([
      "application/vnd.oci.image.index.v1+json",
      "application/vnd.docker.distribution.manifest.list.v2+json",
      "application/vnd.oci.image.manifest.v1+json",
      "application/vnd.docker.distribution.manifest.v2+json",
    ]);
  });
});

describe("assemble() against a registry that refuses OCI indexes", () => {
  it("pushes nothing else and suggests --format docker", async () => {
    handler = (req, _body, res) => {
      if (req.method === "PUT") {
        return json(res, 400, {
          errors: [{ code: "MANIFEST_INVALID", message: "manifest invalid" }],
        });
      }
      if (req.url === `/v2/team/app/blobs/${image.config.digest}`) {
        return res.writeHead(200).end(Buffer.from(image.config.bytes));
      }
      serveManifest(res);
    };
    const c = await client();
    const error = await failure(
      assemble(
        c,
        {
          repository: repo(),
          inputs: [
            { platform: { os: "linux", architecture: "amd64" }, digest: image.manifest.digest },
          ],
          tags: ["v1"],
          format: "oci",
          annotations: {},
        },
        silentLogger,
      ),
    );
    await c.close();
    expect(error.message).toMatch(
      /^pushing manifest .*@sha256:[a-f0-9]{64}: .* answered 400 MANIFEST_INVALID: manifest invalid; if this registry does not take OCI image indexes, try --format docker$/,
    );
    expect(seen.filter((s) => s.method === "PUT").map((s) => s.url)).toEqual([
      expect.stringMatching(/^\/v2\/team\/app\/manifests\/sha256:/),
    ]);
  });
});
