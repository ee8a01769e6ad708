// A sample controller for the runtime's own tests, knowing nothing of builds: every ConfigMap
// labelled sample=source gets an owned copy `<name>-copy` with the same data. It reports each
// reconcile's start and end so tests can check who reconciled what, and when.
import type { KubeConfig, V1ConfigMap } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { ensure, ownerReference } from "../../src/runtime/apply.ts";
import { RESOURCES } from "../../src/runtime/client.ts";
import type { ReconcileContext, ReconcileRequest } from "../../src/runtime/controller.ts";
import { createLogger } from "../../src/runtime/log.ts";
import { type LeaderElectionConfig, Manager } from "../../src/runtime/manager.ts";
import type { RateLimiter } from "../../src/runtime/workqueue.ts";

export interface ReconcileRecord {
  instance: string;
  key: string;
  start: number;
  end?: number;
  error?: string;
}

export interface SampleOptions {
  kubeConfig: KubeConfig;
  instance: string;
  leaderElection?: Omit<LeaderElectionConfig, "identity">;
  namespace?: string;
  /** Called for every reconcile start/end. */
  record?: (record: ReconcileRecord) => void;
  /** Runs inside reconcile before it writes: tests make it fail, wait, count. */
  hook?: (request: ReconcileRequest, context: ReconcileContext) => Promise<void> | void;
  health?: boolean;
  rateLimiter?: RateLimiter;
  resyncMs?: number;
  shutdownDeadlineMs?: number;
  log?: Logger;
  watchTimeoutSeconds?: number;
  cacheSyncTimeoutMs?: number;
}

export const SOURCE_LABEL = "sample";

export function sampleManager(options: SampleOptions): Manager {
  const manager = new Manager({
    kubeConfig: options.kubeConfig,
    log: options.log ?? createLogger({ level: "silent" }),
    namespaces: [options.namespace ?? "default"],
    component: "sample",
    ...(options.leaderElection
      ? { leaderElection: { ...options.leaderElection, identity: options.instance } }
      : {}),
    ...(options.health ? { health: { host: "127.0.0.1", port: 0 } } : {}),
    resyncMs: options.resyncMs ?? 0,
    shutdownDeadlineMs: options.shutdownDeadlineMs ?? 5000,
    watchTimeoutSeconds: options.watchTimeoutSeconds ?? 30,
    cacheSyncTimeoutMs: options.cacheSyncTimeoutMs ?? 20_000,
  });
  const configMaps = manager.informer<V1ConfigMap>(RESOURCES.configMap);
  manager.addController({
    name: "sample",
    for: configMaps,
    owns: [configMaps],
    ...(options.rateLimiter ? { rateLimiter: options.rateLimiter } : {}),
    workers: 2,
    reconcile: async (request, context) => {
      const record: ReconcileRecord = {
        instance: options.instance,
        key: `${request.namespace}/${request.name}`,
        start: performance.timeOrigin + performance.now(),
      };
      options.record?.({ ...record });
      try {
        const source = configMaps.get(request.namespace, request.name);
        if (source?.metadata?.labels?.[SOURCE_LABEL] !== "source") return undefined;
        await options.hook?.(request, context);
        const copy: V1ConfigMap = {
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: {
            name: `${request.name}-copy`,
            namespace: request.namespace,
            ownerReferences: [ownerReference(source)],
            labels: { [SOURCE_LABEL]: "copy" },
          },
          data: source.data ?? {},
        };
        await ensure(
          manager.client,
          RESOURCES.configMap,
          copy,
          configMaps.get(request.namespace, `${request.name}-copy`),
          { owner: source },
        );
        return undefined;
      } catch (error) {
        record.error = error instanceof Error ? error.message : String(error);
        throw error;
      } finally {
        record.end = performance.timeOrigin + performance.now();
        options.record?.(record);
      }
    },
  });
  return manager;
}
