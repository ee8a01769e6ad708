// What the cache saves, with real BuildKit: each platform's cache report (buildctl --trace,
// summed up by the cache-report container running the real `buildfarm cache-report`), its
// status fields, printer column and metric, the human log left as it was, and each builder's
// cache usage as the operator reads it over the builders' mTLS gRPC API, checked against
// `buildctl du` run inside the builder pod. One cluster (test/buildkit/cluster.ts) serves them.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { REPO_ROOT } from "../support/files.ts";
import {
  BUILD_NAMESPACE,
  imageBuild,
  OPERATOR_NAMESPACE,
  POOL,
  POOL_NAMESPACE,
  type RealCluster,
  realClusterInputs,
  startRealCluster,
} from "./cluster.ts";
import {
  type BuildStatus,
  builderPods,
  buildPods,
  explain,
  histories,
  isReady,
  podLog,
  replaceBuilders,
  runBuild,
  runSteps,
  waitForBuilders,
} from "./steps.ts";

const SUITE = "real BuildKit: cache reports and cache usage (test/buildkit/cache.test.ts)";
const { tools, debs } = (await realClusterInputs(SUITE)) ?? {};

const BUILD_TIMEOUT = 240_000;
/** The fixture's main branch: RUN, COPY and RUN --mount=type=secret after its FROM. */
const STEPS = 3;

/** A printer column's value as kubectl computes it, for the simple `.a.b` paths ours use. */
function printerColumn(object: Record<string, unknown>, column: string): unknown {
  const crd = parse(readFileSync(join(REPO_ROOT, "crds/buildfarm.dev_imagebuilds.yaml"), "utf8"));
  const version = crd.spec.versions[0] as {
    additionalPrinterColumns: { name: string; jsonPath: string; priority?: number }[];
  };
  const found = version.additionalPrinterColumns.find((c) => c.name === column);
  if (!found) throw new Error(`no printer column ${column}`);
  expect(found.priority, "shown with -o wide only").toBe(1);
  return found.jsonPath
    .split(".")
    .slice(1)
    .reduce<unknown>((value, key) => (value as Record<string, unknown> | undefined)?.[key], object);
}

