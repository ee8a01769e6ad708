import { describe, expect, it } from "vitest";
import { SpecError } from "../../src/api/resources.ts";
import { desiredPool } from "../../src/builderpool/desired.ts";
import {
  allowedNamespaceSelector,
  poolAdmitsNamespace,
  selectorMatches,
} from "../../src/builderpool/policy.ts";
import { specProblems } from "../../src/builderpool/validate.ts";
import { examplePool, poolContext } from "./fixtures.ts";

describe("selectorMatches (Kubernetes label selector semantics)", () => {
  const labels = { team: "a", tier: "build" };
  it.each([
    [{}, true],
    [{ matchLabels: { team: "a" } }, true],
    [{ matchLabels: { team: "b" } }, false],
    [{ matchExpressions: [{ key: "team", operator: "In", values: ["a", "b"] }] }, true],
    [{ matchExpressions: [{ key: "team", operator: "NotIn", values: ["a"] }] }, false],
    [{ matchExpressions: [{ key: "missing", operator: "NotIn", values: ["a"] }] }, true],
    [{ matchExpressions: [{ key: "tier", operator: "Exists" }] }, true],
    [{ matchExpressions: [{ key: "tier", operator: "DoesNotExist" }] }, false],
    [{ matchExpressions: [{ key: "missing", operator: "In", values: [""] }] }, false],
    [
      {
        matchLabels: { team: "a" },
        matchExpressions: [{ key: "tier", operator: "In", values: ["x"] }],
      },
      false,
    ],
  ])("%j → %s", (selector, expected) => {
    expect(selectorMatches(selector, labels)).toBe(expected);
  });
});

describe("which namespaces may use a pool", () => {
  it("by the pool's selector when it has one", () => {
    const pool = examplePool();
    expect(
      poolAdmitsNamespace(pool, { name: "team-a", labels: { "buildfarm.dev/builds": "allowed" } }),
    ).toBe(true);
    expect(poolAdmitsNamespace(pool, { name: "team-b", labels: {} })).toBe(false);
    // The pool's own namespace is always admitted, as its NetworkPolicy always admits it.
    expect(poolAdmitsNamespace(pool, { name: "buildfarm-builders" })).toBe(true);
  });

  it.each([
    ["absent", undefined],
    ["empty", {}],
    ["with empty lists", { matchLabels: {}, matchExpressions: [] }],
  ])(
    "only its own namespace when the selector is %s (never every namespace)",
    (_name, selector) => {
      const pool = examplePool((raw) => {
        if (selector === undefined) delete raw.spec.allowedNamespaces;
        else raw.spec.allowedNamespaces = selector;
      });
      expect(allowedNamespaceSelector(pool)).toBeUndefined();
      expect(poolAdmitsNamespace(pool, { name: "buildfarm-builders" })).toBe(true);
      expect(
        poolAdmitsNamespace(pool, {
          name: "elsewhere",
          labels: { "kubernetes.io/metadata.name": "buildfarm-builders" },
        }),
      ).toBe(false);
    },
  );
});

describe("problems the schema lets through", () => {
  const problemsOf = (change: Parameters<typeof examplePool>[0]) =>
    specProblems(examplePool(change));

  it("the example has none", () => {
    expect(specProblems(examplePool())).toEqual([]);
  });

  it("a GC cap at or above the cache size (the builder would be evicted first)", () => {
    expect(
      problemsOf((raw) => {
        raw.spec.buildkit = { gc: { keepStorage: "50Gi" } };
      }),
    ).toEqual([
      "spec.buildkit.gc.keepStorage: 50Gi must be below spec.cache.size (50Gi); a builder whose cache outgrows its emptyDir is evicted. Leave room for the builds running between two collections.",
    ]);
    expect(
      problemsOf((raw) => {
        raw.spec.buildkit = { gc: { keepStorage: "60Gi", enabled: false } };
      }),
    ).toEqual([]);
  });

  it("negative or zero sizes", () => {
    expect(
      problemsOf((raw) => {
        raw.spec.cache = { size: "-1Gi" };
        raw.spec.buildkit = { gc: { keepStorage: "-5Gi" } };
      }),
    ).toEqual([
      "spec.cache.size: must be a positive size such as 20Gi",
      "spec.buildkit.gc.keepStorage: must be a non-negative size such as 10Gi",
    ]);
  });

  it("a nodeSelector pinning another architecture", () => {
    const pool = examplePool((raw) => {
      (raw.spec.architectures as Record<string, unknown>[])[1] = {
        name: "arm64",
        nodeSelector: { "kubernetes.io/arch": "amd64" },
      };
    });
    expect(specProblems(pool)).toEqual([
      "spec.architectures[1].nodeSelector: kubernetes.io/arch=amd64 contradicts the architecture arm64; remove it, the operator pins kubernetes.io/arch itself",
    ]);
    expect(() => desiredPool(pool, poolContext())).toThrow(SpecError);
  });
});
