import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { chooseBuilder, preferenceOrder } from "../../src/build/routing.ts";

const builders = ["pool-amd64-0", "pool-amd64-1", "pool-amd64-2", "pool-amd64-3"];
const ready = (names: string[], running: Record<string, number> = {}) =>
  names.map((name) => ({ name, ready: true, running: running[name] ?? 0 }));

describe("rendezvous routing", () => {
  it("sends the same key to the same builder, whatever the order builders are listed in", () => {
    fc.assert(
      fc.property(
        fc.string(),
        fc.shuffledSubarray(builders, { minLength: 4, maxLength: 4 }),
        (key, shuffled) => {
          expect(chooseBuilder(key, ready(shuffled), 1)?.name).toBe(
            chooseBuilder(key, ready(builders), 1)?.name,
          );
        },
      ),
    );
  });

  it("moves only the keys of a builder that went away", () => {
    const keys = Array.from({ length: 2000 }, (_, i) => `repo-${i}`);
    const before = new Map(keys.map((key) => [key, chooseBuilder(key, ready(builders), 1)?.name]));
    const after = new Map(
      keys.map((key) => [key, chooseBuilder(key, ready(builders.slice(0, 3)), 1)?.name]),
    );
    const moved = keys.filter((key) => before.get(key) !== after.get(key));
    expect(moved.every((key) => before.get(key) === "pool-amd64-3")).toBe(true);
    // Roughly a quarter of the keys lived there; the rest stayed put.
    expect(moved.length).toBeGreaterThan(350);
    expect(moved.length).toBeLessThan(650);
  });

  it("spreads keys evenly", () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 4000; i++) {
      const name = chooseBuilder(`k${i}`, ready(builders), 1)?.name as string;
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    for (const name of builders) expect(counts.get(name)).toBeGreaterThan(850);
  });

  it("falls back to the next builder in the key's order when the first is not ready or full, and to none when all are", () => {
    const [first, second, third] = preferenceOrder("repo", builders) as [string, string, string];
    expect(chooseBuilder("repo", ready(builders), 2)?.name).toBe(first);
    expect(chooseBuilder("repo", ready(builders, { [first]: 2 }), 2)?.name).toBe(second);
    const notReady = ready(builders).map((c) =>
      c.name === first || c.name === second ? { ...c, ready: false } : c,
    );
    expect(chooseBuilder("repo", notReady, 2)?.name).toBe(third);
    expect(
      chooseBuilder("repo", ready(builders, Object.fromEntries(builders.map((b) => [b, 2]))), 2),
    ).toBeUndefined();
    expect(chooseBuilder("repo", [], 2)).toBeUndefined();
  });
});
