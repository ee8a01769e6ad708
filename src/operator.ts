// The composition root of `buildfarm operator`: configuration, logger, a reachability check of
// the API server, the manager (caches, health/metrics server, leader election) and the
// controllers with the state they share.

import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { Autoscaler } from "./builderpool/autoscale.ts";
import { type CacheUsageOptions, setupCacheUsage } from "./builderpool/cache-usage.ts";
import { poolCaches } from "./builderpool/caches.ts";
import { setupPoolController } from "./builderpool/controller.ts";
import { sharedCaches } from "./caches.ts";
import type { OperatorConfig } from "./config.ts";
import { errorMessage } from "./errors.ts";
import { Builders } from "./imagebuild/builders.ts";
import { buildCaches } from "./imagebuild/caches.ts";
import { BuildQueues } from "./imagebuild/queues.ts";
import { demandWatches, setupBuildController } from "./imagebuild/setup.ts";
import { KubeClient } from "./runtime/client.ts";
import { loadKubeConfig } from "./runtime/kubeconfig.ts";
import { createLogger } from "./runtime/log.ts";
import { Manager, type ManagerOutcome } from "./runtime/manager.ts";
import { RuntimeMetrics } from "./runtime/metrics.ts";

/** What a process running the operator outside a pod network changes (tests). */
export interface OperatorHooks {
  /** Where a dial of a builder pod's IP goes (the cache-usage collector's). */
  resolveBuilder?: CacheUsageOptions["resolve"];
}

/** Registers a controller on the manager; each controller module exports one. */
export type ControllerSetup = (
  manager: Manager,
  config: OperatorConfig,
  hooks?: OperatorHooks,
) => void;

export const CONTROLLERS: ControllerSetup[] = [
  // The pool and build controllers share caches, and the pools' autoscaling reads the demand
  // the build controller's queue computes from them.
  (manager, config, hooks = {}) => {
    const shared = sharedCaches(manager);
    // Builders are asked for their cache usage from inside the cluster (POD_NAMESPACE, set by
    // the chart), where their pod IPs are reachable, or through a test's resolver.
    const cacheUsage =
      config.builderCacheInterval > 0 &&
      (config.operatorNamespace !== undefined || hooks.resolveBuilder !== undefined);
    const caches = buildCaches(manager, shared);
    const queues = new BuildQueues(caches);
    const builders = new Builders(caches);
    setupPoolController(
      manager,
      {
        defaultImage: config.buildkitImage,
        workers: config.poolWorkers,
        // The pools' NetworkPolicies admit the operator's pods only when it asks the builders.
        ...(cacheUsage && config.operatorNamespace
          ? { operatorNamespace: config.operatorNamespace }
          : {}),
        autoscaler: new Autoscaler({
          demand: (pool) => queues.demand(pool),
          builders: (pool, arch) => builders.load(pool, arch),
        }),
        demandWatches: demandWatches(caches),
      },
      poolCaches(manager, shared),
    );
    setupBuildController(
      manager,
      {
        operatorImage: config.operatorImage,
        operatorImagePlatforms: config.operatorImagePlatforms,
        workers: config.buildWorkers,
      },
      { caches, queues, builders },
    );
    if (cacheUsage)
      setupCacheUsage(
        manager,
        { pools: shared.pools, secrets: shared.secrets, pods: caches.pods },
        {
          intervalMs: config.builderCacheInterval,
          ...(hooks.resolveBuilder ? { resolve: hooks.resolveBuilder } : {}),
        },
      );
  },
];

/** Asks the API server for its version, retrying with backoff; throws the last reason. */
export async function waitForApiServer(
  client: KubeClient,
  log: Logger,
  attempts = 5,
  baseMs = 1000,
): Promise<{ major: string; minor: string; gitVersion?: string }> {
  let lastError: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      return await client.request("GET", "/version");
    } catch (error) {
      lastError = error;
      log.warn({ attempt, attempts, err: errorMessage(error) }, "API server not reachable yet");
      if (attempt < attempts)
        await new Promise((resolve) => setTimeout(resolve, baseMs * 2 ** (attempt - 1)));
    }
  }
  const reason =
    lastError instanceof Error
      ? lastError.cause instanceof Error
        ? `${lastError.message}: ${lastError.cause.message}`
        : lastError.message
      : String(lastError);
  throw new Error(
    `the API server at ${client.config.getCurrentCluster()?.server} could not be reached after ${attempts} attempts: ${reason}`,
  );
}

export interface RunningOperator {
  manager: Manager;
  outcome: Promise<ManagerOutcome>;
}

/** Starts the operator; resolves once caches are synced and the health server listens. */
export async function startOperator(
  config: OperatorConfig,
  options: {
    kubeConfig?: KubeConfig;
    log?: Logger;
    controllers?: ControllerSetup[];
    apiAttempts?: number;
    hooks?: OperatorHooks;
  } = {},
): Promise<RunningOperator> {
  const log = options.log ?? createLogger({ level: config.logLevel });
  const kubeConfig = options.kubeConfig ?? loadKubeConfig(config.kubeconfig);
  const version = await waitForApiServer(new KubeClient(kubeConfig), log, options.apiAttempts);
  log.info(
    {
      server: kubeConfig.getCurrentCluster()?.server,
      version: version.gitVersion ?? `${version.major}.${version.minor}`,
      namespaces: config.namespaces.length ? config.namespaces : "all",
    },
    "connected to the API server",
  );
  const manager = new Manager({
    kubeConfig,
    log,
    metrics: new RuntimeMetrics({ defaultMetrics: true }),
    namespaces: config.namespaces,
    health: config.metrics,
    shutdownDeadlineMs: config.shutdownTimeout,
    resyncMs: config.syncPeriod,
    leaderElection: config.leaderElect
      ? {
          leaseName: config.leaseName,
          leaseNamespace: config.leaseNamespace,
          identity: config.identity ?? `${hostname()}_${randomUUID().slice(0, 8)}`,
          leaseDurationMs: config.leaseDuration,
          renewDeadlineMs: config.renewDeadline,
          retryPeriodMs: config.retryPeriod,
        }
      : undefined,
  });
  for (const setup of options.controllers ?? CONTROLLERS) setup(manager, config, options.hooks);
  await manager.start();
  return { manager, outcome: manager.done };
}
