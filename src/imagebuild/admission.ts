// Admission: may this build run on its pool at all? A pure function of what the reconciler
// read: the pool (or why it could not be parsed), the build namespace's labels, and the type
// and key names of the Secrets the build references (never their values). The answer is
// either a plan (which pool architecture builds each platform, how to reach it, how git
// authenticates) or a verdict a person can act on: Pending while what is missing may still
// appear, Failed when only a new ImageBuild or a pool change can help.
import type { V1LabelSelector } from "@kubernetes/client-node";
import { servedPlatforms, type Trust, trustOf } from "../api/builderpool.ts";
import { cacheRefOf } from "../api/imagebuild.ts";
import {
  ARCHITECTURES,
  canonicalPlatform,
  parsePlatform,
  type SpecPlatform,
  specPlatforms,
} from "../api/platform.ts";
import { splitHost } from "../api/reference.ts";
import type { BuilderPool, ImageBuild } from "../api/resources.ts";
import { allowedNamespaceSelector, poolAdmitsNamespace } from "../builderpool/policy.ts";
import { cacheRefProblem } from "./cache-ref.ts";
import { gitHost, gitScheme, TOKEN_HOST } from "./source.ts";
import { cacheTrustVerdicts } from "./trust.ts";

export const DOCKER_CONFIG_TYPE = "kubernetes.io/dockerconfigjson";
export const DOCKER_CONFIG_KEY = ".dockerconfigjson";
/** Keys of a git auth Secret: a token for https, a private key (kubernetes.io/ssh-auth) for ssh. */
export const GIT_TOKEN_KEY = "token";
export const GIT_SSH_KEY = "ssh-privatekey";

/** What admission needs to know about a Secret: its type and key names, never its data. */
export interface SecretSummary {
  type: string;
  keys: readonly string[];
}

export interface AdmissionInput {
  /** The parsed pool, when it exists and its spec is valid. */
  pool?: BuilderPool | undefined;
  /** Why the pool exists but could not be parsed (a SpecError message). */
  poolError?: string | undefined;
  buildNamespaceLabels: Readonly<Record<string, string>>;
  /** The push Secret, when spec.output.pushSecretRef names one that exists. */
  pushSecret?: SecretSummary | undefined;
  /** The other referenced Secrets that exist, by name (see referencedSecrets). */
  secrets?: Readonly<Record<string, SecretSummary>>;
}

/** One platform of the build and the pool architecture whose builders build it. */
export interface PlatformTarget extends SpecPlatform {
  /** The pool architecture (Deployment `<pool>-<arch>`) that builds it natively. */
  architecture: string;
}

export type GitAuth = { kind: "token"; host: string } | { kind: "ssh" };

export interface BuildPlan {
  pool: string;
  poolNamespace: string;
  /** The pool's BuildKit image; it carries the matching buildctl. */
  buildkitImage: string;
  /** One per entry of spec.platforms, in that order. */
  targets: PlatformTarget[];
  gitAuth?: GitAuth;
  /** Hosts of the output registry the pool marks http or insecure, for `assemble`. */
  insecureRegistries: string[];
  /** Set when the pool is Untrusted (spec.isolation.trust): the build's cache stays apart. */
  untrusted?: true;
  /** The pool's SBOM scanner image, when the build asks for an SBOM. */
  sbomGenerator?: string;
}

export interface Verdict {
  phase: "Pending" | "Failed";
  reason: string;
  message: string;
}

export type Admission = { admitted: true; plan: BuildPlan } | ({ admitted: false } & Verdict);

/** The Secrets a build references, so the reconciler knows what to read. */
export function referencedSecrets(build: ImageBuild): { push?: string; others: string[] } {
  const others = new Set<string>();
  const auth = build.spec.source.git?.authSecretRef?.name;
  if (auth) others.add(auth);
  for (const secret of build.spec.secrets ?? []) others.add(secret.secretRef.name);
  const push = build.spec.output.pushSecretRef?.name;
  return push ? { push, others: [...others] } : { others: [...others] };
}

export function poolNamespaceOf(build: ImageBuild): string {
  return build.spec.poolRef.namespace ?? build.metadata.namespace;
}

const pending = (reason: string, message: string): Verdict => ({
  phase: "Pending",
  reason,
  message,
});
const failed = (reason: string, message: string): Verdict => ({ phase: "Failed", reason, message });

