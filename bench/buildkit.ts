// Real builds, measured: what the cache saves. A fixture that computes (random data generated
// and compressed in two parallel stages, ≥10 s of RUN time cold on linux/amd64 here, more for
// linux/arm64 under QEMU) built for both platforms through the operator with real BuildKit, as
// in test/buildkit, in one run:
//   cold           fresh builders (empty state), an empty registry cache ref
//   warm-local     the same builders again, the same revision
//   warm-registry  fresh builders, the registry cache only (CI runners, builders scaled from 0)
//   one-line       a one-line change of a file copied after the expensive steps
//   new branch     a branch's first build on fresh builders: its own cache ref is empty and
//                  spec.cache.importFrom names main's (the cache-tag fallback)
// Each row: wall time from the ImageBuild's creation to Succeeded; steps cached/executed and
// seconds executing from the platforms' cache reports (status.platforms[].cache); buildctl and
// assemble process time; and the operator's own share: wall minus the slower platform's
// buildctl and the assemble process. That share is the controllers, the Jobs' pods going
// through the simulated kubelet, the `cp` of the metadata and the cache-report container.
//
//   npm run bench:buildkit        (root, BuildKit binaries as for test/buildkit)
// The table goes to stdout and into bench/results.md between its bench:buildkit markers.
import { cpus, loadavg, totalmem } from "node:os";
import { imageBuild, type RealCluster, startRealCluster } from "../test/buildkit/cluster.ts";
import { build, replaceBuilders } from "../test/buildkit/steps.ts";
import type { KubeObject } from "../test/kube/index.ts";
import { busyboxDebs, startGitServer } from "../test/local-cluster/index.ts";
import { buildkitOrSkip } from "../test/support/buildkit.ts";
import { writeResults } from "./results-file.ts";

const ARCHES = ["amd64", "arm64"] as const;

/**
 * The fixture: two stages that compute side by side (generate random data and compress it:
 * only the checksums are kept, so layers stay small), and a final stage that copies their
 * results and then `app.txt`, which the one-line change and the branch edit.
 */
export function benchDockerfile(baseImage: string): string {
  const pack = (count: number, tool: string, out: string) =>
    `RUN busybox dd if=/dev/urandom bs=1M count=${count} 2>/dev/null | busybox ${tool} -9 | busybox sha256sum > ${out}`;
  return [
    `FROM ${baseImage} AS noise`,
    pack(64, "gzip", "/noise.gz.sha256"),
    pack(32, "bzip2", "/noise.bz2.sha256"),
    `FROM ${baseImage} AS digest`,
    pack(64, "gzip", "/digest.sha256"),
    `FROM ${baseImage}`,
    "COPY --from=noise /noise.gz.sha256 /noise.bz2.sha256 /sums/",
    "COPY --from=digest /digest.sha256 /sums/",
    "COPY app.txt /app.txt",
    "RUN busybox wc -c /app.txt /sums/noise.gz.sha256 /sums/noise.bz2.sha256 /sums/digest.sha256 > /manifest.txt",
    "",
  ].join("\n");
}

/** Steps that must run after a change of app.txt: its COPY and the RUN after it. */
const STEPS_AFTER_APP = 2;

const APP = ["name: bench", "greeting: hello", "version: 1", ""];
const branches = (baseImage: string) => {
  const dockerfile = benchDockerfile(baseImage);
  const withApp = (lines: string[]) => ({
    "app/Dockerfile": dockerfile,
    "app/app.txt": lines.join("\n"),
  });
  return {
    main: withApp(APP),
    change: withApp(APP.map((line) => (line === "version: 1" ? "version: 2" : line))),
    feature: withApp(APP.map((line) => (line === "greeting: hello" ? "greeting: hi" : line))),
  };
};

interface PlatformFigures {
  buildctlMs: number;
  cache?: { steps: number; cached: number; executed: number; executedSeconds: number };
}

interface Row {
  label: string;
  wallMs: number;
  assembleMs: number;
  platforms: Record<string, PlatformFigures>;
  /** Time in the platform pods' cache-report containers (the slower one). */
  cacheReportMs: number;
  /** Where the wall time went outside buildctl and assemble (the operator's share). */
  timeline: Timeline;
}

/**
 * The operator's share, cut where the processes start and end (ms from the creation):
 * before the first buildctl started; from the last buildctl's end to the last report
 * container's end (cp, cache-report); from there to assemble's start (pod Succeeded, Job
 * Complete, the reconcile that reads the digests and creates the index Job, its pod); after
 * assemble (its Job Complete, the status write that says Succeeded).
 */
