// The tests' cluster where builds are real: test/local-cluster's (test/kube with real pods, a
// real registry with the busybox base image, the operator in this process) plus a registry
// proxy that refuses cache manifests, a build secret, the pool `farm` and a git daemon serving
// the fixture Dockerfiles. Shared by the tests in this directory and bench/buildkit.ts.
import { randomBytes } from "node:crypto";
import type { RunningOperator } from "../../src/operator.ts";
import type { Kube, KubeObject } from "../kube/index.ts";
import {
  type Arch,
  type BuildkitTools,
  type ClusterDns,
  type GitServer,
  type ImageRun,
  type LocalCluster,
  OPERATOR_NAMESPACE,
  type RealPods,
  type RunningRegistry,
  startGitServer,
  startInClusterOperator,
  startLocalCluster,
} from "../local-cluster/index.ts";
import { type FaultyProxy, startFaultyProxy } from "../registry/proxy.ts";

export { OPERATOR_NAMESPACE, realClusterInputs } from "../local-cluster/index.ts";
export const POOL_NAMESPACE = "builders";
export const BUILD_NAMESPACE = "apps";
export const POOL = "farm";
export const SECRET_NAME = "build-token";
/** The build secret's id in the Dockerfile and the ImageBuild. */
export const SECRET_ID = "token";

/** The fixture repository: `main` builds, `fail` fails on amd64 while arm64 still runs. */
export function dockerfiles(baseImage: string): Record<string, Record<string, string>> {
  return {
    main: {
      "app/Dockerfile": [
        `FROM ${baseImage}`,
        "ARG GREETING=hello",
        'RUN uname -m > /arch && echo "$GREETING" > /greeting',
        "COPY message.txt /message.txt",
        // Proves the secret is readable during the build without writing it anywhere.
        `RUN --mount=type=secret,id=${SECRET_ID},required=true sha256sum /run/secrets/${SECRET_ID} | cut -d " " -f 1 > /secret.sha256`,
        "",
      ].join("\n"),
      "app/message.txt": "copied from the git context\n",
    },
    fail: {
      "app/Dockerfile": [
        `FROM ${baseImage}`,
        "ARG TARGETARCH",
        'RUN if [ "$TARGETARCH" = amd64 ]; then echo "failing on purpose on $TARGETARCH"; exit 3; fi; sleep 300',
        "",
      ].join("\n"),
    },
  };
}

export interface RealCluster {
  kube: Kube;
  pods: RealPods;
  /** Containers that ran a pushed image (verify Jobs), as pushedImageExecutor ran them. */
  images: ImageRun[];
  operator: RunningOperator;
  /** Stops the operator and starts it again with these flags after the cluster's own. */
  restartOperator(args: string[]): Promise<void>;
  registry: RunningRegistry;
  /** The same registry behind a proxy that refuses cache manifests (tags buildcache*). */
  refusing: FaultyProxy;
  git: GitServer;
  baseImage: string;
  /** The build secret's value: it must end up in no blob. */
  secretValue: string;
  stop(): Promise<void>;
}

export interface RealClusterOptions {
  replicas?: Partial<Record<Arch, number>>;
  logLevel?: string;
  /** The cluster DNS the pods see (default CoreDNS). */
  clusterDns?: ClusterDns;
  /** --builder-cache-interval (default 2s: the tests wait for the metric). */
  builderCacheInterval?: string;
  /**
   * The operator's --operator-image, made once the cluster's registry is up and before the
   * operator starts (default: the chart's image, run from this checkout by the kubelet).
   */
  operatorImage?: (local: LocalCluster) => Promise<string>;
}

