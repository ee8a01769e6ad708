// Restart safety with the real operator: the process is killed right before one of its
// writes for a build (so after admission, after the client Secret, after the first Job, after
// the Jobs finished, after the index Job was created, after it finished: between every pair
// of steps), a new process starts with empty caches, and the build still completes with every
// digest, while no Job is ever created twice.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BuildCluster, IMAGE, phaseIs, startBuildCluster } from "./cluster.ts";
import { writesOf } from "./measure.ts";
import { digestOf, indexDigestOf } from "./player.ts";

let cluster: BuildCluster;

beforeAll(async () => {
  cluster = await startBuildCluster();
});
afterAll(() => cluster?.stop());

async function expectComplete(build: string) {
  const done = await cluster.waitForBuild(build, phaseIs("Succeeded", "Failed"));
  const digest = indexDigestOf([digestOf(`${build}-amd64`), digestOf(`${build}-arm64`)]);
  expect(done.status?.phase, build).toBe("Succeeded");
  expect(done.status?.digest, build).toBe(digest);
  expect(done.status?.image, build).toBe(`${IMAGE}@${digest}`);
  expect(
    done.status?.platforms?.map((p) => [p.phase, p.digest]),
    build,
  ).toEqual([
    ["Succeeded", digestOf(`${build}-amd64`)],
    ["Succeeded", digestOf(`${build}-arm64`)],
  ]);
  for (const job of ["amd64", "arm64", "index"])
    expect(cluster.jobsCreated.get(`${build}-${job}`), `${build}-${job}`).toBe(1);
  // The built image ran once per platform: nothing was built twice.
  const runs = cluster.player.played.filter(
    (p) => p.container === "buildctl" && p.job.startsWith(`${build}-`),
  );
  expect(runs.map((p) => p.job).sort(), build).toEqual([`${build}-amd64`, `${build}-arm64`]);
  return done;
}

describe("an operator killed between two of its writes", () => {
  let writes = 0;

  it("writes a known number of times for a build it is not interrupted in", async () => {
    const mark = cluster.kube.requestLog.mark();
    await cluster.createBuild("calm");
    await expectComplete("calm");
    writes = writesOf(cluster.kube.requestLog.since(mark), "calm").total;
    // 4 creates and 3 or 4 status writes (controller.test.ts pins the happy path's 8).
    expect(writes).toBeGreaterThanOrEqual(7);
    expect(writes).toBeLessThanOrEqual(8);
  });

  it("resumes after being killed before each one of them, creating nothing twice", async () => {
    let crashes = 0;
    for (let n = 0; n < writes; n++) {
      const build = `crash-${n}`;
      cluster.crashBeforeWrite(build, n);
      await cluster.createBuild(build);
      const first = await Promise.race([
        cluster.operator.crashed.then(() => "crashed" as const),
        cluster.waitForBuild(build, phaseIs("Succeeded", "Failed")).then(() => "done" as const),
      ]);
      if (first === "crashed") crashes++;
      await cluster.restart();
      await expectComplete(build);
    }
    // Write counts vary a little with timing (progress may ride along); nearly every point hit.
    expect(crashes).toBeGreaterThanOrEqual(writes - 1);
  });

  it("completes a build when every process dies after one write", async () => {
    const build = "relay";
    let processes = 0;
    await cluster.createBuild(build);
    for (;;) {
      cluster.crashBeforeWrite(build, 1);
      processes++;
      const first = await Promise.race([
        cluster.operator.crashed.then(() => "crashed" as const),
        cluster.waitForBuild(build, phaseIs("Succeeded", "Failed")).then(() => "done" as const),
      ]);
      if (first === "done") break;
      await cluster.restart();
      expect(processes).toBeLessThan(20);
    }
    await expectComplete(build);
    // Five writes are the fewest a relay can need: the client Secret, two Jobs, the index Job
    // and the final status, when each Job finishes before the next process reconciles (the
    // intermediate statuses are then never seen). Usually it takes 6 to 8.
    expect(processes).toBeGreaterThanOrEqual(5);
  });

  it("finds its running Jobs after a restart and lets them finish", async () => {
    cluster.player.holdAll = true;
    try {
      await cluster.createBuild("held");
      await cluster.kube.waitFor(
        () => cluster.player.runningJobs().filter((job) => job.startsWith("held-")).length === 2,
        { message: "the held build's Jobs did not start" },
      );
      await cluster.restart();
      cluster.player.release("held-amd64");
      cluster.player.release("held-arm64");
      await expectComplete("held");
    } finally {
      cluster.player.holdAll = false;
    }
  });
});
