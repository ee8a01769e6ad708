import type { V1Container, V1Job, V1PodSpec } from "@kubernetes/client-node";
import { Job } from "kubernetes-models/batch/v1/Job";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { DEFAULT_OPERATOR_IMAGE } from "../../src/config.ts";
import type { BuildPlan } from "../../src/imagebuild/admission.ts";
import { buildctlArgv } from "../../src/imagebuild/argv.ts";
import {
  BUILD_USER,
  buildJob,
  CONTAINERS,
  indexJob,
  inlineContextConfigMap,
  OPERATOR_USER,
  tagJob,
  VERIFY_USER,
  verifyJob,
} from "../../src/imagebuild/jobs.ts";
import { BUILD_PATHS } from "../../src/naming.ts";
import {
  BUILD_UID,
  DIGEST_AMD64,
  DIGEST_ARM64,
  exampleBuild,
  examplePlan,
  examplePool,
  INDEX_DIGEST,
} from "./fixtures.ts";

const build = exampleBuild();
const plan = examplePlan(build);
const [amd64, arm64] = plan.targets as [BuildPlan["targets"][0], BuildPlan["targets"][0]];
const OPERATOR_IMAGE = "ghcr.io/buildfarm/buildfarm:0.1.0";
const digests = [
  { platform: "linux/amd64", digest: DIGEST_AMD64 },
  { platform: "linux/arm64", digest: DIGEST_ARM64 },
];

const everything = exampleBuild({
  spec: {
    source: { git: { subPath: "app", authSecretRef: { name: "git" } } },
    target: "runtime",
    secrets: [
      { id: "npmrc", secretRef: { name: "npm", key: "npmrc" } },
      { id: "token", secretRef: { name: "npm", key: "value" } },
    ],
  },
});
const inline = exampleBuild({
  spec: {
    source: {
      git: null,
      inline: {
        dockerfile: "FROM scratch\nCOPY . /\n",
        files: [
          { path: "hello.txt", content: "hi\n" },
          { path: "conf/app.json", content: "{}" },
        ],
      },
    },
  },
});

const verified = exampleBuild({
  spec: {
    verify: {
      command: ["/app/selftest"],
      args: ["--all"],
      env: [{ name: "LEVEL", value: "full" }],
      timeout: "90s",
    },
  },
});
const checkedElsewhere = exampleBuild({
  spec: {
    output: { pushSecretRef: null },
    verify: {
      image: `ghcr.io/acme/checks:v2@sha256:${"c".repeat(64)}`,
      command: ["check-image"],
      resources: { requests: { cpu: "1", memory: "1Gi" }, limits: { memory: "2Gi" } },
    },
  },
});
const CHECKED = `registry.example.com/demo/welcome-to-docker@${INDEX_DIGEST}`;

const jobs: [string, V1Job][] = [
  ["the example's amd64 Job", buildJob(build, plan, amd64)],
  ["the example's arm64 Job", buildJob(build, plan, arm64)],
  [
    "a Job with git auth, subPath, target and secrets",
    buildJob(everything, examplePlan(everything), amd64),
  ],
  ["an inline-context Job", buildJob(inline, examplePlan(inline), amd64)],
  [
    "a Job without a push Secret",
    buildJob(exampleBuild({ spec: { output: { pushSecretRef: null } } }), plan, amd64),
  ],
  ["the index Job", indexJob(build, plan, digests, { image: OPERATOR_IMAGE })],
  ["a verify Job", verifyJob(verified, examplePlan(verified), CHECKED)],
  [
    "a verify Job in an image of its own, with resources",
    verifyJob(checkedElsewhere, examplePlan(checkedElsewhere), CHECKED),
  ],
  [
    "a tag Job",
    tagJob(verified, examplePlan(verified), digests, INDEX_DIGEST, { image: OPERATOR_IMAGE }),
  ],
];

function containersOf(spec: V1PodSpec): V1Container[] {
  return [...(spec.initContainers ?? []), ...spec.containers];
}

