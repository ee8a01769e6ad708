import type { KubernetesObject, V1Deployment, V1StatefulSet } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { DEFAULT_BUILDKIT_IMAGE } from "../../src/api/builderpool.ts";
import { builderImage, parseKubeVersion } from "../../src/builderpool/context.ts";
import { desiredPool } from "../../src/builderpool/desired.ts";
import { selectorMatches } from "../../src/builderpool/policy.ts";
import { APPARMOR_ANNOTATION, buildkitdArgs } from "../../src/builderpool/workload.ts";
import { ANNOTATIONS, buildPodLabels, COMPONENTS, LABELS } from "../../src/naming.ts";
import { stableHash } from "../../src/runtime/hash.ts";
import { examplePool, POOL_UID, poolContext } from "./fixtures.ts";
import { unknownFields, validateObject } from "./schema.ts";

const persistentPool = () =>
  examplePool((raw) => {
    raw.spec.cache = { type: "Persistent", size: "100Gi", storageClassName: "fast-ssd" };
  });

const deploymentOf = (pool = examplePool(), arch = "amd64", context = poolContext()) => {
  const entry = desiredPool(pool, context).architectures.find((a) => a.arch === arch);
  if (entry?.workload.kind !== "Deployment") throw new Error("expected a Deployment");
  return entry.workload.object as V1Deployment;
};

const podSpecOf = (workload: V1Deployment | V1StatefulSet) => {
  const spec = workload.spec?.template.spec;
  if (!spec) throw new Error("no pod spec");
  return spec;
};

describe("every generated object validates against the upstream schemas", () => {
  const cases: [string, () => KubernetesObject[]][] = [
    ["the example pool (EmptyDir, 1.31)", () => desiredPool(examplePool(), poolContext()).objects],
    [
      "the example pool on Kubernetes 1.29 (AppArmor annotation)",
      () =>
        desiredPool(examplePool(), poolContext({ serverVersion: { major: 1, minor: 29 } })).objects,
    ],
    [
      "a Persistent pool (StatefulSets)",
      () => desiredPool(persistentPool(), poolContext()).objects,
    ],
    [
      "a pool with every option",
      () =>
        desiredPool(
          examplePool((raw) => {
            raw.spec.architectures = [
              {
                name: "arm64",
                replicas: 3,
                platforms: ["linux/arm64", "linux/arm/v7"],
                nodeSelector: { "node.example.com/pool": "builders" },
                tolerations: [
                  { key: "dedicated", operator: "Equal", value: "build", effect: "NoSchedule" },
                ],
                resources: { requests: { cpu: 2, memory: "4Gi" }, limits: { memory: "8Gi" } },
              },
            ];
            raw.spec.buildkit = {
              image: "registry.example.com/buildkit:v0.24.0-rootless",
              extraFlags: ["--oci-worker-snapshotter=native", "--debug"],
              gc: { enabled: false },
              maxParallelism: 4,
            };
            raw.spec.registries = [{ host: "registry.internal:5000", http: true }];
            raw.spec.allowedNamespaces = {
              matchExpressions: [{ key: "team", operator: "In", values: ["a", "b"] }],
            };
          }),
          poolContext({ replicas: { arm64: 5 } }),
        ).objects,
    ],
  ];
  it.each(cases)("%s", (_name, objects) => {
    const list = objects();
    expect(list.length).toBeGreaterThan(0);
    for (const object of list) expect(() => validateObject(object)).not.toThrow();
  });

  it("the field checker does catch an unknown field", () => {
    const deployment = deploymentOf();
    const broken = structuredClone(deployment) as unknown as {
      spec: { template: { spec: Record<string, unknown> } };
    };
    broken.spec.template.spec.nodeselector = { a: "b" };
    expect(unknownFields(broken, "V1Deployment")).toEqual([".spec.template.spec.nodeselector"]);
  });
});

