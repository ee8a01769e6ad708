// Per-builder cache usage without BuildKit: the DiskUsage response decoder on hand-encoded
// protobuf, the gRPC framing, buildctl du's sums, the collector's rate bound, the flag, and the
// NetworkPolicy peer for the operator's pods. test/buildkit/cache.test.ts asks real builders.
import type { KubernetesObject, V1Pod, V1Secret } from "@kubernetes/client-node";
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { type CacheUsageCaches, CacheUsageCollector } from "../../src/builderpool/cache-usage.ts";
import { desiredPool } from "../../src/builderpool/desired.ts";
import {
  cacheUsage,
  DiskUsageError,
  decodeDiskUsage,
  grpcMessage,
} from "../../src/builderpool/diskusage.ts";
import { OPERATOR_POD_LABELS, selectorMatches } from "../../src/builderpool/policy.ts";
import { ConfigError, loadConfig } from "../../src/config.ts";
import { createCertificateAuthority } from "../../src/pki/certificates.ts";
import { caSecretData } from "../../src/pki/secrets.ts";
import type { ReconcileContext } from "../../src/runtime/controller.ts";
import type { Informer } from "../../src/runtime/informer.ts";
import { createLogger } from "../../src/runtime/log.ts";
import { examplePool, poolContext } from "./fixtures.ts";

