// The cache report of one platform's build, both halves in one file like assemble-contract.ts:
// what the `cache-report` container of a platform pod runs (cacheReportArgs), how it sums up
// buildctl's trace (summarizeTrace), the one JSON line it leaves as its termination message,
// and how the operator reads that line back (parseCacheReport).
//
// buildctl v0.24 `--trace FILE` writes every client.SolveStatus it receives as one JSON line
// (cmd/buildctl/build.go: progresswriter.Tee, json.Encoder), while `--progress plain` keeps
// printing the human log to stderr: the report is made from that copy and the log people read
// with `buildfarm logs` is left as it is. A vertex arrives many times (first its name, then
// `started`, then `completed` and `cached`); the last word about each digest counts.
//
// Which vertexes are steps: those the Dockerfile frontend names after an instruction of a stage,
// `[<stage> <n>/<m>] RUN …` (`[<n>/<m>] …` for a single stage), except FROM. Not steps:
// `[internal] load …` (the build definition, .dockerignore, the context, the base image's
// metadata), cache import and export, `exporting to image`, `[auth]` and the frontend's own
// image: they run on every build, cached or not, so they would only blur the ratio. FROM is
// left out because it resolves and pulls the base image, which no build cache replaces (BuildKit
// never marks it cached); BuildKit's own `--debug-json-cache-metrics` (cmd/buildctl/
// cachemetrics.go) leaves FROM out of its cacheable steps for the same reason. A step is cached
// when BuildKit said so, executed when it started and was not cached; one that never started
// was not needed (its result was not used) and counts as cached: nothing ran for it.
// executedSeconds sums the executed steps' time from started to completed; steps of parallel
// stages overlap, so it can exceed the wall time, as CPU time does.
// The container imports this module alone (no zod, no Kubernetes client): it starts in a
// platform pod after every build, on the build's critical path.
import { BUILD_PATHS } from "../naming.ts";
import type { Parsed } from "./metadata.ts";

/** What a platform's build did with the cache. */
export interface CacheReport {
  steps: number;
  cached: number;
  executed: number;
  /** Seconds the executed steps ran, summed (one decimal). */
  executedSeconds: number;
}

/** The `cache-report` container's arguments after the image's entrypoint (node dist/cli.js). */
export function cacheReportArgs(): string[] {
  return [
    "cache-report",
    "--trace",
    BUILD_PATHS.traceFile,
    "--termination-message-path",
    BUILD_PATHS.terminationLog,
  ];
}

/** A Dockerfile instruction's vertex: `[stage-1 2/5] RUN make`, `[3/4] COPY . /src`. */
const STEP = /^\[(?:[^\]]* )?\d+\/\d+\] ([A-Z]+)\b/;

/** Whether a vertex is a build step (see above): an instruction of a stage other than FROM. */
export function isStep(name: string): boolean {
  const match = STEP.exec(name);
  return match !== null && match[1] !== "FROM";
}

interface VertexState {
  name: string;
  cached: boolean;
  /** started → completed, ms since the epoch; an open start has no completion yet. */
  runs: Map<number, number | undefined>;
}

const MAX_QUOTE = 120;
const quote = (text: string) =>
  JSON.stringify(text.length > MAX_QUOTE ? `${text.slice(0, MAX_QUOTE)}…` : text);

function time(value: unknown, what: string): number | undefined | string {
  if (value === undefined || value === null) return undefined;
  const ms = typeof value === "string" ? Date.parse(value) : Number.NaN;
  return Number.isFinite(ms) ? ms : `${what} is not a time: ${quote(String(value))}`;
}

/** The length of a union of intervals. */
function covered(intervals: [number, number][]): number {
  const sorted = [...intervals].sort((a, b) => a[0] - b[0]);
  let total = 0;
  let end = Number.NEGATIVE_INFINITY;
  for (const [from, to] of sorted) {
    const start = Math.max(from, end);
    if (to > start) total += to - start;
    end = Math.max(end, to);
  }
  return total;
}

/**
 * Folds trace lines into per-vertex state. Returns why the input is not a whole trace when it
 * is not one: a line that is not a JSON object, a vertex without a digest or name, a time that
 * does not parse.
 */
export class TraceReader {
  private readonly vertexes = new Map<string, VertexState>();
  private lines = 0;
  private problem: string | undefined;

  /** One line of the trace (without its newline). */
  add(line: string): void {
    if (this.problem !== undefined) return;
    this.lines++;
    if (line.trim() === "") return;
    let status: unknown;
    try {
      status = JSON.parse(line);
    } catch {
      this.problem = `trace line ${this.lines} is not JSON (truncated or garbled): ${quote(line)}`;
      return;
    }
    if (typeof status !== "object" || status === null || Array.isArray(status)) {
      this.problem = `trace line ${this.lines} is not a JSON object`;
      return;
    }
    const vertexes = (status as { vertexes?: unknown }).vertexes;
    if (vertexes === undefined || vertexes === null) return;
    if (!Array.isArray(vertexes)) {
      this.problem = `trace line ${this.lines}: vertexes is not a list`;
      return;
    }
    for (const vertex of vertexes) {
      const problem = this.vertex(vertex);
      if (problem) {
        this.problem = `trace line ${this.lines}: ${problem}`;
        return;
      }
    }
  }

