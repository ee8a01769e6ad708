// The caches keep slim Jobs, pods and client Secrets (src/imagebuild/caches.ts, slimSecret):
// whatever a Job and its pods look like, what the reconciler observes of the slim objects is
// what it would observe of the whole ones, and the metadata the indexes and handlers read stays.
import type { V1Job, V1Pod, V1Secret } from "@kubernetes/client-node";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { slimSecret } from "../../src/caches.ts";
import { slimJob, slimPod } from "../../src/imagebuild/caches.ts";
import { isFinished, observeJob } from "../../src/imagebuild/observe.ts";

const time = fc
  .integer({ min: 0, max: 10_000 })
  .map((s) => new Date(Date.UTC(2026, 2, 1) + s * 1000).toISOString().replace(".000Z", "Z"));
const text = fc.constantFrom(
  "",
  "Completed",
  "Error",
  "DeadlineExceeded",
  "boom\nline two",
  '{"a":1}',
);

const conditionArb = fc.record(
  {
    type: fc.constantFrom("Complete", "Failed", "SuccessCriteriaMet", "FailureTarget", "Suspended"),
    status: fc.constantFrom("True", "False", "Unknown"),
    reason: text,
    message: text,
    lastProbeTime: time,
    lastTransitionTime: time,
  },
  { requiredKeys: ["type", "status"] },
);

const stateArb = fc.oneof(
  fc.record({
    terminated: fc.record(
      {
        exitCode: fc.integer({ min: 0, max: 255 }),
        reason: text,
        message: text,
        startedAt: time,
        finishedAt: time,
        containerID: fc.constant("containerd://abc"),
      },
      { requiredKeys: ["exitCode"] },
    ),
  }),
  fc.record({ running: fc.record({ startedAt: time }) }),
  fc.record({ waiting: fc.record({ reason: text, message: text }, { requiredKeys: [] }) }),
  fc.constant({}),
);

const containerArb = (name: string) =>
  fc.record({
    name: fc.constant(name),
    image: fc.constant("moby/buildkit:v0.24.0-rootless"),
    imageID: fc.constant("moby/buildkit@sha256:0"),
    ready: fc.boolean(),
    started: fc.boolean(),
    restartCount: fc.integer({ min: 0, max: 3 }),
    state: stateArb,
    lastState: stateArb,
  });

const labels = (component: string, job: string) => ({
  "app.kubernetes.io/managed-by": "buildfarm",
  "app.kubernetes.io/component": component,
  "buildfarm.dev/build": "b",
  "batch.kubernetes.io/job-name": job,
  "job-name": job,
  "batch.kubernetes.io/controller-uid": "uid-job",
  "controller-uid": "uid-job",
});

const podArb = (component: string, index: number) =>
  fc
    .record({
      created: time,
      phase: fc.constantFrom("Pending", "Running", "Succeeded", "Failed", "Unknown"),
      init: fc.option(containerArb("buildctl"), { nil: undefined }),
      main: fc.option(containerArb(component === "index" ? "assemble" : "report"), {
        nil: undefined,
      }),
      conditions: fc.array(conditionArb, { maxLength: 3 }),
      owned: fc.boolean(),
    })
    .map(
      ({ created, phase, init, main, conditions, owned }): V1Pod =>
        ({
          apiVersion: "v1",
          kind: "Pod",
          metadata: {
            name: `b-amd64-${index}`,
            namespace: "ns",
            uid: `uid-pod-${index}`,
            resourceVersion: String(100 + index),
            creationTimestamp: created,
            labels: labels(component, "b-amd64"),
            ownerReferences: [
              {
                apiVersion: "batch/v1",
                kind: "Job",
                name: "b-amd64",
                uid: owned ? "uid-job" : "someone-else",
                controller: true,
              },
            ],
          },
          spec: { nodeName: "amd-1", containers: [{ name: "report", image: "x" }] },
          status: {
            phase,
            conditions,
            hostIP: "10.0.0.1",
            podIP: "10.244.0.2",
            qosClass: "Burstable",
            ...(init ? { initContainerStatuses: [init] } : {}),
            ...(main ? { containerStatuses: [main] } : {}),
          },
        }) as unknown as V1Pod,
    );

