// test/kube: an in-process Kubernetes API server for tests. `startKube()` serves the built-in
// kinds the operator uses and the CRDs in crds/ on 127.0.0.1, with fault injection, a request
// log and simulated controllers. See test/kube/README.md.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { REPO_ROOT, readYamlDocuments } from "../support/files.ts";
import { Faults } from "./faults.ts";
import { GarbageCollector, NamespaceController } from "./gc.ts";
import type { KubeObject } from "./objects.ts";
import { RequestLog } from "./request-log.ts";
import { KubeServer, type ServerVersion } from "./server.ts";
import { Simulation, type SimulationOptions } from "./sim/cluster.ts";
import type { Kubelet } from "./sim/kubelet.ts";
import type { NodeSpec } from "./sim/scheduler.ts";
import { Store } from "./store.ts";
import { type Truthy, type WaitOptions, waitFor } from "./wait.ts";

export { Faults } from "./faults.ts";
export type { KubeObject, Stored } from "./objects.ts";
export { RequestLog, type RequestRecord } from "./request-log.ts";
export {
  type ContainerContext,
  type ContainerResult,
  defaultExecutor,
  type Executor,
  tableExecutor,
} from "./sim/executor.ts";
export type { Kubelet, ReadinessPolicy } from "./sim/kubelet.ts";
export type { NodeSpec } from "./sim/scheduler.ts";
export { KubeError, type Status } from "./status.ts";
export { Store } from "./store.ts";
export { waitFor } from "./wait.ts";

export interface KubeOptions extends SimulationOptions {
  /** The server version /version reports: "1.31", or major/minor/gitVersion. */
  version?: string | ServerVersion;
  /** Watch events kept per resource for resuming watches (default 1000). */
  historySize?: number;
  /**
   * How often the history is compacted to the resourceVersion of the previous compaction, as
   * the API server's etcd compactor does every 5 minutes (default
   * DEFAULT_COMPACTION_INTERVAL_MS, 0 for never): a watch or a continue token older than one
   * to two intervals gets 410 Gone, so ordinary tests run the relist path too.
   */
  compactionIntervalMs?: number;
  /**
   * Send a watch's response headers only with its first event (default false), like a
   * front-end that buffers them: a client cannot abort a watch it has no response for yet.
   */
  holdWatchHeaders?: boolean;
  /** How often watches that allow bookmarks get one (default 60 s, like the API server). */
  bookmarkIntervalMs?: number;
  /** CRDs to install: the repository's crds/*.yaml (default) or the given objects. */
  crds?: KubeObject[];
  /** Namespaces to create besides default, kube-system, kube-public and kube-node-lease. */
  namespaces?: string[];
  /** Garbage collector and namespace controller (default true). */
  gc?: boolean;
}

export interface Kube {
  url: string;
  /** Direct access to the objects, bypassing HTTP, faults and the request log. */
  store: Store;
  faults: Faults;
  requestLog: RequestLog;
  /** Open watches: list them, send bookmarks now. */
  watches: { list(): ReturnType<KubeServer["watches"]["list"]>; bookmarkNow(): number };
  /** A client-node KubeConfig for this server (a fresh object on every call). */
  kubeConfig(options?: { namespace?: string; token?: string }): KubeConfig;
  /** The simulated kubelet (undefined with `controllers: { kubelet: false }`). */
  kubelet: Kubelet | undefined;
  nodes: {
    add(spec: NodeSpec): void;
    remove(name: string): void;
    setReady(name: string, ready: boolean): void;
    setSchedulable(name: string, schedulable: boolean): void;
  };
  waitFor<T>(check: () => T | Promise<T>, options?: WaitOptions): Promise<Truthy<T>>;
  /** Resolves once the garbage collector has nothing queued. */
  settled(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Short next to a real cluster's 5 minutes, so that tests, which last seconds, meet 410s at
 * about the rate an operator meets them in a cluster's life.
 */
export const DEFAULT_COMPACTION_INTERVAL_MS = 10_000;

export function parseVersion(version: KubeOptions["version"]): ServerVersion {
  if (typeof version === "object") return version;
  const [major, minor] = (version ?? "1.31").split(".");
  return { major: major!, minor: minor!, gitVersion: `v${major}.${minor}.0` };
}

export function repositoryCrds(): KubeObject[] {
  return readdirSync(join(REPO_ROOT, "crds"))
    .filter((file) => file.endsWith(".yaml"))
    .sort()
    .flatMap((file) => readYamlDocuments(join("crds", file)) as KubeObject[]);
}

export async function startKube(options: KubeOptions = {}): Promise<Kube> {
  const version = parseVersion(options.version);
  const store = new Store({
    historySize: options.historySize ?? 1000,
    serverVersion: { major: Number(version.major), minor: Number.parseInt(version.minor, 10) },
  });
  for (const name of [
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    ...(options.namespaces ?? []),
  ])
    store.create("namespaces", { metadata: { name } });
  for (const crd of options.crds ?? repositoryCrds())
    store.create("customresourcedefinitions.apiextensions.k8s.io", crd);
  // etcd's compactor: each tick compacts to the revision seen at the tick before.
  const compactionMs = options.compactionIntervalMs ?? DEFAULT_COMPACTION_INTERVAL_MS;
  let compactTo = store.resourceVersion;
  const compactor =
    compactionMs > 0
      ? setInterval(() => {
          store.compact(compactTo);
          compactTo = store.resourceVersion;
        }, compactionMs)
      : undefined;
  compactor?.unref();
  const faults = new Faults();
  const requestLog = new RequestLog();
  const sim = await Simulation.start(store, options, version.gitVersion);
  const server = new KubeServer({
    store,
    faults,
    requestLog,
    version,
    bookmarkIntervalMs: options.bookmarkIntervalMs ?? 60_000,
    holdWatchHeaders: options.holdWatchHeaders ?? false,
    logs: () => sim.kubelet?.logs,
  });
  const gc = options.gc === false ? undefined : new GarbageCollector(store);
  const namespaces = options.gc === false ? undefined : new NamespaceController(store);
  const url = await server.listen();
  return {
    url,
    store,
    faults,
    requestLog,
    watches: { list: () => server.watches.list(), bookmarkNow: () => server.watches.bookmarkNow() },
    kubeConfig({ namespace = "default", token } = {}) {
      const kc = new KubeConfig();
      kc.loadFromOptions({
        clusters: [{ name: "test-kube", server: url, skipTLSVerify: true }],
        users: token ? [{ name: "test-kube", token }] : [],
        contexts: [{ name: "test-kube", cluster: "test-kube", user: "test-kube", namespace }],
        currentContext: "test-kube",
      });
      return kc;
    },
    kubelet: sim.kubelet,
    nodes: {
      add: (spec) => sim.addNode(spec),
      remove: (name) => sim.removeNode(name),
      setReady: (name, ready) => sim.setNodeReady(name, ready),
      setSchedulable: (name, schedulable) => sim.setSchedulable(name, schedulable),
    },
    waitFor,
    async settled() {
      await gc?.idle();
    },
    async stop() {
      faults.clear();
      clearInterval(compactor);
      gc?.stop();
      namespaces?.stop();
      await sim.stop();
      await server.close();
    },
  };
}
