// `npm run sandbox` (e2e/sandbox.ts) as a user runs it: a child process, its terminal output,
// the kubeconfig it writes used by the real kubectl 1.33 and the buildfarm CLI while it stays
// up with --keep, Ctrl-C, and every process it started gone afterwards; then a second run.
// Without BuildKit it exits 1 naming what is missing (that part runs on any machine).
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  layerBinary,
  type PrerequisiteProbe,
  realClusterInputs,
  sandboxPrerequisites,
} from "../local-cluster/index.ts";
import { REPO_ROOT } from "../support/files.ts";

const execFileAsync = promisify(execFile);
const SANDBOX = join(REPO_ROOT, "e2e", "sandbox.ts");
/** Generous: a run takes seconds here, but the machine is shared and arm64 runs under QEMU. */
const RUN_TIMEOUT = 300_000;

interface Run {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number>;
  /** Resolves once the output holds `text`. */
  waitFor(text: string): Promise<void>;
}

function startSandbox(args: string[], env: NodeJS.ProcessEnv = process.env): Run {
  const child = spawn(process.execPath, [SANDBOX, ...args], {
    cwd: REPO_ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const waiters: { text: string; resolve: () => void }[] = [];
  const take = (chunk: Buffer) => {
    output += chunk.toString("utf8");
    for (const waiter of waiters.filter((w) => output.includes(w.text))) {
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve();
    }
  };
  child.stdout?.on("data", take);
  child.stderr?.on("data", take);
  const exited = new Promise<number>((resolve) =>
    child.once("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1))),
  );
  return {
    child,
    output: () => output,
    exited,
    waitFor: (text) =>
      new Promise<void>((resolve, reject) => {
        if (output.includes(text)) return resolve();
        waiters.push({ text, resolve });
        void exited.then((code) =>
          reject(new Error(`sandbox exited ${code} before printing ${text}:\n${output}`)),
        );
      }),
  };
}

/** The process and its descendants, each with its start time (a reused pid is another process). */
function processTree(root: number): Map<number, string> {
  const parents = new Map<number, number[]>();
  const starts = new Map<number, string>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ppid = Number(fields[1]);
      parents.set(ppid, [...(parents.get(ppid) ?? []), Number(entry)]);
      starts.set(Number(entry), fields[19] ?? "");
    } catch {
      // gone meanwhile
    }
  }
  const tree = new Map<number, string>();
  const queue = [root];
  while (queue.length) {
    const pid = queue.shift() as number;
    tree.set(pid, starts.get(pid) ?? "");
    queue.push(...(parents.get(pid) ?? []));
  }
  return tree;
}

/**
 * Whether the process still runs: the same pid with the same start time, and not a zombie (one
 * that has exited and waits only for its new parent, init, to reap it: under load that can lag
 * behind the sandbox's exit, and it holds nothing but its pid).
 */
function alive(pid: number, start: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[19] === start && fields[0] !== "Z";
  } catch {
    return false;
  }
}

/** What a left-over process is, for the failure message: its stat line (pid, comm, state, ...). */
function describeProcess(pid: number): string {
  try {
    return `${readFileSync(`/proc/${pid}/stat`, "utf8").split(" ").slice(0, 4).join(" ")} ${readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").trim()}`;
  } catch {
    return `${pid} (gone)`;
  }
}

const listening = (host: string, port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host, port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });

describe("npm run sandbox without BuildKit", () => {
  it("exits 1 naming buildkitd and buildctl, with the release tarball to install", async () => {
    const path = (process.env.PATH ?? "")
      .split(delimiter)
      .filter(
        (dir) => dir && !existsSync(join(dir, "buildkitd")) && !existsSync(join(dir, "buildctl")),
      )
      .join(delimiter);
    const run = startSandbox([], {
      ...process.env,
      PATH: path,
      BUILDKIT_BIN: "/nonexistent/buildkit/bin",
      BUILDKIT_HOME: "/nonexistent/buildkit",
    });
    expect(await run.exited).toBe(1);
    const output = run.output();
    expect(output).toContain("The sandbox cannot run here. Missing:");
    expect(output).toContain("BuildKit v0.24.0 (buildkitd, buildctl)");
    expect(output).toContain("/nonexistent/buildkit/bin");
    expect(output).toContain(
      "https://github.com/moby/buildkit/releases/download/v0.24.0/buildkit-v0.24.0.linux-",
    );
    // Nothing was started: the checks come first.
    expect(output).not.toContain("starting the API server");
  });
});

