// The benchmark's API server in a process of its own: test/kube with its simulated controllers,
// the kubelet and the build player (bench/cluster.ts starts it with startPlayedKube's options).
// The bench process drives it over IPC (bench/cluster.ts): seeding, reading the store and
// the request log, and waiting on store events, so that the API server, the operator, the floor
// and the client creating builds never share an event loop and each one's CPU is its own.
//
//   node bench/kube-host.ts '<KubeOptions as JSON>'     (spawned with an IPC channel)
//
// Times it reports are milliseconds since the epoch (Date.now()), which the
// bench process compares with its own clock.
import { randomUUID } from "node:crypto";
import { startPlayedKube } from "../test/imagebuild/cluster.ts";
import { BuildPlayer } from "../test/imagebuild/player.ts";
import type { KubeObject, KubeOptions } from "../test/kube/index.ts";

export interface BuildObjects {
  name: string;
  build: KubeObject;
  secret: KubeObject;
  jobs: KubeObject[];
  pods: KubeObject[];
}

const NS = "builds";
const now = () => Date.now();
const isPlatformJob = (name: string) => /-(amd64|arm64)$/.test(name);
const buildOf = (job: string) => job.replace(/-(amd64|arm64)$/, "");

if (!process.send) throw new Error("bench/kube-host.ts runs with an IPC channel");
const options = JSON.parse(process.argv[2] ?? "{}") as KubeOptions;
const player = new BuildPlayer();
const kube = await startPlayedKube(player, options);
const store = kube.store;

/** Platform Jobs seen per tracked prefix: count, the time of each build's second, waiters. */
const tracks = new Map<
  string,
  {
    seen: number;
    perBuild: Map<string, number>;
    complete: Map<string, number>;
    waiters: { count: number; resolve: (at: number) => void }[];
    stop: () => void;
  }
>();

function buildObjects(name: string): BuildObjects {
  const jobs = ["amd64", "arm64"].map(
    (slug) => store.get("jobs.batch", NS, `${name}-${slug}`) as KubeObject,
  );
  const jobUids = new Set(jobs.map((job) => job.metadata.uid));
  const pods = (store.objects("pods", NS) as KubeObject[]).filter((pod) =>
    (pod.metadata.ownerReferences ?? []).some((ref) => jobUids.has(ref.uid)),
  );
  return {
    name,
    build: store.get("imagebuilds.buildfarm.dev", NS, name) as KubeObject,
    secret: store.get("secrets", NS, `${name}-buildkit-client`) as KubeObject,
    jobs,
    pods,
  };
}

/** A copy of the template's objects for build `name`, with fresh uids. */
function copyOf(template: BuildObjects, name: string): BuildObjects {
  let text = JSON.stringify(template);
  for (const object of [template.build, template.secret, ...template.jobs, ...template.pods])
    text = text.replaceAll(object.metadata.uid as string, randomUUID());
  text = text
    .replaceAll(`"${template.name}`, `"${name}`)
    .replaceAll(`/${template.name}`, `/${name}`);
  const copy = JSON.parse(text) as BuildObjects;
  for (const object of [copy.build, copy.secret, ...copy.jobs, ...copy.pods])
    delete object.metadata.resourceVersion;
  return { ...copy, name };
}

function waitPhases(names: string[], phases: string[], timeout: number): Promise<void> {
  const left = new Set(names);
  const check = (object: { metadata?: { name?: string }; status?: { phase?: string } }) => {
    if (phases.includes(object.status?.phase ?? "")) left.delete(object.metadata?.name ?? "");
  };
  for (const name of names) {
    const current = store.get("imagebuilds.buildfarm.dev", NS, name);
    if (current) check(current as never);
  }
  if (left.size === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(
        new Error(
          `${left.size} builds did not reach ${phases.join("|")} in ${timeout} ms: ${[...left].slice(0, 5).join(", ")}`,
        ),
      );
    }, timeout);
    const stop = store.onChange((event, info) => {
      if (info.resource !== "imagebuilds" || event.type === "DELETED") return;
      check(event.object as never);
      if (left.size === 0) {
        clearTimeout(timer);
        stop();
        resolve();
      }
    });
  });
}

