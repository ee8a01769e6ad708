// Per builder, how much cache it holds: buildfarm_builder_cache_bytes{pool,architecture,pod,
// kind="used|reclaimable"}, what `buildctl du` reports, asked by the operator itself over the
// builders' mTLS gRPC API (diskusage.ts) with a client certificate it issues in memory from
// the pool's CA. Why this shape, and not a sidecar or a Job: docs/architecture.md ("Cache
// usage per builder"). In short: the operator already holds every pool's CA key (it issues the
// builds' certificates), so this needs no new RBAC, no new pod, no Secret and no exec; the
// pool's NetworkPolicy admits the operator's pods on the builders' port.
//
// A small controller keyed by pool: each reconcile asks every Ready builder of the pool once,
// one after another, and asks to be requeued after the interval. A pool reconciled again
// sooner (its spec changed) waits out the rest of the interval: at most one DiskUsage per
// builder per interval, whatever happens. It runs on the leader only, like the controllers.
import type { KubernetesObject, V1Pod, V1Secret } from "@kubernetes/client-node";
import { Gauge, type Registry } from "prom-client";
import { errorMessage } from "../errors.ts";
import { BUILDKIT_PORT, builderServiceHost, COMPONENTS, caSecretName, LABELS } from "../naming.ts";
import { type IssuedCertificate, issueClientCertificate } from "../pki/certificates.ts";
import { readCaSecret } from "../pki/secrets.ts";
import type { ReconcileContext, ReconcileRequest } from "../runtime/controller.ts";
import type { Informer } from "../runtime/informer.ts";
import type { Manager } from "../runtime/manager.ts";
import { type BuilderTarget, type CacheUsage, diskUsage } from "./diskusage.ts";

/** The default time between two DiskUsage calls to one builder. */
export const CACHE_USAGE_INTERVAL_MS = 60_000;
/** How long one builder may take to answer. */
const CALL_TIMEOUT_MS = 10_000;
/** The operator's certificates live this long; a new one is issued at half of it. */
const CERT_LIFETIME_MS = 24 * 3600_000;

export interface CacheUsageOptions {
  /** Time between two DiskUsage calls to one builder. */
  intervalMs: number;
  /**
   * Where a connection to a builder pod's IP and port goes; identity in a cluster. Tests that
   * run the operator outside a pod network give it theirs.
   */
  resolve?: (ip: string, port: number) => Promise<{ host: string; port: number }>;
  /** The call itself (tests replace it to count calls). */
  ask?: (target: BuilderTarget, timeoutMs: number) => Promise<CacheUsage>;
  now?: () => Date;
}

export interface CacheUsageCaches {
  pools: Informer<KubernetesObject>;
  secrets: Informer<V1Secret>;
  pods: Informer<V1Pod>;
}

export class BuilderCacheMetrics {
  readonly bytes: Gauge<"pool" | "architecture" | "pod" | "kind">;
  constructor(registry: Registry) {
    this.bytes = new Gauge({
      name: "buildfarm_builder_cache_bytes",
      help: "Bytes of BuildKit cache per builder pod (buildctl du): kind=used is every record, kind=reclaimable those no build uses",
      labelNames: ["pool", "architecture", "pod", "kind"],
      registers: [registry],
    });
  }
}

