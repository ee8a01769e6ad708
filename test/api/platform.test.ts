// One set of platform rules for the build side (spec.platforms, slugs, the metadata check) and
// the registry side (assemble's --digest and its checks of what each digest names).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  ARCHITECTURES,
  canonicalPlatform,
  formatPlatform,
  normalizePlatform,
  PLATFORM,
  PLATFORM_SPEC,
  parsePlatform,
  platform,
  platformKey,
  platformSlug,
  samePlatform,
  specPlatforms,
} from "../../src/api/platform.ts";

/** Every string spec.platforms accepts: each architecture, bare or with v0..v9. */
const SPEC_PLATFORMS = ARCHITECTURES.flatMap((arch) => [
  `linux/${arch}`,
  ...Array.from({ length: 10 }, (_, n) => `linux/${arch}/v${n}`),
]);

/**
 * The rule the build side had before it shared the registry's (src/imagebuild/platforms.ts):
 * arm64 v8 and amd64 v1 dropped, arm's v7 added, nothing else. On what the schema accepts the
 * merged rule must give the same answers, so no Job, cache ref or label changes its name.
 */
function buildSideRule(text: string): string {
  const [os = "", architecture = "", variant] = text.split("/");
  let normalized = variant;
  if (architecture === "arm64" && variant === "v8") normalized = undefined;
  if (architecture === "amd64" && variant === "v1") normalized = undefined;
  if (architecture === "arm" && variant === undefined) normalized = "v7";
  return normalized === undefined ? `${os}/${architecture}` : `${os}/${architecture}/${normalized}`;
}

describe("platforms compare as containerd normalizes them", () => {
  it.each([
    ["linux/amd64", "linux/amd64", "amd64"],
    ["linux/amd64/v1", "linux/amd64", "amd64"],
    ["linux/amd64/v3", "linux/amd64/v3", "amd64-v3"],
    ["linux/arm64", "linux/arm64", "arm64"],
    ["linux/arm64/v8", "linux/arm64", "arm64"],
    ["linux/arm", "linux/arm/v7", "arm-v7"],
    ["linux/arm/v7", "linux/arm/v7", "arm-v7"],
    ["linux/arm/v6", "linux/arm/v6", "arm-v6"],
    ["linux/riscv64", "linux/riscv64", "riscv64"],
  ])("%s is %s, slug %s", (platform, normalized, slug) => {
    expect(canonicalPlatform(platform)).toBe(normalized);
    expect(platformSlug(platform)).toBe(slug);
  });
});

describe("descriptor platforms compare as containerd normalizes them", () => {
  it.each([
    [
      { os: "linux", architecture: "arm64", variant: "v8" },
      { os: "linux", architecture: "arm64" },
    ],
    [
      { os: "linux", architecture: "aarch64" },
      { os: "linux", architecture: "arm64" },
    ],
    [
      { os: "linux", architecture: "arm" },
      { os: "linux", architecture: "arm", variant: "v7" },
    ],
    [
      { os: "linux", architecture: "armhf" },
      { os: "linux", architecture: "arm", variant: "v7" },
    ],
    [
      { os: "linux", architecture: "x86_64" },
      { os: "linux", architecture: "amd64" },
    ],
    [
      { os: "linux", architecture: "i386" },
      { os: "linux", architecture: "386" },
    ],
    [
      { os: "Linux", architecture: "AMD64" },
      { os: "linux", architecture: "amd64" },
    ],
  ])("%o is the same platform as %o", (a, b) => {
    expect(samePlatform(a, b)).toBe(true);
    expect(platformKey(a)).toBe(platformKey(b));
  });

  it.each([
    [
      { os: "linux", architecture: "arm", variant: "v6" },
      { os: "linux", architecture: "arm", variant: "v7" },
    ],
    [
      { os: "linux", architecture: "amd64" },
      { os: "linux", architecture: "amd64", variant: "v3" },
    ],
    [
      { os: "linux", architecture: "amd64" },
      { os: "windows", architecture: "amd64" },
    ],
  ])("%o is not %o", (a, b) => {
    expect(samePlatform(a, b)).toBe(false);
  });

  it("parses and formats os/arch[/variant]", () => {
    expect(parsePlatform("linux/arm/v7")).toEqual({
      os: "linux",
      architecture: "arm",
      variant: "v7",
    });
    expect(formatPlatform(parsePlatform("linux/amd64"))).toBe("linux/amd64");
    expect(() => parsePlatform("linux")).toThrow("use os/arch[/variant]");
    expect(() => parsePlatform("linux/arm/v7/x")).toThrow();
  });

  it("normalisation is idempotent", () => {
    const part = fc.constantFrom(
      "linux",
      "windows",
      "amd64",
      "arm64",
      "arm",
      "aarch64",
      "x86_64",
      "v6",
      "v7",
      "v8",
      "8",
      "",
    );
    fc.assert(
      fc.property(part, part, part, (os, architecture, variant) => {
        const once = normalizePlatform({
          os: os || "linux",
          architecture: architecture || "amd64",
          variant,
        });
        expect(normalizePlatform(once)).toEqual(once);
      }),
    );
  });
});

