// Real BuildKit for tests: finds buildkitd and buildctl (BUILDKIT_BIN, PATH, or where
// ../shared/buildkit/setup.sh puts them) and says in one line why a suite cannot run. Also
// PodBuildkitd, which runs a builder pod's buildkitd args under rootlesskit as UID 1000 like
// the moby/buildkit rootless image, with only the port and the mounted paths mapped (the pool
// tests use it; test/kube/sim/real runs whole pods).
import { type ChildProcess, execFile, spawn } from "node:child_process";
import {
  accessSync,
  chmodSync,
  chownSync,
  constants,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { BUILDER_PATHS, BUILDKIT_PORT } from "../../src/naming.ts";
import { REPO_ROOT } from "./files.ts";

/** Where ../shared/buildkit/setup.sh puts the binaries: $BUILDKIT_HOME/bin, as it does. */
export function setupBin(): string {
  return join(process.env.BUILDKIT_HOME || "/tmp/buildfarm-buildkit-v0.24.0", "bin");
}
/** The UID rootless buildkitd runs as (the moby/buildkit rootless image's user). */
export const BUILDKIT_UID = 1000;
const UID = BUILDKIT_UID;

/** A program on BUILDKIT_BIN, PATH or setup.sh's directory, in that order. */
export function findProgram(name: string): string | undefined {
  const dirs = [process.env.BUILDKIT_BIN, ...(process.env.PATH ?? "").split(delimiter), setupBin()];
  for (const dir of dirs) {
    if (!dir) continue;
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface BuildkitTools {
  buildkitd: string;
  buildctl: string;
  rootlesskit: string;
  setpriv?: string;
}

/** The tools, or the one-line reason the real-BuildKit tests skip. */
export function buildkitTools(): BuildkitTools | string {
  const buildkitd = findProgram("buildkitd");
  const buildctl = findProgram("buildctl");
  if (!buildkitd || !buildctl) {
    return "buildkitd/buildctl not found on BUILDKIT_BIN or PATH (run ../shared/buildkit/setup.sh)";
  }
  const rootlesskit = findProgram("rootlesskit");
  if (!rootlesskit || !findProgram("newuidmap")) return "rootlesskit/newuidmap not installed";
  const uid = process.getuid?.() ?? -1;
  if (uid === 0) {
    const setpriv = findProgram("setpriv");
    if (!setpriv) return "setpriv not found (needed to run buildkitd as UID 1000)";
    return { buildkitd, buildctl, rootlesskit, setpriv };
  }
  if (uid !== UID)
    return `running as UID ${uid}: rootless buildkitd runs as UID ${UID} (root or UID 1000 needed)`;
  return { buildkitd, buildctl, rootlesskit };
}

/**
 * Why rootless buildkitd cannot run as UID 1000 here, if it cannot: newuidmap needs a user
 * with that UID and a range of subordinate UIDs and GIDs for it (setup.sh adds both).
 */
function subordinateIdsMissing(): string | undefined {
  const read = (path: string) => {
    try {
      return readFileSync(path, "utf8");
    } catch {
      return "";
    }
  };
  const user = read("/etc/passwd")
    .split("\n")
    .map((line) => line.split(":"))
    .find((fields) => fields[2] === String(UID))?.[0];
  if (!user) return `no user with UID ${UID} (rootless buildkitd runs as it; see README)`;
  for (const file of ["/etc/subuid", "/etc/subgid"]) {
    const entries = read(file).split("\n");
    if (!entries.some((line) => line.startsWith(`${user}:`) || line.startsWith(`${UID}:`)))
      return `${file} has no range for ${user} (UID ${UID}); rootlesskit needs one`;
  }
  return undefined;
}

/** The UID and GID of the operator image (distroless nonroot), which the index Job runs as. */
const OPERATOR_UID = 65532;

/**
 * The first directory on the way to `path` that `uid`/`gid` cannot enter (or the file itself
 * when it cannot read it), with its mode; undefined when the path is reachable. Modes only:
 * the pods' processes keep no supplementary groups and no ACL is consulted.
 */
export function unreachableFor(
  path: string,
  uid: number,
  gid: number,
): { path: string; mode: string } | undefined {
  const chain: string[] = [];
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    chain.unshift(dir);
    if (dirname(dir) === dir) break;
  }
  const allowed = (at: string, bit: number) => {
    const stat = statSync(at);
    const shift = stat.uid === uid ? 6 : stat.gid === gid ? 3 : 0;
    return { ok: ((stat.mode >> shift) & bit) !== 0, mode: (stat.mode & 0o7777).toString(8) };
  };
  for (const dir of chain) {
    const { ok, mode } = allowed(dir, 1);
    if (!ok) return { path: dir, mode: mode.padStart(4, "0") };
  }
  const { ok, mode } = allowed(path, 4);
  return ok ? undefined : { path, mode: mode.padStart(4, "0") };
}

/**
 * Why the index Job's `buildfarm assemble`, run as UID 65532 from this checkout, could not load
 * src/cli.ts or its node_modules, in one line; undefined when it can.
 */
export function checkoutUnreachable(repoRoot: string): string | undefined {
  const needed = [join(repoRoot, "src", "cli.ts"), join(repoRoot, "package.json")];
  try {
    needed.push(join(realpathSync(join(repoRoot, "node_modules")), ".package-lock.json"));
  } catch {
    // no node_modules: npm ci has not run, and nothing else would work either
  }
  for (const path of needed) {
    let blocked: ReturnType<typeof unreachableFor>;
    try {
      blocked = unreachableFor(path, OPERATOR_UID, OPERATOR_UID);
    } catch {
      continue;
    }
    if (blocked)
      return `the index Job runs buildfarm assemble as UID ${OPERATOR_UID} from this checkout, and ${blocked.path} is mode ${blocked.mode} (it needs o+x; clone into a directory others can enter)`;
  }
  return undefined;
}

/** Whether the aarch64 binfmt handler is registered (linux/arm64 RUN steps under QEMU). */
export function hasArm64Emulation(): boolean {
  if (process.arch === "arm64") return true;
  try {
    accessSync("/proc/sys/fs/binfmt_misc/qemu-aarch64", constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The tools, or undefined after printing the one line saying why `suite` skips. Under CI a
 * missing piece fails instead: .ci/run runs setup.sh, so its absence is a broken setup.
 */
export function buildkitOrSkip(
  suite: string,
  needs: { arm64?: boolean; root?: boolean } = {},
): BuildkitTools | undefined {
  const tools = buildkitTools();
  let reason = typeof tools === "string" ? tools : undefined;
  if (!reason && needs.root && process.getuid?.() !== 0)
    reason = "not root: the pods run as their own UIDs (1000 and 65532), which needs root";
  if (!reason) reason = subordinateIdsMissing();
  if (!reason && needs.root) reason = checkoutUnreachable(REPO_ROOT);
  if (!reason && needs.arm64 && !hasArm64Emulation())
    reason =
      "no aarch64 binfmt handler for linux/arm64 RUN steps (run ../shared/buildkit/setup.sh)";
  if (!reason) return tools as BuildkitTools;
  const ci = process.env.CI;
  if (ci && ci !== "false" && ci !== "0") throw new Error(`CI is set and ${suite}: ${reason}`);
  process.stderr.write(`skipping ${suite}: ${reason}\n`);
  return undefined;
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (typeof address !== "object" || !address) throw new Error("no port");
  return address.port;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(
  file: string,
  args: readonly string[],
  env?: NodeJS.ProcessEnv,
): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      file,
      [...args],
      { env: env ?? process.env, timeout: 20_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** A buildkitd started from a builder pod's container args. */
export class PodBuildkitd {
  readonly dir: string;
  readonly port: number;
  readonly paths: { certs: string; config: string; state: string; socket: string };
  private process?: ChildProcess;
  private log = "";

  private constructor(dir: string, port: number) {
    this.dir = dir;
    this.port = port;
    this.paths = {
      certs: join(dir, "certs"),
      config: join(dir, "config"),
      state: join(dir, "state"),
      socket: `unix://${join(dir, "run", "buildkit", "buildkitd.sock")}`,
    };
  }

  /** Lays out the pod's mounted files: each volume a directory of files. */
  static async prepare(files: {
    certs: Record<string, string>;
    config: Record<string, string>;
  }): Promise<PodBuildkitd> {
    const dir = mkdtempSync(join(tmpdir(), "buildfarm-pool-buildkitd-"));
    const daemon = new PodBuildkitd(dir, await freePort());
    for (const sub of ["certs", "config", "state", "run", "home", "rk"]) mkdirSync(join(dir, sub));
    for (const [name, text] of Object.entries(files.certs))
      writeFileSync(join(daemon.paths.certs, name), text, { mode: 0o600 });
    for (const [name, text] of Object.entries(files.config))
      writeFileSync(join(daemon.paths.config, name), text);
    if (process.getuid?.() === 0) chownTree(dir, UID);
    chmodSync(dir, 0o755);
    return daemon;
  }

  /** The pod's path and port, mapped to this machine. */
  map(arg: string): string {
    const replacements: [string, string][] = [
      [BUILDER_PATHS.socket, this.paths.socket],
      [`tcp://:${BUILDKIT_PORT}`, `tcp://:${this.port}`],
      [BUILDER_PATHS.certs, this.paths.certs],
      [BUILDER_PATHS.config, this.paths.config],
      [BUILDER_PATHS.state, this.paths.state],
    ];
    for (const [from, to] of replacements)
      if (arg.startsWith(from)) return to + arg.slice(from.length);
    return arg;
  }

  /** Starts `rootlesskit buildkitd <args>` (the rootless image's entrypoint) as UID 1000. */
  start(tools: BuildkitTools, args: readonly string[]): void {
    const env = {
      PATH: `${join(tools.buildkitd, "..")}${delimiter}${process.env.PATH ?? ""}`,
      // What the rootless image sets; BuildKit picks rootless defaults from USER and XDG_RUNTIME_DIR.
      USER: "user",
      HOME: join(this.dir, "home"),
      XDG_RUNTIME_DIR: join(this.dir, "run"),
    };
    const command = [
      tools.rootlesskit,
      "--state-dir",
      join(this.dir, "rk", "state"),
      tools.buildkitd,
      ...args.map((arg) => this.map(arg)),
    ];
    const [file, argv] = tools.setpriv
      ? [tools.setpriv, [`--reuid=${UID}`, `--regid=${UID}`, "--init-groups", ...command]]
      : [command[0] as string, command.slice(1)];
    const child = spawn(file, argv, { env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout?.on("data", (chunk) => {
      this.log += chunk;
    });
    child.stderr?.on("data", (chunk) => {
      this.log += chunk;
    });
    this.process = child;
  }

  /** Runs the probe command until it succeeds or the deadline passes. */
  async waitReady(
    probe: readonly string[],
    buildctl: string,
    deadlineMs = 30_000,
  ): Promise<RunResult> {
    const deadline = Date.now() + deadlineMs;
    const argv = probe.slice(1).map((arg) => this.map(arg));
    for (;;) {
      const result = await run(buildctl, argv);
      if (result.code === 0) return result;
      if (this.process?.exitCode !== null || Date.now() > deadline) {
        throw new Error(
          `buildkitd did not become ready: ${result.stderr}\n--- buildkitd log ---\n${this.log.slice(-4000)}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  get output(): string {
    return this.log;
  }

  async stop(): Promise<void> {
    const child = this.process;
    if (child?.pid && child.exitCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      process.kill(-child.pid, "SIGTERM");
      const timer = setTimeout(() => child.pid && process.kill(-child.pid, "SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function chownTree(path: string, uid: number): void {
  chownSync(path, uid, uid);
  if (statSync(path).isDirectory())
    for (const entry of readdirSync(path)) chownTree(join(path, entry), uid);
}
