// Runs `node src/cli.ts assemble ...` as a child process, as the index Job does.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { REPO_ROOT } from "../support/files.ts";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

export function runAssemble(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(REPO_ROOT, "src", "cli.ts"), "assemble", ...args],
      {
        cwd: REPO_ROOT,
        env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
        timeout: 60_000,
        encoding: "utf8",
      },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        resolve({ code, stdout, stderr, ms: Math.round(performance.now() - started) });
      },
    );
  });
}

/** The one JSON line a successful run prints. */
export function outputOf(result: CliResult): {
  digest: string;
  image: string;
  mediaType: string;
  platforms: string[];
  tags: string[];
  attestations?: { platform: string; digest: string; predicateTypes: string[] }[];
} {
  if (result.code !== 0) throw new Error(`assemble exited ${result.code}: ${result.stderr}`);
  const lines = result.stdout.trim().split("\n");
  if (lines.length !== 1) throw new Error(`expected one stdout line, got: ${result.stdout}`);
  return JSON.parse(lines[0] as string);
}

type FlagValue = string | readonly string[] | undefined;

/** `{ image: "r", digest: ["a", "b"] }` → `["--image", "r", "--digest", "a", "--digest", "b"]`. */
export function flags(values: Record<string, FlagValue>): string[] {
  return Object.entries(values).flatMap(([name, value]) =>
    value === undefined
      ? []
      : (typeof value === "string" ? [value] : value).flatMap((v) => [`--${name}`, v]),
  );
}
