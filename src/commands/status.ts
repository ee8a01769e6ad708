// `buildfarm status <imagebuild>`: a compact table of one build's phases, builders, durations
// and digests. Installable as `kubectl buildfarm status`.
import type { StoredImageBuild } from "../api/resources.ts";
import { clusterArgs, readBuild, UsageError } from "./cluster.ts";

const USAGE = "usage: buildfarm status <imagebuild> [-n namespace] [--kubeconfig file]\n";

/** Whole seconds as 1h2m3s / 4m5s / 6s. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  return h > 0 ? `${h}h${m}m${rest}s` : m > 0 ? `${m}m${rest}s` : `${rest}s`;
}

function between(start: string | undefined, end: string | undefined, now: Date): string {
  if (!start) return "-";
  const to = end ? Date.parse(end) : now.getTime();
  return formatDuration((to - Date.parse(start)) / 1000);
}

/** Seconds with one decimal below a minute (12.3s), else as formatDuration. */
const formatSeconds = (seconds: number) =>
  seconds < 60 ? `${Math.round(seconds * 10) / 10}s` : formatDuration(seconds);

const short = (digest: string | undefined) => (digest ? `${digest.slice(0, 19)}…` : "-");

function table(rows: string[][]): string {
  const widths =
    rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? "").length))) ?? [];
  return rows
    .map((row) =>
      row
        .map((cell, column) =>
          column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0),
        )
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/**
 * spec.attestations: the attestation manifests the index holds once it was assembled (one per
 * platform, each with what it attests), or what was asked for until then.
 */
function attestationLines(build: StoredImageBuild): string[] {
  const found = build.status?.attestations ?? [];
  if (found.length > 0) {
    return [
      "Attestations:",
      ...found.map(
        (a) => `  ${a.platform}  ${a.predicateTypes.join(", ") || "-"}  ${short(a.digest)}`,
      ),
    ];
  }
  const asked = build.spec.attestations;
  if (!asked) return [];
  const kinds = [
    ...(asked.provenance ? [`provenance (mode=${asked.provenance.mode ?? "min"})`] : []),
    ...(asked.sbom ? ["sbom"] : []),
  ];
  return [`Attestations: ${kinds.join(", ")} requested`];
}

/** The status report of one build, as printed. Pure, so tests compare text. */
export function formatStatus(build: StoredImageBuild, now: Date): string {
  const status = build.status ?? {};
  const lines = [
    `ImageBuild ${build.metadata.namespace}/${build.metadata.name}  pool ${build.spec.poolRef?.name ?? "-"}`,
    `Phase:  ${status.phase ?? "Pending"}${status.queuePosition ? ` (position ${status.queuePosition} in the queue)` : ""}  after ${between(String(build.metadata.creationTimestamp ?? status.startTime ?? ""), status.completionTime, now)}`,
  ];
  if (status.image) lines.push(`Image:  ${status.image}`);
  if (status.image && build.spec.output?.tags?.length)
    lines.push(`Tags:   ${build.spec.output.tags.join(", ")}`);
  if (status.cachedSteps) lines.push(`Cache:  ${status.cachedSteps} steps cached`);
  const verify = status.verify;
  if (verify) {
    const took = verify.startTime
      ? `  ${between(verify.startTime, verify.completionTime, now)}`
      : "";
    lines.push(`Verify: ${verify.phase}  ${verify.image ?? "-"}${took}`);
  }
  lines.push(...attestationLines(build));
  const platforms =
    status.platforms ??
    (build.spec.platforms ?? []).map((platform) => ({ platform, phase: "Pending" as const }));
  lines.push(
    "",
    table([
      ["PLATFORM", "PHASE", "BUILDER", "DURATION", "CACHED", "EXECUTED", "DIGEST"],
      ...platforms.map((p) => [
        p.platform,
        p.phase,
        "builderPod" in p && p.builderPod
          ? p.builderPod
          : "builder" in p && p.builder
            ? p.builder
            : "-",
        "startTime" in p ? between(p.startTime, p.completionTime, now) : "-",
        "cache" in p && p.cache ? `${p.cache.cached}/${p.cache.steps}` : "-",
        "cache" in p && p.cache
          ? `${p.cache.executed} in ${formatSeconds(p.cache.executedSeconds)}`
          : "-",
        "digest" in p ? short(p.digest) : "-",
      ]),
    ]),
  );
  const conditions = (status.conditions ?? []).map((c) => `${c.type}=${c.status} (${c.reason})`);
  if (conditions.length) lines.push("", `Conditions: ${conditions.join(", ")}`);
  const problems = platforms.filter(
    (p) => "message" in p && p.message && (p.phase === "Failed" || p.phase === "Cancelled"),
  );
  for (const p of problems)
    lines.push(
      "",
      `${p.platform}:`,
      ...("message" in p ? (p.message ?? "") : "").split("\n").map((line) => `  ${line}`),
    );
  const failed = status.conditions?.find((c) => c.type === "Succeeded" && c.status === "False");
  if (failed && problems.length === 0) lines.push("", failed.message);
  return `${lines.join("\n")}\n`;
}

export async function statusCommand(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(USAGE);
    return 0;
  }
  try {
    const { client, namespace, name } = clusterArgs(argv, {});
    process.stdout.write(formatStatus(await readBuild(client, namespace, name), new Date()));
    return 0;
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`buildfarm status: ${error.message}\n${USAGE}`);
      return 2;
    }
    throw error;
  }
}
