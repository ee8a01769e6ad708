// BuilderPool: what a platform team declares. Each architecture becomes a Deployment of
// rootless buildkitd pinned to native nodes of that architecture.
import { z } from "zod";
import {
  cel,
  conditions,
  DNS_SUBDOMAIN,
  duration,
  keyedList,
  labelMap,
  labelSelector,
  observedGeneration,
  quantity,
  resources,
  setList,
  toleration,
} from "./meta.ts";
import { ARCHITECTURES, platform } from "./platform.ts";
import { IMAGE_REFERENCE, REGISTRY_HOST } from "./reference.ts";

/** The BuildKit release the operator is tested against; pools may pin another. */
export const DEFAULT_BUILDKIT_IMAGE = "moby/buildkit:v0.24.0-rootless";
/**
 * The SBOM scanner BuildKit v0.24 runs when a build asks for attest:sbom without a generator
 * (frontend/attestations/parse.go, defaultSBOMGenerator). A moving tag: pin a digest for
 * reproducible SBOMs, or a mirror for builders that cannot reach Docker Hub.
 */
export const DEFAULT_SBOM_GENERATOR = "docker/buildkit-syft-scanner:stable-1";

export const autoscaling = cel(
  z
    .object({
      minReplicas: z
        .number()
        .int()
        .min(0)
        .max(64)
        .default(0)
        .describe("Fewest builders kept running; 0 lets an idle architecture scale to zero."),
      maxReplicas: z.number().int().min(1).max(64).describe("Most builders the queue may wake."),
      buildsPerReplica: z
        .number()
        .int()
        .min(1)
        .max(64)
        .default(2)
        .describe("Queued plus running builds one builder is sized for."),
      scaleDownDelay: duration
        .default("5m")
        .describe("How long demand must stay lower before builders are removed."),
    })
    .refine((a) => a.minReplicas <= a.maxReplicas, {
      message: "minReplicas must not exceed maxReplicas",
    })
    .describe("Size this architecture's builders from its queued and running builds."),
  {
    rule: "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
    message: "minReplicas must not exceed maxReplicas",
  },
);

export const architectureSpec = z
  .object({
    name: z
      .enum(ARCHITECTURES, {
        message: `must be one of ${ARCHITECTURES.join(", ")}`,
      })
      .describe("The CPU architecture, as in the kubernetes.io/arch node label."),
    replicas: z
      .number()
      .int()
      .min(0, { message: "must not be negative" })
      .max(64)
      .default(1)
      .describe("How many buildkitd builders run for this architecture."),
    platforms: setList(platform, 8, "platform")
      .optional()
      .describe(
        "Platforms these builders serve natively. Defaults to linux/<name>; add e.g. linux/arm/v7 to an arm64 entry whose nodes can run 32-bit arm code.",
      ),
    nodeSelector: labelMap
      .optional()
      .describe("Extra node labels the builders require, beside kubernetes.io/arch."),
    tolerations: z
      .array(toleration)
      .max(16)
      .optional()
      .describe("Tolerations for tainted build nodes."),
    resources: resources.optional().describe("CPU and memory for each buildkitd container."),
    maxConcurrentBuilds: z
      .number()
      .int()
      .min(1)
      .max(1000)
      .optional()
      .describe("Overrides the pool's maxConcurrentBuilds for this architecture."),
    autoscaling: autoscaling.optional(),
  })
  .describe("Builders for one CPU architecture.");
export type ArchitectureSpec = z.infer<typeof architectureSpec>;

export const registryConfig = z
  .object({
    host: z
      .string()
      .max(253)
      .regex(REGISTRY_HOST, {
        message: "must be host or host:port, e.g. registry.example.com:5000",
      })
      .describe("Registry host and optional port, as in image references."),
    http: z
      .boolean()
      .default(false)
      .describe("Talk plain HTTP to this registry (only for registries inside a trusted network)."),
    insecure: z
      .boolean()
      .default(false)
      .describe("Accept a TLS certificate that does not verify (self-signed test registries)."),
  })
  .describe("How builders and the index step reach one registry.");
export type RegistryConfig = z.infer<typeof registryConfig>;

