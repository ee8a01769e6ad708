// The cache-locality routing model (bench/routing.ts) over several scenarios: Zipf exponents
// 0.8, 1.0 and 1.2 (how concentrated builds are on popular repositories) times the number of
// repositories one builder's cache holds. Issue 9's target: rendezvous routing's cache hit
// rate at least twice random routing's.
import { simulateRouting } from "./routing.ts";

const REPOSITORIES = 1000;
const REPLICAS = 4;
const BUILDS = 20_000;
const EXPONENTS = [0.8, 1.0, 1.2];
const CACHE_ENTRIES = [10, 25, 50, 100, 200];

export function routingTable(): { description: string; table: string } {
  const rows: string[] = [];
  for (const zipfExponent of EXPONENTS) {
    for (const cacheEntries of CACHE_ENTRIES) {
      const result = simulateRouting({
        repositories: REPOSITORIES,
        replicas: REPLICAS,
        cacheEntries,
        builds: BUILDS,
        zipfExponent,
        seed: 1,
      });
      const ratio = result.rendezvous / result.random;
      rows.push(
        `| ${zipfExponent.toFixed(1)} | ${cacheEntries} | ${(result.rendezvous * 100).toFixed(1)}% | ${(result.random * 100).toFixed(1)}% | ${ratio.toFixed(2)}× | ${ratio >= 2 ? "met" : "missed"} | ${(((result.rendezvous - result.random) / (1 - result.random)) * 100).toFixed(0)}% |`,
      );
    }
  }
  return {
    description: `${BUILDS.toLocaleString("en")} builds of ${REPOSITORIES} Zipf-distributed repositories over ${REPLICAS} builders, each keeping an LRU of the repositories it has cached; hit rate of rendezvous hashing on the repository vs a random builder (seed 1; target ≥ 2×).`,
    table: [
      "| Zipf exponent | repositories per builder cache | rendezvous hits | random hits | ratio | ≥ 2× | random's misses that rendezvous hits |",
      "| --- | --- | --- | --- | --- | --- | --- |",
      ...rows,
    ].join("\n"),
  };
}
