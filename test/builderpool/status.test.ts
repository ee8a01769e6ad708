import type { KubernetesObject, V1Deployment } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { parseBuilderPool, SpecError } from "../../src/api/resources.ts";
import { desiredPool, obsoleteChildren } from "../../src/builderpool/desired.ts";
import { scalingEvents } from "../../src/builderpool/events.ts";
import {
  invalidSpecStatus,
  notReadyStatus,
  type PoolObservation,
  poolStatus,
} from "../../src/builderpool/status.ts";
import { readYaml } from "../support/files.ts";
import { examplePool, POOL_UID, poolContext } from "./fixtures.ts";

const T0 = new Date("2026-03-01T12:00:00Z");
const T1 = new Date("2026-03-01T12:05:00Z");

const node = (arch: string, labels: Record<string, string> = {}) => ({
  metadata: { labels: { "kubernetes.io/arch": arch, ...labels } },
});
const workload = (ready: number, replicas = ready): V1Deployment => ({
  spec: { replicas, selector: {}, template: {} },
  status: { readyReplicas: ready, replicas },
});

function observe(overrides: Partial<PoolObservation> = {}): PoolObservation {
  return {
    workloads: { amd64: workload(2), arm64: workload(1) },
    nodes: [node("amd64"), node("arm64")],
    certNotAfter: new Date("2026-05-30T12:00:00.123Z"),
    ...overrides,
  };
}

describe("poolStatus", () => {
  it("is Ready when every architecture has its builders", () => {
    const status = poolStatus(examplePool(), observe(), T0);
    expect(status).toEqual({
      observedGeneration: 3,
      summary: "amd64 2/2, arm64 1/1",
      certificateNotAfter: "2026-05-30T12:00:00Z",
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "Ready",
          message: "builders ready: amd64 2/2, arm64 1/1",
          observedGeneration: 3,
          lastTransitionTime: "2026-03-01T12:00:00Z",
        },
      ],
      architectures: [
        {
          name: "amd64",
          replicas: 2,
          readyReplicas: 2,
          conditions: [
            {
              type: "Ready",
              status: "True",
              reason: "BuildersReady",
              message: "2 of 2 amd64 builders ready",
              observedGeneration: 3,
              lastTransitionTime: "2026-03-01T12:00:00Z",
            },
          ],
        },
        {
          name: "arm64",
          replicas: 1,
          readyReplicas: 1,
          conditions: [expect.objectContaining({ status: "True", reason: "BuildersReady" })],
        },
      ],
    });
  });

  const cases: [string, Partial<PoolObservation>, string, string, string][] = [
    [
      "a builder still starting",
      { workloads: { amd64: workload(1, 2), arm64: workload(1) } },
      "BuildersNotReady",
      "builders not ready: amd64 1/2, arm64 1/1",
      "amd64 1/2, arm64 1/1",
    ],
    [
      "no workload yet",
      { workloads: {} },
      "BuildersNotReady",
      "builders not ready: amd64 0/2, arm64 0/1",
      "amd64 0/2, arm64 0/1",
    ],
    [
      "no arm64 node",
      { nodes: [node("amd64")], workloads: { amd64: workload(2), arm64: workload(0, 1) } },
      "NoNodesForArchitecture",
      "arm64: no node has the label kubernetes.io/arch=arm64: add arm64 nodes to the cluster, or remove arm64 from spec.architectures",
      "amd64 2/2, arm64 0/1",
    ],
    [
      "a surge pod during a rollout",
      { workloads: { amd64: workload(3, 3), arm64: workload(1) } },
      "Ready",
      "builders ready: amd64 2/2, arm64 1/1",
      "amd64 2/2, arm64 1/1",
    ],
  ];
  it.each(cases)("%s → %s", (_name, observed, reason, message, summary) => {
    const status = poolStatus(examplePool(), observe(observed), T0);
    expect(status.conditions?.[0]).toMatchObject({ reason, message });
    expect(status.summary).toBe(summary);
  });

  it("names the nodeSelector when nodes of the architecture exist but none match it", () => {
    const pool = examplePool((raw) => {
      (raw.spec.architectures as Record<string, unknown>[])[1] = {
        name: "arm64",
        nodeSelector: { "example.com/builders": "true" },
      };
    });
    const status = poolStatus(pool, observe(), T0);
    expect(status.architectures?.[1]?.conditions?.[0]).toMatchObject({
      status: "False",
      reason: "NoNodesForArchitecture",
      message:
        "no arm64 node (kubernetes.io/arch=arm64) has the labels example.com/builders=true: label arm64 nodes with them, or change spec.architectures[1].nodeSelector",
    });
    const labelled = poolStatus(
      pool,
      observe({ nodes: [node("amd64"), node("arm64", { "example.com/builders": "true" })] }),
      T0,
    );
    expect(labelled.conditions?.[0]?.status).toBe("True");
  });

  it("counts an architecture scaled to zero as ready", () => {
    const status = poolStatus(
      examplePool(),
      observe({ replicas: { arm64: 0 }, workloads: { amd64: workload(2), arm64: workload(0, 0) } }),
      T0,
    );
    expect(status.architectures?.[1]).toMatchObject({ replicas: 0, readyReplicas: 0 });
    expect(status.architectures?.[1]?.conditions?.[0]?.reason).toBe("ScaledToZero");
    expect(status.conditions?.[0]?.status).toBe("True");
  });

  it("moves lastTransitionTime only when a status flips", () => {
    const pool = examplePool();
    const ready = poolStatus(pool, observe(), T0);
    const stillReady = poolStatus({ ...pool, status: ready }, observe(), T1);
    expect(stillReady.conditions?.[0]?.lastTransitionTime).toBe("2026-03-01T12:00:00Z");
    const notReady = poolStatus({ ...pool, status: stillReady }, observe({ workloads: {} }), T1);
    expect(notReady.conditions?.[0]).toMatchObject({
      status: "False",
      lastTransitionTime: "2026-03-01T12:05:00Z",
    });
    expect(notReady.architectures?.[0]?.conditions?.[0]?.lastTransitionTime).toBe(
      "2026-03-01T12:05:00Z",
    );
  });

  it("shows an autoscaled architecture's demand as queued and running, and its scale to zero", () => {
    const pool = examplePool((raw) => {
      raw.spec.architectures = [
        { name: "amd64", replicas: 1, autoscaling: { maxReplicas: 3 } },
        { name: "arm64", replicas: 1 },
      ];
    });
    const busy = poolStatus(
      pool,
      observe({ replicas: { amd64: 2 }, demand: { amd64: { queued: 3, running: 1 } } }),
      T0,
    );
    expect(busy.architectures?.[0]).toMatchObject({ replicas: 2, queued: 3, running: 1 });
    expect(busy.architectures?.[1]?.queued).toBeUndefined();
    const idle = poolStatus(
      pool,
      observe({ replicas: { amd64: 0 }, demand: { amd64: { queued: 0, running: 0 } } }),
      T1,
    );
    expect(idle.architectures?.[0]).toMatchObject({ replicas: 0, queued: 0, running: 0 });
    expect(idle.architectures?.[0]?.conditions?.[0]).toMatchObject({
      status: "True",
      reason: "ScaledToZero",
      message:
        "no amd64 builds queued or running, so no builders; the next queued build wakes them",
    });
    expect(idle.conditions?.[0]).toMatchObject({ status: "True", reason: "Ready" });
  });

  it("keeps the queue figures the build controller wrote", () => {
    const pool = examplePool();
    const previous = poolStatus(pool, observe(), T0);
    const withQueue = {
      ...previous,
      architectures: previous.architectures?.map((arch) => ({ ...arch, queued: 3, running: 4 })),
    };
    const next = poolStatus({ ...pool, status: withQueue }, observe(), T1);
    expect(next.architectures?.[0]).toMatchObject({ queued: 3, running: 4 });
  });
});

