// spec.verify with the real operator against test/kube: the index is pushed by digest without
// tags, the check runs in the built image by that digest on a node of a built architecture,
// and the tags are applied (by a second assemble that refuses any other index) only after it
// passed. The player plays the check from what the verify pod was given.
import type { CoreV1Event, KubernetesObject } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RESOURCES } from "../../src/runtime/client.ts";
import { type BuildCluster, condition, IMAGE, NS, phaseIs, startBuildCluster } from "./cluster.ts";
import { writesOf } from "./measure.ts";
import { digestOf, indexDigestOf } from "./player.ts";

let cluster: BuildCluster;
beforeAll(async () => {
  cluster = await startBuildCluster();
});
afterAll(() => cluster?.stop());

const indexDigest = (build: string) =>
  indexDigestOf([digestOf(`${build}-amd64`), digestOf(`${build}-arm64`)]);

const VERIFY = {
  command: ["/app/selftest"],
  args: ["--against", "$(IMAGE)"],
  env: [{ name: "LEVEL", value: "smoke" }],
  timeout: "2m",
};

async function eventsOf(name: string): Promise<CoreV1Event[]> {
  await cluster.operator.manager.events.flush();
  const { items } = await cluster.client.list<CoreV1Event & KubernetesObject>(RESOURCES.event, NS);
  return items.filter((event) => event.involvedObject.name === name);
}

/** The assemble runs of a build's index or tag Job, with their args. */
const assembles = (build: string, job: "index" | "tag") =>
  cluster.player.played.filter((p) => p.job === `${build}-${job}` && p.container === "assemble");

describe("a build whose check passes", () => {
  let build: Awaited<ReturnType<BuildCluster["getBuild"]>>;
  let writes: ReturnType<typeof writesOf>;

  beforeAll(async () => {
    const mark = cluster.kube.requestLog.mark();
    await cluster.createBuild("checked", { verify: VERIFY });
    build = await cluster.waitForBuild("checked", phaseIs("Succeeded", "Failed"));
    await cluster.operator.manager.events.flush();
    writes = writesOf(cluster.kube.requestLog.since(mark), "checked");
  });

  it("succeeds with the checked index's digest, moving Assembling → Verifying → Succeeded", () => {
    expect(build?.status).toMatchObject({
      phase: "Succeeded",
      digest: indexDigest("checked"),
      image: `${IMAGE}@${indexDigest("checked")}`,
      verify: {
        phase: "Succeeded",
        image: `${IMAGE}@${indexDigest("checked")}`,
        job: "checked-verify",
        architecture: "amd64",
        message: "the check passed",
      },
    });
    const phases = cluster
      .statuses("checked")
      .map((s) => s.phase)
      .filter((p, i, all) => p !== all[i - 1]);
    expect(phases).toEqual(["Building", "Assembling", "Verifying", "Succeeded"]);
    // While verifying and tagging, status.digest is not there yet: it means "shipped".
    for (const status of cluster.statuses("checked").filter((s) => s.phase === "Verifying"))
      expect(status.digest).toBeUndefined();
  });

  it("pushed the index without tags, and tagged it only after the check had finished", () => {
    const [index] = assembles("checked", "index");
    expect(index?.args).not.toContain("--tag");
    const [tag] = assembles("checked", "tag");
    expect(tag?.args).toEqual(
      expect.arrayContaining(["--tag", "latest", "--expect-digest", indexDigest("checked")]),
    );
    const [check] = cluster.player.checked.filter((c) => c.job === "checked-verify");
    const indexEnded = cluster.player.ended.get(`${index?.pod}/assemble`) as number;
    expect(check?.startedAt).toBeGreaterThanOrEqual(indexEnded);
    expect(tag?.at).toBeGreaterThanOrEqual(check?.endedAt as number);
  });

  it("ran the check in the built image by digest, on an amd64 node, with IMAGE and its env", () => {
    const checks = cluster.player.checked.filter((c) => c.job === "checked-verify");
    expect(checks).toHaveLength(1);
    const [check] = checks;
    const image = `${IMAGE}@${indexDigest("checked")}`;
    expect(check).toMatchObject({
      node: "amd-1",
      image,
      command: ["/app/selftest"],
      // $(IMAGE) is expanded by the kubelet from the container's env, as in a cluster.
      args: ["--against", image],
    });
    expect(check?.env).toMatchObject({ IMAGE: image, LEVEL: "smoke", TMPDIR: "/tmp" });
  });

  it("records Verifying, Verified and Succeeded Events", async () => {
    const reasons = (await eventsOf("checked")).map((e) => `${e.type}/${e.reason}`);
    expect(reasons).toEqual(
      expect.arrayContaining(["Normal/Verifying", "Normal/Verified", "Normal/Succeeded"]),
    );
  });

  it("costs two more creates (verify and tag Jobs) and two more status writes than a plain build", () => {
    expect(writes.creates).toEqual({ secrets: 1, jobs: 5 });
    expect(writes.failed).toBe(0);
    expect(writes.deletes).toBe(0);
    // 6 creates and 6 status writes: Building, a platform, Assembling, Verifying, Tagging,
    // Succeeded (one fewer when the platforms finish together).
    expect(writes.statusWrites).toBeGreaterThanOrEqual(5);
    expect(writes.statusWrites).toBeLessThanOrEqual(6);
    expect(writes.total).toBe(6 + writes.statusWrites);
  });
});

