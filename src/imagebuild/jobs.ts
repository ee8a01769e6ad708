// The objects a build runs as: one Job per platform (`<build>-<slug>`), the index Job
// (`<build>-index`) and, for inline sources, the context ConfigMap (`<build>-context`). Pure
// functions of the build and its plan; every pod meets Pod Security "restricted" and runs
// argv arrays only (no shell anywhere).
//
// A platform pod: buildctl runs as the init container and writes --metadata-file into the
// `out` emptyDir. It cannot write /dev/termination-log itself: buildctl writes the metadata
// atomically (a temporary file beside the target, then a rename) and /dev is root-owned.
// The one regular container then copies the file into its termination message with the
// image's own `cp` (busybox in the Alpine-based moby/buildkit images), which opens the
// kubelet's 0666 termination-log file in place. A failed buildctl is a failed init container
// whose FallbackToLogsOnError message is the tail of its log. Beside it, the `cache-report`
// container runs `buildfarm cache-report` in the operator's image: it sums up buildctl's
// --trace (cache-report.ts) into its own termination message, so the metadata path is the
// same whether or not a report can be made, and it always exits 0.
import type {
  V1Affinity,
  V1ConfigMap,
  V1Container,
  V1EnvVar,
  V1Job,
  V1PodSecurityContext,
  V1SecurityContext,
  V1Volume,
  V1VolumeMount,
} from "@kubernetes/client-node";
import { parseDuration } from "../api/meta.ts";
import { parsePlatform } from "../api/platform.ts";
import type { ImageBuild } from "../api/resources.ts";
import { DEFAULT_OPERATOR_IMAGE } from "../config.ts";
import {
  ANNOTATIONS,
  BUILD_PATHS,
  buildJobName,
  buildPodLabels,
  COMPONENTS,
  clientSecretName,
  DEFAULT_OPERATOR_IMAGE_PLATFORMS,
  indexJobName,
  inlineContextName,
  LABELS,
  TLS_KEYS,
  tagJobName,
  verifyJobName,
} from "../naming.ts";
import { ownerReference } from "../runtime/apply.ts";
import {
  type BuildPlan,
  DOCKER_CONFIG_KEY,
  GIT_SSH_KEY,
  GIT_TOKEN_KEY,
  type PlatformTarget,
} from "./admission.ts";
import { type BuilderEndpoint, buildctlArgv, builderEndpoint } from "./argv.ts";
import { type AssembleStep, assembleArgs, type PlatformDigest } from "./assemble-contract.ts";
import { cacheReportArgs } from "./cache-report.ts";
import { jobContainerResources } from "./resources.ts";

/** The rootless BuildKit image's user (USER 1000:1000); build pods run as it. */
export const BUILD_USER = 1000;
/** The operator image's user (distroless nonroot); the index Job runs as it. */
export const OPERATOR_USER = 65532;

export const CONTAINERS = {
  buildctl: "buildctl",
  report: "report",
  cacheReport: "cache-report",
  assemble: "assemble",
  verify: "verify",
} as const;

/** The index Job's attempts and deadline: `assemble` only talks to the registry and is idempotent. */
export const INDEX_BACKOFF_LIMIT = 3;
export const INDEX_DEADLINE_SECONDS = 600;

const READ_ONLY_FILE_MODE = 0o440;

const VOLUMES = {
  certs: "buildkit-client",
  dockerConfig: "docker-config",
  secrets: "build-secrets",
  gitAuth: "git-auth",
  out: "out",
  trace: "trace",
  tmp: "tmp",
  context: "context",
  inline: "inline-context",
} as const;

/** The ConfigMap keys of an inline source: the Dockerfile, then file-<n> in spec order. */
export const INLINE_DOCKERFILE_KEY = "dockerfile";
export const inlineFileKey = (index: number) => `file-${index}`;

/** Pod Security "restricted": non-root, RuntimeDefault seccomp; fsGroup lets the user read 0440 Secret files. */
export function podSecurityContext(user: number): V1PodSecurityContext {
  return {
    runAsNonRoot: true,
    runAsUser: user,
    runAsGroup: user,
    fsGroup: user,
    seccompProfile: { type: "RuntimeDefault" },
  };
}

export function containerSecurityContext(): V1SecurityContext {
  return {
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    runAsNonRoot: true,
    capabilities: { drop: ["ALL"] },
  };
}

