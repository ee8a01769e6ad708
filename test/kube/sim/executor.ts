// What runs a container in the simulated kubelet. The kubelet hands an executor everything a
// container runtime would have: the pod and container spec, resolved env, argv, and a sandbox
// on the host (the pod's volumes as directories, a private root for the rest of the container's
// filesystem, the file behind terminationMessagePath), plus an AbortSignal for when the pod is
// deleted or the container killed. Tests supply executors; later ones run real processes.
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IPod } from "kubernetes-models/v1/Pod";
import type { Stored } from "../objects.ts";
import type { Store } from "../store.ts";

export interface MountedVolume {
  /** The volume's name in the pod spec. */
  volume: string;
  containerPath: string;
  hostPath: string;
  readOnly: boolean;
}

export interface ContainerContext {
  /** The pod as stored when the container started. */
  pod: Stored<IPod & { metadata: { name: string; namespace: string; uid: string } }>;
  container: Stored<IContainer>;
  /** `init` containers run one by one before the `regular` ones, which run together. */
  kind: "init" | "regular";
  /** 0 on the first run, then the container's restartCount. */
  attempt: number;
  nodeName: string;
  image: string;
  /** The container's command, or [] to use the image's entrypoint. */
  command: string[];
  args: string[];
  workingDir?: string;
  /** The environment with env, envFrom and valueFrom resolved, as the process would see it. */
  env: Record<string, string>;
  mounts: MountedVolume[];
  /**
   * The host path standing for an absolute path inside the container: through the container's
   * volumeMounts (subPath included), the termination message file, or else the container's
   * private root directory.
   */
  hostPath(containerPath: string): string;
  /** The host file behind `terminationMessagePath` (empty when the container starts). */
  terminationMessageFile: string;
  /** The container's private root on the host (what is not a volume). */
  rootDir: string;
  /** Appends to the container's log, as its stdout/stderr would. */
  log(text: string): void;
  /** Aborted when the pod is deleted or the container is killed. */
  signal: AbortSignal;
  /** The cluster's objects, for executors that need Services, Secrets or other pods. */
  store: Store;
}

export interface ContainerResult {
  exitCode: number;
  /** Appended to the container's log after it exits (besides what `ctx.log` wrote). */
  log?: string;
  /** Written to the termination message file, as if the process wrote it before exiting. */
  terminationMessage?: string;
  /** Overrides the terminated reason (default Completed for 0, Error otherwise), e.g. OOMKilled. */
  reason?: string;
}

export type Executor = (context: ContainerContext) => ContainerResult | Promise<ContainerResult>;

/** Resolves when the signal aborts. */
export function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(), { once: true }),
  );
}

/**
 * The default: a container of a pod that restarts Always (a Deployment's or StatefulSet's)
 * runs until it is stopped and then exits 143 like a process ending on SIGTERM; any other
 * container exits 0 at once.
 */
export const defaultExecutor: Executor = async (context) => {
  if (context.kind === "regular" && (context.pod.spec?.restartPolicy ?? "Always") === "Always") {
    await aborted(context.signal);
    return { exitCode: 143 };
  }
  return { exitCode: 0 };
};

export type ExecutorRule = Executor | ContainerResult;

/**
 * An executor that picks a rule by the container's image (exact, then without tag or digest,
 * then the repository's last path segment) or by its command (argv[0], then its basename),
 * falling back to `fallback`.
 */
export function tableExecutor(
  rules: Record<string, ExecutorRule>,
  fallback: Executor = defaultExecutor,
): Executor {
  return (context) => {
    const image = context.image;
    const repository = image.replace(/@.*$/, "").replace(/:[^/:]*$/, "");
    const lastSegment = repository.slice(repository.lastIndexOf("/") + 1);
    const argv0 = context.command[0] ?? "";
    const base = argv0.slice(argv0.lastIndexOf("/") + 1);
    for (const key of [image, repository, lastSegment, argv0, base]) {
      if (!key) continue;
      const rule = rules[key];
      if (rule === undefined) continue;
      return typeof rule === "function" ? rule(context) : rule;
    }
    return fallback(context);
  };
}