export const gcPolicy = z
  .object({
    enabled: z.boolean().default(true).describe("Run BuildKit's garbage collector."),
    keepStorage: quantity
      .default("10Gi")
      .describe("Build cache kept on each builder before the oldest records are pruned."),
    keepDuration: duration
      .default("168h")
      .describe("Cache records unused for longer than this are pruned."),
  })
  .describe("BuildKit cache garbage collection on each builder.");

const EXTRA_FLAG = /^--[a-z0-9][a-z0-9-]*(=[A-Za-z0-9._:/,=@+-]*)?$/;
const FORBIDDEN_FLAGS = ["--addr", "--root", "--config", "--tlscacert", "--tlscert", "--tlskey"];

export const buildkitSpec = z
  .object({
    image: z
      .string()
      .max(512)
      .regex(IMAGE_REFERENCE, {
        message: "must be an image reference such as moby/buildkit:v0.24.0-rootless",
      })
      .default(DEFAULT_BUILDKIT_IMAGE)
      .describe("The rootless BuildKit image the builders run."),
    extraFlags: z
      .array(
        cel(
          z
            .string()
            .max(256)
            .regex(EXTRA_FLAG, { message: "must be one --flag or --flag=value with no spaces" })
            .refine((flag) => !FORBIDDEN_FLAGS.includes(flag.split("=")[0] as string), {
              message: `must not be one of ${FORBIDDEN_FLAGS.join(", ")}: the operator sets these`,
            }),
          {
            rule: `!(${FORBIDDEN_FLAGS.map((flag) => `self == '${flag}' || self.startsWith('${flag}=')`).join(" || ")})`,
            message: `must not be one of ${FORBIDDEN_FLAGS.join(", ")}: the operator sets these`,
          },
        ),
      )
      .max(16)
      .optional()
      .describe("Extra buildkitd flags, such as --oci-worker-snapshotter=native."),
    gc: gcPolicy.prefault({}),
    maxParallelism: z
      .number()
      .int()
      .min(1)
      .max(256)
      .optional()
      .describe("Most build steps one builder runs at once (BuildKit's max-parallelism)."),
    sbomGenerator: z
      .string()
      .max(512)
      .regex(IMAGE_REFERENCE, {
        message:
          "must be an image reference such as docker/buildkit-syft-scanner:stable-1 (no ',' or '\"')",
      })
      .default(DEFAULT_SBOM_GENERATOR)
      .describe(
        "The SBOM scanner image (BuildKit's SBOM generator protocol) the builders run for builds with spec.attestations.sbom, passed as attest:sbom=generator=<image>. The builders pull it themselves.",
      ),
  })
  .describe("The buildkitd the builders run.");
export type BuildkitSpec = z.infer<typeof buildkitSpec>;

export const cacheVolume = cel(
  z
    .object({
      type: z
        .enum(["EmptyDir", "Persistent"])
        .default("EmptyDir")
        .describe(
          "EmptyDir keeps the local cache for the life of a pod; Persistent gives each builder a PersistentVolumeClaim that keeps RUN --mount=type=cache content across restarts.",
        ),
      size: quantity
        .default("20Gi")
        .describe("Size limit of the emptyDir, or requested size of each claim."),
      storageClassName: z
        .string()
        .max(253)
        .optional()
        .describe("StorageClass for Persistent claims; the cluster default when empty."),
    })
    .describe("Where each builder keeps BuildKit's state and local cache."),
  {
    rule: "self.type == 'Persistent' || !has(self.storageClassName)",
    message: "storageClassName applies only to type Persistent",
  },
);

export const TRUST_LEVELS = ["Trusted", "Untrusted"] as const;
export type Trust = (typeof TRUST_LEVELS)[number];

export const isolationSpec = z
  .object({
    runtimeClassName: z
      .string()
      .min(1)
      .max(253)
      .regex(DNS_SUBDOMAIN, { message: "must be a RuntimeClass name" })
      .optional()
      .describe(
        "RuntimeClass of the builder pods, e.g. a Kata Containers or gVisor class, so each builder runs in a sandbox of its own (the cluster must define it).",
      ),
    hostUsers: z
      .boolean()
      .optional()
      .describe(
        "false runs each builder pod in a user namespace of its own (pod spec.hostUsers: false). Needs Kubernetes >= 1.33, where user namespaces are on by default, and nodes that support them; see the README.",
      ),
    trust: z
      .enum(TRUST_LEVELS)
      .default("Trusted")
      .describe(
        "Untrusted for builds of code nobody reviewed (fork pull requests): such a pool's builds export their registry cache only under refs whose tag ends in -untrusted and import only such refs, and builds on Trusted pools may not name such refs. Cannot change once set.",
      ),
  })
  .describe("How far the pool's builders are kept apart from the cluster and from other pools.");
