import type { V1Job } from "@kubernetes/client-node";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { ImageBuildStatus } from "../../src/api/imagebuild-status.ts";
import type { BuilderPool, ImageBuild } from "../../src/api/resources.ts";
import { type Admission, admit } from "../../src/imagebuild/admission.ts";
import {
  decideNextStep,
  jobsOf,
  logRequests,
  WAIT_REQUEUE_MS,
} from "../../src/imagebuild/decide.ts";
import type { Action, Decision, Observed } from "../../src/imagebuild/decision.ts";
import { indexJob, tagJob, verifyJob } from "../../src/imagebuild/jobs.ts";
import type { ObservedJob } from "../../src/imagebuild/observe.ts";
import { assignSlots, slotRequestsOf } from "../../src/imagebuild/queue.ts";
import type { Route } from "../../src/imagebuild/routing.ts";
import {
  at,
  DIGEST_AMD64,
  DIGEST_ARM64,
  exampleBuild,
  examplePlan,
  examplePool,
  fixture,
  INDEX_DIGEST,
  type JobState,
  job,
  metadataJson,
  T0,
} from "./fixtures.ts";

const OPERATOR_IMAGE = "ghcr.io/buildfarm/buildfarm:0.1.0";
const DOCKER = { type: "kubernetes.io/dockerconfigjson", keys: [".dockerconfigjson"] };
const assembled = JSON.stringify({
  digest: INDEX_DIGEST,
  image: "registry.example.com/demo/welcome-to-docker",
  mediaType: "application/vnd.oci.image.index.v1+json",
  platforms: ["linux/amd64", "linux/arm64"],
  tags: ["latest", "main"],
});

/**
 * A tiny cluster for one build: Jobs made by CreateJob actions, states the test gives them,
 * the status each decision writes. Each reconcile reads, decides, and applies like the
 * reconciler will.
 */
class World {
  build: ImageBuild;
  pool: BuilderPool | undefined;
  now = T0;
  clientSecret = false;
  inlineContext = false;
  readonly objects = new Map<string, V1Job>();
  readonly states = new Map<string, JobState>();
  /** Other builds' Jobs holding slots on the pool, by architecture. */
  busy: Record<string, number> = {};
  logs: Record<string, string> = {};
  admission?: Admission;
  history: Decision[] = [];

  /** `null` for a pool that does not exist. */
  constructor(build = exampleBuild(), pool: BuilderPool | null = examplePool()) {
    this.build = build;
    this.pool = pool ?? undefined;
  }

  admit(): Admission {
    return (
      this.admission ??
      admit(this.build, {
        pool: this.pool,
        buildNamespaceLabels: {},
        pushSecret: DOCKER,
        secrets: {},
      })
    );
  }

  observedJobs(): Record<string, ObservedJob> {
    const jobs: Record<string, ObservedJob> = {};
    for (const [name, object] of this.objects) {
      jobs[name] = job(object, this.states.get(name) ?? {});
    }
    return jobs;
  }

  observe(): Observed {
    const admission = this.admit();
    const all = this.observedJobs();
    const prefix = `${this.build.metadata.name}-`;
    const bySlug: Record<string, ObservedJob> = {};
    for (const [name, observed] of Object.entries(all)) {
      const suffix = name.slice(prefix.length);
      if (!["index", "verify", "tag"].includes(suffix)) bySlug[suffix] = observed;
    }
    const slots = new Map();
    if (admission.admitted && this.pool) {
      const others = Object.entries(this.busy).flatMap(([architecture, count]) =>
        Array.from({ length: count }, (_, i) => ({
          build: {
            namespace: "other",
            name: `older-${i}`,
            uid: `o${i}`,
            creationTimestamp: "2026-01-01T00:00:00Z",
          },
          slug: architecture,
          architecture,
          state: "running" as const,
        })),
      );
      const mine = slotRequestsOf(this.build, admission.plan.targets, bySlug, true);
      for (const [key, verdict] of assignSlots(this.pool.spec, [...others, ...mine]).verdicts)
        slots.set(key, verdict);
    }
    return {
      now: this.now,
      admission,
      slots,
      clientSecret: this.clientSecret,
      inlineContext: this.inlineContext,
      jobs: bySlug,
      indexJob: all[`${prefix}index`],
      verifyJob: all[`${prefix}verify`],
      tagJob: all[`${prefix}tag`],
      logs: this.logs,
      operatorImage: OPERATOR_IMAGE,
    };
  }

  reconcile(): Decision {
    const observed = this.observe();
    const decision = decideNextStep(this.build, observed);
    for (const action of decision.actions) this.apply(action);
    this.build = { ...this.build, status: decision.status };
    this.history.push(decision);
    return decision;
  }

  apply(action: Action): void {
    switch (action.type) {
      case "CreateClientSecret":
        this.clientSecret = true;
        break;
      case "CreateConfigMap":
        this.inlineContext = true;
        break;
      case "CreateJob": {
        const name = action.object.metadata?.name as string;
        if (this.objects.has(name)) throw new Error(`asked to create ${name}, which exists`);
        this.objects.set(name, action.object);
        this.states.set(name, {});
        break;
      }
      case "DeleteJob":
        this.objects.delete(action.name);
        this.states.delete(action.name);
        break;
      case "DeleteSecret":
        this.clientSecret = false;
        break;
      case "DeleteConfigMap":
        this.inlineContext = false;
        break;
    }
  }

  set(slug: string, state: JobState): void {
    const name = `${this.build.metadata.name}-${slug}`;
    if (!this.objects.has(name)) throw new Error(`no Job ${name}`);
    this.states.set(name, state);
  }
}

const condition = (status: ImageBuildStatus, type: string) =>
  status.conditions?.find((c) => c.type === type);
const kinds = (decision: Decision) =>
  decision.actions.map(
    (a) =>
      `${a.type}${"object" in a ? ` ${a.object.metadata?.name}` : "name" in a ? ` ${a.name}` : ""}`,
  );
const succeeded = (report: string): JobState => ({
  pods: [{ phase: "Succeeded", report }],
  outcome: { type: "Complete" },
});

