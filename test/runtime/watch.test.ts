// KubeClient.watch against a server that sends a watch's headers only with its first event:
// the watch can be closed while it waits for them (client-node's Watch could not, and a
// stopped operator stayed alive), and it delivers events once they come.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KubeClient, RESOURCES, type WatchEvent } from "../../src/runtime/client.ts";
import { type Kube, startKube } from "../kube/index.ts";

let kube: Kube;
let client: KubeClient;

beforeAll(async () => {
  kube = await startKube({ nodes: [], holdWatchHeaders: true });
  client = new KubeClient(kube.kubeConfig());
});
afterAll(() => kube.stop());

function watch(onEvent: (event: WatchEvent<{ metadata?: { name?: string } }>) => void) {
  let ended: (error: unknown) => void = () => {};
  const done = new Promise<unknown>((resolve) => {
    ended = resolve;
  });
  const close = client.watch(
    RESOURCES.configMap,
    "default",
    { resourceVersion: String(kube.store.resourceVersion), timeoutSeconds: 60 },
    onEvent,
    (error) => ended(error),
  );
  return { close, done };
}

describe("a watch whose headers have not arrived", () => {
  it("closes when asked, before any response", async () => {
    const { close, done } = watch(() => {});
    await kube.waitFor(() => kube.watches.list().length === 1);
    (await close)();
    const error = await done;
    expect((error as Error).name).toBe("AbortError");
    await kube.waitFor(() => kube.watches.list().length === 0);
  });

  it("delivers the first event with the headers, and the ones after", async () => {
    const names: string[] = [];
    const { close } = watch((event) => names.push(event.object.metadata?.name ?? ""));
    await kube.waitFor(() => kube.watches.list().length === 1);
    kube.store.create("configmaps", { metadata: { name: "first", namespace: "default" } });
    kube.store.create("configmaps", { metadata: { name: "second", namespace: "default" } });
    await kube.waitFor(() => names.length === 2);
    expect(names).toEqual(["first", "second"]);
    (await close)();
  });
});
