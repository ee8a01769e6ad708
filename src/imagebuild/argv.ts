// The argv of one platform's `buildctl build`, as an array: nothing here is ever joined into a
// shell line. Checked against BuildKit v0.24.0 (`buildctl --help`, `buildctl build --help` and
// real builds against buildkitd v0.24.0; see docs/architecture.md "ImageBuild").
//
// Injection: `--output`, `--export-cache`, `--import-cache` and `--secret` values are parsed
// by buildctl as one CSV record (encoding/csv or go-csvvalue), so a `,` in a value would start
// a new key and a `"` would change quoting. Every value placed in them comes from a schema
// pattern without `,`, `"` or line breaks (REPOSITORY, CACHE_REF, SECRET_ID, TOKEN_HOST) or
// is a constant, and csvPair() refuses anything else at run time. `--opt` values are split
// only at the first `=` (buildctl attrMap), so build argument and label values may hold any
// printable text; the schema already excludes control characters.
import { cacheRefOf, imageBuildSpec } from "../api/imagebuild.ts";
import type { ImageBuild } from "../api/resources.ts";
import { BUILD_PATHS, BUILDKIT_PORT, builderServiceHost, TLS_KEYS } from "../naming.ts";
import type { BuildPlan, PlatformTarget } from "./admission.ts";
import { GIT_SSH_KEY, GIT_TOKEN_KEY } from "./admission.ts";
import { cacheRefForPlatform } from "./cache-ref.ts";
import { gitContext, gitTokenSecretId } from "./source.ts";

/** How long buildctl waits for its builder to accept connections (`--wait --timeout`). */
export const CONNECT_TIMEOUT_SECONDS = 120;

export interface BuilderEndpoint {
  /** What buildctl dials, e.g. tcp://default-arm64.buildfarm.svc:1234. */
  address: string;
  /** The name in the builder's server certificate. */
  serverName: string;
  /** The builder pod, when the build is routed to one (cache locality) rather than the Service. */
  pod?: string;
}

/** The builder Service of the platform's architecture; its DNS name is in the server certificate. */
export function builderEndpoint(plan: BuildPlan, target: PlatformTarget): BuilderEndpoint {
  const host = builderServiceHost(plan.pool, plan.poolNamespace, target.architecture);
  return { address: `tcp://${host}:${BUILDKIT_PORT}`, serverName: host };
}

export class ArgvError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ArgvError";
  }
}

