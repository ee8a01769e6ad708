// What a build's Jobs ask of the cluster they land on: every container has CPU and memory
// requests and limits (a namespace with a ResourceQuota refuses a pod without them), overridable
// per pool and per build; the Jobs that run the operator's image go only to nodes of the
// platforms it is built for (--operator-image-platforms); the check gets a writable HOME.
import type { V1Container, V1Job, V1PodSpec } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { specProblems as poolProblems } from "../../src/builderpool/validate.ts";
import { admit } from "../../src/imagebuild/admission.ts";
import { buildJob, indexJob, tagJob, verifyJob } from "../../src/imagebuild/jobs.ts";
import { layerResources } from "../../src/imagebuild/resources.ts";
import {
  DIGEST_AMD64,
  DIGEST_ARM64,
  exampleBuild,
  examplePlan,
  examplePool,
  INDEX_DIGEST,
} from "./fixtures.ts";

const IMAGE = "ghcr.io/buildfarm-dev/buildfarm:0.1.0";
const CHECKED = `registry.example.com/demo/welcome-to-docker@${INDEX_DIGEST}`;
const digests = [
  { platform: "linux/amd64", digest: DIGEST_AMD64 },
  { platform: "linux/arm64", digest: DIGEST_ARM64 },
];
const verify = { verify: { command: ["/app/selftest"] } };

function containers(job: V1Job): V1Container[] {
  const spec = job.spec?.template.spec as V1PodSpec;
  return [...(spec.initContainers ?? []), ...spec.containers];
}

/** Every Job of a build with spec.verify, on `pool`. */
function jobsOf(build = exampleBuild({ spec: verify }), pool = examplePool()) {
  const plan = examplePlan(build, pool);
  return {
    build: buildJob(build, plan, plan.targets[0]!),
    index: indexJob(build, plan, digests, { image: IMAGE }),
    tag: tagJob(build, plan, digests, INDEX_DIGEST, { image: IMAGE }),
    verify: verifyJob(build, plan, CHECKED),
  };
}

const resourcesOf = (job: V1Job, name: string) =>
  containers(job).find((container) => container.name === name)?.resources;

describe("requests and limits on every container of a build (ResourceQuota namespaces)", () => {
  it.each(Object.entries(jobsOf()))(
    "the %s Job's containers request and limit CPU and memory",
    (_kind, job) => {
      for (const container of containers(job)) {
        for (const list of ["requests", "limits"] as const)
          for (const resource of ["cpu", "memory"])
            expect(
              container.resources?.[list]?.[resource],
              `${container.name} ${list}.${resource}`,
            ).toMatch(/^[0-9]+(m|Mi|Gi)?$/);
      }
    },
  );

  it("takes the pool's spec.jobResources over the defaults, and the build's over the pool's", () => {
    const pool = examplePool({
      spec: {
        jobResources: {
          build: { requests: { cpu: "200m" }, limits: { cpu: "2", memory: "1Gi" } },
          assemble: { limits: { memory: "256Mi" } },
          verify: { requests: { memory: "256Mi" } },
        },
      },
    });
    const onPool = jobsOf(exampleBuild({ spec: verify }), pool);
    expect(resourcesOf(onPool.build, "buildctl")).toEqual({
      requests: { cpu: "200m", memory: "64Mi" },
      limits: { cpu: "2", memory: "1Gi" },
    });
    expect(resourcesOf(onPool.index, "assemble")).toEqual({
      requests: { cpu: "50m", memory: "128Mi" },
      limits: { cpu: "500m", memory: "256Mi" },
    });
    // The report container copies one small file: the defaults, whatever the pool says.
    expect(resourcesOf(onPool.build, "report")).toEqual(resourcesOf(jobsOf().build, "report"));
    const own = exampleBuild({
      spec: {
        jobResources: { build: { requests: { cpu: "4", memory: "2Gi" } } },
        verify: { command: ["/app/selftest"], resources: { limits: { cpu: "250m" } } },
      },
    });
    const mine = jobsOf(own, pool);
    // A request above the limit it inherits raises that limit (a pod may not ask for more
    // than its limit).
    expect(resourcesOf(mine.build, "buildctl")).toEqual({
      requests: { cpu: "4", memory: "2Gi" },
      limits: { cpu: "4", memory: "2Gi" },
    });
    // A limit below the request it inherits lowers that request.
    expect(resourcesOf(mine.verify, "verify")).toEqual({
      requests: { cpu: "100m", memory: "256Mi" },
      limits: { cpu: "250m", memory: "512Mi" },
    });
  });

  it("compares quantities exactly when one level meets another", () => {
    const base = { requests: { cpu: "500m", memory: "1Gi" }, limits: { cpu: "1", memory: "1Gi" } };
    expect(layerResources(base, { requests: { cpu: "1000m", memory: "1073741824" } })).toEqual({
      requests: { cpu: "1000m", memory: "1073741824" },
      limits: { cpu: "1", memory: "1Gi" },
    });
    expect(layerResources(base, { limits: { cpu: "0.25" } })).toEqual({
      requests: { cpu: "0.25", memory: "1Gi" },
      limits: { cpu: "0.25", memory: "1Gi" },
    });
  });

  it("refuses a request above its own limit, naming the field, in a build and in a pool", () => {
    const build = exampleBuild({
      spec: { jobResources: { assemble: { requests: { cpu: "2" }, limits: { cpu: "1" } } } },
    });
    const admission = admit(build, {
      pool: examplePool(),
      buildNamespaceLabels: {},
      pushSecret: { type: "kubernetes.io/dockerconfigjson", keys: [".dockerconfigjson"] },
    });
    expect(admission).toMatchObject({
      admitted: false,
      phase: "Failed",
      reason: "InvalidResources",
      message: expect.stringContaining("spec.jobResources.assemble.requests.cpu: 2 is more than"),
    });
    const pool = examplePool({
      spec: {
        jobResources: { verify: { requests: { memory: "2Gi" }, limits: { memory: "1Gi" } } },
      },
    });
    expect(poolProblems(pool)).toContainEqual(
      expect.stringContaining("spec.jobResources.verify.requests.memory: 2Gi is more than"),
    );
  });
});

