// Real builds, measured: the test/buildkit fixture (linux/amd64 + linux/arm64, arm64 RUN steps
// under QEMU) built through the operator with real BuildKit, as in test/buildkit.
//   cold: fresh builders (empty state) and an empty registry cache ref
//   warm: fresh builders again, importing the cache the cold build exported
// and the operator's own share of each build's wall time: from the ImageBuild's creation to
// status Succeeded, minus the time the buildctl process of a platform and the assemble process
// ran (per platform, since platforms build side by side). What remains is the controllers,
// the Job and pod machinery, the `cp` of the metadata and the simulated kubelet.
//
//   node bench/buildkit.ts [rounds]      (root, BuildKit binaries as for test/buildkit)
import { imageBuild, type RealCluster, startRealCluster } from "../test/buildkit/cluster.ts";
import { busyboxDebs } from "../test/buildkit/fixtures.ts";
import { build, replaceBuilders } from "../test/buildkit/steps.ts";
import { buildkitOrSkip } from "../test/support/buildkit.ts";

interface Measured {
  wallMs: number;
  /** Per platform slug: buildctl process time, and wall minus buildctl and assemble. */
  platforms: Record<string, { buildctlMs: number; operatorMs: number }>;
  assembleMs: number;
}

async function measure(cluster: RealCluster, name: string, cacheRef: string): Promise<Measured> {
  await replaceBuilders(cluster);
  const object = imageBuild(cluster, { name, cache: { ref: cacheRef } });
  const created = Date.now();
  cluster.kube.store.create("imagebuilds.buildfarm.dev", object);
  const phase = await cluster.kube.waitFor(
    () => {
      const current = build(cluster, name)?.status?.phase;
      return (current === "Succeeded" || current === "Failed") && current;
    },
    { timeout: 300_000, interval: 5 },
  );
  const wallMs = Date.now() - created;
  if (phase !== "Succeeded") throw new Error(`${name} ${phase}`);
  const runs = cluster.pods.runs.filter((run) => run.pod.startsWith(`${name}-`));
  const total = (container: string, pod: string) =>
    runs
      .filter((run) => run.container === container && run.pod.startsWith(pod))
      .reduce((sum, run) => sum + (run.endMs - run.startMs), 0);
  const assembleMs = total("assemble", `${name}-index-`);
  const platforms: Measured["platforms"] = {};
  for (const slug of ["amd64", "arm64"]) {
    const buildctlMs = total("buildctl", `${name}-${slug}-`);
    platforms[slug] = { buildctlMs, operatorMs: wallMs - buildctlMs - assembleMs };
  }
  return { wallMs, platforms, assembleMs };
}

/** Wall time minus the slower platform's buildctl and the assemble process. */
const criticalMs = (m: Measured) =>
  m.wallMs - Math.max(...Object.values(m.platforms).map((p) => p.buildctlMs)) - m.assembleMs;
const percent = (list: Measured[]) =>
  `${Math.round((100 * median(list.map(criticalMs))) / median(list.map((m) => m.wallMs)))}%`;

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
};

async function main(): Promise<number> {
  const rounds = Number(process.argv[2] ?? 3);
  const tools = buildkitOrSkip("bench/buildkit.ts", { arm64: true, root: true });
  if (!tools) return 1;
  const debs = await busyboxDebs();
  if (typeof debs === "string") {
    process.stderr.write(`bench/buildkit.ts: ${debs}\n`);
    return 1;
  }
  const cluster = await startRealCluster(tools, debs);
  try {
    const cold: Measured[] = [];
    const warm: Measured[] = [];
    for (let round = 0; round < rounds; round++) {
      // A cache ref of its own per round: the cold build finds it empty, the warm one full.
      const ref = `${cluster.registry.host}/app:bench-${round}`;
      cold.push(await measure(cluster, `cold-${round}`, ref));
      warm.push(await measure(cluster, `warm-${round}`, ref));
    }
    const row = (label: string, list: Measured[]) => {
      const amd = list.map((m) => m.platforms.amd64!);
      const arm = list.map((m) => m.platforms.arm64!);
      return `${label.padEnd(5)} wall ${median(list.map((m) => m.wallMs))} ms | buildctl amd64 ${median(amd.map((p) => p.buildctlMs))} ms, arm64 ${median(arm.map((p) => p.buildctlMs))} ms | assemble ${median(list.map((m) => m.assembleMs))} ms | operator share amd64 ${median(amd.map((p) => p.operatorMs))} ms, arm64 ${median(arm.map((p) => p.operatorMs))} ms`;
    };
    const coldWall = median(cold.map((m) => m.wallMs));
    const warmWall = median(warm.map((m) => m.wallMs));
    process.stdout.write(
      [
        `fixture build, linux/amd64 + linux/arm64, medians of ${rounds} rounds, fresh builders each build`,
        row("cold", cold),
        row("warm", warm),
        `cold/warm wall ratio ${(coldWall / warmWall).toFixed(2)}`,
        `operator share on the critical path (wall - slower buildctl - assemble): cold ${median(cold.map(criticalMs))} ms (${percent(cold)}), warm ${median(warm.map(criticalMs))} ms (${percent(warm)})`,
        "",
      ].join("\n"),
    );
    return 0;
  } finally {
    await cluster.stop();
  }
}

process.exitCode = await main();
