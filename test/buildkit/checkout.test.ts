// The real-BuildKit suites run the index Job's `buildfarm assemble` as UID 65532 from this
// checkout. Cloned into a directory others cannot enter (mktemp -d makes 0700), it fails with
// "Cannot find module"; the suites check first and say which directory, in one line.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { checkoutUnreachable, unreachableFor } from "../support/buildkit.ts";

const made: string[] = [];
afterEach(() => {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A checkout's shape (src/cli.ts, package.json, node_modules) inside a fresh mktemp -d. */
function checkout(): { parent: string; repo: string } {
  const parent = mkdtempSync(join(tmpdir(), "buildfarm-checkout-"));
  made.push(parent);
  const repo = join(parent, "buildfarm");
  mkdirSync(join(repo, "src"), { recursive: true });
  mkdirSync(join(repo, "node_modules"));
  writeFileSync(join(repo, "src", "cli.ts"), "");
  writeFileSync(join(repo, "package.json"), "{}");
  writeFileSync(join(repo, "node_modules", ".package-lock.json"), "{}");
  return { parent, repo };
}

describe("a checkout in a private directory", () => {
  it("names the directory UID 65532 cannot enter, and its mode", () => {
    const { parent, repo } = checkout();
    chmodSync(parent, 0o700);
    expect(checkoutUnreachable(repo)).toBe(
      `the index Job runs buildfarm assemble as UID 65532 from this checkout, and ${parent} is mode 0700 (it needs o+x; clone into a directory others can enter)`,
    );
  });

  it("passes a checkout whose every directory others may enter", () => {
    const { parent, repo } = checkout();
    chmodSync(parent, 0o755);
    expect(checkoutUnreachable(repo)).toBeUndefined();
  });

  it("names a file the UID cannot read", () => {
    const { parent, repo } = checkout();
    chmodSync(parent, 0o711);
    chmodSync(join(repo, "src", "cli.ts"), 0o600);
    expect(unreachableFor(join(repo, "src", "cli.ts"), 65532, 65532)).toEqual({
      path: join(repo, "src", "cli.ts"),
      mode: "0600",
    });
  });
});
