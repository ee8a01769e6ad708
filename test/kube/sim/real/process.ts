// A container's process on this machine: run as the pod's user (setpriv, when the harness is
// root), in its own process group, output streamed to the container log, stopped with SIGTERM
// and then SIGKILL like a runtime stopping a container.
import { spawn } from "node:child_process";
import { constants } from "node:os";

export interface Identity {
  uid: number;
  gid: number;
  /** Supplementary groups: the pod's fsGroup and supplementalGroups. */
  groups: number[];
  /** allowPrivilegeEscalation: false sets no_new_privs, as the runtime does. */
  noNewPrivs: boolean;
}

export interface ProcessSpec {
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  identity: Identity;
  /** stdout and stderr, in arrival order. */
  output(text: string): void;
  signal?: AbortSignal;
  /** How long after SIGTERM before SIGKILL (the pod's grace period, capped). */
  graceMs?: number;
}

const SETPRIV = "/usr/bin/setpriv";

/** The argv that runs `file args` as the identity (directly when the harness is not root). */
export function asUser(file: string, args: string[], identity: Identity): [string, string[]] {
  if (process.getuid?.() !== 0) return [file, args];
  return [
    SETPRIV,
    [
      `--reuid=${identity.uid}`,
      `--regid=${identity.gid}`,
      identity.groups.length ? `--groups=${identity.groups.join(",")}` : "--clear-groups",
      ...(identity.noNewPrivs ? ["--no-new-privs"] : []),
      "--",
      file,
      ...args,
    ],
  ];
}

/** Runs the process to its end; resolves with its exit code (128 + signal when killed). */
export function runProcess(spec: ProcessSpec): { pid?: number; exited: Promise<number> } {
  const [file, args] = asUser(spec.file, spec.args, spec.identity);
  const child = spawn(file, args, {
    env: spec.env,
    cwd: spec.cwd,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout?.setEncoding("utf8").on("data", (text: string) => spec.output(text));
  child.stderr?.setEncoding("utf8").on("data", (text: string) => spec.output(text));
  const kill = (signal: NodeJS.Signals) => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  };
  let timer: NodeJS.Timeout | undefined;
  const onAbort = () => {
    kill("SIGTERM");
    timer = setTimeout(() => kill("SIGKILL"), spec.graceMs ?? 10_000);
  };
  if (spec.signal?.aborted) onAbort();
  else spec.signal?.addEventListener("abort", onAbort, { once: true });
  const exited = new Promise<number>((resolve) => {
    child.once("error", (error) => {
      spec.output(`${error.message}\n`);
      resolve(128);
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      spec.signal?.removeEventListener("abort", onAbort);
      // The process group may outlive its leader (rootlesskit's children): end it too.
      kill("SIGKILL");
      resolve(code ?? 128 + (signal ? (constants.signals[signal] ?? 9) : 9));
    });
  });
  return { pid: child.pid, exited };
}
