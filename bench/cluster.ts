// The benchmark's cluster: test/kube with an amd64 and an arm64 node, the build player as the
// simulated kubelet's executor, push Secrets and BuilderPools, in a child process of its own
// (bench/kube-host.ts, driven over IPC), and the real operator as another child process
// (`node src/cli.ts operator`), so the API server, the operator and this process (the user
// creating builds) each have their own event loop, CPU and memory.
import { type ChildProcess, spawn } from "node:child_process";
import type { KubernetesObject } from "@kubernetes/client-node";
import { KubeConfig } from "@kubernetes/client-node";
import { KubeClient, RESOURCES } from "../src/runtime/client.ts";
import { BUILDS, buildSpec, NS, POOLS, poolSpec, pushSecret } from "../test/imagebuild/cluster.ts";
import type { KubeObject, KubeOptions, RequestRecord } from "../test/kube/index.ts";
import { waitFor } from "../test/kube/wait.ts";
import { REPO_ROOT } from "../test/support/files.ts";
import {
  type OperatorProcess,
  type OperatorProcessOptions,
  spawnOperator,
  writeKubeconfig,
} from "../test/support/operator-process.ts";
import type { BuildObjects } from "./kube-host.ts";

export { NS };

type Json = Record<string, unknown>;

/** test/kube in its child process: what the benchmark asks of its store and request log. */
export interface RemoteKube {
  readonly pid: number;
  readonly url: string;
  /** Calls one of bench/kube-host.ts's methods. */
  call<T = unknown>(method: string, ...args: unknown[]): Promise<T>;
  get<T = KubeObject>(resource: string, namespace: string, name: string): Promise<T | undefined>;
  seed(resource: string, objects: KubeObject[]): Promise<void>;
  mark(): Promise<number>;
  since(mark: number): Promise<RequestRecord[]>;
  buildObjects(name: string): Promise<BuildObjects>;
  /** Resolves once every named build has reached one of `phases`. */
  waitPhases(names: readonly string[], phases?: readonly string[], timeout?: number): Promise<void>;
}

export interface BenchCluster {
  kube: RemoteKube;
  /** A user's client (the benchmark's own requests carry User-Agent `bench`). */
  client: KubeClient;
  kubeconfig: string;
  operator: OperatorProcess | undefined;
  startOperator(options?: Partial<OperatorProcessOptions>): Promise<OperatorProcess>;
  createPool(name: string, spec?: Json): Promise<void>;
  waitForPoolReady(name: string, timeout?: number): Promise<void>;
  buildObject(name: string, pool: string, spec?: Json): KubernetesObject;
  stop(): Promise<void>;
}

/** Starts bench/kube-host.ts with `options` (JSON: no executor, the host's player is used). */
async function startRemoteKube(
  options: KubeOptions,
): Promise<RemoteKube & { stop(): Promise<void> }> {
  const child: ChildProcess = spawn(
    process.execPath,
    [`${REPO_ROOT}/bench/kube-host.ts`, JSON.stringify(options)],
    { cwd: REPO_ROOT, stdio: ["ignore", "inherit", "inherit", "ipc"], env: process.env },
  );
  const calls = new Map<
    number,
    { resolve: (value: unknown) => void; reject: (error: Error) => void }
  >();
  let nextId = 0;
  let exited = false;
  const url = await new Promise<string>((resolve, reject) => {
    child.once("exit", (code, signal) => {
      exited = true;
      const error = new Error(`bench/kube-host.ts exited (${code ?? signal})`);
      reject(error);
      for (const call of calls.values()) call.reject(error);
    });
    child.on(
      "message",
      (message: {
        ready?: boolean;
        url?: string;
        id?: number;
        result?: unknown;
        error?: string;
      }) => {
        if (message.ready) {
          resolve(message.url as string);
          return;
        }
        const call = calls.get(message.id as number);
        if (!call) return;
        calls.delete(message.id as number);
        if (message.error !== undefined) call.reject(new Error(`kube host: ${message.error}`));
        else call.resolve(message.result);
      },
    );
  });
  const call = <T>(method: string, ...args: unknown[]) =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++;
      calls.set(id, { resolve: resolve as (value: unknown) => void, reject });
      child.send({ id, method, args });
    });
  return {
    pid: child.pid as number,
    url,
    call,
    get: (resource, namespace, name) => call("get", resource, namespace, name),
    seed: (resource, objects) => call("seed", resource, objects),
    mark: () => call("mark"),
    since: (mark) => call("since", mark),
    buildObjects: (name) => call("buildObjects", name),
    waitPhases: (names, phases = ["Succeeded"], timeout = 600_000) =>
      call("waitPhases", names, phases, timeout),
    async stop() {
      if (exited) return;
      const gone = new Promise((resolve) => child.once("exit", resolve));
      await call("stop").catch(() => undefined);
      await gone;
    },
  };
}

export async function startBenchCluster(options: KubeOptions = {}): Promise<BenchCluster> {
  const kube = await startRemoteKube({
    namespaces: [NS],
    nodes: [
      { name: "amd-1", arch: "amd64" },
      { name: "arm-1", arch: "arm64" },
    ],
    podFailureBackoffMs: 5,
    restartBackoffMs: 5,
    historySize: 20_000,
    ...options,
  });
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "test-kube", server: kube.url, skipTLSVerify: true }],
    users: [],
    contexts: [{ name: "test-kube", cluster: "test-kube", user: "test-kube", namespace: NS }],
    currentContext: "test-kube",
  });
  const kubeconfig = writeKubeconfig(kc.exportConfig());
  const client = new KubeClient(kc, { userAgent: "bench" });
  await client.create(RESOURCES.secret, pushSecret(NS));
  const cluster: BenchCluster = {
    kube,
    client,
    kubeconfig,
    operator: undefined,
    async startOperator(more = {}) {
      const operator = await spawnOperator({ kubeconfig, logLevel: "warn", ...more });
      cluster.operator = operator;
      await operator.ready;
      return operator;
    },
    async createPool(name, spec = {}) {
      await client.create(POOLS, {
        apiVersion: "buildfarm.dev/v1alpha1",
        kind: "BuilderPool",
        metadata: { name, namespace: NS },
        spec: poolSpec(spec),
      } as KubernetesObject);
    },
    async waitForPoolReady(name, timeout = 60_000) {
      await waitFor(
        async () => {
          const pool = await kube.get<{ status?: { conditions?: Json[] } }>(
            "builderpools.buildfarm.dev",
            NS,
            name,
          );
          return pool?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
        },
        { timeout, interval: 50, message: `BuilderPool ${name} did not become Ready` },
      );
    },
    buildObject(name, pool, spec = {}) {
      return {
        apiVersion: "buildfarm.dev/v1alpha1",
        kind: "ImageBuild",
        metadata: { name, namespace: NS },
        spec: buildSpec({ poolRef: { name: pool }, ...spec }),
      } as KubernetesObject;
    },
    async stop() {
      // A profiled operator writes its profile on a clean exit (SIGTERM); otherwise a crash.
      await cluster.operator?.kill(process.env.BENCH_PROFILE ? "SIGTERM" : "SIGKILL");
      await kube.stop();
    },
  };
  return cluster;
}

export { BUILDS };
