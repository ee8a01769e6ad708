// bench/results.md holds the latest tables between markers, `<!-- <name>:begin -->` and
// `<!-- <name>:end -->`; each benchmark rewrites its own block and keeps the notes around it.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "../test/support/files.ts";

export const RESULTS_FILE = join(REPO_ROOT, "bench/results.md");

/** Replaces the block `name` of bench/results.md with `text`, or appends it; returns the path. */
export function writeResults(name: string, text: string): string {
  const begin = `<!-- ${name}:begin -->`;
  const end = `<!-- ${name}:end -->`;
  const block = `${begin}\n${text}\n${end}`;
  const previous = existsSync(RESULTS_FILE) ? readFileSync(RESULTS_FILE, "utf8") : "";
  writeFileSync(
    RESULTS_FILE,
    previous.includes(begin) && previous.includes(end)
      ? previous.slice(0, previous.indexOf(begin)) +
          block +
          previous.slice(previous.indexOf(end) + end.length)
      : previous === ""
        ? `${block}\n`
        : `${previous.trimEnd()}\n\n${block}\n`,
  );
  return RESULTS_FILE;
}