describe("a two-platform build goes to Succeeded with the index digest", () => {
  const world = new World();

  it("starts both platforms at once, with the client certificate before the Jobs", () => {
    const decision = world.reconcile();
    expect(kinds(decision)).toEqual([
      "CreateClientSecret welcome-7f3a2c1-buildkit-client",
      "CreateJob welcome-7f3a2c1-amd64",
      "CreateJob welcome-7f3a2c1-arm64",
    ]);
    expect(decision.status).toMatchObject({
      observedGeneration: 1,
      phase: "Building",
      startTime: "2026-03-01T10:00:00Z",
      platforms: [
        {
          platform: "linux/amd64",
          architecture: "amd64",
          phase: "Pending",
          job: "welcome-7f3a2c1-amd64",
          builder: "tcp://default-amd64.buildfarm-builders.svc:1234",
        },
        {
          platform: "linux/arm64",
          architecture: "arm64",
          phase: "Pending",
          job: "welcome-7f3a2c1-arm64",
        },
      ],
    });
    expect(condition(decision.status, "Succeeded")).toMatchObject({
      status: "Unknown",
      reason: "Building",
    });
    expect(condition(decision.status, "Reconciling")?.status).toBe("True");
    expect(decision.events).toEqual([
      { type: "Normal", reason: "Started", message: "linux/amd64 pending, linux/arm64 pending" },
    ]);
  });

  it("shows each platform running", () => {
    world.set("amd64", { pods: [{ phase: "Running" }] });
    world.set("arm64", { pods: [{ phase: "Pending", waiting: { reason: "ContainerCreating" } }] });
    const decision = world.reconcile();
    expect(decision.actions).toEqual([]);
    expect(decision.status.platforms?.map((p) => [p.phase, p.message])).toEqual([
      ["Running", undefined],
      ["Pending", "pod welcome-7f3a2c1-arm64-a0 waiting: ContainerCreating"],
    ]);
  });

  it("counts a platform as Running while buildctl runs as the init container", () => {
    // Kubernetes keeps the pod Pending while an init container runs; that is the build.
    world.set("amd64", { pods: [{ phase: "Initializing" }] });
    world.set("arm64", { pods: [{ phase: "Pending", waiting: { reason: "PodInitializing" } }] });
    const decision = world.reconcile();
    expect(decision.status.platforms?.map((p) => [p.phase, p.message, p.attempts])).toEqual([
      ["Running", undefined, 1],
      // Not started yet: no attempt counted, and PodInitializing is no news.
      ["Pending", undefined, undefined],
    ]);
    world.set("arm64", { pods: [{ phase: "Pending", waiting: { reason: "ContainerCreating" } }] });
  });

  it("records a platform's digest as soon as it finishes", () => {
    world.now = at(300);
    world.set("amd64", succeeded(metadataJson("linux/amd64", DIGEST_AMD64)));
    const decision = world.reconcile();
    expect(decision.status.platforms?.[0]).toMatchObject({
      phase: "Succeeded",
      digest: DIGEST_AMD64,
      attempts: 1,
      message: "image pushed; registry cache exported",
      completionTime: "2026-03-01T10:30:00Z",
    });
    expect(decision.events).toContainEqual({
      type: "Normal",
      reason: "PlatformSucceeded",
      message: `linux/amd64 pushed ${DIGEST_AMD64}`,
    });
    expect(condition(decision.status, "CacheExported")).toMatchObject({ status: "Unknown" });
  });

  it("assembles the index once every platform has pushed", () => {
    world.set("arm64", succeeded(metadataJson("linux/arm64", DIGEST_ARM64)));
    const decision = world.reconcile();
    expect(decision.status.phase).toBe("Assembling");
    expect(kinds(decision)).toEqual(["CreateJob welcome-7f3a2c1-index"]);
    const index = decision.actions[0] as Extract<Action, { type: "CreateJob" }>;
    expect(index.object.spec?.template.spec?.containers[0]?.args).toEqual(
      expect.arrayContaining([
        "--digest",
        `linux/amd64=${DIGEST_AMD64}`,
        "--digest",
        `linux/arm64=${DIGEST_ARM64}`,
      ]),
    );
    expect(condition(decision.status, "CacheExported")).toMatchObject({
      status: "True",
      reason: "Exported",
    });
  });

  it("succeeds with the index digest, Ready and Succeeded True, no Reconciling or Stalled", () => {
    world.now = at(400);
    world.set("index", succeeded(assembled));
    const decision = world.reconcile();
    expect(decision.status).toMatchObject({
      phase: "Succeeded",
      digest: INDEX_DIGEST,
      image: `registry.example.com/demo/welcome-to-docker@${INDEX_DIGEST}`,
      completionTime: "2026-03-01T10:06:40Z",
    });
    expect(decision.status.queuePosition).toBeUndefined();
    expect(decision.status.conditions?.map((c) => [c.type, c.status, c.reason])).toEqual([
      ["Ready", "True", "Succeeded"],
      ["Succeeded", "True", "Succeeded"],
      ["CacheExported", "True", "Exported"],
    ]);
    expect(decision.events).toEqual([
      {
        type: "Normal",
        reason: "Succeeded",
        message: `pushed registry.example.com/demo/welcome-to-docker@${INDEX_DIGEST} and tagged latest, main`,
      },
    ]);
    // Nothing else wakes a finished build: it asks to be looked at when its TTL passes.
    expect(decision.requeueAfterMs).toBe(86400 * 1000);
  });

  it("does nothing more until the TTL, then deletes the Jobs and the client Secret but keeps the status", () => {
    world.now = at(400 + 3600);
    const waiting = world.reconcile();
    expect(waiting.actions).toEqual([]);
    expect(waiting.requeueAfterMs).toBe((86400 - 3600) * 1000);
    world.now = at(400 + 86400);
    const expired = world.reconcile();
    expect(kinds(expired)).toEqual([
      "DeleteJob welcome-7f3a2c1-amd64",
      "DeleteJob welcome-7f3a2c1-arm64",
      "DeleteJob welcome-7f3a2c1-index",
      "DeleteSecret welcome-7f3a2c1-buildkit-client",
    ]);
    expect(expired.actions[0]).toMatchObject({ propagationPolicy: "Background" });
    expect(expired.status.digest).toBe(INDEX_DIGEST);
    const after = world.reconcile();
    expect(after.actions).toEqual([]);
    expect(after.status).toEqual(expired.status);
  });
});

