// (c) The operator process's memory with 5,000 ImageBuilds and 10,000 Jobs in its caches.
//
// The objects are copies of one real finished build of the happy path (its ImageBuild with
// status, client Secret, two platform Jobs with their full pod templates, their two pods with
// specs and termination messages), renamed and given fresh uids, seeded into a fresh test/kube
// (in its own process, bench/kube-host.ts) with the Jobs controller and kubelet off (nothing moves). Index Jobs are left out, so the Jobs
// are the 10,000 (2 per build); with them there would be 15,000. The operator starts on
// them as a child process; its heap and RSS are read from its own /metrics (prom-client's
// default process metrics), every 250 ms from its start, then for 10 s once every build has
// been reconciled and its queue is empty; last, the live heap: a heap snapshot is asked for
// (SIGUSR2) and the full GC it starts with, printed by --trace-gc, says what is left.
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { waitFor } from "../test/kube/wait.ts";
import { startBenchCluster } from "./cluster.ts";
import type { BuildObjects } from "./kube-host.ts";
import { isLease, isWrite, metric, mib, operatorRequests, sleep } from "./measure.ts";

export interface MemoryResult {
  builds: number;
  jobs: number;
  pods: number;
  secrets: number;
  /** MiB: heap used after a full GC (the one a heap snapshot starts with), at rest. */
  liveHeap: number;
  /** MiB: nodejs_heap_size_used_bytes sampled at rest, garbage included. */
  heapUsedAtRest: number;
  heapUsedAtRestMin: number;
  heapTotalAtRest: number;
  rssAtRest: number;
  heapUsedPeak: number;
  rssPeak: number;
  startSeconds: number;
  writesOnStart: number;
}

export async function memory(
  template: BuildObjects,
  builds: number,
  nodeArgs: string[] = [],
): Promise<MemoryResult> {
  const cluster = await startBenchCluster({
    controllers: { jobs: false, kubelet: false, scheduler: false },
  });
  try {
    await cluster.createPool("farm", { maxConcurrentBuilds: 1000 });
    const counts = await cluster.kube.call<{ jobs: number; pods: number; secrets: number }>(
      "seedCopies",
      template,
      "mem-",
      builds,
    );
    const mark = await cluster.kube.mark();
    const started = performance.now();
    let heapPeak = 0;
    let rssPeak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        try {
          const operator = cluster.operator;
          if (operator) {
            heapPeak = Math.max(heapPeak, await metric(operator, "nodejs_heap_size_used_bytes"));
            rssPeak = Math.max(rssPeak, await metric(operator, "process_resident_memory_bytes"));
          }
        } catch {
          // not listening yet
        }
        await sleep(250);
      }
    })();
    // --trace-gc prints every collection; a heap snapshot (SIGUSR2) starts with a full one,
    // whose "-> N MB" is the live heap. The snapshot itself goes to a temporary directory.
    const diagnostics = mkdtempSync(join(tmpdir(), "buildfarm-heap-"));
    const operatorStart = cluster.startOperator({
      identity: "bench-memory",
      nodeArgs: [
        ...nodeArgs,
        "--trace-gc",
        "--heapsnapshot-signal=SIGUSR2",
        `--diagnostic-dir=${diagnostics}`,
      ],
    });
    const operator = await operatorStart;
    // Every build reconciled once and nothing queued.
    await waitFor(
      async () =>
        (await metric(operator, "controller_runtime_reconcile_total", {
          controller: "imagebuild",
        })) >= builds &&
        (await metric(operator, "workqueue_depth", { name: "imagebuild" })) === 0 &&
        (await metric(operator, "controller_runtime_active_workers", {
          controller: "imagebuild",
        })) === 0,
      { timeout: 600_000, interval: 250, message: "the operator did not get through the builds" },
    );
    const startSeconds = (performance.now() - started) / 1000;
    await sleep(2000);
    const heapUsed: number[] = [];
    let heapTotal = 0;
    let rss = 0;
    for (let i = 0; i < 10; i++) {
      heapUsed.push(await metric(operator, "nodejs_heap_size_used_bytes"));
      heapTotal = await metric(operator, "nodejs_heap_size_total_bytes");
      rss = await metric(operator, "process_resident_memory_bytes");
      await sleep(1000);
    }
    sampling = false;
    await sampler;
    process.kill(operator.pid, "SIGUSR2");
    const fullGc = await operator.waitForLog(
      (line) => line.level === "raw" && /Mark-Compact.*heap profiler/.test(line.msg),
      60_000,
    );
    const live = Number(/-> ([0-9.]+) \(/.exec(fullGc.msg)?.[1]);
    const keep = process.env.BENCH_KEEP_HEAP_SNAPSHOT === "1";
    if (keep) {
      await waitFor(() => readdirSync(diagnostics).some((f) => f.endsWith(".heapsnapshot")), {
        timeout: 120_000,
      });
      await sleep(20_000);
      process.stderr.write(`heap snapshot in ${diagnostics}\n`);
    }
    await operator.kill("SIGKILL");
    if (!keep) rmSync(diagnostics, { recursive: true, force: true });
    const writes = operatorRequests(await cluster.kube.since(mark)).filter(
      (record) =>
        isWrite(record) &&
        !isLease(record) &&
        (record.name?.startsWith("mem-") || record.resource === "imagebuilds"),
    );
    const round = (bytes: number) => Math.round(mib(bytes));
    return {
      builds,
      ...counts,
      liveHeap: Math.round(live),
      heapUsedAtRest: round(Math.max(...heapUsed)),
      heapUsedAtRestMin: round(Math.min(...heapUsed)),
      heapTotalAtRest: round(heapTotal),
      rssAtRest: round(rss),
      heapUsedPeak: round(Math.max(heapPeak, ...heapUsed)),
      rssPeak: round(Math.max(rssPeak, rss)),
      startSeconds: Math.round(startSeconds * 10) / 10,
      writesOnStart: writes.length,
    };
  } finally {
    await cluster.stop();
  }
}
