// The Job controller (NonIndexed jobs) and the TTL-after-finished controller: pods
// `<job>-<5 chars>` from the template; a failed pod is replaced after a back-off until
// backoffLimit, then the Job fails with BackoffLimitExceeded; activeDeadlineSeconds fails it
// with DeadlineExceeded and kills its pods; success at `completions`. Status carries
// active/ready/succeeded/failed/terminating/startTime/completionTime and the conditions of the
// server version (1.31+: FailureTarget before Failed, SuccessCriteriaMet before Complete).
import type { IJob } from "kubernetes-models/batch/v1/Job";
import type { IPod } from "kubernetes-models/v1/Pod";
import { jsonEqual, type KubeObject, nowTime, type Stored } from "../objects.ts";
import { KubeError } from "../status.ts";
import type { Store } from "../store.ts";
import { WorkQueue } from "./queue.ts";
import {
  controllerOf,
  isActive,
  isReady,
  isTerminal,
  ownedPods,
  podFromTemplate,
} from "./workloads.ts";

type Job = Stored<IJob & KubeObject>;
type Pod = Stored<IPod & KubeObject>;

const JOBS = "jobs.batch";

export interface JobControllerOptions {
  /** Multiplies activeDeadlineSeconds and ttlSecondsAfterFinished (default 1). */
  timeScale?: number;
  /** Delay before replacing the first failed pod, doubling per failure (default 10 ms; real: 10 s). */
  podFailureBackoffMs?: number;
}

interface Tracking {
  succeeded: Set<string>;
  failed: Set<string>;
  lastFailure: number;
  /** Millisecond times behind startTime and the finish (the API's times have whole seconds). */
  startedAt?: number;
  finishedAt?: number;
}

interface Condition {
  type: string;
  status: string;
  lastProbeTime: string;
  lastTransitionTime: string;
  reason?: string;
  message?: string;
}

export class JobController {
  private readonly store: Store;
  private readonly queue: WorkQueue;
  private readonly unsubscribe: () => void;
  private readonly tracking = new Map<string, Tracking>();
  private readonly options: JobControllerOptions;

  constructor(store: Store, options: JobControllerOptions = {}) {
    this.store = store;
    this.options = options;
    this.queue = new WorkQueue((key) => this.reconcile(key));
    this.unsubscribe = store.onChange((event, info) => {
      const meta = event.object.metadata;
      if (info.resource === "jobs" && info.group === "batch") {
        if (event.type === "DELETED") this.tracking.delete(meta.uid!);
        else this.queue.add(`${meta.namespace}/${meta.name}`);
      } else if (info.resource === "pods" && !info.group) {
        const owner = controllerOf(event.object);
        // Pods of a Job that is gone (deleted, or deleted and orphaning) are nobody's to count.
        if (owner?.kind !== "Job" || !store.byUid(owner.uid)) return;
        const pod = event.object as Pod;
        const track = this.track(owner.uid);
        if (pod.status?.phase === "Succeeded") track.succeeded.add(meta.uid!);
        else if (pod.status?.phase === "Failed" || event.type === "DELETED")
          this.countFailure(track, meta.uid!);
        this.queue.add(`${meta.namespace}/${owner.name}`);
      }
    });
    for (const job of store.objects(JOBS))
      this.queue.add(`${job.metadata.namespace}/${job.metadata.name}`);
  }

  stop(): void {
    this.unsubscribe();
    this.queue.stop();
  }

  private track(uid: string): Tracking {
    let track = this.tracking.get(uid);
    if (!track) {
      track = { succeeded: new Set(), failed: new Set(), lastFailure: 0 };
      this.tracking.set(uid, track);
    }
    return track;
  }

  private countFailure(track: Tracking, podUid: string): void {
    if (track.succeeded.has(podUid) || track.failed.has(podUid)) return;
    track.failed.add(podUid);
    track.lastFailure = Date.now();
  }

