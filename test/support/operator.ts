// Runs the operator's real Manager against test/kube: the runtime (informers, work queues,
// leader election when asked) talks HTTP to the in-process API server through client-node,
// exactly as in a cluster. Tests register the controllers they exercise in `setup`.
import type { Logger } from "pino";
import { createLogger } from "../../src/runtime/log.ts";
import { Manager, type ManagerOptions } from "../../src/runtime/manager.ts";
import type { Kube } from "../kube/index.ts";
import type { RecordFilter, RequestRecord } from "../kube/request-log.ts";

export interface TestOperatorOptions
  extends Partial<Omit<ManagerOptions, "kubeConfig" | "log" | "health">> {
  /** Registers controllers on the manager before it starts. */
  setup: (manager: Manager) => void;
  log?: Logger;
}

export interface TestOperator {
  manager: Manager;
  /** Graceful stop (in-flight reconciles finish, pending Events are written). */
  stop(): Promise<void>;
}

/**
 * A logger for tests: silent unless TEST_LOG names a level (`TEST_LOG=debug npx vitest …`),
 * then pino JSON on stderr.
 */
export function testLogger(): Logger {
  const level = process.env.TEST_LOG;
  return createLogger({
    level: (level || "silent") as "silent",
    destination: process.stderr,
  });
}

/** Starts a Manager on `kube`; resolves once its caches are synced and controllers run. */
export async function startTestOperator(
  kube: Kube,
  { setup, log, ...options }: TestOperatorOptions,
): Promise<TestOperator> {
  const manager = new Manager({
    kubeConfig: kube.kubeConfig(),
    log: log ?? testLogger(),
    shutdownDeadlineMs: 5_000,
    cacheSyncTimeoutMs: 10_000,
    ...options,
  });
  setup(manager);
  await manager.start();
  return { manager, stop: () => manager.stop() };
}

/** The verbs that change something: what "writes nothing" is about. */
export const WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"];

/**
 * Writes in the request log since `mark`, Lease renewals (leader election) left out. A test of
 * the operator's own writes creates its fixtures through `kube.store`, which bypasses the log.
 */
export function writesSince(kube: Kube, mark: number, filter: RecordFilter = {}): RequestRecord[] {
  return kube.requestLog
    .since(mark, { verb: WRITE_VERBS, ...filter })
    .filter((record) => record.resource !== "leases");
}

/** `verb resource[/subresource] name code` per record: readable in an assertion's diff. */
export function describeRequests(records: readonly RequestRecord[]): string[] {
  return records.map(
    (r) =>
      `${r.verb} ${r.resource ?? r.nonResourceURL ?? r.path}${r.subresource ? `/${r.subresource}` : ""} ${r.name ?? ""} ${r.code}`,
  );
}

/** How many reconciles `controller` has finished (any result), from the manager's metrics. */
export async function reconcileCount(manager: Manager, controller: string): Promise<number> {
  const metric = await manager.metrics.reconcileTotal.get();
  return metric.values
    .filter((value) => value.labels.controller === controller)
    .reduce((sum, value) => sum + value.value, 0);
}

/** Resolves once `controller` has finished `count` more reconciles than when called. */
export async function reconciles(
  kube: Kube,
  manager: Manager,
  controller: string,
  count: number,
  timeout = 30_000,
): Promise<void> {
  const start = await reconcileCount(manager, controller);
  await kube.waitFor(async () => (await reconcileCount(manager, controller)) >= start + count, {
    timeout,
    interval: 20,
    message: `${count} reconciles of ${controller}`,
  });
}
