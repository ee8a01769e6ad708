// The pools' queues, kept between reconciles. poolQueue (queue.ts) derives a pool's queue from
// every build of the pool, O(builds) per call: 21 ms at 2,000 builds, on each of the ~10
// reconciles a build costs. Here each build's slot requests are stored once and replaced when
// that build, its Jobs or its expectations change; per architecture the running Jobs are
// counted and the waiting platforms kept sorted in queue order, so a reconcile reads its
// verdicts in O(log n) and the head of a queue in O(depth). The answers are poolQueue's: the
// same requests (slotRequestsOf), the same order (compareBuilds, then slug), the same verdicts;
// a property test replays random changes against poolQueue.
import { type BuilderPoolSpec, capacityOf } from "../api/builderpool.ts";
import {
  type ArchitectureQueue,
  architectureQueue,
  compareBuilds,
  type QueueState,
  type SlotRequest,
  type SlotVerdict,
  slotKey,
  slotVerdict,
} from "./queue.ts";

interface Entry {
  /** The build's `<namespace>/<name>`. */
  key: string;
  request: SlotRequest;
}

const order = (a: SlotRequest, b: SlotRequest) =>
  compareBuilds(a.build, b.build) || a.slug.localeCompare(b.slug);

/** How many entries of a sorted list come before `request` in queue order. */
function lowerBound(entries: readonly Entry[], request: SlotRequest): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (order((entries[mid] as Entry).request, request) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

class Line {
  readonly running = new Map<string, number>();
  readonly waiting = new Map<string, Entry[]>();

  add(entry: Entry): void {
    const { architecture, state } = entry.request;
    if (state === "running") {
      this.running.set(architecture, (this.running.get(architecture) ?? 0) + 1);
      return;
    }
    let entries = this.waiting.get(architecture);
    if (!entries) {
      entries = [];
      this.waiting.set(architecture, entries);
    }
    entries.splice(lowerBound(entries, entry.request), 0, entry);
  }

  remove(entry: Entry): void {
    const { architecture, state } = entry.request;
    if (state === "running") {
      const count = (this.running.get(architecture) ?? 0) - 1;
      if (count > 0) this.running.set(architecture, count);
      else this.running.delete(architecture);
      return;
    }
    const entries = this.waiting.get(architecture);
    if (!entries) return;
    let at = lowerBound(entries, entry.request);
    while (at < entries.length && entries[at] !== entry) at++;
    if (at === entries.length) at = entries.indexOf(entry);
    if (at >= 0) entries.splice(at, 1);
    if (entries.length === 0) this.waiting.delete(architecture);
  }

  /** Architectures of the pool and of every request, sorted (as assignSlots reports them). */
  architectures(spec: BuilderPoolSpec, more: readonly SlotRequest[] = []): string[] {
    return [
      ...new Set([
        ...spec.architectures.map((arch) => arch.name),
        ...this.running.keys(),
        ...this.waiting.keys(),
        ...more.map((request) => request.architecture),
      ]),
    ].sort();
  }
}

export class QueueIndex {
  private readonly lines = new Map<string, Line>();
  private readonly members = new Map<string, { pool: string; entries: Entry[] }>();

  /** Sets a build's slot requests in a pool's queue, replacing what it had (in any pool). */
  set(buildKey: string, poolKey: string, requests: readonly SlotRequest[]): void {
    this.delete(buildKey);
    if (requests.length === 0) return;
    let line = this.lines.get(poolKey);
    if (!line) {
      line = new Line();
      this.lines.set(poolKey, line);
    }
    const entries = requests.map((request) => ({ key: buildKey, request }));
    for (const entry of entries) line.add(entry);
    this.members.set(buildKey, { pool: poolKey, entries });
  }

  delete(buildKey: string): void {
    const member = this.members.get(buildKey);
    if (!member) return;
    this.members.delete(buildKey);
    const line = this.lines.get(member.pool);
    if (!line) return;
    for (const entry of member.entries) line.remove(entry);
    if (line.running.size === 0 && line.waiting.size === 0) this.lines.delete(member.pool);
  }

  /**
   * The pool's queue as poolQueue computes it, with `current`'s requests standing in for what
   * is stored for that build. Verdicts are given for `current`'s waiting platforms only.
   */
  state(
    poolKey: string,
    spec: BuilderPoolSpec,
    current?: { key: string; requests: readonly SlotRequest[] },
  ): QueueState {
    const line = this.lines.get(poolKey) ?? new Line();
    const stored = current ? (this.members.get(current.key)?.entries ?? []) : [];
    const mine = current?.requests ?? [];
    const verdicts = new Map<string, SlotVerdict>();
    const architectures: ArchitectureQueue[] = [];
    for (const architecture of line.architectures(spec, mine)) {
      const onArch = (request: SlotRequest) => request.architecture === architecture;
      const count = (requests: readonly SlotRequest[], state: SlotRequest["state"]) =>
        requests.filter((request) => onArch(request) && request.state === state).length;
      const storedRequests = stored.map((entry) => entry.request);
      const running =
        (line.running.get(architecture) ?? 0) -
        count(storedRequests, "running") +
        count(mine, "running");
      const entries = line.waiting.get(architecture) ?? [];
      const waiting = entries.length - count(storedRequests, "waiting") + count(mine, "waiting");
      // An architecture only the stood-in requests used is gone, as from assignSlots.
      const served = spec.architectures.some((arch) => arch.name === architecture);
      if (!served && running === 0 && waiting === 0) continue;
      const capacity = capacityOf(spec, architecture);
      const free = Math.max(0, capacity - running);
      for (const request of mine) {
        if (!onArch(request) || request.state !== "waiting") continue;
        const before = (requests: readonly SlotRequest[]) =>
          requests
            .filter((other) => onArch(other) && other.state === "waiting")
            .filter((other) => order(other, request) < 0).length;
        const index = lowerBound(entries, request) - before(storedRequests) + before(mine);
        verdicts.set(
          slotKey(request.build, request.slug),
          slotVerdict(index, free, running, capacity),
        );
      }
      architectures.push(architectureQueue(architecture, capacity, running, waiting));
    }
    return { verdicts, architectures };
  }

  /**
   * Builds with a platform that may start now or waits at most `depth` places back on its
   * architecture: the ones worth waking when the queue moves.
   */
  head(poolKey: string, spec: BuilderPoolSpec, depth: number): string[] {
    const line = this.lines.get(poolKey);
    if (!line) return [];
    const keys = new Set<string>();
    for (const [architecture, entries] of line.waiting) {
      const free = Math.max(
        0,
        capacityOf(spec, architecture) - (line.running.get(architecture) ?? 0),
      );
      for (const entry of entries.slice(0, free + depth)) keys.add(entry.key);
    }
    return [...keys];
  }

  /** Builds stored, for tests and metrics. */
  get size(): number {
    return this.members.size;
  }
}
