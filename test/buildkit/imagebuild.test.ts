// An ImageBuild from CR to a multi-arch index with nothing played: the operator's pool and
// build controllers against test/kube, whose kubelet runs the builders' real rootless buildkitd,
// the Jobs' real buildctl and cp, and the index Job's real `buildfarm assemble`; a real registry,
// a git daemon, arm64 RUN steps under QEMU. Only what a machine without a cluster forces is
// mapped (test/kube/sim/real/mapping.ts). One cluster serves the tests in order.
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildPodLabels, COMPONENTS } from "../../src/naming.ts";
import { issueClientCertificate } from "../../src/pki/certificates.ts";
import { readCaSecret, tlsSecretData } from "../../src/pki/secrets.ts";
import type { KubeObject } from "../kube/index.ts";
import { everyBlob, getManifest, imageFile, tagList } from "../local-cluster/index.ts";
import { inspectRaw, listTags } from "../support/registry.ts";
import {
  BUILD_NAMESPACE,
  imageBuild,
  POOL,
  POOL_NAMESPACE,
  type RealCluster,
  realClusterInputs,
  startRealCluster,
} from "./cluster.ts";
import {
  type BuildStatus,
  builderPods,
  buildPods,
  condition,
  explain,
  histories,
  isReady,
  nodeArch,
  podLog,
  replaceBuilders,
  runBuild,
  runSteps,
  sleep,
  waitForBuild,
  waitForBuilders,
} from "./steps.ts";

const SUITE = "real BuildKit in the loop (test/buildkit)";
const { tools, debs } = (await realClusterInputs(SUITE)) ?? {};

const UNAME = { amd64: "x86_64", arm64: "aarch64" } as const;
/** A build takes seconds here; arm64 RUN steps under QEMU on a slow machine take longer. */
const BUILD_TIMEOUT = 240_000;