/**
 * Problems a pool cannot fix: things the schema lets through that BuildKit would refuse or
 * misread. They fail the build before anything runs.
 */
export function specProblems(build: ImageBuild, trust: Trust = "Trusted"): Verdict[] {
  const { spec } = build;
  const problems: Verdict[] = [];
  const git = spec.source.git;
  if (git) {
    if (git.authSecretRef) {
      const scheme = gitScheme(git.url);
      if (scheme === "git" || scheme === "http") {
        problems.push(
          failed(
            "InvalidSource",
            `spec.source.git.authSecretRef cannot be used with a ${scheme}:// URL, which would send the credential unencrypted; use https:// or ssh://`,
          ),
        );
      } else if (scheme === "https" && !TOKEN_HOST.test(gitHost(git.url) ?? "")) {
        problems.push(
          failed(
            "InvalidSource",
            "spec.source.git.url has a host BuildKit cannot name a token secret after; use a plain host name such as github.com",
          ),
        );
      }
    }
  }
  const inline = spec.source.inline;
  if (inline) {
    // The Dockerfile and the files share one context directory: no path may repeat another
    // or sit inside it.
    const entries = [
      {
        path: spec.dockerfile,
        what: `the Dockerfile (spec.dockerfile ${JSON.stringify(spec.dockerfile)})`,
      },
      ...(inline.files ?? []).map((file, index) => ({
        path: file.path,
        what: `spec.source.inline.files[${index}] ${JSON.stringify(file.path)}`,
      })),
    ];
    for (const [index, entry] of entries.entries()) {
      for (const other of entries.slice(0, index)) {
        const clash =
          entry.path === other.path ||
          entry.path.startsWith(`${other.path}/`) ||
          other.path.startsWith(`${entry.path}/`);
        if (clash) {
          problems.push(
            failed(
              "InvalidSource",
              `${other.what} and ${entry.what} cannot both exist in the build context; rename one`,
            ),
          );
        }
      }
    }
  }
  const seen = new Map<string, string>();
  const platforms = specPlatforms(spec.platforms);
  for (const { platform } of platforms) {
    const normalized = canonicalPlatform(platform);
    const earlier = seen.get(normalized);
    if (earlier !== undefined) {
      problems.push(
        failed(
          "DuplicatePlatform",
          `spec.platforms: ${earlier} and ${platform} are the same platform; list it once`,
        ),
      );
    }
    seen.set(normalized, platform);
  }
  if (!spec.cache.disabled) {
    const refs = [cacheRefOf(spec, trust), ...(spec.cache.importFrom ?? [])];
    for (const ref of refs) {
      for (const { slug } of platforms) {
        const problem = cacheRefProblem(ref, slug);
        if (problem) problems.push(failed("InvalidCacheOptions", `spec.cache: ${problem}`));
      }
    }
  }
  return problems;
}

function describeSelector(selector: V1LabelSelector): string {
  const parts = [
    ...Object.entries(selector.matchLabels ?? {}).map(([key, value]) => `${key}=${value}`),
    ...(selector.matchExpressions ?? []).map((requirement) =>
      requirement.operator === "Exists" || requirement.operator === "DoesNotExist"
        ? `${requirement.operator === "DoesNotExist" ? "!" : ""}${requirement.key}`
        : `${requirement.key} ${requirement.operator.toLowerCase()} (${(requirement.values ?? []).join(",")})`,
    ),
  ];
  return parts.join(", ");
}

function namespaceVerdict(
  pool: BuilderPool,
  buildNamespace: string,
  labels: Readonly<Record<string, string>>,
): Verdict | undefined {
  const poolName = `${pool.metadata.namespace}/${pool.metadata.name}`;
  // One rule for admission and the builders' NetworkPolicy (src/builderpool/policy.ts).
  if (poolAdmitsNamespace(pool, { name: buildNamespace, labels })) return undefined;
  const selector = allowedNamespaceSelector(pool);
  if (selector === undefined) {
    return failed(
      "NamespaceNotAllowed",
      `BuilderPool ${poolName} accepts builds only from its own namespace ${JSON.stringify(pool.metadata.namespace)}; set spec.allowedNamespaces on the pool to admit namespace ${JSON.stringify(buildNamespace)}`,
    );
  }
  return failed(
    "NamespaceNotAllowed",
    `namespace ${JSON.stringify(buildNamespace)} may not use BuilderPool ${poolName}: its labels do not match the pool's spec.allowedNamespaces (${describeSelector(selector)})`,
  );
}

