// Objects this process created that its caches do not show yet (client-go's "expectations"):
// a reconcile that runs before the watch delivers its own create must neither create the
// object again (409 AlreadyExists) nor give away the slot of a Job it already started. Kept by
// owner, so a build finds its own in O(its objects), and in creation order, so the ones that
// never showed up (EXPECTATION_MS) are dropped from the front.

/** How long a created object is expected before the cache shows it; past that it is read again. */
export const EXPECTATION_MS = 30_000;

interface Expectation {
  kind: string;
  name: string;
  /** The owner's uid and `<namespace>/<name>`. */
  ownerUid: string;
  ownerKey: string;
  at: number;
}

export class Expectations {
  /** By `<Kind>/<namespace>/<name>`, oldest first. */
  private readonly byObject = new Map<string, Expectation>();
  private readonly byOwner = new Map<string, Set<string>>();
  private readonly now: () => number;
  /** Called with the owner's key whenever its set of expected objects changes. */
  onChange: ((ownerKey: string) => void) | undefined;

  constructor(now: () => number = Date.now) {
    this.now = now;
  }

  /** Expects `<kind>/<namespace>/<name>`, created for the owner just now. */
  expect(kind: string, namespace: string, name: string, owner: { uid: string; key: string }): void {
    const key = `${kind}/${namespace}/${name}`;
    this.drop(key);
    this.byObject.set(key, {
      kind,
      name,
      ownerUid: owner.uid,
      ownerKey: owner.key,
      at: this.now(),
    });
    let keys = this.byOwner.get(owner.uid);
    if (!keys) {
      keys = new Set();
      this.byOwner.set(owner.uid, keys);
    }
    keys.add(key);
    this.onChange?.(owner.key);
  }

  /** Whether the object is expected (created here, not yet seen, not expired). */
  has(kind: string, namespace: string, name: string): boolean {
    this.expire();
    return this.byObject.has(`${kind}/${namespace}/${name}`);
  }

  /** Names of the owner's expected objects of a kind. */
  namesOf(kind: string, ownerUid: string): string[] {
    this.expire();
    const out: string[] = [];
    for (const key of this.byOwner.get(ownerUid) ?? []) {
      const expectation = this.byObject.get(key);
      if (expectation?.kind === kind) out.push(expectation.name);
    }
    return out;
  }

  /** The cache shows the object (or its deletion): no longer expected. */
  observed(
    kind: string | undefined,
    namespace: string | undefined,
    name: string | undefined,
  ): void {
    this.drop(`${kind}/${namespace}/${name}`);
  }

  get size(): number {
    return this.byObject.size;
  }

  /** Drops expectations older than EXPECTATION_MS (they are the oldest, at the front). */
  expire(): void {
    const cutoff = this.now() - EXPECTATION_MS;
    for (const [key, expectation] of this.byObject) {
      if (expectation.at >= cutoff) break;
      this.drop(key);
    }
  }

  private drop(key: string): void {
    const expectation = this.byObject.get(key);
    if (!expectation) return;
    this.byObject.delete(key);
    const keys = this.byOwner.get(expectation.ownerUid);
    keys?.delete(key);
    if (keys?.size === 0) this.byOwner.delete(expectation.ownerUid);
    this.onChange?.(expectation.ownerKey);
  }
}
