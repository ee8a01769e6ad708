// The builders of one architecture: rootless buildkitd pods pinned to native nodes. A Deployment
// when the cache lives in an emptyDir (pods are interchangeable), a StatefulSet when each builder
// keeps a PersistentVolumeClaim (a pod must come back to its own claim, which only a StatefulSet's
// volumeClaimTemplates give; see docs/architecture.md).
import type {
  V1Container,
  V1Deployment,
  V1PodSpec,
  V1PodTemplateSpec,
  V1Probe,
  V1ResourceRequirements,
  V1StatefulSet,
  V1Volume,
} from "@kubernetes/client-node";
import type { ArchitectureSpec } from "../api/builderpool.ts";
import type { Resources } from "../api/meta.ts";
import type { BuilderPool } from "../api/resources.ts";
import {
  ANNOTATIONS,
  BUILDER_PATHS,
  BUILDKIT_PORT,
  builderName,
  COMPONENTS,
  configMapName,
  headlessServiceName,
  poolLabels,
  serverSecretName,
  TLS_KEYS,
} from "../naming.ts";
import { stableHash } from "../runtime/hash.ts";
import { buildkitdConfig, CONFIG_KEY } from "./config.ts";
import { atLeast, builderImage, type PoolContext } from "./context.ts";
import { builderSelector, childMeta } from "./meta.ts";
import { BUILDKIT_PORT_NAME } from "./services.ts";

export const CONTAINER_NAME = "buildkitd";
/** The UID and GID the rootless image is built for (its `user`); another needs a rebuilt image. */
export const BUILDKIT_UID = 1000;
export const APPARMOR_ANNOTATION = `container.apparmor.security.beta.kubernetes.io/${CONTAINER_NAME}`;

const VOLUMES = { certs: "certs", config: "config", state: "state" } as const;

/** Quantities as strings, as the API server returns them (the spec also accepts numbers). */
function resourceRequirements(resources: Resources): V1ResourceRequirements {
  const strings = (list: Record<string, string | number> | undefined) =>
    list && Object.fromEntries(Object.entries(list).map(([name, value]) => [name, String(value)]));
  return {
    ...(resources.requests ? { requests: strings(resources.requests) } : {}),
    ...(resources.limits ? { limits: strings(resources.limits) } : {}),
  };
}

/** The argv after the image's entrypoint (`rootlesskit buildkitd`); no `command` is set. */
export function buildkitdArgs(pool: BuilderPool): string[] {
  const certs = BUILDER_PATHS.certs;
  return [
    // The local socket serves the probes (and `kubectl exec … buildctl`) without a certificate.
    "--addr",
    BUILDER_PATHS.socket,
    // mTLS for builds. An empty host listens on every address of the pod, IPv4 and IPv6, so
    // IPv6-only clusters work too (0.0.0.0 would be IPv4 only).
    "--addr",
    `tcp://:${BUILDKIT_PORT}`,
    "--tlscacert",
    `${certs}/${TLS_KEYS.ca}`,
    "--tlscert",
    `${certs}/${TLS_KEYS.cert}`,
    "--tlskey",
    `${certs}/${TLS_KEYS.key}`,
    // State and local cache on the pool's volume, never the container's writable layer.
    "--root",
    BUILDER_PATHS.state,
    "--config",
    BUILDER_PATHS.configFile,
    // A PID namespace of its own per build step needs a fresh procfs mount, which an
    // unprivileged pod's masked /proc forbids. Build steps then share the pod's PID namespace:
    // builds on one builder can see and signal each other (the pool is a trust boundary).
    "--oci-worker-no-process-sandbox",
    ...(pool.spec.buildkit.extraFlags ?? []),
  ];
}

/** `buildctl debug workers` over the local socket: is the daemon up with a worker? */
export function probeCommand(): string[] {
  return ["buildctl", "--addr", BUILDER_PATHS.socket, "debug", "workers"];
}

function probes(): Pick<V1Container, "startupProbe" | "readinessProbe" | "livenessProbe"> {
  const probe = (periodSeconds: number, failureThreshold: number): V1Probe => ({
    exec: { command: probeCommand() },
    timeoutSeconds: 10,
    periodSeconds,
    failureThreshold,
  });
  return {
    // A large persistent cache can take a while to open: up to 5 minutes before liveness counts.
    startupProbe: probe(5, 60),
    readinessProbe: probe(10, 3),
    // Lenient: a builder busy with heavy builds answers slowly but must not be killed for it.
    livenessProbe: probe(30, 5),
  };
}