describe("a build whose check fails", () => {
  it("fails with VerificationFailed and the check's log tail, and tags nothing", async () => {
    cluster.player.check("refused-verify", {
      kind: "fail",
      log: "checking /healthz\nFAIL: /healthz answered 503 Service Unavailable\n",
      exitCode: 3,
    });
    await cluster.createBuild("refused", { verify: VERIFY });
    const build = await cluster.waitForBuild("refused", phaseIs("Succeeded", "Failed"));
    expect(build.status?.phase).toBe("Failed");
    expect(condition(build, "Succeeded")).toMatchObject({
      status: "False",
      reason: "VerificationFailed",
    });
    expect(condition(build, "Stalled")?.status).toBe("True");
    expect(condition(build, "Succeeded")?.message).toContain(
      "FAIL: /healthz answered 503 Service Unavailable",
    );
    expect(build.status?.verify).toMatchObject({
      phase: "Failed",
      image: `${IMAGE}@${indexDigest("refused")}`,
      message: "checking /healthz\nFAIL: /healthz answered 503 Service Unavailable",
    });
    expect(build.status?.digest).toBeUndefined();
    expect(build.status?.image).toBeUndefined();
    // Nothing tagged: no tag Job, and the only assemble ran without --tag.
    expect(cluster.jobNames().filter((name) => name.startsWith("refused-"))).toEqual([
      "refused-amd64",
      "refused-arm64",
      "refused-index",
      "refused-verify",
    ]);
    expect(assembles("refused", "index").every((p) => !p.args.includes("--tag"))).toBe(true);
    const events = (await eventsOf("refused")).map((e) => `${e.type}/${e.reason}`);
    expect(events).toContain("Warning/VerificationFailed");
  });

  it("fails with VerificationFailed when the check outlives spec.verify.timeout", async () => {
    cluster.player.check("slow-verify", { kind: "hang" });
    // timeScale 0.01: 100 s of deadline pass in one second.
    await cluster.createBuild("slow", { verify: { ...VERIFY, timeout: "100s" } });
    const build = await cluster.waitForBuild("slow", phaseIs("Succeeded", "Failed"));
    expect(condition(build, "Succeeded")).toMatchObject({ reason: "VerificationFailed" });
    expect(build.status?.verify?.message).toMatch(
      /^did not finish within 100s \(spec.verify.timeout\); Job slow-verify was stopped/,
    );
    expect(cluster.jobNames()).not.toContain("slow-tag");
  });
});

describe("an operator killed between two of its writes for a checked build", () => {
  it("resumes after being killed before each one, creating no Job twice and checking once", async () => {
    const mark = cluster.kube.requestLog.mark();
    await cluster.createBuild("steady", { verify: VERIFY });
    await cluster.waitForBuild("steady", phaseIs("Succeeded"));
    const writes = writesOf(cluster.kube.requestLog.since(mark), "steady").total;
    expect(writes).toBeGreaterThanOrEqual(9);
    let crashes = 0;
    for (let n = 0; n < writes; n++) {
      const build = `vcrash-${n}`;
      cluster.crashBeforeWrite(build, n);
      await cluster.createBuild(build, { verify: VERIFY });
      const first = await Promise.race([
        cluster.operator.crashed.then(() => "crashed" as const),
        cluster.waitForBuild(build, phaseIs("Succeeded", "Failed")).then(() => "done" as const),
      ]);
      if (first === "crashed") crashes++;
      await cluster.restart();
      const done = await cluster.waitForBuild(build, phaseIs("Succeeded", "Failed"));
      expect(done.status?.phase, build).toBe("Succeeded");
      expect(done.status?.digest, build).toBe(indexDigest(build));
      for (const job of ["amd64", "arm64", "index", "verify", "tag"])
        expect(cluster.jobsCreated.get(`${build}-${job}`), `${build}-${job}`).toBe(1);
      expect(cluster.player.checked.filter((c) => c.job === `${build}-verify`)).toHaveLength(1);
    }
    expect(crashes).toBeGreaterThanOrEqual(writes - 1);
  });
});

describe("the operator", () => {
  it("left no reconcile error in its log", () => {
    const errors = cluster.operator.logs.filter((line) => line.level === "error");
    expect(errors).toEqual([]);
  });
});
