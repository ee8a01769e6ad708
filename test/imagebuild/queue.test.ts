import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { capacityOf } from "../../src/api/builderpool.ts";
import { buildJob } from "../../src/imagebuild/jobs.ts";
import {
  assignSlots,
  compareBuilds,
  demandOf,
  poolQueue,
  type QueuedBuild,
  type SlotRequest,
  slotKey,
  slotRequestsOf,
} from "../../src/imagebuild/queue.ts";
import { exampleBuild, examplePlan, examplePool, job } from "./fixtures.ts";

const pool = examplePool({
  spec: {
    maxConcurrentBuilds: 2,
    architectures: [
      { name: "amd64", replicas: 2 },
      { name: "arm64", replicas: 1, maxConcurrentBuilds: 1 },
    ],
  },
}).spec;

const b = (name: string, minute: number, namespace = "ns"): QueuedBuild => ({
  namespace,
  name,
  uid: `uid-${name}`,
  creationTimestamp: `2026-03-01T10:${String(minute).padStart(2, "0")}:00Z`,
});

const wait = (build: QueuedBuild, architecture = "amd64"): SlotRequest => ({
  build,
  slug: architecture,
  architecture,
  state: "waiting",
});
const run = (build: QueuedBuild, architecture = "amd64"): SlotRequest => ({
  ...wait(build, architecture),
  state: "running",
});

describe("the queue runs at most maxConcurrentBuilds per architecture, first come first served", () => {
  it("starts the oldest builds and numbers the rest from 1", () => {
    const [a, bb, c, d] = [b("a", 1), b("b", 2), b("c", 3), b("d", 4)];
    const state = assignSlots(pool, [wait(d), wait(bb), wait(a), wait(c)]);
    expect(state.verdicts.get(slotKey(a, "amd64"))).toEqual({ start: true });
    expect(state.verdicts.get(slotKey(bb, "amd64"))).toEqual({ start: true });
    expect(state.verdicts.get(slotKey(c, "amd64"))).toEqual({
      start: false,
      position: 1,
      running: 0,
      capacity: 2,
    });
    expect(state.verdicts.get(slotKey(d, "amd64"))).toEqual({
      start: false,
      position: 2,
      running: 0,
      capacity: 2,
    });
    expect(state.architectures).toEqual([
      { architecture: "amd64", capacity: 2, running: 0, waiting: 2, queued: 4 },
      { architecture: "arm64", capacity: 1, running: 0, waiting: 0, queued: 0 },
    ]);
    // What the autoscaler sizes builders from: every platform in line, and those running.
    expect(demandOf(state)).toEqual({
      amd64: { queued: 4, running: 0 },
      arm64: { queued: 0, running: 0 },
    });
  });

  it("counts running Jobs against the capacity, and a finished one frees its slot at once", () => {
    const [a, bb, c] = [b("a", 1), b("b", 2), b("c", 3)];
    const full = assignSlots(pool, [run(a), run(bb), wait(c)]);
    expect(full.verdicts.get(slotKey(c, "amd64"))).toMatchObject({ start: false, position: 1 });
    const freed = assignSlots(pool, [run(bb), wait(c)]);
    expect(freed.verdicts.get(slotKey(c, "amd64"))).toEqual({ start: true });
  });

  it("keeps running Jobs when an older build shows up or the capacity shrank", () => {
    const [old, x, y] = [b("old", 0), b("x", 5), b("y", 6)];
    const state = assignSlots(pool, [run(x), run(y), wait(old)]);
    expect(state.verdicts.get(slotKey(old, "amd64"))).toMatchObject({
      start: false,
      position: 1,
      running: 2,
    });
    expect(state.verdicts.has(slotKey(x, "amd64"))).toBe(false);
  });

  it("uses the architecture's own maxConcurrentBuilds", () => {
    expect(capacityOf(pool, "arm64")).toBe(1);
    expect(capacityOf(pool, "amd64")).toBe(2);
    const [a, bb] = [b("a", 1), b("b", 2)];
    const state = assignSlots(pool, [wait(a, "arm64"), wait(bb, "arm64")]);
    expect(state.verdicts.get(slotKey(bb, "arm64"))).toMatchObject({
      start: false,
      position: 1,
      capacity: 1,
    });
  });

  it("lets a multi-arch build start where a slot is free and wait where none is", () => {
    const [busy, multi] = [b("busy", 1), b("multi", 2)];
    const state = assignSlots(pool, [
      run(busy, "arm64"),
      wait(multi, "amd64"),
      wait(multi, "arm64"),
    ]);
    expect(state.verdicts.get(slotKey(multi, "amd64"))).toEqual({ start: true });
    expect(state.verdicts.get(slotKey(multi, "arm64"))).toMatchObject({
      start: false,
      position: 1,
    });
  });

  it("breaks creationTimestamp ties by namespace/name, then uid", () => {
    const same = "2026-03-01T10:00:00Z";
    const x = { namespace: "a", name: "z", uid: "2", creationTimestamp: same };
    const y = { namespace: "b", name: "a", uid: "1", creationTimestamp: same };
    const z = { namespace: "b", name: "a", uid: "0", creationTimestamp: same };
    expect([y, z, x].sort(compareBuilds)).toEqual([x, z, y]);
  });
});