  private get scale(): number {
    return this.options.timeScale ?? 1;
  }

  private reconcile(key: string): void {
    const [namespace, name] = key.split("/") as [string, string];
    const job = this.store.get<IJob & KubeObject>(JOBS, namespace, name) as Job | undefined;
    if (!job || job.metadata.deletionTimestamp) return;
    const uid = job.metadata.uid!;
    const spec = job.spec!;
    const status = (job.status ?? {}) as Record<string, unknown>;
    const conditions = [...((status.conditions ?? []) as Condition[])];
    const has = (type: string) => conditions.some((c) => c.type === type && c.status === "True");
    const track = this.track(uid);
    const pods = ownedPods(this.store, uid);
    for (const pod of pods) {
      if (pod.status?.phase === "Succeeded") track.succeeded.add(pod.metadata.uid!);
      else if (pod.status?.phase === "Failed") this.countFailure(track, pod.metadata.uid!);
    }
    const active = pods.filter(isActive);
    const terminating = pods.filter((pod) => !isTerminal(pod) && pod.metadata.deletionTimestamp);
    const now = nowTime();
    const modern = this.store.serverVersion.major > 1 || this.store.serverVersion.minor >= 31;
    const condition = (type: string, reason?: string, message?: string): Condition => ({
      type,
      status: "True",
      lastProbeTime: now,
      lastTransitionTime: now,
      ...(reason !== undefined ? { reason } : {}),
      ...(message !== undefined ? { message } : {}),
    });
    const startTime = (status.startTime as string | undefined) ?? (spec.suspend ? undefined : now);
    let completionTime = status.completionTime as string | undefined;
    const completions = spec.completions ?? 1;
    const parallelism = spec.parallelism ?? 1;
    const finished = has("Complete") || has("Failed");

    if (!finished) {
      let failure: [string, string] | undefined = has("FailureTarget")
        ? [
            conditions.find((c) => c.type === "FailureTarget")!.reason ?? "",
            conditions.find((c) => c.type === "FailureTarget")!.message ?? "",
          ]
        : undefined;
      if (startTime && track.startedAt === undefined)
        track.startedAt = status.startTime ? Date.parse(startTime) : Date.now();
      const elapsed = startTime ? Date.now() - (track.startedAt ?? Date.now()) : 0;
      const deadline =
        spec.activeDeadlineSeconds !== undefined
          ? spec.activeDeadlineSeconds * 1000 * this.scale
          : undefined;
      const restarts =
        spec.template.spec?.restartPolicy === "OnFailure"
          ? active.reduce(
              (n, pod) =>
                n +
                (pod.status?.containerStatuses ?? []).reduce(
                  (m, c) => m + (c.restartCount ?? 0),
                  0,
                ) +
                (pod.status?.initContainerStatuses ?? []).reduce(
                  (m, c) => m + (c.restartCount ?? 0),
                  0,
                ),
              0,
            )
          : 0;
      const backoffLimit = spec.backoffLimit ?? 6;
      if (!failure && !has("SuccessCriteriaMet")) {
        if (deadline !== undefined && startTime && elapsed >= deadline)
          failure = ["DeadlineExceeded", "Job was active longer than specified deadline"];
        else if (
          track.failed.size > backoffLimit ||
          (restarts > 0 && track.failed.size + restarts > backoffLimit)
        )
          failure = ["BackoffLimitExceeded", "Job has reached the specified backoff limit"];
      }
      if (failure) {
        for (const pod of active) this.deletePod(pod);
        if (modern && !has("FailureTarget"))
          conditions.push(condition("FailureTarget", ...failure));
        if (!modern || active.length + terminating.length === 0)
          conditions.push(condition("Failed", ...failure));
      } else if (track.succeeded.size >= completions || has("SuccessCriteriaMet")) {
        for (const pod of active) this.deletePod(pod);
        const reason = modern ? "CompletionsReached" : undefined;
        const message = modern ? "Reached expected number of succeeded pods" : undefined;
        if (modern && !has("SuccessCriteriaMet"))
          conditions.push(condition("SuccessCriteriaMet", reason, message));
        if (!modern || active.length + terminating.length === 0) {
          conditions.push(condition("Complete", reason, message));
          completionTime = now;
        }
      } else if (spec.suspend) {
        for (const pod of active) this.deletePod(pod);
      } else {
        const want =
          Math.min(parallelism, completions - track.succeeded.size) -
          active.length -
          terminating.length;
        if (want > 0) {
          const failures = track.failed.size;
          const delay =
            failures === 0
              ? 0
              : Math.min((this.options.podFailureBackoffMs ?? 10) * 2 ** (failures - 1), 360_000);
          const wait = track.lastFailure + delay - Date.now();
          if (wait > 0) this.queue.addAfter(key, wait);
          else for (let i = 0; i < want; i++) this.createPod(job);
        }
        if (deadline !== undefined && startTime)
          this.queue.addAfter(key, Math.max(1, deadline - elapsed + 1));
      }
    } else if (has("Failed")) {
      for (const pod of active) this.deletePod(pod);
    }

    const fresh = ownedPods(this.store, uid);
    const nowActive = fresh.filter(isActive);
    const nowTerminating = fresh.filter(
      (pod) => !isTerminal(pod) && pod.metadata.deletionTimestamp,
    );
    const next: Record<string, unknown> = {
      ...(startTime ? { startTime } : {}),
      ...(completionTime ? { completionTime } : {}),
      ...(nowActive.length ? { active: nowActive.length } : {}),
      ready: nowActive.filter(isReady).length,
      ...(track.succeeded.size ? { succeeded: track.succeeded.size } : {}),
      ...(track.failed.size ? { failed: track.failed.size } : {}),
      terminating: nowTerminating.length,
      uncountedTerminatedPods: {},
      ...(conditions.length ? { conditions } : {}),
    };
    if (!jsonEqual(next, status))
      this.store.mutate(
        JOBS,
        namespace,
        name,
        (draft) => {
          draft.status = next;
        },
        { subresource: "status" },
      );
    this.expire(job, conditions, key);
  }