describe("spec.verify: the check runs on the untagged index, and only a pass tags it", () => {
  const REPO = "registry.example.com/demo/welcome-to-docker";
  const world = new World(
    exampleBuild({
      spec: {
        verify: {
          command: ["/app/selftest", "--quick"],
          args: ["--image", "$(IMAGE)"],
          env: [{ name: "MODE", value: "ci" }],
          timeout: "5m",
        },
      },
    }),
  );
  const created = (decision: Decision, suffix: string) =>
    (
      decision.actions.find(
        (a) => a.type === "CreateJob" && a.object.metadata?.name === `welcome-7f3a2c1-${suffix}`,
      ) as Extract<Action, { type: "CreateJob" }> | undefined
    )?.object;

  it("pushes the index by digest without tags once every platform has pushed", () => {
    world.reconcile();
    world.set("amd64", succeeded(metadataJson("linux/amd64", DIGEST_AMD64)));
    world.set("arm64", succeeded(metadataJson("linux/arm64", DIGEST_ARM64)));
    const decision = world.reconcile();
    expect(decision.status.phase).toBe("Assembling");
    const args = created(decision, "index")?.spec?.template.spec?.containers[0]?.args ?? [];
    expect(args).toContain(`linux/amd64=${DIGEST_AMD64}`);
    expect(args).not.toContain("--tag");
    expect(condition(decision.status, "Succeeded")?.message).toMatch(
      /untagged until spec.verify passes/,
    );
  });

  it("then runs the check in the built image by digest, on a node of the first platform's architecture", () => {
    world.now = at(400);
    world.set("index", succeeded(assembled));
    const decision = world.reconcile();
    expect(kinds(decision)).toEqual(["CreateJob welcome-7f3a2c1-verify"]);
    expect(decision.status).toMatchObject({
      phase: "Verifying",
      verify: {
        phase: "Pending",
        image: `${REPO}@${INDEX_DIGEST}`,
        job: "welcome-7f3a2c1-verify",
        architecture: "amd64",
        startTime: "2026-03-01T10:06:40Z",
      },
    });
    // No digest or image in status until the build has shipped: status.digest means tagged.
    expect(decision.status.digest).toBeUndefined();
    expect(decision.status.image).toBeUndefined();
    expect(condition(decision.status, "Succeeded")).toMatchObject({
      status: "Unknown",
      reason: "Verifying",
    });
    expect(decision.events.map((e) => e.reason)).toEqual(["Verifying"]);
    const job = created(decision, "verify") as V1Job;
    expect(job.spec).toMatchObject({ backoffLimit: 0, activeDeadlineSeconds: 300 });
    const pod = job.spec?.template.spec;
    expect(pod?.containers).toHaveLength(1);
    expect(pod?.containers[0]).toMatchObject({
      name: "verify",
      image: `${REPO}@${INDEX_DIGEST}`,
      command: ["/app/selftest", "--quick"],
      args: ["--image", "$(IMAGE)"],
      env: [
        { name: "MODE", value: "ci" },
        { name: "IMAGE", value: `${REPO}@${INDEX_DIGEST}` },
        { name: "HOME", value: "/tmp" },
        { name: "TMPDIR", value: "/tmp" },
      ],
      securityContext: {
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        runAsNonRoot: true,
        capabilities: { drop: ["ALL"] },
      },
      terminationMessagePolicy: "FallbackToLogsOnError",
    });
    expect(pod?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution).toEqual({
      nodeSelectorTerms: [
        {
          matchExpressions: [
            { key: "kubernetes.io/arch", operator: "In", values: ["amd64"] },
            { key: "kubernetes.io/os", operator: "In", values: ["linux"] },
          ],
        },
      ],
    });
    expect(pod?.imagePullSecrets).toEqual([{ name: "registry-push" }]);
    expect(pod?.securityContext).toMatchObject({
      runAsNonRoot: true,
      runAsUser: 65532,
      seccompProfile: { type: "RuntimeDefault" },
    });
    expect(pod?.automountServiceAccountToken).toBe(false);
    expect(job.metadata?.labels?.["app.kubernetes.io/component"]).toBe("verify");
  });

  it("shows the check running, and why it waits when it cannot start", () => {
    world.set("verify", {
      pods: [
        {
          phase: "Pending",
          waiting: { reason: "ImagePullBackOff", message: "pull access denied" },
        },
      ],
    });
    const waiting = world.reconcile();
    expect(waiting.actions).toEqual([]);
    expect(waiting.status.verify).toMatchObject({
      phase: "Pending",
      message: "pod welcome-7f3a2c1-verify-a0 waiting: ImagePullBackOff: pull access denied",
    });
    world.set("verify", { pods: [{ phase: "Running" }] });
    const running = world.reconcile();
    expect(running.status.verify?.phase).toBe("Running");
    expect(running.status.verify?.message).toBeUndefined();
  });

  it("applies the tags after a pass, to exactly the checked digest", () => {
    world.now = at(500);
    world.set("verify", {
      pods: [{ phase: "Succeeded", report: "" }],
      outcome: { type: "Complete" },
    });
    const decision = world.reconcile();
    expect(kinds(decision)).toEqual(["CreateJob welcome-7f3a2c1-tag"]);
    expect(decision.status).toMatchObject({
      phase: "Verifying",
      verify: { phase: "Succeeded", message: "the check passed" },
    });
    expect(condition(decision.status, "Succeeded")?.reason).toBe("Tagging");
    expect(decision.events).toContainEqual({
      type: "Normal",
      reason: "Verified",
      message: `the check passed on ${REPO}@${INDEX_DIGEST}`,
    });
    const args = created(decision, "tag")?.spec?.template.spec?.containers[0]?.args ?? [];
    expect(args.slice(0, 7)).toEqual([
      "assemble",
      "--image",
      REPO,
      "--digest",
      `linux/amd64=${DIGEST_AMD64}`,
      "--digest",
      `linux/arm64=${DIGEST_ARM64}`,
    ]);
    expect(args).toEqual(
      expect.arrayContaining(["--tag", "latest", "--tag", "main", "--expect-digest", INDEX_DIGEST]),
    );
  });

  it("succeeds with the digest once tagged, keeping the check's record", () => {
    world.set("tag", succeeded(assembled));
    const decision = world.reconcile();
    expect(decision.status).toMatchObject({
      phase: "Succeeded",
      digest: INDEX_DIGEST,
      image: `${REPO}@${INDEX_DIGEST}`,
      verify: { phase: "Succeeded", image: `${REPO}@${INDEX_DIGEST}` },
    });
    const phases = world.history.map((d) => d.status.phase).filter((p, i, all) => p !== all[i - 1]);
    expect(phases).toEqual(["Building", "Assembling", "Verifying", "Succeeded"]);
  });

  it("deletes the index, verify and tag Jobs with the others when the TTL passes", () => {
    world.now = at(500 + 86400);
    expect(kinds(world.reconcile())).toEqual([
      "DeleteJob welcome-7f3a2c1-amd64",
      "DeleteJob welcome-7f3a2c1-arm64",
      "DeleteJob welcome-7f3a2c1-index",
      "DeleteJob welcome-7f3a2c1-verify",
      "DeleteJob welcome-7f3a2c1-tag",
      "DeleteSecret welcome-7f3a2c1-buildkit-client",
    ]);
  });
});

