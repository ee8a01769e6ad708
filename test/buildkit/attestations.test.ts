// spec.attestations with real BuildKit (issue 21): a two-platform ImageBuild asking for SLSA
// provenance goes from CR to a tagged index through the real buildkitd, buildctl and
// `buildfarm assemble`, with spec.verify in between. The attestation manifests are read back
// from the registry, not taken from the operator's word. SBOM is not built here: BuildKit runs
// the scanner image (docker/buildkit-syft-scanner), which cannot be pulled on a machine without
// Docker Hub; its argv and the flattening of an SBOM attestation index are tested in
// test/imagebuild/supply-chain.test.ts and test/registry/assemble.test.ts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KubeObject } from "../kube/index.ts";
import { getBlob, getManifest, tagList } from "../local-cluster/index.ts";
import { inspectRaw } from "../support/registry.ts";
import { imageBuild, type RealCluster, realClusterInputs, startRealCluster } from "./cluster.ts";
import { type BuildStatus, buildPods, explain, runBuild, sleep, waitForBuilders } from "./steps.ts";

const SUITE = "spec.attestations with real BuildKit (test/buildkit/attestations)";
const { tools, debs } = (await realClusterInputs(SUITE)) ?? {};

const BUILD_TIMEOUT = 240_000;
const PROVENANCE = "https://slsa.dev/provenance/v0.2";

interface IndexEntry {
  mediaType: string;
  digest: string;
  platform?: { os: string; architecture: string };
  annotations?: Record<string, string>;
}

interface Statement {
  _type: string;
  predicateType: string;
  subject: { name: string; digest: { sha256: string } }[];
  predicate: {
    buildType?: string;
    invocation?: {
      configSource?: { uri?: string };
      parameters?: { args?: Record<string, string>; frontend?: string; secrets?: unknown[] };
      environment?: { platform?: string };
    };
    buildConfig?: unknown;
    materials?: { uri: string }[];
  };
}

