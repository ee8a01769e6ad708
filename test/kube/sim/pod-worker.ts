// One pod on the simulated kubelet: sets it up (IP, sandbox with volumes), runs the init
// containers in order and then the containers together through the executor, restarts them
// per restartPolicy with back-off, applies the readiness policy, reads termination messages
// like the kubelet (the file's last 4096 bytes, or with FallbackToLogsOnError the log's last
// 80 lines / 2048 bytes), writes pod status, and ends the pod gracefully when it is deleted.
import { createHash, randomBytes } from "node:crypto";
import { open, writeFile } from "node:fs/promises";
import type { IContainerStatus } from "kubernetes-models/v1/ContainerStatus";
import type { IPod } from "kubernetes-models/v1/Pod";
import type { IPodCondition } from "kubernetes-models/v1/PodCondition";
import { type KubeObject, nowTime } from "../objects.ts";
import { KubeError } from "../status.ts";
import { ConfigError, expand, resolveEnv } from "./env.ts";
import type { ContainerContext, ContainerResult } from "./executor.ts";
import type { Container, Kubelet, Pod } from "./kubelet.ts";
import { MountError, PodSandbox } from "./sandbox.ts";

const MAX_MESSAGE = 4096;
const FALLBACK_LINES = 80;
const FALLBACK_BYTES = 2048;

let nextPodIp = 2;

/** The last `max` bytes of a file (tail.ReadAtMost). */
async function readTail(path: string, max: number): Promise<string> {
  const handle = await open(path, "r").catch(() => undefined);
  if (!handle) return "";
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, max);
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, size - length);
    return buffer.toString("utf8");
  } finally {
    await handle.close();
  }
}

/** readLastStringFromContainerLogs: the last 80 lines, then the last 2048 bytes of them. */
export function logTail(log: string): string {
  const lines = log.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  const tail = lines
    .slice(-FALLBACK_LINES)
    .map((line) => `${line}\n`)
    .join("");
  const bytes = Buffer.from(tail);
  return bytes.length > FALLBACK_BYTES
    ? bytes.subarray(bytes.length - FALLBACK_BYTES).toString("utf8")
    : tail;
}

interface ContainerState {
  spec: Container;
  kind: "init" | "regular";
  status: IContainerStatus;
  controller?: AbortController;
  running?: Promise<unknown>;
  /** Whether the readiness loop runs (it ends at once while there is no policy). */
  probing?: boolean;
}

export class PodWorker {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  private pod: Pod;
  private readonly kubelet: Kubelet;
  private readonly abort = new AbortController();
  private readonly containers = new Map<string, ContainerState>();
  private phase: "Pending" | "Running" | "Succeeded" | "Failed" = "Pending";
  private podIP = "";
  private startTime = nowTime();
  private sandbox: PodSandbox | undefined;
  private conditionTimes = new Map<string, { status: string; time: string }>();
  private initialized = false;
  private readyToStart = false;
  private failedInit: string | undefined;
  private dirty = false;
  private finished = false;
  terminating = false;
  gone = false;

  constructor(kubelet: Kubelet, pod: Pod) {
    this.kubelet = kubelet;
    this.pod = pod;
    this.uid = pod.metadata.uid!;
    this.namespace = pod.metadata.namespace!;
    this.name = pod.metadata.name!;
    const hasInit = (pod.spec?.initContainers ?? []).length > 0;
    for (const spec of pod.spec?.initContainers ?? [])
      this.addContainer(spec, "init", "PodInitializing");
    for (const spec of pod.spec?.containers ?? [])
      this.addContainer(spec, "regular", hasInit ? "PodInitializing" : "ContainerCreating");
  }

  private addContainer(spec: Container, kind: "init" | "regular", waiting: string) {
    this.containers.set(spec.name, {
      spec,
      kind,
      status: {
        name: spec.name,
        image: spec.image ?? "",
        imageID: "",
        ready: false,
        started: false,
        restartCount: 0,
        state: { waiting: { reason: kind === "init" ? "PodInitializing" : waiting } },
      },
    });
    this.kubelet.logs.setWaiting(
      this.uid,
      spec.name,
      kind === "init" ? "PodInitializing" : waiting,
    );
  }