/** Characters that would end or requote a field of buildctl's CSV-parsed flags. */
const CSV_UNSAFE = /[,"\r\n]/;

/** One `key=value` field of a CSV-parsed flag; refuses a value that could inject a key. */
export function csvPair(key: string, value: string): string {
  if (CSV_UNSAFE.test(value) || CSV_UNSAFE.test(key)) {
    throw new ArgvError(`refusing ${JSON.stringify(`${key}=${value}`)} in a CSV flag of buildctl`);
  }
  return `${key}=${value}`;
}

function csv(pairs: readonly (readonly [string, string])[]): string {
  return pairs.map(([key, value]) => csvPair(key, value)).join(",");
}

/** Where a build secret's file is mounted in the build pod. */
export function secretPath(id: string): string {
  return `${BUILD_PATHS.secrets}/${id}`;
}

/** The `--output` value: push the platform's image by digest only; tags come with the index. */
export function imageOutput(image: string): string {
  return csv([
    ["type", "image"],
    ["name", image],
    ["push-by-digest", "true"],
    ["name-canonical", "true"],
    ["push", "true"],
    ["oci-mediatypes", "true"],
  ]);
}

/**
 * The `--export-cache` and `--import-cache` values for one platform. A build on an Untrusted
 * pool exports under its own default ref (admission refuses named refs of the other trust).
 */
export function cacheFlags(build: ImageBuild, slug: string, plan?: BuildPlan): string[] {
  const cache = build.spec.cache;
  if (cache.disabled) return [];
  const trust = plan?.untrusted ? "Untrusted" : "Trusted";
  const ref = cacheRefForPlatform(cacheRefOf(build.spec, trust), slug);
  const exportPairs: [string, string][] = [
    ["type", "registry"],
    ["ref", ref],
    ["mode", cache.mode],
    ["image-manifest", String(cache.imageManifest)],
    ["oci-mediatypes", String(cache.ociMediaTypes)],
  ];
  if (!cache.failOnExportError) exportPairs.push(["ignore-error", "true"]);
  const imports = [ref, ...(cache.importFrom ?? []).map((from) => cacheRefForPlatform(from, slug))];
  return [
    "--export-cache",
    csv(exportPairs),
    ...[...new Set(imports)].flatMap((from) => [
      "--import-cache",
      csv([
        ["type", "registry"],
        ["ref", from],
      ]),
    ]),
  ];
}

/**
 * spec.attestations as the frontend's attest:* options, which BuildKit parses as CSV
 * (frontend/attestations/parse.go); buildx passes `--sbom generator=…` the same way. None by
 * default: buildctl, unlike buildx, adds no provenance of its own.
 */
export function attestationFlags(build: ImageBuild, plan: BuildPlan): string[] {
  const attestations = build.spec.attestations;
  if (!attestations) return [];
  const flags: string[] = [];
  if (attestations.provenance) {
    flags.push("--opt", `attest:provenance=${csv([["mode", attestations.provenance.mode]])}`);
  }
  if (attestations.sbom) {
    if (!plan.sbomGenerator)
      throw new ArgvError("spec.attestations.sbom needs the pool's sbomGenerator");
    flags.push("--opt", `attest:sbom=${csv([["generator", plan.sbomGenerator]])}`);
  }
  return flags;
}

function sourceFlags(build: ImageBuild, plan: BuildPlan): string[] {
  const { source, dockerfile } = build.spec;
  const flags: string[] = [];
  if (source.git) {
    flags.push("--opt", `context=${gitContext(source.git)}`);
    if (plan.gitAuth?.kind === "token") {
      flags.push(
        "--secret",
        csv([
          ["id", gitTokenSecretId(plan.gitAuth.host)],
          ["src", `${BUILD_PATHS.gitAuth}/${GIT_TOKEN_KEY}`],
        ]),
      );
    }
    if (plan.gitAuth?.kind === "ssh") {
      // ParseSSH splits the paths at ','; ours is a constant.
      flags.push("--ssh", `default=${BUILD_PATHS.gitAuth}/${GIT_SSH_KEY}`);
    }
  } else {
    flags.push(
      "--local",
      `context=${BUILD_PATHS.context}`,
      "--local",
      `dockerfile=${BUILD_PATHS.context}`,
    );
  }
  flags.push("--opt", `filename=${dockerfile}`);
  return flags;
}

/**
 * buildctl's argv (without the program name) for one platform of a build the schema
 * accepted. The same build, plan and target always give the same array.
 */
export function buildctlArgv(
  build: ImageBuild,
  plan: BuildPlan,
  target: PlatformTarget,
  endpoint: BuilderEndpoint = builderEndpoint(plan, target),
): string[] {
  const checked = imageBuildSpec.safeParse(build.spec);
  if (!checked.success) {
    throw new ArgvError(
      `refusing to build from a spec the schema rejects: ${checked.error.issues.map((issue) => issue.message).join("; ")}`,
    );
  }
  const { spec } = build;
  if (!spec.platforms.includes(target.platform)) {
    throw new ArgvError(`platform ${target.platform} is not in spec.platforms`);
  }
  const argv = [
    "--addr",
    endpoint.address,
    "--tlsservername",
    endpoint.serverName,
    "--tlscacert",
    `${BUILD_PATHS.certs}/${TLS_KEYS.ca}`,
    "--tlscert",
    `${BUILD_PATHS.certs}/${TLS_KEYS.cert}`,
    "--tlskey",
    `${BUILD_PATHS.certs}/${TLS_KEYS.key}`,
    "--wait",
    "--timeout",
    String(CONNECT_TIMEOUT_SECONDS),
    "build",
    "--progress",
    "plain",
    // The same progress stream as JSON lines, for the cache report; the plain log stays as is.
    "--trace",
    BUILD_PATHS.traceFile,
    "--frontend",
    "dockerfile.v0",
    ...sourceFlags(build, plan),
    "--opt",
    `platform=${target.platform}`,
    ...(spec.target === undefined ? [] : ["--opt", `target=${spec.target}`]),
    ...(spec.contexts ?? []).flatMap((context) => [
      "--opt",
      `context:${context.name}=docker-image://${context.image}`,
    ]),
    ...(spec.buildArgs ?? []).flatMap((arg) => ["--opt", `build-arg:${arg.name}=${arg.value}`]),
    ...(spec.labels ?? []).flatMap((label) => ["--opt", `label:${label.name}=${label.value}`]),
    ...attestationFlags(build, plan),
    ...(spec.secrets ?? []).flatMap((secret) => [
      "--secret",
      csv([
        ["id", secret.id],
        ["src", secretPath(secret.id)],
      ]),
    ]),
    "--output",
    imageOutput(spec.output.image),
    ...cacheFlags(build, target.slug, plan),
    "--metadata-file",
    BUILD_PATHS.metadataFile,
  ];
  for (const element of argv) {
    if (/[\0\r\n]/.test(element)) {
      throw new ArgvError(
        `refusing an argv element with a line break or NUL: ${JSON.stringify(element)}`,
      );
    }
  }
  return argv;
}
