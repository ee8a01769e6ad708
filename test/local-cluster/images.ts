// A container runtime for images in the test registry, so a Job runs in the image a cluster
// would pull: a verify Job in the image it checks, and the index Job in the operator image that
// `npm run image` built. A container whose image is `<registry host>/<repo>@sha256:…` is pulled
// as a runtime pulls it (the index's manifest for the node's architecture, its config, its
// layers applied in order with whiteouts) and runs under runc (Debian's, which setup.sh
// installs for BuildKit) with what the image config and the pod spec say, by Kubernetes' rules
// (imageProcess): command/args over ENTRYPOINT/CMD, workingDir over WORKDIR, runAsUser and
// runAsGroup over USER, runAsNonRoot refused for a root user, readOnlyRootFilesystem, the
// pod's volumes and the termination message file bind-mounted, capabilities (the runtime's
// default set, less capabilities.drop, plus add) and no_new_privs (allowPrivilegeEscalation),
// its own mount, PID, IPC and UTS namespaces. An arm64 image's programs run under QEMU through
// the host's binfmt handler (registered with the F flag, so it works inside the container).
// What it does not give: a network namespace (the container shares the host's, so the
// registry on loopback is reached as the cluster network would reach it), seccomp and
// AppArmor profiles, cgroup limits (requests and limits are not enforced), and image pull
// policy or credentials (the test registry needs none). Any other image goes to the fallback.

import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type {
  ContainerContext,
  ContainerResult,
  Executor,
  MountedVolume,
} from "../kube/sim/executor.ts";
import { runProcess } from "../kube/sim/real/process.ts";
import type { RunningRegistry } from "../support/registry.ts";
import { getBlob, getManifest } from "./registry.ts";

const execFileAsync = promisify(execFile);

/** One container run from a pushed image. */
export interface ImageRun {
  pod: string;
  image: string;
  /** The manifest that ran (the node's platform from the index). */
  manifest: string;
  architecture: string;
  argv: string[];
  env: Record<string, string>;
  uid: number;
  gid: number;
  cwd: string;
  startMs: number;
  endMs?: number;
  exitCode?: number;
  output: string;
}

/** The parts of an image config a runtime uses. */
export interface ImageConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  User?: string;
  WorkingDir?: string;
}

/** The parts of a container spec that decide its process. */
export interface ContainerSpec {
  command?: readonly string[];
  args?: readonly string[];
  workingDir?: string;
  securityContext?: {
    runAsUser?: number;
    runAsGroup?: number;
    runAsNonRoot?: boolean;
    readOnlyRootFilesystem?: boolean;
    allowPrivilegeEscalation?: boolean;
    capabilities?: { add?: readonly string[]; drop?: readonly string[] };
  };
  terminationMessagePath?: string;
}

export interface PodSecurity {
  runAsUser?: number;
  runAsGroup?: number;
  runAsNonRoot?: boolean;
  fsGroup?: number;
  supplementalGroups?: readonly number[];
}

/** What a container's process is, or why the kubelet refuses to start it. */
export type ContainerProcess =
  | { argv: string[]; env: Record<string, string>; cwd: string; uid: number; gid: number }
  | { error: string; reason: string };

/**
 * The process a kubelet starts for a container of this image (pure): command replaces
 * ENTRYPOINT and drops CMD, args replace CMD; workingDir else WORKDIR else /; the container's
 * then the pod's runAsUser/runAsGroup else the image's USER (numeric here: a name would need the
 * image's /etc/passwd); runAsNonRoot refuses UID 0; the image's ENV under the container's env.
 */
