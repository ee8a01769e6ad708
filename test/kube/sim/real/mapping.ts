// Every mapping the real-process executor makes between a pod and this machine, in one module.
// Pods here are host processes: no mount namespace, no network namespace, no cluster DNS. Each
// mapping below stands in for one of those, and for nothing else: an argument the operator got
// wrong is carried over as it is (a path outside the pod's mounts lands in the container's own
// empty root, a listen address the Service cannot reach stays unreachable), so the test fails
// the way the pod would fail in a cluster. TLS server names, certificates and registry
// references are never touched.
import { chmod, mkdtemp, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import type { ContainerContext } from "../executor.ts";

/** The cluster domain the pods' DNS search path ends in. */
export const CLUSTER_DOMAIN = "cluster.local";

// ---------------------------------------------------------------------------------------------
// Mapping 1: files. A path inside the container → the host path behind it.
// In a pod, volumes are bind-mounted at their mountPath and the rest is the image's root
// filesystem. Here `ctx.hostPath` resolves a path through the container's volumeMounts (subPath
// included), the terminationMessagePath, or else the container's private root directory. The
// private root is reached through a short symlink in the temporary directory, because a unix
// socket path must fit in 108 bytes (sun_path) and the sandbox's own path is longer: buildkitd's
// socket /run/user/1000/buildkit/buildkitd.sock and rootlesskit's state directory (under
// XDG_RUNTIME_DIR) live in the container's root.
// ---------------------------------------------------------------------------------------------
export class ContainerFiles {
  private readonly context: ContainerContext;
  private readonly aliasDir: string;
  private readonly rootAlias: string;

  private constructor(context: ContainerContext, aliasDir: string) {
    this.context = context;
    this.aliasDir = aliasDir;
    this.rootAlias = join(aliasDir, "r");
  }

  static async create(context: ContainerContext): Promise<ContainerFiles> {
    const dir = await mkdtemp(join(tmpdir(), "bfk-"));
    await chmod(dir, 0o755);
    await symlink(context.rootDir, join(dir, "r"));
    return new ContainerFiles(context, dir);
  }

  /** The host path standing for an absolute in-container path. */
  path(containerPath: string): string {
    const host = this.context.hostPath(containerPath);
    const root = this.context.rootDir;
    if (host === root) return this.rootAlias;
    if (host.startsWith(`${root}/`)) return this.rootAlias + host.slice(root.length);
    return host;
  }

  /** `unix://<path>` with the path mapped; anything else unchanged. */
  unixAddress(address: string): string {
    return address.startsWith("unix://")
      ? `unix://${this.path(address.slice("unix://".length))}`
      : address;
  }

  async dispose(): Promise<void> {
    await rm(this.aliasDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Mapping 2: programs. A program of the image → the host binary of the same release.
// buildkitd, buildctl and rootlesskit are the BuildKit release binaries (v0.24.0, the image's
// tag); `cp` is the host's (busybox cp in the image: both open the destination in place);
// the operator image's /nodejs/bin/node /app/dist/cli.js is this Node running src/cli.ts, the
// source dist/ is compiled from. Unknown programs do not run (the container fails to start).
// ---------------------------------------------------------------------------------------------
export interface HostPrograms {
  buildkitd: string;
  buildctl: string;
  rootlesskit: string;
  /** The repository's src/cli.ts. */
  cli: string;
}

export function hostProgram(name: string, programs: HostPrograms): string | undefined {
  const base = posix.basename(name);
  switch (base) {
    case "buildkitd":
    case "buildctl":
    case "rootlesskit":
      return programs[base];
    case "cp":
      return "/bin/cp";
    case "node":
      return process.execPath;
    default:
      return undefined;
  }
}

/** The operator image's entry script (dist/cli.js) → the TypeScript source it is built from. */
export function hostScript(path: string, programs: HostPrograms): string | undefined {
  return path === "/app/dist/cli.js" ? programs.cli : undefined;
}

// ---------------------------------------------------------------------------------------------
// Mapping 3: listen addresses. A pod's `tcp://[host]:port` → a loopback port of this machine.
// Every pod has its own network namespace and IP; here all processes share the host's. A
// listener on every address of the pod (empty host, 0.0.0.0, [::]) gets a free loopback port
// that the pod's IP and Services reach (mapping 4). A listener on the pod's own loopback
// (127.0.0.1, localhost, [::1]) gets one too, reachable only from the same pod, as in a pod.
// ---------------------------------------------------------------------------------------------
export type PortScope = "pod" | "loopback";

export interface PortBinding {
  hostPort: number;
  scope: PortScope;
}

const EVERY_ADDRESS = new Set(["", "0.0.0.0", "[::]", "::"]);
const POD_LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);

/** Splits `tcp://host:port`; undefined for anything else. */
export function parseTcp(address: string): { host: string; port: number } | undefined {
  const match = /^tcp:\/\/(\[[^\]]*\]|[^:/]*):(\d+)$/.exec(address);
  if (!match) return undefined;
  return { host: match[1]!, port: Number(match[2]) };
}

/** Which scope a listen host binds in the pod's network namespace, or undefined (not mapped). */
export function listenScope(host: string): PortScope | undefined {
  if (EVERY_ADDRESS.has(host)) return "pod";
  if (POD_LOOPBACK.has(host)) return "loopback";
  return undefined;
}

/** The ports each pod listens on: pod uid → container port → loopback port. */
export class PodPorts {
  private readonly pods = new Map<string, Map<number, PortBinding>>();

  bind(podUid: string, port: number, binding: PortBinding): void {
    const ports = this.pods.get(podUid) ?? new Map<number, PortBinding>();
    ports.set(port, binding);
    this.pods.set(podUid, ports);
  }

  release(podUid: string, port: number, hostPort: number): void {
    const ports = this.pods.get(podUid);
    if (ports?.get(port)?.hostPort === hostPort) ports.delete(port);
    if (ports?.size === 0) this.pods.delete(podUid);
  }

  /** Where a connection to the pod's port lands; `from` the same pod also sees its loopback. */
  lookup(podUid: string, port: number, fromSamePod: boolean): number | undefined {
    const binding = this.pods.get(podUid)?.get(port);
    if (!binding) return undefined;
    return binding.scope === "pod" || fromSamePod ? binding.hostPort : undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Mapping 4: names and cluster addresses. What a pod dials → a loopback address.
// Cluster DNS names of Services (`<svc>.<ns>.svc.cluster.local`, and the shorter forms the pod's
// search path completes: `<svc>.<ns>.svc`, `<svc>.<ns>`, `<svc>`), names of pods under a
// headless Service (`<ip-with-dashes>.<svc>.<ns>.svc`, `<hostname>.<svc>.<ns>.svc`) and pod IPs
// (10.244.x.y from the simulated kubelet) → a loopback listener of network.ts for this pod and
// that destination. Per connection it does what the cluster would: kube-proxy's choice of a
// Ready endpoint by the Service's selector, the destination's NetworkPolicies applied to the
// dialling pod, then that pod's port (mapping 3). The pod's own loopback → its own ports,
// directly. Names the cluster does not know are left to this machine's resolver, which knows
// none of them, so the dial fails as it would in the pod. Registries and git servers are
// addressed by the tests as 127.0.0.1:PORT of this machine, which every process reaches
// directly: nothing is mapped for them.
// ---------------------------------------------------------------------------------------------
export interface ServiceName {
  namespace: string;
  name: string;
  /** One pod under a headless Service: its IP with dashes, or its hostname (StatefulSets). */
  pod?: string;
}

/**
 * The Service (or the pod under a headless Service) a DNS name asks for, completed as the pod's
 * resolver would (search path `<ns>.svc.cluster.local svc.cluster.local cluster.local`):
 * `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc[.cluster.local]`, and
 * `<pod>.<svc>.<ns>[.svc[.cluster.local]]`; undefined for anything else.
 */
export function serviceName(host: string, podNamespace: string): ServiceName | undefined {
  const name = host.replace(/\.$/, "");
  if (/^[0-9.]+$/.test(name) || name.includes(":") || name.startsWith("[")) return undefined;
  const labels = name.split(".");
  const isSuffix = (rest: string[]) =>
    ["", "svc", `svc.${CLUSTER_DOMAIN}`].includes(rest.join("."));
  if (labels.length === 1) return { name: labels[0]!, namespace: podNamespace };
  if (isSuffix(labels.slice(2))) return { name: labels[0]!, namespace: labels[1]! };
  if (isSuffix(labels.slice(3)))
    return { pod: labels[0]!, name: labels[1]!, namespace: labels[2]! };
  return undefined;
}

/** What a dial resolves to, decided by network.ts from the cluster's objects. */
export interface Dialer {
  /** A loopback `host:port` for `host:port` dialled from a pod, or undefined to leave it. */
  dial(
    host: string,
    port: number,
    from: { podUid: string; namespace: string },
  ): Promise<string | undefined>;
}

// ---------------------------------------------------------------------------------------------
// The argv rules: which arguments of which program are paths or addresses. Only these are
// mapped; everything else (build arguments, labels, image and cache references, TLS server
// names, git URLs) reaches the program exactly as the pod spec has it.
// ---------------------------------------------------------------------------------------------
export interface ArgMapper {
  path(containerPath: string): string;
  /** A unix:// or tcp:// address a program dials. */
  dial(address: string): Promise<string>;
  /** A unix:// or tcp:// address a program listens on. */
  listen(address: string): Promise<string>;
}

type Rule = "path" | "dial" | "listen" | "csv-src" | "name-path" | "ssh";

/** Value-taking flags per program and what their values are; other flags pass through. */
const FLAG_RULES: Record<string, Record<string, Rule>> = {
  buildkitd: {
    "--addr": "listen",
    "--tlscacert": "path",
    "--tlscert": "path",
    "--tlskey": "path",
    "--root": "path",
    "--config": "path",
  },
  buildctl: {
    "--addr": "dial",
    "--tlscacert": "path",
    "--tlscert": "path",
    "--tlskey": "path",
    "--tlsdir": "path",
    "--metadata-file": "path",
    "--trace": "path",
    // id=<id>,src=<path>: only src is a path.
    "--secret": "csv-src",
    // --local <name>=<dir>
    "--local": "name-path",
    // --ssh <id>=<path>[,<path>]
    "--ssh": "ssh",
  },
  assemble: {
    "--docker-config": "path",
    "--ca-file": "path",
    "--termination-message-path": "path",
  },
  "cache-report": {
    "--trace": "path",
    "--termination-message-path": "path",
  },
};

async function mapValue(rule: Rule, value: string, mapper: ArgMapper): Promise<string> {
  switch (rule) {
    case "path":
      return value.startsWith("/") ? mapper.path(value) : value;
    case "dial":
      return mapper.dial(value);
    case "listen":
      return mapper.listen(value);
    case "csv-src":
      return value
        .split(",")
        .map((field) =>
          field.startsWith("src=/") ? `src=${mapper.path(field.slice("src=".length))}` : field,
        )
        .join(",");
    case "name-path": {
      const at = value.indexOf("=");
      const path = value.slice(at + 1);
      return at > 0 && path.startsWith("/")
        ? `${value.slice(0, at + 1)}${mapper.path(path)}`
        : value;
    }
    case "ssh": {
      const at = value.indexOf("=");
      if (at < 0) return value;
      const paths = value
        .slice(at + 1)
        .split(",")
        .map((path) => (path.startsWith("/") ? mapper.path(path) : path));
      return `${value.slice(0, at + 1)}${paths.join(",")}`;
    }
  }
}

/** Maps a program's arguments by its flag rules (`--flag value` and `--flag=value`). */
export async function mapFlags(
  program: string,
  args: readonly string[],
  mapper: ArgMapper,
): Promise<string[]> {
  const rules = FLAG_RULES[program] ?? {};
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const eq = arg.indexOf("=");
    const flag = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    const rule = rules[flag];
    if (rule && eq > 0 && arg.startsWith("--")) {
      out.push(`${flag}=${await mapValue(rule, arg.slice(eq + 1), mapper)}`);
    } else if (rule && i + 1 < args.length) {
      out.push(arg, await mapValue(rule, args[++i]!, mapper));
    } else {
      out.push(arg);
    }
  }
  return out;
}

/**
 * The argv of a container's process, its program resolved and its arguments mapped: `cp`'s
 * operands are paths; `rootlesskit [flags] <program> <args>` maps the child's arguments by the
 * child's rules; the operator image's `node /app/dist/cli.js assemble ...` maps assemble's.
 */
export async function mapArgv(
  argv: readonly string[],
  programs: HostPrograms,
  mapper: ArgMapper,
): Promise<{ file: string; args: string[] } | { error: string }> {
  const [first, ...rest] = argv;
  if (!first) return { error: "no command and no image entrypoint" };
  const file = hostProgram(first, programs);
  if (!file)
    return { error: `exec: "${first}": executable file not found in $PATH (not in the harness)` };
  const program = posix.basename(first);
  if (program === "cp")
    return { file, args: rest.map((arg) => (arg.startsWith("/") ? mapper.path(arg) : arg)) };
  if (program === "rootlesskit") {
    const at = rest.findIndex((arg) => !arg.startsWith("-"));
    if (at < 0) return { file, args: rest };
    const child = await mapArgv(rest.slice(at), programs, mapper);
    if ("error" in child) return child;
    // rootlesskit looks the child up on PATH; the child's name stays as the pod has it.
    return { file, args: [...rest.slice(0, at), rest[at]!, ...child.args] };
  }
  if (program === "node") {
    const script = rest[0] ? hostScript(rest[0], programs) : undefined;
    if (!script) return { error: `node ${rest[0] ?? ""}: not the operator image's entry script` };
    const [command, ...more] = rest.slice(1);
    return {
      file,
      args: [script, ...(command ? [command, ...(await mapFlags(command, more, mapper))] : [])],
    };
  }
  return { file, args: await mapFlags(program, rest, mapper) };
}

// ---------------------------------------------------------------------------------------------
// Mapping 5: environment. Variables whose values are in-container paths or socket addresses
// → mapped like arguments (the image's HOME, TMPDIR, XDG_RUNTIME_DIR, BUILDKIT_HOST; the pod's
// HOME, TMPDIR, DOCKER_CONFIG). PATH → the directory of the BuildKit binaries, then the host's.
// Other variables pass through.
// ---------------------------------------------------------------------------------------------
const PATH_VARIABLES = new Set([
  "HOME",
  "TMPDIR",
  "XDG_RUNTIME_DIR",
  "DOCKER_CONFIG",
  "SSL_CERT_FILE",
  "SSL_CERT_DIR",
]);
const ADDRESS_VARIABLES = new Set(["BUILDKIT_HOST"]);

export async function mapEnv(
  env: Record<string, string>,
  mapper: ArgMapper,
  binDir: string,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (PATH_VARIABLES.has(name) && value.startsWith("/")) out[name] = mapper.path(value);
    else if (ADDRESS_VARIABLES.has(name)) out[name] = await mapper.dial(value);
    else out[name] = value;
  }
  out.PATH = [
    binDir,
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
  ].join(":");
  return out;
}
