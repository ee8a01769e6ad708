import { describe, expect, it } from "vitest";
import { selectorMatches } from "../../src/builderpool/policy.ts";
import {
  type AdmissionInput,
  admit,
  referencedSecrets,
  registryHost,
} from "../../src/imagebuild/admission.ts";
import { exampleBuild, examplePool } from "./fixtures.ts";

const DOCKER = { type: "kubernetes.io/dockerconfigjson", keys: [".dockerconfigjson"] };

const base = (): AdmissionInput => ({
  pool: examplePool(),
  buildNamespaceLabels: {},
  pushSecret: DOCKER,
  secrets: {},
});

describe("admission admits a build its pool can run", () => {
  it("maps every platform to the pool architecture that builds it natively", () => {
    const result = admit(exampleBuild(), base());
    expect(result).toEqual({
      admitted: true,
      plan: {
        pool: "default",
        poolNamespace: "buildfarm-builders",
        buildkitImage: "moby/buildkit:v0.24.0-rootless",
        targets: [
          { platform: "linux/amd64", slug: "amd64", architecture: "amd64" },
          { platform: "linux/arm64", slug: "arm64", architecture: "arm64" },
        ],
        insecureRegistries: [],
      },
    });
  });

  it("serves linux/arm64/v8 as linux/arm64, and linux/arm/v7 only where an architecture lists it", () => {
    const pool = examplePool({
      spec: {
        architectures: [
          { name: "amd64" },
          { name: "arm64", platforms: ["linux/arm64", "linux/arm/v7"] },
        ],
      },
    });
    const build = exampleBuild({ spec: { platforms: ["linux/arm64/v8", "linux/arm/v7"] } });
    const result = admit(build, { ...base(), pool });
    expect(result.admitted && result.plan.targets).toEqual([
      { platform: "linux/arm64/v8", slug: "arm64", architecture: "arm64" },
      { platform: "linux/arm/v7", slug: "arm-v7", architecture: "arm64" },
    ]);
  });

  it("admits other namespaces whose labels match spec.allowedNamespaces", () => {
    const build = exampleBuild({
      metadata: { namespace: "team-a" },
      spec: { poolRef: { name: "default", namespace: "buildfarm-builders" } },
    });
    const result = admit(build, {
      ...base(),
      buildNamespaceLabels: { "buildfarm.dev/builds": "allowed" },
    });
    expect(result.admitted).toBe(true);
  });

  it("names the git token secret after the URL's host and keeps the port", () => {
    const build = exampleBuild({
      spec: {
        source: {
          git: { url: "https://git.example.com:8443/team/app.git", authSecretRef: { name: "git" } },
        },
      },
    });
    const result = admit(build, {
      ...base(),
      secrets: { git: { type: "Opaque", keys: ["token"] } },
    });
    expect(result.admitted && result.plan.gitAuth).toEqual({
      kind: "token",
      host: "git.example.com:8443",
    });
  });

  it("passes the output registry to assemble when the pool marks it http or insecure", () => {
    const pool = examplePool({
      spec: {
        registries: [
          { host: "registry.example.com", http: true },
          { host: "other.example.com", insecure: true },
        ],
      },
    });
    const result = admit(exampleBuild(), { ...base(), pool });
    expect(result.admitted && result.plan.insecureRegistries).toEqual(["registry.example.com"]);
  });

  it("admits a build with spec.verify (the check runs before any tag)", () => {
    const result = admit(
      exampleBuild({ spec: { verify: { command: ["/app/selftest"] } } }),
      base(),
    );
    expect(result.admitted).toBe(true);
  });
});

interface Case {
  name: string;
  build?: Parameters<typeof exampleBuild>[0];
  input?: Partial<AdmissionInput>;
  phase: "Pending" | "Failed";
  reason: string;
  message: RegExp;
}

