// Refs the build derives from its spec: the per-platform cache ref and the git context.
import { describe, expect, it } from "vitest";
import { cacheRefForPlatform, cacheRefProblem, splitTag } from "../../src/imagebuild/cache-ref.ts";
import { gitContext, gitHost, gitScheme } from "../../src/imagebuild/source.ts";

describe("one cache ref per platform", () => {
  it.each([
    [
      "registry.example.com/demo/app:buildcache",
      "amd64",
      "registry.example.com/demo/app:buildcache-amd64",
    ],
    [
      "registry.example.com:5000/demo/app:main",
      "arm-v7",
      "registry.example.com:5000/demo/app:main-arm-v7",
    ],
    ["registry.example.com:5000/demo/cache", "arm64", "registry.example.com:5000/demo/cache:arm64"],
    ["cache", "amd64", "cache:amd64"],
  ])("%s for %s is %s", (ref, slug, expected) => {
    expect(cacheRefForPlatform(ref, slug)).toBe(expected);
  });

  it("does not mistake a registry port for a tag", () => {
    expect(splitTag("localhost:5000/app")).toEqual({ repository: "localhost:5000/app" });
  });

  it("refuses a tag that the suffix would push past 128 characters", () => {
    expect(cacheRefProblem(`r/app:${"t".repeat(122)}`, "amd64")).toBeUndefined();
    expect(cacheRefProblem(`r/app:${"t".repeat(123)}`, "amd64")).toMatch(/too long/);
  });
});

describe("git contexts as BuildKit's dockerfile frontend reads them", () => {
  it.each([
    [{ url: "https://github.com/o/r.git", revision: "main" }, "https://github.com/o/r.git#main"],
    [
      { url: "https://github.com/o/r.git", revision: "v1.2", subPath: "app/web" },
      "https://github.com/o/r.git#v1.2:app/web",
    ],
    [
      { url: "git@github.com:o/r.git", revision: "HEAD", subPath: "app" },
      "git@github.com:o/r.git#:app",
    ],
    [{ url: "https://github.com/o/r.git", revision: "HEAD" }, "https://github.com/o/r.git"],
  ])("%j → %s", (git, context) => {
    expect(gitContext(git)).toBe(context);
  });

  it.each([
    ["https://github.com/o/r.git", "https", "github.com"],
    ["https://user@git.example.com:8443/o/r.git", "https", "git.example.com:8443"],
    ["ssh://git@github.com/o/r.git", "ssh", "github.com"],
    ["git@github.com:o/r.git", "ssh", undefined],
    ["git://example.com/r.git", "git", "example.com"],
  ])("%s is %s with host %s", (url, scheme, host) => {
    expect(gitScheme(url)).toBe(scheme);
    expect(gitHost(url)).toBe(host);
  });
});
