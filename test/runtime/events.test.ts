// Events are deduplicated by patching the count of the Event written before; an Event that
// is gone (the API server expires them after an hour) or was never created is written anew.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KubeClient } from "../../src/runtime/client.ts";
import { EventRecorder } from "../../src/runtime/events.ts";
import { type Kube, startKube } from "../kube/index.ts";
import { testLogger } from "../support/operator.ts";

let kube: Kube;

beforeAll(async () => {
  kube = await startKube({ nodes: [] });
});
afterAll(() => kube.stop());

const about = (name: string) => ({
  apiVersion: "v1",
  kind: "ConfigMap",
  metadata: { name, namespace: "default", uid: `uid-${name}` },
});

const eventsOf = (name: string) =>
  kube.store
    .objects("events", "default")
    .filter(
      (event) => (event as { involvedObject?: { name?: string } }).involvedObject?.name === name,
    ) as unknown as { count: number }[];

describe("the event recorder", () => {
  it("counts a repeat on the existing Event", async () => {
    const recorder = new EventRecorder(new KubeClient(kube.kubeConfig()), {
      component: "test",
      log: testLogger(),
    });
    recorder.record(about("twice"), "Normal", "Seen", "once more");
    await recorder.flush();
    recorder.record(about("twice"), "Normal", "Seen", "once more");
    await recorder.flush();
    expect(eventsOf("twice").map((event) => event.count)).toEqual([2]);
  });

  it("writes a new Event when the one it would count on has expired", async () => {
    const recorder = new EventRecorder(new KubeClient(kube.kubeConfig()), {
      component: "test",
      log: testLogger(),
    });
    recorder.record(about("expired"), "Normal", "Seen", "again");
    await recorder.flush();
    for (const event of kube.store.objects("events", "default"))
      if ((event as { involvedObject?: { name?: string } }).involvedObject?.name === "expired")
        kube.store.delete("events", "default", event.metadata.name as string);
    recorder.record(about("expired"), "Normal", "Seen", "again");
    await recorder.flush();
    expect(eventsOf("expired").map((event) => event.count)).toEqual([1]);
  });

  it("writes the Event anew after its create failed", async () => {
    const recorder = new EventRecorder(new KubeClient(kube.kubeConfig()), {
      component: "test",
      log: testLogger(),
    });
    kube.faults.failNext(1, { code: 500, match: { verb: "create", resource: "events" } });
    recorder.record(about("failed"), "Warning", "Broken", "first try fails");
    await recorder.flush();
    expect(eventsOf("failed")).toEqual([]);
    recorder.record(about("failed"), "Warning", "Broken", "first try fails");
    await recorder.flush();
    expect(eventsOf("failed").map((event) => event.count)).toEqual([1]);
  });
});
