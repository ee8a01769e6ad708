// A bounded history of one resource's watch events, like the API server's watch cache: the
// window a watch or a paginated list can resume from before it gets 410 Gone.
import type { KubeObject, Stored } from "./objects.ts";

export type EventType = "ADDED" | "MODIFIED" | "DELETED";

export interface StoreEvent {
  type: EventType;
  /** The object after the change (for DELETED: its last state, at the deletion's RV). */
  object: Stored<KubeObject>;
  /** The object before the change (MODIFIED and DELETED). */
  previous?: Stored<KubeObject>;
  rv: number;
}

export class EventHistory {
  private readonly capacity: number;
  private readonly ring: (StoreEvent | undefined)[];
  private head = 0;
  private size = 0;
  private evicted = false;
  /** Compacted away (etcd compaction): nothing resumes from before it. */
  private compactedRv = 0;
  /** The resourceVersion at which this resource started being tracked. */
  private readonly startRv: number;

  constructor(capacity: number, startRv: number) {
    this.capacity = Math.max(1, capacity);
    this.ring = new Array(this.capacity);
    this.startRv = startRv;
  }

  push(event: StoreEvent): void {
    const index = (this.head + this.size) % this.capacity;
    if (this.size === this.capacity) {
      this.head = (this.head + 1) % this.capacity;
      this.evicted = true;
    } else this.size++;
    this.ring[index] = event;
  }

  /**
   * The oldest resourceVersion a watch may start from (watch_cache.go: `oldest - 1`): events
   * after it are all still here.
   */
  oldestResumableRv(): number {
    const oldest = this.evicted && this.size > 0 ? this.at(0).rv - 1 : this.startRv;
    return Math.max(oldest, this.compactedRv);
  }

  /**
   * Forgets the events up to `rv`, as etcd's compaction does: a watch or a continue token from
   * before it gets 410 Gone, even on a resource that had no event since.
   */
  compact(rv: number): void {
    while (this.size > 0 && this.at(0).rv <= rv) {
      this.ring[this.head] = undefined;
      this.head = (this.head + 1) % this.capacity;
      this.size--;
    }
    this.compactedRv = Math.max(this.compactedRv, rv);
  }

  private at(offset: number): StoreEvent {
    return this.ring[(this.head + offset) % this.capacity]!;
  }

  /** Events with rv > `rv`, oldest first; undefined when some of them were evicted. */
  since(rv: number): StoreEvent[] | undefined {
    if (rv < this.oldestResumableRv()) return undefined;
    let low = 0;
    let high = this.size;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (this.at(mid).rv <= rv) low = mid + 1;
      else high = mid;
    }
    const out: StoreEvent[] = [];
    for (let i = low; i < this.size; i++) out.push(this.at(i));
    return out;
  }
}
