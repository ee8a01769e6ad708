// Crash: 200 two-platform builds while the operator (`node src/cli.ts operator`, a real child
// process) is SIGKILLed at 20 random points of its life (during start-up or while it works) and
// started again each time with empty caches. Afterwards every build has Succeeded, once, with
// every digest; no Job ever existed twice (the store's history and the request log's count of
// successful creates agree); nothing was built twice.
//
// CRASH_SEED=n replays another sequence of kill points.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type OperatorProcess, spawnOperator } from "../support/operator-process.ts";
import {
  expectedDigests,
  type ReliabilityCluster,
  seededRandom,
  sleep,
  startReliabilityCluster,
} from "./cluster.ts";

const BUILDS = 200;
const KILLS = 20;
const SEED = Number(process.env.CRASH_SEED ?? 8);

let cluster: ReliabilityCluster;
const processes: OperatorProcess[] = [];

beforeAll(async () => {
  cluster = await startReliabilityCluster({ pool: { maxConcurrentBuilds: 8 } });
});

afterAll(async () => {
  await Promise.all(processes.map((operator) => operator.kill("SIGKILL")));
  await cluster?.stop();
});

const start = () => {
  const operator = spawnOperator({ kubeconfig: cluster.kubeconfig });
  return operator.then((started) => {
    processes.push(started);
    return started;
  });
};

describe("an operator killed at 20 random points during 200 builds", () => {
  const names = Array.from({ length: BUILDS }, (_, i) => `crash-${i}`);
  /** At each kill: how many builds were under way (created, not finished). */
  const underWay: number[] = [];

  it("completes every build exactly once", async () => {
    const random = seededRandom(SEED);
    let operator = await start();
    await operator.ready;
    await cluster.waitForPoolReady();
    const perRound = BUILDS / KILLS;
    for (let round = 0; round < KILLS; round++) {
      // A tenth of the builds arrive with each process, so kills find builds at every step.
      for (const name of names.slice(round * perRound, (round + 1) * perRound))
        cluster.createBuild(name);
      // A quarter of the kills land during start-up (listing, syncing), the rest while it works.
      if (random() < 0.25) {
        await sleep(random() * 800);
      } else {
        await operator.ready;
        await sleep(random() * 1500);
      }
      const phases = cluster.phases();
      underWay.push(
        Object.entries(phases)
          .filter(([phase]) => phase !== "Succeeded" && phase !== "Failed")
          .reduce((sum, [, count]) => sum + count, 0),
      );
      await operator.kill("SIGKILL");
      operator = await start();
    }
    await operator.ready;
    await cluster.waitForFinished(names, 120_000);
    // The kills found work in progress (not an idle operator each time).
    expect(
      underWay.filter((count) => count > 0).length,
      JSON.stringify(underWay),
    ).toBeGreaterThanOrEqual(KILLS / 2);

    for (const name of names) {
      const status = cluster.status(name);
      const expected = expectedDigests(name);
      expect(status?.phase, name).toBe("Succeeded");
      expect(status?.digest, name).toBe(expected.index);
      expect(status?.image, name).toBe(expected.image);
      expect(
        status?.platforms?.map((p) => [p.platform, p.phase, p.digest]),
        name,
      ).toEqual([
        ["linux/amd64", "Succeeded", expected.amd64],
        ["linux/arm64", "Succeeded", expected.arm64],
      ]);
      // Succeeded once: reached once, never left; the digest, once written, never changed.
      const history = cluster.history.statuses.get(name) ?? [];
      const firstSucceeded = history.findIndex((s) => s.phase === "Succeeded");
      expect(
        history.slice(firstSucceeded).every((s) => s.phase === "Succeeded"),
        name,
      ).toBe(true);
      expect(new Set(history.flatMap((s) => (s.digest ? [s.digest] : []))), name).toEqual(
        new Set([expected.index]),
      );
      for (const slug of ["amd64", "arm64"]) {
        const digests = new Set(
          history.flatMap((s) =>
            (s.platforms ?? [])
              .filter((p) => p.platform === `linux/${slug}` && p.digest)
              .map((p) => p.digest),
          ),
        );
        expect(digests, `${name} ${slug}`).toEqual(new Set([expected[slug as "amd64" | "arm64"]]));
      }
    }

    // No Job ever existed twice: each name was added once and none was deleted, and the API
    // server answered exactly one successful create per Job.
    const jobNames = names.flatMap((name) =>
      ["amd64", "arm64", "index"].map((s) => `${name}-${s}`),
    );
    const twice = jobNames.filter((job) => cluster.history.jobsAdded.get(job) !== 1);
    expect(twice).toEqual([]);
    expect(cluster.history.jobsDeleted).toEqual([]);
    const creates = cluster.kube.requestLog.entries({ verb: "create", resource: "jobs" });
    expect(creates.filter((record) => record.code === 201).length).toBe(jobNames.length);
    // Nothing was built twice: one buildctl per platform Job, one assemble per index Job.
    const runs = new Map<string, number>();
    for (const played of cluster.player.played)
      if (played.container === "buildctl" || played.container === "assemble")
        runs.set(played.job, (runs.get(played.job) ?? 0) + 1);
    expect([...runs].filter(([, count]) => count !== 1)).toEqual([]);
    expect(runs.size).toBe(jobNames.length);
    expect(cluster.player.problems).toEqual([]);

    // Every process that went died of our SIGKILL; none fell over by itself.
    const ended = await Promise.all(
      processes.slice(0, -1).map(async (p) => (await p.exited).signal),
    );
    expect(ended).toEqual(Array(KILLS).fill("SIGKILL"));
    expect(processes.at(-1)?.alive).toBe(true);
    expect(processes.flatMap((p) => p.stderr).join("")).toBe("");
  }, 240_000);
});
