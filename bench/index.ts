// `npm run bench`: the operator against test/kube with the simulated kubelet, measured.
//   (a) a burst of 2,000 two-platform ImageBuilds: create → every platform Job, wall time and the
//       operator process's CPU, vs the floor's
// test/kube (API server, simulated controllers, kubelet), the operator and the floor each run
// in a process of their own; this one only creates builds and measures.
//   (b) API requests per build on the happy path; writes during 60 s at rest, resyncs included
//   (c) heap and RSS of the operator process with 5,000 ImageBuilds and 10,000 Jobs cached
//   (d) create → Jobs present, p50/p99, with 100 creates in flight
//   and the cache-locality routing model (rendezvous vs random).
// Prints one table and writes it to bench/results.md with the machine it ran on.
//
//   npm run bench [-- --quick]       (--quick: small numbers, for trying the harness)
//   npm run bench -- --growth        (the growth lines: the operator's burst CPU per build and its
//                                     memory per cached build at 500, 2,000 and 8,000 builds)
import { execFileSync } from "node:child_process";
import { cpus, freemem, loadavg, totalmem } from "node:os";
import { burst, operatorBurst } from "./burst.ts";
import { startBenchCluster } from "./cluster.ts";
import { atRest, happyPath, latency } from "./happy.ts";
import { createBuilds } from "./measure.ts";
import { memory } from "./memory.ts";
import { writeResults } from "./results-file.ts";
import { routingTable } from "./routing-table.ts";

const QUICK = process.argv.includes("--quick");
const SCALE = QUICK
  ? { burst: 200, memory: 500, latencyRounds: 2, happy: 5, restMs: 15_000, syncS: 5 }
  : { burst: 2000, memory: 5000, latencyRounds: 5, happy: 20, restMs: 60_000, syncS: 10 };
const WORKERS = 4; // the operator's default --build-workers
const IN_FLIGHT = 100;

function machine(): string {
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  const gib = (bytes: number) => (bytes / 1024 ** 3).toFixed(1);
  let nproc = String(cpus().length);
  try {
    nproc = execFileSync("nproc", { encoding: "utf8" }).trim();
  } catch {
    // cpus() then
  }
  return `nproc ${nproc} (${cpu}), memory ${gib(totalmem())} GiB (${gib(freemem())} GiB free), Node ${process.version}, load average ${loadavg()
    .map((load) => load.toFixed(2))
    .join(" ")}`;
}