export type IsolationSpec = z.infer<typeof isolationSpec>;

/** The trust of a pool; a pool without spec.isolation is Trusted. */
export function trustOf(pool: BuilderPoolSpec): Trust {
  return pool.isolation?.trust ?? "Trusted";
}

const TRUST_OF = (root: string) =>
  `(has(${root}.isolation) && has(${root}.isolation.trust) ? ${root}.isolation.trust : 'Trusted')`;
const TRUST_IMMUTABLE_MESSAGE =
  "spec.isolation.trust cannot change: the builders' local cache holds what builds of the old trust wrote; create a new pool";

export const builderPoolSpec = cel(
  z
    .object({
      architectures: keyedList(architectureSpec, "name", 8)
        .min(1, { message: "must list at least one architecture" })
        .describe("The CPU architectures this pool builds for, each on its own native nodes."),
      buildkit: buildkitSpec.prefault({}),
      cache: cacheVolume.prefault({}),
      maxConcurrentBuilds: z
        .number()
        .int()
        .min(1)
        .max(1000)
        .default(4)
        .describe(
          "Builds running at once per architecture; more wait Queued, first come first served.",
        ),
      allowedNamespaces: labelSelector
        .optional()
        .describe(
          "Namespaces whose ImageBuilds may use this pool, by label. When empty, only the pool's own namespace.",
        ),
      registries: keyedList(registryConfig, "host", 16)
        .optional()
        .describe("Registries that need plain HTTP or an unverified certificate."),
      isolation: isolationSpec.optional(),
    })
    .describe("A farm of rootless BuildKit builders, one Deployment per CPU architecture."),
  // A transition rule: the API server checks it on updates only.
  { rule: `${TRUST_OF("self")} == ${TRUST_OF("oldSelf")}`, message: TRUST_IMMUTABLE_MESSAGE },
);
export type BuilderPoolSpec = z.infer<typeof builderPoolSpec>;

/** The build slots of one architecture: its own maxConcurrentBuilds, else the pool's. */
export function capacityOf(pool: BuilderPoolSpec, architecture: string): number {
  const arch = pool.architectures.find((candidate) => candidate.name === architecture);
  return arch?.maxConcurrentBuilds ?? pool.maxConcurrentBuilds;
}

export const architectureStatus = z
  .object({
    name: z.string().max(16).describe("The architecture."),
    replicas: z.number().int().min(0).describe("Builders desired."),
    readyReplicas: z.number().int().min(0).describe("Builders passing their readiness probe."),
    queued: z.number().int().min(0).optional().describe("Builds waiting for this architecture."),
    running: z.number().int().min(0).optional().describe("Builds running on this architecture."),
    conditions: conditions.optional(),
  })
  .describe("The observed state of one architecture's builders.");
export type ArchitectureStatus = z.infer<typeof architectureStatus>;

export const builderPoolStatus = z
  .object({
    observedGeneration: observedGeneration("status"),
    conditions: conditions.optional(),
    architectures: keyedList(architectureStatus, "name", 8)
      .optional()
      .describe("Per architecture: builders desired and ready."),
    summary: z
      .string()
      .max(256)
      .optional()
      .describe("Ready builders per architecture in one line, e.g. amd64 2/2, arm64 1/1."),
    certificateNotAfter: z
      .string()
      .max(64)
      .optional()
      .describe("When the builders' server certificate expires (RFC 3339)."),
  })
  .describe("The observed state of the pool.");
export type BuilderPoolStatus = z.infer<typeof builderPoolStatus>;

/** The platforms an architecture serves, by default its own linux platform. */
export function servedPlatforms(arch: ArchitectureSpec): string[] {
  return arch.platforms && arch.platforms.length > 0 ? arch.platforms : [`linux/${arch.name}`];
}