const isReady = (pod: V1Pod) =>
  !pod.metadata?.deletionTimestamp &&
  pod.status?.phase === "Running" &&
  (pod.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");

export class CacheUsageCollector {
  private readonly caches: CacheUsageCaches;
  private readonly options: CacheUsageOptions;
  readonly metrics: BuilderCacheMetrics;
  /** When each pool was last asked, by `<namespace>/<name>`. */
  private readonly asked = new Map<string, number>();
  private readonly certificates = new Map<string, { ca: string; issued: IssuedCertificate }>();

  constructor(caches: CacheUsageCaches, registry: Registry, options: CacheUsageOptions) {
    this.caches = caches;
    this.options = options;
    this.metrics = new BuilderCacheMetrics(registry);
  }

  private now(): number {
    return (this.options.now?.() ?? new Date()).getTime();
  }

  /** The operator's client certificate for a pool: issued once per CA, renewed at half life. */
  private async certificate(pool: string, caSecret: V1Secret): Promise<IssuedCertificate> {
    const ca = readCaSecret(caSecret.data);
    const known = this.certificates.get(pool);
    const now = this.now();
    if (
      known &&
      known.ca === ca.certPem &&
      known.issued.notAfter.getTime() - now > CERT_LIFETIME_MS / 2
    )
      return known.issued;
    const issued = await issueClientCertificate(ca, {
      commonName: "buildfarm-operator",
      now: new Date(now),
      validForMs: CERT_LIFETIME_MS,
    });
    this.certificates.set(pool, { ca: ca.certPem, issued });
    return issued;
  }

  readonly reconcile = async (
    { namespace, name }: ReconcileRequest,
    { log }: ReconcileContext,
  ): Promise<{ requeueAfter?: number } | undefined> => {
    const key = `${namespace}/${name}`;
    const pool = this.caches.pools.get(namespace, name);
    const builders = this.caches.pods
      .list(namespace)
      .filter(
        (pod) =>
          pod.metadata?.labels?.[LABELS.component] === COMPONENTS.builder &&
          pod.metadata.labels[LABELS.pool] === name,
      );
    const ready = builders.filter(isReady);
    // Series of builders that are gone (or the pool) go with them.
    const keep = new Set(pool ? ready.map((pod) => pod.metadata?.name ?? "") : []);
    for (const { labels } of (await this.metrics.bytes.get()).values)
      if (labels.pool === key && !keep.has(String(labels.pod)))
        this.metrics.bytes.remove(
          labels as Record<"pool" | "architecture" | "pod" | "kind", string>,
        );
    if (!pool) {
      this.asked.delete(key);
      this.certificates.delete(key);
      return undefined;
    }
    const interval = this.options.intervalMs;
    const since = this.now() - (this.asked.get(key) ?? Number.NEGATIVE_INFINITY);
    if (since < interval) return { requeueAfter: interval - since };
    this.asked.set(key, this.now());
    const caSecret = this.caches.secrets.get(namespace, caSecretName(name));
    if (!caSecret || ready.length === 0) return { requeueAfter: interval };
    const issued = await this.certificate(key, caSecret);
    const ask = this.options.ask ?? diskUsage;
    for (const pod of ready) {
      const ip = pod.status?.podIP;
      const architecture = pod.metadata?.labels?.[LABELS.arch];
      const podName = pod.metadata?.name;
      if (!ip || !architecture || !podName) continue;
      try {
        const address = (await this.options.resolve?.(ip, BUILDKIT_PORT)) ?? {
          host: ip,
          port: BUILDKIT_PORT,
        };
        const usage = await ask(
          {
            ...address,
            serverName: builderServiceHost(name, namespace, architecture),
            ca: issued.caPem,
            cert: issued.certPem,
            key: issued.key.exportPem(),
          },
          CALL_TIMEOUT_MS,
        );
        const labels = { pool: key, architecture, pod: podName };
        this.metrics.bytes.set({ ...labels, kind: "used" }, usage.used);
        this.metrics.bytes.set({ ...labels, kind: "reclaimable" }, usage.reclaimable);
      } catch (error) {
        // A builder that does not answer keeps no stale figure; the next interval asks again.
        for (const kind of ["used", "reclaimable"])
          this.metrics.bytes.remove({ pool: key, architecture, pod: podName, kind });
        log.debug({ pod: podName, err: errorMessage(error) }, "builder cache usage not read");
      }
    }
    return { requeueAfter: interval };
  };
}

/** Registers the collector as a controller of pools; an interval of 0 registers nothing. */
export function setupCacheUsage(
  manager: Manager,
  caches: CacheUsageCaches,
  options: CacheUsageOptions,
): CacheUsageCollector | undefined {
  if (options.intervalMs <= 0) return undefined;
  const collector = new CacheUsageCollector(caches, manager.metrics.registry, options);
  manager.addController({
    name: "builder-cache-usage",
    for: caches.pools,
    reconcile: collector.reconcile,
    workers: 1,
  });
  return collector;
}