describe("the sandbox's checklist", () => {
  const complete: PrerequisiteProbe = {
    uid: 0,
    arch: "x64",
    find: (program) => `/usr/bin/${program}`,
    exists: () => true,
    read: (path) =>
      path === "/etc/passwd"
        ? "root:x:0:0::/root:/bin/sh\nbuildkit:x:1000:1000::/home:/bin/sh\n"
        : "buildkit:100000:65536\n",
    setupBin: "/tmp/buildfarm-buildkit-v0.24.0/bin",
    setupScript: "../shared/buildkit/setup.sh",
  };
  const without = (programs: string[], change: Partial<PrerequisiteProbe> = {}) => ({
    ...complete,
    find: (program: string) => (programs.includes(program) ? undefined : `/usr/bin/${program}`),
    ...change,
  });

  it("is empty on a machine that has everything", () => {
    expect(sandboxPrerequisites(complete)).toEqual([]);
  });

  it.each([
    [
      "buildkitd",
      without(["buildkitd"]),
      "BuildKit v0.24.0 (buildkitd)",
      "sudo bash ../shared/buildkit/setup.sh",
    ],
    ["rootlesskit", without(["rootlesskit"]), "rootlesskit", "sudo apt-get install -y rootlesskit"],
    ["newuidmap", without(["newuidmap"]), "newuidmap", "sudo apt-get install -y uidmap"],
    ["setpriv", without(["setpriv"]), "setpriv", "sudo apt-get install -y util-linux"],
    [
      "docker-registry",
      without(["docker-registry"]),
      "docker-registry",
      "sudo apt-get install -y docker-registry",
    ],
    ["git", without(["git"]), "git", "sudo apt-get install -y git"],
    ["root", without([], { uid: 1000 }), "root", 'sudo env "PATH=$PATH" npm run sandbox'],
    [
      "QEMU",
      without([], { exists: (path: string) => !path.endsWith("qemu-aarch64") }),
      "no /proc/sys/fs/binfmt_misc/qemu-aarch64",
      "sudo apt-get install -y qemu-user-static binfmt-support",
    ],
    [
      "subordinate IDs",
      without([], {
        read: (path: string) => (path === "/etc/passwd" ? "buildkit:x:1000:1000::/:/bin/sh\n" : ""),
      }),
      "/etc/subuid has no range for buildkit",
      "echo buildkit:100000:65536 | sudo tee -a /etc/subuid",
    ],
  ])("names %s and how to install it", (_, probe, missing, install) => {
    const problems = sandboxPrerequisites(probe);
    expect(problems.map((p) => p.missing).join("\n")).toContain(missing);
    expect(problems.flatMap((p) => p.install)).toContain(install);
  });

  it("offers BuildKit's release tarball where setup.sh is not beside the repository", () => {
    const { setupScript: _, ...probe } = without(["buildctl"]);
    const [problem] = sandboxPrerequisites(probe);
    expect(problem?.install[0]).toContain(
      "buildkit-v0.24.0.linux-amd64.tar.gz | sudo tar -xz -C /usr/local",
    );
  });
});

const SUITE = "npm run sandbox end to end (test/e2e/sandbox.test.ts)";
const inputs = await realClusterInputs(SUITE);