/**
 * A required node affinity on Linux nodes of these architectures (kubernetes.io/arch has no
 * variant: linux/arm/v7 asks for arm).
 */
function nodesOf(architectures: readonly string[]): V1Affinity {
  return {
    nodeAffinity: {
      requiredDuringSchedulingIgnoredDuringExecution: {
        nodeSelectorTerms: [
          {
            matchExpressions: [
              { key: "kubernetes.io/arch", operator: "In", values: [...new Set(architectures)] },
              { key: "kubernetes.io/os", operator: "In", values: ["linux"] },
            ],
          },
        ],
      },
    },
  };
}

/** The architectures the operator image has a build for (--operator-image-platforms). */
function operatorArchitectures(options: IndexJobOptions): string[] {
  return (options.platforms ?? DEFAULT_OPERATOR_IMAGE_PLATFORMS).map(
    (platform) => parsePlatform(platform).architecture,
  );
}

function ownedMetadata(
  build: ImageBuild,
  name: string,
  labels: Record<string, string>,
  annotations?: Record<string, string>,
) {
  return {
    name,
    namespace: build.metadata.namespace,
    labels,
    ...(annotations ? { annotations } : {}),
    ownerReferences: [ownerReference(build)],
  };
}

function platformLabels(build: ImageBuild, plan: BuildPlan, target: PlatformTarget) {
  return {
    ...buildPodLabels(
      build.metadata.name,
      plan.pool,
      plan.poolNamespace,
      COMPONENTS.build,
      target.architecture,
    ),
    [LABELS.platform]: target.slug,
  };
}

function secretVolume(name: string, secretName: string, items: [string, string][]): V1Volume {
  return {
    name,
    secret: {
      secretName,
      items: items.map(([key, path]) => ({ key, path })),
      defaultMode: READ_ONLY_FILE_MODE,
    },
  };
}

const emptyDir = (name: string, sizeLimit: string): V1Volume => ({ name, emptyDir: { sizeLimit } });

/** Push credentials as a docker config directory: `.dockerconfigjson` becomes `config.json`. */
function dockerConfig(build: ImageBuild): {
  volumes: V1Volume[];
  mounts: V1VolumeMount[];
  env: V1EnvVar[];
} {
  const push = build.spec.output.pushSecretRef?.name;
  if (!push) return { volumes: [], mounts: [], env: [] };
  return {
    volumes: [secretVolume(VOLUMES.dockerConfig, push, [[DOCKER_CONFIG_KEY, "config.json"]])],
    mounts: [{ name: VOLUMES.dockerConfig, mountPath: BUILD_PATHS.dockerConfig, readOnly: true }],
    env: [{ name: "DOCKER_CONFIG", value: BUILD_PATHS.dockerConfig }],
  };
}

/** HOME and TMPDIR on a small emptyDir, since the root filesystem is read-only. */
const scratchEnv: V1EnvVar[] = [
  { name: "HOME", value: BUILD_PATHS.tmp },
  { name: "TMPDIR", value: BUILD_PATHS.tmp },
];