describe("invalidSpecStatus", () => {
  it("reports the parse errors, one line each, and keeps what was observed", () => {
    const raw = structuredClone(readYaml("examples/builderpool.yaml")) as Record<
      string,
      Record<string, unknown>
    >;
    const previous = poolStatus(examplePool(), observe(), T0);
    raw.metadata = { ...raw.metadata, generation: 4 };
    raw.spec = { ...raw.spec, maxConcurrentBuilds: 0, architectures: [{ name: "sparc" }] };
    raw.status = previous as unknown as Record<string, unknown>;
    let error: SpecError | undefined;
    try {
      parseBuilderPool(raw);
    } catch (caught) {
      error = caught as SpecError;
    }
    expect(error).toBeInstanceOf(SpecError);
    const status = invalidSpecStatus(raw, error as SpecError, T1);
    expect(status.observedGeneration).toBe(4);
    expect(status.summary).toBe("amd64 2/2, arm64 1/1");
    expect(status.conditions?.[0]).toEqual({
      type: "Ready",
      status: "False",
      reason: "InvalidSpec",
      message: (error as SpecError).issues.join("\n"),
      observedGeneration: 4,
      lastTransitionTime: "2026-03-01T12:05:00Z",
    });
    expect(status.conditions?.[0]?.message.split("\n")).toHaveLength(2);
  });

  it("starts over from a status it cannot read", () => {
    const status = invalidSpecStatus(
      { status: { architectures: "nonsense" } },
      new SpecError(["spec: bad"]),
      T0,
    );
    expect(status).toEqual({
      conditions: [expect.objectContaining({ reason: "InvalidSpec", message: "spec: bad" })],
    });
  });
});

