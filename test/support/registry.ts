// Real registries for tests: Debian's `docker-registry` (CNCF Distribution) on 127.0.0.1,
// each with its own temporary storage, optionally behind TLS (a CA made here) and htpasswd
// Basic auth, or token auth with a small token service that signs real JWTs. Also `skopeo`,
// an independent client, to check what ends up in a registry.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import {
  createHash,
  createPrivateKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  X509Certificate,
} from "node:crypto";
import { accessSync, constants } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { Agent, type Dispatcher, fetch, type RequestInit, type Response } from "undici";
import { stringify } from "yaml";

const execFileAsync = promisify(execFile);

/** The programs the registry tests run, and the Debian packages that bring them. */
export const REGISTRY_TOOLS = {
  "docker-registry": "docker-registry",
  skopeo: "skopeo",
  htpasswd: "apache2-utils",
  openssl: "openssl",
} as const;

export function onPath(program: string): boolean {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, program), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

export function missingRegistryTools(): string[] {
  return Object.keys(REGISTRY_TOOLS).filter((program) => !onPath(program));
}

/**
 * Whether a registry suite must be skipped. Under CI a missing tool fails the suite instead:
 * .ci/run installs them, so their absence is a broken setup, not a reason to pass.
 */
export function skipWithoutRegistryTools(suite: string): boolean {
  const missing = missingRegistryTools();
  if (missing.length === 0) return false;
  const packages = [
    ...new Set(missing.map((m) => REGISTRY_TOOLS[m as keyof typeof REGISTRY_TOOLS])),
  ];
  const message = `${suite}: ${missing.join(", ")} not installed (apt-get install -y ${packages.join(" ")})`;
  const ci = process.env.CI;
  if (ci && ci !== "false" && ci !== "0") throw new Error(`CI is set and ${message}`);
  process.stderr.write(`skipping ${message}\n`);
  return true;
}

export interface RegistryOptions {
  /** Serve HTTPS with a certificate from a CA made for this registry. */
  tls?: boolean;
  /** Require these credentials: htpasswd Basic auth, or `token` for the Bearer token flow. */
  auth?: { username: string; password: string; scheme?: "basic" | "token" };
}

export interface TokenRequest {
  scopes: string[];
  service: string | null;
  account: string | null;
  /** Whether the request carried the right username and password. */
  authenticated: boolean;
}

export interface RunningRegistry {
  /** 127.0.0.1:PORT, as in an image reference. */
  host: string;
  /** http(s)://127.0.0.1:PORT */
  url: string;
  tls: boolean;
  /** The CA that signed the registry's certificate (PEM file), when tls. */
  caFile?: string;
  /** A directory holding ca.crt, for `skopeo --cert-dir` and BuildKit's registry config. */
  certDir?: string;
  /** A directory whose config.json holds this registry's credentials (empty auths without). */
  dockerConfigDir: string;
  /** The registry's filesystem storage (blobs under docker/registry/v2/blobs), for scans. */
  storageDir: string;
  auth?: { username: string; password: string; scheme: "basic" | "token" };
  /** The token service, with every request it answered, when auth.scheme is token. */
  token?: { url: string; requests: TokenRequest[] };
  /** fetch against the registry with its CA and credentials (Basic or Bearer) applied. */
  fetch(pathOrUrl: string, init?: RequestInit): Promise<Response>;
  /** `skopeo` arguments that reach this registry: TLS trust (or none) and credentials. */
  skopeoArgs(): string[];
  /** What the registry printed, for failure messages. */
  logs(): string;
  stop(): Promise<void>;
}

/** A free loopback port (the registry binds it right after; a race is retried). */
export async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (typeof address !== "object" || address === null) throw new Error("no port");
  return address.port;
}

export async function startRegistry(options: RegistryOptions = {}): Promise<RunningRegistry> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startRegistryOnce(options);
    } catch (error) {
      if (attempt >= 3 || !/address already in use/i.test(String(error))) throw error;
    }
  }
}

