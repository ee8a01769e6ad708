// The chart's CRDs across `helm upgrade`, with the real helm against test/kube: installed from
// an older chart whose ImageBuild CRD lacks a field, upgraded to this chart, then uninstalled.
// Helm installs a chart's crds/ directory on the first install only, so a CRD kept there never
// gains a new field and the API server prunes it from every object; this chart renders its CRDs
// as templates (crds.enabled) that helm upgrades like any other object, and keeps them on
// uninstall (crds.keep). test/kube serves no RBAC kinds and no server-side apply, so the release
// is installed with rbac.create=false and client-side apply; the CRDs are what is looked at.
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { crdFor } from "../../src/api/crd.ts";
import { IMAGE_BUILD } from "../../src/api/resources.ts";
import type { KubeObject } from "../kube/index.ts";
import { REPO_ROOT } from "../support/files.ts";
import {
  commandsOf,
  HELM_HARNESS,
  type PasteCluster,
  shellBlocks,
  startPasteCluster,
} from "../support/pasted.ts";

const CHART = join(REPO_ROOT, "charts", "buildfarm");
const NAMESPACE = "buildfarm-system";
const CRDS = "customresourcedefinitions.apiextensions.k8s.io";
const IMAGE_BUILDS = "imagebuilds.buildfarm.dev";

/** The field the old chart's CRD does not have yet. */
const NEW_FIELD = "cacheKey";

