import { describe, expect, it } from "vitest";
import { buildkitdConfig, configMap } from "../../src/builderpool/config.ts";
import { quantityToBytes } from "../../src/builderpool/quantity.ts";
import { renderToml, tomlKey, tomlString } from "../../src/builderpool/toml.ts";
import { examplePool } from "./fixtures.ts";

describe("quantityToBytes", () => {
  it.each([
    ["40Gi", 42_949_672_960n],
    ["40G", 40_000_000_000n],
    ["500M", 500_000_000n],
    ["512Mi", 536_870_912n],
    ["1.5Gi", 1_610_612_736n],
    ["1e9", 1_000_000_000n],
    ["2E3", 2_000n],
    ["100k", 100_000n],
    ["1500m", 2n],
    ["0.5", 1n],
    [".5Ki", 512n],
    ["0", 0n],
    [1024, 1024n],
  ] as const)("%s is %s bytes", (quantity, bytes) => {
    expect(quantityToBytes(quantity)).toBe(bytes);
  });

  it.each(["-1Gi", "1GB", "Gi", "", "1 Gi"])("refuses %j", (quantity) => {
    expect(() => quantityToBytes(quantity)).toThrow(/is not a non-negative Kubernetes quantity/);
  });
});

describe("TOML writing", () => {
  it("escapes strings as TOML basic strings", () => {
    expect(tomlString('a"b\\c\nd\te\u0001')).toBe('"a\\"b\\\\c\\nd\\te\\u0001"');
  });

  it("quotes keys that are not bare, with brackets as escapes for go-toml v1", () => {
    expect(tomlKey("max-parallelism")).toBe("max-parallelism");
    expect(tomlKey("registry.example.com:5000")).toBe('"registry.example.com:5000"');
    expect(tomlKey("[::1]:5000")).toBe('"\\u005B::1\\u005D:5000"');
  });

  it("renders tables, arrays of tables and comments", () => {
    expect(
      renderToml("head\nline", [
        {
          path: ["a", "b c"],
          comment: "x",
          entries: [
            ["k", 1],
            ["s", "v"],
            ["l", ["p", "q"]],
          ],
        },
        { path: ["a", "t"], arrayItem: true, entries: [["on", true]] },
      ]),
    ).toBe(
      '# head\n# line\n\n# x\n[a."b c"]\n  k = 1\n  s = "v"\n  l = ["p", "q"]\n\n[[a.t]]\n  on = true\n',
    );
  });
});

describe("buildkitd.toml", () => {
  it("for the example pool: rootless OCI worker, GC from keepDuration and keepStorage", () => {
    expect(
      buildkitdConfig(examplePool()),
    ).toBe(`# buildkitd.toml for BuilderPool buildfarm-builders/default, written by buildfarm from the pool's spec; edits are overwritten.

# The OCI worker in rootless mode: rootlesskit gives buildkitd a user namespace, runc runs build steps without cgroups.
[worker.oci]
  enabled = true
  rootless = true
  gc = true

# Cache records unused for 72h are pruned, whatever the space used.
[[worker.oci.gcpolicy]]
  keepDuration = "72h"

# Then unshared records, oldest first, until the cache is under 40Gi.
[[worker.oci.gcpolicy]]
  maxUsedSpace = "42949672960"

# Then shared and internal records too, if that was not enough.
[[worker.oci.gcpolicy]]
  all = true
  maxUsedSpace = "42949672960"

# No containerd in the builder pod; skip probing for its socket.
[worker.containerd]
  enabled = false
`);
  });

  it("sets max-parallelism, turns GC off, and configures registries that need it", () => {
    const text = buildkitdConfig(
      examplePool((raw) => {
        raw.spec.buildkit = { gc: { enabled: false }, maxParallelism: 6 };
        raw.spec.registries = [
          { host: "registry.internal:5000", http: true, insecure: true },
          { host: "secure.example.com" },
          { host: "[fd00::1]:5000", insecure: true },
        ];
      }),
    );
    expect(text).toContain("  gc = false\n  max-parallelism = 6\n");
    expect(text).not.toContain("gcpolicy");
    expect(text).toContain(
      '[registry."registry.internal:5000"]\n  http = true\n  insecure = true\n',
    );
    expect(text).not.toContain("secure.example.com");
    expect(text).toContain('[registry."\\u005Bfd00::1\\u005D:5000"]\n  insecure = true\n');
  });

  it("goes into the pool's ConfigMap", () => {
    const map = configMap(examplePool());
    expect(map.metadata?.name).toBe("default-buildkitd-config");
    expect(Object.keys(map.data ?? {})).toEqual(["buildkitd.toml"]);
  });
});
