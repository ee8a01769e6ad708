// The cache report: buildctl's --trace (real ones, recorded from BuildKit v0.24.0) summed up into
// steps cached and executed, the cache-report container's message, and the operator's reading.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PlatformStatus } from "../../src/api/imagebuild-status.ts";
import type { ImageBuild } from "../../src/api/resources.ts";
import { readTrace } from "../../src/commands/cache-report.ts";
import {
  cachedSteps,
  cacheReportMessage,
  isStep,
  parseCacheReport,
  summarizeTrace,
} from "../../src/imagebuild/cache-report.ts";
import { BuildMetrics } from "../../src/imagebuild/metrics.ts";
import { TRACE_CACHED, TRACE_COLD } from "./player.ts";

const vertex = (digest: string, name: string, fields: Record<string, unknown> = {}) =>
  JSON.stringify({ vertexes: [{ digest, name, ...fields }] });
const at = (second: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString();
const lines = (...items: string[]) => `${items.join("\n")}\n`;

describe("which vertexes are steps", () => {
  it.each([
    ["[a 2/3] RUN make", true],
    ["[stage-1 3/3] COPY --from=a /one /one", true],
    ["[2/4] WORKDIR /src", true],
    ["[linux/arm64 build 5/9] ADD https://example.com/x /x", true],
    ["[a 1/3] FROM 127.0.0.1:5000/base:busybox@sha256:f540", false],
    ["[1/2] FROM docker.io/library/alpine:3.20", false],
    ["[internal] load build definition from Dockerfile", false],
    ["[internal] load metadata for 127.0.0.1:5000/base:busybox", false],
    ["[auth] library/alpine:pull token for registry-1.docker.io", false],
    ["importing cache manifest from 127.0.0.1:5000/x:cache", false],
    ["exporting to image", false],
    ["exporting cache to registry", false],
    ["resolve image config for docker-image://docker.io/docker/dockerfile:1", false],
  ])("%s: %s", (name, step) => {
    expect(isStep(name)).toBe(step);
  });
});

describe("a trace real buildctl wrote", () => {
  it("of a first build: every step executed, with the seconds they ran", () => {
    expect(summarizeTrace(TRACE_COLD)).toEqual({
      ok: true,
      value: { steps: 4, cached: 0, executed: 4, executedSeconds: 1.1 },
    });
  });

  it("of the same build on a fresh builder from the registry cache: every step cached", () => {
    expect(summarizeTrace(TRACE_CACHED)).toEqual({
      ok: true,
      value: { steps: 4, cached: 4, executed: 0, executedSeconds: 0 },
    });
  });
});

describe("summing up", () => {
  it("counts a vertex once however often it is reported, and its time once however it overlaps", () => {
    const report = summarizeTrace(
      lines(
        vertex("sha256:1", "[a 1/2] RUN x"),
        vertex("sha256:1", "[a 1/2] RUN x", { started: at(0) }),
        vertex("sha256:1", "[a 1/2] RUN x", { started: at(0), completed: at(4) }),
        // A second run interval overlapping the first counts only what it adds.
        vertex("sha256:1", "[a 1/2] RUN x", { started: at(2), completed: at(6) }),
        vertex("sha256:2", "[a 2/2] COPY y /y", { started: at(6), completed: at(6), cached: true }),
        vertex("sha256:3", "[internal] load build context", { started: at(0), completed: at(9) }),
        JSON.stringify({ statuses: [{ id: "x", vertex: "sha256:1" }], logs: [] }),
      ),
    );
    expect(report).toEqual({
      ok: true,
      value: { steps: 2, cached: 1, executed: 1, executedSeconds: 6 },
    });
  });

  it("counts a step BuildKit never started as cached: nothing ran for it", () => {
    expect(summarizeTrace(lines(vertex("sha256:1", "[a 1/2] RUN x")))).toEqual({
      ok: true,
      value: { steps: 1, cached: 1, executed: 0, executedSeconds: 0 },
    });
  });

  it.each([
    ["an empty trace", "", /holds no vertex/],
    ["a trace cut mid-line", TRACE_COLD.slice(0, TRACE_COLD.length - 40), /cut mid-line/],
    ["a line that is not JSON", lines(vertex("sha256:1", "[a 1/2] RUN x"), "{oops"), /not JSON/],
    ["a JSON line that is not an object", lines("[1,2]"), /not a JSON object/],
    ["vertexes that are not a list", lines('{"vertexes":{}}'), /not a list/],
    ["a vertex without digest", lines('{"vertexes":[{"name":"[a 1/1] RUN x"}]}'), /no digest/],
    [
      "a time that does not parse",
      lines(vertex("sha256:1", "[a 1/1] RUN x", { started: "soon" })),
      /not a time/,
    ],
    [
      "a step started and never completed",
      lines(vertex("sha256:1", "[a 1/1] RUN x", { started: at(1) })),
      /never completed/,
    ],
  ])("gives no report for %s, saying why", (_, text, why) => {
    const report = summarizeTrace(text);
    expect(report.ok).toBe(false);
    expect(report.ok ? "" : report.error).toMatch(why);
  });
});

describe("reading the trace file as a stream", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "buildfarm-trace-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("gives what summarizeTrace gives, across chunk boundaries of a long trace", async () => {
    // Logs fill most of a real trace; 2,000 copies of the cold trace make it many chunks long.
    const long = TRACE_COLD.repeat(2000);
    await writeFile(join(dir, "long.json"), long);
    expect(long.length).toBeGreaterThan(20 * 1024 * 1024);
    expect(await readTrace(join(dir, "long.json"))).toEqual(summarizeTrace(TRACE_COLD));
  });

  it("gives no report for a missing, empty or cut file", async () => {
    await writeFile(join(dir, "empty.json"), "");
    await writeFile(join(dir, "cut.json"), TRACE_COLD.slice(0, 5000));
    for (const [file, why] of [
      ["missing.json", /cannot read the trace/],
      ["empty.json", /empty/],
      ["cut.json", /cut mid-line|not JSON/],
    ] as const) {
      const report = await readTrace(join(dir, file));
      expect(report.ok ? "a report" : report.error).toMatch(why);
    }
  });
});

