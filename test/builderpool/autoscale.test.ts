import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  Autoscaler,
  type Demand,
  deletionCosts,
  desiredReplicas,
  type ScaleMemory,
  servableDemand,
  targetReplicas,
} from "../../src/builderpool/autoscale.ts";
import { examplePool } from "../imagebuild/fixtures.ts";

const scaling = { minReplicas: 0, maxReplicas: 4, buildsPerReplica: 2, scaleDownDelay: "5m" };
const MINUTE = 60_000;
const demand = (queued: number, running = 0): Demand => ({ queued, running });

describe("the replicas demand asks for", () => {
  it.each([
    [demand(0), 0],
    [demand(1), 1],
    [demand(2), 1],
    [demand(2, 1), 2],
    [demand(7, 2), 4],
  ])("%o → %i: ceil((queued + running) / buildsPerReplica) within [min, max]", (seen, replicas) => {
    expect(targetReplicas(scaling, seen)).toBe(replicas);
  });

  it("keeps minReplicas when idle", () => {
    expect(targetReplicas({ ...scaling, minReplicas: 1 }, demand(0))).toBe(1);
  });
});

describe("the demand builders can serve", () => {
  it("counts no more builds than the architecture's slots, and every running one", () => {
    expect(servableDemand(demand(40, 2), 4)).toEqual(demand(2, 2));
    expect(servableDemand(demand(3, 0), 4)).toEqual(demand(3, 0));
    // The slots shrank below what runs: running builds still count, queued ones do not.
    expect(servableDemand(demand(5, 6), 4)).toEqual(demand(0, 6));
  });

  it("sizes a long queue for the builds that may run: 4 slots at 2 per builder is 2", () => {
    const pool = examplePool({
      spec: {
        maxConcurrentBuilds: 4,
        architectures: [
          { name: "arm64", autoscaling: { ...scaling, maxReplicas: 4, buildsPerReplica: 2 } },
        ],
      },
    });
    const scaler = new Autoscaler({ demand: () => ({ arm64: demand(30) }) });
    expect(scaler.scale(pool, { arm64: 0 }, new Date(0)).replicas).toEqual({ arm64: 2 });
  });
});

