// `npm run sandbox [-- --keep]`: buildfarm building a two-platform image on this machine, with
// no cluster. What runs is plain about what it is: test/kube's in-process API server (the real
// wire protocol; client-node, kubectl and the buildfarm CLI talk to it), a kubelet that runs the
// pods' containers as processes here (real rootless buildkitd, buildctl, buildfarm assemble),
// a real registry, and a git daemon serving examples/hello. linux/arm64 RUN steps run under
// QEMU on this machine, where a real cluster would run them on arm64 nodes.
//
// It checks its prerequisites (and names what to install), starts everything on loopback,
// installs the CRDs and runs the operator as `buildfarm operator` runs, applies a BuilderPool
// (amd64, arm64) and an ImageBuild for both platforms, streams `buildfarm logs -w`, and prints
// the index, each platform's image and what its RUN wrote. With --keep it stays up for kubectl
// until Ctrl-C. Everything it started stops when it exits.
import { spawn } from "node:child_process";
import { createWriteStream, existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join, relative } from "node:path";
import { parseArgs } from "node:util";
import { parseAllDocuments, stringify } from "yaml";
import { BUILDER_POOL_RESOURCE, IMAGE_BUILD_RESOURCE } from "../src/api/resources.ts";
import { errorMessage } from "../src/errors.ts";
import { KubeClient, RESOURCES, type ResourceType } from "../src/runtime/client.ts";
import { loadKubeConfig } from "../src/runtime/kubeconfig.ts";
import { createLogger } from "../src/runtime/log.ts";
import {
  buildkitTools,
  busyboxDebs,
  getManifest,
  imageFile,
  layerBinary,
  OPERATOR_NAMESPACE,
  sandboxPrerequisites,
  startGitServer,
  startInClusterOperator,
  startJsonProxy,
  startLocalCluster,
  systemProbe,
} from "../test/local-cluster/index.ts";
import { ROOT } from "./kind.ts";

const USAGE = `usage: npm run sandbox [-- --keep] [-- --dir DIR]

  --keep      stay up after the build, until Ctrl-C, for kubectl and buildfarm status
  --dir DIR   where the kubeconfig and the operator's log go (default ${join(tmpdir(), "buildfarm-sandbox")})
`;
const NAMESPACE = "sandbox";
const POOL = "sandbox";
const BUILD = "hello";
const REPOSITORY = "hello";
const PLATFORMS = ["linux/amd64", "linux/arm64"];
const CRD = {
  group: "apiextensions.k8s.io",
  version: "v1",
  kind: "CustomResourceDefinition",
  plural: "customresourcedefinitions",
  namespaced: false,
} as const satisfies ResourceType;

const say = (message: string) => process.stdout.write(`\x1b[1m==> ${message}\x1b[0m\n`);

interface PlatformStatus {
  platform: string;
  phase?: string;
  builderPod?: string;
  digest?: string;
}

interface BuildStatus {
  phase?: string;
  digest?: string;
  image?: string;
  platforms?: PlatformStatus[];
  conditions?: { type: string; status: string; reason?: string; message?: string }[];
}