describe("the termination message and the operator's reading of it", () => {
  it("round-trips a report, and carries why there is none", () => {
    const report = summarizeTrace(TRACE_COLD);
    expect(parseCacheReport(cacheReportMessage(report))).toEqual(report);
    const none = parseCacheReport(cacheReportMessage({ ok: false, error: "the trace is empty" }));
    expect(none).toEqual({ ok: false, error: "no cache report: the trace is empty" });
    expect(cacheReportMessage(report).length).toBeLessThan(200);
  });

  it.each([
    ["absent (a Job an older operator made)", undefined, /empty/],
    ["cut by the kubelet", '{"steps":4,"cac', /truncated or garbled/],
    [
      "with counts that do not add up",
      '{"steps":4,"cached":1,"executed":1,"executedSeconds":1}',
      /add up/,
    ],
    [
      "with a negative count",
      '{"steps":-1,"cached":0,"executed":-1,"executedSeconds":0}',
      /whole step/,
    ],
    ["without seconds", '{"steps":1,"cached":1,"executed":0}', /executedSeconds/],
  ])("refuses a message %s", (_, message, why) => {
    const parsed = parseCacheReport(message);
    expect(parsed.ok ? "a report" : parsed.error).toMatch(why);
  });

  it("sums cached over all steps of the platforms that reported", () => {
    const report = (cached: number, steps: number) => ({
      steps,
      cached,
      executed: steps - cached,
      executedSeconds: 1,
    });
    expect(cachedSteps([report(3, 5), undefined, report(7, 7)])).toBe("10/12");
    expect(cachedSteps([undefined])).toBeUndefined();
  });
});

describe("buildfarm_build_steps_total", () => {
  it("counts a pushed platform's steps once, by pool, architecture and result", async () => {
    const metrics = new BuildMetrics(new Registry());
    const pushed: PlatformStatus = {
      platform: "linux/arm64",
      architecture: "arm64",
      phase: "Succeeded",
      digest: `sha256:${"a".repeat(64)}`,
      cache: { steps: 5, cached: 3, executed: 2, executedSeconds: 12.5 },
    };
    const build = {
      metadata: { name: "b", namespace: "apps" },
      status: { phase: "Building", platforms: [{ ...pushed, phase: "Running" }] },
    } as unknown as ImageBuild;
    metrics.observeTransition(build, { phase: "Building", platforms: [pushed] }, "builds/farm");
    // Written again (a later transition): the platform was already Succeeded, nothing counts.
    const again = { ...build, status: { phase: "Building", platforms: [pushed] } } as ImageBuild;
    metrics.observeTransition(again, { phase: "Assembling", platforms: [pushed] }, "builds/farm");
    const series = (await metrics.steps.get()).values.map(
      (v) => `${v.labels.pool} ${v.labels.architecture} ${v.labels.result} ${v.value}`,
    );
    expect(series.sort()).toEqual(["builds/farm arm64 cached 3", "builds/farm arm64 executed 2"]);
  });
});
