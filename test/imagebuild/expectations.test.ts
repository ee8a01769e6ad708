import { describe, expect, it } from "vitest";
import { EXPECTATION_MS, Expectations } from "../../src/imagebuild/expectations.ts";

const owner = (name: string) => ({ uid: `uid-${name}`, key: `ns/${name}` });

describe("expectations: objects created here that the cache does not show yet", () => {
  it("are found by object and by owner until the cache shows them", () => {
    const expectations = new Expectations(() => 0);
    const changed: string[] = [];
    expectations.onChange = (key) => changed.push(key);
    expectations.expect("Job", "ns", "a-amd64", owner("a"));
    expectations.expect("Job", "ns", "a-arm64", owner("a"));
    expectations.expect("Secret", "ns", "a-buildkit-client", owner("a"));
    expectations.expect("Job", "ns", "b-amd64", owner("b"));
    expect(expectations.has("Job", "ns", "a-amd64")).toBe(true);
    expect(expectations.namesOf("Job", "uid-a")).toEqual(["a-amd64", "a-arm64"]);
    expect(expectations.namesOf("Secret", "uid-a")).toEqual(["a-buildkit-client"]);
    expectations.observed("Job", "ns", "a-amd64");
    expect(expectations.has("Job", "ns", "a-amd64")).toBe(false);
    expect(expectations.namesOf("Job", "uid-a")).toEqual(["a-arm64"]);
    expectations.observed("Job", "ns", "never-expected");
    expect(changed).toEqual(["ns/a", "ns/a", "ns/a", "ns/b", "ns/a"]);
  });

  it("expire after EXPECTATION_MS, oldest first, and a repeated create starts the wait again", () => {
    let now = 0;
    const expectations = new Expectations(() => now);
    expectations.expect("Job", "ns", "old", owner("a"));
    now = 10_000;
    expectations.expect("Job", "ns", "young", owner("a"));
    now = 20_000;
    expectations.expect("Job", "ns", "old", owner("a")); // created again: expected anew
    now = EXPECTATION_MS + 10_000;
    expect(expectations.namesOf("Job", "uid-a").sort()).toEqual(["old", "young"]);
    now = EXPECTATION_MS + 10_001;
    expect(expectations.namesOf("Job", "uid-a")).toEqual(["old"]);
    now = EXPECTATION_MS + 20_001;
    expect(expectations.has("Job", "ns", "old")).toBe(false);
    expect(expectations.size).toBe(0);
  });
});