function sourceVolumes(
  build: ImageBuild,
  plan: BuildPlan,
): { volumes: V1Volume[]; mounts: V1VolumeMount[] } {
  const volumes: V1Volume[] = [];
  const mounts: V1VolumeMount[] = [];
  const { source } = build.spec;
  const authRef = source.git?.authSecretRef?.name;
  if (authRef && plan.gitAuth) {
    const key = plan.gitAuth.kind === "token" ? GIT_TOKEN_KEY : GIT_SSH_KEY;
    volumes.push(secretVolume(VOLUMES.gitAuth, authRef, [[key, key]]));
    mounts.push({ name: VOLUMES.gitAuth, mountPath: BUILD_PATHS.gitAuth, readOnly: true });
  }
  if (source.inline) {
    // Each file is mounted by subPath into an emptyDir: a ConfigMap mounted whole would put
    // the kubelet's `..data` directory and symlinks into the build context (seen with
    // BuildKit v0.24: COPY . copies them into the image).
    volumes.push(emptyDir(VOLUMES.context, "1Mi"), {
      name: VOLUMES.inline,
      configMap: { name: inlineContextName(build.metadata.name), defaultMode: 0o444 },
    });
    mounts.push({ name: VOLUMES.context, mountPath: BUILD_PATHS.context });
    mounts.push({
      name: VOLUMES.inline,
      mountPath: `${BUILD_PATHS.context}/${build.spec.dockerfile}`,
      subPath: INLINE_DOCKERFILE_KEY,
      readOnly: true,
    });
    (source.inline.files ?? []).forEach((file, index) => {
      mounts.push({
        name: VOLUMES.inline,
        mountPath: `${BUILD_PATHS.context}/${file.path}`,
        subPath: inlineFileKey(index),
        readOnly: true,
      });
    });
  }
  const secrets = build.spec.secrets ?? [];
  if (secrets.length > 0) {
    volumes.push({
      name: VOLUMES.secrets,
      projected: {
        defaultMode: READ_ONLY_FILE_MODE,
        sources: secrets.map((secret) => ({
          secret: {
            name: secret.secretRef.name,
            items: [{ key: secret.secretRef.key, path: secret.id }],
          },
        })),
      },
    });
    mounts.push({ name: VOLUMES.secrets, mountPath: BUILD_PATHS.secrets, readOnly: true });
  }
  return { volumes, mounts };
}

/**
 * One platform's Job: buildctl against the platform's builder, then the metadata copy and the
 * cache report (in the operator's image, `reporter`).
 */
export function buildJob(
  build: ImageBuild,
  plan: BuildPlan,
  target: PlatformTarget,
  endpoint: BuilderEndpoint = builderEndpoint(plan, target),
  reporter: IndexJobOptions = { image: DEFAULT_OPERATOR_IMAGE },
): V1Job {
  const labels = platformLabels(build, plan, target);
  const push = dockerConfig(build);
  const source = sourceVolumes(build, plan);
  const outMount: V1VolumeMount = { name: VOLUMES.out, mountPath: BUILD_PATHS.out };
  const traceMount: V1VolumeMount = { name: VOLUMES.trace, mountPath: BUILD_PATHS.trace };
  const buildctl: V1Container = {
    name: CONTAINERS.buildctl,
    image: plan.buildkitImage,
    command: ["buildctl"],
    args: buildctlArgv(build, plan, target, endpoint),
    env: [...scratchEnv, ...push.env],
    volumeMounts: [
      { name: VOLUMES.certs, mountPath: BUILD_PATHS.certs, readOnly: true },
      ...push.mounts,
      ...source.mounts,
      outMount,
      traceMount,
      { name: VOLUMES.tmp, mountPath: BUILD_PATHS.tmp },
    ],
    resources: jobContainerResources("build", plan.jobResources, build.spec.jobResources?.build),
    securityContext: containerSecurityContext(),
    terminationMessagePolicy: "FallbackToLogsOnError",
  };
  const report: V1Container = {
    name: CONTAINERS.report,
    image: plan.buildkitImage,
    command: ["cp"],
    args: [BUILD_PATHS.metadataFile, BUILD_PATHS.terminationLog],
    volumeMounts: [{ ...outMount, readOnly: true }],
    resources: jobContainerResources("report", plan.jobResources, undefined),
    securityContext: containerSecurityContext(),
    terminationMessagePath: BUILD_PATHS.terminationLog,
    terminationMessagePolicy: "FallbackToLogsOnError",
  };
  // The image's entrypoint is `node dist/cli.js`, as in the index Job. It runs as the pod's
  // user (1000), not the image's: buildctl creates the trace mode 0600.
  const cacheReport: V1Container = {
    name: CONTAINERS.cacheReport,
    image: reporter.image,
    args: cacheReportArgs(),
    volumeMounts: [{ ...traceMount, readOnly: true }],
    resources: jobContainerResources("cacheReport", plan.jobResources, undefined),
    securityContext: containerSecurityContext(),
    terminationMessagePath: BUILD_PATHS.terminationLog,
    terminationMessagePolicy: "FallbackToLogsOnError",
  };
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    // Where buildctl goes, readable from the Job's metadata (the caches drop pod templates):
    // a restarted operator keeps the choice instead of routing the platform again.
    metadata: ownedMetadata(build, buildJobName(build.metadata.name, target.slug), labels, {
      [ANNOTATIONS.builder]: endpoint.address,
      ...(endpoint.pod ? { [ANNOTATIONS.builderPod]: endpoint.pod } : {}),
    }),
    spec: {
      backoffLimit: build.spec.retries,
      activeDeadlineSeconds: Math.max(1, Math.ceil(parseDuration(build.spec.timeout) / 1000)),
      template: {
        metadata: { labels: { ...labels } },
        spec: {
          restartPolicy: "Never",
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          // The cache report runs the operator's image: only on nodes it has a build for.
          affinity: nodesOf(operatorArchitectures(reporter)),
          securityContext: podSecurityContext(BUILD_USER),
          initContainers: [buildctl],
          containers: [report, cacheReport],
          volumes: [
            secretVolume(VOLUMES.certs, clientSecretName(build.metadata.name), [
              [TLS_KEYS.ca, TLS_KEYS.ca],
              [TLS_KEYS.cert, TLS_KEYS.cert],
              [TLS_KEYS.key, TLS_KEYS.key],
            ]),
            ...push.volumes,
            ...source.volumes,
            emptyDir(VOLUMES.out, "1Mi"),
            // No size limit: the trace grows with the build's log (BuildKit clips each step's
            // log at 2 MiB by default), and buildctl fails when it cannot write the trace, as
            // the kubelet would evict a pod over an emptyDir's limit. It goes with the pod.
            { name: VOLUMES.trace, emptyDir: {} },
            emptyDir(VOLUMES.tmp, "64Mi"),
          ],
        },
      },
    },
  };
}