const log = (text: string) =>
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${text}\n`);

const machineBefore = machine();
const started = Date.now();

if (process.argv.includes("--growth")) {
  await growth();
  process.exit(0);
}

log("routing model");
const routing = routingTable();

log(`happy path: ${SCALE.happy} builds one after another`);
const happyCluster = await startBenchCluster();
await happyCluster.startOperator({
  identity: "bench-happy",
  args: [`--sync-period=${SCALE.syncS}s`],
});
await happyCluster.createPool("farm", { maxConcurrentBuilds: 1000 });
await happyCluster.waitForPoolReady("farm");
const happy = await happyPath(happyCluster, SCALE.happy);
log(`at rest for ${SCALE.restMs / 1000} s (sync period ${SCALE.syncS} s)`);
const rest = await atRest(happyCluster, SCALE.restMs, SCALE.syncS);
log(`latency: ${SCALE.latencyRounds} rounds of ${IN_FLIGHT} creates in flight`);
const lat = await latency(happyCluster, SCALE.latencyRounds, IN_FLIGHT);
const template = await happyCluster.kube.buildObjects("happy-0");
await happyCluster.stop();

log(`burst: ${SCALE.burst} builds, operator then floor`);
const burstResult = await burst(SCALE.burst, WORKERS);

log(`memory: ${SCALE.memory} builds`);
const mem = await memory(template, SCALE.memory);

const machineAfter = machine();
const minutes = ((Date.now() - started) / 60_000).toFixed(1);
const yes = (ok: boolean) => (ok ? "met" : "**missed**");

const rows: [string, string, string, string][] = [
  [
    `(a) burst of ${burstResult.builds} two-platform builds: first create → every platform Job`,
    `operator ${(burstResult.operatorMs / 1000).toFixed(1)} s, floor ${(burstResult.floorMs / 1000).toFixed(1)} s: **${burstResult.ratio}×**`,
    "≤ 1.5×",
    yes(burstResult.ratio <= 1.5),
  ],
  [
    "(a) … CPU of the operator's process in that window, vs the floor's process",
    `operator ${burstResult.operatorCpuSeconds.toFixed(1)} s (${((burstResult.operatorCpuSeconds * 1000) / burstResult.builds).toFixed(1)} ms per build), floor ${burstResult.floorCpuSeconds.toFixed(1)} s: **${burstResult.cpuRatio}×**`,
    "≤ 1.5×",
    yes(burstResult.cpuRatio <= 1.5),
  ],
  [
    "(a) … reconciles, writes; the API server's process (test/kube, controllers, kubelet)",
    `${burstResult.reconciles} reconciles, operator ${burstResult.operatorWrites} writes, floor ${burstResult.floorWrites}; API server ${burstResult.kubeCpuSeconds.toFixed(1)} s CPU beside the operator, ${burstResult.floorKubeCpuSeconds.toFixed(1)} s beside the floor`,
    "",
    "",
  ],
  [
    `(b) writes per build, happy path (${happy.builds} builds one after another)`,
    `**${happy.writesPerBuild}** (${Object.entries(happy.perBuild)
      .filter(
        ([key]) => !key.startsWith("get") && !key.startsWith("list") && !key.startsWith("watch"),
      )
      .map(([key, count]) => `${key} ${count}`)
      .join(", ")}); refused ${happy.refusedPerBuild}`,
    "≤ 8",
    yes(happy.writesPerBuild <= 8),
  ],
  [
    "(b) … Events per build (apart); reads per build",
    `${happy.eventsPerBuild} Event writes; ${happy.readsPerBuild} reads (${
      Object.entries(happy.perBuild)
        .filter(([key]) => key.startsWith("get") || key.startsWith("list"))
        .map(([key, count]) => `${key} ${count}`)
        .join(", ") || "none"
    }); ${happy.msPerBuild} ms create → Succeeded`,
    "",
    "",
  ],
  [
    `(b) writes during ${rest.seconds} s at rest, resyncs every ${rest.syncPeriodSeconds} s`,
    `**${rest.writes}**${rest.writes ? ` (${JSON.stringify(rest.writeKinds)})` : ""}; ${rest.reconciles} reconciles, ${rest.reads} reads; Lease renewals apart: ${rest.leaseWrites}`,
    "0",
    yes(rest.writes === 0),
  ],
  [
    `(c) operator heap with ${mem.builds} ImageBuilds, ${mem.jobs} Jobs, ${mem.pods} pods, ${mem.secrets} client Secrets cached`,
    `live heap **${mem.liveHeap} MiB** (after a full GC); heap used sampled at rest ${mem.heapUsedAtRestMin}–${mem.heapUsedAtRest} MiB, garbage not yet collected included (heap total ${mem.heapTotalAtRest}); peak ${mem.heapUsedPeak} MiB while listing`,
    "≤ 150 MiB",
    yes(mem.liveHeap <= 150),
  ],
  [
    "(c) … RSS of the operator's process; start",
    `RSS **${mem.rssAtRest} MiB** at rest, peak ${mem.rssPeak} MiB; started and reconciled every build in ${mem.startSeconds} s with ${mem.writesOnStart} build writes`,
    "≤ 200 MiB",
    yes(mem.rssAtRest <= 200),
  ],
  [
    `(d) create → both platform Jobs present, ${lat.inFlight} creates in flight (${lat.samples} builds)`,
    `p50 **${lat.p50Ms} ms**, p99 **${lat.p99Ms} ms** (max ${lat.maxMs} ms); cores busy over the rounds: operator ${lat.operatorCores}, API server ${lat.kubeCores}`,
    "p99 ≤ 1 s",
    yes(lat.p99Ms <= 1000),
  ],
];

const table = [
  "| measurement | result | target | |",
  "| --- | --- | --- | --- |",
  ...rows.map((row) => `| ${row.join(" | ")} |`),
].join("\n");

const text = `## Latest run