describe.skipIf(!tools || !debs)(SUITE, () => {
  let cluster: RealCluster;
  const registry = () => cluster.operator.manager.metrics.registry;

  async function metric(name: string, labels: Record<string, string>): Promise<number | undefined> {
    const values = (await registry().getSingleMetric(name)?.get())?.values ?? [];
    return values.find((value) =>
      Object.entries(labels).every(([key, wanted]) => value.labels[key] === wanted),
    )?.value;
  }

  beforeAll(async () => {
    cluster = await startRealCluster(tools!, debs!);
    await waitForBuilders(cluster);
  }, 120_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  const reportOf = (status: BuildStatus, arch: string) =>
    status.platforms?.find((p) => p.platform === `linux/${arch}`)?.cache;

  describe("a first build, then the same revision on fresh builders", () => {
    let first: BuildStatus;
    let second: BuildStatus;
    const stepsBefore: Record<string, number | undefined> = {};

    beforeAll(async () => {
      // Its own cache ref: empty for the first build, whatever other files built before.
      const cache = { ref: `${cluster.registry.host}/cached:buildcache` };
      for (const arch of ["amd64", "arm64"])
        for (const result of ["cached", "executed"])
          stepsBefore[`${arch}/${result}`] = await metric("buildfarm_build_steps_total", {
            pool: `${POOL_NAMESPACE}/${POOL}`,
            architecture: arch,
            result,
          });
      first = await runBuild(
        cluster,
        imageBuild(cluster, { name: "cached-1", image: `${cluster.registry.host}/cached`, cache }),
        undefined,
        BUILD_TIMEOUT,
      );
      if (first.phase !== "Succeeded") throw new Error(await explain(cluster, "cached-1"));
      for (const pod of await replaceBuilders(cluster))
        expect(await histories(cluster, pod.metadata.name!)).toEqual([]);
      second = await runBuild(
        cluster,
        imageBuild(cluster, { name: "cached-2", image: `${cluster.registry.host}/cached`, cache }),
        undefined,
        BUILD_TIMEOUT,
      );
      if (second.phase !== "Succeeded") throw new Error(await explain(cluster, "cached-2"));
    }, 3 * BUILD_TIMEOUT);

    it("reports every step executed for the first build, with the seconds they ran", () => {
      for (const arch of ["amd64", "arm64"]) {
        const report = reportOf(first, arch);
        expect({ arch, report }).toMatchObject({
          arch,
          report: { steps: STEPS, cached: 0, executed: STEPS },
        });
        expect(report?.executedSeconds).toBeGreaterThan(0);
      }
      expect(first.cachedSteps).toBe(`0/${2 * STEPS}`);
    });

    it("reports every step cached for the second build on fresh builders, from the registry cache", () => {
      for (const arch of ["amd64", "arm64"])
        expect({ arch, report: reportOf(second, arch) }).toEqual({
          arch,
          report: { steps: STEPS, cached: STEPS, executed: 0, executedSeconds: 0 },
        });
      expect(second.cachedSteps).toBe(`${2 * STEPS}/${2 * STEPS}`);
    });

    it("agrees with buildctl's own log, which stays the human log (a copy was parsed)", async () => {
      for (const [name, cached] of [
        ["cached-1", false],
        ["cached-2", true],
      ] as const) {
        for (const pod of buildPods(cluster, name)) {
          const arch = pod.metadata.labels?.["buildfarm.dev/platform"];
          if (!arch) continue;
          const log = await podLog(cluster, BUILD_NAMESPACE, pod.metadata.name!, "buildctl");
          // buildctl says where the trace goes, then prints its plain progress as ever.
          expect(log).toMatch(/^time=.* msg="tracing logs to .*trace\.json"$/m);
          expect(log).toMatch(/^#\d+ \[internal\] load git source git:\/\/.*$/m);
          expect(log.split("\n").some((line) => line.startsWith("{"))).toBe(false);
          // The RUN steps as plain progress shows them, CACHED or not, as the report says.
          const runs = runSteps(log);
          expect(runs.length).toBe(2);
          expect({ name, arch, cached: runs.map((s) => s.cached) }).toEqual({
            name,
            arch,
            cached: [cached, cached],
          });
        }
      }
    });

    it("shows CACHED 6/6 in kubectl get ib -o wide", () => {
      const stored = cluster.kube.store.get(
        "imagebuilds.buildfarm.dev",
        BUILD_NAMESPACE,
        "cached-2",
      );
      expect(printerColumn(stored as Record<string, unknown>, "Cached")).toBe("6/6");
    });

    it("counts the steps in buildfarm_build_steps_total by pool, architecture and result", async () => {
      for (const arch of ["amd64", "arm64"]) {
        for (const [result, added] of [
          ["cached", STEPS],
          ["executed", STEPS],
        ] as const) {
          const now = await metric("buildfarm_build_steps_total", {
            pool: `${POOL_NAMESPACE}/${POOL}`,
            architecture: arch,
            result,
          });
          expect({
            arch,
            result,
            added: (now ?? 0) - (stepsBefore[`${arch}/${result}`] ?? 0),
          }).toEqual({ arch, result, added });
        }
      }
    });
  });

  describe("cache usage per builder", () => {
    /** `buildctl du` in the builder pod: every record's size, and those not in use. */
    async function du(pod: string): Promise<{ used: number; reclaimable: number }> {
      const result = await cluster.pods.exec(POOL_NAMESPACE, pod, "buildkitd", [
        "buildctl",
        "du",
        "--format",
        "{{json .}}",
      ]);
      if (result.code !== 0) throw new Error(`buildctl du in ${pod}: ${result.output}`);
      const records = JSON.parse(result.output.trim()) as { size: number; inUse: boolean }[];
      const sized = records.filter((r) => r.size > 0);
      return {
        used: sized.reduce((sum, r) => sum + r.size, 0),
        reclaimable: sized.filter((r) => !r.inUse).reduce((sum, r) => sum + r.size, 0),
      };
    }

    it("is what buildctl du says in each builder pod, asked over mTLS from the operator's pods", async () => {
      const builders = builderPods(cluster).filter(isReady);
      expect(builders.length).toBe(2);
      for (const pod of builders) {
        const labels = {
          pool: `${POOL_NAMESPACE}/${POOL}`,
          architecture: pod.metadata.labels?.["buildfarm.dev/arch"] ?? "",
          pod: pod.metadata.name!,
        };
        // The collector asks every 2 s here; the builder is idle, so both settle on one figure.
        const seen = await cluster.kube.waitFor(
          async () => {
            const used = await metric("buildfarm_builder_cache_bytes", { ...labels, kind: "used" });
            const reclaimable = await metric("buildfarm_builder_cache_bytes", {
              ...labels,
              kind: "reclaimable",
            });
            const truth = await du(pod.metadata.name!);
            return used === truth.used && reclaimable === truth.reclaimable && { used, truth };
          },
          { timeout: 30_000, interval: 500, message: `the cache usage of ${pod.metadata.name}` },
        );
        // The builder built something since it started: its cache is not empty.
        expect(seen.used).toBeGreaterThan(0);
      }
      // Through the cluster network: from the operator's stand-in pod to each builder pod,
      // admitted by the pool's NetworkPolicy.
      const dialled = cluster.pods.connections.filter(
        (c) => c.from === `${OPERATOR_NAMESPACE}/operator`,
      );
      const reached = new Set(dialled.map((c) => c.pod));
      for (const pod of builders) expect(reached.has(pod.metadata.name)).toBe(true);
      expect([...reached].every((pod) => pod?.startsWith(`${POOL}-`))).toBe(true);
      expect(dialled.every((c) => c.refused === undefined)).toBe(true);
    });

    it("drops a builder's series once it is gone", async () => {
      const old = builderPods(cluster).map((pod) => pod.metadata.name!);
      const fresh = (await replaceBuilders(cluster)).map((pod) => pod.metadata.name!);
      await cluster.kube.waitFor(
        async () => {
          const values = (await registry().getSingleMetric("buildfarm_builder_cache_bytes")?.get())
            ?.values;
          const pods = new Set((values ?? []).map((v) => String(v.labels.pod)));
          return old.every((pod) => !pods.has(pod)) && fresh.every((pod) => pods.has(pod));
        },
        { timeout: 30_000, interval: 250, message: "series for the new builders only" },
      );
    });
  });
});
