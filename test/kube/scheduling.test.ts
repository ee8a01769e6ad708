// The scheduler's predicates, table-driven: required node affinity operators, nodeSelector,
// taints and tolerations.
import type { INode } from "kubernetes-models/v1/Node";
import type { IPod } from "kubernetes-models/v1/Pod";
import type { ITaint } from "kubernetes-models/v1/Taint";
import type { IToleration } from "kubernetes-models/v1/Toleration";
import { describe, expect, it } from "vitest";
import type { Stored } from "./objects.ts";
import { nodeMatchesAffinity, nodeObject, tolerates, unfitReason } from "./sim/scheduler.ts";

const node = (labels: Record<string, string>, taints: INode["spec"] = {}) => {
  const object = nodeObject(
    { name: "n", arch: labels.arch ?? "amd64", labels },
    "v1.31.0",
  ) as unknown as INode;
  return { ...object, spec: taints } as Stored<INode>;
};

const requiring = (
  ...terms: { key: string; operator: string; values?: string[] }[][]
): Stored<IPod> =>
  ({
    apiVersion: "v1",
    kind: "Pod",
    spec: {
      containers: [],
      affinity: {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: terms.map((matchExpressions) => ({ matchExpressions })),
          },
        },
      },
    },
  }) as Stored<IPod>;

describe("required node affinity", () => {
  const arm = node({ arch: "arm64", "kubernetes.io/arch": "arm64", zone: "b", cpus: "16" });
  it.each([
    [
      "In matching",
      [[{ key: "kubernetes.io/arch", operator: "In", values: ["arm64", "arm"] }]],
      true,
    ],
    [
      "In not matching",
      [[{ key: "kubernetes.io/arch", operator: "In", values: ["amd64"] }]],
      false,
    ],
    ["NotIn", [[{ key: "kubernetes.io/arch", operator: "NotIn", values: ["amd64"] }]], true],
    ["NotIn on a missing label", [[{ key: "gpu", operator: "NotIn", values: ["yes"] }]], true],
    ["Exists", [[{ key: "zone", operator: "Exists" }]], true],
    ["DoesNotExist", [[{ key: "zone", operator: "DoesNotExist" }]], false],
    ["Gt", [[{ key: "cpus", operator: "Gt", values: ["8"] }]], true],
    [
      "expressions of a term are ANDed",
      [
        [
          { key: "zone", operator: "Exists" },
          { key: "gpu", operator: "Exists" },
        ],
      ],
      false,
    ],
    [
      "terms are ORed",
      [[{ key: "gpu", operator: "Exists" }], [{ key: "zone", operator: "In", values: ["b"] }]],
      true,
    ],
    ["an empty term matches nothing", [[]], false],
  ])("%s", (_name, terms, expected) => {
    expect(nodeMatchesAffinity(requiring(...terms), arm)).toBe(expected);
  });

  it("applies nodeSelector as well", () => {
    const pod = {
      ...requiring([{ key: "zone", operator: "Exists" }]),
      spec: { ...requiring().spec, nodeSelector: { zone: "a" } },
    };
    expect(nodeMatchesAffinity(pod as Stored<IPod>, arm)).toBe(false);
  });
});

describe("taints and tolerations", () => {
  const taint: ITaint = { key: "gpu", value: "true", effect: "NoSchedule" };
  it.each([
    [
      "Equal with value and effect",
      [{ key: "gpu", operator: "Equal", value: "true", effect: "NoSchedule" }],
      true,
    ],
    ["Equal with another value", [{ key: "gpu", operator: "Equal", value: "false" }], false],
    ["Exists on the key, any effect", [{ key: "gpu", operator: "Exists" }], true],
    ["Exists without a key tolerates everything", [{ operator: "Exists" }], true],
    ["another effect", [{ key: "gpu", operator: "Exists", effect: "NoExecute" }], false],
  ])("%s", (_name, tolerations, expected) => {
    expect(tolerates(tolerations as IToleration[], taint)).toBe(expected);
  });

  it("reports the first failing filter: unschedulable, then taints, then affinity", () => {
    const pod = requiring([{ key: "kubernetes.io/arch", operator: "In", values: ["s390x"] }]);
    expect(unfitReason(pod, node({}, { unschedulable: true, taints: [taint] }))).toBe(
      "node(s) were unschedulable",
    );
    expect(unfitReason(pod, node({}, { taints: [taint] }))).toBe(
      "node(s) had untolerated taint {gpu: true}",
    );
    expect(unfitReason(pod, node({}, { taints: [{ ...taint, effect: "PreferNoSchedule" }] }))).toBe(
      "node(s) didn't match Pod's node affinity/selector",
    );
  });
});