describe("queue invariants over arbitrary pools of requests", () => {
  const requestArb = fc.record({
    minute: fc.integer({ min: 0, max: 59 }),
    name: fc.constantFrom("a", "b", "c", "d", "e", "f", "g", "h"),
    architecture: fc.constantFrom("amd64", "arm64"),
    state: fc.constantFrom("running" as const, "waiting" as const),
  });
  const requestsArb = fc
    .uniqueArray(requestArb, { selector: (r) => `${r.name}/${r.architecture}`, maxLength: 16 })
    .map((list) =>
      list.map(
        (r): SlotRequest => ({
          build: b(r.name, r.minute),
          slug: r.architecture,
          architecture: r.architecture,
          state: r.state,
        }),
      ),
    );

  it("never starts more than the free slots, never lets a younger build overtake, numbers waiters 1..n", () => {
    fc.assert(
      fc.property(requestsArb, (requests) => {
        const state = assignSlots(pool, requests);
        for (const architecture of ["amd64", "arm64"]) {
          const mine = requests.filter((r) => r.architecture === architecture);
          const running = mine.filter((r) => r.state === "running").length;
          const waiting = mine.filter((r) => r.state === "waiting");
          const started = waiting.filter(
            (r) => state.verdicts.get(slotKey(r.build, r.slug))?.start,
          );
          const queued = waiting.filter(
            (r) => !state.verdicts.get(slotKey(r.build, r.slug))?.start,
          );
          expect(started.length).toBe(
            Math.min(waiting.length, Math.max(0, capacityOf(pool, architecture) - running)),
          );
          for (const s of started)
            for (const q of queued) expect(compareBuilds(s.build, q.build)).toBeLessThanOrEqual(0);
          const positions = queued
            .map((r) => state.verdicts.get(slotKey(r.build, r.slug)))
            .map((v) => (v && !v.start ? v.position : 0))
            .sort((x, y) => x - y);
          expect(positions).toEqual(positions.map((_, i) => i + 1));
        }
      }),
    );
  });
});

