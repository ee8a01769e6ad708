// A model of cache locality: builds of Zipf-distributed repositories over builder replicas
// that each keep an LRU of the repositories whose layers they hold. Routing by rendezvous hash
// on the repository vs routing at random; the figure is each strategy's cache hit rate.
import { chooseBuilder } from "../src/imagebuild/routing.ts";
import { seededRandom as random } from "../test/kube/faults.ts";

export interface RoutingModel {
  repositories: number;
  replicas: number;
  /** Repositories whose cache one builder keeps (LRU). */
  cacheEntries: number;
  builds: number;
  zipfExponent: number;
  seed: number;
}

class Lru {
  private readonly entries = new Map<string, true>();
  private readonly capacity: number;
  constructor(capacity: number) {
    this.capacity = capacity;
  }
  /** Whether the key was cached; it is cached afterwards. */
  touch(key: string): boolean {
    const hit = this.entries.delete(key);
    this.entries.set(key, true);
    if (this.entries.size > this.capacity)
      this.entries.delete(this.entries.keys().next().value as string);
    return hit;
  }
}

export function simulateRouting(model: RoutingModel): { rendezvous: number; random: number } {
  const weights = Array.from(
    { length: model.repositories },
    (_, i) => 1 / (i + 1) ** model.zipfExponent,
  );
  const total = weights.reduce((a, b) => a + b, 0);
  const cumulative: number[] = [];
  weights.reduce((sum, weight, i) => (cumulative[i] = sum + weight / total), 0);
  const next = random(model.seed);
  const pick = () => {
    const r = next();
    let lo = 0;
    let hi = cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((cumulative[mid] as number) < r) lo = mid + 1;
      else hi = mid;
    }
    return `repo-${lo}`;
  };
  const names = Array.from({ length: model.replicas }, (_, i) => `pool-amd64-${i}`);
  const candidates = names.map((name) => ({ name, ready: true, running: 0 }));
  const sticky = new Map(names.map((name) => [name, new Lru(model.cacheEntries)]));
  const scattered = new Map(names.map((name) => [name, new Lru(model.cacheEntries)]));
  const choose = random(model.seed + 1);
  let stickyHits = 0;
  let randomHits = 0;
  for (let i = 0; i < model.builds; i++) {
    const repository = pick();
    const chosen = chooseBuilder(repository, candidates, 1)?.name as string;
    if ((sticky.get(chosen) as Lru).touch(repository)) stickyHits++;
    const any = names[Math.floor(choose() * names.length)] as string;
    if ((scattered.get(any) as Lru).touch(repository)) randomHits++;
  }
  return { rendezvous: stickyHits / model.builds, random: randomHits / model.builds };
}