interface Timeline {
  toBuildctl: number;
  reports: number;
  toAssemble: number;
  afterAssemble: number;
}

async function measure(
  cluster: RealCluster,
  gitUrl: string,
  label: string,
  name: string,
  options: { revision: string; cache: Record<string, unknown>; freshBuilders: boolean },
): Promise<Row> {
  if (options.freshBuilders) await replaceBuilders(cluster);
  const object = imageBuild(cluster, { name, revision: options.revision, cache: options.cache });
  const spec = object.spec as { source: { git: { url: string } } };
  spec.source.git.url = gitUrl;
  const created = Date.now();
  cluster.kube.store.create("imagebuilds.buildfarm.dev", object as KubeObject);
  const phase = await cluster.kube.waitFor(
    () => {
      const current = build(cluster, name)?.status?.phase;
      return (current === "Succeeded" || current === "Failed") && current;
    },
    { timeout: 900_000, interval: 5 },
  );
  const wallMs = Date.now() - created;
  const status = build(cluster, name)?.status;
  if (phase !== "Succeeded") throw new Error(`${name} ${phase}: ${JSON.stringify(status)}`);
  const runs = cluster.pods.runs.filter((run) => run.pod.startsWith(`${name}-`));
  const total = (container: string, pod: string) =>
    runs
      .filter((run) => run.container === container && run.pod.startsWith(pod))
      .reduce((sum, run) => sum + (run.endMs - run.startMs), 0);
  const platforms: Record<string, PlatformFigures> = {};
  for (const arch of ARCHES) {
    const cache = status?.platforms?.find((p) => p.platform === `linux/${arch}`)?.cache;
    platforms[arch] = {
      buildctlMs: total("buildctl", `${name}-${arch}-`),
      ...(cache ? { cache } : {}),
    };
  }
  const ends = (container: string) =>
    runs.filter((run) => run.container === container).map((run) => run.endMs - created);
  const starts = (container: string) =>
    runs.filter((run) => run.container === container).map((run) => run.startMs - created);
  const buildctlEnd = Math.max(...ends("buildctl"));
  const reportsEnd = Math.max(...ends("cp"), ...ends("cache-report"));
  const assembleStart = Math.min(...starts("assemble"));
  const timeline: Timeline = {
    toBuildctl: Math.min(...starts("buildctl")),
    reports: reportsEnd - buildctlEnd,
    toAssemble: assembleStart - reportsEnd,
    afterAssemble: wallMs - Math.max(...ends("assemble")),
  };
  return {
    label,
    wallMs,
    timeline,
    assembleMs: total("assemble", `${name}-index-`),
    platforms,
    cacheReportMs: Math.max(...ARCHES.map((arch) => total("cache-report", `${name}-${arch}-`))),
  };
}

/** Wall time minus the slower platform's buildctl and the assemble process. */
const operatorMs = (row: Row) =>
  row.wallMs - Math.max(...Object.values(row.platforms).map((p) => p.buildctlMs)) - row.assembleMs;
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const share = (row: Row) => operatorMs(row) / row.wallMs;
const verdict = (ok: boolean) => (ok ? "met" : "missed");

function steps(row: Row, key: "cached" | "executed"): string {
  return ARCHES.map((arch) => {
    const cache = row.platforms[arch]?.cache;
    return cache ? `${cache[key]}` : "?";
  }).join(" / ");
}

function table(rows: Row[]): string {
  const [cold, , warmRegistry, oneLine, branch] = rows as [Row, Row, Row, Row, Row];
  const executed = (row: Row) =>
    ARCHES.map((arch) => row.platforms[arch]?.cache?.executed ?? Number.NaN);
  const targets: Record<string, string> = {
    cold: `amd64 RUN time ≥ 10 s: ${verdict((cold.platforms.amd64?.cache?.executedSeconds ?? 0) >= 10)}`,
    "warm-registry": `≤ 0.25× cold, 0 executed: ${verdict(warmRegistry.wallMs <= 0.25 * cold.wallMs && executed(warmRegistry).every((n) => n === 0))}`,
    "one-line change": `only the ${STEPS_AFTER_APP} steps after the change: ${verdict(executed(oneLine).every((n) => n === STEPS_AFTER_APP))}`,
    "new branch": `only what differs from main (${STEPS_AFTER_APP}): ${verdict(executed(branch).every((n) => n === STEPS_AFTER_APP))}`,
  };
  const header = [
    "build",
    "wall",
    "× cold",
    "steps cached (amd64 / arm64)",
    "executed",
    "seconds executing",
    "buildctl (amd64 / arm64)",
    "assemble",
    "cache-report",
    "operator share",
    "targets",
  ];
  const cells = [
    header,
    header.map(() => "---"),
    ...rows.map((row) => [
      row.label,
      seconds(row.wallMs),
      `${(row.wallMs / cold.wallMs).toFixed(2)}×`,
      steps(row, "cached"),
      steps(row, "executed"),
      ARCHES.map((arch) => row.platforms[arch]?.cache?.executedSeconds ?? "?").join(" / "),
      ARCHES.map((arch) => seconds(row.platforms[arch]?.buildctlMs ?? 0)).join(" / "),
      seconds(row.assembleMs),
      seconds(row.cacheReportMs),
      `${seconds(operatorMs(row))} (${(100 * share(row)).toFixed(1)}%) ${share(row) <= 0.05 ? "≤ 5%" : "> 5%"}`,
      targets[row.label] ?? "",
    ]),
  ];
  return cells.map((line) => `| ${line.join(" | ")} |`).join("\n");
}

