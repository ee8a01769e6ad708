// The logging surface the registry client needs; a pino logger fits it as it is.
import type { Redactor } from "./redact.ts";

type LogFn = (fields: Record<string, unknown>, message: string) => void;

export interface Logger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
}

const nothing: LogFn = () => {};
export const silentLogger: Logger = {
  debug: nothing,
  info: nothing,
  warn: nothing,
  error: nothing,
};

/** Wraps a logger so that no known secret reaches it, whatever a caller passes. */
export function redactingLogger(logger: Logger, redactor: Redactor): Logger {
  const wrap =
    (level: keyof Logger): LogFn =>
    (fields, message) =>
      logger[level](redactor.redactFields(fields), redactor.redact(message));
  return { debug: wrap("debug"), info: wrap("info"), warn: wrap("warn"), error: wrap("error") };
}
