// `buildfarm assemble` against real registries that want credentials: one behind TLS (a CA
// made for the test) with htpasswd Basic auth, one with the Bearer token flow (a token
// service that signs real JWTs, which the registry verifies). No secret may appear on stderr.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  inspectRaw,
  listTags,
  type RunningRegistry,
  skipWithoutRegistryTools,
  startRegistry,
} from "../support/registry.ts";
import { flags, outputOf, runAssemble } from "./cli.ts";
import { makeImage, pushImage } from "./fixtures.ts";
import { tempDirs } from "./temp.ts";

const temp = tempDirs("buildfarm-auth");

const skip = skipWithoutRegistryTools("registry auth tests");

const USER = "builder";
const PASSWORD = "s3cret-Pa55word!";

async function dockerConfig(content: unknown): Promise<string> {
  const dir = await temp.make();
  await writeFile(join(dir, "config.json"), JSON.stringify(content));
  return dir;
}

const base64 = (text: string) => Buffer.from(text).toString("base64");

/** Every way a secret could leak into output. */
function secretsIn(text: string, ...passwords: string[]): string[] {
  return passwords
    .flatMap((password) => [password, base64(`${USER}:${password}`), encodeURIComponent(password)])
    .filter((secret) => text.includes(secret));
}

describe.skipIf(skip)("a registry with TLS and htpasswd Basic auth", () => {
  let registry: RunningRegistry;
  let amd64Digest: string;
  let arm64Digest: string;
  const repo = "team/app";

  beforeAll(async () => {
    registry = await startRegistry({ tls: true, auth: { username: USER, password: PASSWORD } });
    amd64Digest = await pushImage(
      registry,
      repo,
      makeImage({ platform: { os: "linux", architecture: "amd64" }, format: "oci" }),
    );
    arm64Digest = await pushImage(
      registry,
      repo,
      makeImage({ platform: { os: "linux", architecture: "arm64" }, format: "oci" }),
    );
  });
  afterAll(async () => {
    await registry?.stop();
  });

  const inputs = () =>
    flags({
      image: `${registry.host}/${repo}`,
      digest: [`linux/amd64=${amd64Digest}`, `linux/arm64=${arm64Digest}`],
    });

  it("assembles with the CA from --ca-file and the credentials from --docker-config", async () => {
    const out = outputOf(
      await runAssemble([
        ...inputs(),
        ...flags({
          tag: "v1",
          "ca-file": registry.caFile,
          "docker-config": registry.dockerConfigDir,
        }),
      ]),
    );
    expect(out.platforms).toEqual(["linux/amd64", "linux/arm64"]);
    expect((await inspectRaw(registry, `${registry.host}/${repo}:v1`)).digest).toBe(out.digest);
  });

  it("reads username/password entries and $DOCKER_CONFIG as well as base64 auth", async () => {
    const dir = await dockerConfig({
      auths: { [`https://${registry.host}/v2/`]: { username: USER, password: PASSWORD } },
    });
    const result = await runAssemble([...inputs(), ...flags({ "ca-file": registry.caFile })], {
      DOCKER_CONFIG: dir,
    });
    expect(outputOf(result).platforms).toEqual(["linux/amd64", "linux/arm64"]);
  });

  it.each([
    ["base64 auth", (wrong: string) => ({ auth: base64(`${USER}:${wrong}`) })],
    ["username and password", (wrong: string) => ({ username: USER, password: wrong })],
  ])("refuses wrong credentials (%s) with one clear line and no secret", async (_, entry) => {
    const wrong = "Wr0ng-but-still-secret";
    const dir = await dockerConfig({ auths: { [registry.host]: entry(wrong) } });
    const result = await runAssemble([
      ...inputs(),
      ...flags({ tag: "broken", "ca-file": registry.caFile, "docker-config": dir }),
    ]);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe("");
    const lines = result.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      new RegExp(
        `^buildfarm assemble: ${escapeRegExp(registry.host)} refused the username and password for ${escapeRegExp(registry.host)} from ${escapeRegExp(join(dir, "config.json"))} \\(401\\): check them$`,
      ),
    );
    expect(secretsIn(result.stderr + result.stdout, wrong, PASSWORD)).toEqual([]);
    expect(await listTags(registry, `${registry.host}/${repo}`)).not.toContain("broken");
  });

  it("says which config lacks credentials when there are none", async () => {
    const dir = await dockerConfig({ auths: {} });
    const result = await runAssemble([
      ...inputs(),
      ...flags({ "ca-file": registry.caFile, "docker-config": dir }),
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(
      `buildfarm assemble: ${registry.host} asks for a username and password, and ${join(dir, "config.json")} has no "auths" entry for ${registry.host}`,
    );
  });

  it("warns once that credsStore cannot work in a pod, and uses auths", async () => {
    const dir = await dockerConfig({
      credsStore: "desktop",
      credHelpers: { "gcr.io": "gcloud" },
      auths: { [registry.host]: { auth: base64(`${USER}:${PASSWORD}`) } },
    });
    const result = await runAssemble([
      ...inputs(),
      ...flags({ "ca-file": registry.caFile, "docker-config": dir }),
    ]);
    expect(result.code).toBe(0);
    const warnings = result.stderr.split("\n").filter((line) => line.startsWith("warn: "));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(
      'the docker config names credsStore "desktop", credHelpers for gcr.io; credential helpers are programs on a workstation and cannot run inside a pod',
    );
  });

  it("does not trust the registry's certificate without --ca-file, and says so", async () => {
    const result = await runAssemble([
      ...inputs(),
      ...flags({ "docker-config": registry.dockerConfigDir }),
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toMatch(
      /^buildfarm assemble: .*failed: the registry's TLS certificate is not trusted \([A-Z_]+\); pass its CA with --ca-file$/,
    );
  });
});

describe.skipIf(skip)("a registry with Bearer token auth", () => {
  let registry: RunningRegistry;
  let tokenHost: string;
  let amd64Digest: string;
  const repo = "team/tokened";

  beforeAll(async () => {
    registry = await startRegistry({
      auth: { username: USER, password: PASSWORD, scheme: "token" },
    });
    tokenHost = new URL(registry.token?.url ?? "").host;
    amd64Digest = await pushImage(
      registry,
      repo,
      makeImage({ platform: { os: "linux", architecture: "amd64" }, format: "docker" }),
    );
  });
  afterAll(async () => {
    await registry?.stop();
  });

  const args = (dockerConfigDir: string, insecure = [registry.host, tokenHost]) => [
    ...flags({
      image: `${registry.host}/${repo}`,
      digest: `linux/amd64=${amd64Digest}`,
      "insecure-registry": insecure,
      "docker-config": dockerConfigDir,
    }),
  ];

  it("gets one token per scope with the credentials and reuses it", async () => {
    const before = registry.token?.requests.length ?? 0;
    const out = outputOf(
      await runAssemble([...args(registry.dockerConfigDir), "--tag", "v1", "--tag", "v2"]),
    );
    // One pull token for all the reads, one pull,push token for the three PUTs; the tag
    // checks afterwards reuse the pull,push token.
    expect(registry.token?.requests.slice(before)).toEqual([
      {
        scopes: [`repository:${repo}:pull`],
        service: "buildfarm-test-registry",
        account: USER,
        authenticated: true,
      },
      {
        scopes: [`repository:${repo}:pull,push`],
        service: "buildfarm-test-registry",
        account: USER,
        authenticated: true,
      },
    ]);
    expect((await inspectRaw(registry, `${registry.host}/${repo}:v2`)).digest).toBe(out.digest);
  });

  it("refuses wrong credentials with the token service's reason and no secret", async () => {
    const wrong = "n0t-the-Password";
    const dir = await dockerConfig({
      auths: { [registry.host]: { auth: base64(`${USER}:${wrong}`) } },
    });
    const result = await runAssemble(args(dir));
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(
      `buildfarm assemble: the token service ${registry.token?.url} refused the credentials for ${registry.host} from ${join(dir, "config.json")} to repository:${repo}:pull (401: UNAUTHORIZED: invalid username or password)`,
    );
    expect(secretsIn(result.stderr, wrong, PASSWORD)).toEqual([]);
  });

  it("sends no credentials to a plain-HTTP token service that is not named insecure", async () => {
    const before = registry.token?.requests.length ?? 0;
    const result = await runAssemble(args(registry.dockerConfigDir, [registry.host]));
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(
      `buildfarm assemble: ${registry.host}'s token service ${registry.token?.url} is plain HTTP; buildfarm uses plain HTTP only for hosts named with --insecure-registry`,
    );
    expect(registry.token?.requests.length).toBe(before);
  });
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