const jobArb = (component: string) =>
  fc
    .record({
      status: fc.record(
        {
          active: fc.integer({ min: 0, max: 2 }),
          succeeded: fc.integer({ min: 0, max: 2 }),
          failed: fc.integer({ min: 0, max: 2 }),
          ready: fc.integer({ min: 0, max: 2 }),
          startTime: time,
          completionTime: time,
          conditions: fc.array(conditionArb, { maxLength: 4 }),
        },
        { requiredKeys: [] },
      ),
      deleting: fc.boolean(),
    })
    .map(
      ({ status, deleting }): V1Job =>
        ({
          apiVersion: "batch/v1",
          kind: "Job",
          metadata: {
            name: "b-amd64",
            namespace: "ns",
            uid: "uid-job",
            resourceVersion: "99",
            generation: 1,
            labels: { "app.kubernetes.io/component": component, "buildfarm.dev/pool": "farm" },
            ownerReferences: [
              {
                apiVersion: "buildfarm.dev/v1alpha1",
                kind: "ImageBuild",
                name: "b",
                uid: "uid-b",
                controller: true,
              },
            ],
            ...(deleting ? { deletionTimestamp: "2026-03-01T10:00:00Z" } : {}),
          },
          spec: {
            backoffLimit: 1,
            selector: { matchLabels: { "batch.kubernetes.io/controller-uid": "uid-job" } },
            template: {
              spec: { restartPolicy: "Never", containers: [{ name: "report", image: "x" }] },
            },
          },
          status,
        }) as unknown as V1Job,
    );

describe("what the caches keep of a Job and its pods", () => {
  it.each(["build", "index", "verify", "tag", "builder"])(
    "observes the same of slim %s Jobs and pods as of whole ones",
    (component) => {
      fc.assert(
        fc.property(
          jobArb(component),
          fc
            .array(fc.nat(), { maxLength: 3 })
            .chain((indexes) => fc.tuple(...indexes.map((_, i) => podArb(component, i)))),
          (job, pods) => {
            const whole = observeJob(job, pods);
            const slim = observeJob(
              slimJob(structuredClone(job)),
              pods.map((pod) => slimPod(structuredClone(pod))),
            );
            expect(slim).toEqual(whole);
            expect(isFinished(slim)).toBe(isFinished(whole));
          },
        ),
        { numRuns: 200 },
      );
    },
  );

  it("keeps the metadata indexes and handlers read, and drops the template", () => {
    fc.assert(
      fc.property(jobArb("build"), podArb("build", 0), (job, pod) => {
        const slimmed = slimJob(structuredClone(job));
        expect(slimmed.metadata).toEqual(job.metadata);
        expect(slimmed.spec?.template).toBeUndefined();
        const slimmedPod = slimPod(structuredClone(pod));
        const {
          "batch.kubernetes.io/controller-uid": _a,
          "controller-uid": _b,
          "job-name": _c,
          ...kept
        } = pod.metadata?.labels ?? {};
        expect(slimmedPod.metadata).toEqual({ ...pod.metadata, labels: kept });
        expect(slimmedPod.spec).toEqual({ nodeName: "amd-1", containers: [] });
        expect(Object.keys(slimmedPod.status ?? {}).sort()).toEqual(
          ["containerStatuses", "initContainerStatuses", "phase"].filter(
            (key) => key in (pod.status ?? {}),
          ),
        );
      }),
    );
  });

  it("keeps a builder pod's status whole: its readiness and address", () => {
    fc.assert(
      fc.property(podArb("builder", 0), (pod) => {
        expect(slimPod(structuredClone(pod)).status).toEqual(pod.status);
      }),
    );
  });

  it("keeps a StatefulSet builder's hostname and subdomain, which routing dials it by", () => {
    const pod: V1Pod = {
      metadata: { name: "farm-amd64-0", labels: { "app.kubernetes.io/component": "builder" } },
      spec: {
        nodeName: "amd-1",
        hostname: "farm-amd64-0",
        subdomain: "farm-amd64-headless",
        containers: [{ name: "buildkitd", image: "moby/buildkit:rootless" }],
      },
    };
    expect(slimPod(pod).spec).toEqual({
      nodeName: "amd-1",
      hostname: "farm-amd64-0",
      subdomain: "farm-amd64-headless",
      containers: [],
    });
  });
});

describe("what the caches keep of a Secret", () => {
  const secret = (component: string): V1Secret => ({
    apiVersion: "v1",
    kind: "Secret",
    type: "kubernetes.io/tls",
    metadata: { name: "x", namespace: "ns", labels: { "app.kubernetes.io/component": component } },
    data: { "tls.crt": "Y2VydA==", "tls.key": "a2V5" },
  });

  it("keeps only the existence of a build's client Secret, and the pools' Secrets whole", () => {
    expect(slimSecret(secret("build"))).toEqual({ ...secret("build"), data: undefined });
    expect("data" in slimSecret(secret("build"))).toBe(false);
    expect(slimSecret(secret("builder"))).toEqual(secret("builder"));
    expect(slimSecret({ metadata: { name: "ca" }, data: { "ca.crt": "x" } })).toEqual({
      metadata: { name: "ca" },
      data: { "ca.crt": "x" },
    });
  });
});