function unservedHint(pool: BuilderPool, platform: string): string {
  const { architecture, variant } = parsePlatform(canonicalPlatform(platform));
  const named = pool.spec.architectures.find((arch) => arch.name === architecture);
  if (named) return `list ${platform} in the platforms of its ${architecture} architecture`;
  const known = (ARCHITECTURES as readonly string[]).includes(architecture);
  if (architecture === "arm" && variant !== undefined) {
    return `add arm to spec.architectures, or list ${platform} in the platforms of an arm64 architecture whose nodes run 32-bit arm code`;
  }
  return known
    ? `add ${architecture} to spec.architectures`
    : `list ${platform} in the platforms of an architecture whose nodes run it`;
}

/** Maps each platform of the build to the pool architecture that serves it, or says which are unserved. */
export function targetsOf(
  build: ImageBuild,
  pool: BuilderPool,
): { targets: PlatformTarget[] } | { verdict: Verdict } {
  const targets: PlatformTarget[] = [];
  const unserved: string[] = [];
  for (const entry of specPlatforms(build.spec.platforms)) {
    const normalized = canonicalPlatform(entry.platform);
    const arch = pool.spec.architectures.find((candidate) =>
      servedPlatforms(candidate).some((served) => canonicalPlatform(served) === normalized),
    );
    if (arch) targets.push({ ...entry, architecture: arch.name });
    else unserved.push(entry.platform);
  }
  if (unserved.length === 0) return { targets };
  const hints = [...new Set(unserved.map((platform) => unservedHint(pool, platform)))];
  return {
    verdict: failed(
      "PlatformNotServed",
      `pool ${JSON.stringify(pool.metadata.name)} has no builders for ${unserved.join(", ")}; ${hints.join("; ")}`,
    ),
  };
}

/** The registry host of a repository, as Docker reads references (splitHost). */
export function registryHost(repository: string): string | undefined {
  return splitHost(repository).host;
}

/**
 * Secret types a build may not carry: the cluster's own credentials. A build sends what it
 * mounts wherever its Dockerfile likes (an image, a RUN step's network), so referencing a
 * ServiceAccount's token would hand out that account's rights to whoever can create builds.
 */
const CLUSTER_CREDENTIAL_TYPES = new Set([
  "kubernetes.io/service-account-token",
  "bootstrap.kubernetes.io/token",
]);

function clusterCredential(name: string, secret: SecretSummary): Verdict | undefined {
  if (!CLUSTER_CREDENTIAL_TYPES.has(secret.type)) return undefined;
  return failed(
    "SecretTypeNotAllowed",
    `Secret ${JSON.stringify(name)} has type ${secret.type}: a build may not carry the cluster's own credentials; put what the build needs in an Opaque Secret`,
  );
}

function secretVerdicts(build: ImageBuild, input: AdmissionInput): Verdict[] {
  const verdicts: Verdict[] = [];
  const namespace = build.metadata.namespace;
  const pushRef = build.spec.output.pushSecretRef?.name;
  if (pushRef) {
    const push = input.pushSecret;
    if (!push) {
      verdicts.push(
        pending(
          "PushSecretNotFound",
          `push Secret ${JSON.stringify(pushRef)} not found in namespace ${JSON.stringify(namespace)}; create a ${DOCKER_CONFIG_TYPE} Secret with push rights to ${build.spec.output.image} (kubectl create secret docker-registry)`,
        ),
      );
    } else if (push.type !== DOCKER_CONFIG_TYPE) {
      verdicts.push(
        failed(
          "PushSecretInvalid",
          `push Secret ${JSON.stringify(pushRef)} has type ${push.type || "(none)"}; it must be ${DOCKER_CONFIG_TYPE} (kubectl create secret docker-registry)`,
        ),
      );
    } else if (!push.keys.includes(DOCKER_CONFIG_KEY)) {
      verdicts.push(
        pending(
          "PushSecretInvalid",
          `push Secret ${JSON.stringify(pushRef)} has no ${DOCKER_CONFIG_KEY} key`,
        ),
      );
    }
  }
  const secrets = input.secrets ?? {};
  const git = build.spec.source.git;
  const authRef = git?.authSecretRef?.name;
  if (git && authRef) {
    const scheme = gitScheme(git.url);
    const key = scheme === "ssh" ? GIT_SSH_KEY : GIT_TOKEN_KEY;
    const secret = secrets[authRef];
    const forbidden = secret && clusterCredential(authRef, secret);
    if (forbidden) {
      verdicts.push(forbidden);
    } else if (!secret) {
      verdicts.push(
        pending(
          "GitAuthSecretNotFound",
          `git auth Secret ${JSON.stringify(authRef)} not found in namespace ${JSON.stringify(namespace)}`,
        ),
      );
    } else if (!secret.keys.includes(key)) {
      verdicts.push(
        pending(
          "GitAuthSecretInvalid",
          `git auth Secret ${JSON.stringify(authRef)} has no ${JSON.stringify(key)} key; ${scheme === "ssh" ? "an ssh URL authenticates with a private key (a kubernetes.io/ssh-auth Secret)" : "an https URL authenticates with a token"}`,
        ),
      );
    }
  }
  for (const entry of build.spec.secrets ?? []) {
    const { name, key } = entry.secretRef;
    const secret = secrets[name];
    const forbidden = secret && clusterCredential(name, secret);
    if (forbidden) {
      verdicts.push(forbidden);
    } else if (!secret) {
      verdicts.push(
        pending(
          "SecretNotFound",
          `Secret ${JSON.stringify(name)} for build secret ${JSON.stringify(entry.id)} not found in namespace ${JSON.stringify(namespace)}`,
        ),
      );
    } else if (!secret.keys.includes(key)) {
      verdicts.push(
        pending(
          "SecretKeyNotFound",
          `Secret ${JSON.stringify(name)} has no key ${JSON.stringify(key)} for build secret ${JSON.stringify(entry.id)}`,
        ),
      );
    }
  }
  return verdicts;
}

