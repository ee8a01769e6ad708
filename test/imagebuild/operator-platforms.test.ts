// --operator-image-platforms reaches the Jobs that run the operator's image: the real operator
// (as `buildfarm operator` starts it) against test/kube pins a build's index Job to the nodes
// of those platforms, and by default to linux amd64 and arm64 nodes.
import { afterEach, describe, expect, it } from "vitest";
import { type BuildCluster, NS, phaseIs, startBuildCluster } from "./cluster.ts";

type JobObject = {
  spec: {
    template: {
      spec: {
        affinity?: {
          nodeAffinity?: {
            requiredDuringSchedulingIgnoredDuringExecution?: {
              nodeSelectorTerms: { matchExpressions: { key: string; values: string[] }[] }[];
            };
          };
        };
      };
    };
  };
};

let cluster: BuildCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

async function indexJobArchitectures(args: string[]): Promise<string[] | undefined> {
  cluster = await startBuildCluster({ operator: { args } });
  cluster.player.script("placed-amd64", { kind: "push" });
  cluster.player.script("placed-arm64", { kind: "push" });
  await cluster.createBuild("placed");
  await cluster.waitForBuild("placed", phaseIs("Succeeded"));
  const job = cluster.kube.store.get("jobs.batch", NS, "placed-index") as unknown as JobObject;
  const terms =
    job.spec.template.spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution
      ?.nodeSelectorTerms ?? [];
  return terms[0]?.matchExpressions.find((e) => e.key === "kubernetes.io/arch")?.values;
}

describe("the index Job of a build, with the operator's --operator-image-platforms", () => {
  it("by default: linux amd64 and arm64 nodes", async () => {
    expect(await indexJobArchitectures([])).toEqual(["amd64", "arm64"]);
  });

  it("given linux/amd64 only: amd64 nodes only", async () => {
    expect(await indexJobArchitectures(["--operator-image-platforms=linux/amd64"])).toEqual([
      "amd64",
    ]);
  });
});
