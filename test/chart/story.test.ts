// The install story as a user pastes it: the README's "Install with Helm" commands and the
// chart's NOTES (as the real `helm install` prints them), run with the real helm and kubectl
// against test/kube. The commands are parsed out of those texts, not copied here, so an example
// whose namespace differs from the commands' (kubectl refuses a -n that differs from the
// object's) or a step that is missing fails this test.
//
// What the harness changes, and why: helm gets --server-side=false and
// --disable-openapi-validation (test/kube serves no server-side apply and no OpenAPI schemas)
// and rbac.create=false (test/kube serves no RBAC kinds); a raw.githubusercontent.com URL of this
// repository's main branch is read from the checkout (`curl -fsSLO` copies the file into the
// working directory); `wait` and `rollout status` are not run (no operator runs here).
import { copyFile, readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { parse } from "yaml";
import type { Kube } from "../kube/index.ts";
import { REPO_ROOT, readYaml } from "../support/files.ts";
import {
  commandsOf,
  HELM_HARNESS,
  type PasteCluster,
  shellBlocks,
  startPasteCluster,
} from "../support/pasted.ts";

const RAW = "https://raw.githubusercontent.com/buildfarm-dev/buildfarm/main/";

const stories: PasteCluster[] = [];
async function startStory(cwd?: string): Promise<PasteCluster> {
  const story = await startPasteCluster(cwd ? { cwd } : {});
  stories.push(story);
  return story;
}

afterEach(async () => {
  for (const story of stories.splice(0)) await story.stop();
});

/** A repository file named by its raw.githubusercontent.com URL. */
function repositoryFile(url: string): string {
  if (!url.startsWith(RAW)) throw new Error(`${url} is not a file of this repository's main`);
  return join(REPO_ROOT, url.slice(RAW.length));
}

/** Runs the commands in order, as a user would paste them; returns what each printed. */
async function paste(story: PasteCluster, commands: string[][]): Promise<string[]> {
  const ran: string[] = [];
  for (const [program, ...args] of commands) {
    if (program === "curl") {
      const url = args.find((arg) => arg.startsWith("https://")) as string;
      await copyFile(repositoryFile(url), join(story.cwd, basename(url)));
    } else if (program === "helm") {
      ran.push(await story.helm([...args, ...HELM_HARNESS]));
    } else if (args[0] === "wait" || args.includes("wait") || args.includes("rollout")) {
    } else {
      const local = args.map((arg) => (arg.startsWith(RAW) ? repositoryFile(arg) : arg));
      // A plain file name is one the user saved (curl -O) in the working directory.
      ran.push(await story.kubectl(local));
    }
    ran.push(`$ ${program} ${args.join(" ")}`);
  }
  return ran;
}

/** What the story must have made: the examples, in the privileged namespace, with their push Secret. */
async function expectExamplesApplied(kube: Kube): Promise<void> {
  const pool = readYaml("examples/builderpool.yaml") as { metadata: { namespace: string } };
  const build = readYaml("examples/imagebuild.yaml") as {
    metadata: { namespace: string; name: string };
    spec: { output: { pushSecretRef: { name: string } } };
  };
  const namespace = pool.metadata.namespace;
  expect(build.metadata.namespace).toBe(namespace);
  expect(kube.store.get("namespaces", undefined, namespace)?.metadata.labels).toMatchObject({
    "pod-security.kubernetes.io/enforce": "privileged",
  });
  // Every field of the examples reached the API server (none pruned, none refused).
  expect(kube.store.get("builderpools.buildfarm.dev", namespace, "default")).toMatchObject(pool);
  expect(kube.store.get("imagebuilds.buildfarm.dev", namespace, build.metadata.name)).toMatchObject(
    build,
  );
  const secret = kube.store.get("secrets", namespace, build.spec.output.pushSecretRef.name) as
    | { type?: string }
    | undefined;
  expect(secret?.type).toBe("kubernetes.io/dockerconfigjson");
}

describe("the install story, pasted (real helm and kubectl against test/kube)", () => {
  it("README: the first helm install, then the builder namespace, the pool, the push Secret and the build", async () => {
    // In the checkout, as the README's commands are written (charts/buildfarm, examples/).
    const story = await startStory(REPO_ROOT);
    const readme = await readFile(join(REPO_ROOT, "README.md"), "utf8");
    const commands = commandsOf(shellBlocks(readme, "Install with Helm"));
    // The first install, not the watchNamespaces variant beside it.
    const installs = commands.filter(([program, verb]) => program === "helm" && verb === "install");
    expect(installs.length).toBeGreaterThan(0);
    const story_ = commands.filter(([program]) => program !== "helm");
    await paste(story, [installs[0]!, ...story_]);
    await expectExamplesApplied(story.kube);
  }, 120_000);

  it("NOTES: the steps helm install prints", async () => {
    const story = await startStory();
    const readme = await readFile(join(REPO_ROOT, "README.md"), "utf8");
    const [install] = commandsOf(shellBlocks(readme, "Install with Helm"));
    // The chart from the checkout, wherever the NOTES' commands then run.
    const args = install!
      .slice(1)
      .map((arg) => (arg === "charts/buildfarm" ? join(REPO_ROOT, arg) : arg));
    const printed = await story.helm([...args, ...HELM_HARNESS]);
    const notes = printed.slice(printed.indexOf("NOTES:"));
    expect(commandsOf(notes).filter((command) => command.includes("apply")).length).toBe(2);
    await paste(story, commandsOf(notes));
    await expectExamplesApplied(story.kube);
    // The release's CRDs came with the chart.
    expect(
      parse(await story.kubectl(["get", "crd", "-o", "yaml"])) as { items: unknown[] },
    ).toMatchObject({ items: [{}, {}] });
  }, 120_000);
});
