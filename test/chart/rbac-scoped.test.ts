// Where the chart's Secrets permissions reach. With watchNamespaces the chart binds the
// namespaced rules (Secrets among them) by RoleBindings in those namespaces only: the operator,
// started as the chart starts it (--namespaces), builds and runs a pool there, and every request
// it makes must be allowed in its own namespace by those RoleBindings, or cluster-wide by the one
// ClusterRoleBinding (nodes and namespaces only). Without watchNamespaces the reach is every
// namespace, and the chart's values and the README must say so.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { type BuildCluster, NS, phaseIs, startBuildCluster } from "../imagebuild/cluster.ts";
import type { RequestRecord } from "../kube/request-log.ts";
import { REPO_ROOT } from "../support/files.ts";
import { layerBinary } from "../support/tools.ts";

const run = promisify(execFile);
const CHART = join(REPO_ROOT, "charts", "buildfarm");
const WATCHED = [NS, "team-b"];

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}
interface RbacObject {
  kind: string;
  metadata: { name: string; namespace?: string };
  rules?: Rule[];
  roleRef?: { kind: string; name: string };
}

async function render(values: string[]): Promise<RbacObject[]> {
  const { stdout } = await run(
    layerBinary("helm"),
    ["template", "buildfarm", CHART, "--namespace", "buildfarm-system", ...values],
    { maxBuffer: 32 << 20 },
  );
  return parseAllDocuments(stdout)
    .map((document) => document.toJS() as RbacObject | null)
    .filter((object): object is RbacObject => object !== null);
}

const allows = (rules: Rule[] | undefined, group: string, resource: string, verb: string) =>
  (rules ?? []).some(
    (rule) =>
      rule.apiGroups.includes(group) &&
      rule.resources.includes(resource) &&
      rule.verbs.includes(verb),
  );

/** Where `verb` on `resource` is granted: "*" for every namespace, else the namespaces. */
function reach(objects: RbacObject[], group: string, resource: string, verb: string) {
  const role = (ref: RbacObject["roleRef"], namespace?: string) =>
    objects.find(
      (o) =>
        o.kind === ref?.kind &&
        o.metadata.name === ref?.name &&
        (o.kind === "ClusterRole" || o.metadata.namespace === namespace),
    );
  const clusterWide = objects
    .filter((o) => o.kind === "ClusterRoleBinding")
    .some((binding) => allows(role(binding.roleRef)?.rules, group, resource, verb));
  if (clusterWide) return "*";
  return objects
    .filter(
      (o) =>
        o.kind === "RoleBinding" &&
        allows(role(o.roleRef, o.metadata.namespace)?.rules, group, resource, verb),
    )
    .map((o) => o.metadata.namespace as string)
    .sort();
}

describe("the chart's Secrets reach", () => {
  let cluster: BuildCluster;
  let requests: RequestRecord[];

  beforeAll(async () => {
    cluster = await startBuildCluster({
      operator: { args: [`--namespaces=${WATCHED.join(",")}`] },
      namespaces: { "team-b": {} },
    });
    cluster.player.script("scoped-amd64", { kind: "push" });
    cluster.player.script("scoped-arm64", { kind: "push" });
    await cluster.createBuild("scoped");
    await cluster.waitForBuild("scoped", phaseIs("Succeeded"));
    await cluster.operator.stop();
    requests = cluster.kube.requestLog
      .entries()
      .filter((record) => record.userAgent?.startsWith("buildfarm/") && record.resource);
  });

  afterAll(async () => {
    await cluster?.kube.stop();
  });

  it("with watchNamespaces: Secrets only there, and every request of an operator watching them allowed", async () => {
    const objects = await render(["--set", `watchNamespaces={${WATCHED.join(",")}}`]);
    for (const verb of ["get", "list", "watch", "create", "update", "delete"])
      expect(reach(objects, "", "secrets", verb), `secrets ${verb}`).toEqual([...WATCHED].sort());
    const refused = requests.filter((record) => {
      const resource = record.subresource
        ? `${record.resource}/${record.subresource}`
        : (record.resource as string);
      const where = reach(objects, record.apiGroup, resource, record.verb);
      return where !== "*" && !(record.namespace && where.includes(record.namespace));
    });
    expect(
      refused.map((r) => `${r.verb} ${r.path}`),
      "requests the scoped chart would refuse",
    ).toEqual([]);
    expect(requests.some((r) => r.resource === "secrets" && r.verb === "create")).toBe(true);
  });

  it("without: every namespace, as values.yaml and the README say", async () => {
    const objects = await render([]);
    for (const verb of ["get", "list", "watch", "create", "update", "delete"])
      expect(reach(objects, "", "secrets", verb), `secrets ${verb}`).toBe("*");
    const values = readFileSync(join(CHART, "values.yaml"), "utf8");
    const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
    // The comment right above watchNamespaces, and the README's install section.
    const comment = values.slice(0, values.indexOf("\nwatchNamespaces:")).split("\n\n").pop();
    expect(comment).toMatch(/Secrets in every namespace/);
    expect(comment).toMatch(/RoleBindings/);
    expect(readme).toMatch(/\*\*Secrets in every namespace\*\*/);
  });
});