\`npm run bench${QUICK ? " -- --quick" : ""}\` on ${new Date().toISOString().slice(0, 10)}, ${minutes} minutes.

- Machine before: ${machineBefore}
- Machine after: ${machineAfter}

${table}

Routing model (\`bench/routing.ts\`): ${routing.description}

${routing.table}
`;

process.stdout.write(`\n${text}\n`);
if (!QUICK) {
  // The measured part of bench/results.md is replaced; notes outside the markers stay.
  log(`written to ${writeResults("bench", text)}`);
}
process.exit(0);

/**
 * How cost grows: for 500, 2,000 and 8,000 builds, the operator's CPU per build in a burst
 * and its memory with that many finished builds cached; the slope between the sizes says
 * whether it is linear and, carried on, what 20,000 builds would need.
 */
async function growth(): Promise<void> {
  const sizes = QUICK ? [100, 200, 400] : [500, 2000, 8000];
  log("growth: a finished build to copy");
  const cluster = await startBenchCluster();
  await cluster.startOperator({ identity: "bench-growth" });
  await cluster.createPool("farm", { maxConcurrentBuilds: 1000 });
  await cluster.waitForPoolReady("farm");
  await createBuilds(cluster, ["happy-0"], () => "farm", 1);
  await cluster.kube.waitPhases(["happy-0"]);
  const template = await cluster.kube.buildObjects("happy-0");
  await cluster.stop();
  const lines: string[] = [];
  const points: { builds: number; cpuMs: number; rss: number; live: number }[] = [];
  for (const builds of sizes) {
    log(`growth: burst of ${builds}, load average ${loadavg()[0]?.toFixed(2)}`);
    const run = await operatorBurst(builds, WORKERS);
    log(`growth: memory with ${builds}`);
    const mem = await memory(template, builds);
    const cpuMs = (run.operatorCpuSeconds * 1000) / builds;
    points.push({ builds, cpuMs, rss: mem.rssAtRest, live: mem.liveHeap });
    lines.push(
      `- **${builds} builds**: burst CPU **${cpuMs.toFixed(1)} ms per build** (${run.operatorCpuSeconds.toFixed(1)} s, ${run.reconciles} reconciles, ${(run.operatorMs / 1000).toFixed(1)} s wall); cached: RSS **${mem.rssAtRest} MiB**, live heap ${mem.liveHeap} MiB (${mem.jobs} Jobs, ${mem.pods} pods, ${mem.secrets} client Secrets), ${((mem.rssAtRest * 1024) / builds).toFixed(0)} KiB RSS per build; load average ${loadavg()
        .map((load) => load.toFixed(2))
        .join(" ")}`,
    );
  }
  const first = points[0] as (typeof points)[number];
  const last = points.at(-1) as (typeof points)[number];
  const perBuild = (key: "rss" | "live") =>
    ((last[key] - first[key]) * 1024) / (last.builds - first.builds);
  const at20k = (key: "rss" | "live") =>
    Math.round(last[key] + ((20_000 - last.builds) * perBuild(key)) / 1024);
  lines.push(
    `- **Slope ${first.builds} → ${last.builds}**: ${perBuild("rss").toFixed(1)} KiB RSS and ${perBuild("live").toFixed(1)} KiB live heap per cached build; CPU per build ${first.cpuMs.toFixed(1)} → ${last.cpuMs.toFixed(1)} ms. Carried on to **20,000 builds**: RSS about ${at20k("rss")} MiB, live heap about ${at20k("live")} MiB, burst CPU about ${((last.cpuMs * 20_000) / 1000).toFixed(0)} s if the per-build cost stays at ${last.cpuMs.toFixed(1)} ms.`,
  );
  const minutes = ((Date.now() - started) / 60_000).toFixed(1);
  const text = `## Growth

\`npm run bench -- --growth${QUICK ? " --quick" : ""}\` on ${new Date().toISOString().slice(0, 10)}, ${minutes} minutes. Each size: a burst of that many two-platform builds (operator only, as in (a)), then the operator started on that many finished builds as in (c).

- Machine before: ${machineBefore}
- Machine after: ${machine()}

${lines.join("\n")}
`;
  process.stdout.write(`\n${text}\n`);
  if (!QUICK) log(`written to ${writeResults("bench:growth", text)}`);
}