function container(pool: BuilderPool, arch: ArchitectureSpec, context: PoolContext): V1Container {
  const appArmorField = atLeast(context.serverVersion, 1, 30);
  return {
    name: CONTAINER_NAME,
    image: builderImage(pool.spec.buildkit.image, context),
    imagePullPolicy: "IfNotPresent",
    args: buildkitdArgs(pool),
    ports: [{ name: BUILDKIT_PORT_NAME, containerPort: BUILDKIT_PORT, protocol: "TCP" }],
    ...probes(),
    ...(arch.resources ? { resources: resourceRequirements(arch.resources) } : {}),
    securityContext: {
      // rootlesskit maps the build's user namespace with the image's setuid newuidmap and
      // newgidmap; no_new_privs (allowPrivilegeEscalation: false) makes them fail with
      // "write to uid_map failed: Operation not permitted". Nothing here runs as root.
      allowPrivilegeEscalation: true,
      // rootlesskit and BuildKit call unshare(2) and mount(2) for the user and mount
      // namespaces of each build step; the runtime's default seccomp and AppArmor profiles
      // deny both. This is why the builders' namespace needs Pod Security level `privileged`.
      seccompProfile: { type: "Unconfined" },
      // Kubernetes >= 1.30 has the field; older servers only read the pod annotation.
      ...(appArmorField ? { appArmorProfile: { type: "Unconfined" } } : {}),
    },
    volumeMounts: [
      { name: VOLUMES.certs, mountPath: BUILDER_PATHS.certs, readOnly: true },
      { name: VOLUMES.config, mountPath: BUILDER_PATHS.config, readOnly: true },
      { name: VOLUMES.state, mountPath: BUILDER_PATHS.state },
    ],
  };
}

/**
 * spec.isolation on the pod: a RuntimeClass (a sandbox such as Kata or gVisor) and a user
 * namespace of its own (hostUsers: false; validate.ts refuses it on servers that would drop
 * it). The builder still runs rootlesskit's nested user namespace inside: see the README.
 */
function isolationFields(pool: BuilderPool): Pick<V1PodSpec, "runtimeClassName" | "hostUsers"> {
  const isolation = pool.spec.isolation;
  return {
    ...(isolation?.runtimeClassName ? { runtimeClassName: isolation.runtimeClassName } : {}),
    ...(isolation?.hostUsers === false ? { hostUsers: false } : {}),
  };
}

/** The pod template shared by the Deployment and the StatefulSet; `stateVolume` is the cache. */
export function podTemplate(
  pool: BuilderPool,
  arch: ArchitectureSpec,
  context: PoolContext,
  stateVolume: V1Volume | undefined,
): V1PodTemplateSpec {
  const annotations: Record<string, string> = {
    [ANNOTATIONS.certHash]: context.certHash,
    [ANNOTATIONS.configHash]: stableHash(buildkitdConfig(pool)),
  };
  if (!atLeast(context.serverVersion, 1, 30)) annotations[APPARMOR_ANNOTATION] = "unconfined";
  const volumes: V1Volume[] = [
    { name: VOLUMES.certs, secret: { secretName: serverSecretName(pool.metadata.name) } },
    {
      name: VOLUMES.config,
      configMap: {
        name: configMapName(pool.metadata.name),
        items: [{ key: CONFIG_KEY, path: CONFIG_KEY }],
      },
    },
    ...(stateVolume ? [stateVolume] : []),
  ];
  return {
    metadata: {
      labels: poolLabels(pool.metadata.name, COMPONENTS.builder, arch.name),
      annotations,
    },
    spec: {
      // buildkitd never talks to the Kubernetes API.
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      securityContext: {
        runAsUser: BUILDKIT_UID,
        runAsGroup: BUILDKIT_UID,
        runAsNonRoot: true,
        // A PersistentVolumeClaim arrives owned by root; the group makes it writable. Only
        // when its root does not match yet: a recursive chown of a BuildKit state directory
        // would rewrite the ownership of files that belong to the build's user namespace.
        fsGroup: BUILDKIT_UID,
        fsGroupChangePolicy: "OnRootMismatch",
      },
      affinity: {
        nodeAffinity: {
          // Native builds only: no emulation, so a builder runs only where its CPU does.
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [
              {
                matchExpressions: [
                  { key: "kubernetes.io/arch", operator: "In", values: [arch.name] },
                  { key: "kubernetes.io/os", operator: "In", values: ["linux"] },
                ],
              },
            ],
          },
        },
        podAntiAffinity: {
          // Spread builders over nodes when there is room: disk, CPU and failures apart.
          preferredDuringSchedulingIgnoredDuringExecution: [
            {
              weight: 100,
              podAffinityTerm: {
                topologyKey: "kubernetes.io/hostname",
                labelSelector: builderSelector(pool.metadata.name, arch.name),
              },
            },
          ],
        },
      },
      ...isolationFields(pool),
      ...(arch.nodeSelector ? { nodeSelector: { ...arch.nodeSelector } } : {}),
      ...(arch.tolerations ? { tolerations: structuredClone(arch.tolerations) } : {}),
      containers: [container(pool, arch, context)],
      volumes,
    },
  };
}

