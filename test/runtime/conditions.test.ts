import { describe, expect, it } from "vitest";
import { setCondition } from "../../src/runtime/conditions.ts";
import { specOrMetaChanged } from "../../src/runtime/controller.ts";
import { canonicalJson, stableHash } from "../../src/runtime/hash.ts";

const t1 = new Date("2026-01-01T00:00:00Z");
const t2 = new Date("2026-01-01T00:05:00Z");

describe("conditions", () => {
  it("keeps lastTransitionTime while the status stays, and moves it on a flip", () => {
    const first = setCondition(
      [],
      { type: "Ready", status: "False", reason: "BuildersNotReady", message: "0/1" },
      t1,
    );
    const same = setCondition(
      first,
      { type: "Ready", status: "False", reason: "BuildersNotReady", message: "0/2" },
      t2,
    );
    expect(same[0]).toMatchObject({ lastTransitionTime: "2026-01-01T00:00:00Z", message: "0/2" });
    const flipped = setCondition(
      same,
      { type: "Ready", status: "True", reason: "Ready", message: "2/2" },
      t2,
    );
    expect(flipped[0]?.lastTransitionTime).toBe("2026-01-01T00:05:00Z");
    expect(first[0]?.message).toBe("0/1"); // inputs are not modified
  });

  it("keeps one entry per type", () => {
    let conditions = setCondition([], { type: "A", status: "True", reason: "X", message: "" }, t1);
    conditions = setCondition(
      conditions,
      { type: "B", status: "True", reason: "X", message: "" },
      t1,
    );
    conditions = setCondition(
      conditions,
      { type: "A", status: "False", reason: "Y", message: "" },
      t1,
    );
    expect(conditions.map((c) => `${c.type}=${c.status}`)).toEqual(["A=False", "B=True"]);
  });
});

describe("stable hashing", () => {
  it("does not depend on key order and ignores undefined fields", () => {
    expect(canonicalJson({ b: 1, a: { d: 2, c: undefined } })).toBe('{"a":{"d":2},"b":1}');
    expect(stableHash({ a: 1, b: [1, 2] })).toBe(stableHash({ b: [1, 2], a: 1 }));
    expect(stableHash({ a: [1, 2] })).not.toBe(stableHash({ a: [2, 1] }));
  });
});

describe("primary update predicate", () => {
  const base = { metadata: { name: "x", generation: 1, resourceVersion: "1", labels: { a: "1" } } };
  it.each([
    ["a status-only write", { ...base.metadata, resourceVersion: "2" }, false],
    ["a spec change (generation)", { ...base.metadata, resourceVersion: "2", generation: 2 }, true],
    ["a deletion", { ...base.metadata, resourceVersion: "2", deletionTimestamp: new Date() }, true],
    ["a label change", { ...base.metadata, resourceVersion: "2", labels: { a: "2" } }, true],
    ["a finalizer change", { ...base.metadata, resourceVersion: "2", finalizers: ["x"] }, true],
  ])("%s → reconcile: %s", (_name, metadata, expected) => {
    expect(specOrMetaChanged(base, { metadata })).toBe(expected);
  });
  it("reconciles on a resync (the same object handed out again)", () => {
    expect(specOrMetaChanged(base, base)).toBe(true);
  });
});