describe("spec.verify: a check that fails", () => {
  const verifying = (verify: Record<string, unknown> = {}) => {
    const world = new World(
      exampleBuild({ spec: { verify: { command: ["/bin/false"], timeout: "2m", ...verify } } }),
    );
    world.reconcile();
    world.set("amd64", succeeded(metadataJson("linux/amd64", DIGEST_AMD64)));
    world.set("arm64", succeeded(metadataJson("linux/arm64", DIGEST_ARM64)));
    world.reconcile();
    world.set("index", succeeded(assembled));
    world.reconcile();
    return world;
  };

  it("fails the build with VerificationFailed and the log tail, and never tags", () => {
    const world = verifying();
    world.set("verify", {
      pods: [
        { phase: "Failed", log: "running 12 checks\nFAIL: /healthz answered 503\n", exitCode: 1 },
      ],
      outcome: { type: "Failed", reason: "BackoffLimitExceeded" },
    });
    const decision = world.reconcile();
    expect(decision.status.phase).toBe("Failed");
    expect(condition(decision.status, "Succeeded")).toMatchObject({
      status: "False",
      reason: "VerificationFailed",
    });
    expect(condition(decision.status, "Succeeded")?.message).toMatch(
      /^the check of registry.example.com\/demo\/welcome-to-docker@sha256:[a-f0-9]{64} failed, so no tag was applied: running 12 checks\nFAIL: \/healthz answered 503$/,
    );
    expect(decision.status.verify).toMatchObject({
      phase: "Failed",
      message: "running 12 checks\nFAIL: /healthz answered 503",
    });
    expect(decision.status.digest).toBeUndefined();
    expect(decision.events).toContainEqual(
      expect.objectContaining({ type: "Warning", reason: "VerificationFailed" }),
    );
    // Finished: nothing more is created, ever.
    for (let i = 0; i < 3; i++) {
      const again = world.reconcile();
      expect(again.actions.filter((a) => a.type === "CreateJob")).toEqual([]);
      expect(again.status.phase).toBe("Failed");
    }
    expect([...world.objects.keys()]).not.toContain("welcome-7f3a2c1-tag");
  });

  it("fails with VerificationFailed when the check passes its timeout, saying why it never ran", () => {
    const world = verifying();
    world.set("verify", {
      pods: [
        { phase: "Pending", waiting: { reason: "ErrImagePull", message: "manifest unknown" } },
      ],
      outcome: { type: "Failed", reason: "DeadlineExceeded" },
    });
    const decision = world.reconcile();
    expect(condition(decision.status, "Succeeded")).toMatchObject({ reason: "VerificationFailed" });
    expect(decision.status.verify?.message).toBe(
      "did not finish within 2m (spec.verify.timeout); Job welcome-7f3a2c1-verify was stopped; pod welcome-7f3a2c1-verify-a0 waiting: ErrImagePull: manifest unknown",
    );
  });

  it("runs a check image of its own without pinning an architecture", () => {
    const world = new World(
      exampleBuild({
        spec: { verify: { image: "ghcr.io/acme/checks:v2", command: ["check-image"] } },
      }),
    );
    world.reconcile();
    world.set("amd64", succeeded(metadataJson("linux/amd64", DIGEST_AMD64)));
    world.set("arm64", succeeded(metadataJson("linux/arm64", DIGEST_ARM64)));
    world.reconcile();
    world.set("index", succeeded(assembled));
    const decision = world.reconcile();
    const job = (decision.actions[0] as Extract<Action, { type: "CreateJob" }>).object;
    const pod = job.spec?.template.spec;
    expect(pod?.containers[0]?.image).toBe("ghcr.io/acme/checks:v2");
    expect(pod?.affinity).toBeUndefined();
    expect(pod?.nodeSelector).toEqual({ "kubernetes.io/os": "linux" });
    expect(decision.status.verify?.architecture).toBeUndefined();
  });
});

describe("spec.verify after a restart", () => {
  const REPO = "registry.example.com/demo/welcome-to-docker";
  const pushed = {
    phase: "Verifying",
    platforms: [
      { platform: "linux/amd64", phase: "Succeeded", digest: DIGEST_AMD64 },
      { platform: "linux/arm64", phase: "Succeeded", digest: DIGEST_ARM64 },
    ],
  };

  it("keeps the recorded index digest and runs the check without assembling again", () => {
    const world = new World(
      exampleBuild({
        spec: { verify: { command: ["true"] } },
        status: { ...pushed, verify: { phase: "Pending", image: `${REPO}@${INDEX_DIGEST}` } },
      }),
    );
    world.clientSecret = true;
    const decision = world.reconcile();
    expect(kinds(decision)).toEqual(["CreateJob welcome-7f3a2c1-verify"]);
  });

  it("tags once a check that passed is seen, even if its pass was never written", () => {
    const world = new World(
      exampleBuild({
        spec: { verify: { command: ["true"] } },
        status: { ...pushed, verify: { phase: "Running", image: `${REPO}@${INDEX_DIGEST}` } },
      }),
    );
    world.clientSecret = true;
    world.objects.set(
      "welcome-7f3a2c1-verify",
      verifyJob(world.build, examplePlan(world.build), `${REPO}@${INDEX_DIGEST}`),
    );
    world.set("verify", { outcome: { type: "Complete" } });
    const decision = world.reconcile();
    expect(kinds(decision)).toEqual(["CreateJob welcome-7f3a2c1-tag"]);
  });

  it("succeeds right after the pass when there are no tags", () => {
    const world = new World(
      exampleBuild({
        spec: { output: { tags: [] }, verify: { command: ["true"] } },
        status: { ...pushed, verify: { phase: "Succeeded", image: `${REPO}@${INDEX_DIGEST}` } },
      }),
    );
    const decision = world.reconcile();
    expect(decision.actions).toEqual([]);
    expect(decision.status).toMatchObject({ phase: "Succeeded", digest: INDEX_DIGEST });
  });
});

describe("routing to a builder pod", () => {
  const HOST = "10-244-0-7.default-amd64-headless.buildfarm-builders.svc";
  const toPod: Route = {
    kind: "pod",
    pod: "default-amd64-6c9d-x7k2p",
    address: `tcp://${HOST}:1234`,
    serverName: HOST,
    preferred: true,
  };

  it("sends buildctl to the chosen pod with its TLS name, and records it on the Job and in status", () => {
    const world = new World();
    const observed = { ...world.observe(), routes: { amd64: toPod } };
    const decision = decideNextStep(world.build, observed);
    const job = decision.actions.find(
      (a) => a.type === "CreateJob" && a.platform === "linux/amd64",
    ) as Extract<Action, { type: "CreateJob" }>;
    expect(job.object.metadata?.annotations).toEqual({
      "buildfarm.dev/builder": `tcp://${HOST}:1234`,
      "buildfarm.dev/builder-pod": "default-amd64-6c9d-x7k2p",
    });
    const argv = job.object.spec?.template.spec?.initContainers?.[0]?.args ?? [];
    expect(argv.slice(0, 4)).toEqual(["--addr", `tcp://${HOST}:1234`, "--tlsservername", HOST]);
    expect(decision.status.platforms?.[0]).toMatchObject({
      builder: `tcp://${HOST}:1234`,
      builderPod: "default-amd64-6c9d-x7k2p",
    });
    // arm64 had no route: its Service, as before routing.
    expect(decision.status.platforms?.[1]?.builder).toBe(
      "tcp://default-arm64.buildfarm-builders.svc:1234",
    );
    expect(decision.status.platforms?.[1]?.builderPod).toBeUndefined();
  });

  it("keeps the builder a Job was sent to, whatever routing would choose now", () => {
    const world = new World();
    const first = decideNextStep(world.build, { ...world.observe(), routes: { amd64: toPod } });
    for (const action of first.actions) world.apply(action);
    // A restarted operator with empty memory: the status was never written.
    world.set("amd64", { pods: [{ phase: "Running" }] });
    const elsewhere: Route = { ...toPod, pod: "default-amd64-6c9d-zzzzz", address: "tcp://x:1234" };
    const again = decideNextStep(world.build, { ...world.observe(), routes: { amd64: elsewhere } });
    expect(again.status.platforms?.[0]).toMatchObject({
      builder: `tcp://${HOST}:1234`,
      builderPod: "default-amd64-6c9d-x7k2p",
    });
  });

  it("waits Queued with reason ScalingUp while an autoscaled architecture has no builder for it", () => {
    const world = new World();
    const wait: Route = {
      kind: "wait",
      message: "no amd64 builder is ready yet; the pool is scaling up",
    };
    const decision = decideNextStep(world.build, {
      ...world.observe(),
      routes: { amd64: wait, arm64: wait },
    });
    expect(decision.actions.filter((a) => a.type === "CreateJob")).toEqual([]);
    expect(decision.status.phase).toBe("Queued");
    expect(condition(decision.status, "Succeeded")?.reason).toBe("ScalingUp");
    expect(decision.status.platforms?.[0]).toEqual({
      platform: "linux/amd64",
      architecture: "amd64",
      phase: "Queued",
      message: "waiting for a builder: no amd64 builder is ready yet; the pool is scaling up",
    });
    expect(decision.requeueAfterMs).toBe(WAIT_REQUEUE_MS);
    // One architecture ready: that platform starts, the build is Building.
    const half = decideNextStep(world.build, { ...world.observe(), routes: { amd64: wait } });
    expect(kinds(half)).toContain("CreateJob welcome-7f3a2c1-arm64");
    expect(half.status.phase).toBe("Building");
    expect(half.status.platforms?.[0]?.phase).toBe("Queued");
  });
});