describe("children: names, labels, owner", () => {
  const desired = desiredPool(examplePool(), poolContext());

  it("names every child deterministically", () => {
    expect(desired.objects.map((o) => `${o.kind}/${o.metadata?.name}`)).toEqual([
      "ConfigMap/default-buildkitd-config",
      "NetworkPolicy/default-builders",
      "Service/default-amd64",
      "Service/default-amd64-headless",
      "Service/default-arm64",
      "Service/default-arm64-headless",
      "Deployment/default-amd64",
      "Deployment/default-arm64",
      "PodDisruptionBudget/default-amd64",
    ]);
  });

  it("puts every child in the pool's namespace, owned by the pool as controller", () => {
    for (const object of desired.objects) {
      expect(object.metadata?.namespace).toBe("buildfarm-builders");
      expect(object.metadata?.ownerReferences).toEqual([
        {
          apiVersion: "buildfarm.dev/v1alpha1",
          kind: "BuilderPool",
          name: "default",
          uid: POOL_UID,
          controller: true,
          blockOwnerDeletion: true,
        },
      ]);
      expect(object.metadata?.labels?.[LABELS.pool]).toBe("default");
      expect(object.metadata?.labels?.[LABELS.managedBy]).toBe("buildfarm");
    }
  });

  it("refuses a pool without a uid (children would not be garbage-collected)", () => {
    const pool = examplePool((raw) => {
      delete raw.metadata.uid;
    });
    expect(() => desiredPool(pool, poolContext())).toThrow(/has no uid/);
  });

  it("is deterministic: the same input gives the same spec hash", () => {
    const again = desiredPool(examplePool(), poolContext());
    expect(again.objects.map(stableHash)).toEqual(desired.objects.map(stableHash));
  });

  it("changes only what scaling touches: that workload, and a budget once it has two builders", () => {
    const scaled = desiredPool(examplePool(), poolContext({ replicas: { arm64: 2 } }));
    const hashes = (objects: KubernetesObject[]) =>
      new Map(objects.map((o) => [`${o.kind}/${o.metadata?.name}`, stableHash(o)]));
    const before = hashes(desired.objects);
    const changed = [...hashes(scaled.objects)]
      .filter(([key, hash]) => before.get(key) !== hash)
      .map(([key]) => key);
    expect(changed).toEqual(["Deployment/default-arm64", "PodDisruptionBudget/default-arm64"]);
  });
});

