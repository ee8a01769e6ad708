// What a builder pod asks of its node: ephemeral storage the size of its EmptyDir cache, so the
// scheduler places it where the cache fits and the kubelet does not evict it under DiskPressure
// on a node whose root volume is smaller; and a termination message that is its log's tail, so
// the pool can say why a builder crash-loops (UserNamespacesUnavailable) from the pod's status.
import type { V1Container, V1Deployment, V1StatefulSet } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { desiredPool } from "../../src/builderpool/desired.ts";
import { examplePool, poolContext } from "./fixtures.ts";

const buildkitd = (workload: V1Deployment | V1StatefulSet) =>
  workload.spec?.template.spec?.containers[0] as V1Container;
const workloadOf = (pool = examplePool(), arch = "amd64") =>
  desiredPool(pool, poolContext()).architectures.find((a) => a.arch === arch)?.workload.object as
    | V1Deployment
    | V1StatefulSet;

describe("a builder's ephemeral storage", () => {
  it("requests the EmptyDir cache's size, beside the architecture's own resources", () => {
    const pool = examplePool((raw) => {
      raw.spec.cache = { type: "EmptyDir", size: "60Gi" };
    });
    expect(buildkitd(workloadOf(pool)).resources).toEqual({
      requests: { cpu: "2", memory: "4Gi", "ephemeral-storage": "60Gi" },
      limits: { memory: "8Gi" },
    });
    // The emptyDir it sizes is the cache itself.
    expect(workloadOf(pool).spec?.template.spec?.volumes).toContainEqual({
      name: "state",
      emptyDir: { sizeLimit: "60Gi" },
    });
  });

  it("requests it for an architecture with no resources of its own", () => {
    const pool = examplePool((raw) => {
      raw.spec.architectures = [{ name: "amd64", replicas: 1 }];
      raw.spec.cache = { type: "EmptyDir", size: "45Gi" };
    });
    expect(buildkitd(workloadOf(pool)).resources).toEqual({
      requests: { "ephemeral-storage": "45Gi" },
    });
  });

  it("keeps an ephemeral-storage request the architecture sets", () => {
    const pool = examplePool((raw) => {
      raw.spec.architectures = [
        { name: "amd64", resources: { requests: { "ephemeral-storage": "60Gi" } } },
      ];
    });
    expect(buildkitd(workloadOf(pool)).resources?.requests?.["ephemeral-storage"]).toBe("60Gi");
  });

  it("requests none for a Persistent pool, whose cache is on its claim", () => {
    const pool = examplePool((raw) => {
      raw.spec.cache = { type: "Persistent", size: "100Gi" };
    });
    expect(buildkitd(workloadOf(pool)).resources?.requests).not.toHaveProperty("ephemeral-storage");
  });
});

describe("a builder's termination message", () => {
  it("is the tail of its log when it fails (FallbackToLogsOnError)", () => {
    expect(buildkitd(workloadOf()).terminationMessagePolicy).toBe("FallbackToLogsOnError");
  });
});