describe("the Jobs that run the operator's image go where it runs", () => {
  const archesOf = (job: V1Job) => {
    const spec = job.spec?.template.spec as V1PodSpec;
    const terms =
      spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution
        ?.nodeSelectorTerms ?? [];
    return terms.map((term) =>
      Object.fromEntries((term.matchExpressions ?? []).map((e) => [e.key, e.values])),
    );
  };

  it("by default on linux amd64 and arm64 nodes, never a third architecture", () => {
    // A platform Job's cache-report container runs the operator image too.
    const { build, index, tag } = jobsOf();
    for (const job of [build, index, tag])
      expect(archesOf(job)).toEqual([
        { "kubernetes.io/arch": ["amd64", "arm64"], "kubernetes.io/os": ["linux"] },
      ]);
  });

  it("on the nodes of the platforms the image is built for", () => {
    const build = exampleBuild();
    const plan = examplePlan(build);
    const index = indexJob(build, plan, digests, {
      image: IMAGE,
      platforms: ["linux/amd64"],
    });
    expect(archesOf(index)).toEqual([
      { "kubernetes.io/arch": ["amd64"], "kubernetes.io/os": ["linux"] },
    ]);
    const arm = indexJob(build, plan, digests, {
      image: IMAGE,
      platforms: ["linux/arm64", "linux/arm/v7"],
    });
    expect(archesOf(arm)).toEqual([
      { "kubernetes.io/arch": ["arm64", "arm"], "kubernetes.io/os": ["linux"] },
    ]);
    const platformJob = buildJob(build, plan, plan.targets[1]!, undefined, {
      image: IMAGE,
      platforms: ["linux/amd64"],
    });
    expect(archesOf(platformJob)).toEqual([
      { "kubernetes.io/arch": ["amd64"], "kubernetes.io/os": ["linux"] },
    ]);
  });
});

describe("the check of spec.verify", () => {
  it("gets HOME=/tmp, its one writable directory (UID 65532, read-only root)", () => {
    const env = containers(jobsOf().verify)[0]?.env ?? [];
    expect(env).toContainEqual({ name: "HOME", value: "/tmp" });
    const own = exampleBuild({
      spec: { verify: { command: ["/app/selftest"], env: [{ name: "HOME", value: "/work" }] } },
    });
    const mine = containers(verifyJob(own, examplePlan(own), CHECKED))[0]?.env ?? [];
    expect(mine.filter((entry) => entry.name === "HOME")).toEqual([
      { name: "HOME", value: "/work" },
    ]);
  });
});