describe.skipIf(!tools || !debs)(SUITE, () => {
  let cluster: RealCluster;
  let first: BuildStatus;

  beforeAll(async () => {
    cluster = await startRealCluster(tools!, debs!);
    await waitForBuilders(cluster);
  }, 120_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

  describe("a pool with amd64 and arm64 builders and an ImageBuild for both platforms", () => {
    const tags = ["v1", "latest"];
    /** Tag-list samples taken during the build, each with the platforms pushed before it. */
    const samples: { tags: string[]; pushed: string[] }[] = [];

    beforeAll(async () => {
      let building = true;
      const pushedPlatforms = () =>
        buildPods(cluster, "app-1")
          .filter((pod) =>
            pod.status?.initContainerStatuses?.some(
              (s) => s.name === "buildctl" && s.state?.terminated?.exitCode === 0,
            ),
          )
          .map((pod) => pod.metadata.labels?.["buildfarm.dev/platform"] ?? "");
      // Tags first, then the platforms: a tag seen before a platform's buildctl had exited
      // (its push done) would be a tag that existed before that platform pushed.
      const poll = (async () => {
        while (building) {
          const seen = (await tagList(cluster.registry, "app")).filter((t) => tags.includes(t));
          samples.push({ tags: seen, pushed: pushedPlatforms() });
          await sleep(25);
        }
      })();
      try {
        first = await runBuild(
          cluster,
          imageBuild(cluster, { name: "app-1", tags }),
          undefined,
          BUILD_TIMEOUT,
        );
      } finally {
        building = false;
        await poll;
      }
      if (first.phase !== "Succeeded")
        throw new Error(`app-1 did not succeed:\n${await explain(cluster, "app-1")}`);
      samples.push({
        tags: (await tagList(cluster.registry, "app")).filter((t) => tags.includes(t)),
        pushed: ["amd64", "arm64"],
      });
    }, BUILD_TIMEOUT + 10_000);

    it("succeeds with status.digest naming an OCI index of exactly linux/amd64 and linux/arm64", async () => {
      expect(first.phase).toBe("Succeeded");
      expect(condition(first, "Succeeded")?.status).toBe("True");
      expect(first.image).toBe(`${cluster.registry.host}/app@${first.digest}`);
      const raw = await inspectRaw(
        cluster.registry,
        `${cluster.registry.host}/app@${first.digest}`,
      );
      expect(raw.digest).toBe(first.digest);
      expect(raw.json.mediaType).toBe("application/vnd.oci.image.index.v1+json");
      const platforms = (raw.json.manifests as { platform: { os: string; architecture: string } }[])
        .map((m) => `${m.platform.os}/${m.platform.architecture}`)
        .sort();
      expect(platforms).toEqual(["linux/amd64", "linux/arm64"]);
    });

    it("holds what each platform's RUN, COPY, ARG and secret mount made, uname -m per architecture", async () => {
      const index = await getManifest(cluster.registry, "app", first.digest!);
      for (const arch of ["amd64", "arm64"] as const) {
        const entry = index.manifests?.find((m) => m.platform?.architecture === arch);
        expect(entry, arch).toBeDefined();
        const file = (path: string) => imageFile(cluster.registry, "app", entry!.digest, path);
        expect({ arch, uname: await file("/arch") }).toEqual({ arch, uname: `${UNAME[arch]}\n` });
        expect(await file("/greeting")).toBe("built by buildfarm\n");
        expect(await file("/message.txt")).toBe("copied from the git context\n");
        expect(await file("/secret.sha256")).toBe(`${sha256(cluster.secretValue)}\n`);
      }
    });

    it("points every tag at the index, and no tag existed before both platforms had pushed", async () => {
      for (const tag of tags) {
        const raw = await inspectRaw(cluster.registry, `${cluster.registry.host}/app:${tag}`);
        expect({ tag, digest: raw.digest }).toEqual({ tag, digest: first.digest });
      }
      // The poll saw the tags absent and then present, so the ordering check below has teeth.
      expect(samples.some((s) => s.tags.length === 0)).toBe(true);
      expect(samples.some((s) => s.tags.length === tags.length)).toBe(true);
      const early = samples.filter((s) => s.tags.length > 0 && s.pushed.length < 2);
      expect(early).toEqual([]);
    });

    it("built each platform on a builder of a node of its architecture, as the builders' own build records say", async () => {
      const index = await getManifest(cluster.registry, "app", first.digest!);
      const built: Record<string, string[]> = {};
      const seen: string[] = [];
      for (const pod of builderPods(cluster)) {
        const arch = nodeArch(cluster, pod)!;
        const records = await histories(cluster, pod.metadata.name!);
        seen.push(
          `${pod.metadata.name} on ${arch}: ${JSON.stringify(records.map((r) => [r.Ref, r.FrontendAttrs?.platform, r.FrontendAttrs?.context, Boolean(r.CompletedAt)]))}`,
        );
        for (const record of records) {
          if (!record.FrontendAttrs?.context?.endsWith("#main:app")) continue;
          const platform = record.FrontendAttrs.platform ?? "";
          built[arch] = [...(built[arch] ?? []), platform];
          const pushed = index.manifests?.find(
            (m) => `${m.platform?.os}/${m.platform?.architecture}` === platform,
          );
          // The image in the index is the one this builder produced.
          expect(record.Result?.ResultDeprecated?.digest).toBe(pushed?.digest);
        }
      }
      expect(built, seen.join("\n")).toEqual({ amd64: ["linux/amd64"], arm64: ["linux/arm64"] });
    });
  });

  describe("cache-locality routing, with two amd64 builders", () => {
    /** Builds each amd64 builder's buildkitd has recorded, by pod name. */
    async function recorded(): Promise<Record<string, number>> {
      const counts: Record<string, number> = {};
      for (const pod of builderPods(cluster)) {
        if (pod.metadata.labels?.["buildfarm.dev/arch"] !== "amd64") continue;
        counts[pod.metadata.name!] = (await histories(cluster, pod.metadata.name!)).length;
      }
      return counts;
    }
    const scaleAmd64 = (replicas: number) =>
      cluster.kube.store.mutate("builderpools.buildfarm.dev", POOL_NAMESPACE, POOL, (draft) => {
        const spec = draft.spec as { architectures: { name: string; replicas: number }[] };
        for (const arch of spec.architectures) if (arch.name === "amd64") arch.replicas = replicas;
      });
    const readyAmd64 = () =>
      builderPods(cluster).filter(
        (pod) => pod.metadata.labels?.["buildfarm.dev/arch"] === "amd64" && isReady(pod),
      );

    afterAll(async () => {
      scaleAmd64(1);
      await cluster.kube.waitFor(
        () =>
          builderPods(cluster).filter((p) => p.metadata.labels?.["buildfarm.dev/arch"] === "amd64")
            .length === 1,
        { timeout: 60_000, message: "one amd64 builder again" },
      );
    });

    it(
      "sends two builds of the same repository to one builder pod, by its IP",
      async () => {
        scaleAmd64(2);
        await cluster.kube.waitFor(() => readyAmd64().length === 2, {
          timeout: 60_000,
          interval: 100,
          message: "two Ready amd64 builders",
        });
        const before = await recorded();
        const routed: string[] = [];
        for (const name of ["routed-1", "routed-2"]) {
          const status = await runBuild(
            cluster,
            imageBuild(cluster, { name, platforms: ["linux/amd64"] }),
            undefined,
            BUILD_TIMEOUT,
          );
          expect(status.phase, await explain(cluster, name)).toBe("Succeeded");
          const [amd64] = status.platforms ?? [];
          routed.push(amd64?.builderPod ?? "");
          expect(amd64?.builder).toMatch(/^tcp:\/\/10\.244\.\d+\.\d+:1234$/);
        }
        expect(routed[0]).toBe(routed[1]);
        const chosen = routed[0] as string;
        expect(Object.keys(before)).toContain(chosen);
        // From the builders' side: the chosen one's buildkitd solved both, the other none.
        const after = await recorded();
        const gained = Object.fromEntries(
          Object.entries(after).map(([pod, count]) => [pod, count - (before[pod] ?? 0)]),
        );
        expect(gained).toEqual(
          Object.fromEntries(Object.keys(after).map((pod) => [pod, pod === chosen ? 2 : 0])),
        );
        // And the network: every connection of those builds' pods went to that pod directly.
        const dialled = cluster.pods.connections.filter((c) => /\/routed-\d-amd64-/.test(c.from));
        expect(dialled.length).toBeGreaterThan(0);
        expect(new Set(dialled.map((c) => c.to))).toEqual(new Set([`${POOL_NAMESPACE}/${chosen}`]));
        expect(dialled.every((c) => c.refused === undefined)).toBe(true);
      },
      2 * BUILD_TIMEOUT,
    );
  });

  describe("spec.verify: the check runs in the pushed image before any tag", () => {
    it(
      "tags the index only after a passing check, run in that image by digest on an amd64 node",
      async () => {
        const image = `${cluster.registry.host}/checked`;
        const samples: { tags: string[]; checkEnded: boolean }[] = [];
        let building = true;
        const poll = (async () => {
          while (building) {
            const checkEnded = cluster.images.some(
              (run) => run.pod.startsWith("verified-1-verify-") && run.endMs !== undefined,
            );
            samples.push({ tags: await tagList(cluster.registry, "checked"), checkEnded });
            await sleep(25);
          }
        })();
        let status: BuildStatus;
        try {
          status = await runBuild(
            cluster,
            imageBuild(cluster, {
              name: "verified-1",
              image,
              tags: ["v1"],
              verify: {
                command: ["/bin/sh", "-c"],
                args: [
                  'test "$(cat /greeting)" = "built by buildfarm" && test "$(cat /arch)" = "$(uname -m)" && echo "verified $IMAGE"',
                ],
              },
            }),
            undefined,
            BUILD_TIMEOUT,
          );
        } finally {
          building = false;
          await poll;
        }
        expect(status.phase, await explain(cluster, "verified-1")).toBe("Succeeded");
        expect(status.verify).toMatchObject({
          phase: "Succeeded",
          image: `${image}@${status.digest}`,
          architecture: "amd64",
        });
        const [run] = cluster.images.filter((r) => r.pod.startsWith("verified-1-verify-"));
        const index = await getManifest(cluster.registry, "checked", status.digest!);
        const amd64 = index.manifests?.find((m) => m.platform?.architecture === "amd64");
        expect(run).toMatchObject({
          image: `${image}@${status.digest}`,
          manifest: amd64?.digest,
          architecture: "amd64",
          uid: 65532,
          exitCode: 0,
        });
        expect(run?.env.IMAGE).toBe(`${image}@${status.digest}`);
        expect(run?.output).toBe(`verified ${image}@${status.digest}\n`);
        // The tag points at the checked index, and appeared only after the check had ended.
        const tagged = await inspectRaw(cluster.registry, `${image}:v1`);
        expect(tagged.digest).toBe(status.digest);
        expect(samples.some((s) => s.tags.includes("v1"))).toBe(true);
        expect(samples.filter((s) => s.tags.includes("v1") && !s.checkEnded)).toEqual([]);
      },
      BUILD_TIMEOUT,
    );

    it(
      "fails with VerificationFailed and the check's words, leaving the index untagged",
      async () => {
        const image = `${cluster.registry.host}/unchecked`;
        const status = await runBuild(
          cluster,
          imageBuild(cluster, {
            name: "verified-2",
            platforms: ["linux/amd64"],
            image,
            tags: ["v1", "latest"],
            verify: {
              command: [
                "/bin/sh",
                "-c",
                'echo "greeting is $(cat /greeting), wanted hello" >&2; exit 4',
              ],
            },
          }),
          undefined,
          BUILD_TIMEOUT,
        );
        expect(status.phase, await explain(cluster, "verified-2")).toBe("Failed");
        expect(condition(status, "Succeeded")).toMatchObject({ reason: "VerificationFailed" });
        expect(condition(status, "Succeeded")?.message).toContain(
          "greeting is built by buildfarm, wanted hello",
        );
        expect(status.verify?.phase).toBe("Failed");
        expect(status.digest).toBeUndefined();
        // The index is in the registry by digest, checked and refused; no tag names it.
        const checked = status.verify?.image as string;
        expect((await inspectRaw(cluster.registry, checked)).digest).toBe(
          checked.slice(checked.indexOf("@") + 1),
        );
        // Its only tag is the registry cache's, which the build exports on its own.
        expect(await listTags(cluster.registry, image)).toEqual(["buildcache-amd64"]);
      },
      BUILD_TIMEOUT,
    );
  });

  describe("the registry cache", () => {
    /** Deletes every builder pod and waits for fresh ones, which have built nothing. */
    async function freshBuilders(): Promise<void> {
      for (const pod of await replaceBuilders(cluster))
        expect(await histories(cluster, pod.metadata.name!)).toEqual([]);
    }

    async function buildctlLogs(name: string): Promise<Record<string, string>> {
      const logs: Record<string, string> = {};
      for (const pod of buildPods(cluster, name)) {
        const platform = pod.metadata.labels?.["buildfarm.dev/platform"];
        if (platform)
          logs[platform] = await podLog(cluster, BUILD_NAMESPACE, pod.metadata.name!, "buildctl");
      }
      return logs;
    }

    it(
      "fresh builders rebuild the same revision with every RUN step CACHED, from the per-platform cache refs",
      async () => {
        await freshBuilders();
        const status = await runBuild(
          cluster,
          imageBuild(cluster, { name: "app-2", tags: ["v2"] }),
        );
        expect(status.phase, await explain(cluster, "app-2")).toBe("Succeeded");
        expect(condition(status, "CacheExported")?.status).toBe("True");
        const logs = await buildctlLogs("app-2");
        expect(Object.keys(logs).sort()).toEqual(["amd64", "arm64"]);
        for (const [arch, log] of Object.entries(logs)) {
          expect(log).toContain(
            `importing cache manifest from ${cluster.registry.host}/app:buildcache-${arch}`,
          );
          const steps = runSteps(log);
          expect(steps.length, log).toBe(2);
          expect({ arch, steps }).toEqual({
            arch,
            steps: steps.map((s) => ({ ...s, cached: true })),
          });
        }
        expect(await listTags(cluster.registry, `${cluster.registry.host}/app`)).toEqual(
          expect.arrayContaining(["buildcache-amd64", "buildcache-arm64"]),
        );
      },
      BUILD_TIMEOUT,
    );

    it(
      "imports from spec.cache.importFrom when the build's own cache ref is empty",
      async () => {
        await freshBuilders();
        const own = `${cluster.registry.host}/app:feature-cache`;
        const main = `${cluster.registry.host}/app:buildcache`;
        const status = await runBuild(
          cluster,
          imageBuild(cluster, { name: "app-3", cache: { ref: own, importFrom: [main] } }),
        );
        expect(status.phase, await explain(cluster, "app-3")).toBe("Succeeded");
        const logs = await buildctlLogs("app-3");
        expect(Object.keys(logs).sort()).toEqual(["amd64", "arm64"]);
        for (const [arch, log] of Object.entries(logs)) {
          expect(log).toContain(`importing cache manifest from ${main}-${arch}`);
          expect(log).toMatch(new RegExp(`${own}-${arch}: not found`));
          const steps = runSteps(log);
          expect(steps.length).toBe(2);
          expect(
            steps.every((s) => s.cached),
            log,
          ).toBe(true);
        }
      },
      BUILD_TIMEOUT,
    );
  });

  describe("a registry that refuses the cache export", () => {
    it(
      "ships the image anyway and reports CacheExported=False with the registry's words",
      async () => {
        const status = await runBuild(
          cluster,
          imageBuild(cluster, {
            name: "refused-1",
            platforms: ["linux/amd64"],
            image: `${cluster.refusing.host}/refused`,
            tags: ["v1"],
          }),
        );
        expect(status.phase, await explain(cluster, "refused-1")).toBe("Succeeded");
        const exported = condition(status, "CacheExported");
        expect(exported?.status).toBe("False");
        expect(exported?.message).toMatch(/403 Forbidden/);
        const refused = cluster.refusing.requests.filter((r) => r.status === 403);
        expect(refused.map((r) => r.path)).toContain("/v2/refused/manifests/buildcache-amd64");
        const raw = await inspectRaw(cluster.registry, `${cluster.registry.host}/refused:v1`);
        expect(raw.digest).toBe(status.digest);
      },
      BUILD_TIMEOUT,
    );

    it(
      "fails the build with failOnExportError: true",
      async () => {
        const status = await runBuild(
          cluster,
          imageBuild(cluster, {
            name: "refused-2",
            platforms: ["linux/amd64"],
            image: `${cluster.refusing.host}/refused-strict`,
            tags: ["v1"],
            cache: { failOnExportError: true },
          }),
        );
        expect(status.phase, await explain(cluster, "refused-2")).toBe("Failed");
        const amd64 = status.platforms?.find((p) => p.platform === "linux/amd64");
        expect(amd64?.message).toMatch(/403 Forbidden/);
        expect(await listTags(cluster.registry, `${cluster.registry.host}/refused-strict`)).toEqual(
          [],
        );
      },
      BUILD_TIMEOUT,
    );
  });

  describe("access to the builders", () => {
    /**
     * A pod running real buildctl against the amd64 builder Service with a client Secret; with
     * `labels`, the labels of the pool's build pods, which its NetworkPolicy admits.
     */
    function buildctlPod(name: string, secret: string, labels: boolean): KubeObject {
      const host = `${POOL}-amd64.${POOL_NAMESPACE}.svc`;
      return {
        apiVersion: "v1",
        kind: "Pod",
        metadata: {
          name,
          namespace: BUILD_NAMESPACE,
          labels: labels ? buildPodLabels(name, POOL, POOL_NAMESPACE, COMPONENTS.build) : {},
        },
        spec: {
          restartPolicy: "Never",
          securityContext: { runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000 },
          containers: [
            {
              name: "buildctl",
              image: "moby/buildkit:v0.24.0-rootless",
              command: ["buildctl"],
              args: [
                ...["--addr", `tcp://${host}:1234`, "--tlsservername", host],
                ...["--tlscacert", "/certs/ca.crt", "--tlscert", "/certs/tls.crt"],
                ...["--tlskey", "/certs/tls.key", "debug", "workers"],
              ],
              volumeMounts: [{ name: "certs", mountPath: "/certs", readOnly: true }],
            },
          ],
          volumes: [{ name: "certs", secret: { secretName: secret, defaultMode: 0o440 } }],
        },
      } as KubeObject;
    }

    async function clientSecret(name: string, issuerPool: string): Promise<void> {
      const store = cluster.kube.store;
      const caOf = (pool: string) =>
        store.get<KubeObject & { data?: Record<string, string> }>(
          "secrets",
          POOL_NAMESPACE,
          `${pool}-buildkit-ca`,
        );
      const issuer = await cluster.kube.waitFor(() => caOf(issuerPool), { timeout: 30_000 });
      const issued = await issueClientCertificate(readCaSecret(issuer.data), {
        commonName: `${BUILD_NAMESPACE}/${name}`,
        now: new Date(),
      });
      store.create("secrets", {
        metadata: { name, namespace: BUILD_NAMESPACE },
        type: "kubernetes.io/tls",
        // The server is verified against the farm's CA either way; only the client cert differs.
        data: { ...tlsSecretData(issued), "ca.crt": caOf(POOL)!.data!["ca.crt"]! },
      } as KubeObject);
    }

    const finished = (name: string) =>
      cluster.kube.waitFor(
        () => {
          const pod = cluster.kube.store.get<KubeObject & { status?: { phase?: string } }>(
            "pods",
            BUILD_NAMESPACE,
            name,
          );
          return ["Succeeded", "Failed"].includes(pod?.status?.phase ?? "") && pod!.status!.phase;
        },
        { timeout: 60_000, interval: 100 },
      );

    const logOf = (pod: string) => podLog(cluster, BUILD_NAMESPACE, pod, "buildctl");

    beforeAll(async () => {
      cluster.kube.store.create("builderpools.buildfarm.dev", {
        apiVersion: "buildfarm.dev/v1alpha1",
        kind: "BuilderPool",
        metadata: { name: "other", namespace: POOL_NAMESPACE },
        spec: { architectures: [{ name: "amd64", replicas: 0 }] },
      } as KubeObject);
      await clientSecret("insider", POOL);
      await clientSecret("impostor", "other");
    });

    it(
      "mTLS: the builder refuses buildctl with a client certificate from another pool's CA",
      async () => {
        // Both carry the build pods' labels, so the NetworkPolicy lets both through: labels are
        // no authentication, the certificate is.
        cluster.kube.store.create("pods", buildctlPod("insider", "insider", true));
        cluster.kube.store.create("pods", buildctlPod("impostor", "impostor", true));
        expect(await finished("insider"), await logOf("insider")).toBe("Succeeded");
        expect(await logOf("insider")).toMatch(/linux\/amd64/);
        expect(await finished("impostor")).toBe("Failed");
        expect(await logOf("impostor")).toMatch(/failed to list workers/);
        const reached = cluster.pods.connections.filter((c) => c.from.endsWith("/impostor"));
        expect(reached.length).toBeGreaterThan(0);
        expect(reached.every((c) => c.pod?.startsWith(`${POOL}-amd64-`) && !c.refused)).toBe(true);
      },
      BUILD_TIMEOUT,
    );

    it(
      "the pool's NetworkPolicy keeps out a pod without the build labels, whatever its certificate",
      async () => {
        cluster.kube.store.create("pods", buildctlPod("outsider", "insider", false));
        expect(await finished("outsider")).toBe("Failed");
        expect(await logOf("outsider")).toMatch(/failed to list workers/);
        const tried = cluster.pods.connections.filter((c) => c.from.endsWith("/outsider"));
        expect(tried.length).toBeGreaterThan(0);
        expect(tried.every((c) => c.refused === "no NetworkPolicy admits it")).toBe(true);
      },
      BUILD_TIMEOUT,
    );
  });

  describe("a RUN that exits 3", () => {
    it(
      "fails its platform with buildctl's log, stops the sibling, and tags nothing",
      async () => {
        const status = await runBuild(
          cluster,
          imageBuild(cluster, {
            name: "broken",
            revision: "fail",
            image: `${cluster.registry.host}/broken`,
            tags: ["v1"],
          }),
          ["Failed", "Succeeded"],
          120_000,
        );
        expect(status.phase).toBe("Failed");
        const amd64 = status.platforms?.find((p) => p.platform === "linux/amd64");
        const arm64 = status.platforms?.find((p) => p.platform === "linux/arm64");
        expect(amd64?.phase).toBe("Failed");
        expect(amd64?.message).toMatch(/failing on purpose on amd64/);
        expect(amd64?.message).toMatch(/exit code: 3/);
        expect(arm64?.phase).toBe("Cancelled");
        // The sibling's Job and pod go, and its builder ends the solve (the client went away).
        await cluster.kube.waitFor(
          () =>
            buildPods(cluster, "broken").every(
              (p) => !p.metadata.labels?.["buildfarm.dev/platform"]?.includes("arm64"),
            ),
          {
            timeout: 30_000,
            interval: 100,
            message: "the arm64 pod of the failed build going away",
          },
        );
        const arm64Builder = builderPods(cluster).find(
          (pod) => nodeArch(cluster, pod) === "arm64",
        )!;
        const record = await cluster.kube.waitFor(
          async () =>
            (await histories(cluster, arm64Builder.metadata.name!)).find(
              (r) => r.FrontendAttrs?.context?.endsWith("#fail:app") && r.CompletedAt,
            ),
          { timeout: 30_000, interval: 250, message: "the arm64 builder's record of the build" },
        );
        expect(record.error?.message).toMatch(/cancel/);
        expect(await listTags(cluster.registry, `${cluster.registry.host}/broken`)).toEqual([]);
      },
      BUILD_TIMEOUT,
    );
  });

  describe("build secrets", () => {
    it("leave their value in no blob of the pushed images or the cache", async () => {
      await waitForBuild(cluster, "app-1", ["Succeeded"]);
      const blobs = await everyBlob(cluster.registry);
      const needle = Buffer.from(cluster.secretValue);
      const leaks = blobs
        .filter((blob) => blob.contents.some((bytes) => bytes.includes(needle)))
        .map((blob) => blob.digest);
      expect(leaks).toEqual([]);
      // The scan reads layer contents: the secret's digest, written by the RUN, is found.
      const proof = Buffer.from(sha256(cluster.secretValue));
      expect(blobs.some((blob) => blob.contents.some((bytes) => bytes.includes(proof)))).toBe(true);
      // Images, attestations-free manifests, configs and cache blobs: dozens, not a handful.
      expect(blobs.length).toBeGreaterThan(20);
    });
  });
});