describe("queueing beyond capacity", () => {
  it("waits Queued with a position, creates nothing, and starts when a slot frees", () => {
    const world = new World(exampleBuild(), examplePool({ spec: { maxConcurrentBuilds: 1 } }));
    world.busy = { amd64: 1, arm64: 1 };
    const queued = world.reconcile();
    expect(queued.actions).toEqual([]);
    expect(queued.status).toMatchObject({ phase: "Queued", queuePosition: 1 });
    expect(queued.status.platforms?.[1]?.message).toBe(
      "waiting for a free arm64 builder: position 1 (1 of 1 running)",
    );
    expect(queued.requeueAfterMs).toBe(WAIT_REQUEUE_MS);
    expect(queued.events).toMatchObject([{ type: "Normal", reason: "Queued" }]);
    expect(condition(queued.status, "Succeeded")).toMatchObject({
      status: "Unknown",
      reason: "Queued",
    });

    world.busy = { arm64: 1 };
    const half = world.reconcile();
    expect(kinds(half)).toEqual([
      "CreateClientSecret welcome-7f3a2c1-buildkit-client",
      "CreateJob welcome-7f3a2c1-amd64",
    ]);
    expect(half.status).toMatchObject({ phase: "Building", queuePosition: 1 });

    world.busy = {};
    expect(kinds(world.reconcile())).toEqual(["CreateJob welcome-7f3a2c1-arm64"]);
  });
});

describe("one platform failing after its retries", () => {
  const world = new World();
  world.reconcile();
  const log = fixture("build-failed.txt");
  world.set("arm64", { pods: [{ phase: "Running" }] });
  world.set("amd64", {
    pods: [
      { phase: "Failed", log },
      { phase: "Failed", log },
    ],
    outcome: {
      type: "Failed",
      reason: "BackoffLimitExceeded",
      message: "Job has reached the specified backoff limit",
    },
  });
  const decision = world.reconcile();

  it("fails the build with the log tail and the error line first", () => {
    expect(decision.status.phase).toBe("Failed");
    expect(decision.status.platforms?.[0]).toMatchObject({ phase: "Failed", attempts: 2 });
    expect(decision.status.platforms?.[0]?.message).toMatch(
      /^failed to solve: failed to compute cache key: .*not found\n--- log tail ---\n#1 /,
    );
    expect(condition(decision.status, "Succeeded")).toMatchObject({
      status: "False",
      reason: "BuildFailed",
    });
    expect(condition(decision.status, "Succeeded")?.message).toMatch(
      /^linux\/amd64: failed to solve/,
    );
    expect(condition(decision.status, "Stalled")).toMatchObject({
      status: "True",
      reason: "BuildFailed",
    });
    expect(condition(decision.status, "Ready")?.status).toBe("False");
    expect(condition(decision.status, "Reconciling")).toBeUndefined();
  });

  it("stops the sibling Job and marks its platform cancelled", () => {
    expect(decision.actions).toEqual([
      {
        type: "DeleteJob",
        name: "welcome-7f3a2c1-arm64",
        propagationPolicy: "Background",
        reason: "linux/amd64 failed",
      },
    ]);
    expect(decision.status.platforms?.[1]).toMatchObject({
      phase: "Cancelled",
      message: "stopped: linux/amd64 failed",
    });
  });

  it("emits warnings for the platform and the build", () => {
    expect(decision.events.map((e) => [e.type, e.reason])).toEqual([
      ["Warning", "PlatformFailed"],
      ["Warning", "BuildFailed"],
    ]);
  });

  it("stays Failed and creates nothing afterwards", () => {
    const again = world.reconcile();
    expect(again.status).toEqual(decision.status);
    expect(again.actions).toEqual([]);
  });
});

describe("a retry then success", () => {
  it("says which attempt runs and why the last one failed, then records the digest", () => {
    const world = new World();
    world.reconcile();
    world.set("amd64", {
      pods: [
        { phase: "Failed", log: "error: failed to solve: connection reset by peer" },
        { phase: "Running" },
      ],
    });
    const retrying = world.reconcile();
    expect(retrying.status.platforms?.[0]).toMatchObject({
      phase: "Running",
      attempts: 2,
      message: "attempt 2 of 2; the previous one failed: failed to solve: connection reset by peer",
    });
    expect(retrying.status.phase).toBe("Building");
    world.set("amd64", {
      pods: [
        { phase: "Failed", log: "error: boom" },
        { phase: "Succeeded", report: metadataJson("linux/amd64", DIGEST_AMD64) },
      ],
      outcome: { type: "Complete" },
    });
    expect(world.reconcile().status.platforms?.[0]).toMatchObject({
      phase: "Succeeded",
      digest: DIGEST_AMD64,
      attempts: 2,
    });
  });
});

describe("a failed attempt with a retry to come", () => {
  it("is Pending, says the attempt failed and that it is retried", () => {
    const world = new World();
    world.reconcile();
    world.set("amd64", { pods: [{ phase: "Failed", log: "error: failed to solve: reset" }] });
    const decision = world.reconcile();
    expect(decision.status.phase).toBe("Building");
    expect(decision.status.platforms?.[0]).toMatchObject({
      phase: "Pending",
      attempts: 1,
      message: "attempt 1 of 2 failed, retrying: failed to solve: reset",
    });
  });
});

describe("a timeout", () => {
  it("fails the build with reason Timeout when the Job's deadline passes", () => {
    const world = new World();
    world.reconcile();
    world.set("amd64", {
      pods: [{ phase: "Failed", log: "" }],
      outcome: { type: "Failed", reason: "DeadlineExceeded" },
    });
    const decision = world.reconcile();
    expect(decision.status.phase).toBe("Failed");
    expect(condition(decision.status, "Succeeded")).toMatchObject({
      status: "False",
      reason: "Timeout",
      message:
        "linux/amd64: did not finish within 30m (spec.timeout); Job welcome-7f3a2c1-amd64 was stopped",
    });
  });
});

