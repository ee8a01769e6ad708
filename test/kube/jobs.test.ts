// Jobs run by the simulated kubelet through a test executor: init containers then containers,
// a real sandbox (volumes on disk, termination message files), termination messages as the
// kubelet reads them, pods/log, backoffLimit, activeDeadlineSeconds, deletion, TTL.
import { mkdir, readdir, readFile, readlink, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { PassThrough } from "node:stream";
import { BatchV1Api, CoreV1Api, Log, type V1Job, type V1Pod } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ContainerContext, type Kube, startKube, tableExecutor } from "./index.ts";
import { aborted } from "./sim/executor.ts";

let kube: Kube;
let batch: BatchV1Api;
let core: CoreV1Api;
/** Attempts per job name, for executors that fail a few times. */
const attempts = new Map<string, number>();
/** Signals of containers that were aborted. */
const abortedContainers: string[] = [];
let seenSandbox: Record<string, unknown> = {};

const jobOf = (ctx: ContainerContext) => ctx.pod.metadata.labels?.["job-name"] ?? "";

beforeAll(async () => {
  kube = await startKube({
    namespaces: ["j"],
    timeScale: 0.1,
    executor: tableExecutor({
      // buildctl ... --metadata-file /out/metadata.json
      buildctl: async (ctx) => {
        const file = ctx.hostPath(ctx.args[ctx.args.indexOf("--metadata-file") + 1]!);
        await mkdir(dirname(file), { recursive: true });
        await writeFile(file, JSON.stringify({ "containerimage.digest": "sha256:0123abcd" }));
        ctx.log("#1 pushing layers done\n");
        return { exitCode: 0 };
      },
      // cp <from> <to>, inside the container
      cp: async (ctx) => {
        await writeFile(ctx.hostPath(ctx.args[1]!), await readFile(ctx.hostPath(ctx.args[0]!)));
        return { exitCode: 0 };
      },
      fail: (ctx) => {
        for (let i = 1; i <= 100; i++) ctx.log(`line ${i}\n`);
        return { exitCode: 3 };
      },
      flaky: (ctx) => {
        const n = (attempts.get(jobOf(ctx)) ?? 0) + 1;
        attempts.set(jobOf(ctx), n);
        return { exitCode: n <= Number(ctx.args[0]) ? 1 : 0, log: `attempt ${n}\n` };
      },
      hang: async (ctx) => {
        ctx.log("started\n");
        await aborted(ctx.signal);
        abortedContainers.push(ctx.pod.metadata.name);
        return { exitCode: 143 };
      },
      "long-message": () => ({ exitCode: 0, terminationMessage: `${"a".repeat(5000)}END` }),
      inspect: async (ctx) => {
        const secretDir = ctx.hostPath("/etc/secret");
        seenSandbox = {
          entries: (await readdir(secretDir)).sort(),
          token: await readFile(join(secretDir, "token"), "utf8"),
          mode: (await stat(join(secretDir, "token"))).mode & 0o777,
          data: await readlink(join(secretDir, "..data")),
          config: await readFile(ctx.hostPath("/etc/config/renamed.toml"), "utf8"),
          env: { TOKEN: ctx.env.TOKEN, POD: ctx.env.POD, LEVEL: ctx.env.LEVEL },
          args: ctx.args,
          unmounted: ctx.hostPath("/tmp/x").startsWith(ctx.rootDir),
        };
        return { exitCode: 0 };
      },
    }),
  });
  batch = kube.kubeConfig().makeApiClient(BatchV1Api);
  core = kube.kubeConfig().makeApiClient(CoreV1Api);
});
afterAll(() => kube.stop());

function job(
  name: string,
  spec: Partial<NonNullable<V1Job["spec"]>>,
  podSpec: Partial<NonNullable<V1Pod["spec"]>>,
): V1Job {
  return {
    metadata: { name },
    spec: {
      backoffLimit: 0,
      ...spec,
      template: { spec: { restartPolicy: "Never", containers: [], ...podSpec } },
    },
  };
}

const readJob = (name: string) => batch.readNamespacedJob({ namespace: "j", name });
const podsOf = async (name: string) =>
  (
    await core.listNamespacedPod({
      namespace: "j",
      labelSelector: `batch.kubernetes.io/job-name=${name}`,
    })
  ).items;
const conditionTypes = (j: V1Job) =>
  (j.status?.conditions ?? []).map((c) => `${c.type}:${c.reason ?? ""}`);
const finished = (name: string) =>
  kube.waitFor(async () => {
    const j = await readJob(name);
    return j.status?.conditions?.some((c) => c.type === "Complete" || c.type === "Failed") && j;
  });

