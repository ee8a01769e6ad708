import { execFile } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { formatDuration, formatStatus } from "../../src/commands/status.ts";
import { type Kube, startKube } from "../kube/index.ts";
import type { ContainerContext } from "../kube/sim/executor.ts";
import { BUILD } from "./fixtures.ts";

const run = promisify(execFile);

describe("buildfarm status", () => {
  it("prints phases, builders, durations and digests as a table", () => {
    const text = formatStatus(
      {
        ...BUILD,
        status: {
          phase: "Succeeded",
          image: `registry.example.com/app@sha256:${"a".repeat(64)}`,
          completionTime: "2026-01-01T00:03:05Z",
          cachedSteps: "10/12",
          platforms: [
            {
              platform: "linux/amd64",
              phase: "Succeeded",
              builder: "default-amd64.builds.svc:1234",
              digest: `sha256:${"b".repeat(64)}`,
              startTime: "2026-01-01T00:00:05Z",
              completionTime: "2026-01-01T00:01:35Z",
              cache: { steps: 12, cached: 10, executed: 2, executedSeconds: 41.25 },
            },
            {
              platform: "linux/arm64",
              phase: "Succeeded",
              builder: "default-arm64.builds.svc:1234",
              digest: `sha256:${"c".repeat(64)}`,
              startTime: "2026-01-01T00:00:05Z",
              completionTime: "2026-01-01T00:02:50Z",
            },
          ],
          conditions: [
            {
              type: "Succeeded",
              status: "True",
              reason: "Succeeded",
              message: "pushed",
              lastTransitionTime: "2026-01-01T00:03:05Z",
            },
          ],
        },
      },
      new Date("2026-01-01T01:00:00Z"),
    );
    expect(text).toBe(
      [
        "ImageBuild team/app-1  pool default",
        "Phase:  Succeeded  after 3m5s",
        `Image:  registry.example.com/app@sha256:${"a".repeat(64)}`,
        "Tags:   v1",
        "Cache:  10/12 steps cached",
        "",
        "PLATFORM     PHASE      BUILDER                        DURATION  CACHED  EXECUTED    DIGEST",
        `linux/amd64  Succeeded  default-amd64.builds.svc:1234  1m30s     10/12   2 in 41.3s  sha256:bbbbbbbbbbbb…`,
        `linux/arm64  Succeeded  default-arm64.builds.svc:1234  2m45s     -       -           sha256:cccccccccccc…`,
        "",
        "Conditions: Succeeded=True (Succeeded)",
        "",
      ].join("\n"),
    );
  });

  it("shows the queue position, and a failed platform's log tail", () => {
    const queued = formatStatus(
      { ...BUILD, status: { phase: "Queued", queuePosition: 3 } },
      new Date("2026-01-01T00:00:09Z"),
    );
    expect(queued).toContain("Phase:  Queued (position 3 in the queue)  after 9s");
    expect(queued).toMatch(/linux\/arm64\s+Pending\s+-\s+-\s+-/);
    const failed = formatStatus(
      {
        ...BUILD,
        status: {
          phase: "Failed",
          platforms: [
            {
              platform: "linux/arm64",
              phase: "Failed",
              message: "#7 ERROR: process exited 3\nline two",
            },
          ],
        },
      },
      new Date(),
    );
    expect(failed).toContain("linux/arm64:\n  #7 ERROR: process exited 3\n  line two");
  });

  it("shows the check of spec.verify, and the pod a platform was routed to", () => {
    const text = formatStatus(
      {
        ...BUILD,
        status: {
          phase: "Verifying",
          platforms: [
            {
              platform: "linux/amd64",
              phase: "Succeeded",
              builder: "tcp://10-244-0-7.default-amd64-headless.builds.svc:1234",
              builderPod: "default-amd64-5d8f7c9b6-x2x4q",
            },
          ],
          verify: {
            phase: "Running",
            image: `registry.example.com/app@sha256:${"a".repeat(64)}`,
            startTime: "2026-01-01T00:01:00Z",
          },
        },
      },
      new Date("2026-01-01T00:01:12Z"),
    );
    expect(text).toContain(
      `Verify: Running  registry.example.com/app@sha256:${"a".repeat(64)}  12s`,
    );
    expect(text).toMatch(/linux\/amd64\s+Succeeded\s+default-amd64-5d8f7c9b6-x2x4q\s/);
  });

  it.each([
    [0, "0s"],
    [59.6, "1m0s"],
    [3725, "1h2m5s"],
  ])("formats %s seconds as %s", (seconds, text) => {
    expect(formatDuration(seconds)).toBe(text);
  });
});