describe.skipIf(!tools || !debs)(SUITE, () => {
  let cluster: RealCluster;
  let status: BuildStatus;
  let index: { mediaType?: string; manifests?: IndexEntry[] };
  const image = () => `${cluster.registry.host}/attested`;
  /** Tag-list samples during the build, with whether the verify Job's pod had finished. */
  const samples: { tags: string[]; verified: boolean }[] = [];

  beforeAll(async () => {
    cluster = await startRealCluster(tools!, debs!);
    await waitForBuilders(cluster);
    const object = imageBuild(cluster, {
      name: "attested-1",
      image: image(),
      tags: ["v1"],
      verify: { command: ["/bin/sh", "-c", 'test "$(cat /greeting)" = "built by buildfarm"'] },
    }) as KubeObject & { spec: Record<string, unknown> };
    object.spec.attestations = { provenance: { mode: "max" } };
    let building = true;
    const poll = (async () => {
      while (building) {
        const verified = cluster.images.some(
          (run) => run.pod.startsWith("attested-1-verify-") && run.endMs !== undefined,
        );
        samples.push({ tags: await tagList(cluster.registry, "attested"), verified });
        await sleep(25);
      }
    })();
    try {
      status = await runBuild(cluster, object, undefined, BUILD_TIMEOUT);
    } finally {
      building = false;
      await poll;
    }
    if (status.phase !== "Succeeded")
      throw new Error(`attested-1 did not succeed:\n${await explain(cluster, "attested-1")}`);
    index = await getManifest(cluster.registry, "attested", status.digest!);
  }, BUILD_TIMEOUT + 130_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it("passes BuildKit attest:provenance=mode=max on both platforms' buildctl", () => {
    const jobs = cluster.kube.store
      .objects<
        KubeObject & { spec: { template: { spec: { initContainers: { args: string[] }[] } } } }
      >("jobs.batch", "apps")
      .filter((job) => /^attested-1-(amd64|arm64)$/.test(job.metadata.name ?? ""));
    expect(jobs).toHaveLength(2);
    for (const job of jobs) {
      const argv = job.spec.template.spec.initContainers[0]?.args ?? [];
      const at = argv.indexOf("attest:provenance=mode=max");
      expect(at, job.metadata.name).toBeGreaterThan(0);
      expect(argv[at - 1]).toBe("--opt");
    }
    // Each platform pushed an attestation index of its own, which assemble flattened.
    expect(status.platforms?.map((p) => p.digest)).toHaveLength(2);
    expect(buildPods(cluster, "attested-1").length).toBeGreaterThanOrEqual(2);
  });

  it("pushes an OCI index of both images plus an unknown/unknown attestation manifest for each", () => {
    expect(index.mediaType).toBe("application/vnd.oci.image.index.v1+json");
    const manifests = index.manifests ?? [];
    const images = manifests.filter((m) => m.platform?.os === "linux");
    const attestations = manifests.filter((m) => m.platform?.os === "unknown");
    expect(images.map((m) => m.platform?.architecture).sort()).toEqual(["amd64", "arm64"]);
    expect(attestations).toHaveLength(2);
    expect(manifests).toHaveLength(4);
    for (const attestation of attestations) {
      expect(attestation.platform).toEqual({ architecture: "unknown", os: "unknown" });
      expect(attestation.annotations?.["vnd.docker.reference.type"]).toBe("attestation-manifest");
    }
    // Each image has exactly one attestation pointing at it.
    expect(attestations.map((a) => a.annotations?.["vnd.docker.reference.digest"]).sort()).toEqual(
      images.map((m) => m.digest).sort(),
    );
  });

  it("holds in each attestation manifest a SLSA provenance statement about that platform's image, mode=max", async () => {
    const manifests = index.manifests ?? [];
    const imageOf = (digest: string) => manifests.find((m) => m.digest === digest);
    const attestations = manifests.filter((m) => m.platform?.os === "unknown");
    expect(attestations).toHaveLength(2);
    for (const attestation of attestations) {
      const subject = attestation.annotations?.["vnd.docker.reference.digest"] as string;
      const arch = imageOf(subject)?.platform?.architecture;
      const manifest = (await getManifest(cluster.registry, "attested", attestation.digest)) as {
        layers?: { digest: string; mediaType: string; annotations?: Record<string, string> }[];
      };
      const layers = manifest.layers ?? [];
      expect(layers.map((l) => l.annotations?.["in-toto.io/predicate-type"])).toEqual([PROVENANCE]);
      expect(layers[0]?.mediaType).toBe("application/vnd.in-toto+json");
      const statement = JSON.parse(
        (await getBlob(cluster.registry, "attested", layers[0]!.digest)).toString("utf8"),
      ) as Statement;
      expect(statement.predicateType).toBe(PROVENANCE);
      expect(statement.subject.map((s) => `sha256:${s.digest.sha256}`)).toEqual([subject]);
      expect(["amd64", "arm64"]).toContain(arch);
      // What was built: the git context the operator passed, and the build secret by id only.
      expect(statement.predicate.invocation?.configSource?.uri).toBe(`${cluster.git.url}#main:app`);
      expect(statement.predicate.invocation?.parameters?.secrets).toContainEqual({ id: "token" });
      expect(JSON.stringify(statement)).not.toContain(cluster.secretValue);
      // environment.platform is the builder's own: here every builder is an amd64 process (the
      // arm64 one runs arm64 steps under QEMU); on a native arm64 node it says linux/arm64.
      expect(statement.predicate.invocation?.environment?.platform).toBe("linux/amd64");
      // mode=max records the build arguments and the build definition.
      expect(statement.predicate.invocation?.parameters?.args?.["build-arg:GREETING"]).toBe(
        "built by buildfarm",
      );
      expect(statement.predicate.buildConfig).toBeDefined();
      // The base image is among the materials, by the digest it was pulled at.
      expect(
        statement.predicate.materials?.some((m) => m.uri.includes("base")),
        JSON.stringify(statement.predicate.materials),
      ).toBe(true);
    }
  });

  it("lists the attestations in status, as assemble read them", () => {
    const attestations = (index.manifests ?? []).filter((m) => m.platform?.os === "unknown");
    const architectureOf = (digest: string) =>
      index.manifests?.find((m) => m.digest === digest)?.platform?.architecture;
    const listed = (
      status as BuildStatus & {
        attestations?: { platform: string; digest: string; predicateTypes: string[] }[];
      }
    ).attestations;
    expect(listed).toHaveLength(2);
    expect([...(listed ?? [])].sort((a, b) => a.platform.localeCompare(b.platform))).toEqual(
      attestations
        .map((a) => ({
          platform: `linux/${architectureOf(a.annotations?.["vnd.docker.reference.digest"] ?? "")}`,
          digest: a.digest,
          predicateTypes: [PROVENANCE],
        }))
        .sort((a, b) => a.platform.localeCompare(b.platform)),
    );
  });

  it("checks and tags that same index: v1 appears only after the check, on the checked digest", async () => {
    expect(status.verify).toMatchObject({
      phase: "Succeeded",
      image: `${image()}@${status.digest}`,
      architecture: "amd64",
    });
    const [run] = cluster.images.filter((r) => r.pod.startsWith("attested-1-verify-"));
    const amd64 = index.manifests?.find(
      (m) => m.platform?.os === "linux" && m.platform.architecture === "amd64",
    );
    expect(run).toMatchObject({ manifest: amd64?.digest, exitCode: 0 });
    // The checked and tagged digest is the index with the attestations in it.
    const tagged = await inspectRaw(cluster.registry, `${image()}:v1`);
    expect(tagged.digest).toBe(status.digest);
    expect((tagged.json.manifests as IndexEntry[]).map((m) => m.digest).sort()).toEqual(
      (index.manifests ?? []).map((m) => m.digest).sort(),
    );
    expect(index.manifests?.filter((m) => m.platform?.os === "unknown")).toHaveLength(2);
    expect(samples.some((s) => s.tags.includes("v1"))).toBe(true);
    expect(samples.filter((s) => s.tags.includes("v1") && !s.verified)).toEqual([]);
  });
});