  private vertex(value: unknown): string | undefined {
    if (typeof value !== "object" || value === null) return "a vertex is not an object";
    const v = value as Record<string, unknown>;
    if (typeof v.digest !== "string" || v.digest === "") return "a vertex has no digest";
    const state = this.vertexes.get(v.digest) ?? {
      name: "",
      cached: false,
      runs: new Map<number, number | undefined>(),
    };
    this.vertexes.set(v.digest, state);
    if (typeof v.name === "string" && v.name !== "") state.name = v.name;
    if (v.cached === true) state.cached = true;
    const started = time(v.started, "started");
    const completed = time(v.completed, "completed");
    if (typeof started === "string") return started;
    if (typeof completed === "string") return completed;
    if (started !== undefined) {
      const known = state.runs.get(started);
      state.runs.set(started, completed ?? known);
    }
    return undefined;
  }

  /** The report, or why there is none. */
  report(): Parsed<CacheReport> {
    if (this.problem !== undefined) return { ok: false, error: this.problem };
    if (this.vertexes.size === 0) return { ok: false, error: "the trace holds no vertex" };
    let steps = 0;
    let cached = 0;
    let executed = 0;
    let executedMs = 0;
    for (const [digest, state] of this.vertexes) {
      if (state.name === "") return { ok: false, error: `vertex ${digest} has no name` };
      if (!isStep(state.name)) continue;
      steps++;
      const runs = [...state.runs];
      if (state.cached || runs.length === 0) {
        cached++;
        continue;
      }
      const open = runs.find(([, to]) => to === undefined);
      if (open) {
        return {
          ok: false,
          error: `step ${quote(state.name)} started and never completed (the trace was cut)`,
        };
      }
      executed++;
      executedMs += covered(runs.map(([from, to]) => [from, to as number]));
    }
    return {
      ok: true,
      value: { steps, cached, executed, executedSeconds: Math.round(executedMs / 100) / 10 },
    };
  }
}

/** The report of a whole trace given as text. */
export function summarizeTrace(text: string): Parsed<CacheReport> {
  if (text !== "" && !text.endsWith("\n")) {
    // json.Encoder ends every line with a newline: a trace without one was cut mid-line.
    return { ok: false, error: "the trace does not end with a newline (cut mid-line)" };
  }
  const reader = new TraceReader();
  for (const line of text.split("\n")) reader.add(line);
  return reader.report();
}

/** The termination message of the `cache-report` container: the report, or why there is none. */
export function cacheReportMessage(report: Parsed<CacheReport>): string {
  return `${JSON.stringify(report.ok ? report.value : { error: report.error })}\n`;
}

const count = (value: unknown) =>
  typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 1_000_000;

/** The operator's reading of a `cache-report` termination message. */
export function parseCacheReport(message: string | undefined): Parsed<CacheReport> {
  const text = (message ?? "").trim();
  if (text === "") return { ok: false, error: "the cache report is empty" };
  let value: Record<string, unknown>;
  try {
    const parsed = JSON.parse(text) as unknown;
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
      return { ok: false, error: `the cache report is not a JSON object: ${quote(text)}` };
    value = parsed as Record<string, unknown>;
  } catch {
    return { ok: false, error: `the cache report is truncated or garbled: ${quote(text)}` };
  }
  if (typeof value.error === "string")
    return { ok: false, error: `no cache report: ${value.error}` };
  const { steps, cached, executed, executedSeconds } = value;
  if (!count(steps) || !count(cached) || !count(executed))
    return { ok: false, error: "the cache report has no whole step counts" };
  if ((steps as number) !== (cached as number) + (executed as number))
    return { ok: false, error: "the cache report's cached and executed steps do not add up" };
  if (
    typeof executedSeconds !== "number" ||
    !Number.isFinite(executedSeconds) ||
    executedSeconds < 0
  )
    return { ok: false, error: "the cache report has no executedSeconds" };
  return {
    ok: true,
    value: {
      steps: steps as number,
      cached: cached as number,
      executed: executed as number,
      executedSeconds,
    },
  };
}

/** `10/12`: cached steps over all steps, summed over the reports given (undefined if none). */
export function cachedSteps(reports: readonly (CacheReport | undefined)[]): string | undefined {
  const present = reports.filter((report): report is CacheReport => report !== undefined);
  if (present.length === 0) return undefined;
  const sum = (key: "cached" | "steps") => present.reduce((total, r) => total + r[key], 0);
  return `${sum("cached")}/${sum("steps")}`;
}
