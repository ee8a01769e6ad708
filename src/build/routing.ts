// Cache-locality routing: builds that share a cache key go to the same builder replica, chosen
// by rendezvous (highest-random-weight) hashing over the architecture's ready builders. Adding
// or removing a builder moves only the keys that builder wins or held (about 1/n of them), and
// every operator replica computes the same choice without shared state.
import { createHash } from "node:crypto";

export interface Candidate {
  /** A stable identity of the builder: its pod name. */
  name: string;
  ready: boolean;
  /** Builds running on it now. */
  running: number;
}

/** The 64-bit score of a key on a builder. */
export function rendezvousScore(key: string, builder: string): bigint {
  return createHash("sha256")
    .update(key)
    .update("\u0000")
    .update(builder)
    .digest()
    .readBigUInt64BE(0);
}

/** Builders in preference order for the key: highest score first (ties by name). */
export function preferenceOrder(key: string, builders: readonly string[]): string[] {
  return builders
    .map((name) => ({ name, score: rendezvousScore(key, name) }))
    .sort((a, b) =>
      a.score === b.score ? a.name.localeCompare(b.name) : a.score > b.score ? -1 : 1,
    )
    .map((entry) => entry.name);
}

/**
 * The builder for a key: the first in preference order that is ready and has room
 * (`running < perBuilderLimit`); undefined when none does.
 */
export function chooseBuilder(
  key: string,
  candidates: readonly Candidate[],
  perBuilderLimit: number,
): Candidate | undefined {
  const byName = new Map(candidates.map((candidate) => [candidate.name, candidate]));
  for (const name of preferenceOrder(key, [...byName.keys()])) {
    const candidate = byName.get(name) as Candidate;
    if (candidate.ready && candidate.running < perBuilderLimit) return candidate;
  }
  return undefined;
}

/** The default cache key: what makes two builds likely to share layers. */
export function defaultCacheKey(
  source: { gitUrl?: string; dockerfile: string; target?: string; inline?: boolean },
  buildName: string,
): string {
  if (!source.gitUrl) return `inline:${buildName}`;
  return [
    source.gitUrl.replace(/\.git$/, "").toLowerCase(),
    source.dockerfile,
    source.target ?? "",
  ].join("\u0000");
}
