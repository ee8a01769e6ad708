import { CONFIG_USAGE, ConfigError, loadConfig } from "../config.ts";
import { startOperator } from "../operator.ts";
import { createLogger } from "../runtime/log.ts";

/** How long a stopped operator may take to wind down on its own before it exits anyway. */
const EXIT_GRACE_MS = 5_000;

/** `buildfarm operator`: runs the controllers until SIGTERM, or until leadership is lost. */
export async function operatorCommand(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(`usage: buildfarm operator [options]\n\noptions:\n${CONFIG_USAGE}\n`);
    return 0;
  }
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(argv, process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`buildfarm operator: invalid configuration:\n${error.message}\n`);
      return 2;
    }
    throw error;
  }
  const log = createLogger({ level: config.logLevel });
  const { manager, outcome } = await startOperator(config, { log });
  const shutdown = (signal: string) => {
    log.info({ signal }, "shutting down");
    void manager.stop();
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
  const result = await outcome;
  log.info({ outcome: result }, "operator stopped");
  // Losing the lease is a failure: the pod restarts and campaigns again, as controller-runtime does.
  const code = result === "leadership-lost" ? 1 : 0;
  // The stop is done: whatever still holds the event loop (a connection a library gives no way
  // to abort) must not keep the process, and its pod, alive. Unref'd, the timer fires only then.
  setTimeout(() => {
    log.warn({ graceMs: EXIT_GRACE_MS }, "still open after the stop; exiting");
    process.exit(code);
  }, EXIT_GRACE_MS).unref();
  return code;
}