/** The timeline of each row, for the notes under the table. */
function profile(rows: Row[]): string {
  return [
    "Where the operator's share went (ms from the ImageBuild's creation: to the first buildctl; last buildctl end → last report container end; → assemble start; after assemble):",
    "",
    ...rows.map(
      ({ label, timeline: t }) =>
        `- ${label}: ${Math.round(t.toBuildctl)} / ${Math.round(t.reports)} / ${Math.round(t.toAssemble)} / ${Math.round(t.afterAssemble)}`,
    ),
  ].join("\n");
}

function machine(): string {
  const gib = (bytes: number) => (bytes / 1024 ** 3).toFixed(1);
  return `nproc ${cpus().length} (${cpus()[0]?.model ?? "unknown CPU"}), memory ${gib(totalmem())} GiB, Node ${process.version}, load average ${loadavg()
    .map((load) => load.toFixed(2))
    .join(" ")}`;
}

const log = (text: string) =>
  process.stderr.write(`[bench:buildkit ${new Date().toISOString().slice(11, 19)}] ${text}\n`);

async function main(): Promise<number> {
  const tools = buildkitOrSkip("bench/buildkit.ts", { arm64: true, root: true });
  if (!tools) return 1;
  const debs = await busyboxDebs();
  if (typeof debs === "string") {
    process.stderr.write(`bench/buildkit.ts: ${debs}\n`);
    return 1;
  }
  const machineBefore = machine();
  const started = Date.now();
  const cluster = await startRealCluster(tools, debs);
  const git = await startGitServer("bench", branches(cluster.baseImage));
  try {
    const run = Date.now().toString(36);
    const main = `${cluster.registry.host}/bench:cache-${run}`;
    const feature = `${cluster.registry.host}/bench:cache-feature-${run}`;
    const plan: [string, Parameters<typeof measure>[4]][] = [
      ["cold", { revision: "main", cache: { ref: main }, freshBuilders: true }],
      ["warm-local", { revision: "main", cache: { ref: main }, freshBuilders: false }],
      ["warm-registry", { revision: "main", cache: { ref: main }, freshBuilders: true }],
      ["one-line change", { revision: "change", cache: { ref: main }, freshBuilders: false }],
      [
        "new branch",
        { revision: "feature", cache: { ref: feature, importFrom: [main] }, freshBuilders: true },
      ],
    ];
    const rows: Row[] = [];
    for (const [index, [label, options]] of plan.entries()) {
      log(`${label}…`);
      const row = await measure(cluster, git.url, label, `bench-${index}-${run}`, options);
      log(`${label}: ${seconds(row.wallMs)}, executed ${steps(row, "executed")}`);
      rows.push(row);
    }
    const text = [
      `## Real BuildKit: what the cache saves`,
      "",
      `\`npm run bench:buildkit\` on ${new Date().toISOString().slice(0, 10)}, ${((Date.now() - started) / 60_000).toFixed(1)} minutes; the fixture (\`benchDockerfile\` in bench/buildkit.ts) for linux/amd64 and linux/arm64 (arm64 RUN steps under QEMU).`,
      "",
      `- Machine before: ${machineBefore}`,
      `- Machine after: ${machine()}`,
      "",
      table(rows),
      "",
      profile(rows),
    ].join("\n");
    process.stdout.write(`\n${text}\n`);
    log(`written to ${writeResults("bench:buildkit", text)}`);
    return 0;
  } finally {
    await git.stop();
    await cluster.stop();
  }
}

process.exitCode = await main();
