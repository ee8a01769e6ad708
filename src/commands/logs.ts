// `buildfarm logs <imagebuild>`: every pod of a build (each platform's buildctl, the index
// Job's assemble) in one stream, each line prefixed with its platform. --follow streams until
// the build finishes; --wait does too and exits 1 unless it Succeeded, for CI scripts.
// Installable as `kubectl buildfarm logs`.

import type { V1Pod } from "@kubernetes/client-node";
import { type BuildPhase, isTerminal } from "../api/imagebuild-status.ts";
import { PLATFORM, specPlatforms } from "../api/platform.ts";
import type { StoredImageBuild } from "../api/resources.ts";
import { errorMessage } from "../errors.ts";
import { COMPONENTS, LABELS } from "../naming.ts";
import { isRetryableStatus, type RetryPolicy, retryDelay } from "../registry/retry.ts";
import { isNotFound, KubeApiError, type KubeClient, RESOURCES } from "../runtime/client.ts";
import { clusterArgs, readBuild, UsageError } from "./cluster.ts";

const USAGE =
  "usage: buildfarm logs <imagebuild> [-n namespace] [-f|--follow] [-w|--wait] [--kubeconfig file]\n";
const POLL_MS = 1000;
/** Reads tried while following before a failure ends the command (about 1, 2, 4, 8 s apart). */
const READ_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: POLL_MS, maxDelayMs: 8 * POLL_MS };

/**
 * While following, a read that fails for a passing reason (a dropped connection, the API
 * server restarting or throttling) is tried again: a CI script waiting with -w must not fail
 * a build that may still succeed. A refusal (403, 404) ends it at once.
 */
async function retrying<T>(follow: boolean, read: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await read();
    } catch (error) {
      const passing =
        error instanceof KubeApiError ? isRetryableStatus(error.code) : error instanceof TypeError; // fetch's network failures
      if (!follow || !passing || attempt >= READ_RETRY.attempts) throw error;
      const retryAfterMs =
        error instanceof KubeApiError && error.retryAfterSeconds !== undefined
          ? error.retryAfterSeconds * 1000
          : undefined;
      await new Promise((resolve) =>
        setTimeout(resolve, retryDelay(READ_RETRY, attempt, retryAfterMs)),
      );
    }
  }
}

/** The prefix of a pod's lines: its platform, or the step it runs. */
export function podPrefix(pod: V1Pod, build: StoredImageBuild): string {
  const labels = pod.metadata?.labels ?? {};
  const slug = labels[LABELS.platform];
  if (slug) {
    // The build is read unparsed (StoredImageBuild): what is no platform is skipped, not thrown on.
    const platforms = specPlatforms((build.spec.platforms ?? []).filter((p) => PLATFORM.test(p)));
    return platforms.find((platform) => platform.slug === slug)?.platform ?? slug;
  }
  return labels[LABELS.component] === COMPONENTS.index
    ? "index"
    : (labels[LABELS.component] ?? pod.metadata?.name ?? "?");
}

/** Containers of a pod in the order they run, with whether each has started. */
function containersOf(pod: V1Pod): { name: string; started: boolean; finished: boolean }[] {
  const statuses = [
    ...(pod.status?.initContainerStatuses ?? []),
    ...(pod.status?.containerStatuses ?? []),
  ];
  return [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].map((container) => {
    const state = statuses.find((status) => status.name === container.name)?.state;
    return {
      name: container.name,
      started: Boolean(state?.running || state?.terminated),
      finished: Boolean(state?.terminated),
    };
  });
}

type Print = (line: string) => void;

export interface FollowResult {
  phase: BuildPhase;
  image?: string;
  message?: string;
}

/**
 * Prints the build's logs. Without `follow`, what exists now; with it, streams new pods and
 * lines until the build reaches a final phase and every stream has ended.
 */
export async function streamBuildLogs(
  client: KubeClient,
  namespace: string,
  name: string,
  options: { follow: boolean; print: Print; signal?: AbortSignal },
): Promise<FollowResult> {
  const { print } = options;
  const seen = new Map<string, "streaming" | "done">();
  const streams = new Set<Promise<void>>();
  for (;;) {
    const build = await retrying(options.follow, () => readBuild(client, namespace, name));
    const pods = (
      await retrying(options.follow, () =>
        client.list<V1Pod>(RESOURCES.pod, namespace, {
          labelSelector: `${LABELS.build}=${name}`,
        }),
      )
    ).items.sort((a, b) =>
      String(a.metadata?.creationTimestamp ?? "").localeCompare(
        String(b.metadata?.creationTimestamp ?? ""),
      ),
    );
    for (const pod of pods) {
      const prefix = `[${podPrefix(pod, build)}]`;
      for (const container of containersOf(pod)) {
        const key = `${pod.metadata?.name}/${container.name}`;
        if (seen.has(key) || !container.started) continue;
        if (!options.follow) {
          seen.set(key, "done");
          try {
            const text = await client.podLog(namespace, pod.metadata?.name as string, {
              container: container.name,
            });
            for (const line of text.split("\n")) if (line) print(`${prefix} ${line}`);
          } catch (error) {
            if (!isNotFound(error)) throw error;
          }
          continue;
        }
        seen.set(key, "streaming");
        const stream = (async () => {
          try {
            for await (const line of client.followPodLog(namespace, pod.metadata?.name as string, {
              container: container.name,
              signal: options.signal,
            }))
              print(`${prefix} ${line}`);
          } catch (error) {
            if (!isNotFound(error)) print(`${prefix} (log unavailable: ${errorMessage(error)})`);
          } finally {
            seen.set(key, "done");
          }
        })();
        streams.add(stream);
        void stream.finally(() => streams.delete(stream));
      }
    }
    const phase = build.status?.phase ?? "Pending";
    const finished = isTerminal(phase);
    if (!options.follow || (finished && streams.size === 0) || options.signal?.aborted) {
      const failed = build.status?.conditions?.find(
        (c) => c.type === "Succeeded" && c.status === "False",
      );
      return {
        phase,
        ...(build.status?.image ? { image: build.status.image } : {}),
        ...(failed ? { message: failed.message } : {}),
      };
    }
    if (finished)
      await Promise.race([
        Promise.all(streams),
        new Promise((resolve) => setTimeout(resolve, 10 * POLL_MS)),
      ]);
    else await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

export async function logsCommand(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(USAGE);
    return 0;
  }
  let args: ReturnType<typeof clusterArgs>;
  try {
    args = clusterArgs(argv, { follow: "f", wait: "w" });
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`buildfarm logs: ${error.message}\n${USAGE}`);
      return 2;
    }
    throw error;
  }
  const wait = args.flags.wait === true;
  const result = await streamBuildLogs(args.client, args.namespace, args.name, {
    follow: wait || args.flags.follow === true,
    print: (line) => process.stdout.write(`${line}\n`),
  });
  if (result.phase === "Succeeded") process.stdout.write(`==> Succeeded: ${result.image ?? ""}\n`);
  else if (isTerminal(result.phase))
    process.stdout.write(`==> ${result.phase}: ${result.message ?? ""}\n`);
  else process.stdout.write(`==> ${result.phase}\n`);
  return wait && result.phase !== "Succeeded" ? 1 : 0;
}