describe("a garbled termination message", () => {
  it("fails that platform with a clear message instead of guessing a digest", () => {
    const world = new World();
    world.reconcile();
    world.set("amd64", succeeded(metadataJson("linux/amd64", DIGEST_AMD64).slice(100)));
    const decision = world.reconcile();
    expect(decision.status.phase).toBe("Failed");
    expect(condition(decision.status, "Succeeded")).toMatchObject({ reason: "InvalidMetadata" });
    expect(decision.status.platforms?.[0]?.message).toMatch(
      /^the linux\/amd64 build's metadata is not JSON \(cut at the kubelet's 4096-byte limit, or garbled\)/,
    );
    expect(decision.status.platforms?.[0]?.digest).toBeUndefined();
  });
});

describe("a refused cache export", () => {
  const refused = fixture("metadata-cache-refused.json").replaceAll(
    "sha256:da95639f489335cc8db7baac2d71e23378f359c2b88dc7849f4e507aad501c1f",
    DIGEST_AMD64,
  );

  it("asks for the buildctl log, reports the registry's words, and still ships the image", () => {
    const world = new World(exampleBuild({ spec: { platforms: ["linux/amd64"] } }));
    world.reconcile();
    world.set("amd64", succeeded(refused));
    const [request] = logRequests(world.build, world.observe());
    expect(request).toEqual({
      pod: "welcome-7f3a2c1-amd64-a0",
      container: "buildctl",
      platform: "linux/amd64",
    });
    world.logs = { [request?.pod as string]: fixture("cache-export-refused.txt") };
    const decision = world.reconcile();
    expect(decision.status.phase).toBe("Assembling");
    expect(condition(decision.status, "CacheExported")).toMatchObject({
      status: "False",
      reason: "ExportFailed",
      message:
        "linux/amd64: error writing layer blob: unexpected status from POST request to http://127.0.0.1:5056/v2/demo/app/blobs/uploads/: 405 Method Not Allowed\nThe image was pushed; set spec.cache.failOnExportError to fail builds instead.",
    });
    expect(decision.events).toContainEqual(
      expect.objectContaining({ type: "Warning", reason: "CacheExportFailed" }),
    );
    // Later passes need no log: the status remembers.
    world.logs = {};
    expect(logRequests(world.build, world.observe())).toEqual([]);
    world.set("index", succeeded(assembled));
    const done = world.reconcile();
    expect(done.status.phase).toBe("Succeeded");
    expect(condition(done.status, "CacheExported")?.status).toBe("False");
    expect(condition(done.status, "Ready")?.status).toBe("True");
  });

  it("names the pod to look at when the log could not be read", () => {
    const world = new World(exampleBuild({ spec: { platforms: ["linux/amd64"] } }));
    world.reconcile();
    world.set("amd64", succeeded(refused));
    const decision = world.reconcile();
    expect(condition(decision.status, "CacheExported")?.message).toMatch(
      /^linux\/amd64: the registry refused the cache export; see the log of pod welcome-7f3a2c1-amd64-a0 \(container buildctl\)/,
    );
  });

  it("ends CacheExported when the build ends: False with BuildKit's error after a strict export fails", () => {
    const world = new World(
      exampleBuild({ spec: { platforms: ["linux/amd64"], cache: { failOnExportError: true } } }),
    );
    world.reconcile();
    // Without ignore-error, buildctl fails on the refused export: its log carries the error.
    const log = fixture("cache-export-refused.txt");
    world.set("amd64", {
      pods: [{ phase: "Failed", log }],
      outcome: {
        type: "Failed",
        reason: "BackoffLimitExceeded",
        message: "Job has reached the specified backoff limit",
      },
    });
    const decision = world.reconcile();
    expect(decision.status.phase).toBe("Failed");
    expect(condition(decision.status, "CacheExported")).toMatchObject({
      status: "False",
      reason: "ExportFailed",
    });
    expect(condition(decision.status, "CacheExported")?.message).toMatch(
      /^linux\/amd64: error writing layer blob: .*405 Method Not Allowed/,
    );
  });

  it("ends CacheExported as NotExported when the build fails for another reason", () => {
    const world = new World(exampleBuild({ spec: { platforms: ["linux/amd64"] } }));
    world.reconcile();
    world.set("amd64", {
      pods: [{ phase: "Failed", log: fixture("build-failed.txt") }],
      outcome: {
        type: "Failed",
        reason: "BackoffLimitExceeded",
        message: "Job has reached the specified backoff limit",
      },
    });
    expect(condition(world.reconcile().status, "CacheExported")).toMatchObject({
      status: "False",
      reason: "NotExported",
    });
  });

  it("has no CacheExported condition when the cache is disabled", () => {
    const world = new World(exampleBuild({ spec: { cache: { disabled: true } } }));
    expect(condition(world.reconcile().status, "CacheExported")).toBeUndefined();
  });
});

describe("admission outcomes", () => {
  it("waits Pending while the pool is missing, and says so once", () => {
    const world = new World(exampleBuild(), null);
    const decision = world.reconcile();
    expect(decision.actions).toEqual([]);
    expect(decision.status).toMatchObject({
      phase: "Pending",
      platforms: [{ phase: "Pending" }, { phase: "Pending" }],
    });
    expect(condition(decision.status, "Succeeded")).toMatchObject({
      status: "Unknown",
      reason: "PoolNotFound",
    });
    expect(condition(decision.status, "Reconciling")).toMatchObject({
      status: "True",
      reason: "PoolNotFound",
    });
    expect(decision.requeueAfterMs).toBe(WAIT_REQUEUE_MS);
    expect(decision.events).toMatchObject([{ type: "Warning", reason: "PoolNotFound" }]);
    expect(world.reconcile().events).toEqual([]);
  });

  it("fails at once for a platform the pool does not serve", () => {
    const world = new World(
      exampleBuild(),
      examplePool({ spec: { architectures: [{ name: "amd64" }] } }),
    );
    const decision = world.reconcile();
    expect(decision.status.phase).toBe("Failed");
    expect(condition(decision.status, "Stalled")).toMatchObject({ reason: "PlatformNotServed" });
    expect(decision.status.platforms?.every((p) => p.phase === "Cancelled")).toBe(true);
  });

  it("keeps running Jobs but starts no new one while a Secret it needs is missing", () => {
    const world = new World(exampleBuild(), examplePool({ spec: { maxConcurrentBuilds: 1 } }));
    world.busy = { arm64: 1 };
    world.reconcile();
    world.set("amd64", { pods: [{ phase: "Running" }] });
    world.admission = {
      admitted: false,
      phase: "Pending",
      reason: "PushSecretNotFound",
      message: "push Secret gone",
    };
    world.busy = {};
    const decision = world.reconcile();
    expect(decision.actions).toEqual([]);
    expect(decision.status.phase).toBe("Building");
    expect(decision.status.platforms?.map((p) => [p.phase, p.message])).toEqual([
      ["Running", undefined],
      ["Pending", "push Secret gone"],
    ]);
  });
});