describe("the builder pod", () => {
  it("runs rootless buildkitd with exactly the flags an unprivileged pod needs", () => {
    const container = podSpecOf(deploymentOf()).containers[0];
    expect(container?.command).toBeUndefined();
    expect(container?.args).toEqual([
      "--addr",
      "unix:///run/user/1000/buildkit/buildkitd.sock",
      "--addr",
      "tcp://:1234",
      "--tlscacert",
      "/etc/buildkit/certs/ca.crt",
      "--tlscert",
      "/etc/buildkit/certs/tls.crt",
      "--tlskey",
      "/etc/buildkit/certs/tls.key",
      "--root",
      "/home/user/.local/share/buildkit",
      "--config",
      "/etc/buildkit/config/buildkitd.toml",
      "--oci-worker-no-process-sandbox",
    ]);
  });

  it("appends the pool's extra flags after the operator's", () => {
    const pool = examplePool((raw) => {
      raw.spec.buildkit = { extraFlags: ["--oci-worker-snapshotter=native"] };
    });
    expect(buildkitdArgs(pool).at(-1)).toBe("--oci-worker-snapshotter=native");
  });

  it("requires native nodes of its architecture, plus the pool's selector and tolerations", () => {
    const pool = examplePool((raw) => {
      (raw.spec.architectures as Record<string, unknown>[])[1] = {
        name: "arm64",
        nodeSelector: { "example.com/builders": "true" },
        tolerations: [{ key: "arm", operator: "Exists", effect: "NoSchedule" }],
      };
    });
    const spec = podSpecOf(deploymentOf(pool, "arm64"));
    expect(spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution).toEqual({
      nodeSelectorTerms: [
        {
          matchExpressions: [
            { key: "kubernetes.io/arch", operator: "In", values: ["arm64"] },
            { key: "kubernetes.io/os", operator: "In", values: ["linux"] },
          ],
        },
      ],
    });
    expect(spec.nodeSelector).toEqual({ "example.com/builders": "true" });
    expect(spec.tolerations).toEqual([{ key: "arm", operator: "Exists", effect: "NoSchedule" }]);
  });

  it("runs as UID/GID 1000 with seccomp unconfined, privilege escalation allowed for newuidmap", () => {
    const spec = podSpecOf(deploymentOf());
    expect(spec.securityContext).toMatchObject({
      runAsUser: 1000,
      runAsGroup: 1000,
      runAsNonRoot: true,
      fsGroup: 1000,
      fsGroupChangePolicy: "OnRootMismatch",
    });
    expect(spec.containers[0]?.securityContext).toMatchObject({
      allowPrivilegeEscalation: true,
      seccompProfile: { type: "Unconfined" },
    });
    expect(spec.containers[0]?.securityContext?.privileged).toBeUndefined();
    expect(spec.automountServiceAccountToken).toBe(false);
  });

  it.each([
    [{ major: "1", minor: "30" }, "field"],
    [{ major: "1", minor: "31+" }, "field"],
    [{ major: "1", minor: "29" }, "annotation"],
    [{ major: "", minor: "", gitVersion: "v1.28.9-eks-036c24b" }, "annotation"],
  ])("puts AppArmor unconfined where server %o reads it: %s", (info, where) => {
    const deployment = deploymentOf(
      examplePool(),
      "amd64",
      poolContext({ serverVersion: parseKubeVersion(info) }),
    );
    const annotation = deployment.spec?.template.metadata?.annotations?.[APPARMOR_ANNOTATION];
    const field = podSpecOf(deployment).containers[0]?.securityContext?.appArmorProfile;
    if (where === "field") {
      expect(field).toEqual({ type: "Unconfined" });
      expect(annotation).toBeUndefined();
    } else {
      expect(field).toBeUndefined();
      expect(annotation).toBe("unconfined");
    }
  });

  it("probes buildctl over the local socket, needing no client certificate", () => {
    const container = podSpecOf(deploymentOf()).containers[0];
    const command = [
      "buildctl",
      "--addr",
      "unix:///run/user/1000/buildkit/buildkitd.sock",
      "debug",
      "workers",
    ];
    expect(container?.readinessProbe?.exec?.command).toEqual(command);
    expect(container?.livenessProbe?.exec?.command).toEqual(command);
    expect(container?.startupProbe?.exec?.command).toEqual(command);
  });

  it("rolls when the certificate or the buildkitd.toml changes", () => {
    const before = deploymentOf().spec?.template.metadata?.annotations ?? {};
    const newCert = deploymentOf(
      examplePool(),
      "amd64",
      poolContext({ certHash: "fedcba9876543210" }),
    );
    expect(newCert.spec?.template.metadata?.annotations?.[ANNOTATIONS.certHash]).toBe(
      "fedcba9876543210",
    );
    const newGc = deploymentOf(
      examplePool((raw) => {
        raw.spec.buildkit = { gc: { keepStorage: "30Gi" } };
      }),
    );
    expect(newGc.spec?.template.metadata?.annotations?.[ANNOTATIONS.configHash]).not.toBe(
      before[ANNOTATIONS.configHash],
    );
  });

  it("takes resources from the spec, quantities as strings", () => {
    const pool = examplePool((raw) => {
      (raw.spec.architectures as Record<string, unknown>[])[0] = {
        name: "amd64",
        resources: { requests: { cpu: 2, memory: "4Gi" } },
      };
    });
    expect(podSpecOf(deploymentOf(pool)).containers[0]?.resources).toEqual({
      requests: { cpu: "2", memory: "4Gi", "ephemeral-storage": "50Gi" },
    });
  });

  it("uses the operator's default image only for pools that kept the schema default", () => {
    const context = poolContext({ defaultImage: "mirror.example.com/buildkit:v0.24.0-rootless" });
    expect(podSpecOf(deploymentOf(examplePool(), "amd64", context)).containers[0]?.image).toBe(
      "mirror.example.com/buildkit:v0.24.0-rootless",
    );
    expect(builderImage(DEFAULT_BUILDKIT_IMAGE, poolContext())).toBe(DEFAULT_BUILDKIT_IMAGE);
    expect(builderImage("example.com/bk:1", context)).toBe("example.com/bk:1");
  });
});

describe("the workload per cache type", () => {
  it("EmptyDir: a Deployment with a size-limited emptyDir on BuildKit's state dir", () => {
    const deployment = deploymentOf();
    expect(deployment.spec?.replicas).toBe(2);
    expect(deployment.spec?.strategy).toEqual({
      type: "RollingUpdate",
      rollingUpdate: { maxUnavailable: 0, maxSurge: 1 },
    });
    const spec = podSpecOf(deployment);
    expect(spec.volumes?.find((v) => v.name === "state")).toEqual({
      name: "state",
      emptyDir: { sizeLimit: "50Gi" },
    });
    expect(spec.containers[0]?.volumeMounts).toContainEqual({
      name: "state",
      mountPath: "/home/user/.local/share/buildkit",
    });
  });

  it("Persistent: a StatefulSet with a claim per builder on the headless Service", () => {
    const entry = desiredPool(persistentPool(), poolContext()).architectures[0];
    expect(entry?.workload.kind).toBe("StatefulSet");
    const set = entry?.workload.object as V1StatefulSet;
    expect(set.spec).toMatchObject({
      serviceName: "default-amd64-headless",
      podManagementPolicy: "Parallel",
      persistentVolumeClaimRetentionPolicy: { whenDeleted: "Delete", whenScaled: "Retain" },
    });
    expect(set.spec?.volumeClaimTemplates?.[0]?.spec).toEqual({
      accessModes: ["ReadWriteOnce"],
      resources: { requests: { storage: "100Gi" } },
      storageClassName: "fast-ssd",
    });
    expect(podSpecOf(set).volumes?.map((v) => v.name)).toEqual(["certs", "config"]);
  });

  it("selects its pods by pool, architecture and component only", () => {
    const deployment = deploymentOf();
    const selector = deployment.spec?.selector ?? {};
    expect(selector).toEqual({
      matchLabels: {
        [LABELS.pool]: "default",
        [LABELS.arch]: "amd64",
        [LABELS.component]: COMPONENTS.builder,
      },
    });
    expect(selectorMatches(selector, deployment.spec?.template.metadata?.labels ?? {})).toBe(true);
    // A build pod of the same pool and architecture is not a builder.
    expect(
      selectorMatches(
        selector,
        buildPodLabels("b", "default", "buildfarm-builders", COMPONENTS.build, "amd64"),
      ),
    ).toBe(false);
  });
});