/** Pod Security Standards "restricted" (v1.30), the checks that apply to these pods. */
function restrictedViolations(spec: V1PodSpec): string[] {
  const problems: string[] = [];
  const pod = spec.securityContext ?? {};
  if (spec.hostNetwork || spec.hostPID || spec.hostIPC) problems.push("host namespaces");
  const allowedVolumes = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
  ];
  for (const volume of spec.volumes ?? []) {
    const kinds = Object.keys(volume).filter((key) => key !== "name");
    if (!kinds.every((kind) => allowedVolumes.includes(kind)))
      problems.push(`volume ${volume.name}: ${kinds}`);
  }
  if (pod.seccompProfile?.type !== "RuntimeDefault") problems.push("pod seccomp");
  for (const container of containersOf(spec)) {
    const context = container.securityContext ?? {};
    if (context.privileged) problems.push(`${container.name}: privileged`);
    if (context.allowPrivilegeEscalation !== false)
      problems.push(`${container.name}: allowPrivilegeEscalation`);
    if (!(context.runAsNonRoot ?? pod.runAsNonRoot))
      problems.push(`${container.name}: runAsNonRoot`);
    if ((context.runAsUser ?? pod.runAsUser) === 0) problems.push(`${container.name}: runAsUser 0`);
    if (!context.capabilities?.drop?.includes("ALL")) problems.push(`${container.name}: drop ALL`);
    if ((context.capabilities?.add ?? []).some((cap) => cap !== "NET_BIND_SERVICE"))
      problems.push(`${container.name}: adds capabilities`);
    if (context.seccompProfile && context.seccompProfile.type === "Unconfined")
      problems.push(`${container.name}: seccomp`);
    if (container.ports?.some((port) => port.hostPort))
      problems.push(`${container.name}: hostPort`);
  }
  return problems;
}

const SHELLS = /^(.*\/)?(sh|bash|ash|dash|zsh|busybox)$/;

describe("every Job the build controller creates", () => {
  it.each(jobs)("%s validates against the upstream Job schema", (_name, object) => {
    expect(() => new Job(object as never).validate()).not.toThrow();
  });

  it.each(jobs)("%s meets Pod Security restricted", (_name, object) => {
    expect(restrictedViolations(object.spec?.template.spec as V1PodSpec)).toEqual([]);
  });

  it.each(jobs)("%s runs argv arrays only: no shell and no -c anywhere", (_name, object) => {
    for (const container of containersOf(object.spec?.template.spec as V1PodSpec)) {
      const argv = [...(container.command ?? []), ...(container.args ?? [])];
      for (const element of argv) {
        expect(element).not.toMatch(SHELLS);
        expect(element).not.toBe("-c");
      }
      expect(container.command?.[0] ?? "").not.toMatch(SHELLS);
    }
  });

  it.each(jobs)(
    "%s is owned by the ImageBuild as its controller, without a Job TTL",
    (_name, object) => {
      expect(object.metadata?.ownerReferences).toEqual([
        {
          apiVersion: "buildfarm.dev/v1alpha1",
          kind: "ImageBuild",
          name: "welcome-7f3a2c1",
          uid: BUILD_UID,
          controller: true,
          blockOwnerDeletion: true,
        },
      ]);
      expect(object.spec?.ttlSecondsAfterFinished).toBeUndefined();
      expect(object.spec?.template.spec?.automountServiceAccountToken).toBe(false);
      expect(object.spec?.template.spec?.restartPolicy).toBe("Never");
    },
  );
});