type Crd = KubeObject & {
  metadata: { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: {
    versions: { schema: { openAPIV3Schema: { properties: { spec: { properties: object } } } } }[];
  };
};

const specProperties = (crd: Crd | undefined) =>
  crd?.spec.versions[0]?.schema.openAPIV3Schema.properties.spec.properties ?? {};

/** The YAML text without the block of `key:` (the line and everything indented under it). */
function withoutProperty(text: string, key: string): string {
  const lines = text.split("\n");
  const at = lines.findIndex((line) => line.trim() === `${key}:`);
  if (at < 0) throw new Error(`no ${key}: in the CRD`);
  const indent = (lines[at] as string).search(/\S/);
  let end = at + 1;
  while (end < lines.length && ((lines[end] as string).search(/\S/) > indent || lines[end] === ""))
    end++;
  return [...lines.slice(0, at), ...lines.slice(end)].join("\n");
}

/**
 * A copy of the chart as an older release: version 0.0.9, its ImageBuild CRD without NEW_FIELD;
 * with `crdsDirectory`, laid out as 0.1.0 was, the CRDs as plain files in crds/.
 */
async function olderChart(scratch: string, crdsDirectory = false): Promise<string> {
  const dir = await mkdtemp(join(scratch, "buildfarm-old-"));
  await cp(CHART, dir, { recursive: true });
  if (crdsDirectory) {
    await rm(join(dir, "templates", "crds"), { recursive: true, force: true });
    await rm(join(dir, "crds"), { recursive: true, force: true });
    await cp(join(REPO_ROOT, "crds"), join(dir, "crds"), { recursive: true });
  }
  const chartYaml = join(dir, "Chart.yaml");
  await writeFile(
    chartYaml,
    (await readFile(chartYaml, "utf8")).replace(/^version: .*$/m, "version: 0.0.9"),
  );
  // Wherever the chart keeps its CRDs (crds/ or templates/): the same YAML, one field less.
  let edited = 0;
  for (const sub of ["crds", join("templates", "crds")]) {
    const files = await readdir(join(dir, sub)).catch(() => [] as string[]);
    for (const file of files.filter((name) => name.includes("imagebuilds"))) {
      const path = join(dir, sub, file);
      await writeFile(path, withoutProperty(await readFile(path, "utf8"), NEW_FIELD));
      edited++;
    }
  }
  if (edited !== 1) throw new Error(`found ${edited} ImageBuild CRD files in the chart`);
  return dir;
}

describe("the chart's CRDs across helm upgrade (real helm, test/kube)", () => {
  let scratch: string;
  let cluster: PasteCluster | undefined;

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), "buildfarm-upgrade-"));
  });

  afterEach(async () => {
    await cluster?.stop();
    cluster = undefined;
  });

  const start = async () => {
    cluster = await startPasteCluster({
      cwd: REPO_ROOT,
      kube: { namespaces: [NAMESPACE, "builds"] },
    });
    return cluster;
  };
  const release = (c: PasteCluster, verb: "install" | "upgrade", chart: string) =>
    c.helm([verb, "buildfarm", chart, "--namespace", NAMESPACE, ...HELM_HARNESS]);
  const storedCrd = (c: PasteCluster) =>
    c.kube.store.get(CRDS, undefined, IMAGE_BUILDS) as Crd | undefined;
  const imageBuild = (name: string): KubeObject =>
    ({
      apiVersion: "buildfarm.dev/v1alpha1",
      kind: "ImageBuild",
      metadata: { name, namespace: "builds" },
      spec: {
        poolRef: { name: "default" },
        source: { git: { url: "https://github.com/example/app.git", revision: "main" } },
        platforms: ["linux/amd64"],
        output: { image: "registry.example.com/app", tags: ["v1"] },
        [NEW_FIELD]: "team-a/app",
      },
    }) as KubeObject;
  const storedSpec = (c: PasteCluster, name: string) =>
    (c.kube.store.get(IMAGE_BUILDS, "builds", name) as { spec?: Record<string, unknown> })?.spec;
  /** The stored CRD is this chart's: the generated one, and a new ImageBuild keeps NEW_FIELD. */
  const expectCurrentCrd = (c: PasteCluster, probe: string) => {
    const generated = crdFor(IMAGE_BUILD) as Crd;
    expect(storedCrd(c)?.spec.versions).toEqual(generated.spec.versions);
    c.kube.store.create(IMAGE_BUILDS, imageBuild(probe));
    expect(storedSpec(c, probe)?.[NEW_FIELD]).toBe("team-a/app");
  };

  it("upgrades the CRD: a field the old chart lacked is served after helm upgrade, and kept on uninstall", async () => {
    const c = await start();
    await release(c, "install", await olderChart(scratch));
    // The old release's CRD: the API server prunes the field it does not know.
    expect(specProperties(storedCrd(c))).not.toHaveProperty(NEW_FIELD);
    c.kube.store.create(IMAGE_BUILDS, imageBuild("before-upgrade"));
    expect(storedSpec(c, "before-upgrade")).not.toHaveProperty(NEW_FIELD);

    await release(c, "upgrade", CHART);
    expect(await c.helm(["list", "--namespace", NAMESPACE, "--short"])).toBe("buildfarm\n");
    expectCurrentCrd(c, "after-upgrade");
    // Owned by the release, and marked to outlive it.
    expect(storedCrd(c)?.metadata.labels?.["app.kubernetes.io/managed-by"]).toBe("Helm");
    expect(storedCrd(c)?.metadata.annotations?.["helm.sh/resource-policy"]).toBe("keep");

    await c.helm(["uninstall", "buildfarm", "--namespace", NAMESPACE]);
    // crds.keep (default true): the CRDs, and with them every ImageBuild, stay.
    expect(storedCrd(c)).toBeDefined();
    expect(storedSpec(c, "after-upgrade")?.[NEW_FIELD]).toBe("team-a/app");
    expect(c.kube.store.objects("deployments.apps", NAMESPACE)).toEqual([]);
  }, 120_000);

  it("from 0.1.0 (CRDs in crds/): helm refuses them until the README's Upgrading commands adopt them", async () => {
    const c = await start();
    await release(c, "install", await olderChart(scratch, true));
    expect(specProperties(storedCrd(c))).not.toHaveProperty(NEW_FIELD);
    await expect(release(c, "upgrade", CHART)).rejects.toThrow(/invalid ownership metadata/);

    const readme = await readFile(join(REPO_ROOT, "README.md"), "utf8");
    const commands = commandsOf(shellBlocks(readme, "Upgrading"));
    expect(commands.map((command) => command.slice(0, 2).join(" "))).toEqual([
      "kubectl label",
      "kubectl annotate",
      "helm upgrade",
    ]);
    for (const [program, ...args] of commands) {
      if (program === "kubectl") await c.kubectl(args);
      else await c.helm([...args, ...HELM_HARNESS]);
    }
    expectCurrentCrd(c, "adopted");
  }, 120_000);
});