describe("the build side and the registry side agree", () => {
  it("the schema's platforms are the ones PLATFORM lists, and each is a --digest platform", () => {
    expect(SPEC_PLATFORMS).toHaveLength(77);
    for (const text of SPEC_PLATFORMS) {
      expect(PLATFORM.test(text)).toBe(true);
      expect(platform.safeParse(text).success).toBe(true);
      expect(PLATFORM_SPEC.test(text)).toBe(true);
    }
    expect(platform.safeParse("linux/mips64").success).toBe(false);
  });

  it("canonicalPlatform keeps the build side's old answers on every platform the schema accepts", () => {
    for (const text of SPEC_PLATFORMS) expect(canonicalPlatform(text)).toBe(buildSideRule(text));
  });

  it("two spec platforms have one slug exactly when assemble would call them the same", () => {
    for (const a of SPEC_PLATFORMS) {
      for (const b of SPEC_PLATFORMS) {
        const same = samePlatform(parsePlatform(a), parsePlatform(b));
        expect(platformSlug(a) === platformSlug(b)).toBe(same);
        expect(canonicalPlatform(a) === canonicalPlatform(b)).toBe(same);
      }
    }
  });

  it("the canonical spelling is itself a spec platform, and canonical once", () => {
    for (const text of SPEC_PLATFORMS) {
      const canonical = canonicalPlatform(text);
      expect(PLATFORM.test(canonical)).toBe(true);
      expect(canonicalPlatform(canonical)).toBe(canonical);
      expect(formatPlatform(normalizePlatform(parsePlatform(text)))).toBe(canonical);
    }
  });

  it("specPlatforms keeps spec order and pairs each platform with its slug", () => {
    expect(specPlatforms(["linux/arm", "linux/amd64/v1", "linux/arm64/v8"])).toEqual([
      { platform: "linux/arm", slug: "arm-v7" },
      { platform: "linux/amd64/v1", slug: "amd64" },
      { platform: "linux/arm64/v8", slug: "arm64" },
    ]);
  });

  it("refuses what is not os/arch[/variant] instead of guessing a slug", () => {
    expect(() => platformSlug("linux")).toThrow("use os/arch[/variant]");
    expect(() => canonicalPlatform("Linux/AMD64")).toThrow("is not a platform");
  });

  it("platformKey never throws on a descriptor's free-form strings", () => {
    fc.assert(
      fc.property(
        fc.string(),
        fc.string(),
        fc.option(fc.string(), { nil: undefined }),
        (os, architecture, variant) => {
          const key = platformKey(
            variant === undefined ? { os, architecture } : { os, architecture, variant },
          );
          expect(typeof key).toBe("string");
        },
      ),
    );
  });
});
