// Cache-locality routing on a cluster whose DNS is kube-dns (GKE Standard's default), with real
// BuildKit: kube-dns names a headless Service's pods that have no hostname by a hash, so the
// `<ip-with-dashes>.<headless>.<ns>.svc` name CoreDNS would answer is NXDOMAIN there. A routed
// build must still reach the builder pod it was routed to: buildctl dials that pod's IP (no
// name to look up) and checks the builder's real server certificate against the Service's name.
// Its own cluster (two amd64 builders), since test/buildkit/imagebuild.test.ts's runs CoreDNS.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Arch, busyboxDebs } from "../local-cluster/index.ts";
import { buildkitOrSkip } from "../support/buildkit.ts";
import { imageBuild, POOL, POOL_NAMESPACE, type RealCluster, startRealCluster } from "./cluster.ts";
import { builderPods, explain, histories, isReady, runBuild } from "./steps.ts";

const SUITE = "routing by pod IP under kube-dns (test/buildkit)";
const tools = buildkitOrSkip(SUITE, { arm64: true, root: true });
let debs: Record<Arch, string> | undefined;
if (tools) {
  const found = await busyboxDebs();
  if (typeof found === "string") {
    const ci = process.env.CI;
    if (ci && ci !== "false" && ci !== "0") throw new Error(`CI is set and ${SUITE}: ${found}`);
    process.stderr.write(`skipping ${SUITE}: ${found}\n`);
  } else debs = found;
}

const BUILD_TIMEOUT = 240_000;

describe.skipIf(!tools || !debs)(SUITE, () => {
  let cluster: RealCluster;
  const amd64 = () =>
    builderPods(cluster).filter(
      (pod) => pod.metadata.labels?.["buildfarm.dev/arch"] === "amd64" && isReady(pod),
    );

  beforeAll(async () => {
    cluster = await startRealCluster(tools!, debs!, {
      replicas: { amd64: 2, arm64: 1 },
      clusterDns: "kube-dns",
    });
    await cluster.kube.waitFor(() => amd64().length === 2, {
      timeout: 90_000,
      interval: 100,
      message: "two Ready amd64 builders",
    });
  }, 120_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it(
    "reaches the chosen builder pod by its IP, verified with the Service's name, no name looked up",
    async () => {
      const before = Object.fromEntries(
        await Promise.all(
          amd64().map(async (pod) => [
            pod.metadata.name!,
            (await histories(cluster, pod.metadata.name!)).length,
          ]),
        ),
      ) as Record<string, number>;
      const status = await runBuild(
        cluster,
        imageBuild(cluster, { name: "by-ip", platforms: ["linux/amd64"] }),
        undefined,
        BUILD_TIMEOUT,
      );
      expect(status.phase, await explain(cluster, "by-ip")).toBe("Succeeded");
      const [platform] = status.platforms ?? [];
      const chosen = platform?.builderPod as string;
      expect(Object.keys(before)).toContain(chosen);
      const chosenPod = amd64().find((pod) => pod.metadata.name === chosen);
      const ip = (chosenPod as { status?: { podIP?: string } } | undefined)?.status?.podIP;
      expect(ip).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
      expect(platform?.builder).toBe(`tcp://${ip}:1234`);

      // The Job's buildctl: the IP, and a TLS server name the builders' certificate carries.
      const job = cluster.kube.store.get("jobs.batch", "apps", "by-ip-amd64") as
        | { spec?: { template: { spec?: { initContainers?: { args?: string[] }[] } } } }
        | undefined;
      const args = job?.spec?.template.spec?.initContainers?.[0]?.args ?? [];
      expect(args[args.indexOf("--addr") + 1]).toBe(`tcp://${ip}:1234`);
      expect(args[args.indexOf("--tlsservername") + 1]).toBe(`${POOL}-amd64.${POOL_NAMESPACE}.svc`);

      // The network: every connection of the build's pod dialled that IP and reached that pod.
      const dialled = cluster.pods.connections.filter((c) => /\/by-ip-amd64-/.test(c.from));
      expect(dialled.length).toBeGreaterThan(0);
      expect(new Set(dialled.map((c) => `${c.dialled} -> ${c.pod ?? c.refused}`))).toEqual(
        new Set([`${ip} -> ${chosen}`]),
      );

      // And the builders' side: the chosen buildkitd solved it, the other did not.
      for (const [pod, count] of Object.entries(before))
        expect((await histories(cluster, pod)).length - count, pod).toBe(pod === chosen ? 1 : 0);
    },
    BUILD_TIMEOUT + 30_000,
  );
});