describe("scaling decisions", () => {
  it("scales up at once, from zero too", () => {
    expect(desiredReplicas(scaling, demand(1), 0, {}, 0)).toEqual({
      replicas: 1,
      memory: { replicas: 1 },
    });
    expect(desiredReplicas(scaling, demand(6), 1, {}, 0).replicas).toBe(3);
  });

  it("starts a new workload at what the demand asks for", () => {
    expect(desiredReplicas(scaling, demand(0), undefined, {}, 0).replicas).toBe(0);
  });

  it("scales down only once the demand has stayed lower for scaleDownDelay", () => {
    const first = desiredReplicas(scaling, demand(0), 3, {}, 0);
    expect(first).toEqual({
      replicas: 3,
      memory: { replicas: 3, lowSince: 0, peak: 0 },
      requeueAfterMs: 5 * MINUTE,
    });
    const later = desiredReplicas(scaling, demand(0), 3, first.memory, 4 * MINUTE);
    expect(later).toMatchObject({ replicas: 3, requeueAfterMs: MINUTE });
    const after = desiredReplicas(scaling, demand(0), 3, later.memory, 5 * MINUTE);
    expect(after).toEqual({ replicas: 0, memory: { replicas: 0 } });
  });

  it("goes down to the most the demand asked for during the delay, and waits again for the rest", () => {
    let memory: ScaleMemory = {};
    let step = desiredReplicas(scaling, demand(1), 4, memory, 0); // target 1
    memory = step.memory;
    step = desiredReplicas(scaling, demand(5), 4, memory, 2 * MINUTE); // target 3, still below 4
    memory = step.memory;
    step = desiredReplicas(scaling, demand(0), 4, memory, 5 * MINUTE); // delay passed
    expect(step.replicas).toBe(3);
    expect(step.requeueAfterMs).toBe(5 * MINUTE);
    step = desiredReplicas(scaling, demand(0), 3, step.memory, 10 * MINUTE);
    expect(step.replicas).toBe(0);
  });

  it("forgets a pending scale-down when the demand comes back", () => {
    const low = desiredReplicas(scaling, demand(0), 2, {}, 0);
    const back = desiredReplicas(scaling, demand(4), 2, low.memory, MINUTE);
    expect(back).toEqual({ replicas: 2, memory: { replicas: 2 } });
    const lowAgain = desiredReplicas(scaling, demand(0), 2, back.memory, 2 * MINUTE);
    expect(lowAgain).toMatchObject({ replicas: 2, requeueAfterMs: 5 * MINUTE });
  });

  it("moves into new bounds at once when the spec changes them", () => {
    expect(desiredReplicas({ ...scaling, maxReplicas: 2 }, demand(0), 4, {}, 0).replicas).toBe(2);
    expect(desiredReplicas({ ...scaling, minReplicas: 2 }, demand(0), 0, {}, 0).replicas).toBe(2);
  });

  it("never flaps: between two scale-downs the delay passes, and replicas stay within bounds", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat({ max: 12 }), fc.nat({ max: 3 * MINUTE })), { maxLength: 60 }),
        (steps) => {
          let memory: ScaleMemory = {};
          let replicas = 0;
          let now = 0;
          let lastChange = -Infinity;
          for (const [queued, gap] of steps) {
            now += gap;
            const decision = desiredReplicas(scaling, demand(queued), replicas, memory, now);
            expect(decision.replicas).toBeGreaterThanOrEqual(scaling.minReplicas);
            expect(decision.replicas).toBeLessThanOrEqual(scaling.maxReplicas);
            // Never below what the demand asks for now; up at once.
            expect(decision.replicas).toBeGreaterThanOrEqual(
              targetReplicas(scaling, demand(queued)),
            );
            if (decision.replicas < replicas) {
              expect(now - lastChange).toBeGreaterThanOrEqual(5 * MINUTE);
            }
            if (decision.replicas !== replicas) lastChange = now;
            replicas = decision.replicas;
            memory = decision.memory;
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("the Autoscaler", () => {
  const pool = examplePool({
    spec: {
      architectures: [
        { name: "amd64", replicas: 2, autoscaling: { maxReplicas: 3, buildsPerReplica: 1 } },
        { name: "arm64", replicas: 1 },
      ],
    },
  });

  it("sizes the autoscaled architectures only, and remembers a pending scale-down", () => {
    let seen: Record<string, Demand> = { amd64: demand(2, 1), arm64: demand(9) };
    const scaler = new Autoscaler({ demand: () => seen });
    const up = scaler.scale(pool, { amd64: 0, arm64: 1 }, new Date(0));
    expect(up).toEqual({ replicas: { amd64: 3 }, demand: { amd64: { queued: 2, running: 1 } } });
    seen = { amd64: demand(0) };
    // The workload as cached may still say 0: the last decision is what runs.
    const hold = scaler.scale(pool, { amd64: 0 }, new Date(1000));
    expect(hold).toMatchObject({ replicas: { amd64: 3 }, requeueAfterMs: 5 * MINUTE });
    const down = scaler.scale(pool, { amd64: 3 }, new Date(1000 + 5 * MINUTE));
    expect(down.replicas).toEqual({ amd64: 0 });
  });

  it("forgets an architecture removed from the pool", () => {
    const scaler = new Autoscaler({ demand: () => ({ amd64: demand(0) }) });
    scaler.scale(pool, { amd64: 3 }, new Date(0)); // a scale-down starts waiting
    const memory = (scaler as unknown as { memory: Map<string, ScaleMemory> }).memory;
    expect(memory.size).toBe(1);
    const without = examplePool({
      spec: { architectures: [{ name: "arm64", replicas: 1 }] },
    });
    scaler.scale(without, { arm64: 1 }, new Date(1));
    expect(memory.size).toBe(0);
  });

  it("counts no demand as none while the builds cannot be read", () => {
    const scaler = new Autoscaler({ demand: () => undefined });
    expect(scaler.scale(pool, {}, new Date(0)).demand).toEqual({
      amd64: { queued: 0, running: 0 },
    });
  });
});

describe("before a scale-down", () => {
  it("sets each builder's pod-deletion-cost to the builds running on it, where it differs", () => {
    expect(
      deletionCosts([
        { name: "idle", running: 0 },
        { name: "busy", running: 2 },
        { name: "was-busy", running: 0, cost: "1" },
        { name: "known", running: 1, cost: "1" },
      ]),
    ).toEqual([
      { name: "busy", cost: "2" },
      { name: "was-busy", cost: "0" },
    ]);
  });
});
