// The real-process executor: containers whose image is the pool's rootless BuildKit image or
// the operator's own image run as real processes (buildkitd under rootlesskit, buildctl, cp,
// `buildfarm assemble`), with what a container runtime would give them: the image's
// entrypoint and environment (images.ts), the pod's user with fsGroup as a supplementary group,
// volumes owned as the kubelet leaves them, a termination-log file it can write, exec readiness
// probes. What the machine forces to differ from a cluster is mapped in mapping.ts; the
// cluster network (Services, pod IPs) is network.ts. Other images go to `fallback`.
import { chmod, chown, lstat, mkdir, readdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IPod } from "kubernetes-models/v1/Pod";
import type { Stored } from "../../objects.ts";
import {
  type ContainerContext,
  type ContainerResult,
  defaultExecutor,
  type Executor,
} from "../executor.ts";
import type { ReadinessPolicy } from "../kubelet.ts";
import { type ImageConfig, imageConfig } from "./images.ts";
import {
  type ArgMapper,
  ContainerFiles,
  type HostPrograms,
  listenScope,
  mapArgv,
  mapEnv,
  PodPorts,
  parseTcp,
} from "./mapping.ts";
import { type ClusterDns, ClusterNetwork } from "./network.ts";
import { type Identity, runProcess } from "./process.ts";

export interface RealExecutorOptions {
  programs: HostPrograms;
  /** The operator's image (its --operator-image), run as `buildfarm`. */
  operatorImage: string;
  /** For containers of other images (default: test/kube's defaultExecutor). */
  fallback?: Executor;
  /** Most a stopped container gets between SIGTERM and SIGKILL (default 10 s). */
  maxGraceMs?: number;
  /** The cluster DNS the pods see (network.ts; default CoreDNS). */
  clusterDns?: ClusterDns;
}

/** One container process: when it ran (ms since the epoch) and how it ended. */
export interface ProcessRun {
  namespace: string;
  pod: string;
  container: string;
  startMs: number;
  endMs: number;
  exitCode: number;
}

export interface ExecResult {
  code: number;
  output: string;
}

interface Running {
  context: ContainerContext;
  files: ContainerFiles;
  mapper: ArgMapper;
  env: Record<string, string>;
  identity: Identity;
  cwd: string;
  probe?: { ready: boolean; at: number; running?: Promise<boolean> };
}

type Pod = ContainerContext["pod"];

/** The user a container runs as: the container's, then the pod's securityContext, then the image's. */
export function identityOf(pod: Pod, container: Stored<IContainer>, image: ImageConfig): Identity {
  const podContext = pod.spec?.securityContext ?? {};
  const own = container.securityContext ?? {};
  const groups = [
    ...(podContext.fsGroup === undefined ? [] : [podContext.fsGroup]),
    ...(podContext.supplementalGroups ?? []),
  ];
  return {
    uid: own.runAsUser ?? podContext.runAsUser ?? image.uid,
    gid: own.runAsGroup ?? podContext.runAsGroup ?? image.gid,
    groups: [...new Set(groups)],
    noNewPrivs: own.allowPrivilegeEscalation === false,
  };
}

/** Kubernetes' command/args over the image's ENTRYPOINT/CMD. */
export function argvOf(context: ContainerContext, image: ImageConfig): string[] {
  if (context.command.length > 0) return [...context.command, ...context.args];
  return [...image.entrypoint, ...(context.args.length > 0 ? context.args : image.cmd)];
}

const isRoot = () => process.getuid?.() === 0;

/**
 * A container reaches its volumes through bind mounts; here through host paths, so the
 * directories above them must be traversable by the pod's user (o+x), which is all this adds.
 */
async function allowTraversal(path: string, stopAt: string): Promise<void> {
  for (let dir = dirname(path); dir.startsWith(stopAt) && dir !== stopAt; dir = dirname(dir)) {
    const info = await lstat(dir).catch(() => undefined);
    if (info?.isDirectory() && (info.mode & 0o001) === 0)
      await chmod(dir, (info.mode & 0o7777) | 0o111);
  }
}

/**
 * What the kubelet does to a pod's volumes with `fsGroup` (SetVolumeOwnership): group
 * ownership to fsGroup, group read (and write for writable volumes), setgid on directories.
 * emptyDir directories are created 0777 whatever the fsGroup.
 */
