// Structured JSON logs. Redaction is the last line of defence: code never logs Secret data,
// certificates' keys or tokens on purpose, and these paths catch them if it ever does.
import { type LevelWithSilent, type Logger, pino } from "pino";

export const REDACT_PATHS = [
  "data",
  "stringData",
  "*.data",
  "*.stringData",
  "*.*.data",
  "password",
  "*.password",
  "token",
  "*.token",
  "auth",
  "*.auth",
  "keyPem",
  "*.keyPem",
  "privateKey",
  "*.privateKey",
  "authorization",
  "*.authorization",
  "headers.authorization",
  "*.headers.authorization",
];

export function createLogger(
  options: { level?: LevelWithSilent; name?: string; destination?: NodeJS.WritableStream } = {},
): Logger {
  return pino(
    {
      name: options.name ?? "buildfarm",
      level: options.level ?? "info",
      redact: { paths: REDACT_PATHS, censor: "[REDACTED]" },
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination as pino.DestinationStream | undefined,
  );
}