describe("a build's slot requests", () => {
  const build = exampleBuild({ status: { phase: "Building" } });
  const plan = examplePlan(build);
  const [amd64, arm64] = plan.targets as [(typeof plan.targets)[0], (typeof plan.targets)[0]];

  it("holds a slot for each unfinished Job and waits for the platforms without one", () => {
    const running = job(buildJob(build, plan, amd64), { pods: [{ phase: "Running" }] });
    expect(slotRequestsOf(build, plan.targets, { amd64: running })).toEqual([
      expect.objectContaining({ slug: "amd64", state: "running" }),
      expect.objectContaining({ slug: "arm64", architecture: "arm64", state: "waiting" }),
    ]);
  });

  it("frees the slot of a finished Job and never re-queues a platform with a digest", () => {
    const done = job(buildJob(build, plan, arm64), {
      outcome: { type: "Complete" },
    });
    const withDigest = exampleBuild({
      status: {
        phase: "Building",
        platforms: [
          { platform: "linux/amd64", phase: "Succeeded", digest: `sha256:${"a".repeat(64)}` },
        ],
      },
    });
    expect(slotRequestsOf(withDigest, plan.targets, { arm64: done })).toEqual([]);
  });

  it("ignores Jobs another object controls", () => {
    const foreign = job(buildJob(build, plan, amd64), {
      pods: [{ phase: "Running" }],
      ownerUid: "someone-else",
    });
    expect(slotRequestsOf(build, plan.targets, { amd64: foreign })).toEqual([
      expect.objectContaining({ slug: "arm64", state: "waiting" }),
    ]);
  });

  it("puts only admitted builds in line: pending and finished ones hold nothing", () => {
    expect(
      slotRequestsOf(exampleBuild({ status: { phase: "Pending" } }), plan.targets, {}),
    ).toEqual([]);
    expect(
      slotRequestsOf(
        exampleBuild({ metadata: { deletionTimestamp: "2026-03-01T10:00:00Z" } }),
        plan.targets,
        {},
      ),
    ).toEqual([]);
    expect(slotRequestsOf(exampleBuild({ status: { phase: "Failed" } }), plan.targets, {})).toEqual(
      [],
    );
    expect(slotRequestsOf(exampleBuild(), plan.targets, {}, true)).toHaveLength(2);
  });

  it("counts a build the operator has not looked at yet (no status) as standing in line", () => {
    // Otherwise, of builds created together, whichever is reconciled first would start first.
    expect(slotRequestsOf(exampleBuild(), plan.targets, {})).toEqual([
      expect.objectContaining({ slug: "amd64", state: "waiting" }),
      expect.objectContaining({ slug: "arm64", state: "waiting" }),
    ]);
  });
});

describe("the whole pool's queue", () => {
  const capped = examplePool({ spec: { maxConcurrentBuilds: 1 } });
  const named = (name: string, minute: number, phase?: string) =>
    exampleBuild({
      metadata: { name, uid: `uid-${name}`, creationTimestamp: `2026-03-01T10:0${minute}:00Z` },
      ...(phase ? { status: { phase } } : {}),
    });

  it("puts every admitted build of the pool in one line per architecture", () => {
    const first = named("first", 1, "Queued");
    const second = named("second", 2, "Queued");
    const state = poolQueue(capped, [
      { build: second, jobs: {} },
      { build: first, jobs: {} },
    ]);
    expect(state.verdicts.get(slotKey(first.metadata, "amd64"))).toEqual({ start: true });
    expect(state.verdicts.get(slotKey(second.metadata, "arm64"))).toMatchObject({
      start: false,
      position: 1,
    });
    expect(state.architectures).toEqual([
      { architecture: "amd64", capacity: 1, running: 0, waiting: 1, queued: 2 },
      { architecture: "arm64", capacity: 1, running: 0, waiting: 1, queued: 2 },
    ]);
  });

  it("lets the build being reconciled in before its status says Queued, and leaves out unserved ones", () => {
    const fresh = named("fresh", 3);
    const unserved = exampleBuild({
      metadata: { name: "s390x", uid: "uid-s", creationTimestamp: "2026-03-01T09:00:00Z" },
      spec: { platforms: ["linux/s390x"] },
      status: { phase: "Queued" },
    });
    const state = poolQueue(
      capped,
      [
        { build: fresh, jobs: {} },
        { build: unserved, jobs: {} },
      ],
      {
        namespace: fresh.metadata.namespace,
        name: "fresh",
        admitted: true,
      },
    );
    expect(state.verdicts.get(slotKey(fresh.metadata, "amd64"))).toEqual({ start: true });
    expect(state.verdicts.size).toBe(2);
  });
});
