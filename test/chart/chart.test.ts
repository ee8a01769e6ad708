import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { crdFor, renderChartCrds } from "../../src/api/crd.ts";
import { BUILDER_POOL, IMAGE_BUILD } from "../../src/api/resources.ts";
import { crdValidator } from "../support/crds.ts";
import { REPO_ROOT } from "../support/files.ts";
import { validateUpstream } from "../support/schemas.ts";
import { layerBinary } from "../support/tools.ts";

const run = promisify(execFile);
const CHART = join(REPO_ROOT, "charts", "buildfarm");

type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [key: string]: unknown;
};

let helm: string;
let scratch: string;

async function template(valuesYaml?: string): Promise<Obj[]> {
  const args = ["template", "buildfarm", CHART, "--namespace", "buildfarm-system"];
  if (valuesYaml !== undefined) {
    const file = join(scratch, `values-${Math.random().toString(36).slice(2)}.yaml`);
    await writeFile(file, valuesYaml);
    args.push("--values", file);
  }
  const { stdout } = await run(helm, args, { maxBuffer: 64 << 20 });
  return parseAllDocuments(stdout)
    .map((document) => document.toJS() as Obj | null)
    .filter((object): object is Obj => object !== null);
}

const NON_DEFAULT = `
replicaCount: 3
watchNamespaces: [team-a, team-b]
leaderElection: { enabled: true, leaseName: farm-leader }
logLevel: debug
workers: { pools: 1, builds: 8 }
image: { repository: registry.example.com/platform/buildfarm, tag: "0.1.0-rc1", pullPolicy: Always }
imagePullSecrets: [{ name: regcred }]
serviceAccount: { create: true, name: farm, annotations: { eks.amazonaws.com/role-arn: "arn:aws:iam::1:role/x" } }
metrics: { port: 9090, service: { enabled: true, type: ClusterIP }, serviceMonitor: { enabled: true, interval: 15s, labels: { release: prom } } }
grafanaDashboard: { enabled: true, labels: { grafana_dashboard: "1" } }
defaultPool:
  enabled: true
  name: shared
  namespace: builds
  spec:
    architectures:
      - { name: amd64, replicas: 2 }
      - { name: arm64, replicas: 1 }
nodeSelector: { kubernetes.io/os: linux }
tolerations: [{ key: dedicated, operator: Equal, value: platform, effect: NoSchedule }]
`;

beforeAll(async () => {
  helm = layerBinary("helm");
  scratch = await mkdtemp(join(tmpdir(), "buildfarm-chart-"));
});