describe.skipIf(!inputs)(SUITE, () => {
  const dirs: string[] = [];
  const runs: Run[] = [];
  afterAll(async () => {
    for (const run of runs) if (run.child.exitCode === null) run.child.kill("SIGTERM");
    await Promise.all(runs.map((run) => run.exited));
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  /** The summary lines: the index and, per platform, its digest and the line its RUN wrote. */
  const summary = (output: string) => ({
    index: /^Index {2}127\.0\.0\.1:\d+\/hello@(sha256:[0-9a-f]{64})$/m.exec(output)?.[1],
    amd64: /^ {2}linux\/amd64 +(sha256:[0-9a-f]{64}) {2}RUN wrote: (.*)$/m.exec(output)?.slice(1),
    arm64: /^ {2}linux\/arm64 +(sha256:[0-9a-f]{64}) {2}RUN wrote: (.*)$/m.exec(output)?.slice(1),
  });

  it(
    "builds both platforms, stays up with --keep for kubectl and buildfarm, and stops everything on Ctrl-C",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "buildfarm-sandbox-test-"));
      dirs.push(dir);
      const run = startSandbox(["--keep", "--dir", dir]);
      runs.push(run);
      await run.waitFor("Sandbox up; Ctrl-C stops it.");
      const output = run.output();
      const found = summary(output);
      expect(found.index).toBeDefined();
      expect(found.amd64?.[1]).toBe("hello from x86_64");
      expect(found.arm64?.[1]).toBe("hello from aarch64");
      expect(found.amd64?.[0]).not.toBe(found.arm64?.[0]);
      // buildfarm logs -w streamed both platforms' buildctl progress and the index Job.
      expect(output).toMatch(/^\[linux\/amd64\] #\d+ .*RUN echo/m);
      expect(output).toMatch(/^\[linux\/arm64\] #\d+ .*RUN echo/m);
      expect(output).toContain("==> Succeeded: 127.0.0.1:");

      const kubeconfig = join(dir, "kubeconfig");
      // A cache of its own: kubectl keeps discovery per host:port, and loopback ports are reused.
      const env = {
        ...process.env,
        KUBECONFIG: kubeconfig,
        KUBECACHEDIR: join(dir, "kubectl-cache"),
      };
      const kubectl = (...args: string[]) => execFileAsync(layerBinary("kubectl"), args, { env });
      // A protobuf body (kubectl create namespace) and the CRs' printer and describe paths.
      await kubectl("create", "namespace", "from-kubectl");
      expect((await kubectl("get", "namespace", "from-kubectl", "-o", "name")).stdout.trim()).toBe(
        "namespace/from-kubectl",
      );
      expect(
        (await kubectl("get", "ib", "hello", "-o", "jsonpath={.status.phase} {.status.digest}"))
          .stdout,
      ).toBe(`Succeeded ${found.index}`);
      const describe = (await kubectl("describe", "bp", "sandbox")).stdout;
      expect(describe).toContain("builders ready: amd64 1/1, arm64 1/1");
      const status = await execFileAsync(
        process.execPath,
        [join(REPO_ROOT, "src", "cli.ts"), "status", "hello", "--kubeconfig", kubeconfig],
        { env },
      );
      expect(status.stdout).toMatch(/^linux\/amd64 +Succeeded/m);
      expect(status.stdout).toMatch(/^linux\/arm64 +Succeeded/m);
      // kubectl get ib -w: the build's row arrives on the watch.
      const watch = spawn(layerBinary("kubectl"), ["get", "ib", "-w"], { env });
      const row = await new Promise<string>((resolve, reject) => {
        let text = "";
        watch.stdout.on("data", (chunk: Buffer) => {
          text += chunk.toString("utf8");
          if (/^hello\b.*\n/m.test(text)) resolve(text);
        });
        watch.once("exit", (code) =>
          reject(new Error(`kubectl get ib -w exited ${code}: ${text}`)),
        );
      });
      // The CRD's printer columns, printed on the server's side as kube-apiserver does.
      expect(row).toMatch(/^NAME +PHASE +IMAGE +DIGEST +AGE$/m);
      expect(row).toMatch(
        new RegExp(`^hello +Succeeded +127\\.0\\.0\\.1:\\d+/hello +${found.index}`, "m"),
      );
      watch.kill("SIGTERM");

      const server = new URL(
        (parse(readFileSync(kubeconfig, "utf8")) as { clusters: { cluster: { server: string } }[] })
          .clusters[0]!.cluster.server,
      );
      const registryPort = Number(/127\.0\.0\.1:(\d+)\/hello@/.exec(output)?.[1]);
      const tree = processTree(run.child.pid as number);
      // buildkitd per builder, docker-registry, git daemon, at least.
      expect(tree.size).toBeGreaterThanOrEqual(5);
      run.child.kill("SIGINT");
      expect(await run.exited).toBe(0);
      const left = [...tree].filter(([pid, start]) => alive(pid, start));
      expect(left.map(([pid]) => describeProcess(pid))).toEqual([]);
      expect(await listening(server.hostname, Number(server.port))).toBe(false);
      expect(await listening("127.0.0.1", registryPort)).toBe(false);
    },
    RUN_TIMEOUT,
  );

  it(
    "stops everything it started when interrupted mid-build, and exits 130",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "buildfarm-sandbox-test-"));
      dirs.push(dir);
      const run = startSandbox(["--dir", dir]);
      runs.push(run);
      // buildctl of a platform is running: builders, Jobs, registry and git daemon are up.
      await run.waitFor("[linux/arm64] #1 ");
      const tree = processTree(run.child.pid as number);
      expect(tree.size).toBeGreaterThanOrEqual(5);
      run.child.kill("SIGINT");
      expect(await run.exited, run.output()).toBe(130);
      expect(run.output()).toContain("SIGINT: stopping everything the sandbox started");
      const left = [...tree].filter(([pid, start]) => alive(pid, start));
      expect(left.map(([pid]) => describeProcess(pid))).toEqual([]);
    },
    RUN_TIMEOUT,
  );

  it(
    "runs again: a second run builds and exits 0",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "buildfarm-sandbox-test-"));
      dirs.push(dir);
      const run = startSandbox(["--dir", dir]);
      runs.push(run);
      expect(await run.exited, run.output()).toBe(0);
      const found = summary(run.output());
      expect(found.amd64?.[1]).toBe("hello from x86_64");
      expect(found.arm64?.[1]).toBe("hello from aarch64");
      expect(run.output()).toContain("stopping everything the sandbox started");
    },
    RUN_TIMEOUT,
  );
});
