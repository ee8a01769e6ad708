// Starts the real operator (startOperator: the Manager with the controllers operator.ts registers)
// against a test/kube server, with its log kept in memory, and lets a test kill it: `crash()`
// refuses every further request of the process at once (nothing it does afterwards reaches the
// server, as if it died) and then stops it; `crashBefore(predicate)` does so right before the
// first write the predicate picks, so a test can stop the operator between any two of its
// writes. Generic: nothing here knows about builds or pools.
import { Writable } from "node:stream";
import { loadConfig, type OperatorConfig } from "../../src/config.ts";
import { type ControllerSetup, type RunningOperator, startOperator } from "../../src/operator.ts";
import type { KubeClient } from "../../src/runtime/client.ts";
import { createLogger } from "../../src/runtime/log.ts";
import type { Manager } from "../../src/runtime/manager.ts";
import type { Kube } from "../kube/index.ts";

export interface LogLine {
  level: string;
  msg: string;
  [key: string]: unknown;
}

export interface WriteRequest {
  method: "POST" | "PUT" | "PATCH" | "DELETE";
  path: string;
  /** The object or patch sent, if any. */
  body: unknown;
}

export interface TestOperator {
  manager: Manager;
  config: OperatorConfig;
  /** Everything the operator logged, parsed. */
  logs: LogLine[];
  /** Kills the process: no further request leaves it; then its manager is stopped. */
  crash(): Promise<void>;
  /** Kills the process right before the first write `predicate` picks (counted from now). */
  crashBefore(predicate: (write: WriteRequest) => boolean): void;
  /** Resolves once a crash (from crash() or crashBefore) has stopped the manager. */
  readonly crashed: Promise<void>;
  /** Graceful stop (SIGTERM). */
  stop(): Promise<void>;
}

export class OperatorCrashed extends Error {
  constructor() {
    super("the operator process is dead");
    this.name = "OperatorCrashed";
  }
}

export interface TestOperatorOptions {
  /** Extra flags for loadConfig (leader election and the metrics server are off by default). */
  args?: string[];
  controllers?: ControllerSetup[];
  logLevel?: "debug" | "info" | "warn";
}

/** Starts an operator process against `kube`; resolves once its caches are synced. */
export async function startTestOperator(
  kube: Kube,
  options: TestOperatorOptions = {},
): Promise<TestOperator> {
  const config = loadConfig(
    ["--leader-elect=false", "--metrics-bind-address=0", ...(options.args ?? [])],
    {},
  );
  const logs: LogLine[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n")) {
        if (line.trim() !== "") logs.push(JSON.parse(line) as LogLine);
      }
      done();
    },
  });
  const log = createLogger({ level: options.logLevel ?? "info", destination });
  const running: RunningOperator = await startOperator(config, {
    kubeConfig: kube.kubeConfig(),
    log,
    apiAttempts: 1,
    ...(options.controllers ? { controllers: options.controllers } : {}),
  });
  const { manager } = running;
  let dead = false;
  let trigger: ((write: WriteRequest) => boolean) | undefined;
  let stopped: Promise<void> | undefined;
  let resolveCrashed!: () => void;
  const crashed = new Promise<void>((resolve) => {
    resolveCrashed = resolve;
  });
  const die = () => {
    dead = true;
    stopped ??= manager.stop().then(resolveCrashed);
    return stopped;
  };
  fence(manager.client, (method, path, body) => {
    if (dead) return true;
    if (method !== "GET" && trigger?.({ method, path, body })) {
      trigger = undefined;
      void die();
      return true;
    }
    return false;
  });
  return {
    manager,
    config,
    logs,
    crash: die,
    crashBefore(predicate) {
      trigger = predicate;
    },
    crashed,
    async stop() {
      if (dead) return stopped;
      await manager.stop();
    },
  };
}

/**
 * Wraps the client's one request method: `refuse` sees every request before it is sent and
 * refuses it (OperatorCrashed) when it answers true.
 */
function fence(
  client: KubeClient,
  refuse: (method: WriteRequest["method"] | "GET", path: string, body: unknown) => boolean,
): void {
  const request = client.request.bind(client);
  client.request = ((method, path, options = {}) => {
    if (refuse(method, path, options.body)) return Promise.reject(new OperatorCrashed());
    return request(method, path, options);
  }) as KubeClient["request"];
}