async function setVolumeOwnership(
  path: string,
  gid: number | undefined,
  writable: boolean,
): Promise<void> {
  const info = await lstat(path).catch(() => undefined);
  if (!info || info.isSymbolicLink()) {
    if (info && gid !== undefined && isRoot()) await chown(path, -1, gid).catch(() => {});
    return;
  }
  if (gid !== undefined && isRoot()) await chown(path, -1, gid);
  let mode = info.mode & 0o7777;
  if (gid !== undefined) {
    mode |= writable ? 0o060 : 0o040;
    if (info.isDirectory()) mode |= 0o2010;
  }
  if (info.isDirectory() && writable) mode |= 0o777;
  await chmod(path, mode);
  if (info.isDirectory())
    for (const entry of await readdir(path))
      await setVolumeOwnership(join(path, entry), gid, writable);
}

export class RealPods {
  readonly ports = new PodPorts();
  private network: ClusterNetwork | undefined;
  private readonly options: RealExecutorOptions;
  private readonly running = new Map<string, Running>();
  private readonly exits = new Set<Promise<number>>();
  private readonly stopping = new AbortController();
  /** Every container process that ran to its end, in order of ending (for benchmarks). */
  readonly runs: ProcessRun[] = [];

  constructor(options: RealExecutorOptions) {
    this.options = options;
  }

  /** Kube-proxy's view: which Service connection went to which pod (for failure messages). */
  get connections() {
    return this.network?.connections ?? [];
  }

  readonly executor: Executor = (context) => {
    const image = imageConfig(context.image, this.options.operatorImage);
    if (!image) return (this.options.fallback ?? defaultExecutor)(context);
    return this.run(context, image);
  };

  /** Readiness from the container's own exec probe, run in the container; others: running = ready. */
  readonly readiness: ReadinessPolicy = (pod, container) => {
    const running = this.running.get(`${pod.metadata.uid}/${container.name}`);
    const command = container.readinessProbe?.exec?.command;
    if (!command?.length) return true;
    if (!running)
      return imageConfig(container.image ?? "", this.options.operatorImage) === undefined;
    const now = Date.now();
    const probe = running.probe ?? { ready: false, at: 0 };
    running.probe = probe;
    // Until it first succeeds, probe often; afterwards at the pod's period.
    const periodMs = probe.ready ? (container.readinessProbe?.periodSeconds ?? 10) * 1000 : 250;
    if (!probe.running && now - probe.at >= periodMs) {
      const timeoutMs = (container.readinessProbe?.timeoutSeconds ?? 1) * 1000;
      probe.running = this.execIn(running, [...command], timeoutMs).then(
        (result) => result.code === 0,
        () => false,
      );
      void probe.running.then((ready) => {
        probe.ready = ready;
        probe.at = Date.now();
        probe.running = undefined;
      });
    }
    return probe.ready;
  };

  /**
   * Where a dial of `host:port` from a pod lands (a loopback `host:port`), for a process that
   * stands in for that pod, such as the operator in the test process: through the cluster
   * network, the destination's NetworkPolicies included. Undefined before any pod ran here, or
   * for an address the cluster does not know.
   */
  async dialFrom(
    from: { podUid: string; namespace: string },
    host: string,
    port: number,
  ): Promise<string | undefined> {
    return await this.network?.dial(host, port, from);
  }

  /** `kubectl exec`: runs a command in a running container, as its user, with its mappings. */
  async exec(
    namespace: string,
    pod: string,
    container: string,
    command: string[],
    timeoutMs = 30_000,
  ): Promise<ExecResult> {
    const running = [...this.running.values()].find(
      (r) =>
        r.context.pod.metadata.namespace === namespace &&
        r.context.pod.metadata.name === pod &&
        r.context.container.name === container,
    );
    if (!running)
      throw new Error(`container ${container} of pod ${namespace}/${pod} is not running`);
    return this.execIn(running, command, timeoutMs);
  }

  private async execIn(
    running: Running,
    command: string[],
    timeoutMs: number,
  ): Promise<ExecResult> {
    const argv = await mapArgv(command, this.options.programs, running.mapper);
    if ("error" in argv) return { code: 126, output: argv.error };
    let output = "";
    const signal = AbortSignal.any([AbortSignal.timeout(timeoutMs), this.stopping.signal]);
    const { exited } = runProcess({
      file: argv.file,
      args: argv.args,
      env: running.env,
      cwd: running.cwd,
      identity: running.identity,
      output: (text) => {
        output += text;
      },
      signal,
      graceMs: 1000,
    });
    return { code: await exited, output };
  }

