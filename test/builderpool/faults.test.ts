// The pool controller against an API server that fails requests and drops watches.
import { afterEach, describe, expect, it } from "vitest";
import { describeRequests, reconciles, writesSince } from "../support/operator.ts";
import {
  changePool,
  childrenOf,
  cluster,
  createPool,
  NS,
  operator,
  pool,
  stopAll,
  successfulCreates,
  waitForQuiet,
  waitForReady,
} from "./harness.ts";

afterEach(stopAll);

describe("a faulty API server", () => {
  it("converges with 15% of requests failing and watches dropped, without a hot loop", async () => {
    const kube = await cluster();
    // FAULT_SEED=n replays another sequence of failures.
    const seed = Number(process.env.FAULT_SEED ?? 7);
    kube.faults.failRate(0.1, { seed, code: 500 });
    kube.faults.failRate(0.05, { seed: seed + 1000, code: 429, retryAfterSeconds: 1 });
    // Watches are closed every 1.5 s and cut (connection reset) right after each change
    // below, so the events the operator waits for arrive through resumed watches; three
    // resumes get 410 Gone and relist. (Informers back off from watches that fail, or end
    // within a second without an event, as client-go's reflector does; quiet kinds cut more
    // often than that fall behind by up to 30 s, which would only make this test slow.)
    kube.faults.dropWatchesEvery(1_500, { mode: "close" });
    kube.faults.expireWatches(3);
    const current = await operator(kube, { resyncMs: 1_000 });
    createPool(kube, "farm");
    kube.faults.dropWatches({ mode: "reset" });
    await waitForReady(kube, "farm", { status: "True" }, 20_000);
    changePool(kube, "farm", (spec) => {
      spec.architectures[1].replicas = 2;
    });
    kube.faults.dropWatches({ mode: "reset" });
    await waitForReady(kube, "farm", { status: "True" }, 20_000);

    const uid = pool(kube, "farm").metadata.uid;
    expect(childrenOf(kube, uid).length).toBe(12); // the arm64 budget joined
    expect(pool(kube, "farm").status.summary).toBe("amd64 2/2, arm64 2/2");
    // One CA, one certificate, one ReplicaSet per architecture: nothing issued or rolled twice.
    expect(successfulCreates(kube).secrets).toBe(2);
    expect(kube.store.objects("replicasets.apps", NS).length).toBe(2);
    // Measured over seeds 1-20: 41 to 97 requests besides watches, 26 to 40 of them writes
    // (without faults: 36 and 24). A reconcile loop that does not back off blows through this.
    const requests = kube.requestLog.entries().filter((record) => record.verb !== "watch");
    expect(requests.length).toBeLessThan(200);
    expect(writesSince(kube, 0).length).toBeLessThan(80);

    // Once the faults stop, it settles and stays quiet.
    kube.faults.clear();
    await waitForQuiet(kube, 1_000, 20_000);
    const mark = kube.requestLog.mark();
    await reconciles(kube, current.manager, "builderpool", 2);
    expect(describeRequests(writesSince(kube, mark))).toEqual([]);
  });
});