export interface IndexJobOptions {
  /** The operator's own image, whose entrypoint is the `buildfarm` command. */
  image: string;
  /** The image's non-root user; 65532 for the distroless operator image. */
  user?: number;
  /**
   * The platforms the image runs on (--operator-image-platforms): the Job goes only to nodes of
   * these, since a node of another architecture fails it with `exec format error`.
   */
  platforms?: readonly string[];
}

function assembleJob(
  build: ImageBuild,
  plan: BuildPlan,
  name: string,
  component: string,
  args: string[],
  options: IndexJobOptions,
): V1Job {
  const labels = buildPodLabels(build.metadata.name, plan.pool, plan.poolNamespace, component);
  const push = dockerConfig(build);
  const user = options.user ?? OPERATOR_USER;
  const architectures = operatorArchitectures(options);
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: ownedMetadata(build, name, labels),
    spec: {
      backoffLimit: INDEX_BACKOFF_LIMIT,
      activeDeadlineSeconds: INDEX_DEADLINE_SECONDS,
      template: {
        metadata: { labels: { ...labels } },
        spec: {
          restartPolicy: "Never",
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          affinity: nodesOf(architectures),
          securityContext: podSecurityContext(user),
          containers: [
            {
              name: CONTAINERS.assemble,
              image: options.image,
              args: ["assemble", ...args],
              env: [...scratchEnv, ...push.env],
              volumeMounts: [...push.mounts, { name: VOLUMES.tmp, mountPath: BUILD_PATHS.tmp }],
              resources: jobContainerResources(
                "assemble",
                plan.jobResources,
                build.spec.jobResources?.assemble,
              ),
              securityContext: containerSecurityContext(),
              terminationMessagePath: BUILD_PATHS.terminationLog,
              terminationMessagePolicy: "FallbackToLogsOnError",
            },
          ],
          volumes: [...push.volumes, emptyDir(VOLUMES.tmp, "64Mi")],
        },
      },
    },
  };
}

/**
 * The index Job: `buildfarm assemble` in the operator's image combines the platform digests
 * into one OCI index, pushes it by digest and, unless spec.verify must pass first, applies the
 * tags. The command is left to the image's entrypoint (node dist/cli.js): the distroless image
 * has no `buildfarm` on PATH.
 */
export function indexJob(
  build: ImageBuild,
  plan: BuildPlan,
  digests: readonly PlatformDigest[],
  options: IndexJobOptions,
): V1Job {
  const step: AssembleStep = { tags: build.spec.verify === undefined };
  return assembleJob(
    build,
    plan,
    indexJobName(build.metadata.name),
    COMPONENTS.index,
    assembleArgs(build, plan, digests, step),
    options,
  );
}

