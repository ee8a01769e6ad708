// Runs the real `buildfarm operator` command (src/cli.ts) as a child process against a
// test/kube server, the way a pod would run it: its own heap, its own event loop, killed for
// real (SIGKILL) when a test wants a crash. Used by the reliability tests and `npm run bench`.
// Its JSON log lines are kept in memory; /metrics is read over HTTP.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT } from "./files.ts";
import { freePort } from "./registry.ts";

export interface LogLine {
  level: string;
  msg: string;
  time?: string;
  [key: string]: unknown;
}

export interface OperatorProcessOptions {
  /** A kubeconfig file (see writeKubeconfig). */
  kubeconfig: string;
  /** The Lease identity; with it, leader election is on (the CLI's default). */
  identity?: string;
  /** More flags for `buildfarm operator`. */
  args?: string[];
  /** Extra flags for node itself (--cpu-prof, --heapsnapshot-signal, ...). */
  nodeArgs?: string[];
  logLevel?: "debug" | "info" | "warn" | "error";
  env?: Record<string, string>;
}

export interface OperatorProcess {
  readonly pid: number;
  readonly identity: string | undefined;
  /** Everything the process logged on stdout, parsed (pino JSON). */
  readonly logs: LogLine[];
  /** What it wrote on stderr (crashes print their stack there). */
  readonly stderr: string[];
  readonly metricsPort: number;
  /** Resolves once its caches have synced (/readyz answers 200). */
  readonly ready: Promise<void>;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly alive: boolean;
  /** Sends the signal (SIGKILL: a crash) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** The /metrics text. */
  metrics(): Promise<string>;
  /** Resolves with the first log line `match` picks, waiting up to `timeout` ms. */
  waitForLog(match: (line: LogLine) => boolean, timeout?: number): Promise<LogLine>;
}

/** A directory shared by every operator process of this run: Node's compile cache. */
const COMPILE_CACHE = join(tmpdir(), "buildfarm-test-compile-cache");

/** Writes `kubeConfig.exportConfig()` text to a fresh file and returns its path. */
export function writeKubeconfig(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), "buildfarm-kubeconfig-"));
  const path = join(dir, "kubeconfig");
  writeFileSync(path, text, { mode: 0o600 });
  return path;
}

/** Starts `node src/cli.ts operator --kubeconfig … --metrics-bind-address 127.0.0.1:<port>`. */
export async function spawnOperator(options: OperatorProcessOptions): Promise<OperatorProcess> {
  const metricsPort = await freePort();
  const args = [
    ...(options.nodeArgs ?? []),
    join(REPO_ROOT, "src/cli.ts"),
    "operator",
    "--kubeconfig",
    options.kubeconfig,
    "--metrics-bind-address",
    `127.0.0.1:${metricsPort}`,
    "--log-level",
    options.logLevel ?? "info",
    ...(options.identity
      ? ["--identity", options.identity, "--leader-elect=true"]
      : ["--leader-elect=false"]),
    ...(options.args ?? []),
  ];
  const child: ChildProcess = spawn(process.execPath, args, {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...process.env,
      NODE_COMPILE_CACHE: COMPILE_CACHE,
      NODE_NO_WARNINGS: "1",
      ...options.env,
    },
  });
  const logs: LogLine[] = [];
  const stderr: string[] = [];
  const watchers = new Set<(line: LogLine) => void>();
  let pending = "";
  child.stdout?.setEncoding("utf8");
  child.stdout?.on("data", (chunk: string) => {
    pending += chunk;
    let newline = pending.indexOf("\n");
    while (newline !== -1) {
      const text = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      newline = pending.indexOf("\n");
      if (text.trim() === "") continue;
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        line = { level: "raw", msg: text };
      }
      logs.push(line);
      for (const watcher of watchers) watcher(line);
    }
  });
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => stderr.push(chunk));
  let alive = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => {
      alive = false;
      resolve({ code, signal });
    });
  });
  const waitForLog = (match: (line: LogLine) => boolean, timeout = 30_000) =>
    new Promise<LogLine>((resolve, reject) => {
      const found = logs.find(match);
      if (found) {
        resolve(found);
        return;
      }
      const timer = setTimeout(() => {
        watchers.delete(watcher);
        reject(
          new Error(`operator ${options.identity ?? child.pid}: no such log line in ${timeout} ms`),
        );
      }, timeout);
      const watcher = (line: LogLine) => {
        if (!match(line)) return;
        clearTimeout(timer);
        watchers.delete(watcher);
        resolve(line);
      };
      watchers.add(watcher);
      void exited.then(() => {
        if (!watchers.has(watcher)) return;
        clearTimeout(timer);
        watchers.delete(watcher);
        reject(
          new Error(
            `operator ${options.identity ?? child.pid} exited before the log line: ${stderr.join("").slice(-2000)}`,
          ),
        );
      });
    });
  // /readyz answers 200 once every cache has synced, whatever the log level.
  const ready = (async () => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (!alive)
        throw new Error(
          `operator ${options.identity ?? child.pid} exited before it was ready: ${stderr.join("").slice(-2000)}`,
        );
      try {
        const response = await fetch(`http://127.0.0.1:${metricsPort}/readyz`);
        await response.text();
        if (response.ok) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline)
        throw new Error(`operator ${options.identity ?? child.pid} not ready within 60 s`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  ready.catch(() => undefined);
  return {
    pid: child.pid as number,
    identity: options.identity,
    logs,
    stderr,
    metricsPort,
    ready,
    exited,
    get alive() {
      return alive;
    },
    async kill(signal = "SIGKILL") {
      if (alive) child.kill(signal);
      await exited;
    },
    async metrics() {
      const response = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
      return response.text();
    },
    waitForLog,
  };
}

/** The value of one series in Prometheus text (`name{labels} value`), undefined when absent. */
export function metricSample(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  let total: number | undefined;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)/.exec(line);
    if (!match || match[1] !== name) continue;
    const found: Record<string, string> = {};
    for (const pair of (match[3] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      found[pair[1] as string] = pair[2] as string;
    if (Object.entries(labels).every(([key, value]) => found[key] === value))
      total = (total ?? 0) + Number(match[4]);
  }
  return total;
}