describe("buildfarm logs and status against a cluster", () => {
  let kube: Kube;
  let kubeconfig: string;

  beforeEach(async () => {
    kube = await startKube({ namespaces: ["team"] });
    const dir = await mkdtemp(join(tmpdir(), "buildfarm-cli-"));
    kubeconfig = join(dir, "kubeconfig");
    await writeFile(kubeconfig, kube.kubeConfig({ namespace: "team" }).exportConfig());
  });
  afterEach(async () => {
    await kube.stop();
  });

  /** A build Job as the controller makes it, whose buildctl prints a line every few ms. */
  function buildJob(slug: string, lines: string[], exitCode = 0) {
    kube.kubelet?.setExecutor(async (context: ContainerContext) => {
      if (context.container.name === "buildctl") {
        for (const line of lines) {
          context.log(`${line}\n`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        return { exitCode };
      }
      return { exitCode: 0 };
    });
    kube.store.create("jobs.batch", {
      metadata: {
        name: `app-1-${slug}`,
        namespace: "team",
        labels: { "buildfarm.dev/build": "app-1" },
      },
      spec: {
        backoffLimit: 0,
        template: {
          metadata: {
            labels: {
              "buildfarm.dev/build": "app-1",
              "buildfarm.dev/platform": slug,
              "app.kubernetes.io/component": "build",
            },
          },
          spec: {
            restartPolicy: "Never",
            initContainers: [
              { name: "buildctl", image: "moby/buildkit:v0.24.0-rootless", command: ["buildctl"] },
            ],
            containers: [
              { name: "copy", image: "moby/buildkit:v0.24.0-rootless", command: ["cp"] },
            ],
          },
        },
      },
    });
  }

  function setPhase(phase: string, extra: Record<string, unknown> = {}) {
    kube.store.mutate(
      "imagebuilds.buildfarm.dev",
      "team",
      "app-1",
      (draft: Record<string, unknown>) => {
        draft.status = { phase, ...extra };
      },
      { subresource: "status" },
    );
  }

  async function seedBuild() {
    kube.store.create("imagebuilds.buildfarm.dev", {
      apiVersion: "buildfarm.dev/v1alpha1",
      kind: "ImageBuild",
      metadata: { name: "app-1", namespace: "team" },
      spec: {
        poolRef: { name: "default" },
        source: { git: { url: "https://example.com/app.git" } },
        platforms: ["linux/amd64"],
        output: { image: "registry.example.com/app" },
      },
    });
  }

  /** `buildfarm logs app-1 -w` as a child process. */
  const logsWait = () =>
    run(process.execPath, ["src/cli.ts", "logs", "app-1", "-w", "--kubeconfig", kubeconfig]);

  /** Resolves once a build pod has reached `phase`. */
  const podReached = (phase: string) =>
    kube.waitFor(
      () =>
        kube.store
          .list("pods", { namespace: "team" })
          .items.some((pod) => (pod as { status?: { phase?: string } }).status?.phase === phase),
      { timeout: 30_000 },
    );

  it("follows the pods' logs with a platform prefix and, with -w, exits 0 on success", async () => {
    await seedBuild();
    setPhase("Building");
    buildJob("amd64", ["#1 [internal] load build definition", "#5 DONE 0.3s"]);
    const cli = logsWait();
    await podReached("Succeeded");
    setPhase("Succeeded", { image: `registry.example.com/app@sha256:${"d".repeat(64)}` });
    const { stdout } = await cli;
    expect(stdout).toContain(
      "[linux/amd64] #1 [internal] load build definition\n[linux/amd64] #5 DONE 0.3s\n",
    );
    expect(stdout).toContain(`==> Succeeded: registry.example.com/app@sha256:${"d".repeat(64)}`);
  });

  it("with -w, rides out an API server that fails for a moment", async () => {
    await seedBuild();
    setPhase("Building");
    buildJob("amd64", ["#1 [internal] load build definition"]);
    kube.faults.failNext(2, { code: 503, match: { verb: "get", resource: "imagebuilds" } });
    const cli = logsWait();
    await kube.waitFor(
      () => kube.requestLog.entries({ resource: "imagebuilds", code: 503 }).length === 2,
      { timeout: 30_000 },
    );
    setPhase("Succeeded", { image: `registry.example.com/app@sha256:${"e".repeat(64)}` });
    const { stdout } = await cli;
    expect(stdout).toContain(`==> Succeeded: registry.example.com/app@sha256:${"e".repeat(64)}`);
  });

  it("exits 1 with -w when the build fails, with the reason", async () => {
    await seedBuild();
    setPhase("Building");
    buildJob(
      "amd64",
      ['#7 ERROR: process "/bin/sh -c exit 3" did not complete successfully: exit code: 3'],
      1,
    );
    const cli = logsWait();
    await podReached("Failed");
    setPhase("Failed", {
      conditions: [
        {
          type: "Succeeded",
          status: "False",
          reason: "BuildFailed",
          message: "linux/amd64: exit code 3",
          lastTransitionTime: "2026-01-01T00:00:00Z",
        },
      ],
    });
    const failure = await cli.then(
      () => undefined,
      (error: { code: number; stdout: string }) => error,
    );
    expect(failure?.code).toBe(1);
    expect(failure?.stdout).toContain("[linux/amd64] #7 ERROR");
    expect(failure?.stdout).toContain("==> Failed: linux/amd64: exit code 3");
  });

  it("status reads the build through the kubeconfig's namespace; a missing build is an error", async () => {
    await seedBuild();
    setPhase("Queued", { queuePosition: 2 });
    const { stdout } = await run(process.execPath, [
      "src/cli.ts",
      "status",
      "app-1",
      "--kubeconfig",
      kubeconfig,
    ]);
    expect(stdout).toContain("Phase:  Queued (position 2 in the queue)");
    const missing = await run(process.execPath, [
      "src/cli.ts",
      "status",
      "nope",
      "--kubeconfig",
      kubeconfig,
    ]).catch((error: { code: number; stderr: string }) => error);
    expect(missing).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("imagebuild team/nope not found"),
    });
    const usage = await run(process.execPath, ["src/cli.ts", "status"]).catch(
      (error: { code: number; stderr: string }) => error,
    );
    expect(usage).toMatchObject({
      code: 2,
      stderr: expect.stringContaining("expected exactly one ImageBuild name"),
    });
  });
});