/** Protobuf encoding, enough for UsageRecord: varints and length-delimited fields. */
const varint = (value: number): number[] => {
  const out: number[] = [];
  let rest = value;
  while (rest >= 128) {
    out.push((rest % 128) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
};
const field = (number: number, value: number | string | Uint8Array): number[] =>
  typeof value === "number"
    ? [...varint(number * 8), ...varint(value)]
    : (() => {
        const bytes = typeof value === "string" ? Buffer.from(value) : value;
        return [...varint(number * 8 + 2), ...varint(bytes.length), ...bytes];
      })();
const record = (id: string, size: number, inUse: boolean, extra: number[] = []) =>
  Uint8Array.from([
    ...field(1, id),
    ...(inUse ? field(3, 1) : []),
    ...field(4, size),
    ...extra,
    ...field(9, "mount / from exec /bin/sh -c make"),
  ]);

describe("the DiskUsage response", () => {
  it("decodes records' id, size and in-use flag, skipping the fields it does not read", () => {
    // A Timestamp (6, length-delimited), a fixed64 and a bool (Mutable, 2) beside them.
    const timestamp = Uint8Array.from([...field(1, 1_700_000_000), ...field(2, 5)]);
    const fixed64 = [(14 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8];
    const message = Uint8Array.from([
      ...field(1, record("a", 5_000_000_000, false, [...field(2, 1), ...field(6, timestamp)])),
      ...field(1, record("b", 4096, true, fixed64)),
      ...field(1, record("c", 0, false)),
    ]);
    const records = decodeDiskUsage(message);
    expect(records).toEqual([
      { id: "a", size: 5_000_000_000, inUse: false },
      { id: "b", size: 4096, inUse: true },
      { id: "c", size: 0, inUse: false },
    ]);
    expect(cacheUsage(records)).toEqual({
      used: 5_000_004_096,
      reclaimable: 5_000_000_000,
      records: 3,
    });
  });

  it("refuses a message cut inside a field, and a gRPC body cut or compressed", () => {
    const whole = Uint8Array.from(field(1, record("a", 1, false)));
    expect(() => decodeDiskUsage(whole.subarray(0, whole.length - 3))).toThrow(DiskUsageError);
    const framed = Buffer.concat([Buffer.from([0, 0, 0, 0, whole.length]), whole]);
    expect(Buffer.from(grpcMessage(framed))).toEqual(Buffer.from(whole));
    expect(() => grpcMessage(framed.subarray(0, 8))).toThrow(/cut/);
    expect(() => grpcMessage(Buffer.from([1, 0, 0, 0, 0]))).toThrow(/compressed/);
  });
});

function informer<T extends KubernetesObject>(objects: T[]): Informer<T> {
  return {
    get: (namespace: string, name: string) =>
      objects.find((o) => o.metadata?.namespace === namespace && o.metadata?.name === name),
    list: (namespace?: string) =>
      objects.filter((o) => namespace === undefined || o.metadata?.namespace === namespace),
  } as unknown as Informer<T>;
}

describe("the collector", () => {
  const context = { log: createLogger({ level: "silent" }) } as unknown as ReconcileContext;

  async function collector() {
    const ca = await createCertificateAuthority({ commonName: "farm CA", now: new Date() });
    const builder = (name: string, arch: string, ready: boolean): V1Pod => ({
      metadata: {
        name,
        namespace: "builds",
        labels: {
          "app.kubernetes.io/component": "builder",
          "buildfarm.dev/pool": "farm",
          "buildfarm.dev/arch": arch,
        },
      },
      status: {
        phase: "Running",
        podIP: `10.244.0.${name.length}`,
        conditions: [{ type: "Ready", status: ready ? "True" : "False" }],
      },
    });
    const caches: CacheUsageCaches = {
      pools: informer<KubernetesObject>([{ metadata: { name: "farm", namespace: "builds" } }]),
      secrets: informer<V1Secret>([
        { metadata: { name: "farm-buildkit-ca", namespace: "builds" }, data: caSecretData(ca) },
      ]),
      pods: informer([
        builder("farm-amd64-a", "amd64", true),
        builder("farm-arm64-b", "arm64", true),
        builder("farm-arm64-cc", "arm64", false),
      ]),
    };
    let now = Date.now();
    const certificates = new Set<string>();
    const asked: { host: string; serverName: string }[] = [];
    const instance = new CacheUsageCollector(caches, new Registry(), {
      intervalMs: 60_000,
      now: () => new Date(now),
      ask: async (target) => {
        asked.push({ host: target.host, serverName: target.serverName });
        certificates.add(target.cert);
        if (target.ca.trim() !== ca.certPem.trim()) throw new Error("not the pool's CA");
        return { used: 1000, reclaimable: 400, records: 2 };
      },
    });
    return { instance, asked, certificates, advance: (ms: number) => (now += ms) };
  }

  it("asks each Ready builder once per interval, however often it is reconciled", async () => {
    const { instance, asked, certificates, advance } = await collector();
    const request = { namespace: "builds", name: "farm" };
    expect(await instance.reconcile(request, context)).toEqual({ requeueAfter: 60_000 });
    expect(asked).toEqual([
      { host: "10.244.0.12", serverName: "farm-amd64.builds.svc" },
      { host: "10.244.0.12", serverName: "farm-arm64.builds.svc" },
    ]);
    advance(20_000);
    // A spec change, a resync: too soon, nothing asked, woken when the interval is over.
    expect(await instance.reconcile(request, context)).toEqual({ requeueAfter: 40_000 });
    expect(asked.length).toBe(2);
    advance(40_000);
    await instance.reconcile(request, context);
    expect(asked.length).toBe(4);
    const series = (await instance.metrics.bytes.get()).values.map(
      (v) => `${v.labels.pod} ${v.labels.kind} ${v.value}`,
    );
    expect(series.sort()).toEqual([
      "farm-amd64-a reclaimable 400",
      "farm-amd64-a used 1000",
      "farm-arm64-b reclaimable 400",
      "farm-arm64-b used 1000",
    ]);
    // One certificate of the operator's own, issued once and kept (in memory only).
    expect(certificates.size).toBe(1);
  });
});

describe("--builder-cache-interval", () => {
  it("defaults to 60s, takes a duration, and 0 turns it off", () => {
    expect(loadConfig([], {}).builderCacheInterval).toBe(60_000);
    expect(loadConfig(["--builder-cache-interval=5m"], {}).builderCacheInterval).toBe(300_000);
    expect(loadConfig([], { BUILDER_CACHE_INTERVAL: "0" }).builderCacheInterval).toBe(0);
    expect(() => loadConfig(["--builder-cache-interval=often"], {})).toThrow(ConfigError);
  });
});

describe("the pool's NetworkPolicy with the operator's namespace", () => {
  it("also admits the operator's pods there, by the chart's labels, on the builders' port", () => {
    const policy = desiredPool(examplePool(), {
      ...poolContext(),
      operatorNamespace: "buildfarm-system",
    }).networkPolicy;
    const rule = policy.spec.ingress?.[0];
    const peer = rule?.from?.at(-1);
    expect(peer).toEqual({
      namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "buildfarm-system" } },
      podSelector: { matchLabels: { ...OPERATOR_POD_LABELS } },
    });
    expect(rule?.ports).toEqual([{ protocol: "TCP", port: 1234 }]);
    // The chart's operator pods carry those labels (its selectorLabels), and builds do not.
    expect(
      selectorMatches(peer?.podSelector ?? {}, {
        "app.kubernetes.io/name": "buildfarm",
        "app.kubernetes.io/instance": "buildfarm",
        "app.kubernetes.io/component": "operator",
      }),
    ).toBe(true);
    expect(
      desiredPool(examplePool(), poolContext()).networkPolicy.spec.ingress?.[0]?.from,
    ).toHaveLength(2);
  });
});