describe("a platform Job", () => {
  const object = buildJob(build, plan, amd64);
  const spec = object.spec?.template.spec as V1PodSpec;
  const [buildctl] = spec.initContainers as [V1Container];
  const [report, cacheReport] = spec.containers as [V1Container, V1Container];

  it("is <build>-<slug> in the build's namespace, labelled for the builders' NetworkPolicy", () => {
    expect(object.metadata?.name).toBe("welcome-7f3a2c1-amd64");
    expect(object.metadata?.namespace).toBe("buildfarm-builders");
    expect(object.spec?.template.metadata?.labels).toEqual({
      "app.kubernetes.io/managed-by": "buildfarm",
      "app.kubernetes.io/name": "buildfarm-build",
      "app.kubernetes.io/instance": "welcome-7f3a2c1",
      "app.kubernetes.io/component": "build",
      "buildfarm.dev/build": "welcome-7f3a2c1",
      "buildfarm.dev/pool": "default",
      "buildfarm.dev/pool-namespace": "buildfarm-builders",
      "buildfarm.dev/arch": "amd64",
      "buildfarm.dev/platform": "amd64",
    });
  });

  it("retries spec.retries times within spec.timeout", () => {
    expect(object.spec?.backoffLimit).toBe(1);
    expect(object.spec?.activeDeadlineSeconds).toBe(1800);
  });

  it("runs buildctl as the init container with the argv, and the log tail as its failure message", () => {
    expect(buildctl.name).toBe(CONTAINERS.buildctl);
    expect(buildctl.image).toBe("moby/buildkit:v0.24.0-rootless");
    expect(buildctl.command).toEqual(["buildctl"]);
    expect(buildctl.args).toEqual(buildctlArgv(build, plan, amd64));
    expect(buildctl.terminationMessagePolicy).toBe("FallbackToLogsOnError");
  });

  it("copies the metadata file into the termination message with cp, the image's own binary", () => {
    expect(report.command).toEqual(["cp"]);
    expect(report.args).toEqual(["/out/metadata.json", "/dev/termination-log"]);
    expect(report.terminationMessagePath).toBe("/dev/termination-log");
    expect(report.volumeMounts).toEqual([{ name: "out", mountPath: "/out", readOnly: true }]);
  });

  it("sums up buildctl's --trace in the operator image's cache-report container, apart from the metadata", () => {
    const trace = buildctl.args?.indexOf("--trace") ?? -1;
    expect(buildctl.args?.slice(trace, trace + 2)).toEqual(["--trace", "/trace/trace.json"]);
    expect(cacheReport.name).toBe(CONTAINERS.cacheReport);
    expect(cacheReport.image).toBe(DEFAULT_OPERATOR_IMAGE);
    // The image's entrypoint (node dist/cli.js), as for the index Job; no shell.
    expect(cacheReport.command).toBeUndefined();
    expect(cacheReport.args).toEqual([
      "cache-report",
      "--trace",
      "/trace/trace.json",
      "--termination-message-path",
      "/dev/termination-log",
    ]);
    expect(cacheReport.volumeMounts).toEqual([
      { name: "trace", mountPath: "/trace", readOnly: true },
    ]);
    expect(cacheReport.securityContext?.readOnlyRootFilesystem).toBe(true);
    // A trace as long as the build's log must never get the pod evicted: no sizeLimit.
    expect(spec.volumes).toContainEqual({ name: "trace", emptyDir: {} });
    const other = buildJob(build, plan, amd64, undefined, { image: "registry.example/op:2" });
    expect(other.spec?.template.spec?.containers[1]?.image).toBe("registry.example/op:2");
  });

  it("runs as the rootless image's user, which can read its 0440 Secret files through fsGroup", () => {
    expect(spec.securityContext).toMatchObject({
      runAsUser: BUILD_USER,
      runAsGroup: BUILD_USER,
      fsGroup: BUILD_USER,
    });
    for (const volume of spec.volumes ?? []) {
      if (volume.secret) expect(volume.secret.defaultMode).toBe(0o440);
      if (volume.projected) expect(volume.projected.defaultMode).toBe(0o440);
    }
    expect(buildctl.securityContext?.readOnlyRootFilesystem).toBe(true);
  });

  it("mounts the client certificate, the push Secret as a docker config, the metadata emptyDir and a writable HOME", () => {
    expect(spec.volumes).toContainEqual({
      name: "buildkit-client",
      secret: {
        secretName: "welcome-7f3a2c1-buildkit-client",
        items: [
          { key: "ca.crt", path: "ca.crt" },
          { key: "tls.crt", path: "tls.crt" },
          { key: "tls.key", path: "tls.key" },
        ],
        defaultMode: 0o440,
      },
    });
    expect(spec.volumes).toContainEqual({
      name: "docker-config",
      secret: {
        secretName: "registry-push",
        items: [{ key: ".dockerconfigjson", path: "config.json" }],
        defaultMode: 0o440,
      },
    });
    expect(buildctl.env).toEqual([
      { name: "HOME", value: "/tmp" },
      { name: "TMPDIR", value: "/tmp" },
      { name: "DOCKER_CONFIG", value: BUILD_PATHS.dockerConfig },
    ]);
    expect(buildctl.volumeMounts?.map((m) => m.mountPath)).toEqual([
      "/etc/buildkit/certs",
      "/etc/buildfarm/docker",
      "/out",
      "/trace",
      "/tmp",
    ]);
  });

  it("projects build secrets as files named by id, and the git credential apart", () => {
    const withAll = buildJob(everything, examplePlan(everything), amd64).spec?.template
      .spec as V1PodSpec;
    expect(withAll.volumes).toContainEqual({
      name: "build-secrets",
      projected: {
        defaultMode: 0o440,
        sources: [
          { secret: { name: "npm", items: [{ key: "npmrc", path: "npmrc" }] } },
          { secret: { name: "npm", items: [{ key: "value", path: "token" }] } },
        ],
      },
    });
    expect(withAll.volumes).toContainEqual({
      name: "git-auth",
      secret: { secretName: "git", items: [{ key: "token", path: "token" }], defaultMode: 0o440 },
    });
  });

  it("mounts an inline context file by file, so the kubelet's ..data links stay out of the context", () => {
    const podSpec = buildJob(inline, examplePlan(inline), amd64).spec?.template.spec as V1PodSpec;
    const mounts = (podSpec.initContainers?.[0]?.volumeMounts ?? []).filter((m) =>
      m.mountPath.startsWith("/workspace"),
    );
    expect(mounts).toEqual([
      { name: "context", mountPath: "/workspace/context" },
      {
        name: "inline-context",
        mountPath: "/workspace/context/Dockerfile",
        subPath: "dockerfile",
        readOnly: true,
      },
      {
        name: "inline-context",
        mountPath: "/workspace/context/hello.txt",
        subPath: "file-0",
        readOnly: true,
      },
      {
        name: "inline-context",
        mountPath: "/workspace/context/conf/app.json",
        subPath: "file-1",
        readOnly: true,
      },
    ]);
  });

  it("reads the same for reviewers as the checked-in YAML", async () => {
    await expect(
      `# ${"The example build's linux/amd64 Job (generated by test/imagebuild/jobs.test.ts)"}\n${stringify(object)}`,
    ).toMatchFileSnapshot("./__snapshots__/welcome-7f3a2c1-amd64.job.yaml");
  });
});