/**
 * Decides whether the build may run. Every check runs; a Failed verdict (permanent) wins
 * over a Pending one, so a person learns what only a new build can fix before waiting on
 * something that may still appear.
 */
export function admit(build: ImageBuild, input: AdmissionInput): Admission {
  const pool = input.pool;
  const trust = pool ? trustOf(pool.spec) : "Trusted";
  const verdicts: Verdict[] = [...specProblems(build, trust)];
  const poolName = build.spec.poolRef.name;
  const poolNamespace = poolNamespaceOf(build);
  let targets: PlatformTarget[] | undefined;
  if (!pool) {
    verdicts.push(
      input.poolError === undefined
        ? pending(
            "PoolNotFound",
            `BuilderPool ${JSON.stringify(poolName)} not found in namespace ${JSON.stringify(poolNamespace)}; create it, or point spec.poolRef at an existing pool`,
          )
        : pending(
            "PoolInvalid",
            `BuilderPool ${poolNamespace}/${poolName} has an invalid spec, so builds wait until it is fixed: ${input.poolError}`,
          ),
    );
  } else {
    const namespace = namespaceVerdict(pool, build.metadata.namespace, input.buildNamespaceLabels);
    if (namespace) verdicts.push(namespace);
    verdicts.push(...cacheTrustVerdicts(build, pool));
    const mapped = targetsOf(build, pool);
    if ("verdict" in mapped) verdicts.push(mapped.verdict);
    else targets = mapped.targets;
  }
  verdicts.push(...secretVerdicts(build, input));

  const verdict = verdicts.find((v) => v.phase === "Failed") ?? verdicts[0];
  if (verdict) return { admitted: false, ...verdict };
  if (!pool || !targets) throw new Error("admission: a pool without a verdict must map platforms");

  const git = build.spec.source.git;
  const gitAuth: GitAuth | undefined =
    git?.authSecretRef === undefined
      ? undefined
      : gitScheme(git.url) === "ssh"
        ? { kind: "ssh" }
        : { kind: "token", host: gitHost(git.url) as string };
  const host = registryHost(build.spec.output.image);
  const insecureRegistries = (pool.spec.registries ?? [])
    .filter((registry) => registry.host === host && (registry.http || registry.insecure))
    .map((registry) => registry.host);
  return {
    admitted: true,
    plan: {
      pool: pool.metadata.name,
      poolNamespace: pool.metadata.namespace,
      buildkitImage: pool.spec.buildkit.image,
      targets,
      ...(gitAuth ? { gitAuth } : {}),
      insecureRegistries,
      ...(trust === "Untrusted" ? { untrusted: true as const } : {}),
      ...(build.spec.attestations?.sbom ? { sbomGenerator: pool.spec.buildkit.sbomGenerator } : {}),
    },
  };
}
