import { describe, expect, it } from "vitest";
import {
  BucketRateLimiter,
  ExponentialFailureRateLimiter,
  MaxOfRateLimiter,
  WorkQueue,
} from "../../src/runtime/workqueue.ts";

const noLimit = { when: () => 0, forget: () => {}, retries: () => 0 };

describe("work queue", () => {
  it("deduplicates a key that is added while it waits", async () => {
    const queue = new WorkQueue({ rateLimiter: noLimit });
    queue.add("a");
    queue.add("b");
    queue.add("a");
    expect(queue.length).toBe(2);
    expect(await queue.get()).toBe("a");
    expect(await queue.get()).toBe("b");
    expect(queue.length).toBe(0);
  });

  it("never hands a key to a second worker while the first processes it", async () => {
    const queue = new WorkQueue({ rateLimiter: noLimit });
    queue.add("a");
    const first = await queue.get();
    queue.add("a"); // an event arrives mid-reconcile
    expect(queue.length).toBe(0);
    let second: string | undefined;
    void queue.get().then((key) => {
      second = key;
    });
    await new Promise((resolve) => setImmediate(resolve));
    expect(second).toBeUndefined();
    queue.done(first as string); // now it is queued again, once
    await new Promise((resolve) => setImmediate(resolve));
    expect(second).toBe("a");
  });

  it("processes a key once after several adds during processing", async () => {
    const queue = new WorkQueue({ rateLimiter: noLimit });
    queue.add("a");
    await queue.get();
    queue.add("a");
    queue.add("a");
    queue.done("a");
    expect(queue.length).toBe(1);
  });

  it("keeps the earliest of two delayed adds for one key", async () => {
    const queue = new WorkQueue({ rateLimiter: noLimit });
    queue.addAfter("a", 10_000);
    queue.addAfter("a", 5);
    const started = performance.now();
    expect(await queue.get()).toBe("a");
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it("wakes waiting workers with undefined on shutdown and refuses new work", async () => {
    const queue = new WorkQueue({ rateLimiter: noLimit });
    const waiting = queue.get();
    queue.shutDown();
    expect(await waiting).toBeUndefined();
    queue.add("a");
    expect(await queue.get()).toBeUndefined();
  });
});

describe("rate limiters", () => {
  it("backs off per key from 5 ms doubling to the cap, and forgets on success", () => {
    const limiter = new ExponentialFailureRateLimiter(5, 1000);
    expect([1, 2, 3, 4, 5, 6, 7, 8, 9].map(() => limiter.when("a"))).toEqual([
      5, 10, 20, 40, 80, 160, 320, 640, 1000,
    ]);
    expect(limiter.when("b")).toBe(5);
    expect(limiter.retries("a")).toBe(9);
    limiter.forget("a");
    expect(limiter.when("a")).toBe(5);
  });

  it("lets a burst through the token bucket, then spaces requests at the rate", () => {
    let now = 0;
    const bucket = new BucketRateLimiter(10, 3, () => now);
    expect([bucket.when(), bucket.when(), bucket.when()]).toEqual([0, 0, 0]);
    expect(bucket.when()).toBeCloseTo(100);
    expect(bucket.when()).toBeCloseTo(200);
    now = 1000; // 10 tokens refilled, capped at the burst
    expect(bucket.when()).toBe(0);
  });

  it("waits for the slower of per-key backoff and the overall bucket", () => {
    const limiter = new MaxOfRateLimiter(
      new ExponentialFailureRateLimiter(5, 1000),
      new BucketRateLimiter(1, 1, () => 0),
    );
    expect(limiter.when("a")).toBe(5);
    expect(limiter.when("b")).toBeCloseTo(1000);
  });
});