describe("the Helm chart", () => {
  it("passes helm lint with default and non-default values", async () => {
    await run(helm, ["lint", CHART, "--strict"]);
    const file = join(scratch, "lint-values.yaml");
    await writeFile(file, NON_DEFAULT);
    await run(helm, ["lint", CHART, "--strict", "--values", file]);
  });

  it("ships the generated CRDs as templates, byte-identical to what npm run crds writes", () => {
    for (const { file, template } of renderChartCrds()) {
      expect(
        readFileSync(join(CHART, "templates", "crds", file), "utf8"),
        `charts/buildfarm/templates/crds/${file} is stale: npm run crds`,
      ).toBe(template);
    }
  });

  it("renders the generated CRDs, kept on uninstall, unless crds.enabled is false", async () => {
    type Crd = Obj & { metadata: { annotations?: Record<string, string> }; spec: unknown };
    const crds = (values?: string) =>
      template(values).then(
        (objects) => objects.filter((o) => o.kind === "CustomResourceDefinition") as Crd[],
      );
    const rendered = await crds();
    expect(rendered.map((crd) => crd.metadata.name).sort()).toEqual([
      "builderpools.buildfarm.dev",
      "imagebuilds.buildfarm.dev",
    ]);
    for (const info of [BUILDER_POOL, IMAGE_BUILD]) {
      const generated = crdFor(info) as Crd;
      const crd = rendered.find((c) => c.metadata.name === generated.metadata.name);
      // What the API server gets is the generated CRD, with the release's labels and the keep.
      expect(crd?.spec).toEqual(generated.spec);
      expect(crd?.metadata.annotations).toEqual({ "helm.sh/resource-policy": "keep" });
      expect(crd?.metadata).toMatchObject({ labels: { "app.kubernetes.io/managed-by": "Helm" } });
    }
    expect((await crds("crds: { keep: false }\n")).map((c) => c.metadata.annotations)).toEqual([
      undefined,
      undefined,
    ]);
    expect(await crds("crds: { enabled: false }\n")).toEqual([]);
  });

  it.each([
    ["default values", undefined],
    ["non-default values", NON_DEFAULT],
  ])("renders only objects valid against the upstream schemas (%s)", async (_name, values) => {
    const objects = await template(values);
    expect(objects.length).toBeGreaterThan(8);
    for (const object of objects) {
      const label = `${object.kind}/${object.metadata.name}`;
      if (object.apiVersion === "buildfarm.dev/v1alpha1") {
        expect(crdValidator("builderpools").admit(structuredClone(object)), label).toEqual([]);
      } else if (object.apiVersion === "monitoring.coreos.com/v1") {
        expect(object.spec, label).toMatchObject({ endpoints: [{ port: "metrics" }] });
      } else {
        await expect(validateUpstream(object), label).resolves.toBeUndefined();
      }
    }
  });

  it("runs the operator restricted: non-root, read-only, no capabilities, RuntimeDefault seccomp", async () => {
    const deployment = (await template()).find((o) => o.kind === "Deployment") as Obj & {
      spec: {
        replicas: number;
        template: {
          spec: {
            securityContext: object;
            containers: {
              securityContext: object;
              args: string[];
              livenessProbe: object;
              readinessProbe: object;
            }[];
          };
        };
      };
    };
    expect(deployment.spec.replicas).toBe(2);
    const pod = deployment.spec.template.spec;
    expect(pod.securityContext).toMatchObject({
      runAsNonRoot: true,
      seccompProfile: { type: "RuntimeDefault" },
    });
    const [container] = pod.containers;
    expect(container?.securityContext).toEqual({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
    });
    expect(container?.args).toContain("--leader-elect=true");
    // Every IPv6 and IPv4 address: the probes of an IPv6-only cluster reach it too.
    expect(container?.args).toContain("--metrics-bind-address=:8080");
    // Index and tag Jobs run the operator image: only on nodes of the platforms it is built for.
    expect(container?.args).toContain("--operator-image-platforms=linux/amd64,linux/arm64");
    expect(container?.livenessProbe).toMatchObject({ httpGet: { path: "/healthz" } });
    expect(container?.readinessProbe).toMatchObject({ httpGet: { path: "/readyz" } });
  });

  it("grants no wildcard, and binds namespaced rules only in watched namespaces when given", async () => {
    const scoped = await template(NON_DEFAULT);
    const roles = scoped.filter((o) => o.kind === "ClusterRole" || o.kind === "Role") as (Obj & {
      rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[];
    })[];
    for (const role of roles)
      for (const rule of role.rules)
        expect([...rule.apiGroups, ...rule.resources, ...rule.verbs]).not.toContain("*");
    const bindings = scoped.filter(
      (o) => o.kind === "RoleBinding" && o.metadata.name === "buildfarm",
    );
    expect(bindings.map((b) => b.metadata.namespace).sort()).toEqual(["team-a", "team-b"]);
    expect(
      scoped.filter((o) => o.kind === "ClusterRoleBinding").map((o) => o.metadata.name),
    ).toEqual(["buildfarm-cluster"]);
    expect(
      (await template())
        .filter((o) => o.kind === "ClusterRoleBinding")
        .map((o) => o.metadata.name)
        .sort(),
    ).toEqual(["buildfarm", "buildfarm-cluster"]);
  });

  it("refuses values the schema does not allow, naming the value", async () => {
    await expect(template("replicaCount: 0\n")).rejects.toThrow(/replicaCount/);
    await expect(template("logLevel: loud\n")).rejects.toThrow(/logLevel/);
    await expect(template("watchNamespaces: [Bad_NS]\n")).rejects.toThrow(/watchNamespaces/);
    await expect(template("unknownKey: 1\n")).rejects.toThrow(/unknownKey/);
  });

  it("packs a Grafana dashboard that queries the operator's own metric names", async () => {
    const dashboard = JSON.parse(
      readFileSync(join(CHART, "dashboards", "buildfarm.json"), "utf8"),
    ) as { panels: { targets: { expr: string }[] }[] };
    const exprs = dashboard.panels
      .flatMap((panel) => panel.targets.map((target) => target.expr))
      .join("\n");
    for (const metric of [
      "controller_runtime_reconcile_total",
      "workqueue_depth",
      "leader_election_master_status",
      "buildfarm_builds_total",
      "buildfarm_queue_depth",
      "buildfarm_build_steps_total",
      "buildfarm_builder_cache_bytes",
    ]) {
      expect(exprs).toContain(metric);
    }
    const configMap = (await template(NON_DEFAULT)).find(
      (o) => o.kind === "ConfigMap" && o.metadata.name.endsWith("-dashboard"),
    ) as Obj & { data: Record<string, string> };
    expect(JSON.parse(configMap.data["buildfarm.json"] as string)).toEqual(dashboard);
  });
});