describe("obsoleteChildren", () => {
  const owned = (pool = examplePool()) => {
    const all = desiredPool(pool, poolContext()).objects;
    return all;
  };

  it("deletes a removed architecture's workload, Services and budget, nothing pool-wide", () => {
    const before = owned(
      examplePool((raw) => {
        (raw.spec.architectures as Record<string, unknown>[])[1] = { name: "arm64", replicas: 2 };
      }),
    );
    const secrets: KubernetesObject[] = [
      {
        kind: "Secret",
        metadata: {
          name: "default-buildkit-ca",
          ownerReferences: before[0]?.metadata?.ownerReferences,
        },
      },
    ];
    const amd64Only = examplePool((raw) => {
      raw.spec.architectures = [(raw.spec.architectures as unknown[])[0]];
    });
    const keep = desiredPool(amd64Only, poolContext()).objects;
    expect(
      obsoleteChildren(amd64Only, keep, [...before, ...secrets]).map(
        (o) => `${o.kind}/${o.metadata?.name}`,
      ),
    ).toEqual([
      "Service/default-arm64",
      "Service/default-arm64-headless",
      "Deployment/default-arm64",
      "PodDisruptionBudget/default-arm64",
    ]);
  });

  it("deletes the budget when an architecture scales down to one builder", () => {
    const pool = examplePool();
    const before = owned();
    const after = desiredPool(pool, poolContext({ replicas: { amd64: 1 } })).objects;
    expect(
      obsoleteChildren(pool, after, before).map((o) => `${o.kind}/${o.metadata?.name}`),
    ).toEqual(["PodDisruptionBudget/default-amd64"]);
  });

  it("deletes the Deployments when the cache becomes Persistent (StatefulSets replace them)", () => {
    const persistent = examplePool((raw) => {
      raw.spec.cache = { type: "Persistent", size: "50Gi" };
    });
    const after = desiredPool(persistent, poolContext()).objects;
    expect(
      obsoleteChildren(persistent, after, owned()).map((o) => `${o.kind}/${o.metadata?.name}`),
    ).toEqual(["Deployment/default-amd64", "Deployment/default-arm64"]);
  });

  it("never touches what the pool does not control", () => {
    const pool = examplePool((raw) => {
      raw.spec.architectures = [(raw.spec.architectures as unknown[])[0]];
    });
    const stranger: KubernetesObject = {
      kind: "Service",
      metadata: {
        name: "default-arm64",
        ownerReferences: [
          { apiVersion: "v1", kind: "X", name: "x", uid: "other", controller: true },
        ],
      },
    };
    const unowned: KubernetesObject = { kind: "Deployment", metadata: { name: "default-arm64" } };
    expect(
      obsoleteChildren(pool, desiredPool(pool, poolContext()).objects, [stranger, unowned]),
    ).toEqual([]);
    expect(POOL_UID).toBeTruthy();
  });
});

describe("scalingEvents", () => {
  it("reports a changed replica count, not a first creation", () => {
    const desired = desiredPool(
      examplePool(),
      poolContext({ replicas: { amd64: 4 } }),
    ).architectures;
    expect(scalingEvents(desired, { amd64: workload(2, 2) })).toEqual([
      { type: "Normal", reason: "ScaledUp", message: "amd64 builders 2 → 4" },
    ]);
    expect(scalingEvents(desired, { amd64: workload(4, 4), arm64: workload(3, 3) })).toEqual([
      { type: "Normal", reason: "ScaledDown", message: "arm64 builders 3 → 1" },
    ]);
  });

  it("says what demand an autoscaled architecture was sized from", () => {
    const desired = desiredPool(
      examplePool(),
      poolContext({ replicas: { amd64: 3 } }),
    ).architectures;
    expect(
      scalingEvents(desired, { amd64: workload(0, 0) }, { amd64: { queued: 5, running: 1 } }),
    ).toEqual([
      {
        type: "Normal",
        reason: "ScaledUp",
        message: "amd64 builders 0 → 3 (5 queued, 1 running)",
      },
    ]);
  });
});

describe("notReadyStatus", () => {
  it("sets Ready=False with the reason and keeps what was observed", () => {
    const before = poolStatus(examplePool(), observe(), T0);
    const raw = { metadata: { generation: 4 }, status: before };
    const status = notReadyStatus(
      raw,
      { reason: "NameConflict", message: "Service x/y already exists" },
      T1,
    );
    expect(status).toEqual({
      ...before,
      observedGeneration: 4,
      conditions: [
        {
          type: "Ready",
          status: "False",
          reason: "NameConflict",
          message: "Service x/y already exists",
          observedGeneration: 4,
          lastTransitionTime: "2026-03-01T12:05:00Z",
        },
      ],
    });
  });
});