const cases: Case[] = [
  {
    name: "the pool is missing (it may still appear)",
    input: { pool: undefined },
    phase: "Pending",
    reason: "PoolNotFound",
    message: /BuilderPool "default" not found in namespace "buildfarm-builders"; create it/,
  },
  {
    name: "the pool's spec is invalid",
    input: {
      pool: undefined,
      poolError: "spec.architectures: must list at least one architecture",
    },
    phase: "Pending",
    reason: "PoolInvalid",
    message: /invalid spec.*must list at least one architecture/,
  },
  {
    name: "another namespace, and the pool admits only its own",
    build: {
      metadata: { namespace: "team-a" },
      spec: { poolRef: { name: "default", namespace: "buildfarm-builders" } },
    },
    input: { pool: examplePool({ spec: { allowedNamespaces: null } }) },
    phase: "Failed",
    reason: "NamespaceNotAllowed",
    message:
      /accepts builds only from its own namespace "buildfarm-builders"; set spec.allowedNamespaces/,
  },
  {
    name: "another namespace whose labels do not match",
    build: {
      metadata: { namespace: "team-a" },
      spec: { poolRef: { name: "default", namespace: "buildfarm-builders" } },
    },
    input: { buildNamespaceLabels: { "buildfarm.dev/builds": "no" } },
    phase: "Failed",
    reason: "NamespaceNotAllowed",
    message:
      /namespace "team-a" may not use BuilderPool buildfarm-builders\/default.*buildfarm.dev\/builds=allowed/,
  },
  {
    name: "an empty selector admits no other namespace",
    build: {
      metadata: { namespace: "team-a" },
      spec: { poolRef: { name: "default", namespace: "buildfarm-builders" } },
    },
    input: { pool: examplePool({ spec: { allowedNamespaces: { matchLabels: null } } }) },
    phase: "Failed",
    reason: "NamespaceNotAllowed",
    message: /only from its own namespace/,
  },
  {
    name: "a platform no architecture serves",
    input: {
      pool: examplePool({
        metadata: { name: "gpu" },
        spec: { architectures: [{ name: "amd64" }] },
      }),
    },
    build: { spec: { poolRef: { name: "gpu" } } },
    phase: "Failed",
    reason: "PlatformNotServed",
    message: /^pool "gpu" has no builders for linux\/arm64; add arm64 to spec.architectures$/,
  },
  {
    name: "linux/arm/v7 where no architecture lists it",
    build: { spec: { platforms: ["linux/arm/v7"] } },
    phase: "Failed",
    reason: "PlatformNotServed",
    message:
      /no builders for linux\/arm\/v7; add arm to spec.architectures, or list linux\/arm\/v7 in the platforms of an arm64 architecture/,
  },
  {
    name: "a platform its architecture's explicit list leaves out",
    input: {
      pool: examplePool({
        spec: {
          architectures: [{ name: "amd64" }, { name: "arm64", platforms: ["linux/arm/v7"] }],
        },
      }),
    },
    phase: "Failed",
    reason: "PlatformNotServed",
    message: /linux\/arm64; list linux\/arm64 in the platforms of its arm64 architecture/,
  },
  {
    name: "the push Secret is missing",
    input: { pushSecret: undefined },
    phase: "Pending",
    reason: "PushSecretNotFound",
    message:
      /push Secret "registry-push" not found in namespace "buildfarm-builders"; create a kubernetes.io\/dockerconfigjson Secret/,
  },
  {
    name: "the push Secret has the wrong type",
    input: { pushSecret: { type: "Opaque", keys: ["config.json"] } },
    phase: "Failed",
    reason: "PushSecretInvalid",
    message: /has type Opaque; it must be kubernetes.io\/dockerconfigjson/,
  },
  {
    name: "a build secret's Secret is missing",
    build: { spec: { secrets: [{ id: "npmrc", secretRef: { name: "npm", key: "npmrc" } }] } },
    phase: "Pending",
    reason: "SecretNotFound",
    message: /Secret "npm" for build secret "npmrc" not found/,
  },
  {
    name: "a build secret's key is missing",
    build: { spec: { secrets: [{ id: "npmrc", secretRef: { name: "npm", key: "npmrc" } }] } },
    input: { secrets: { npm: { type: "Opaque", keys: ["other"] } } },
    phase: "Pending",
    reason: "SecretKeyNotFound",
    message: /Secret "npm" has no key "npmrc" for build secret "npmrc"/,
  },
  {
    name: "a build secret is a ServiceAccount token",
    build: { spec: { secrets: [{ id: "tok", secretRef: { name: "deployer", key: "token" } }] } },
    input: {
      secrets: {
        deployer: { type: "kubernetes.io/service-account-token", keys: ["token", "ca.crt"] },
      },
    },
    phase: "Failed",
    reason: "SecretTypeNotAllowed",
    message:
      /Secret "deployer" has type kubernetes.io\/service-account-token: a build may not carry/,
  },
  {
    name: "the git auth Secret is a bootstrap token",
    build: { spec: { source: { git: { authSecretRef: { name: "boot" } } } } },
    input: { secrets: { boot: { type: "bootstrap.kubernetes.io/token", keys: ["token"] } } },
    phase: "Failed",
    reason: "SecretTypeNotAllowed",
    message: /Secret "boot" has type bootstrap.kubernetes.io\/token/,
  },
  {
    name: "the git auth Secret is missing",
    build: { spec: { source: { git: { authSecretRef: { name: "git" } } } } },
    phase: "Pending",
    reason: "GitAuthSecretNotFound",
    message: /git auth Secret "git" not found/,
  },
  {
    name: "an ssh URL with a token-only Secret",
    build: {
      spec: {
        source: {
          git: {
            url: "git@github.com:docker/welcome-to-docker.git",
            authSecretRef: { name: "git" },
          },
        },
      },
    },
    input: { secrets: { git: { type: "Opaque", keys: ["token"] } } },
    phase: "Pending",
    reason: "GitAuthSecretInvalid",
    message: /has no "ssh-privatekey" key; an ssh URL authenticates with a private key/,
  },
  {
    name: "credentials over git://",
    build: {
      spec: {
        source: { git: { url: "git://example.com/app.git", authSecretRef: { name: "git" } } },
      },
    },
    input: { secrets: { git: { type: "Opaque", keys: ["token"] } } },
    phase: "Failed",
    reason: "InvalidSource",
    message: /cannot be used with a git:\/\/ URL/,
  },
  {
    name: "the same platform twice",
    build: { spec: { platforms: ["linux/arm64", "linux/arm64/v8"] } },
    phase: "Failed",
    reason: "DuplicatePlatform",
    message: /linux\/arm64 and linux\/arm64\/v8 are the same platform/,
  },
  {
    name: "a cache tag too long for the platform suffix",
    build: { spec: { cache: { ref: `registry.example.com/demo/app:${"t".repeat(125)}` } } },
    phase: "Failed",
    reason: "InvalidCacheOptions",
    message: /too long to add the platform suffix -amd64/,
  },
  {
    name: "an inline file where the Dockerfile goes",
    build: {
      spec: {
        source: {
          git: null,
          inline: { dockerfile: "FROM scratch", files: [{ path: "Dockerfile", content: "x" }] },
        },
      },
    },
    phase: "Failed",
    reason: "InvalidSource",
    message:
      /the Dockerfile \(spec.dockerfile "Dockerfile"\) and spec.source.inline.files\[0\] "Dockerfile" cannot both exist/,
  },
  {
    name: "a permanent problem and a missing pool: Failed wins",
    build: { spec: { cache: { ref: `registry.example.com/demo/app:${"t".repeat(125)}` } } },
    input: { pool: undefined },
    phase: "Failed",
    reason: "InvalidCacheOptions",
    message: /too long to add the platform suffix/,
  },
];