  /** ttlSecondsAfterFinished: the TTL controller deletes a finished Job (foreground). */
  private expire(job: Job, conditions: Condition[], key: string): void {
    const ttl = job.spec?.ttlSecondsAfterFinished;
    if (ttl === undefined) return;
    const done = conditions.find(
      (c) => (c.type === "Complete" || c.type === "Failed") && c.status === "True",
    );
    if (!done) return;
    const track = this.track(job.metadata.uid!);
    track.finishedAt ??= Date.now();
    const due = track.finishedAt + ttl * 1000 * this.scale;
    if (Date.now() < due) {
      this.queue.addAfter(key, due - Date.now() + 1);
      return;
    }
    try {
      this.store.delete(JOBS, job.metadata.namespace, job.metadata.name!, {
        propagationPolicy: "Foreground",
        preconditions: { uid: job.metadata.uid! },
      });
    } catch (error) {
      if (!(error instanceof KubeError && (error.code === 404 || error.code === 409))) throw error;
    }
  }

  private createPod(job: Job): void {
    this.store.create(
      "pods",
      podFromTemplate(
        job.spec?.template,
        job as Stored<KubeObject & { apiVersion: string; kind: string }>,
        {
          generateName: `${job.metadata.name}-`,
        },
      ),
      { namespace: job.metadata.namespace },
    );
  }

  private deletePod(pod: Pod): void {
    try {
      this.store.delete("pods", pod.metadata.namespace, pod.metadata.name!, {
        preconditions: { uid: pod.metadata.uid! },
      });
    } catch (error) {
      if (!(error instanceof KubeError && (error.code === 404 || error.code === 409))) throw error;
    }
  }
}