async function main(argv: string[]): Promise<number> {
  let options: { keep: boolean; dir: string };
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        keep: { type: "boolean", default: false },
        dir: { type: "string", default: join(tmpdir(), "buildfarm-sandbox") },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      process.stdout.write(USAGE);
      return 0;
    }
    options = { keep: values.keep, dir: values.dir };
  } catch (error) {
    process.stderr.write(`sandbox: ${errorMessage(error)}\n${USAGE}`);
    return 2;
  }

  const missing = sandboxPrerequisites(systemProbe());
  const tools = buildkitTools();
  const debs = missing.length === 0 ? await busyboxDebs() : undefined;
  if (typeof debs === "string")
    missing.push({
      missing: `Debian's busybox-static for amd64 and arm64 (the base image): ${debs}`,
      install: ["sudo dpkg --add-architecture arm64 && sudo apt-get update"],
    });
  if (missing.length > 0 || typeof tools === "string" || !debs || typeof debs === "string") {
    process.stderr.write("The sandbox cannot run here. Missing:\n");
    for (const item of missing) {
      process.stderr.write(`  - ${item.missing}\n`);
      for (const line of item.install) process.stderr.write(`      ${line}\n`);
    }
    if (missing.length === 0 && typeof tools === "string") process.stderr.write(`  - ${tools}\n`);
    return 1;
  }

  const started = Date.now();
  const stops: (() => Promise<unknown>)[] = [];
  let stopping: Promise<void> | undefined;
  const stopAll = () => {
    stopping ??= (async () => {
      for (const step of stops.splice(0).reverse()) await step().catch(() => {});
    })();
    return stopping;
  };
  let received = false;
  const interrupted = new Promise<number>((resolve) => {
    // Every signal is handled, the second too: the pods' processes run in their own process
    // groups, so a Ctrl-C reaches only this process, and dying mid-stop would orphan them.
    for (const signal of ["SIGINT", "SIGTERM"] as const)
      process.on(signal, () => {
        if (received) {
          say("still stopping (the builders get up to 10 s to exit)");
          return;
        }
        received = true;
        process.stdout.write("\n");
        say(`${signal}: stopping everything the sandbox started`);
        void stopAll().then(() => resolve(130));
      });
  });
  const run = async (): Promise<number> => {
    await mkdir(options.dir, { recursive: true });
    say(
      "starting the API server (in this process), a kubelet running pods as processes, a registry",
    );
    // 1.33: the version of the kubectl the devDependency ships, so it sees no version skew.
    const cluster = await startLocalCluster(tools, debs, { crds: [], version: "1.33" });
    stops.push(() => cluster.stop());
    // kubectl sends protobuf bodies for some kinds (namespaces, secrets); the proxy decodes them.
    const proxy = await startJsonProxy(cluster.kube.url);
    stops.push(() => proxy.stop());
    const kubeconfig = join(options.dir, "kubeconfig");
    await writeFile(kubeconfig, kubeconfigYaml(proxy.url), { mode: 0o600 });
    const client = new KubeClient(loadKubeConfig(kubeconfig), { userAgent: "buildfarm-sandbox" });

    say("installing the CRDs (crds/*.yaml)");
    for (const file of readdirSync(join(ROOT, "crds"))
      .filter((f) => f.endsWith(".yaml"))
      .sort())
      for (const document of readYamlDocuments(join(ROOT, "crds", file)))
        await client.create(CRD, document);
    for (const name of [OPERATOR_NAMESPACE, NAMESPACE])
      await client.create(RESOURCES.namespace, {
        apiVersion: "v1",
        kind: "Namespace",
        metadata: {
          name,
          // Rootless BuildKit needs seccomp and AppArmor unconfined (see README).
          labels: name === NAMESPACE ? { "pod-security.kubernetes.io/enforce": "privileged" } : {},
        },
      });

    const operatorLog = join(options.dir, "operator.log");
    say(`starting the operator (buildfarm operator, in this process; its log: ${operatorLog})`);
    const logStream = createWriteStream(operatorLog);
    stops.push(() => new Promise((resolve) => logStream.end(resolve)));
    await startInClusterOperator(cluster, {
      args: ["--log-level=info"],
      log: createLogger({ level: "info", destination: logStream }),
    });

    const git = await startGitServer("hello", { main: exampleFiles() });
    stops.push(() => git.stop());
    say(`serving examples/hello at ${git.url}; base image ${cluster.baseImage}`);

    say(`applying BuilderPool ${NAMESPACE}/${POOL} (amd64, arm64) and ImageBuild ${BUILD}`);
    await client.create(BUILDER_POOL_RESOURCE, builderPool(cluster.registry.host));
    await client.create(
      IMAGE_BUILD_RESOURCE,
      imageBuild(git.url, cluster.baseImage, `${cluster.registry.host}/${REPOSITORY}`),
    );

    const progress = watchProgress(client);
    stops.push(() => progress.stop());
    say(`buildfarm logs -w ${BUILD} (each line prefixed by its platform)`);
    const logsCode = await runCli(
      ["logs", "-w", "-n", NAMESPACE, "--kubeconfig", kubeconfig, BUILD],
      stops,
    );
    await progress.stop();
    if (received) return 130; // the build's pods were stopped under it

    const build = await client.get<{ status?: BuildStatus } & { metadata: { name: string } }>(
      IMAGE_BUILD_RESOURCE,
      NAMESPACE,
      BUILD,
    );
    const status = build?.status ?? {};
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    if (logsCode !== 0 || status.phase !== "Succeeded" || !status.digest) {
      const failed = status.conditions?.find((c) => c.type === "Succeeded");
      say(`the build did not succeed (${status.phase ?? "no phase"}): ${failed?.message ?? ""}`);
      process.stdout.write(`operator log: ${operatorLog}\n`);
      if (!options.keep) return 1;
    } else {
      const index = await getManifest(cluster.registry, REPOSITORY, status.digest);
      process.stdout.write(`\nIndex  ${cluster.registry.host}/${REPOSITORY}@${status.digest}\n`);
      process.stdout.write(`       (${index.mediaType ?? "image index"}, tag latest)\n`);
      for (const entry of index.manifests ?? []) {
        if (!entry.platform || entry.platform.os === "unknown") continue;
        const platform = `${entry.platform.os}/${entry.platform.architecture}`;
        const line = await imageFile(cluster.registry, REPOSITORY, entry.digest, "/hello");
        process.stdout.write(
          `  ${platform.padEnd(12)} ${entry.digest}  RUN wrote: ${line?.trim() ?? "(nothing)"}\n`,
        );
      }
      const [one, five] = loadavg();
      process.stdout.write(
        `\nSucceeded in ${seconds} s (load average ${one?.toFixed(2)}, ${five?.toFixed(2)} over 1 and 5 min)\n`,
      );
    }

    process.stdout.write(`\nkubeconfig: ${kubeconfig}\n`);
    if (!options.keep) {
      say("stopping everything the sandbox started (--keep leaves it up)");
      await stopAll();
      return 0;
    }
    const kubectl = bundledKubectl() ?? "kubectl";
    // Node 24 from the `node` devDependency (the Node on PATH may be older).
    const node = existsSync(join(ROOT, "node_modules", ".bin", "node"))
      ? "node_modules/.bin/node"
      : process.execPath;
    process.stdout.write(
      [
        "",
        "The sandbox stays up until Ctrl-C. In another terminal:",
        `  export KUBECONFIG=${kubeconfig}`,
        `  ${kubectl} get ib -w`,
        `  ${kubectl} describe bp ${POOL}`,
        `  ${node} src/cli.ts status ${BUILD}`,
        `  ${node} src/cli.ts logs ${BUILD}`,
        "",
        "Sandbox up; Ctrl-C stops it.",
        "",
      ].join("\n"),
    );
    kept = true;
    return await interrupted;
  };
  // Ctrl-C is how a kept sandbox ends: then it is a normal exit.
  let kept = false;
  try {
    const code = await Promise.race([run(), interrupted]);
    return kept ? 0 : received ? 130 : code;
  } catch (error) {
    process.stderr.write(`sandbox: ${errorMessage(error)}\n`);
    return 1;
  } finally {
    await stopAll();
  }
}