  private async run(context: ContainerContext, image: ImageConfig): Promise<ContainerResult> {
    const { pod, container } = context;
    const podUid = pod.metadata.uid;
    this.network ??= new ClusterNetwork(context.store, this.ports, this.options.clusterDns);
    const network = this.network;
    const identity = identityOf(pod, container, image);
    const files = await ContainerFiles.create(context);
    const bound: [number, number][] = [];
    try {
      await this.prepareFilesystem(context, image);
      const mapper: ArgMapper = {
        path: (path) => files.path(path),
        listen: async (address) => {
          const tcp = parseTcp(address);
          if (!tcp) return files.unixAddress(address);
          const scope = listenScope(tcp.host);
          if (!scope) return address;
          const hostPort = await freeLoopbackPort();
          this.ports.bind(podUid, tcp.port, { hostPort, scope });
          bound.push([tcp.port, hostPort]);
          return `tcp://127.0.0.1:${hostPort}`;
        },
        dial: async (address) => {
          const tcp = parseTcp(address);
          if (!tcp) return files.unixAddress(address);
          const target = await network.dial(tcp.host, tcp.port, {
            podUid,
            namespace: pod.metadata.namespace,
          });
          return target ? `tcp://${target}` : address;
        },
      };
      const env = await mapEnv(
        { ...image.env, ...context.env },
        mapper,
        dirname(this.options.programs.buildctl),
      );
      const cwd = files.path(context.workingDir ?? image.workingDir);
      // The runtime creates the working directory when the image lacks it.
      await mkdir(cwd, { recursive: true });
      const argv = await mapArgv(argvOf(context, image), this.options.programs, mapper);
      if ("error" in argv) return { exitCode: 128, reason: "StartError", log: `${argv.error}\n` };
      const running: Running = { context, files, mapper, env, identity, cwd };
      const key = `${podUid}/${container.name}`;
      this.running.set(key, running);
      const grace = (pod.spec?.terminationGracePeriodSeconds ?? 30) * 1000;
      const startMs = Date.now();
      const { exited } = runProcess({
        file: argv.file,
        args: argv.args,
        env,
        cwd,
        identity,
        output: (text) => context.log(text),
        signal: AbortSignal.any([context.signal, this.stopping.signal]),
        graceMs: Math.min(grace, this.options.maxGraceMs ?? 10_000),
      });
      this.exits.add(exited);
      const exitCode = await exited;
      this.exits.delete(exited);
      this.runs.push({
        namespace: pod.metadata.namespace,
        pod: pod.metadata.name,
        container: container.name,
        startMs,
        endMs: Date.now(),
        exitCode,
      });
      if (this.running.get(key) === running) this.running.delete(key);
      return { exitCode };
    } finally {
      for (const [port, hostPort] of bound) this.ports.release(podUid, port, hostPort);
      const podStillRuns = [...this.running.values()].some(
        (other) => other.context.pod.metadata.uid === podUid,
      );
      if (!podStillRuns) void network.release(podUid);
      await files.dispose();
    }
  }

  /** The container's root with the image's user directories, its volumes, its termination log. */
  private async prepareFilesystem(context: ContainerContext, image: ImageConfig): Promise<void> {
    // <tmp>/<pods dir>/<pod>/containers/<name>/rootfs: everything below <tmp>.
    const stopAt = dirname(dirname(dirname(dirname(dirname(context.rootDir)))));
    const readOnlyRoot = context.container.securityContext?.readOnlyRootFilesystem === true;
    await mkdir(context.rootDir, { recursive: true });
    await chmod(context.rootDir, 0o755);
    await allowTraversal(join(context.rootDir, "x"), stopAt);
    for (const dir of image.userDirs) {
      const host = context.hostPath(dir);
      if (!host.startsWith(`${context.rootDir}/`)) continue; // a volume is mounted there
      await mkdir(host, { recursive: true });
      if (!readOnlyRoot && isRoot()) await chown(host, image.uid, image.gid);
    }
    const fsGroup = (context.pod as Stored<IPod>).spec?.securityContext?.fsGroup;
    for (const mount of context.mounts) {
      await allowTraversal(mount.hostPath, stopAt);
      const volume = context.pod.spec?.volumes?.find((v) => v.name === mount.volume);
      const writable = Boolean(
        volume?.emptyDir || volume?.persistentVolumeClaim || volume?.hostPath,
      );
      await setVolumeOwnership(mount.hostPath, fsGroup, writable);
    }
    // The kubelet creates the termination-log file 0666 so a non-root container can write it.
    await allowTraversal(context.terminationMessageFile, stopAt);
    await chmod(context.terminationMessageFile, 0o666);
  }

  /** Stops every process this executor started and waits for them. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await Promise.allSettled([...this.exits]);
    await this.network?.stop();
  }
}

async function freeLoopbackPort(): Promise<number> {
  const { createServer } = await import("node:net");
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (typeof address !== "object" || !address) throw new Error("no free port");
  return address.port;
}
