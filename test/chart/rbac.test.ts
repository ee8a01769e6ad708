// The chart grants exactly what the operator uses. The operator runs a scenario that takes every
// code path that calls the API (pools created, changed and pruned, persistent builders, builds
// that succeed, fail, time out, lose their cache export, expire and get deleted, leader
// election), and every request it makes is attributed by its User-Agent in test/kube's request
// log. Each must be allowed by the chart's rules, and each rule must be used.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import type { KubernetesObject } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { isConflict } from "../../src/runtime/client.ts";
import {
  type BuildCluster,
  NS,
  POOL,
  POOLS,
  phaseIs,
  poolSpec,
  startBuildCluster,
} from "../imagebuild/cluster.ts";
import { CACHE_REFUSED_LOG, FAILED_LOG } from "../imagebuild/player.ts";
import type { RequestRecord } from "../kube/request-log.ts";
import { REPO_ROOT } from "../support/files.ts";
import { layerBinary } from "../support/tools.ts";

const run = promisify(execFile);

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

/** Grants that no request shows, with the reason they are needed anyway. */
const GRANTED_WITHOUT_REQUESTS: Record<string, string> = {
  "buildfarm.dev builderpools/finalizers update":
    "children carry ownerReferences with blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement admission plugin allows only to whoever may update the owner's finalizers",
  "buildfarm.dev imagebuilds/finalizers update": "as for builderpools/finalizers",
};

const key = (apiGroup: string, resource: string, verb: string) =>
  `${apiGroup || "core"} ${resource} ${verb}`;

async function chartRules(values: string[] = []): Promise<Rule[]> {
  const { stdout } = await run(
    layerBinary("helm"),
    [
      "template",
      "buildfarm",
      join(REPO_ROOT, "charts", "buildfarm"),
      "--namespace",
      "builds",
      ...values,
    ],
    { maxBuffer: 32 << 20 },
  );
  return parseAllDocuments(stdout)
    .map((document) => document.toJS() as { kind?: string; rules?: Rule[] } | null)
    .filter((object) => object?.kind === "ClusterRole" || object?.kind === "Role")
    .flatMap((object) => object?.rules ?? []);
}

function granted(rules: Rule[]): Set<string> {
  const out = new Set<string>();
  for (const rule of rules)
    for (const group of rule.apiGroups)
      for (const resource of rule.resources)
        for (const verb of rule.verbs) out.add(key(group, resource, verb));
  return out;
}

let cluster: BuildCluster;
let used: Map<string, RequestRecord>;