describe("the modules a command loads", () => {
  /** The repository-relative paths and package names of every module `buildfarm <argv>` loaded. */
  async function modulesOf(argv: string[]): Promise<string[]> {
    const out = join(await mkdtemp(join(tmpdir(), "modules-")), "loaded.txt");
    await run(
      process.execPath,
      ["--import", "./test/support/record-modules.ts", "src/cli.ts", ...argv],
      { env: { ...process.env, RECORD_MODULES: out } },
    );
    const root = pathToFileURL(`${process.cwd()}/`).href;
    return (await readFile(out, "utf8"))
      .split("\n")
      .map((url) => url.replace(root, ""))
      .map((path) => path.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/)?.[1] ?? path);
  }
  // What only the operator needs: the controllers, the runtime's machinery, the x509 polyfill
  // and its library, metrics.
  const OPERATOR_ONLY = [
    /^src\/imagebuild\/(controller|setup|queues|caches|perform|status-writer)\.ts$/,
    /^src\/builderpool\//,
    /^src\/operator\.ts$/,
    /^src\/runtime\/(manager|controller|informer|leader|metrics|server)\.ts$/,
    /^src\/pki\//,
    /^(prom-client|@peculiar\/x509|pino)$/,
  ];
  const operatorModules = (loaded: string[]) =>
    loaded.filter((module) => OPERATOR_ONLY.some((pattern) => pattern.test(module)));

  it("status --help loads a client and none of the operator", async () => {
    const loaded = await modulesOf(["status", "--help"]);
    expect(loaded).toContain("src/commands/status.ts");
    expect(loaded).toContain("src/runtime/client.ts");
    expect(operatorModules(loaded)).toEqual([]);
  });

  it("cache-report, on every platform's critical path, loads the trace reader and no library", async () => {
    const loaded = await modulesOf([
      "cache-report",
      "--trace",
      "test/imagebuild/fixtures/trace-cold.jsonl",
    ]);
    expect(loaded).toContain("src/imagebuild/cache-report.ts");
    expect(loaded.filter((module) => !/^(src\/|node:)/.test(module))).toEqual([]);
  });

  it("operator --help does load the controllers (the check above can see them)", async () => {
    const loaded = await modulesOf(["operator", "--help"]);
    expect(operatorModules(loaded)).toEqual(
      expect.arrayContaining(["src/imagebuild/controller.ts", "src/builderpool/controller.ts"]),
    );
  });
});

describe("buildfarm crds", () => {
  it("refuses an unknown flag as a usage error (exit 2), and prints its usage on --help", async () => {
    const refused = await run(process.execPath, ["src/cli.ts", "crds", "--bogus"]).then(
      () => undefined,
      (error: { code: number; stderr: string }) => error,
    );
    expect(refused?.code).toBe(2);
    expect(refused?.stderr).toContain("usage: buildfarm crds");
    const { stdout } = await run(process.execPath, ["src/cli.ts", "crds", "--help"]);
    expect(stdout).toContain("usage: buildfarm crds");
  });
});
