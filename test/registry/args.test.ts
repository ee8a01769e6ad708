// The `assemble` command line, and docker config files: what is accepted, and the message
// naming the flag (or the file) when something is not.
import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  type AssembleOutput,
  parseAssembleArgs,
  TERMINATION_MESSAGE_LIMIT,
  terminationMessage,
} from "../../src/imagebuild/assemble-contract.ts";
import { authKeyRegistry, CredentialStore } from "../../src/registry/credentials.ts";
import { RegistryError } from "../../src/registry/errors.ts";
import type { Logger } from "../../src/registry/logger.ts";
import { REDACTED, Redactor } from "../../src/registry/redact.ts";
import { runAssemble } from "./cli.ts";
import { tempDirs } from "./temp.ts";

const temp = tempDirs("buildfarm-args");

const D1 = `sha256:${"1".repeat(64)}`;
const D2 = `sha256:${"2".repeat(64)}`;

describe("assemble flags", () => {
  it("accepts the full contract", () => {
    const parsed = parseAssembleArgs([
      "--image=registry.example.com/team/app",
      "--digest",
      `linux/amd64=${D1}`,
      "--digest",
      `linux/arm/v7=registry.example.com/team/app@${D2}`,
      "--tag",
      "v1",
      "--tag",
      "latest",
      "--expect-digest",
      D2,
      "--annotation",
      "org.opencontainers.image.source=https://example.com/a=b",
      "--format",
      "docker",
      "--docker-config",
      "/etc/buildfarm/docker",
      "--insecure-registry",
      "localhost:5000",
      "--ca-file",
      "/etc/ssl/ca.pem",
      "--termination-message-path",
      "/dev/termination-log",
      "--log-format",
      "json",
      "--log-level",
      "debug",
    ]);
    expect(parsed).toEqual({
      kind: "ok",
      flags: {
        image: "registry.example.com/team/app",
        digest: [
          { platform: { os: "linux", architecture: "amd64" }, digest: D1 },
          {
            platform: { os: "linux", architecture: "arm", variant: "v7" },
            digest: D2,
            repository: "registry.example.com/team/app",
          },
        ],
        tag: ["v1", "latest"],
        "expect-digest": D2,
        annotation: [["org.opencontainers.image.source", "https://example.com/a=b"]],
        format: "docker",
        "docker-config": "/etc/buildfarm/docker",
        "insecure-registry": ["localhost:5000"],
        "ca-file": "/etc/ssl/ca.pem",
        "termination-message-path": "/dev/termination-log",
        "log-format": "json",
        "log-level": "debug",
      },
    });
  });

  it("defaults to an OCI index, no tags, text logs", () => {
    const parsed = parseAssembleArgs([
      "--image",
      "ghcr.io/org/app",
      "--digest",
      `linux/amd64=${D1}`,
    ]);
    expect(parsed).toMatchObject({
      kind: "ok",
      flags: {
        format: "oci",
        tag: [],
        annotation: [],
        "insecure-registry": [],
        "log-format": "text",
      },
    });
  });

  it.each([
    [[], "--image: is required; --digest: is required: one per platform"],
    [["--image", "ghcr.io/org/app:v1", "--digest", `linux/amd64=${D1}`], "--image: "],
    [
      ["--image", "ghcr.io/org/app", "--digest", D1],
      `--digest "${D1}": must be os/arch[/variant]=sha256:`,
    ],
    [
      ["--image", "ghcr.io/org/app", "--digest", "linux/amd64=sha256:abc"],
      '--digest "linux/amd64=sha256:abc": the digest must be',
    ],
    [
      ["--image", "ghcr.io/org/app", "--digest", `unknown/unknown=${D1}`],
      "is not a runnable platform",
    ],
    [
      [
        "--image",
        "ghcr.io/org/app",
        "--digest",
        `linux/arm64=${D1}`,
        "--digest",
        `linux/arm64/v8=${D2}`,
      ],
      `--digest "linux/arm64/v8=${D2}": linux/arm64/v8 is given twice; an index holds one image per platform`,
    ],
    [
      ["--image", "ghcr.io/org/app", "--digest", `linux/amd64=ghcr.io/org/other@${D1}`],
      "ghcr.io/org/other is not the --image repository ghcr.io/org/app",
    ],
    [
      ["--image", "ghcr.io/org/app", "--digest", `linux/amd64=${D1}`, "--tag=-bad"],
      '--tag "-bad": must be at most 128',
    ],
    [
      ["--image", "ghcr.io/org/app", "--digest", `linux/amd64=${D1}`, "--annotation", "novalue"],
      '--annotation "novalue": must be KEY=VALUE',
    ],
    [
      [
        "--image",
        "ghcr.io/org/app",
        "--digest",
        `linux/amd64=${D1}`,
        "--annotation",
        "a=1",
        "--annotation",
        "a=2",
      ],
      '--annotation "a=2": a is given twice',
    ],
    [
      ["--image", "ghcr.io/org/app", "--digest", `linux/amd64=${D1}`, "--format", "v1"],
      "--format: must be oci or docker",
    ],
    [
      ["--image", "ghcr.io/org/app", "--digest", `linux/amd64=${D1}`, "--expect-digest", "abc"],
      "--expect-digest: must be sha256:<64 lower-case hex digits>",
    ],
    [
      [
        "--image",
        "ghcr.io/org/app",
        "--digest",
        `linux/amd64=${D1}`,
        "--insecure-registry",
        "http://x",
      ],
      '--insecure-registry "http://x": must be host or host:port',
    ],
    [
      ["--image", "ghcr.io/org/app", "--digest", `linux/amd64=${D1}`, "--ca-file", ""],
      "--ca-file: must not be empty",
    ],
    [
      ["--image", "ghcr.io/org/app", "--digest", `linux/amd64=${D1}`, "--bogus"],
      "Unknown option '--bogus'",
    ],
    [["--image", "ghcr.io/org/app", "extra"], "Unexpected argument 'extra'"],
  ])("%j is refused: %s", (argv, message) => {
    const parsed = parseAssembleArgs(argv);
    expect(parsed.kind).toBe("usage");
    expect(parsed.kind === "usage" ? parsed.message : "").toContain(message);
  });

  it("exits 2 with the reason first and the usage after it", async () => {
    const result = await runAssemble(["--image", "ghcr.io/org/app", "--digest", "linux/amd64"]);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr.split("\n")[0]).toBe(
      'buildfarm assemble: --digest "linux/amd64": must be os/arch[/variant]=sha256:<64 hex digits>, e.g. linux/arm64=sha256:…',
    );
    expect(result.stderr).toContain("usage: buildfarm assemble");
  });

  it("--help prints the usage and exits 0", async () => {
    const result = await runAssemble(["--help"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("exit codes: 0 done, 1 failed");
  });
});

describe("the termination message", () => {
  const output: AssembleOutput = {
    digest: D1,
    image: `registry.example.com/team/app@${D1}`,
    mediaType: "application/vnd.oci.image.index.v1+json",
    platforms: ["linux/amd64", "linux/arm64"],
    tags: ["v1", "latest"],
  };

  it("is the stdout line when it fits", () => {
    expect(terminationMessage(output)).toBe(JSON.stringify(output));
  });

  it("drops tags from the end, and says how many, to stay within 4096 bytes", () => {
    const tags = Array.from({ length: 64 }, (_, i) => `${"t".repeat(120)}${i}`);
    const text = terminationMessage({ ...output, tags });
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(TERMINATION_MESSAGE_LIMIT);
    const parsed = JSON.parse(text) as AssembleOutput & { tagsOmitted: number };
    expect(parsed.digest).toBe(D1);
    expect(parsed.tags).toEqual(tags.slice(0, parsed.tags.length));
    expect(parsed.tags.length + parsed.tagsOmitted).toBe(64);
  });
});

describe("docker config files", () => {
  async function load(content: unknown, raw?: string) {
    const dir = await temp.make();
    await writeFile(join(dir, "config.json"), raw ?? JSON.stringify(content));
    const redactor = new Redactor();
    const warnings: string[] = [];
    const logger: Logger = {
      debug: () => {},
      info: () => {},
      warn: (_, message) => warnings.push(message),
      error: () => {},
    };
    const store = await CredentialStore.load(dir, redactor, logger);
    return { store, redactor, warnings, dir };
  }

  it.each([
    ["https://index.docker.io/v1/", "docker.io"],
    ["index.docker.io", "docker.io"],
    ["registry-1.docker.io", "docker.io"],
    ["docker.io", "docker.io"],
    ["https://ghcr.io", "ghcr.io"],
    ["http://LOCALHOST:5000/v2/", "localhost:5000"],
    ["registry.example.com:443", "registry.example.com:443"],
  ])("the auths key %s is for %s", (key, registry) => {
    expect(authKeyRegistry(key)).toBe(registry);
  });

  it("reads auth, username/password, identitytoken and registrytoken entries, and redacts them all", async () => {
    const { store, redactor } = await load({
      auths: {
        "https://index.docker.io/v1/": {
          auth: Buffer.from("hub-user:hub:pass").toString("base64"),
        },
        "ghcr.io": { username: "gh", password: "ghp_secret" },
        "myregistry.azurecr.io": { identitytoken: "refresh-secret" },
        "registry.example.com": { registrytoken: "bearer-secret" },
      },
    });
    expect(store.lookup("docker.io")).toEqual({ username: "hub-user", password: "hub:pass" });
    expect(store.lookup("registry-1.docker.io")).toEqual({
      username: "hub-user",
      password: "hub:pass",
    });
    expect(store.lookup("ghcr.io")).toEqual({ username: "gh", password: "ghp_secret" });
    expect(store.lookup("myregistry.azurecr.io")).toEqual({ identityToken: "refresh-secret" });
    expect(store.lookup("registry.example.com")).toEqual({ registryToken: "bearer-secret" });
    expect(store.lookup("quay.io")).toBeUndefined();
    const text = `hub:pass ghp_secret refresh-secret bearer-secret ${Buffer.from("gh:ghp_secret").toString("base64")}`;
    expect(redactor.redact(text)).toBe(Array(5).fill(REDACTED).join(" "));
  });

  it("reads the legacy .dockercfg layout", async () => {
    const { store } = await load({
      "quay.io": { auth: Buffer.from("q:w").toString("base64"), email: "x@y" },
    });
    expect(store.lookup("quay.io")).toEqual({ username: "q", password: "w" });
  });

  it("warns once about credsStore and credHelpers", async () => {
    const { warnings } = await load({
      credsStore: "osxkeychain",
      credHelpers: { "gcr.io": "gcloud" },
    });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('credsStore "osxkeychain", credHelpers for gcr.io');
  });

  it("means anonymous access when the file is missing", async () => {
    const store = await CredentialStore.load(
      join(tmpdir(), "does-not-exist-buildfarm"),
      new Redactor(),
    );
    expect(store.registries()).toEqual([]);
  });

  it("refuses a broken file without quoting it", async () => {
    const secret = "hunter2-very-secret";
    const error = await load(undefined, `{"auths": {"x": {"password": "${secret}"}`).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(RegistryError);
    expect((error as Error).message).toMatch(
      /^the docker config .*config\.json is not valid JSON$/,
    );
    const bad = await load({
      auths: { x: { auth: Buffer.from(secret).toString("base64") } },
    }).catch((e: unknown) => e);
    expect((bad as Error).message).toMatch(
      /has an "auth" for "x" that is not base64 of username:password$/,
    );
    expect(String(bad)).not.toContain(secret);
  });
});