beforeAll(async () => {
  cluster = await startBuildCluster({
    operator: {
      args: ["--leader-elect=true", "--lease-namespace=builds", "--lease-name=buildfarm-rbac"],
    },
    namespaces: { "team-b": { team: "b" } },
  });
  const { client, player, kube } = cluster;
  await kube.waitFor(() => cluster.operator.manager.isLeader, { timeout: 30_000 });
  // Builds: one that succeeds and expires, one whose cache export is refused (its log is read),
  // one whose platform fails (its sibling is stopped), one that times out, one deleted mid-way.
  player.script("expiring-arm64", { kind: "push" });
  player.script("nocache-arm64", { kind: "push", cache: false, log: CACHE_REFUSED_LOG });
  player.script("broken-arm64", { kind: "fail", log: FAILED_LOG });
  player.script("broken-amd64", { kind: "hang" });
  player.script("slow-amd64", { kind: "hang" });
  player.script("slow-arm64", { kind: "hang" });
  player.script("doomed-amd64", { kind: "hang" });
  player.script("doomed-arm64", { kind: "hang" });
  await cluster.createBuild("expiring", { ttlSecondsAfterFinished: 1 });
  await cluster.createBuild("nocache");
  await cluster.createBuild("broken");
  await cluster.createBuild("slow", { timeout: "1s" });
  await cluster.createBuild("doomed");
  await cluster.createBuild("inline", {
    ttlSecondsAfterFinished: 1,
    source: {
      inline: { dockerfile: "FROM scratch\nCOPY a /a\n", files: [{ path: "a", content: "hello" }] },
    },
  });
  await cluster.createBuild("stranger", { poolRef: { name: POOL, namespace: NS } }, "team-b");
  await cluster.waitForBuild("expiring", phaseIs("Succeeded"));
  await cluster.waitForBuild("nocache", phaseIs("Succeeded"));
  await cluster.waitForBuild("broken", phaseIs("Failed"));
  await cluster.waitForBuild("slow", phaseIs("Failed"), { timeout: 30_000 });
  await cluster.waitForBuild("inline", phaseIs("Succeeded"));
  await cluster.waitForBuild("stranger", phaseIs("Failed"), { namespace: "team-b" });
  await kube.waitFor(
    () => kube.store.objects("pods", NS).some((pod) => pod.metadata.name?.startsWith("doomed-")),
    { message: "doomed's pods" },
  );
  await client.delete({ ...POOLS, kind: "ImageBuild", plural: "imagebuilds" }, NS, "doomed");
  const expired = () =>
    !kube.store
      .objects("jobs.batch", NS)
      .some((job) => /^(expiring|inline)-/.test(job.metadata.name ?? "")) &&
    !kube.store.get("configmaps", NS, "inline-context");
  await kube.waitFor(expired, {
    timeout: 30_000,
    message: "Jobs and inline context deleted after the TTL",
  });
  // An autoscaled pool scaling down while one of its two builders builds: that builder's
  // pod-deletion-cost is set first (a pod patch).
  await client.create(POOLS, {
    apiVersion: "buildfarm.dev/v1alpha1",
    kind: "BuilderPool",
    metadata: { name: "elastic", namespace: NS },
    spec: poolSpec({
      architectures: [
        {
          name: "amd64",
          autoscaling: { maxReplicas: 2, buildsPerReplica: 1, scaleDownDelay: "300ms" },
        },
      ],
    }),
  });
  player.holdAll = true;
  for (const name of ["elastic-1", "elastic-2"]) {
    await cluster.createBuild(name, {
      poolRef: { name: "elastic" },
      platforms: ["linux/amd64"],
      cacheKey: name,
    });
  }
  await kube.waitFor(
    () => ["elastic-1-amd64", "elastic-2-amd64"].every((j) => player.runningJobs().includes(j)),
    { message: "both elastic builds running" },
  );
  player.release("elastic-1-amd64");
  await kube.waitFor(
    () =>
      kube.store
        .objects("pods", NS)
        .some((pod) => pod.metadata.annotations?.["controller.kubernetes.io/pod-deletion-cost"]),
    { message: "a busy builder's deletion cost" },
  );
  player.holdAll = false;
  player.release("elastic-2-amd64");
  await cluster.waitForBuild("elastic-2", phaseIs("Succeeded"));
  // Pools: a persistent one, later shrunk to one architecture (a StatefulSet pruned).
  await client.create(POOLS, {
    apiVersion: "buildfarm.dev/v1alpha1",
    kind: "BuilderPool",
    metadata: { name: "disks", namespace: NS },
    spec: poolSpec({ cache: { type: "Persistent", size: "50Gi" } }),
  });
  await kube.waitFor(() => kube.store.objects("statefulsets.apps", NS).length === 2, {
    message: "the persistent pool's StatefulSets",
  });
  // Scale amd64 up, down and up again: a PDB created and pruned, and the repeated ScaledUp
  // Event counted on the existing Event (a patch).
  // A user's edit: read, change, write, again on a conflict with the operator's status writes.
  const setPool = async (name: string, architectures: unknown[]) => {
    for (;;) {
      const pool = await client.get<KubernetesObject & { spec?: Record<string, unknown> }>(
        POOLS,
        NS,
        name,
      );
      try {
        await client.replace(POOLS, { ...pool, spec: { ...pool?.spec, architectures } });
        return;
      } catch (error) {
        if (!isConflict(error)) throw error;
      }
    }
  };
  const pdbs = () =>
    kube.store.objects("poddisruptionbudgets.policy", NS).map((pdb) => pdb.metadata.name);
  const twoAmd = [
    { name: "amd64", replicas: 2 },
    { name: "arm64", replicas: 1 },
  ];
  await setPool(POOL, twoAmd);
  await kube.waitFor(() => pdbs().includes(`${POOL}-amd64`), {
    message: "a PDB for two amd64 builders",
  });
  await setPool(POOL, [
    { name: "amd64", replicas: 1 },
    { name: "arm64", replicas: 1 },
  ]);
  await kube.waitFor(() => !pdbs().includes(`${POOL}-amd64`), {
    message: "the PDB pruned at one builder",
  });
  await setPool(POOL, twoAmd);
  await kube.waitFor(() => pdbs().includes(`${POOL}-amd64`), { message: "the PDB back" });
  await setPool("disks", [{ name: "amd64", replicas: 1 }]);
  await kube.waitFor(() => kube.store.objects("statefulsets.apps", NS).length === 1, {
    message: "the arm64 StatefulSet pruned",
  });
  // Children left by an older operator (another spec hash) are replaced once.
  for (const [resource, name] of [
    ["configmaps", `${POOL}-buildkitd-config`],
    ["services", `${POOL}-amd64`],
    ["networkpolicies.networking.k8s.io", `${POOL}-builders`],
    ["poddisruptionbudgets.policy", `${POOL}-amd64`],
    ["statefulsets.apps", "disks-amd64"],
  ] as const) {
    kube.store.mutate(resource, NS, name, (draft) => {
      draft.metadata.annotations = {
        ...draft.metadata.annotations,
        "buildfarm.dev/spec-hash": "from-an-older-operator",
      };
    });
    await kube.waitFor(
      () =>
        kube.store.get(resource, NS, name)?.metadata.annotations?.["buildfarm.dev/spec-hash"] !==
        "from-an-older-operator",
      { message: `${resource}/${name} restored` },
    );
  }
  await setPool(POOL, [{ name: "amd64", replicas: 2 }]);
  await kube.waitFor(() => !kube.store.get("deployments.apps", NS, `${POOL}-arm64`), {
    message: "the arm64 Deployment pruned",
  });
  // A child's name taken by someone else's object, which the label-filtered caches do not hold:
  // the create answers AlreadyExists, the operator reads the object (a get) and reports
  // NameConflict. One pool per kind, since a pool stops at its first conflict.
  const meta = (name: string) => ({ name, namespace: NS, labels: { app: "someone-else" } });
  const template = {
    metadata: { labels: { app: "someone-else" } },
    spec: { containers: [{ name: "app", image: "nginx" }] },
  };
  const selector = { matchLabels: { app: "someone-else" } };
  const taken: [string, string, Record<string, unknown>, Record<string, unknown>][] = [
    ["taken-cm", "configmaps", { kind: "ConfigMap", data: {} }, {}],
    ["taken-svc", "services", { kind: "Service", spec: { ports: [{ port: 80 }] } }, {}],
    [
      "taken-deploy",
      "deployments.apps",
      { apiVersion: "apps/v1", kind: "Deployment", spec: { replicas: 0, selector, template } },
      {},
    ],
    [
      "taken-sts",
      "statefulsets.apps",
      {
        apiVersion: "apps/v1",
        kind: "StatefulSet",
        spec: { replicas: 0, serviceName: "x", selector, template },
      },
      { cache: { type: "Persistent", size: "50Gi" } },
    ],
    [
      "taken-pdb",
      "poddisruptionbudgets.policy",
      { apiVersion: "policy/v1", kind: "PodDisruptionBudget", spec: { minAvailable: 1, selector } },
      { architectures: [{ name: "amd64", replicas: 2 }] },
    ],
    [
      "taken-netpol",
      "networkpolicies.networking.k8s.io",
      { apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", spec: { podSelector: {} } },
      {},
    ],
  ];
  for (const [pool, resource, object, spec] of taken) {
    const name =
      resource === "configmaps"
        ? `${pool}-buildkitd-config`
        : resource.startsWith("networkpolicies")
          ? `${pool}-builders`
          : `${pool}-amd64`;
    kube.store.create(resource, { apiVersion: "v1", ...object, metadata: meta(name) });
    await client.create(POOLS, {
      apiVersion: "buildfarm.dev/v1alpha1",
      kind: "BuilderPool",
      metadata: { name: pool, namespace: NS },
      spec: poolSpec(spec),
    });
    await kube
      .waitFor(
        () => {
          const stored = kube.store.get("builderpools.buildfarm.dev", NS, pool) as
            | { status?: { conditions?: { type: string; reason?: string }[] } }
            | undefined;
          return stored?.status?.conditions?.some(
            (c) => c.type === "Ready" && c.reason === "NameConflict",
          );
        },
        { message: `${pool}: NameConflict on ${resource}/${name}` },
      )
      .catch((error) => {
        console.log(JSON.stringify(kube.store.get("builderpools.buildfarm.dev", NS, pool)));
        throw error;
      });
  }
  await cluster.operator.manager.events.flush();
  await cluster.operator.stop(); // releases the Lease (an update)
  used = new Map();
  for (const record of kube.requestLog.entries()) {
    if (!record.userAgent?.startsWith("buildfarm/") || !record.resource) continue;
    const resource = record.subresource
      ? `${record.resource}/${record.subresource}`
      : record.resource;
    used.set(key(record.apiGroup, resource, record.verb), record);
  }
}, 120_000);

afterAll(async () => {
  await cluster?.kube.stop();
});

describe("the chart's RBAC", () => {
  it("allows every request the operator made", async () => {
    const allowed = granted(await chartRules());
    const refused = [...used.keys()].filter((request) => !allowed.has(request));
    expect(refused, "requests the chart's rules would refuse (403 in a real cluster)").toEqual([]);
    // The scenario really went through the operator's paths, not a quiet subset.
    for (const request of [
      "core secrets create",
      "batch jobs delete",
      "core pods/log get",
      "apps statefulsets create",
      "apps deployments delete",
      "coordination.k8s.io leases update",
      "buildfarm.dev imagebuilds/status update",
      "core events create",
      "core pods patch",
    ]) {
      expect([...used.keys()], request).toContain(request);
    }
  });

  it("grants nothing the operator did not use, except what admission requires", async () => {
    const unused = [...granted(await chartRules())].filter(
      (grant) => !used.has(grant) && !(grant in GRANTED_WITHOUT_REQUESTS),
    );
    expect(unused, "grants no request used: remove them from the chart").toEqual([]);
  });

  it("scopes namespaced grants to the watched namespaces when the chart is given some", async () => {
    const { stdout } = await run(
      layerBinary("helm"),
      [
        "template",
        "buildfarm",
        join(REPO_ROOT, "charts", "buildfarm"),
        "--namespace",
        "builds",
        "--set",
        "watchNamespaces={builds,team-b}",
      ],
      { maxBuffer: 32 << 20 },
    );
    const objects = parseAllDocuments(stdout).map(
      (d) =>
        d.toJS() as {
          kind: string;
          metadata: { name: string; namespace?: string };
          roleRef?: { name: string };
        },
    );
    const clusterWide = objects
      .filter((o) => o.kind === "ClusterRoleBinding")
      .map((o) => o.roleRef?.name);
    expect(clusterWide).toEqual(["buildfarm-cluster"]);
    const clusterRole = objects.find(
      (o) => o.kind === "ClusterRole" && o.metadata.name === "buildfarm-cluster",
    ) as unknown as { rules: Rule[] };
    // Cluster-wide, only what is cluster-scoped: the operator's node and namespace reads.
    expect([...granted(clusterRole.rules)].sort()).toEqual(
      [...used.keys()].filter((k) => /^core (nodes|namespaces) /.test(k)).sort(),
    );
  });
});