describe("a pool whose CA Secret does not exist yet", () => {
  it("waits Pending (PoolNotReady) without creating anything, then starts", () => {
    const world = new World();
    const waiting = decideNextStep(world.build, { ...world.observe(), poolCa: false });
    expect(waiting.actions).toEqual([]);
    expect(waiting.status.phase).toBe("Pending");
    expect(condition(waiting.status, "Succeeded")).toMatchObject({
      status: "Unknown",
      reason: "PoolNotReady",
      message:
        "BuilderPool buildfarm-builders/default has no CA Secret default-buildkit-ca yet; its controller creates it",
    });
    expect(waiting.status.platforms?.map((p) => [p.phase, p.job])).toEqual([
      ["Pending", undefined],
      ["Pending", undefined],
    ]);
    expect(waiting.requeueAfterMs).toBe(WAIT_REQUEUE_MS);
    world.build = { ...world.build, status: waiting.status };
    expect(kinds(world.reconcile())).toEqual([
      "CreateClientSecret welcome-7f3a2c1-buildkit-client",
      "CreateJob welcome-7f3a2c1-amd64",
      "CreateJob welcome-7f3a2c1-arm64",
    ]);
  });
});

describe("sorting a build's Jobs", () => {
  it("finds platform Jobs by slug and the index Job by name, and ignores others", () => {
    const world = new World();
    world.reconcile();
    const found = Object.values(world.observedJobs());
    const stranger = { ...found[0], name: "welcome-7f3a2c1-s390x" } as ObservedJob;
    const sorted = jobsOf(world.build, [...found, stranger]);
    expect(Object.keys(sorted.jobs)).toEqual(["amd64", "arm64"]);
    expect(sorted.indexJob).toBeUndefined();
  });
});

describe("cancellation and strangers", () => {
  it("cancels a build being deleted and stops its Jobs", () => {
    const world = new World();
    world.reconcile();
    world.set("amd64", { pods: [{ phase: "Running" }] });
    world.build = {
      ...world.build,
      metadata: { ...world.build.metadata, deletionTimestamp: at(10) },
    };
    const decision = world.reconcile();
    expect(decision.status.phase).toBe("Cancelled");
    expect(kinds(decision)).toEqual([
      "DeleteJob welcome-7f3a2c1-amd64",
      "DeleteJob welcome-7f3a2c1-arm64",
    ]);
    expect(condition(decision.status, "Succeeded")).toMatchObject({
      status: "False",
      reason: "Cancelled",
    });
  });

  it("never adopts or replaces a Job of the same name that another object controls", () => {
    const world = new World();
    world.reconcile();
    world.set("amd64", { pods: [{ phase: "Running" }], ownerUid: "previous-build-uid" });
    const decision = world.reconcile();
    expect(decision.actions).toEqual([]);
    expect(decision.status.platforms?.[0]?.message).toMatch(
      /exists but does not belong to this ImageBuild/,
    );
  });

  it("builds a platform again when its Job completed but the pod, and so the digest, is gone", () => {
    const world = new World();
    world.reconcile();
    world.set("amd64", { pods: [], outcome: { type: "Complete" } });
    const decision = world.reconcile();
    expect(kinds(decision)).toEqual(["DeleteJob welcome-7f3a2c1-amd64"]);
    expect(kinds(world.reconcile())).toEqual(["CreateJob welcome-7f3a2c1-amd64"]);
  });
});

describe("an inline source", () => {
  it("creates its context ConfigMap with the client Secret, before the Job", () => {
    const world = new World(
      exampleBuild({
        spec: {
          platforms: ["linux/amd64"],
          source: { git: null, inline: { dockerfile: "FROM scratch" } },
        },
      }),
    );
    expect(kinds(world.reconcile())).toEqual([
      "CreateClientSecret welcome-7f3a2c1-buildkit-client",
      "CreateConfigMap welcome-7f3a2c1-context",
      "CreateJob welcome-7f3a2c1-amd64",
    ]);
  });
});

// ---------------------------------------------------------------------------------------
// Restart safety: whatever the operator finds after a crash, the decision never asks to
// create an object that exists and never drops a digest it had recorded.

const podArb = fc.oneof(
  fc.constant({ phase: "Pending" as const }),
  fc.constant({ phase: "Initializing" as const }),
  fc.constant({ phase: "Running" as const }),
  fc.constantFrom("linux/amd64", "linux/arm64").map((p) => ({
    phase: "Succeeded" as const,
    report: metadataJson(p, p.endsWith("amd64") ? DIGEST_AMD64 : DIGEST_ARM64),
  })),
  fc.constant({ phase: "Succeeded" as const, report: "garbage" }),
  fc.constant({ phase: "Failed" as const, log: "error: failed to solve: boom" }),
);
const jobStateArb: fc.Arbitrary<JobState | undefined> = fc.option(
  fc.record(
    {
      pods: fc.array(podArb, { maxLength: 3 }),
      outcome: fc.option(
        fc.record({
          type: fc.constantFrom("Complete" as const, "Failed" as const),
          reason: fc.constantFrom("BackoffLimitExceeded", "DeadlineExceeded"),
        }),
        { nil: undefined },
      ),
      ownerUid: fc.option(fc.constant("someone-else"), { nil: undefined, freq: 8 }),
      deleting: fc.boolean(),
    },
    { requiredKeys: ["pods"] },
  ),
  { nil: undefined },
);
const recordedArb = fc.option(
  fc.record({
    phase: fc.constantFrom("Queued", "Building", "Assembling", "Succeeded", "Failed", "Pending"),
    amd64: fc.boolean(),
    arm64: fc.boolean(),
    index: fc.boolean(),
  }),
  { nil: undefined },
);