/** Replicas of an architecture: the autoscaler's decision if it made one, else the spec's. */
export function desiredReplicas(arch: ArchitectureSpec, context: PoolContext): number {
  return context.replicas?.[arch.name] ?? arch.replicas;
}

/** Builders with their cache in an emptyDir that BuildKit's GC keeps under the size limit. */
export function builderDeployment(
  pool: BuilderPool,
  arch: ArchitectureSpec,
  context: PoolContext,
): V1Deployment {
  const name = builderName(pool.metadata.name, arch.name);
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: childMeta(pool, name, { arch: arch.name }),
    spec: {
      replicas: desiredReplicas(arch, context),
      revisionHistoryLimit: 3,
      selector: builderSelector(pool.metadata.name, arch.name),
      // Start a new builder before stopping an old one: capacity never drops during a rollout
      // (a new certificate or config). With one replica this is also what 25%/25% rounds to.
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: podTemplate(pool, arch, context, {
        name: VOLUMES.state,
        // Exceeding the limit evicts the pod, so GC's keepStorage must stay below it.
        emptyDir: { sizeLimit: String(pool.spec.cache.size) },
      }),
    },
  };
}

/** Builders that each keep a PersistentVolumeClaim, so cache mounts survive restarts. */
export function builderStatefulSet(
  pool: BuilderPool,
  arch: ArchitectureSpec,
  context: PoolContext,
): V1StatefulSet {
  const name = builderName(pool.metadata.name, arch.name);
  const { size, storageClassName } = pool.spec.cache;
  return {
    apiVersion: "apps/v1",
    kind: "StatefulSet",
    metadata: childMeta(pool, name, { arch: arch.name }),
    spec: {
      replicas: desiredReplicas(arch, context),
      revisionHistoryLimit: 3,
      // Pods are addressed <pool>-<arch>-<ordinal>.<headless Service>; the Service must exist.
      serviceName: headlessServiceName(pool.metadata.name, arch.name),
      // Builders do not depend on each other: start and stop them all at once.
      podManagementPolicy: "Parallel",
      selector: builderSelector(pool.metadata.name, arch.name),
      // One pod at a time, highest ordinal first: a claim can be attached to one pod only.
      updateStrategy: { type: "RollingUpdate" },
      // Claims go with the pool, but stay when scaled down so a builder that comes back
      // finds its cache.
      persistentVolumeClaimRetentionPolicy: { whenDeleted: "Delete", whenScaled: "Retain" },
      template: podTemplate(pool, arch, context, undefined),
      volumeClaimTemplates: [
        {
          metadata: {
            name: VOLUMES.state,
            labels: poolLabels(pool.metadata.name, COMPONENTS.builder, arch.name),
          },
          spec: {
            accessModes: ["ReadWriteOnce"],
            resources: { requests: { storage: String(size) } },
            ...(storageClassName ? { storageClassName } : {}),
          },
        },
      ],
    },
  };
}

export type BuilderWorkload =
  | { kind: "Deployment"; object: V1Deployment }
  | { kind: "StatefulSet"; object: V1StatefulSet };

export function builderWorkload(
  pool: BuilderPool,
  arch: ArchitectureSpec,
  context: PoolContext,
): BuilderWorkload {
  return pool.spec.cache.type === "Persistent"
    ? { kind: "StatefulSet", object: builderStatefulSet(pool, arch, context) }
    : { kind: "Deployment", object: builderDeployment(pool, arch, context) };
}