export function imageProcess(
  config: ImageConfig,
  container: ContainerSpec,
  podSecurity: PodSecurity = {},
  env: Record<string, string> = {},
): ContainerProcess {
  const command = container.command ?? [];
  const args = container.args ?? [];
  const argv = command.length
    ? [...command, ...args]
    : [...(config.Entrypoint ?? []), ...(args.length ? args : (config.Cmd ?? []))];
  if (argv.length === 0) return { reason: "CreateContainerError", error: "no command specified" };
  const [imageUser, imageGroup] = (config.User ?? "").split(":");
  const own = container.securityContext ?? {};
  const numeric = (value: string | undefined) =>
    value !== undefined && /^\d+$/.test(value) ? Number(value) : undefined;
  const uid = own.runAsUser ?? podSecurity.runAsUser ?? numeric(imageUser || "0");
  if (uid === undefined)
    return {
      reason: "CreateContainerConfigError",
      error: `image user ${JSON.stringify(config.User)} is not numeric (not resolved here)`,
    };
  const gid = own.runAsGroup ?? podSecurity.runAsGroup ?? numeric(imageGroup) ?? 0;
  const nonRoot = own.runAsNonRoot ?? podSecurity.runAsNonRoot;
  if (nonRoot && uid === 0)
    return {
      reason: "CreateContainerConfigError",
      error: "container has runAsNonRoot and image will run as root",
    };
  const merged: Record<string, string> = {};
  for (const pair of config.Env ?? []) {
    const eq = pair.indexOf("=");
    if (eq > 0) merged[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  Object.assign(merged, env);
  return { argv, env: merged, cwd: container.workingDir || config.WorkingDir || "/", uid, gid };
}

/** containerd's default capabilities for a container (oci.defaultUnixCaps). */
const DEFAULT_CAPABILITIES = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_NET_RAW",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
];

/**
 * The capabilities a container gets (pure): the default set less capabilities.drop (ALL drops
 * every one) plus capabilities.add, as the CRI names them (`NET_ADMIN` → `CAP_NET_ADMIN`).
 */
export function containerCapabilities(
  capabilities: { add?: readonly string[]; drop?: readonly string[] } = {},
): string[] {
  const name = (cap: string) => (cap.startsWith("CAP_") ? cap : `CAP_${cap}`).toUpperCase();
  const drop = new Set((capabilities.drop ?? []).map(name));
  const kept = drop.has("CAP_ALL") ? [] : DEFAULT_CAPABILITIES.filter((cap) => !drop.has(cap));
  return [...new Set([...kept, ...(capabilities.add ?? []).map(name)])];
}

/** An OCI runtime spec (config.json) for the process, the root and the mounts (pure). */
export function runcSpec(options: {
  process: { argv: string[]; env: Record<string, string>; cwd: string; uid: number; gid: number };
  groups: number[];
  capabilities: string[];
  noNewPrivileges: boolean;
  root: string;
  readonlyRoot: boolean;
  hostname: string;
  mounts: Pick<MountedVolume, "containerPath" | "hostPath" | "readOnly">[];
  terminationMessage?: { containerPath: string; hostPath: string };
}): Record<string, unknown> {
  const bind = (destination: string, source: string, readOnly: boolean) => ({
    destination,
    type: "bind",
    source,
    options: ["rbind", readOnly ? "ro" : "rw"],
  });
  const { process: proc } = options;
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: proc.uid, gid: proc.gid, additionalGids: options.groups },
      args: proc.argv,
      env: Object.entries(proc.env).map(([name, value]) => `${name}=${value}`),
      cwd: proc.cwd,
      capabilities: {
        bounding: options.capabilities,
        effective: options.capabilities,
        permitted: options.capabilities,
        inheritable: [],
        ambient: [],
      },
      noNewPrivileges: options.noNewPrivileges,
    },
    root: { path: options.root, readonly: options.readonlyRoot },
    hostname: options.hostname,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      {
        destination: "/dev",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
      },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
      },
      {
        destination: "/dev/shm",
        type: "tmpfs",
        source: "shm",
        options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
      },
      {
        destination: "/sys",
        type: "sysfs",
        source: "sysfs",
        options: ["nosuid", "noexec", "nodev", "ro"],
      },
      ...options.mounts.map((m) => bind(m.containerPath, m.hostPath, m.readOnly)),
      ...(options.terminationMessage
        ? [
            bind(
              options.terminationMessage.containerPath,
              options.terminationMessage.hostPath,
              false,
            ),
          ]
        : []),
    ],
    linux: {
      // No network namespace: the container shares the host's (see the module comment).
      namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }],
      maskedPaths: ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
  };
}