describe("the index Job", () => {
  const object = indexJob(
    build,
    { ...plan, insecureRegistries: ["registry.example.com"] },
    digests,
    {
      image: OPERATOR_IMAGE,
    },
  );
  const podSpec = object.spec?.template.spec as V1PodSpec;
  const [assemble] = podSpec.containers as [V1Container];

  it("runs `buildfarm assemble` through the operator image's entrypoint with every digest and tag", () => {
    expect(object.metadata?.name).toBe("welcome-7f3a2c1-index");
    expect(assemble.image).toBe(OPERATOR_IMAGE);
    expect(assemble.command).toBeUndefined();
    expect(assemble.args).toEqual([
      "assemble",
      "--image",
      "registry.example.com/demo/welcome-to-docker",
      "--digest",
      `linux/amd64=${DIGEST_AMD64}`,
      "--digest",
      `linux/arm64=${DIGEST_ARM64}`,
      "--tag",
      "latest",
      "--tag",
      "main",
      "--insecure-registry",
      "registry.example.com",
      "--docker-config",
      "/etc/buildfarm/docker",
      "--termination-message-path",
      "/dev/termination-log",
    ]);
    expect(assemble.env).toContainEqual({ name: "DOCKER_CONFIG", value: "/etc/buildfarm/docker" });
    expect(object.spec?.template.spec?.securityContext?.runAsUser).toBe(OPERATOR_USER);
    expect(object.spec?.template.metadata?.labels?.["app.kubernetes.io/component"]).toBe("index");
  });
});