describe("admission refuses with a verdict a person can act on", () => {
  it.each(cases)("$name → $phase $reason", ({ build, input, phase, reason, message }) => {
    const result = admit(exampleBuild(build), { ...base(), ...input });
    expect(result).toMatchObject({ admitted: false, phase, reason });
    expect(!result.admitted && result.message).toMatch(message);
  });
});

describe("label selectors", () => {
  const labels = { team: "a", tier: "gold" };
  it.each([
    [{ matchLabels: { team: "a" } }, true],
    [{ matchLabels: { team: "b" } }, false],
    [{ matchExpressions: [{ key: "team", operator: "In" as const, values: ["a", "b"] }] }, true],
    [{ matchExpressions: [{ key: "team", operator: "NotIn" as const, values: ["a"] }] }, false],
    [{ matchExpressions: [{ key: "absent", operator: "NotIn" as const, values: ["a"] }] }, true],
    [{ matchExpressions: [{ key: "tier", operator: "Exists" as const }] }, true],
    [{ matchExpressions: [{ key: "tier", operator: "DoesNotExist" as const }] }, false],
  ])("%j matches %s", (selector, expected) => {
    expect(selectorMatches(selector, labels)).toBe(expected);
  });
});

describe("what the reconciler reads for admission", () => {
  it("lists the push Secret apart from git auth and build secrets, each once", () => {
    const build = exampleBuild({
      spec: {
        source: { git: { authSecretRef: { name: "git" } } },
        secrets: [
          { id: "a", secretRef: { name: "shared", key: "a" } },
          { id: "b", secretRef: { name: "shared", key: "b" } },
        ],
      },
    });
    expect(referencedSecrets(build)).toEqual({ push: "registry-push", others: ["git", "shared"] });
  });

  it.each([
    ["registry.example.com/demo/app", "registry.example.com"],
    ["localhost:5000/app", "localhost:5000"],
    ["library/app", undefined],
    ["app", undefined],
  ])("the registry host of %s is %s", (repository, host) => {
    expect(registryHost(repository)).toBe(host);
  });
});