function kubeconfigYaml(server: string): string {
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    // client-node refuses a plain-HTTP server unless TLS verification is off (there is no TLS).
    clusters: [
      { name: "buildfarm-sandbox", cluster: { server, "insecure-skip-tls-verify": true } },
    ],
    users: [{ name: "buildfarm-sandbox", user: {} }],
    contexts: [
      {
        name: "buildfarm-sandbox",
        context: { cluster: "buildfarm-sandbox", user: "buildfarm-sandbox", namespace: NAMESPACE },
      },
    ],
    "current-context": "buildfarm-sandbox",
  });
}

/** examples/hello's files, as the repository's one branch. */
function exampleFiles(): Record<string, string> {
  const dir = join(ROOT, "examples", "hello");
  return Object.fromEntries(
    readdirSync(dir).map((file) => [file, readFileSync(join(dir, file), "utf8")]),
  );
}

function builderPool(registryHost: string) {
  return {
    apiVersion: "buildfarm.dev/v1alpha1",
    kind: "BuilderPool",
    metadata: { name: POOL, namespace: NAMESPACE },
    spec: {
      architectures: [
        { name: "amd64", replicas: 1 },
        { name: "arm64", replicas: 1 },
      ],
      cache: { type: "EmptyDir", size: "4Gi" },
      buildkit: { gc: { keepStorage: "2Gi", keepDuration: "1h" } },
      // The sandbox's registry speaks plain HTTP on loopback.
      registries: [{ host: registryHost, http: true }],
    },
  };
}

