// A test cluster where builds are real: test/kube's API server and simulated control plane,
// whose kubelet runs builder pods, build Jobs and the index Job as real processes
// (test/kube/sim/real), the operator in this process, a real registry, a registry proxy that
// refuses cache manifests, the busybox base image and a git daemon serving the fixture
// Dockerfiles. Shared by the tests in this directory and bench/buildkit.ts.
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { OPERATOR_POD_LABELS } from "../../src/builderpool/policy.ts";
import { DEFAULT_OPERATOR_IMAGE, loadConfig } from "../../src/config.ts";
import { type RunningOperator, startOperator } from "../../src/operator.ts";
import { createLogger } from "../../src/runtime/log.ts";
import { defaultExecutor, type Kube, type KubeObject, startKube } from "../kube/index.ts";
import { RealPods } from "../kube/sim/real/executor.ts";
import type { ClusterDns } from "../kube/sim/real/network.ts";
import { type FaultyProxy, startFaultyProxy } from "../registry/proxy.ts";
import { type BuildkitTools, buildkitOrSkip } from "../support/buildkit.ts";
import { REPO_ROOT } from "../support/files.ts";
import { type RunningRegistry, startRegistry } from "../support/registry.ts";
import {
  type Arch,
  busyboxDebs,
  type GitServer,
  pushBaseImage,
  startGitServer,
} from "./fixtures.ts";
import { type ImageRun, pushedImageExecutor } from "./images.ts";

export const POOL_NAMESPACE = "builders";
/** Where the operator's pods would run; a stand-in pod there dials the builders for it. */
export const OPERATOR_NAMESPACE = "buildfarm-system";
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
  registry: RunningRegistry;
  /** The same registry behind a proxy that refuses cache manifests (tags buildcache*). */
  refusing: FaultyProxy;
  git: GitServer;
  baseImage: string;
  /** The build secret's value: it must end up in no blob. */
  secretValue: string;
  stop(): Promise<void>;
}

/**
 * What startRealCluster needs from this machine, or undefined after the one line saying why
 * `suite` skips (under CI a missing piece fails instead).
 */
export async function realClusterInputs(
  suite: string,
): Promise<{ tools: BuildkitTools; debs: Record<Arch, string> } | undefined> {
  const tools = buildkitOrSkip(suite, { arm64: true, root: true });
  if (!tools) return undefined;
  const debs = await busyboxDebs();
  if (typeof debs !== "string") return { tools, debs };
  const ci = process.env.CI;
  if (ci && ci !== "false" && ci !== "0") throw new Error(`CI is set and ${suite}: ${debs}`);
  process.stderr.write(`skipping ${suite}: ${debs}\n`);
  return undefined;
}

export interface RealClusterOptions {
  replicas?: Partial<Record<Arch, number>>;
  logLevel?: string;
  /** The cluster DNS the pods see (default CoreDNS). */
  clusterDns?: ClusterDns;
  /** --builder-cache-interval (default 2s: the tests wait for the metric). */
  builderCacheInterval?: string;
}

export async function startRealCluster(
  tools: BuildkitTools,
  debs: Record<Arch, string>,
  options: RealClusterOptions = {},
): Promise<RealCluster> {
  const stops: (() => Promise<unknown>)[] = [];
  const stop = async () => {
    for (const step of stops.reverse()) await step().catch(() => {});
  };
  try {
    const registry = await startRegistry();
    stops.push(() => registry.stop());
    const refusing = await startFaultyProxy(registry.url, (method, path) =>
      method === "PUT" && /\/manifests\/buildcache/.test(path) ? { status: 403 } : undefined,
    );
    stops.push(() => refusing.stop());
    const baseImage = await pushBaseImage(registry, debs);
    const git = await startGitServer("app", dockerfiles(baseImage));
    stops.push(() => git.stop());

    // The images the builds push run too (a verify Job checks the image it built).
    const pushed = pushedImageExecutor(registry, defaultExecutor);
    const pods = new RealPods({
      programs: {
        buildkitd: tools.buildkitd,
        buildctl: tools.buildctl,
        rootlesskit: tools.rootlesskit,
        cli: join(REPO_ROOT, "src", "cli.ts"),
      },
      operatorImage: DEFAULT_OPERATOR_IMAGE,
      fallback: pushed.executor,
      ...(options.clusterDns ? { clusterDns: options.clusterDns } : {}),
    });
    const kube = await startKube({
      nodes: [
        { name: "amd64-node", arch: "amd64" },
        { name: "arm64-node", arch: "arm64" },
      ],
      namespaces: [POOL_NAMESPACE, BUILD_NAMESPACE, OPERATOR_NAMESPACE],
      executor: pods.executor,
      readiness: pods.readiness,
      probePeriodMs: 200,
    });
    // Stopped in reverse: the kubelet first (its workers stop their containers and remove their
    // sandboxes, and nothing restarts), then whatever process is still winding down.
    stops.push(() => pods.stop());
    stops.push(() => kube.stop());
    const config = loadConfig(
      [
        "--leader-elect=false",
        "--metrics-bind-address=0",
        `--log-level=${options.logLevel ?? "warn"}`,
        `--operator-image=${DEFAULT_OPERATOR_IMAGE}`,
        `--operator-namespace=${OPERATOR_NAMESPACE}`,
        `--builder-cache-interval=${options.builderCacheInterval ?? "2s"}`,
      ],
      {},
    );
    // The operator runs in this process; what it dials goes through the cluster network as
    // from one of its pods, with the labels the chart gives them, so the pools' NetworkPolicy
    // must admit it (mapping 4).
    const standIn = kube.store.create("pods", {
      metadata: {
        name: "operator",
        namespace: OPERATOR_NAMESPACE,
        labels: { ...OPERATOR_POD_LABELS },
      },
      spec: {
        restartPolicy: "Always",
        containers: [{ name: "operator", image: "stand-in.invalid/operator:1" }],
      },
    } as KubeObject);
    const from = { podUid: standIn.metadata.uid ?? "", namespace: OPERATOR_NAMESPACE };
    const operator = await startOperator(config, {
      kubeConfig: kube.kubeConfig(),
      log: createLogger({ level: config.logLevel }),
      apiAttempts: 1,
      hooks: {
        resolveBuilder: async (ip, port) => {
          const target = await pods.dialFrom(from, ip, port);
          if (!target) throw new Error(`${ip}:${port} is no address in the cluster`);
          const colon = target.lastIndexOf(":");
          return { host: target.slice(0, colon), port: Number(target.slice(colon + 1)) };
        },
      },
    });
    stops.push(() => operator.manager.stop());

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
      pods,
      images: pushed.runs,
      operator,
      registry,
      refusing,
      git,
      baseImage,
      secretValue,
      stop,
    };
  } catch (error) {
    await stop();
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
