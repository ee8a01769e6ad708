// Temporary directories for one test file, removed when the file's tests are done.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll } from "vitest";

/** Call at the top of a test file; `make()` then gives a fresh directory under one root. */
export function tempDirs(prefix: string): { make(): Promise<string> } {
  let root: Promise<string> | undefined;
  afterAll(async () => {
    if (root) await rm(await root, { recursive: true, force: true });
  });
  return {
    async make() {
      root ??= mkdtemp(join(tmpdir(), `${prefix}-`));
      return mkdtemp(join(await root, "d-"));
    },
  };
}