function imageBuild(gitUrl: string, baseImage: string, image: string) {
  return {
    apiVersion: "buildfarm.dev/v1alpha1",
    kind: "ImageBuild",
    metadata: { name: BUILD, namespace: NAMESPACE },
    spec: {
      poolRef: { name: POOL },
      source: { git: { url: gitUrl, revision: "main" } },
      dockerfile: "Dockerfile",
      platforms: PLATFORMS,
      buildArgs: [{ name: "BASE", value: baseImage }],
      output: { image, tags: ["latest"] },
      timeout: "15m",
      retries: 0,
    },
  };
}

/** Prints each platform's phase and builder as they change, read through the API. */
function watchProgress(client: KubeClient): { stop(): Promise<void> } {
  const seen = new Map<string, string>();
  let poolReady = "";
  const controller = new AbortController();
  const loop = (async () => {
    while (!controller.signal.aborted) {
      try {
        const pool = await client.get<{
          status?: { conditions?: { type: string; status: string; reason?: string }[] };
          metadata: { name: string };
        }>(BUILDER_POOL_RESOURCE, NAMESPACE, POOL);
        const ready = pool?.status?.conditions?.find((c) => c.type === "Ready");
        const line = ready ? `${ready.status} (${ready.reason ?? ""})` : "";
        if (line && line !== poolReady) {
          poolReady = line;
          say(`BuilderPool ${POOL}: Ready=${line}`);
        }
        const build = await client.get<{ status?: BuildStatus; metadata: { name: string } }>(
          IMAGE_BUILD_RESOURCE,
          NAMESPACE,
          BUILD,
        );
        for (const p of build?.status?.platforms ?? []) {
          const text = `${p.phase ?? "Pending"}${p.builderPod ? ` on ${p.builderPod}` : ""}`;
          if (seen.get(p.platform) === text) continue;
          seen.set(p.platform, text);
          say(`${p.platform}: ${text}`);
        }
      } catch {
        // a passing failure; the next round reads again
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  })();
  return {
    async stop() {
      controller.abort();
      await loop;
    },
  };
}

/** Runs `buildfarm <args>` (this Node on src/cli.ts) with its output on this terminal. */
function runCli(args: string[], stops: (() => Promise<unknown>)[]): Promise<number> {
  const child = spawn(process.execPath, [join(ROOT, "src", "cli.ts"), ...args], {
    stdio: ["ignore", "inherit", "inherit"],
  });
  const exited = new Promise<number>((resolve) => {
    child.once("error", () => resolve(127));
    child.once("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
  stops.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
  });
  return exited;
}

function bundledKubectl(): string | undefined {
  if (process.platform !== "linux" || process.arch !== "x64") return undefined;
  try {
    return relative(process.cwd(), layerBinary("kubectl"));
  } catch {
    return undefined;
  }
}

function readYamlDocuments(path: string): { metadata: { name: string } }[] {
  return parseAllDocuments(readFileSync(path, "utf8"))
    .map((document) => document.toJS() as { metadata: { name: string } } | null)
    .filter((document) => document !== null);
}

// Exit once done: a keep-alive socket or a timer left by a library must not keep it running.
process.exit(await main(process.argv.slice(2)));