describe("the Jobs of a build with spec.verify", () => {
  const verifiedPlan = examplePlan(verified);
  const argsOf = (job: V1Job) => job.spec?.template.spec?.containers[0]?.args ?? [];

  it("pushes the index by digest only: no --tag until the check has passed", () => {
    const index = indexJob(verified, verifiedPlan, digests, { image: OPERATOR_IMAGE });
    expect(index.metadata?.name).toBe("welcome-7f3a2c1-index");
    expect(argsOf(index)).not.toContain("--tag");
    expect(argsOf(index)).not.toContain("--expect-digest");
  });

  it("tags with a second assemble of the same digests that refuses any other index", () => {
    const tag = tagJob(verified, verifiedPlan, digests, INDEX_DIGEST, { image: OPERATOR_IMAGE });
    expect(tag.metadata?.name).toBe("welcome-7f3a2c1-tag");
    expect(tag.metadata?.labels?.["app.kubernetes.io/component"]).toBe("tag");
    const untagged = argsOf(indexJob(verified, verifiedPlan, digests, { image: OPERATOR_IMAGE }));
    const args = argsOf(tag);
    // The same inputs as the index Job's, plus the tags and the checked digest.
    expect(args.filter((arg, i) => arg === "--digest" || args[i - 1] === "--digest")).toEqual(
      untagged.filter((arg, i) => arg === "--digest" || untagged[i - 1] === "--digest"),
    );
    expect(args).toEqual(
      expect.arrayContaining(["--tag", "latest", "--tag", "main", "--expect-digest", INDEX_DIGEST]),
    );
  });

  it("runs the check as an argv in the built image, pinned to the first platform's architecture", () => {
    const job = verifyJob(verified, verifiedPlan, CHECKED);
    const spec = job.spec?.template.spec as V1PodSpec;
    expect(job.metadata?.name).toBe("welcome-7f3a2c1-verify");
    expect(job.spec).toMatchObject({ backoffLimit: 0, activeDeadlineSeconds: 90 });
    expect(spec.containers[0]).toMatchObject({
      image: CHECKED,
      command: ["/app/selftest"],
      args: ["--all"],
      env: [
        { name: "LEVEL", value: "full" },
        { name: "IMAGE", value: CHECKED },
        { name: "HOME", value: "/tmp" },
        { name: "TMPDIR", value: "/tmp" },
      ],
      volumeMounts: [{ name: "tmp", mountPath: "/tmp" }],
      resources: {
        requests: { cpu: "100m", memory: "128Mi" },
        limits: { cpu: "1", memory: "512Mi" },
      },
    });
    expect(spec.securityContext?.runAsUser).toBe(VERIFY_USER);
    expect(
      spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution
        ?.nodeSelectorTerms[0]?.matchExpressions?.[0],
    ).toEqual({ key: "kubernetes.io/arch", operator: "In", values: ["amd64"] });
    expect(spec.imagePullSecrets).toEqual([{ name: "registry-push" }]);
    // No volume of the build's credentials: the check gets the image, not push rights.
    expect(spec.volumes?.map((volume) => volume.name)).toEqual(["tmp"]);
  });

  it("runs a check image of its own anywhere linux, with its resources", () => {
    const spec = verifyJob(checkedElsewhere, examplePlan(checkedElsewhere), CHECKED).spec?.template
      .spec as V1PodSpec;
    expect(spec.containers[0]?.image).toBe(`ghcr.io/acme/checks:v2@sha256:${"c".repeat(64)}`);
    // Its own requests and limit, over the default CPU limit.
    expect(spec.containers[0]?.resources).toEqual({
      requests: { cpu: "1", memory: "1Gi" },
      limits: { cpu: "1", memory: "2Gi" },
    });
    expect(spec.affinity).toBeUndefined();
    expect(spec.nodeSelector).toEqual({ "kubernetes.io/os": "linux" });
    expect(spec.imagePullSecrets).toBeUndefined();
  });
});

describe("the inline context ConfigMap", () => {
  const object = inlineContextConfigMap(inline, examplePlan(inline));
  it("holds the Dockerfile and each file under a key the mounts name, immutably", () => {
    expect(() => new ConfigMap(object as never).validate()).not.toThrow();
    expect(object.metadata?.name).toBe("welcome-7f3a2c1-context");
    expect(object.immutable).toBe(true);
    expect(object.data).toEqual({
      dockerfile: "FROM scratch\nCOPY . /\n",
      "file-0": "hi\n",
      "file-1": "{}",
    });
  });

  it("is only for inline sources", () => {
    expect(() => inlineContextConfigMap(build, plan)).toThrow(/no inline source/);
  });
});

describe("pool choices reach the Job", () => {
  it("uses the pool's pinned BuildKit image for buildctl", () => {
    const pool = examplePool({
      spec: { buildkit: { image: "registry.example.com/mirror/buildkit:v0.24.0-rootless" } },
    });
    const pinned = examplePlan(build, pool);
    const job = buildJob(build, pinned, amd64);
    expect(job.spec?.template.spec?.initContainers?.[0]?.image).toBe(
      "registry.example.com/mirror/buildkit:v0.24.0-rootless",
    );
  });
});