async function startRegistryOnce(options: RegistryOptions): Promise<RunningRegistry> {
  const dir = await mkdtemp(join(tmpdir(), "buildfarm-registry-"));
  const cleanups: (() => Promise<void>)[] = [() => rm(dir, { recursive: true, force: true })];
  const cleanup = async () => {
    for (const step of cleanups.reverse()) await step().catch(() => {});
  };
  try {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    const tls = options.tls === true;
    const url = `${tls ? "https" : "http"}://${host}`;
    const auth = options.auth
      ? { ...options.auth, scheme: options.auth.scheme ?? "basic" }
      : undefined;

    const config: Record<string, unknown> = {
      version: 0.1,
      log: { level: "warn", accesslog: { disabled: true } },
      storage: { filesystem: { rootdirectory: join(dir, "storage") }, delete: { enabled: true } },
      http: {
        addr: host,
        secret: randomBytes(16).toString("hex"),
        headers: { "X-Content-Type-Options": ["nosniff"] },
      },
    };
    let caFile: string | undefined;
    let certDir: string | undefined;
    let dispatcher: Dispatcher | undefined;
    if (tls) {
      const material = await makeTlsMaterial(join(dir, "tls"));
      caFile = material.caFile;
      certDir = material.certDir;
      (config.http as Record<string, unknown>).tls = {
        certificate: material.certFile,
        key: material.keyFile,
      };
      dispatcher = new Agent({ connect: { ca: material.caPem } });
    }
    let token: RunningRegistry["token"];
    if (auth?.scheme === "basic") {
      const file = join(dir, "htpasswd");
      const { stdout } = await execFileAsync("htpasswd", ["-Bbn", auth.username, auth.password]);
      await writeFile(file, stdout);
      config.auth = { htpasswd: { realm: "buildfarm-test", path: file } };
    } else if (auth?.scheme === "token") {
      const service = await startTokenService(join(dir, "token"), auth);
      cleanups.push(service.stop);
      token = { url: service.url, requests: service.requests };
      config.auth = {
        token: {
          realm: `${service.url}/token`,
          service: TOKEN_SERVICE,
          issuer: TOKEN_ISSUER,
          rootcertbundle: service.certFile,
        },
      };
    }

    const dockerConfigDir = join(dir, "docker");
    await mkdir(dockerConfigDir);
    const auths = auth
      ? { [host]: { auth: Buffer.from(`${auth.username}:${auth.password}`).toString("base64") } }
      : {};
    await writeFile(join(dockerConfigDir, "config.json"), JSON.stringify({ auths }, null, 2));

    const configFile = join(dir, "config.yml");
    await writeFile(configFile, stringify(config));
    const child = spawn("docker-registry", ["serve", configFile], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    const collect = (chunk: Buffer) => {
      output = (output + chunk.toString("utf8")).slice(-20_000);
    };
    child.stdout?.on("data", collect);
    child.stderr?.on("data", collect);
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    cleanups.push(() => stopProcess(child, exited));

    await waitReady(url, dispatcher, exited, () => output);

    const registryFetch = makeAuthedFetch(url, dispatcher, auth);
    return {
      host,
      url,
      tls,
      ...(caFile ? { caFile } : {}),
      ...(certDir ? { certDir } : {}),
      dockerConfigDir,
      storageDir: join(dir, "storage"),
      ...(auth ? { auth } : {}),
      ...(token ? { token } : {}),
      fetch: registryFetch,
      skopeoArgs: () => [
        ...(tls ? [`--cert-dir=${certDir}`] : ["--tls-verify=false"]),
        ...(auth ? [`--creds=${auth.username}:${auth.password}`] : []),
      ],
      logs: () => output,
      stop: async () => {
        await cleanup();
        await dispatcher?.close();
      },
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

async function waitReady(
  url: string,
  dispatcher: Dispatcher | undefined,
  exited: Promise<number | null>,
  output: () => string,
): Promise<void> {
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (gone) throw new Error(`docker-registry exited while starting: ${output()}`);
    try {
      const response = await fetch(`${url}/v2/`, { ...(dispatcher ? { dispatcher } : {}) });
      await response.body?.cancel();
      if (response.status === 200 || response.status === 401) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error(`docker-registry did not answer on ${url} within 20 s: ${output()}`);
}

async function stopProcess(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}

interface TlsMaterial {
  caFile: string;
  caPem: string;
  certDir: string;
  certFile: string;
  keyFile: string;
}

/** A CA and a server certificate for 127.0.0.1 and localhost, made with openssl. */
export async function makeTlsMaterial(dir: string): Promise<TlsMaterial> {
  await mkdir(dir, { recursive: true });
  const file = (name: string) => join(dir, name);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await execFileAsync("openssl", [
    "req",
    "-x509",
    ...ec,
    "-keyout",
    file("ca.key"),
    "-out",
    file("ca.crt"),
    "-days",
    "2",
    "-subj",
    "/CN=buildfarm test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  await execFileAsync("openssl", [
    "req",
    ...ec,
    "-keyout",
    file("server.key"),
    "-out",
    file("server.csr"),
    "-subj",
    "/CN=127.0.0.1",
  ]);
  await writeFile(
    file("server.ext"),
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n",
  );
  await execFileAsync("openssl", [
    "x509",
    "-req",
    "-in",
    file("server.csr"),
    "-CA",
    file("ca.crt"),
    "-CAkey",
    file("ca.key"),
    "-CAcreateserial",
    "-out",
    file("server.crt"),
    "-days",
    "2",
    "-extfile",
    file("server.ext"),
  ]);
  const certDir = file("certs");
  await mkdir(certDir);
  const caPem = await readFile(file("ca.crt"), "utf8");
  await writeFile(join(certDir, "ca.crt"), caPem);
  return {
    caFile: file("ca.crt"),
    caPem,
    certDir,
    certFile: file("server.crt"),
    keyFile: file("server.key"),
  };
}

const TOKEN_SERVICE = "buildfarm-test-registry";
const TOKEN_ISSUER = "buildfarm-test-token-issuer";

const base64url = (data: Buffer | string) => Buffer.from(data).toString("base64url");

/**
 * A token service as the Distribution token spec describes it: Basic credentials in, a JWT
 * signed with a key whose certificate the registry trusts (x5c header) out, granting the
 * requested repository scopes to the right user and nothing to anyone else.
 */
async function startTokenService(
  dir: string,
  auth: { username: string; password: string },
): Promise<{ url: string; certFile: string; requests: TokenRequest[]; stop: () => Promise<void> }> {
  await mkdir(dir, { recursive: true });
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const keyFile = join(dir, "signer.key");
  const certFile = join(dir, "signer.crt");
  await writeFile(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }));
  await execFileAsync("openssl", [
    "req",
    "-x509",
    "-new",
    "-key",
    keyFile,
    "-out",
    certFile,
    "-days",
    "2",
    "-subj",
    "/CN=buildfarm test token signer",
  ]);
  const certPem = await readFile(certFile, "utf8");
  const x5c = [new X509Certificate(certPem).raw.toString("base64")];
  const key = createPrivateKey(privateKey.export({ type: "pkcs8", format: "pem" }));
  const expected = `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString("base64")}`;
  const requests: TokenRequest[] = [];

  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://token");
    if (url.pathname !== "/token") {
      res.writeHead(404).end();
      return;
    }
    const scopes = url.searchParams
      .getAll("scope")
      .flatMap((s) => s.split(" "))
      .filter(Boolean);
    const sent = req.headers.authorization;
    const authenticated = sent === expected;
    requests.push({
      scopes,
      service: url.searchParams.get("service"),
      account: url.searchParams.get("account"),
      authenticated,
    });
    if (sent !== undefined && !authenticated) {
      res.writeHead(401, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          errors: [{ code: "UNAUTHORIZED", message: "invalid username or password" }],
        }),
      );
      return;
    }
    const now = Math.floor(Date.now() / 1000);
    const access = authenticated
      ? scopes.flatMap((scope) => {
          const [type, name, actions] = scope.split(":");
          return type && name && actions ? [{ type, name, actions: actions.split(",") }] : [];
        })
      : [];
    const header = base64url(JSON.stringify({ typ: "JWT", alg: "RS256", x5c }));
    const claims = base64url(
      JSON.stringify({
        iss: TOKEN_ISSUER,
        sub: authenticated ? auth.username : "",
        aud: url.searchParams.get("service") ?? "",
        exp: now + 300,
        nbf: now - 10,
        iat: now,
        jti: randomBytes(8).toString("hex"),
        access,
      }),
    );
    const signature = base64url(sign("sha256", Buffer.from(`${header}.${claims}`), key));
    const token = `${header}.${claims}.${signature}`;
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        token,
        access_token: token,
        expires_in: 300,
        issued_at: new Date().toISOString(),
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (typeof address !== "object" || address === null) throw new Error("token service has no port");
  return {
    url: `http://127.0.0.1:${address.port}`,
    certFile,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A fetch that answers the registry's challenges the plain way, independent of src/registry. */
function makeAuthedFetch(
  base: string,
  dispatcher: Dispatcher | undefined,
  auth: RunningRegistry["auth"],
): RunningRegistry["fetch"] {
  const basic = auth
    ? `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString("base64")}`
    : undefined;
  return async (pathOrUrl, init = {}) => {
    const url = new URL(pathOrUrl, base).toString();
    const send = (authorization?: string) =>
      fetch(url, {
        ...init,
        ...(dispatcher ? { dispatcher } : {}),
        headers: {
          ...(init.headers as Record<string, string> | undefined),
          ...(authorization ? { authorization } : {}),
        },
      });
    const first = await send(auth?.scheme === "basic" ? basic : undefined);
    if (first.status !== 401 || !auth) return first;
    const challenge = first.headers.get("www-authenticate") ?? "";
    await first.body?.cancel();
    if (!/^bearer /i.test(challenge)) return send(basic);
    const param = (name: string) => new RegExp(`${name}="([^"]*)"`).exec(challenge)?.[1];
    const tokenUrl = new URL(param("realm") ?? "");
    tokenUrl.searchParams.set("service", param("service") ?? "");
    const scope = param("scope");
    if (scope) tokenUrl.searchParams.set("scope", scope);
    const tokenResponse = await fetch(tokenUrl, { headers: { authorization: basic ?? "" } });
    const { token } = (await tokenResponse.json()) as { token: string };
    return send(`Bearer ${token}`);
  };
}

/** Runs skopeo; stdout as bytes (a raw manifest must be hashed exactly as sent). */
export async function skopeo(args: string[]): Promise<Buffer> {
  try {
    const { stdout } = await execFileAsync("skopeo", args, {
      encoding: "buffer",
      maxBuffer: 16 * 1024 * 1024,
      env: { ...process.env, HOME: tmpdir() },
    });
    return stdout;
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString("utf8") ?? "";
    throw new Error(`skopeo ${args.join(" ")} failed: ${stderr.trim() || String(error)}`);
  }
}

/** `skopeo inspect --raw`: the manifest bytes and their sha256, read by an independent client. */
export async function inspectRaw(
  registry: RunningRegistry,
  reference: string,
): Promise<{ digest: string; json: Record<string, unknown> }> {
  const bytes = await skopeo([
    "inspect",
    "--raw",
    ...registry.skopeoArgs(),
    `docker://${reference}`,
  ]);
  return {
    digest: `sha256:${createHash("sha256").update(bytes).digest("hex")}`,
    json: JSON.parse(bytes.toString("utf8")) as Record<string, unknown>,
  };
}

/** `skopeo list-tags`: the repository's tags ([] when the repository has none). */
export async function listTags(registry: RunningRegistry, repository: string): Promise<string[]> {
  try {
    const out = await skopeo(["list-tags", ...registry.skopeoArgs(), `docker://${repository}`]);
    return ((JSON.parse(out.toString("utf8")) as { Tags: string[] | null }).Tags ?? []).sort();
  } catch (error) {
    // Distribution answers 404 for the tag list of a repository that has no tag yet.
    if (/name unknown|NAME_UNKNOWN|404 \(Not Found\)/i.test(String(error))) return [];
    throw error;
  }
}
