// Deterministic names, labels and in-pod paths shared by the pool and build controllers.
// A restarted operator finds what it made by these names instead of making it twice, and the
// builders' NetworkPolicy admits build pods by these labels.
import type { Architecture } from "./api/platform.ts";

export const MANAGED_BY = "buildfarm";

export const LABELS = {
  managedBy: "app.kubernetes.io/managed-by",
  name: "app.kubernetes.io/name",
  instance: "app.kubernetes.io/instance",
  component: "app.kubernetes.io/component",
  pool: "buildfarm.dev/pool",
  poolNamespace: "buildfarm.dev/pool-namespace",
  arch: "buildfarm.dev/arch",
  build: "buildfarm.dev/build",
  /** The platform a build Job builds, as a label-safe slug: amd64, arm64, arm-v7. */
  platform: "buildfarm.dev/platform",
} as const;

export const COMPONENTS = {
  builder: "builder",
  build: "build",
  index: "index",
  verify: "verify",
  tag: "tag",
} as const;

export const ANNOTATIONS = {
  /** Hash of the desired object, so the operator writes only when it changed. */
  specHash: "buildfarm.dev/spec-hash",
  /** Hash of the server certificate on the builder pod template: a new one rolls the pods. */
  certHash: "buildfarm.dev/cert-hash",
  /** Hash of buildkitd.toml on the builder pod template: buildkitd reads it only at start. */
  configHash: "buildfarm.dev/config-hash",
  /** On a platform Job: the address its buildctl dials, chosen once when the Job was made. */
  builder: "buildfarm.dev/builder",
  /** On a platform Job routed to one builder pod: that pod's name. */
  builderPod: "buildfarm.dev/builder-pod",
} as const;

export const BUILDKIT_PORT = 1234;

/**
 * The platforms the operator's image is built for (--operator-image-platforms): the index and
 * tag Jobs, which run it, go only to nodes of these.
 */
export const DEFAULT_OPERATOR_IMAGE_PLATFORMS = ["linux/amd64", "linux/arm64"] as const;

/** Builder Deployment (or StatefulSet) and its Service: `<pool>-<arch>`. */
export const builderName = (pool: string, arch: Architecture | string) => `${pool}-${arch}`;
/** The headless twin, for per-pod addressing: `<pool>-<arch>-headless`. */
export const headlessServiceName = (pool: string, arch: Architecture | string) =>
  `${pool}-${arch}-headless`;
export const caSecretName = (pool: string) => `${pool}-buildkit-ca`;
export const serverSecretName = (pool: string) => `${pool}-buildkit-server`;
export const configMapName = (pool: string) => `${pool}-buildkitd-config`;
export const networkPolicyName = (pool: string) => `${pool}-builders`;
export const pdbName = (pool: string, arch: Architecture | string) => `${pool}-${arch}`;

/** The Service DNS name buildctl dials and checks the server certificate against. */
export const builderServiceHost = (pool: string, namespace: string, arch: Architecture | string) =>
  `${builderName(pool, arch)}.${namespace}.svc`;

export const buildJobName = (build: string, arch: Architecture | string) => `${build}-${arch}`;
export const indexJobName = (build: string) => `${build}-index`;
export const verifyJobName = (build: string) => `${build}-verify`;
export const tagJobName = (build: string) => `${build}-tag`;
export const clientSecretName = (build: string) => `${build}-buildkit-client`;
export const inlineContextName = (build: string) => `${build}-context`;

/** Keys of the TLS Secrets (server and client): the kubernetes.io/tls layout plus the CA. */
export const TLS_KEYS = { ca: "ca.crt", cert: "tls.crt", key: "tls.key" } as const;
/** Keys of the CA Secret. */
export const CA_KEYS = { cert: "ca.crt", key: "ca.key" } as const;

/** Paths inside builder pods. */
export const BUILDER_PATHS = {
  certs: "/etc/buildkit/certs",
  config: "/etc/buildkit/config",
  configFile: "/etc/buildkit/config/buildkitd.toml",
  /** BuildKit's rootless state and local cache directory. */
  state: "/home/user/.local/share/buildkit",
  socket: "unix:///run/user/1000/buildkit/buildkitd.sock",
} as const;

/** Paths inside build Job pods. */
export const BUILD_PATHS = {
  certs: "/etc/buildkit/certs",
  dockerConfig: "/etc/buildfarm/docker",
  secrets: "/etc/buildfarm/secrets",
  /** The private git credential: `token` or `ssh-privatekey`, as named in the auth Secret. */
  gitAuth: "/etc/buildfarm/git",
  context: "/workspace/context",
  out: "/out",
  metadataFile: "/out/metadata.json",
  /** buildctl's --trace (a copy of its progress stream), read by the cache-report container. */
  trace: "/trace",
  traceFile: "/trace/trace.json",
  terminationLog: "/dev/termination-log",
  /** A writable emptyDir for HOME and TMPDIR: the root filesystem is read-only. */
  tmp: "/tmp",
} as const;

/** Labels every child of a pool carries. */
export function poolLabels(pool: string, component: string, arch?: string): Record<string, string> {
  return {
    [LABELS.managedBy]: MANAGED_BY,
    [LABELS.name]: "buildkitd",
    [LABELS.instance]: pool,
    [LABELS.component]: component,
    [LABELS.pool]: pool,
    ...(arch ? { [LABELS.arch]: arch } : {}),
  };
}

/** Labels of a build's Jobs and pods; the builders' NetworkPolicy admits these. */
export function buildPodLabels(
  build: string,
  pool: string,
  poolNamespace: string,
  component: string,
  arch?: string,
): Record<string, string> {
  return {
    [LABELS.managedBy]: MANAGED_BY,
    [LABELS.name]: "buildfarm-build",
    [LABELS.instance]: build,
    [LABELS.component]: component,
    [LABELS.build]: build,
    [LABELS.pool]: pool,
    [LABELS.poolNamespace]: poolNamespace,
    ...(arch ? { [LABELS.arch]: arch } : {}),
  };
}
