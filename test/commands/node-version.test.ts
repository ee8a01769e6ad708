// The `buildfarm` bin under a Node older than 24: dist/cli.js, compiled by the project's own
// build, run by an older `node` found on this machine (Debian's system node is 20). It must say
// what it needs and exit 1 before it loads any module that needs Node 24.
import { execFile, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../support/files.ts";

const run = promisify(execFile);

/** A `node` on this machine older than 24, if any: the one the bin's shebang may find. */
function olderNode(): { path: string; version: string } | undefined {
  for (const path of ["/usr/bin/node", "/usr/local/bin/node", "/bin/node"]) {
    try {
      const version = execFileSync(path, ["--version"], { encoding: "utf8" }).trim();
      if (Number(/^v(\d+)\./.exec(version)?.[1]) < 24) return { path, version };
    } catch {
      // not there
    }
  }
  return undefined;
}

const older = olderNode();
if (!older) process.stderr.write("skipping the Node <24 bin test: no node older than 24 here\n");

describe.skipIf(!older)(`dist/cli.js under ${older?.version ?? "an older Node"}`, () => {
  let dist: string;

  beforeAll(async () => {
    // Inside the checkout, so that dist/ resolves node_modules as the installed package does.
    const scratch = join(REPO_ROOT, ".tmp");
    mkdirSync(scratch, { recursive: true });
    dist = mkdtempSync(join(scratch, "node-version-"));
    await run("npx", ["tsc", "-p", "tsconfig.build.json", "--outDir", dist], { cwd: REPO_ROOT });
  }, 120_000);

  afterAll(() => {
    if (dist) rmSync(dist, { recursive: true, force: true });
  });

  it.each([
    ["operator"],
    ["status app-1"],
    ["logs app-1"],
    ["assemble --help"],
    ["crds"],
    ["--help"],
  ])("buildfarm %s says it needs Node 24 and exits 1", async (command: string) => {
    const argv = command.split(" ");
    const major = older?.version.slice(1).split(".")[0];
    const failure = await run(older!.path, [join(dist, "cli.js"), ...argv]).then(
      () => undefined,
      (error: { code: number; stdout: string; stderr: string }) => error,
    );
    expect(failure?.code).toBe(1);
    expect(failure?.stderr).toBe(`buildfarm needs Node 24 (this is ${major}.x)\n`);
    expect(failure?.stdout).toBe("");
  });
});