describe("a build Job", () => {
  it("runs the init container, then the container; the metadata file becomes the termination message", async () => {
    await batch.createNamespacedJob({
      namespace: "j",
      body: job(
        "build-amd64",
        {},
        {
          volumes: [{ name: "out", emptyDir: {} }],
          initContainers: [
            {
              name: "build",
              image: "moby/buildkit:v0.16.0",
              command: ["buildctl"],
              args: ["build", "--metadata-file", "/out/metadata.json"],
              volumeMounts: [{ name: "out", mountPath: "/out" }],
            },
          ],
          containers: [
            {
              name: "report",
              image: "busybox",
              command: ["cp"],
              args: ["/out/metadata.json", "/dev/termination-log"],
              volumeMounts: [{ name: "out", mountPath: "/out" }],
            },
          ],
        },
      ),
    });
    const done = await finished("build-amd64");
    expect(conditionTypes(done)).toEqual([
      "SuccessCriteriaMet:CompletionsReached",
      "Complete:CompletionsReached",
    ]);
    expect(done.status).toMatchObject({ succeeded: 1, ready: 0, terminating: 0 });
    expect(done.status?.active).toBeUndefined();
    expect(done.status?.completionTime).toBeInstanceOf(Date);
    expect(done.status?.startTime).toBeInstanceOf(Date);

    const [pod] = await podsOf("build-amd64");
    expect(pod?.metadata?.name).toMatch(/^build-amd64-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
    expect(pod?.metadata?.labels).toMatchObject({
      "job-name": "build-amd64",
      "controller-uid": done.metadata?.uid,
    });
    expect(pod?.metadata?.ownerReferences?.[0]).toMatchObject({
      kind: "Job",
      name: "build-amd64",
      controller: true,
    });
    expect(pod?.status?.phase).toBe("Succeeded");
    const terminated = pod?.status?.containerStatuses?.[0]?.state?.terminated;
    expect(terminated).toMatchObject({ exitCode: 0, reason: "Completed" });
    expect(JSON.parse(terminated?.message ?? "")).toEqual({
      "containerimage.digest": "sha256:0123abcd",
    });
    expect(terminated?.startedAt).toBeInstanceOf(Date);
    expect(terminated?.finishedAt).toBeInstanceOf(Date);
    expect(pod?.status?.initContainerStatuses?.[0]?.state?.terminated).toMatchObject({
      exitCode: 0,
      reason: "Completed",
    });
    expect(pod?.status?.initContainerStatuses?.[0]?.state?.terminated?.message).toBeUndefined();

    const log = await core.readNamespacedPodLog({
      namespace: "j",
      name: pod!.metadata!.name!,
      container: "build",
    });
    expect(log).toBe("#1 pushing layers done\n");
  });

  it("reports a failing init container's log tail with FallbackToLogsOnError, and fails the Job", async () => {
    await batch.createNamespacedJob({
      namespace: "j",
      body: job(
        "broken",
        {},
        {
          initContainers: [
            {
              name: "build",
              image: "moby/buildkit",
              command: ["fail"],
              terminationMessagePolicy: "FallbackToLogsOnError",
            },
          ],
          containers: [{ name: "report", image: "busybox", command: ["cp"] }],
        },
      ),
    });
    const done = await finished("broken");
    expect(conditionTypes(done)).toEqual([
      "FailureTarget:BackoffLimitExceeded",
      "Failed:BackoffLimitExceeded",
    ]);
    expect(done.status?.conditions?.[1]?.message).toBe(
      "Job has reached the specified backoff limit",
    );
    expect(done.status?.failed).toBe(1);
    const [pod] = await podsOf("broken");
    expect(pod?.status?.phase).toBe("Failed");
    const terminated = pod?.status?.initContainerStatuses?.[0]?.state?.terminated;
    expect(terminated).toMatchObject({ exitCode: 3, reason: "Error" });
    const lines = (terminated?.message ?? "").split("\n").filter(Boolean);
    expect(lines).toHaveLength(80);
    expect(lines[0]).toBe("line 21");
    expect(lines[79]).toBe("line 100");
    expect(pod?.status?.containerStatuses?.[0]?.state?.waiting?.reason).toBe("PodInitializing");
    expect(pod?.status?.conditions?.find((c) => c.type === "Initialized")).toMatchObject({
      status: "False",
      reason: "ContainersNotInitialized",
    });
  });

  it("keeps the last 4096 bytes of a long termination message", async () => {
    await batch.createNamespacedJob({
      namespace: "j",
      body: job(
        "long",
        {},
        { containers: [{ name: "c", image: "busybox", command: ["long-message"] }] },
      ),
    });
    await finished("long");
    const [pod] = await podsOf("long");
    const message = pod?.status?.containerStatuses?.[0]?.state?.terminated?.message ?? "";
    expect(message).toHaveLength(4096);
    expect(message.endsWith("END")).toBe(true);
  });
});

describe("retries and deadlines", () => {
  it("replaces failed pods until one succeeds within backoffLimit", async () => {
    await batch.createNamespacedJob({
      namespace: "j",
      body: job(
        "flaky-ok",
        { backoffLimit: 2 },
        { containers: [{ name: "c", image: "busybox", command: ["flaky"], args: ["2"] }] },
      ),
    });
    const done = await finished("flaky-ok");
    expect(conditionTypes(done)).toContain("Complete:CompletionsReached");
    expect(done.status).toMatchObject({ failed: 2, succeeded: 1 });
    expect((await podsOf("flaky-ok")).map((p) => p.status?.phase).sort()).toEqual([
      "Failed",
      "Failed",
      "Succeeded",
    ]);
  });

  it("replaces a failed pod after its back-off, not at the deadline a Job also has", async () => {
    await batch.createNamespacedJob({
      namespace: "j",
      body: job(
        "flaky-deadline",
        { backoffLimit: 2, activeDeadlineSeconds: 600 },
        { containers: [{ name: "c", image: "busybox", command: ["flaky"], args: ["1"] }] },
      ),
    });
    const done = await finished("flaky-deadline");
    expect(conditionTypes(done)).toContain("Complete:CompletionsReached");
    expect(done.status).toMatchObject({ failed: 1, succeeded: 1 });
  });

  it("fails with BackoffLimitExceeded after backoffLimit + 1 failed pods", async () => {
    await batch.createNamespacedJob({
      namespace: "j",
      body: job(
        "flaky-no",
        { backoffLimit: 1 },
        { containers: [{ name: "c", image: "busybox", command: ["flaky"], args: ["9"] }] },
      ),
    });
    const done = await finished("flaky-no");
    expect(conditionTypes(done)).toEqual([
      "FailureTarget:BackoffLimitExceeded",
      "Failed:BackoffLimitExceeded",
    ]);
    expect(done.status?.failed).toBe(2);
    expect(await podsOf("flaky-no")).toHaveLength(2);
  });

  it("fails with DeadlineExceeded after activeDeadlineSeconds, aborting the running container", async () => {
    await batch.createNamespacedJob({
      namespace: "j",
      body: job(
        "slow",
        { activeDeadlineSeconds: 3 },
        { containers: [{ name: "c", image: "busybox", command: ["hang"] }] },
      ),
    });
    const done = await finished("slow");
    expect(conditionTypes(done)).toEqual([
      "FailureTarget:DeadlineExceeded",
      "Failed:DeadlineExceeded",
    ]);
    expect(done.status?.conditions?.[1]?.message).toBe(
      "Job was active longer than specified deadline",
    );
    expect(done.status?.completionTime).toBeUndefined();
    expect(abortedContainers.some((name) => name.startsWith("slow-"))).toBe(true);
    await kube.waitFor(async () => (await podsOf("slow")).length === 0);
  });

  it("uses the pre-1.31 conditions on an older server", async () => {
    const old = await startKube({ version: "1.29", namespaces: ["j"] });
    const client = old.kubeConfig().makeApiClient(BatchV1Api);
    await client.createNamespacedJob({
      namespace: "j",
      body: job("quick", {}, { containers: [{ name: "c", image: "busybox" }] }),
    });
    const done = await old.waitFor(async () => {
      const j = await client.readNamespacedJob({ namespace: "j", name: "quick" });
      return j.status?.conditions?.length && j;
    });
    expect(done.status?.conditions?.map((c) => [c.type, c.reason])).toEqual([
      ["Complete", undefined],
    ]);
    await old.stop();
  });
});

describe("deleting and expiring Jobs", () => {
  it("deletes the pods of a Job deleted with background propagation, aborting their containers", async () => {
    await batch.createNamespacedJob({
      namespace: "j",
      body: job(
        "cancelled",
        {},
        { containers: [{ name: "c", image: "busybox", command: ["hang"] }] },
      ),
    });
    await kube.waitFor(async () => (await readJob("cancelled")).status?.ready === 1);
    await batch.deleteNamespacedJob({
      namespace: "j",
      name: "cancelled",
      propagationPolicy: "Background",
    });
    await kube.waitFor(async () => (await podsOf("cancelled")).length === 0);
    expect(abortedContainers.some((name) => name.startsWith("cancelled-"))).toBe(true);
  });

  it("removes a finished Job after ttlSecondsAfterFinished", async () => {
    let completed = false;
    const stop = kube.store.onChange((event) => {
      const conditions = (event.object.status as V1Job["status"] & object)?.conditions ?? [];
      if (event.object.metadata.name === "ttl" && conditions.some((c) => c.type === "Complete"))
        completed = true;
    });
    await batch.createNamespacedJob({
      namespace: "j",
      body: job(
        "ttl",
        { ttlSecondsAfterFinished: 1 },
        { containers: [{ name: "c", image: "busybox" }] },
      ),
    });
    await kube.waitFor(
      () =>
        completed &&
        !kube.store.get("jobs.batch", "j", "ttl") &&
        kube.store.objects("pods", "j").every((p) => !p.metadata.name?.startsWith("ttl-")),
    );
    stop();
  });
});

describe("the sandbox", () => {
  it("materializes Secret and ConfigMap volumes as files, and resolves env and $(VAR) in args", async () => {
    await core.createNamespacedSecret({
      namespace: "j",
      body: { metadata: { name: "creds" }, stringData: { token: "s3cret", other: "x" } },
    });
    await core.createNamespacedConfigMap({
      namespace: "j",
      body: {
        metadata: { name: "cfg" },
        data: { "buildkitd.toml": "debug = true", level: "info" },
      },
    });
    await batch.createNamespacedJob({
      namespace: "j",
      body: job(
        "sandbox",
        {},
        {
          volumes: [
            { name: "secret", secret: { secretName: "creds", defaultMode: 0o400 } },
            {
              name: "config",
              configMap: { name: "cfg", items: [{ key: "buildkitd.toml", path: "renamed.toml" }] },
            },
          ],
          containers: [
            {
              name: "c",
              image: "busybox",
              command: ["inspect"],
              args: ["--pod=$(POD)", "$$(POD)"],
              env: [
                { name: "TOKEN", valueFrom: { secretKeyRef: { name: "creds", key: "token" } } },
                { name: "POD", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
                { name: "LEVEL", valueFrom: { configMapKeyRef: { name: "cfg", key: "level" } } },
              ],
              volumeMounts: [
                { name: "secret", mountPath: "/etc/secret", readOnly: true },
                { name: "config", mountPath: "/etc/config" },
              ],
            },
          ],
        },
      ),
    });
    await finished("sandbox");
    const [pod] = await podsOf("sandbox");
    expect(seenSandbox).toEqual({
      entries: expect.arrayContaining(["..data", "other", "token"]),
      token: "s3cret",
      mode: 0o400,
      data: expect.stringMatching(/^\.\.\d{4}_/),
      config: "debug = true",
      env: { TOKEN: "s3cret", POD: pod?.metadata?.name, LEVEL: "info" },
      args: [`--pod=${pod?.metadata?.name}`, "$(POD)"],
      unmounted: true,
    });
  });

  it("holds a container in ContainerCreating until its Secret exists", async () => {
    await batch.createNamespacedJob({
      namespace: "j",
      body: job(
        "waits",
        {},
        {
          volumes: [{ name: "s", secret: { secretName: "later" } }],
          containers: [{ name: "c", image: "busybox" }],
        },
      ),
    });
    const pod = await kube.waitFor(async () => {
      const [p] = await podsOf("waits");
      return p?.status?.containerStatuses?.[0]?.state?.waiting?.reason === "ContainerCreating" && p;
    });
    expect(pod.status?.phase).toBe("Pending");
    await core.createNamespacedSecret({
      namespace: "j",
      body: { metadata: { name: "later" }, stringData: { a: "b" } },
    });
    await finished("waits");
  });
});

describe("pods/log", () => {
  it("serves tailLines of the named container and follows a running one", async () => {
    await batch.createNamespacedJob({
      namespace: "j",
      body: job(
        "logs",
        {},
        {
          containers: [
            { name: "main", image: "busybox", command: ["hang"] },
            { name: "side", image: "busybox", command: ["fail"] },
          ],
        },
      ),
    });
    const pod = await kube.waitFor(async () => {
      const [p] = await podsOf("logs");
      return p?.status?.containerStatuses?.find((c) => c.name === "side")?.state?.terminated && p;
    });
    const name = pod.metadata!.name!;
    const tail = await core.readNamespacedPodLog({
      namespace: "j",
      name,
      container: "side",
      tailLines: 2,
    });
    expect(tail).toBe("line 99\nline 100\n");
    const ambiguous = await core
      .readNamespacedPodLog({ namespace: "j", name })
      .catch((e) => JSON.parse(e.body));
    expect(ambiguous.message).toBe(
      `a container name must be specified for pod ${name}, choose one of: [main side]`,
    );

    const stream = new PassThrough();
    let text = "";
    stream.on("data", (chunk) => {
      text += chunk.toString();
    });
    const ended = new Promise((resolve) => stream.on("end", resolve));
    await new Log(kube.kubeConfig()).log("j", name, "main", stream, { follow: true });
    await kube.waitFor(() => text === "started\n");
    expect(kube.kubelet?.killContainer("j", name, "main", 1)).toBe(true);
    await ended;
    expect(text).toBe("started\n");
  });
});