/** Removes what a layer's whiteouts delete (`.wh.<name>`, `.wh..wh..opq`). */
async function applyWhiteouts(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.name === ".wh..wh..opq") {
      await rm(path, { force: true });
    } else if (entry.name.startsWith(".wh.")) {
      await rm(join(dir, entry.name.slice(4)), { recursive: true, force: true });
      await rm(path, { force: true });
    } else if (entry.isDirectory()) {
      await applyWhiteouts(path);
    }
  }
}

/**
 * Pulls `<registry>/<path>@<digest>` for linux/<architecture> into root: the platform's
 * manifest from an index, its layers applied in order. Resolves to the manifest's digest and
 * the image config, or to the reason it could not.
 */
export async function unpackImage(
  registry: RunningRegistry,
  path: string,
  digest: string,
  architecture: string,
  root: string,
): Promise<{ manifest: string; config: ImageConfig } | { error: string }> {
  let manifest = await getManifest(registry, path, digest);
  let manifestDigest = digest;
  if (manifest.manifests) {
    const entry = manifest.manifests.find(
      (m) => m.platform?.os === "linux" && m.platform.architecture === architecture,
    );
    if (!entry) return { error: `no matching manifest for linux/${architecture}` };
    manifestDigest = entry.digest;
    manifest = await getManifest(registry, path, entry.digest);
  }
  const { config: configDescriptor } = manifest as { config?: { digest: string } };
  const config = JSON.parse(
    (await getBlob(registry, path, configDescriptor?.digest ?? "")).toString("utf8"),
  ) as { config?: ImageConfig };
  await mkdir(root, { recursive: true });
  const scratch = await mkdtemp(join(tmpdir(), "bf-layer-"));
  try {
    for (const layer of manifest.layers ?? []) {
      const file = join(scratch, "layer");
      await writeFile(file, await getBlob(registry, path, layer.digest));
      // As root: the layer's owners and modes as the image has them.
      await execFileAsync("tar", ["-xf", file, "-C", root, "--same-owner", "--numeric-owner"]);
      await applyWhiteouts(root);
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  await chmod(root, 0o755);
  return { manifest: manifestDigest, config: config.config ?? {} };
}

/** A container to run from a pushed image, as the kubelet hands it over. */
export interface ImageContainer {
  registry: RunningRegistry;
  /** `<registry host>/<repo>@sha256:…` */
  image: string;
  architecture: string;
  container: ContainerSpec;
  podSecurity?: PodSecurity;
  env?: Record<string, string>;
  mounts?: Pick<MountedVolume, "containerPath" | "hostPath" | "readOnly">[];
  /** The host file behind terminationMessagePath. */
  terminationMessageFile?: string;
  /** Where the image's root is unpacked (a new directory, removed after, when not given). */
  rootDir?: string;
  hostname: string;
  signal?: AbortSignal;
  output?: (text: string) => void;
}

/**
 * Pulls the image for the architecture and runs the container in it under runc; resolves to
 * the run, or to the kubelet's reason for not starting it.
 */
export async function runImageContainer(
  options: ImageContainer,
  onStart: (run: ImageRun) => void = () => {},
): Promise<{ run: ImageRun } | { error: string; reason: string }> {
  const { registry } = options;
  const [path, digest] = options.image.slice(registry.host.length + 1).split("@") as [
    string,
    string,
  ];
  const root = options.rootDir ?? (await mkdtemp(join(tmpdir(), "bf-rootfs-")));
  const bundle = await mkdtemp(join(tmpdir(), "bf-bundle-"));
  const id = `bf-${randomBytes(6).toString("hex")}`;
  const state = join(bundle, "state");
  try {
    const pulled = await unpackImage(registry, path, digest, options.architecture, root);
    if ("error" in pulled)
      return { reason: "ErrImagePull", error: `${pulled.error} in ${options.image}` };
    const podSecurity = options.podSecurity ?? {};
    const proc = imageProcess(pulled.config, options.container, podSecurity, options.env);
    if ("error" in proc) return proc;
    const run: ImageRun = {
      pod: options.hostname,
      image: options.image,
      manifest: pulled.manifest,
      architecture: options.architecture,
      argv: proc.argv,
      env: proc.env,
      uid: proc.uid,
      gid: proc.gid,
      cwd: proc.cwd,
      startMs: Date.now(),
      output: "",
    };
    onStart(run);
    const terminationPath = options.container.terminationMessagePath ?? "/dev/termination-log";
    const spec = runcSpec({
      process: proc,
      groups: [
        ...(podSecurity.fsGroup !== undefined ? [podSecurity.fsGroup] : []),
        ...(podSecurity.supplementalGroups ?? []),
      ],
      capabilities: containerCapabilities(options.container.securityContext?.capabilities),
      noNewPrivileges: options.container.securityContext?.allowPrivilegeEscalation === false,
      root,
      readonlyRoot: options.container.securityContext?.readOnlyRootFilesystem === true,
      hostname: options.hostname.slice(0, 63),
      mounts: options.mounts ?? [],
      ...(options.terminationMessageFile
        ? {
            terminationMessage: {
              containerPath: terminationPath,
              hostPath: options.terminationMessageFile,
            },
          }
        : {}),
    });
    // The kubelet makes the termination message file 0666, so a non-root process can write it.
    if (options.terminationMessageFile) await chmod(options.terminationMessageFile, 0o666);
    await writeFile(join(bundle, "config.json"), JSON.stringify(spec));
    const { exited } = runProcess({
      file: "runc",
      args: ["--root", state, "run", "--bundle", bundle, id],
      env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" },
      cwd: bundle,
      identity: { uid: 0, gid: 0, groups: [], noNewPrivs: false },
      output: (text) => {
        run.output += text;
        options.output?.(text);
      },
      ...(options.signal ? { signal: options.signal } : {}),
      graceMs: 1000,
    });
    run.exitCode = await exited;
    run.endMs = Date.now();
    return { run };
  } finally {
    await execFileAsync("runc", ["--root", state, "delete", "--force", id]).catch(() => {});
    await rm(bundle, { recursive: true, force: true });
    if (!options.rootDir) await rm(root, { recursive: true, force: true });
  }
}

export function pushedImageExecutor(
  registry: RunningRegistry,
  fallback: Executor,
): { executor: Executor; runs: ImageRun[] } {
  const runs: ImageRun[] = [];
  const executor: Executor = async (ctx) => {
    if (!ctx.image.startsWith(`${registry.host}/`) || !ctx.image.includes("@"))
      return fallback(ctx);
    return run(ctx);
  };

  async function run(ctx: ContainerContext): Promise<ContainerResult> {
    const node = ctx.store.get("nodes", undefined, ctx.nodeName);
    const result = await runImageContainer(
      {
        registry,
        image: ctx.image,
        architecture: node?.metadata.labels?.["kubernetes.io/arch"] ?? "amd64",
        container: {
          ...ctx.container,
          command: ctx.command,
          args: ctx.args,
          ...(ctx.workingDir ? { workingDir: ctx.workingDir } : {}),
        },
        podSecurity: ctx.pod.spec?.securityContext ?? {},
        env: ctx.env,
        mounts: ctx.mounts,
        terminationMessageFile: ctx.terminationMessageFile,
        rootDir: ctx.rootDir,
        hostname: ctx.pod.metadata.name,
        signal: ctx.signal,
        output: (text) => ctx.log(text),
      },
      (started) => runs.push(started),
    );
    if ("error" in result)
      return { exitCode: 128, reason: result.reason, log: `${result.error}\n` };
    return { exitCode: result.run.exitCode ?? 128 };
  }

  return { executor, runs };
}