/**
 * The tag Job of a verified build: `assemble` again from the same digests, with the tags, and
 * refusing any index but the one the check ran against. Assembling is deterministic, so it
 * finds the index already pushed and only adds the tags.
 */
export function tagJob(
  build: ImageBuild,
  plan: BuildPlan,
  digests: readonly PlatformDigest[],
  indexDigest: string,
  options: IndexJobOptions,
): V1Job {
  return assembleJob(
    build,
    plan,
    tagJobName(build.metadata.name),
    COMPONENTS.tag,
    assembleArgs(build, plan, digests, { tags: true, expectDigest: indexDigest }),
    options,
  );
}

/** The user the check runs as: non-root (Pod Security "restricted"), whatever the image says. */
export const VERIFY_USER = 65532;

/** The architecture whose node runs a check of the built image: the first platform's. */
export function verifyArchitecture(plan: BuildPlan): string | undefined {
  return plan.targets[0]?.architecture;
}

/**
 * The verify Job: spec.verify's command, as an argv, with IMAGE=<repository>@<index digest>.
 * By default it runs in the image just built, pulled by that digest (with the push Secret as
 * pull Secret), on a node of the first platform's architecture (required affinity), so the
 * runtime picks that platform from the index. One attempt within spec.verify.timeout.
 */
export function verifyJob(build: ImageBuild, plan: BuildPlan, image: string): V1Job {
  const verify = build.spec.verify;
  if (!verify) throw new Error(`ImageBuild ${build.metadata.name} has no spec.verify`);
  const labels = buildPodLabels(
    build.metadata.name,
    plan.pool,
    plan.poolNamespace,
    COMPONENTS.verify,
  );
  const architecture = verify.image === undefined ? verifyArchitecture(plan) : undefined;
  const pull = build.spec.output.pushSecretRef?.name;
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: ownedMetadata(build, verifyJobName(build.metadata.name), labels),
    spec: {
      backoffLimit: 0,
      activeDeadlineSeconds: Math.max(1, Math.ceil(parseDuration(verify.timeout) / 1000)),
      template: {
        metadata: { labels: { ...labels } },
        spec: {
          restartPolicy: "Never",
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          ...(architecture
            ? { affinity: nodesOf([architecture]) }
            : { nodeSelector: { "kubernetes.io/os": "linux" } }),
          ...(pull ? { imagePullSecrets: [{ name: pull }] } : {}),
          securityContext: podSecurityContext(VERIFY_USER),
          containers: [
            {
              name: CONTAINERS.verify,
              image: verify.image ?? image,
              command: [...verify.command],
              ...(verify.args?.length ? { args: [...verify.args] } : {}),
              env: [
                ...(verify.env ?? []).map(({ name, value }) => ({ name, value })),
                { name: "IMAGE", value: image },
                // The root filesystem is read-only and UID 65532 has no home in most images:
                // tools that write under $HOME (caches, config) get the writable /tmp.
                ...(verify.env?.some((entry) => entry.name === "HOME")
                  ? []
                  : [{ name: "HOME", value: BUILD_PATHS.tmp }]),
                { name: "TMPDIR", value: BUILD_PATHS.tmp },
              ],
              volumeMounts: [{ name: VOLUMES.tmp, mountPath: BUILD_PATHS.tmp }],
              resources: jobContainerResources("verify", plan.jobResources, verify.resources),
              securityContext: containerSecurityContext(),
              terminationMessagePolicy: "FallbackToLogsOnError",
            },
          ],
          volumes: [emptyDir(VOLUMES.tmp, "1Gi")],
        },
      },
    },
  };
}

/** The inline source as an immutable ConfigMap, owned by the build. */
export function inlineContextConfigMap(build: ImageBuild, plan: BuildPlan): V1ConfigMap {
  const inline = build.spec.source.inline;
  if (!inline) throw new Error(`ImageBuild ${build.metadata.name} has no inline source`);
  const data: Record<string, string> = { [INLINE_DOCKERFILE_KEY]: inline.dockerfile };
  (inline.files ?? []).forEach((file, index) => {
    data[inlineFileKey(index)] = file.content;
  });
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: ownedMetadata(
      build,
      inlineContextName(build.metadata.name),
      buildPodLabels(build.metadata.name, plan.pool, plan.poolNamespace, COMPONENTS.build),
    ),
    immutable: true,
    data,
  };
}