type Args = never[];
const methods: Record<string, (...args: Args) => unknown> = {
  url: () => kube.url,
  holdAll: (hold: boolean) => {
    player.holdAll = hold;
  },
  get: (resource: string, namespace: string, name: string) => store.get(resource, namespace, name),
  getMany: (keys: [string, string, string][]) =>
    keys.map(([resource, namespace, name]) => store.get(resource, namespace, name)),
  seed: (resource: string, objects: KubeObject[]) => {
    for (const object of objects) store.seed(resource, object);
  },
  mark: () => kube.requestLog.mark(),
  since: (mark: number) => kube.requestLog.since(mark),
  buildObjects: (name: string) => buildObjects(name),
  /** Seeds `count` copies of a finished build's objects; says how many of each. */
  seedCopies: (template: BuildObjects, prefix: string, count: number) => {
    const counts = { jobs: 0, pods: 0, secrets: 0 };
    for (let i = 0; i < count; i++) {
      const copy = copyOf(template, `${prefix}${i}`);
      store.seed("imagebuilds.buildfarm.dev", copy.build);
      store.seed("secrets", copy.secret);
      for (const job of copy.jobs) store.seed("jobs.batch", job);
      for (const pod of copy.pods) store.seed("pods", pod);
      counts.jobs += copy.jobs.length;
      counts.pods += copy.pods.length;
      counts.secrets += 1;
    }
    return counts;
  },
  /** Starts counting the platform Jobs (`<build>-amd64|arm64`) of builds named `prefix…`. */
  trackJobs: (prefix: string) => {
    const track = {
      seen: 0,
      perBuild: new Map<string, number>(),
      complete: new Map<string, number>(),
      waiters: [] as { count: number; resolve: (at: number) => void }[],
      stop: (): void => undefined,
    };
    track.stop = store.onChange((event, info) => {
      if (info.resource !== "jobs" || event.type !== "ADDED") return;
      const name = event.object.metadata.name as string;
      if (!name.startsWith(prefix) || !isPlatformJob(name)) return;
      const at = now();
      track.seen++;
      const build = buildOf(name);
      const seen = (track.perBuild.get(build) ?? 0) + 1;
      track.perBuild.set(build, seen);
      if (seen === 2) track.complete.set(build, at);
      for (const waiter of track.waiters.filter((w) => track.seen >= w.count)) {
        track.waiters.splice(track.waiters.indexOf(waiter), 1);
        waiter.resolve(at);
      }
    });
    tracks.set(prefix, track);
  },
  /** Resolves with the time the `count`-th platform Job of the tracked prefix appeared. */
  jobsSeen: (prefix: string, count: number) => {
    const track = tracks.get(prefix);
    if (!track) throw new Error(`${prefix} is not tracked`);
    if (track.seen >= count) return now();
    return new Promise<number>((resolve) => track.waiters.push({ count, resolve }));
  },
  /** When each tracked build's second platform Job appeared; stops tracking. */
  jobTimes: (prefix: string) => {
    const track = tracks.get(prefix);
    tracks.delete(prefix);
    track?.stop();
    return Object.fromEntries(track?.complete ?? []);
  },
  waitPhases: (names: string[], phases: string[], timeout: number) =>
    waitPhases(names, phases, timeout),
  stop: async () => {
    await kube.stop();
    setImmediate(() => process.exit(0));
  },
};

process.on("message", async (message: { id: number; method: string; args: Args }) => {
  try {
    const method = methods[message.method];
    if (!method) throw new Error(`no method ${message.method}`);
    const result = await method(...message.args);
    process.send?.({ id: message.id, result });
  } catch (error) {
    process.send?.({ id: message.id, error: (error as Error).stack ?? String(error) });
  }
});
process.on("disconnect", () => process.exit(0));
process.send({ ready: true, url: kube.url });
