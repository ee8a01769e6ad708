// The pool's queue. Each pool architecture runs at most its maxConcurrentBuilds platform Jobs
// at once (the architecture's own value, else the pool's); platforms past that wait, first
// come first served by the build's creationTimestamp, then namespace/name, then uid.
//
// Policy: slots are per platform Job, and each architecture admits on its own. A platform
// holds a slot only while its Job runs, so a two-platform build whose arm64 half waits for a
// slot holds nothing on amd64 once its amd64 Job has finished. No build ever waits while
// holding a slot, so there is no cycle to deadlock on, and no capacity sits idle behind a
// build that cannot start everywhere at once (which all-or-nothing admission would cause).
// Within an architecture the queue is strict FIFO: nothing overtakes the head, so every
// platform starts after at most the builds ahead of it have run.
//
// The state is derived from Jobs and build status alone, never stored: a restarted operator
// computes the same queue, and two reconciles that read the same cache agree on who is next.
import { type BuilderPoolSpec, capacityOf } from "../api/builderpool.ts";
import type { BuilderPool, ImageBuild } from "../api/resources.ts";
import type { Demand } from "../builderpool/autoscale.ts";
import { type PlatformTarget, targetsOf } from "./admission.ts";
import { isFinished, type ObservedJob } from "./observe.ts";

export interface QueuedBuild {
  namespace: string;
  name: string;
  uid: string;
  creationTimestamp: string;
}

export interface SlotRequest {
  build: QueuedBuild;
  slug: string;
  architecture: string;
  /** running: its Job exists and has not finished. waiting: admitted, no Job yet. */
  state: "running" | "waiting";
}

export type SlotVerdict =
  | { start: true }
  | { start: false; position: number; running: number; capacity: number };

export interface ArchitectureQueue {
  architecture: string;
  capacity: number;
  /** Platform Jobs that hold a slot (not finished). */
  running: number;
  /** Platforms that stand in line past the free slots (buildfarm_queue_depth). */
  waiting: number;
  /** Every platform that stands in line without a Job, those about to start included. */
  queued: number;
}

/** Demand per architecture of the pool, from its queue: what autoscaling sizes builders from. */
export function demandOf(queue: QueueState): Record<string, Demand> {
  return Object.fromEntries(
    queue.architectures.map((arch) => [
      arch.architecture,
      { queued: arch.queued, running: arch.running },
    ]),
  );
}

export interface QueueState {
  /** Verdicts for waiting platforms, by slotKey. */
  verdicts: ReadonlyMap<string, SlotVerdict>;
  /** Per architecture of the pool (idle ones included): for buildfarm_queue_depth. */
  architectures: ArchitectureQueue[];
}

export function slotKey(build: { namespace: string; name: string }, slug: string): string {
  return `${build.namespace}/${build.name}/${slug}`;
}

/** The verdict for the waiting platform at `index` (0: first) of an architecture's line. */
export function slotVerdict(
  index: number,
  free: number,
  running: number,
  capacity: number,
): SlotVerdict {
  return index < free
    ? { start: true }
    : { start: false, position: index - free + 1, running, capacity };
}

/** An architecture's line as reported: `waiting` counts only those past the free slots. */
export function architectureQueue(
  architecture: string,
  capacity: number,
  running: number,
  waiting: number,
): ArchitectureQueue {
  const free = Math.max(0, capacity - running);
  return {
    architecture,
    capacity,
    running,
    waiting: waiting - Math.min(free, waiting),
    queued: waiting,
  };
}

/** First come first served: creationTimestamp, then namespace/name, then uid. */
export function compareBuilds(a: QueuedBuild, b: QueuedBuild): number {
  const time = Date.parse(a.creationTimestamp) - Date.parse(b.creationTimestamp);
  if (time !== 0 && !Number.isNaN(time)) return time;
  const name = `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`);
  if (name !== 0) return name;
  return a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : 0;
}

/**
 * Assigns free slots to waiting platforms. Running Jobs keep their slots even when the
 * capacity shrank or an older build appeared; the rest is handed out in queue order.
 */
