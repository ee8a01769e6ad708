// SIGTERM while watches are still connecting: behind a front-end that sends a watch's response
// headers only with its first event, the watches on quiet resources never get a response. The
// operator must still stop and exit on its own (issue 23: it logged "operator stopped" and
// then stayed alive, holding those connections, because client-node's Watch hands out its
// AbortController only once the headers arrive).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Kube, startKube } from "../kube/index.ts";
import { spawnOperator, writeKubeconfig } from "../support/operator-process.ts";

let kube: Kube;

beforeAll(async () => {
  kube = await startKube({ nodes: [], holdWatchHeaders: true });
});
afterAll(() => kube.stop());

describe("shutdown with watches still waiting for their headers", () => {
  it("exits with code 0 after SIGTERM and logs the stop", async () => {
    const operator = await spawnOperator({
      kubeconfig: writeKubeconfig(kube.kubeConfig().exportConfig()),
      identity: "shutdown-test",
    });
    try {
      await operator.ready;
      await operator.waitForLog((line) => line.msg === "became leader");
      // The informers' watches are open and, on these quiet resources, have no headers yet.
      await kube.waitFor(() => kube.watches.list().length >= 5, { timeout: 30_000 });
      process.kill(operator.pid, "SIGTERM");
      // A cap, not a timing: the assertion is that it exits at all, and cleanly.
      const exit = await Promise.race([
        operator.exited,
        new Promise<"still running">((resolve) =>
          setTimeout(() => resolve("still running"), 30_000).unref(),
        ),
      ]);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(operator.logs.map((line) => line.msg)).toEqual(
        expect.arrayContaining(["released the lease", "operator stopped"]),
      );
      expect(operator.logs.map((line) => line.msg)).not.toContain(
        "still open after the stop; exiting",
      );
    } finally {
      await operator.kill();
    }
  }, 120_000);
});