describe("Services, budgets and the NetworkPolicy", () => {
  const desired = desiredPool(examplePool(), poolContext());
  const amd64 = desired.architectures[0];

  it("serves port 1234 on <pool>-<arch> and on a headless twin", () => {
    expect(amd64?.service.spec).toEqual({
      type: "ClusterIP",
      selector: amd64?.workload.object.spec?.selector?.matchLabels,
      ports: [{ name: "buildkit", protocol: "TCP", port: 1234, targetPort: "buildkit" }],
    });
    expect(amd64?.headlessService.metadata?.name).toBe("default-amd64-headless");
    expect(amd64?.headlessService.spec).toMatchObject({
      clusterIP: "None",
      publishNotReadyAddresses: false,
    });
  });

  it("budgets one unavailable builder only where there is more than one", () => {
    expect(amd64?.podDisruptionBudget?.spec).toEqual({
      maxUnavailable: 1,
      selector: amd64?.workload.object.spec?.selector,
      unhealthyPodEvictionPolicy: "AlwaysAllow",
    });
    expect(desired.architectures[1]?.podDisruptionBudget).toBeUndefined();
  });

  it("admits TCP 1234 only from this pool's build pods in the allowed namespaces", () => {
    expect(desired.networkPolicy.spec).toEqual({
      podSelector: { matchLabels: { [LABELS.pool]: "default", [LABELS.component]: "builder" } },
      policyTypes: ["Ingress"],
      ingress: [
        {
          from: [
            { "kubernetes.io/metadata.name": "buildfarm-builders" },
            { "buildfarm.dev/builds": "allowed" },
          ].map((matchLabels) => ({
            namespaceSelector: { matchLabels },
            podSelector: {
              matchLabels: {
                [LABELS.managedBy]: "buildfarm",
                [LABELS.component]: "build",
                [LABELS.pool]: "default",
                [LABELS.poolNamespace]: "buildfarm-builders",
              },
            },
          })),
          ports: [{ protocol: "TCP", port: 1234 }],
        },
      ],
    });
    const peer = desired.networkPolicy.spec.ingress?.[0]?.from?.[0];
    const buildLabels = buildPodLabels(
      "app-1",
      "default",
      "buildfarm-builders",
      COMPONENTS.build,
      "amd64",
    );
    expect(selectorMatches(peer?.podSelector ?? {}, buildLabels)).toBe(true);
    const otherPool = buildPodLabels(
      "app-1",
      "other",
      "buildfarm-builders",
      COMPONENTS.build,
      "amd64",
    );
    expect(selectorMatches(peer?.podSelector ?? {}, otherPool)).toBe(false);
  });

  it("defaults the allowed namespaces to the pool's own", () => {
    const pool = examplePool((raw) => {
      delete raw.spec.allowedNamespaces;
    });
    const policy = desiredPool(pool, poolContext()).networkPolicy;
    expect(policy.spec.ingress?.[0]?.from?.[0]?.namespaceSelector).toEqual({
      matchLabels: { "kubernetes.io/metadata.name": "buildfarm-builders" },
    });
  });
});

describe("a readable snapshot for reviewers", () => {
  it("the example pool's amd64 builder Deployment", async () => {
    await expect(
      `# Generated by test/builderpool/desired.test.ts from examples/builderpool.yaml (Kubernetes 1.31).\n${stringify(deploymentOf(), { aliasDuplicateObjects: false })}`,
    ).toMatchFileSnapshot("__snapshots__/amd64-deployment.yaml");
  });
});