export async function startRealCluster(
  tools: BuildkitTools,
  debs: Record<Arch, string>,
  options: RealClusterOptions = {},
): Promise<RealCluster> {
  const local = await startLocalCluster(tools, debs, {
    namespaces: [POOL_NAMESPACE, BUILD_NAMESPACE, OPERATOR_NAMESPACE],
    ...(options.clusterDns ? { clusterDns: options.clusterDns } : {}),
  });
  try {
    const { kube, registry, baseImage } = local;
    const refusing = await startFaultyProxy(registry.url, (method, path) =>
      method === "PUT" && /\/manifests\/buildcache/.test(path) ? { status: 403 } : undefined,
    );
    local.onStop(() => refusing.stop());
    const git = await startGitServer("app", dockerfiles(baseImage));
    local.onStop(() => git.stop());
    const operatorImage = options.operatorImage ? await options.operatorImage(local) : undefined;
    const operatorArgs = [
      `--log-level=${options.logLevel ?? "warn"}`,
      `--builder-cache-interval=${options.builderCacheInterval ?? "2s"}`,
      ...(operatorImage ? [`--operator-image=${operatorImage}`] : []),
    ];
    let operator = await startInClusterOperator(local, { args: operatorArgs });

    const secretValue = `bf-secret-${randomBytes(12).toString("hex")}`;
    kube.store.create("secrets", {
      metadata: { name: SECRET_NAME, namespace: BUILD_NAMESPACE },
      type: "Opaque",
      data: { [SECRET_ID]: Buffer.from(secretValue).toString("base64") },
    } as KubeObject);
    kube.store.create("builderpools.buildfarm.dev", {
      apiVersion: "buildfarm.dev/v1alpha1",
      kind: "BuilderPool",
      metadata: { name: POOL, namespace: POOL_NAMESPACE },
      spec: {
        architectures: (["amd64", "arm64"] as const).map((name) => ({
          name,
          replicas: options.replicas?.[name] ?? 1,
        })),
        cache: { type: "EmptyDir", size: "4Gi" },
        buildkit: { gc: { keepStorage: "2Gi", keepDuration: "1h" } },
        registries: [
          { host: registry.host, http: true },
          { host: refusing.host, http: true },
        ],
        allowedNamespaces: {
          matchLabels: { "kubernetes.io/metadata.name": BUILD_NAMESPACE },
        },
      },
    } as KubeObject);
    return {
      kube,
      pods: local.pods,
      images: local.images,
      get operator() {
        return operator;
      },
      async restartOperator(args) {
        await operator.manager.stop();
        operator = await startInClusterOperator(local, { args: [...operatorArgs, ...args] });
      },
      registry,
      refusing,
      git,
      baseImage,
      secretValue,
      stop: local.stop,
    };
  } catch (error) {
    await local.stop();
    throw error;
  }
}

export interface BuildOptions {
  name: string;
  revision?: string;
  platforms?: string[];
  image?: string;
  tags?: string[];
  cache?: Record<string, unknown>;
  verify?: Record<string, unknown>;
}

/** An ImageBuild of the fixture repository. */
export function imageBuild(cluster: RealCluster, options: BuildOptions): KubeObject {
  return {
    apiVersion: "buildfarm.dev/v1alpha1",
    kind: "ImageBuild",
    metadata: { name: options.name, namespace: BUILD_NAMESPACE },
    spec: {
      poolRef: { name: POOL, namespace: POOL_NAMESPACE },
      source: {
        git: { url: cluster.git.url, revision: options.revision ?? "main", subPath: "app" },
      },
      dockerfile: "Dockerfile",
      platforms: options.platforms ?? ["linux/amd64", "linux/arm64"],
      buildArgs: [{ name: "GREETING", value: "built by buildfarm" }],
      output: {
        image: options.image ?? `${cluster.registry.host}/app`,
        tags: options.tags ?? [],
      },
      ...(options.cache ? { cache: options.cache } : {}),
      ...(options.verify ? { verify: options.verify } : {}),
      secrets: [{ id: SECRET_ID, secretRef: { name: SECRET_NAME, key: SECRET_ID } }],
      timeout: "10m",
      retries: 0,
    },
  } as KubeObject;
}