  container(name: string): ContainerState | undefined {
    return this.containers.get(name);
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  async run(): Promise<void> {
    this.flush();
    const sandbox = await this.setUp();
    if (!sandbox) return;
    this.sandbox = sandbox;
    this.podIP = `10.244.${Math.floor(nextPodIp / 250)}.${(nextPodIp++ % 250) + 1}`;
    this.readyToStart = true;
    this.flush();
    const restartPolicy = this.pod.spec?.restartPolicy ?? "Always";
    for (const state of this.containers.values()) {
      if (state.kind !== "init") continue;
      for (;;) {
        const result = await this.runContainer(state);
        if (this.signal.aborted) return this.end();
        if (result.exitCode === 0) break;
        if (restartPolicy === "Never") {
          this.failedInit = state.spec.name;
          this.phase = "Failed";
          return this.end();
        }
        await this.backoff(state);
        if (this.signal.aborted) return this.end();
      }
    }
    this.initialized = true;
    this.phase = "Running";
    const regular = [...this.containers.values()].filter((state) => state.kind === "regular");
    await Promise.all(regular.map((state) => this.runRegular(state, restartPolicy)));
    if (!this.signal.aborted) {
      const ok = regular.every((state) => state.status.state?.terminated?.exitCode === 0);
      this.phase = ok ? "Succeeded" : "Failed";
    }
    await this.end();
  }

  /** Ends the pod's run unless a graceful termination is in charge of that. */
  private async end(): Promise<void> {
    if (!this.terminating) await this.finish();
  }

  private async setUp(): Promise<PodSandbox | undefined> {
    for (;;) {
      if (this.signal.aborted) return undefined;
      try {
        return await PodSandbox.create(this.kubelet.options.podsDir, this.pod, this.kubelet.store);
      } catch (error) {
        if (!(error instanceof MountError)) throw error;
        for (const state of this.containers.values()) {
          state.status.state = {
            waiting: { reason: state.kind === "init" ? "PodInitializing" : "ContainerCreating" },
          };
        }
        this.flush();
        await this.kubelet.sleep(100, this.signal);
      }
    }
  }

  private async runRegular(state: ContainerState, restartPolicy: string): Promise<void> {
    for (;;) {
      const result = await this.runContainer(state);
      if (this.signal.aborted || this.terminating) return;
      if (restartPolicy === "Never" || (restartPolicy === "OnFailure" && result.exitCode === 0))
        return;
      await this.backoff(state);
      if (this.signal.aborted || this.terminating) return;
    }
  }

  private async backoff(state: ContainerState): Promise<void> {
    const base = this.kubelet.options.restartBackoffMs ?? 20;
    const delay = Math.min(base * 2 ** Math.max(0, (state.status.restartCount ?? 0) - 0), 1000);
    const terminated = state.status.state?.terminated;
    state.status.lastState = terminated ? { terminated } : {};
    state.status.restartCount = (state.status.restartCount ?? 0) + 1;
    state.status.state = {
      waiting: {
        reason: "CrashLoopBackOff",
        message: `back-off ${Math.max(1, Math.round(delay / 1000))}s restarting failed container=${state.spec.name} pod=${this.name}_${this.namespace}(${this.uid})`,
      },
    };
    state.status.ready = false;
    state.status.started = false;
    this.flush();
    await this.kubelet.sleep(delay, this.signal);
  }

  private async runContainer(state: ContainerState): Promise<ContainerResult> {
    let done: () => void = () => {};
    state.running = new Promise<void>((resolve) => {
      done = resolve;
    });
    try {
      return await this.runContainerOnce(state);
    } finally {
      done();
    }
  }

  private async runContainerOnce(state: ContainerState): Promise<ContainerResult> {
    const spec = state.spec;
    const sandbox = this.sandbox!;
    let env: Record<string, string>;
    for (;;) {
      try {
        env = resolveEnv(this.current(), spec, this.kubelet.store);
        break;
      } catch (error) {
        if (!(error instanceof ConfigError)) throw error;
        state.status.state = {
          waiting: { reason: "CreateContainerConfigError", message: error.message },
        };
        this.flush();
        await this.kubelet.sleep(100, this.signal);
        if (this.signal.aborted) return { exitCode: 137 };
      }
    }
    await sandbox.prepareContainer(spec.name);
    const controller = new AbortController();
    state.controller = controller;
    const onAbort = () => controller.abort(this.signal.reason);
    // The pod may have been deleted while the container was being prepared: an abort listener
    // added to an already aborted signal never runs, and the container would wait for it.
    if (this.signal.aborted) onAbort();
    else this.signal.addEventListener("abort", onAbort, { once: true });
    const containerID = `containerd://${randomBytes(32).toString("hex")}`;
    const image = spec.image ?? "";
    state.status.imageID = `${image.replace(/[:@].*$/, "")}@sha256:${createHash("sha256").update(image).digest("hex")}`;
    state.status.containerID = containerID;
    const startedAt = nowTime();
    state.status.state = { running: { startedAt } };
    state.status.started = true;
    state.status.ready = false;
    const run = this.kubelet.logs.start(this.uid, spec.name);
    this.flush();
    const context: ContainerContext = {
      pod: this.current() as ContainerContext["pod"],
      container: spec,
      kind: state.kind,
      attempt: state.status.restartCount ?? 0,
      nodeName: this.pod.spec?.nodeName ?? "",
      image,
      command: (spec.command ?? []).map((arg) => expand(arg, env)),
      args: (spec.args ?? []).map((arg) => expand(arg, env)),
      workingDir: spec.workingDir,
      env,
      mounts: sandbox.mounts(spec),
      hostPath: (path) => sandbox.hostPath(spec, path),
      terminationMessageFile: sandbox.terminationMessageFile(spec.name),
      rootDir: sandbox.containerRoot(spec.name),
      log: (text) => run.append(text),
      signal: controller.signal,
      store: this.kubelet.store,
    };
    if (state.kind === "regular") void this.watchReadiness(state, controller.signal);
    let result: ContainerResult;
    const execution = (async () => {
      try {
        return await this.kubelet.executor(context);
      } catch (error) {
        return {
          exitCode: 128,
          reason: "StartError",
          log: `${error instanceof Error ? error.message : String(error)}\n`,
        };
      }
    })();
    result = await execution;
    this.signal.removeEventListener("abort", onAbort);
    const killed = controller.signal.reason as { exitCode?: number } | undefined;
    if (controller.signal.aborted && typeof killed?.exitCode === "number")
      result = { ...result, exitCode: killed.exitCode };
    if (result.log) run.append(result.log);
    if (result.terminationMessage !== undefined)
      await writeFile(context.terminationMessageFile, result.terminationMessage);
    let message = await readTail(context.terminationMessageFile, MAX_MESSAGE);
    if (
      !message &&
      result.exitCode !== 0 &&
      spec.terminationMessagePolicy === "FallbackToLogsOnError"
    )
      message = logTail(run.text());
    run.end();
    state.status.state = {
      terminated: {
        exitCode: result.exitCode,
        reason: result.reason ?? (result.exitCode === 0 ? "Completed" : "Error"),
        ...(message ? { message } : {}),
        startedAt,
        finishedAt: nowTime(),
        containerID,
      },
    };
    state.status.ready = false;
    state.status.started = false;
    state.controller = undefined;
    this.flush();
    return result;
  }

  private async watchReadiness(state: ContainerState, signal: AbortSignal): Promise<void> {
    state.probing = true;
    try {
      for (;;) {
        // The policy as it is now: setReadiness() replaces it for running containers too.
        const policy = this.kubelet.options.readiness;
        if (signal.aborted || !state.status.state?.running) return;
        let ready = true;
        try {
          ready = policy ? await policy(this.current(), state.spec) : true;
        } catch {
          ready = false;
        }
        if (signal.aborted || !state.status.state?.running) return;
        if (ready !== state.status.ready) {
          state.status.ready = ready;
          this.flush();
        }
        if (!policy) return;
        await this.kubelet.sleep(this.kubelet.options.probePeriodMs ?? 100, signal);
      }
    } finally {
      state.probing = false;
    }
  }

  /** A new readiness policy: containers whose loop ended (there was none) probe again. */
  readinessChanged(): void {
    for (const state of this.containers.values()) {
      if (
        state.kind === "regular" &&
        !state.probing &&
        state.controller &&
        state.status.state?.running
      )
        void this.watchReadiness(state, state.controller.signal);
    }
  }

  /** The pod as stored now (for fields the executor or readiness policy read). */
  private current(): Pod {
    return (this.kubelet.store.get<IPod & KubeObject>("pods", this.namespace, this.name) ??
      this.pod) as Pod;
  }

  /** Graceful termination: stop the containers, wait up to the grace period, delete the pod. */
  async terminate(pod: Pod): Promise<void> {
    if (this.terminating) return;
    this.terminating = true;
    this.pod = pod;
    this.abort.abort({ reason: "pod deleted" });
    const grace =
      (pod.metadata.deletionGracePeriodSeconds ?? 0) * 1000 * (this.kubelet.options.timeScale ?? 1);
    const running = [...this.containers.values()].map((state) => state.running).filter(Boolean);
    await Promise.race([Promise.allSettled(running), this.kubelet.sleep(grace)]);
    for (const state of this.containers.values()) {
      if (state.status.state?.running) {
        state.status.state = {
          terminated: {
            exitCode: 137,
            reason: "Error",
            startedAt: state.status.state.running.startedAt,
            finishedAt: nowTime(),
            containerID: state.status.containerID,
          },
        };
        state.status.ready = false;
      }
    }
    if (this.phase === "Pending" || this.phase === "Running") {
      const regular = [...this.containers.values()].filter((state) => state.kind === "regular");
      const ok =
        regular.length > 0 &&
        regular.every((state) => state.status.state?.terminated?.exitCode === 0);
      this.phase = ok ? "Succeeded" : "Failed";
    }
    await this.finish();
    if (this.gone) return;
    try {
      this.kubelet.store.delete("pods", this.namespace, this.name, {
        gracePeriodSeconds: 0,
        preconditions: { uid: this.uid },
      });
    } catch (error) {
      if (!(error instanceof KubeError && (error.code === 404 || error.code === 409))) throw error;
    }
  }

  /** The pod vanished from the store: stop without writing. */
  kill(): void {
    this.gone = true;
    this.abort.abort({ reason: "pod removed" });
  }

  /** Kills one running container with an exit code, as if its process died. */
  killContainer(name: string, exitCode: number): boolean {
    const state = this.containers.get(name);
    if (!state?.controller) return false;
    state.controller.abort({ exitCode });
    return true;
  }

  private async finish(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    for (const state of this.containers.values()) {
      if (state.status.state?.waiting && this.phase !== "Running") {
        state.status.state = {
          waiting: {
            reason:
              this.failedInit && state.kind === "regular"
                ? "PodInitializing"
                : state.status.state.waiting.reason,
          },
        };
      }
    }
    this.flush(true);
    await this.sandbox?.destroy();
    this.kubelet.forget(this);
  }

  /** Writes the pod status on the next tick (collapsing changes made in the same tick). */
  private flush(now = false): void {
    if (this.gone) return;
    if (now) {
      this.dirty = false;
      this.writeStatus();
      return;
    }
    if (this.dirty) return;
    this.dirty = true;
    setImmediate(() => {
      if (!this.dirty) return;
      this.dirty = false;
      this.writeStatus();
    });
  }

  private condition(
    type: string,
    status: boolean,
    reason?: string,
    message?: string,
  ): IPodCondition {
    const value = status ? "True" : "False";
    const previous = this.conditionTimes.get(type);
    const time = previous && previous.status === value ? previous.time : nowTime();
    this.conditionTimes.set(type, { status: value, time });
    return {
      type,
      status: value,
      lastProbeTime: null as unknown as string,
      lastTransitionTime: time,
      ...(reason ? { reason } : {}),
      ...(message ? { message } : {}),
    };
  }

  private writeStatus(): void {
    if (this.gone) return;
    const all = [...this.containers.values()];
    const regular = all.filter((state) => state.kind === "regular");
    const inits = all.filter((state) => state.kind === "init");
    const terminal = this.phase === "Succeeded" || this.phase === "Failed";
    const notReady = regular.filter((state) => !state.status.ready).map((state) => state.spec.name);
    const containersReady = notReady.length === 0 && regular.length > 0;
    const notInitialized = inits
      .filter((state) => state.status.state?.terminated?.exitCode !== 0)
      .map((s) => s.spec.name);
    const completed = terminal ? "PodCompleted" : undefined;
    const conditions: IPodCondition[] = [
      this.condition("PodReadyToStartContainers", this.readyToStart && !this.finished),
      this.condition(
        "Initialized",
        this.initialized || notInitialized.length === 0,
        this.initialized || notInitialized.length === 0 ? completed : "ContainersNotInitialized",
        this.initialized || notInitialized.length === 0
          ? undefined
          : `containers with incomplete status: [${notInitialized.join(" ")}]`,
      ),
      this.condition(
        "Ready",
        containersReady && !terminal,
        completed ?? (containersReady ? undefined : "ContainersNotReady"),
        containersReady || terminal
          ? undefined
          : `containers with unready status: [${notReady.join(" ")}]`,
      ),
      this.condition(
        "ContainersReady",
        containersReady && !terminal,
        completed ?? (containersReady ? undefined : "ContainersNotReady"),
        containersReady || terminal
          ? undefined
          : `containers with unready status: [${notReady.join(" ")}]`,
      ),
    ];
    const hostIP = this.kubelet.nodeIP(this.pod.spec?.nodeName ?? "");
    try {
      this.kubelet.store.mutate<KubeObject & IPod>(
        "pods",
        this.namespace,
        this.name,
        (draft) => {
          if (draft.metadata.uid !== this.uid) throw new Error("replaced");
          const previous = draft.status ?? {};
          const scheduled = (previous.conditions ?? []).filter((c) => c.type === "PodScheduled");
          draft.status = {
            ...previous,
            phase: this.phase,
            conditions: [...conditions, ...scheduled],
            hostIP,
            hostIPs: [{ ip: hostIP }],
            ...(this.podIP ? { podIP: this.podIP, podIPs: [{ ip: this.podIP }] } : {}),
            startTime: this.startTime,
            ...(inits.length
              ? { initContainerStatuses: inits.map((state) => structuredClone(state.status)) }
              : {}),
            containerStatuses: regular.map((state) => structuredClone(state.status)),
          };
        },
        { subresource: "status" },
      );
    } catch (error) {
      if (error instanceof Error && error.message === "replaced") return;
      if (!(error instanceof KubeError && (error.code === 404 || error.code === 409))) throw error;
    }
  }
}
