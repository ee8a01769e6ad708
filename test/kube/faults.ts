// Fault injection: failed requests (next N, or a seeded fraction), latency, paused serving and
// dropped watches, each optionally limited to requests matching a verb/resource filter.
import { matchesRecord, type RecordFilter, type RequestRecord } from "./request-log.ts";

export interface FaultSpec {
  /** HTTP status to answer with: 500, 503, 504, 429 (with Retry-After), 409, 410... */
  code: number;
  retryAfterSeconds?: number;
  message?: string;
}

export interface FailOptions extends Partial<FaultSpec> {
  match?: RecordFilter;
}

export interface RateOptions extends FailOptions {
  /** Seed of the deterministic random sequence (default 1). */
  seed?: number;
}

interface Rule {
  id: number;
  remaining: number;
  fraction: number;
  random?: () => number;
  fault: FaultSpec;
  match: RecordFilter;
}

interface LatencyRule {
  id: number;
  min: number;
  max: number;
  match: RecordFilter;
  random: () => number;
}

export interface WatchDropper {
  /** Ends open watch streams: `close` finishes them cleanly, `reset` destroys the sockets. */
  drop(mode: "close" | "reset", match?: RecordFilter): number;
}

/** mulberry32: a small seeded PRNG, so a faulty run can be replayed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type RequestDescription = Pick<
  RequestRecord,
  "verb" | "apiGroup" | "resource" | "subresource" | "namespace" | "name"
>;

export class Faults {
  private rules: Rule[] = [];
  private latencies: LatencyRule[] = [];
  private nextId = 1;
  private paused: Promise<void> | undefined;
  private resume: (() => void) | undefined;
  private timers = new Set<NodeJS.Timeout>();
  private dropper: WatchDropper | undefined;
  private expiries: { id: number; remaining: number; match: RecordFilter }[] = [];

  /** @internal the server wires its watches in. */
  attach(dropper: WatchDropper): void {
    this.dropper = dropper;
  }

  /** The next `count` matching requests fail. Returns a function that cancels the rule. */
  failNext(count: number, options: FailOptions = {}): () => void {
    return this.addRule(count, 1, options);
  }

  /** A seeded fraction of matching requests fail until cancelled. */
  failRate(fraction: number, options: RateOptions = {}): () => void {
    return this.addRule(
      Number.POSITIVE_INFINITY,
      fraction,
      options,
      seededRandom(options.seed ?? 1),
    );
  }

  /** Adds `ms` (or a seeded random delay in [min, max]) before matching requests are served. */
  latency(ms: number | [number, number], options: { match?: RecordFilter; seed?: number } = {}) {
    const [min, max] = typeof ms === "number" ? [ms, ms] : ms;
    const rule: LatencyRule = {
      id: this.nextId++,
      min,
      max,
      match: options.match ?? {},
      random: seededRandom(options.seed ?? 1),
    };
    this.latencies.push(rule);
    return () => {
      this.latencies = this.latencies.filter((r) => r.id !== rule.id);
    };
  }

  /** Holds every request until `unpause()` (watches already open keep streaming). */
  pause(): void {
    if (this.paused) return;
    this.paused = new Promise((resolve) => {
      this.resume = resolve;
    });
  }

  unpause(): void {
    const resume = this.resume;
    this.paused = undefined;
    this.resume = undefined;
    resume?.();
  }

  /** Ends every open watch now; returns how many were dropped. */
  dropWatches(options: { mode?: "close" | "reset"; match?: RecordFilter } = {}): number {
    return this.dropper?.drop(options.mode ?? "close", options.match) ?? 0;
  }

  /**
   * The next `count` matching watches that resume from a resourceVersion are answered the way
   * the API server answers a resourceVersion that left its history: one ERROR event with a 410
   * Expired Status, then the end of the stream.
   */
  expireWatches(count = 1, options: { match?: RecordFilter } = {}): () => void {
    const rule = { id: this.nextId++, remaining: count, match: options.match ?? {} };
    this.expiries.push(rule);
    return () => {
      this.expiries = this.expiries.filter((r) => r.id !== rule.id);
    };
  }

  /** @internal whether this watch is to be answered as expired. */
  takeExpiry(request: RequestDescription): boolean {
    for (const rule of this.expiries) {
      if (rule.remaining <= 0 || !matchesRecord(request as RequestRecord, rule.match)) continue;
      rule.remaining--;
      if (rule.remaining <= 0) this.expiries = this.expiries.filter((r) => r !== rule);
      return true;
    }
    return false;
  }

  /** Drops open watches every `ms` until the returned function is called. */
  dropWatchesEvery(ms: number, options: { mode?: "close" | "reset"; match?: RecordFilter } = {}) {
    const timer = setInterval(() => this.dropWatches(options), ms);
    timer.unref();
    this.timers.add(timer);
    return () => {
      clearInterval(timer);
      this.timers.delete(timer);
    };
  }

  /** Removes every rule, resumes serving, stops periodic drops. */
  clear(): void {
    this.rules = [];
    this.expiries = [];
    this.latencies = [];
    for (const timer of this.timers) clearInterval(timer);
    this.timers.clear();
    this.unpause();
  }

  /** @internal */
  async gate(): Promise<void> {
    while (this.paused) await this.paused;
  }

  /** @internal the delay and the fault (if any) for one request. */
  decide(request: RequestDescription): { delayMs: number; fault?: FaultSpec } {
    const record = request as RequestRecord;
    let delayMs = 0;
    for (const rule of this.latencies) {
      if (matchesRecord(record, rule.match))
        delayMs += rule.min + (rule.max - rule.min) * rule.random();
    }
    for (const rule of this.rules) {
      if (rule.remaining <= 0 || !matchesRecord(record, rule.match)) continue;
      if (rule.random && rule.random() >= rule.fraction) continue;
      rule.remaining--;
      if (rule.remaining <= 0) this.rules = this.rules.filter((r) => r !== rule);
      return { delayMs, fault: rule.fault };
    }
    return { delayMs };
  }

  private addRule(count: number, fraction: number, options: FailOptions, random?: () => number) {
    const rule: Rule = {
      id: this.nextId++,
      remaining: count,
      fraction,
      random,
      fault: {
        code: options.code ?? 500,
        retryAfterSeconds: options.retryAfterSeconds,
        message: options.message,
      },
      match: options.match ?? {},
    };
    this.rules.push(rule);
    return () => {
      this.rules = this.rules.filter((r) => r.id !== rule.id);
    };
  }
}
