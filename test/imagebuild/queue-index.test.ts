// The queue index kept between reconciles gives poolQueue's answers: random sequences of
// builds changing their slot requests (and the build being reconciled standing in for its
// stored requests) are replayed against assignSlots over the same requests.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { BuilderPoolSpec } from "../../src/api/builderpool.ts";
import { assignSlots, type SlotRequest } from "../../src/imagebuild/queue.ts";
import { QueueIndex } from "../../src/imagebuild/queue-index.ts";
import { examplePool } from "./fixtures.ts";

const spec = (amd64: number, arm64: number): BuilderPoolSpec =>
  examplePool({
    spec: {
      maxConcurrentBuilds: amd64,
      architectures: [
        { name: "amd64", replicas: 1 },
        { name: "arm64", replicas: 1, maxConcurrentBuilds: arm64 },
      ],
    },
  }).spec;

const NAMES = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
const ARCHES = ["amd64", "arm64", "s390x"];

const requestsArb = (name: string) =>
  fc
    .record({
      // Ties on the timestamp are broken by name, then slug: both are exercised.
      minute: fc.integer({ min: 0, max: 3 }),
      platforms: fc.uniqueArray(
        fc.record({
          architecture: fc.constantFrom(...ARCHES),
          slug: fc.constantFrom("x", "y"),
          state: fc.constantFrom("running" as const, "waiting" as const),
        }),
        { selector: (p) => p.slug, maxLength: 2 },
      ),
    })
    .map(({ minute, platforms }) =>
      platforms.map(
        (p): SlotRequest => ({
          build: {
            namespace: "ns",
            name,
            uid: `uid-${name}`,
            creationTimestamp: `2026-03-01T10:0${minute}:00Z`,
          },
          slug: `${p.architecture}-${p.slug}`,
          architecture: p.architecture,
          state: p.state,
        }),
      ),
    );

const stepArb = fc.constantFrom(...NAMES).chain((name) =>
  fc.oneof(
    requestsArb(name).map((requests) => ({ kind: "set" as const, name, requests })),
    fc.constant({ kind: "delete" as const, name, requests: [] as SlotRequest[] }),
  ),
);

describe("the queue index kept between reconciles", () => {
  it("answers what assignSlots computes from every build's requests", () => {
    fc.assert(
      fc.property(
        fc.array(stepArb, { maxLength: 40 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 0, max: 3 }),
        (steps, amd64, arm64, depth) => {
          const pool = spec(amd64, arm64);
          const index = new QueueIndex();
          const stored = new Map<string, SlotRequest[]>();
          for (const step of steps) {
            if (step.kind === "set") {
              index.set(`ns/${step.name}`, "ns/pool", step.requests);
              stored.set(step.name, step.requests);
            } else {
              index.delete(`ns/${step.name}`);
              stored.delete(step.name);
            }
            const all = [...stored.values()].flat();
            const expected = assignSlots(pool, all);
            // Without a build standing in: the architectures and the head of the line.
            expect(index.state("ns/pool", pool).architectures).toEqual(expected.architectures);
            const head = new Set<string>();
            for (const [slot, verdict] of expected.verdicts)
              if (verdict.start || verdict.position <= depth)
                head.add(slot.slice(0, slot.lastIndexOf("/")));
            expect(new Set(index.head("ns/pool", pool, depth))).toEqual(head);
            // The build just changed, as a reconcile sees it: its verdicts and the counts.
            const current = step.requests;
            const state = index.state("ns/pool", pool, {
              key: `ns/${step.name}`,
              requests: current,
            });
            expect(state.architectures).toEqual(expected.architectures);
            const mine = new Map(
              [...expected.verdicts].filter(([slot]) => slot.startsWith(`ns/${step.name}/`)),
            );
            expect(state.verdicts).toEqual(mine);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("lets the build being reconciled stand in for what is stored for it", () => {
    fc.assert(
      fc.property(
        fc.array(stepArb, { maxLength: 20 }),
        fc.constantFrom(...NAMES).chain((name) => requestsArb(name).map((r) => ({ name, r }))),
        (steps, current) => {
          const pool = spec(2, 1);
          const index = new QueueIndex();
          const stored = new Map<string, SlotRequest[]>();
          for (const step of steps) {
            if (step.kind === "set") {
              index.set(`ns/${step.name}`, "ns/pool", step.requests);
              stored.set(step.name, step.requests);
            } else {
              index.delete(`ns/${step.name}`);
              stored.delete(step.name);
            }
          }
          stored.set(current.name, current.r);
          const expected = assignSlots(pool, [...stored.values()].flat());
          const state = index.state("ns/pool", pool, {
            key: `ns/${current.name}`,
            requests: current.r,
          });
          expect(state.architectures).toEqual(expected.architectures);
          expect(state.verdicts).toEqual(
            new Map(
              [...expected.verdicts].filter(([slot]) => slot.startsWith(`ns/${current.name}/`)),
            ),
          );
        },
      ),
      { numRuns: 300 },
    );
  });

  it("keeps pools apart and forgets a build that moved or went", () => {
    const pool = spec(1, 1);
    const index = new QueueIndex();
    const request = (name: string, state: SlotRequest["state"]): SlotRequest => ({
      build: { namespace: "ns", name, uid: name, creationTimestamp: "2026-03-01T10:00:00Z" },
      slug: "amd64",
      architecture: "amd64",
      state,
    });
    index.set("ns/a", "ns/one", [request("a", "running")]);
    index.set("ns/b", "ns/two", [request("b", "waiting")]);
    expect(index.head("ns/two", pool, 0)).toEqual(["ns/b"]);
    index.set("ns/a", "ns/two", [request("a", "running")]);
    expect(index.head("ns/two", pool, 0)).toEqual([]);
    expect(index.head("ns/two", pool, 1)).toEqual(["ns/b"]);
    expect(index.state("ns/one", pool).architectures[0]).toMatchObject({ running: 0 });
    index.delete("ns/a");
    expect(index.head("ns/two", pool, 0)).toEqual(["ns/b"]);
    expect(index.size).toBe(1);
  });
});