describe("restart safety over arbitrary observed states", () => {
  it("never creates what exists, never loses a digest, and keeps finished builds finished", () => {
    fc.assert(
      fc.property(
        recordedArb,
        jobStateArb,
        jobStateArb,
        jobStateArb,
        fc.boolean(),
        fc.integer({ min: 0, max: 3 }),
        (recorded, amd64, arm64, index, clientSecret, busy) => {
          const platforms = recorded
            ? [
                {
                  platform: "linux/amd64",
                  phase: recorded.amd64 ? "Succeeded" : "Running",
                  ...(recorded.amd64 ? { digest: DIGEST_AMD64 } : {}),
                },
                {
                  platform: "linux/arm64",
                  phase: recorded.arm64 ? "Succeeded" : "Running",
                  ...(recorded.arm64 ? { digest: DIGEST_ARM64 } : {}),
                },
              ]
            : undefined;
          const status = recorded
            ? {
                phase: recorded.phase,
                platforms,
                ...(recorded.index && recorded.phase === "Succeeded"
                  ? { digest: INDEX_DIGEST, completionTime: "2026-03-01T10:00:00Z" }
                  : {}),
              }
            : undefined;
          const world = new World(exampleBuild(status ? { status } : {}));
          world.busy = { amd64: busy, arm64: busy };
          world.clientSecret = clientSecret;
          const probe = world.observe();
          const plan = probe.admission.admitted ? probe.admission.plan : undefined;
          // The example build is admitted whatever its status: the Jobs below are placed.
          expect(plan).toBeDefined();
          for (const [slug, state] of [
            ["amd64", amd64],
            ["arm64", arm64],
            ["index", index],
          ] as const) {
            if (!state || !plan) continue;
            const name = `welcome-7f3a2c1-${slug}`;
            world.objects.set(name, {
              apiVersion: "batch/v1",
              kind: "Job",
              metadata: {
                name,
                namespace: "buildfarm-builders",
                ownerReferences: [
                  {
                    apiVersion: "buildfarm.dev/v1alpha1",
                    kind: "ImageBuild",
                    name: "welcome-7f3a2c1",
                    uid: world.build.metadata.uid as string,
                    controller: true,
                  },
                ],
              },
            });
            world.states.set(name, state);
          }
          const before = world.build.status;
          const observed = world.observe();
          const decision = decideNextStep(world.build, observed);

          for (const action of decision.actions) {
            if (action.type === "CreateJob")
              expect(world.objects.has(action.object.metadata?.name as string)).toBe(false);
            if (action.type === "CreateClientSecret") expect(clientSecret).toBe(false);
          }
          for (const platform of before?.platforms ?? []) {
            if (platform.digest) {
              const after = decision.status.platforms?.find(
                (p) => p.platform === platform.platform,
              );
              expect(after?.digest).toBe(platform.digest);
            }
          }
          if (before?.digest) expect(decision.status.digest).toBe(before.digest);
          if (before?.phase === "Succeeded" || before?.phase === "Failed") {
            expect(decision.status.phase).toBe(before.phase);
            expect(
              decision.actions.some(
                (a) => a.type === "CreateJob" || a.type === "CreateClientSecret",
              ),
            ).toBe(false);
          }
          const names = decision.actions.flatMap((a) => (a.type === "DeleteJob" ? [a.name] : []));
          expect(new Set(names).size).toBe(names.length);
        },
      ),
      { numRuns: 400 },
    );
  });

  it("comes to the same status when it decides again on the same observations", () => {
    fc.assert(
      fc.property(jobStateArb, jobStateArb, (amd64, arm64) => {
        const world = new World();
        world.reconcile();
        if (amd64) world.set("amd64", amd64);
        if (arm64) world.set("arm64", arm64);
        const observed = world.observe();
        const first = decideNextStep(world.build, observed);
        const second = decideNextStep({ ...world.build, status: first.status }, observed);
        expect(second.status).toEqual(first.status);
        expect(second.events).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });
});

describe("spec.verify's restart safety over arbitrary observed states", () => {
  const REPO = "registry.example.com/demo/welcome-to-docker";
  const CHECKED = `${REPO}@${INDEX_DIGEST}`;
  const stepPodArb = fc.oneof(
    fc.constant({ phase: "Pending" as const }),
    fc.constant({ phase: "Running" as const }),
    fc.constant({ phase: "Succeeded" as const, report: assembled }),
    fc.constant({ phase: "Succeeded" as const, report: "" }),
    fc.constant({ phase: "Failed" as const, log: "FAIL\n" }),
  );
  const stepArb: fc.Arbitrary<JobState | undefined> = fc.option(
    fc.record(
      {
        pods: fc.array(stepPodArb, { maxLength: 2 }),
        outcome: fc.option(
          fc.record({
            type: fc.constantFrom("Complete" as const, "Failed" as const),
            reason: fc.constantFrom("BackoffLimitExceeded", "DeadlineExceeded"),
          }),
          { nil: undefined },
        ),
        deleting: fc.boolean(),
      },
      { requiredKeys: ["pods"] },
    ),
    { nil: undefined },
  );
  const recordedVerifyArb = fc.option(fc.constantFrom("Pending", "Running", "Succeeded"), {
    nil: undefined,
  });

  it("never tags an index that did not pass, never creates what exists, never drops the checked digest", () => {
    fc.assert(
      fc.property(
        recordedVerifyArb,
        fc.constantFrom("Assembling", "Verifying"),
        stepArb,
        stepArb,
        stepArb,
        fc.boolean(),
        (recorded, phase, index, verify, tag, noTags) => {
          const world = new World(
            exampleBuild({
              spec: {
                verify: { command: ["true"] },
                ...(noTags ? { output: { tags: [] } } : {}),
              },
              status: {
                phase,
                platforms: [
                  { platform: "linux/amd64", phase: "Succeeded", digest: DIGEST_AMD64 },
                  { platform: "linux/arm64", phase: "Succeeded", digest: DIGEST_ARM64 },
                ],
                ...(recorded ? { verify: { phase: recorded, image: CHECKED } } : {}),
              },
            }),
          );
          world.clientSecret = true;
          const plan = examplePlan(world.build);
          const digests = [
            { platform: "linux/amd64", digest: DIGEST_AMD64 },
            { platform: "linux/arm64", digest: DIGEST_ARM64 },
          ];
          const objects: [string, V1Job, JobState | undefined][] = [
            ["index", indexJob(world.build, plan, digests, { image: OPERATOR_IMAGE }), index],
            ["verify", verifyJob(world.build, plan, CHECKED), verify],
            [
              "tag",
              tagJob(world.build, plan, digests, INDEX_DIGEST, { image: OPERATOR_IMAGE }),
              tag,
            ],
          ];
          for (const [suffix, object, state] of objects) {
            if (!state) continue;
            world.objects.set(`welcome-7f3a2c1-${suffix}`, object);
            world.states.set(`welcome-7f3a2c1-${suffix}`, state);
          }
          const decision = decideNextStep(world.build, world.observe());
          const created = decision.actions.flatMap((a) =>
            a.type === "CreateJob" ? [a.object.metadata?.name as string] : [],
          );
          for (const name of created) expect(world.objects.has(name)).toBe(false);
          const passed = recorded === "Succeeded" || verify?.outcome?.type === "Complete";
          if (created.includes("welcome-7f3a2c1-tag")) expect(passed).toBe(true);
          if (decision.status.phase === "Succeeded") {
            expect(passed).toBe(true);
            expect(decision.status.digest).toBe(INDEX_DIGEST);
            expect(decision.status.verify?.phase).toBe("Succeeded");
          } else {
            expect(decision.status.digest).toBeUndefined();
          }
          if (recorded) expect(decision.status.verify?.image).toBe(CHECKED);
          // Once the index digest is known, a failed check fails the build.
          if (!passed && verify?.outcome?.type === "Failed" && decision.status.verify)
            expect(condition(decision.status, "Succeeded")?.reason).toBe("VerificationFailed");
        },
      ),
      { numRuns: 400 },
    );
  });
});