describe("the Helm chart as a subchart of an umbrella chart", () => {
  /** An umbrella chart depending on charts/buildfarm (file://), its dependency fetched by helm. */
  async function umbrella(values: string): Promise<string> {
    const dir = await mkdtemp(join(scratch, "umbrella-"));
    await writeFile(
      join(dir, "Chart.yaml"),
      [
        "apiVersion: v2",
        "name: platform",
        "version: 1.0.0",
        "dependencies:",
        "  - name: buildfarm",
        "    version: 0.1.0",
        `    repository: file://${CHART}`,
        "",
      ].join("\n"),
    );
    await writeFile(join(dir, "values.yaml"), values);
    // Helm's own homes in the scratch directory: no user repositories, no network.
    const env = {
      ...process.env,
      HELM_CACHE_HOME: join(dir, ".helm", "cache"),
      HELM_CONFIG_HOME: join(dir, ".helm", "config"),
      HELM_DATA_HOME: join(dir, ".helm", "data"),
    };
    await run(helm, ["dependency", "update", dir], { env });
    return dir;
  }

  async function templateUmbrella(dir: string, args: string[] = []): Promise<Obj[]> {
    const { stdout } = await run(
      helm,
      ["template", "platform", dir, "--namespace", "platform", ...args],
      { maxBuffer: 64 << 20 },
    );
    return parseAllDocuments(stdout)
      .map((document) => document.toJS() as Obj | null)
      .filter((object): object is Obj => object !== null);
  }

  it("renders with empty values, although Helm always passes `global` to a subchart", async () => {
    const objects = await templateUmbrella(await umbrella(""));
    expect(objects.find((o) => o.kind === "Deployment")?.metadata.name).toBe("platform-buildfarm");
  });

  it("takes the subchart's values and the umbrella's globals, and still refuses unknown keys", async () => {
    const dir = await umbrella(
      [
        "global: { imageRegistry: registry.example.com }",
        "buildfarm:",
        "  replicaCount: 3",
        "",
      ].join("\n"),
    );
    const deployment = (await templateUmbrella(dir)).find((o) => o.kind === "Deployment") as Obj & {
      spec: { replicas: number };
    };
    expect(deployment.spec.replicas).toBe(3);
    const file = join(dir, "bad.yaml");
    await writeFile(file, "buildfarm: { replicaCount: 2, unknownKey: 1 }\n");
    await expect(templateUmbrella(dir, ["--values", file])).rejects.toThrow(/unknownKey/);
  });
});
