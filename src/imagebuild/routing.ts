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

/**
 * The default cache key: what makes two builds likely to share layers. A git source: its URL
 * (without `.git`, lower-cased), the context directory, the Dockerfile path and the target; an
 * inline source: its Dockerfile's text and the target (its builds share no repository, but
 * the same Dockerfile makes the same layers).
 */
export function defaultCacheKey(source: {
  gitUrl?: string;
  subPath?: string;
  dockerfile: string;
  target?: string;
  inlineDockerfile?: string;
}): string {
  if (!source.gitUrl) {
    const text = createHash("sha256")
      .update(source.inlineDockerfile ?? "")
      .digest("hex");
    return ["inline", text, source.target ?? ""].join("\u0000");
  }
  return [
    source.gitUrl.replace(/\.git$/, "").toLowerCase(),
    source.subPath ?? "",
    source.dockerfile,
    source.target ?? "",
  ].join("\u0000");
}

/** One builder pod of an architecture, as routing sees it. */
export interface BuilderPod {
  name: string;
  /** Running, Ready, not being deleted, and addressable. */
  ready: boolean;
  /** What buildctl dials to reach this pod: its IP, or its stable name (see builderPodTarget). */
  host?: string;
  /** The TLS server name when the pod is dialled by its own name; else the Service's. */
  serverName?: string;
  /** Unfinished platform Jobs routed to it. */
  running: number;
}

/** Where a platform Job sends buildctl, chosen once when the Job is created. */
export type Route =
  | { kind: "pod"; pod: string; address: string; serverName: string; preferred: boolean }
  | { kind: "service"; address: string; serverName: string }
  /** No Job now: the architecture scales up (autoscaling), the platform waits Queued. */
  | { kind: "wait"; message: string };

export interface RouteInput {
  /** The build's cache key (spec.cacheKey, else defaultCacheKey). */
  key: string;
  architecture: string;
  /** The architecture's builder pods. */
  pods: readonly BuilderPod[];
  /** The architecture's maxConcurrentBuilds. */
  capacity: number;
  /** The architecture's autoscaling, when it has one. */
  autoscaling?: { maxReplicas: number; buildsPerReplica: number };
  /** The builder Service: the fallback when no builder pod is ready. */
  service: { address: string; serverName: string };
  port: number;
}

/**
 * Builds per builder before routing moves on to the next in the key's order: the
 * architecture's capacity spread over its ready builders (rounded up, so together they hold
 * it), or, with autoscaling, buildsPerReplica, what the autoscaler sized each builder for.
 */
export function perBuilderLimit(
  input: Pick<RouteInput, "capacity" | "autoscaling">,
  ready: number,
) {
  if (input.autoscaling) return input.autoscaling.buildsPerReplica;
  return Math.max(1, Math.ceil(input.capacity / Math.max(1, ready)));
}

/**
 * The builder for one platform of a build: the first ready builder pod in the key's
 * rendezvous order with room (per perBuilderLimit); when every ready one is full, the first
 * ready one anyway (the pool's queue already bounds the builds running) unless an autoscaled
 * architecture can still add builders, in which case the build waits for one. No ready
 * builder pod: an autoscaled architecture waits for the pool to scale up; any other goes
 * through the Service, where buildctl waits (--wait) for a builder to accept it.
 */
export function routePlatform(input: RouteInput): Route {
  const ready = input.pods.filter((pod) => pod.ready && pod.host !== undefined);
  const endpoint = (pod: BuilderPod, preferred: boolean): Route => ({
    kind: "pod",
    pod: pod.name,
    address: `tcp://${pod.host}:${input.port}`,
    // A pod dialled by IP proves itself with a name its certificate carries: the Service's.
    serverName: pod.serverName ?? input.service.serverName,
    preferred,
  });
  if (ready.length === 0) {
    if (input.autoscaling) {
      return {
        kind: "wait",
        message: `no ${input.architecture} builder is ready yet; the pool is scaling up`,
      };
    }
    return { kind: "service", ...input.service };
  }
  const limit = perBuilderLimit(input, ready.length);
  const order = preferenceOrder(
    input.key,
    input.pods.map((pod) => pod.name),
  );
  const byName = new Map(ready.map((pod) => [pod.name, pod]));
  const first = order.find((name) => byName.has(name)) as string;
  const chosen = chooseBuilder(input.key, ready, limit);
  if (chosen) return endpoint(chosen, chosen.name === order[0]);
  if (input.autoscaling && ready.length < input.autoscaling.maxReplicas) {
    return {
      kind: "wait",
      message: `every ready ${input.architecture} builder runs ${limit} builds (buildsPerReplica); the pool is scaling up`,
    };
  }
  return endpoint(byName.get(first) as BuilderPod, first === order[0]);
}

/**
 * How buildctl reaches one builder pod without a name cluster DNS may not serve. A pod with a
 * hostname and subdomain under the headless Service (StatefulSet builders) has a stable name
 * that every cluster DNS serves (`<hostname>.<headless>.<ns>.svc`, also its TLS server name,
 * under the certificate's `*.<headless>.<ns>.svc`). Any other pod is dialled by its IP (an IPv6
 * address in brackets): the `<ip-with-dashes>.<headless>` name is CoreDNS's fallback only, and
 * kube-dns (names by hash) or CoreDNS with `endpoint_pod_names` (names by pod) answer NXDOMAIN
 * for it. Its TLS server name is then the architecture's Service name, which the same
 * certificate carries.
 */
export function builderPodTarget(
  pod: { hostname?: string; subdomain?: string; ip?: string },
  headless: string,
  namespace: string,
): { host: string; serverName?: string } | undefined {
  if (pod.hostname && pod.subdomain === headless) {
    const host = `${pod.hostname}.${headless}.${namespace}.svc`;
    return { host, serverName: host };
  }
  if (!pod.ip) return undefined;
  return { host: pod.ip.includes(":") ? `[${pod.ip}]` : pod.ip };
}