export function assignSlots(pool: BuilderPoolSpec, requests: readonly SlotRequest[]): QueueState {
  const verdicts = new Map<string, SlotVerdict>();
  const architectures: ArchitectureQueue[] = [];
  // Every architecture of the pool is reported, idle ones too, so a drained queue reads 0.
  const names = [
    ...new Set([
      ...pool.architectures.map((arch) => arch.name),
      ...requests.map((request) => request.architecture),
    ]),
  ].sort();
  for (const architecture of names) {
    const mine = requests.filter((request) => request.architecture === architecture);
    const running = mine.filter((request) => request.state === "running").length;
    const waiting = mine
      .filter((request) => request.state === "waiting")
      .sort((a, b) => compareBuilds(a.build, b.build) || a.slug.localeCompare(b.slug));
    const capacity = capacityOf(pool, architecture);
    const free = Math.max(0, capacity - running);
    waiting.forEach((request, index) => {
      verdicts.set(
        slotKey(request.build, request.slug),
        slotVerdict(index, free, running, capacity),
      );
    });
    architectures.push(architectureQueue(architecture, capacity, running, waiting.length));
  }
  return { verdicts, architectures };
}

/** The phases in which a build's unstarted platforms stand in the queue. */
const QUEUEING_PHASES = new Set(["Queued", "Building"]);

/**
 * Whether another build's unstarted platforms stand in line, by its status: Queued or
 * Building, or no status yet. A build the operator has not looked at yet may well be admitted
 * and older than the one being reconciled; counting it keeps first come first served when
 * many builds arrive at once. If it turns out Pending, the builds behind it are woken.
 */
export function standsInLine(build: {
  metadata?: { deletionTimestamp?: unknown };
  status?: { phase?: string } | undefined;
}): boolean {
  if (build.metadata?.deletionTimestamp) return false;
  const phase = build.status?.phase;
  return phase === undefined || QUEUEING_PHASES.has(phase);
}

/**
 * One build's slot requests. Every unfinished Job the build controls holds a slot, whatever
 * the build's phase (a failed build's siblings run until they are gone). Platforms without a
 * Job or a digest wait while the build is admitted: `admitted` for the build being reconciled,
 * otherwise its status says so (standsInLine).
 */
export function slotRequestsOf(
  build: ImageBuild,
  targets: readonly PlatformTarget[],
  jobs: Readonly<Record<string, ObservedJob | undefined>>,
  admitted?: boolean,
): SlotRequest[] {
  const queued: QueuedBuild = {
    namespace: build.metadata.namespace,
    name: build.metadata.name,
    uid: build.metadata.uid ?? "",
    creationTimestamp: String(build.metadata.creationTimestamp ?? ""),
  };
  const waits = admitted ?? standsInLine(build);
  const done = new Set(
    (build.status?.platforms ?? [])
      .filter((platform) => platform.digest !== undefined || platform.phase === "Failed")
      .map((platform) => platform.platform),
  );
  const requests: SlotRequest[] = [];
  for (const target of targets) {
    const job = jobs[target.slug];
    const controlled = job && (!build.metadata.uid || job.controllerUid === build.metadata.uid);
    if (job && controlled) {
      if (!isFinished(job)) {
        requests.push({
          build: queued,
          slug: target.slug,
          architecture: target.architecture,
          state: "running",
        });
      }
    } else if (!job && waits && !done.has(target.platform)) {
      requests.push({
        build: queued,
        slug: target.slug,
        architecture: target.architecture,
        state: "waiting",
      });
    }
  }
  return requests;
}

export interface PoolMember {
  build: ImageBuild;
  /** Its platform Jobs by slug (see jobsOf). */
  jobs: Readonly<Record<string, ObservedJob | undefined>>;
}

/**
 * The whole pool's queue, from every ImageBuild that references the pool and its Jobs. The
 * build being reconciled passes `admitted`, since its status may not say so yet; the others
 * stand in line when their status phase is Queued or Building. Builds whose platforms the
 * pool does not serve hold nothing.
 */
export function poolQueue(
  pool: BuilderPool,
  members: readonly PoolMember[],
  current?: { namespace: string; name: string; admitted: boolean },
): QueueState {
  const requests = members.flatMap(({ build, jobs }) => {
    const mapped = targetsOf(build, pool);
    if ("verdict" in mapped) return [];
    const isCurrent =
      current !== undefined &&
      current.namespace === build.metadata.namespace &&
      current.name === build.metadata.name;
    return slotRequestsOf(build, mapped.targets, jobs, isCurrent ? current.admitted : undefined);
  });
  return assignSlots(pool.spec, requests);
}
