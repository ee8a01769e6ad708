import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { cacheKeyOf, RoutedJobs } from "../../src/imagebuild/builders.ts";
import {
  builderPodTarget,
  chooseBuilder,
  defaultCacheKey,
  perBuilderLimit,
  preferenceOrder,
  type RouteInput,
  routePlatform,
} from "../../src/imagebuild/routing.ts";
import { exampleBuild } from "./fixtures.ts";

const builders = ["pool-amd64-0", "pool-amd64-1", "pool-amd64-2", "pool-amd64-3"];
const ready = (names: string[], running: Record<string, number> = {}) =>
  names.map((name) => ({ name, ready: true, running: running[name] ?? 0 }));

describe("rendezvous routing", () => {
  it("sends the same key to the same builder, whatever the order builders are listed in", () => {
    fc.assert(
      fc.property(
        fc.string(),
        fc.shuffledSubarray(builders, { minLength: 4, maxLength: 4 }),
        (key, shuffled) => {
          expect(chooseBuilder(key, ready(shuffled), 1)?.name).toBe(
            chooseBuilder(key, ready(builders), 1)?.name,
          );
        },
      ),
    );
  });

  it("moves only the keys of a builder that went away", () => {
    const keys = Array.from({ length: 2000 }, (_, i) => `repo-${i}`);
    const before = new Map(keys.map((key) => [key, chooseBuilder(key, ready(builders), 1)?.name]));
    const after = new Map(
      keys.map((key) => [key, chooseBuilder(key, ready(builders.slice(0, 3)), 1)?.name]),
    );
    const moved = keys.filter((key) => before.get(key) !== after.get(key));
    expect(moved.every((key) => before.get(key) === "pool-amd64-3")).toBe(true);
    // Roughly a quarter of the keys lived there; the rest stayed put.
    expect(moved.length).toBeGreaterThan(350);
    expect(moved.length).toBeLessThan(650);
  });

  it("spreads keys evenly", () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 4000; i++) {
      const name = chooseBuilder(`k${i}`, ready(builders), 1)?.name as string;
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    for (const name of builders) expect(counts.get(name)).toBeGreaterThan(850);
  });

  it("falls back to the next builder in the key's order when the first is not ready or full, and to none when all are", () => {
    const [first, second, third] = preferenceOrder("repo", builders) as [string, string, string];
    expect(chooseBuilder("repo", ready(builders), 2)?.name).toBe(first);
    expect(chooseBuilder("repo", ready(builders, { [first]: 2 }), 2)?.name).toBe(second);
    const notReady = ready(builders).map((c) =>
      c.name === first || c.name === second ? { ...c, ready: false } : c,
    );
    expect(chooseBuilder("repo", notReady, 2)?.name).toBe(third);
    expect(
      chooseBuilder("repo", ready(builders, Object.fromEntries(builders.map((b) => [b, 2]))), 2),
    ).toBeUndefined();
    expect(chooseBuilder("repo", [], 2)).toBeUndefined();
  });
});

describe("routing one platform", () => {
  const service = {
    address: "tcp://farm-amd64.builds.svc:1234",
    serverName: "farm-amd64.builds.svc",
  };
  const pods = (running: Record<string, number> = {}, notReady: string[] = []) =>
    builders.map((name, i) => ({
      name,
      ready: !notReady.includes(name),
      host: `10.244.0.${i + 1}`,
      running: running[name] ?? 0,
    }));
  const input = (patch: Partial<RouteInput> = {}): RouteInput => ({
    key: "repo",
    architecture: "amd64",
    pods: pods(),
    capacity: 8,
    service,
    port: 1234,
    ...patch,
  });
  const order = preferenceOrder("repo", builders) as [string, string, string, string];
  const hostOf = (name: string) => `10.244.0.${builders.indexOf(name) + 1}`;

  it("dials the key's first builder by its IP, with the Service's name as the TLS server name", () => {
    expect(routePlatform(input())).toEqual({
      kind: "pod",
      pod: order[0],
      address: `tcp://${hostOf(order[0])}:1234`,
      serverName: "farm-amd64.builds.svc",
      preferred: true,
    });
  });

  it("dials a StatefulSet builder by its stable name, which is also its TLS server name", () => {
    const named = pods().map((pod) => ({
      ...pod,
      host: `${pod.name}.pool-amd64-headless.builds.svc`,
      serverName: `${pod.name}.pool-amd64-headless.builds.svc`,
    }));
    expect(routePlatform(input({ pods: named }))).toMatchObject({
      address: `tcp://${order[0]}.pool-amd64-headless.builds.svc:1234`,
      serverName: `${order[0]}.pool-amd64-headless.builds.svc`,
    });
  });

  it("moves on when the first is full: capacity spread over the ready builders, rounded up", () => {
    // 8 slots over 4 ready builders: 2 each.
    expect(perBuilderLimit({ capacity: 8 }, 4)).toBe(2);
    expect(perBuilderLimit({ capacity: 5 }, 2)).toBe(3);
    const full = routePlatform(input({ pods: pods({ [order[0]]: 2 }) }));
    expect(full).toMatchObject({ kind: "pod", pod: order[1], preferred: false });
    // One builder not ready: 8 over 3 is 3 each, so the first takes a third build.
    const three = routePlatform(input({ pods: pods({ [order[0]]: 2 }, [order[3]]) }));
    expect(three).toMatchObject({ kind: "pod", pod: order[0], preferred: true });
  });

  it("skips builders that are not ready or have no address yet", () => {
    expect(routePlatform(input({ pods: pods({}, [order[0]]) }))).toMatchObject({
      pod: order[1],
      preferred: false,
    });
    const noAddress = pods().map((pod) =>
      pod.name === order[0] ? { name: pod.name, ready: true, running: 0 } : pod,
    );
    expect(routePlatform(input({ pods: noAddress }))).toMatchObject({ pod: order[1] });
  });

  it("goes to the first ready builder anyway when every one is full: the queue bounds them", () => {
    const all = Object.fromEntries(builders.map((name) => [name, 2]));
    expect(routePlatform(input({ pods: pods(all) }))).toMatchObject({
      kind: "pod",
      pod: order[0],
    });
  });

  it("falls back to the Service when no builder is ready", () => {
    expect(routePlatform(input({ pods: pods({}, builders) }))).toEqual({
      kind: "service",
      ...service,
    });
    expect(routePlatform(input({ pods: [] }))).toEqual({ kind: "service", ...service });
  });

  it("with autoscaling: waits for the pool to scale up instead, and sizes builders by buildsPerReplica", () => {
    const autoscaling = { maxReplicas: 4, buildsPerReplica: 1 };
    expect(routePlatform(input({ pods: [], autoscaling }))).toEqual({
      kind: "wait",
      message: "no amd64 builder is ready yet; the pool is scaling up",
    });
    const two = pods({ [order[0]]: 1 }).filter(
      (pod) => pod.name === order[0] || pod.name === order[1],
    );
    expect(routePlatform(input({ pods: two, autoscaling }))).toMatchObject({ pod: order[1] });
    const busy = two.map((pod) => ({ ...pod, running: 1 }));
    expect(routePlatform(input({ pods: busy, autoscaling }))).toMatchObject({
      kind: "wait",
      message: "every ready amd64 builder runs 1 builds (buildsPerReplica); the pool is scaling up",
    });
    // At maxReplicas nothing more comes: the first ready builder takes it.
    expect(
      routePlatform(input({ pods: busy, autoscaling: { maxReplicas: 2, buildsPerReplica: 1 } })),
    ).toMatchObject({ kind: "pod", pod: order[0] });
  });
});

describe("how buildctl reaches a builder pod: by IP, or by a StatefulSet pod's stable name", () => {
  it.each([
    [{ ip: "10.244.3.7" }, { host: "10.244.3.7" }],
    // IPv6 in brackets, as tcp://[fd00:10:244::7]:1234 needs.
    [{ ip: "fd00:10:244::7" }, { host: "[fd00:10:244::7]" }],
    [
      { hostname: "farm-amd64-0", subdomain: "farm-amd64-headless", ip: "10.244.3.7" },
      {
        host: "farm-amd64-0.farm-amd64-headless.builds.svc",
        serverName: "farm-amd64-0.farm-amd64-headless.builds.svc",
      },
    ],
    [{ hostname: "x", subdomain: "elsewhere", ip: "10.0.0.1" }, { host: "10.0.0.1" }],
    [{}, undefined],
  ])("%o → %o", (pod, target) => {
    expect(builderPodTarget(pod, "farm-amd64-headless", "builds")).toEqual(target);
  });
});

describe("the cache key", () => {
  const git = (patch: Record<string, string> = {}) => ({
    gitUrl: "https://github.com/acme/app.git",
    dockerfile: "Dockerfile",
    ...patch,
  });

  it("is the same for builds of one repository, Dockerfile and target, whatever the revision", () => {
    expect(defaultCacheKey(git())).toBe(
      defaultCacheKey(git({ gitUrl: "https://github.com/Acme/app" })),
    );
    expect(defaultCacheKey(git())).not.toBe(defaultCacheKey(git({ dockerfile: "Dockerfile.ci" })));
    expect(defaultCacheKey(git())).not.toBe(defaultCacheKey(git({ target: "test" })));
    expect(defaultCacheKey(git())).not.toBe(defaultCacheKey(git({ subPath: "services/api" })));
  });

  it("is the Dockerfile's text for inline sources", () => {
    const inline = (text: string) =>
      defaultCacheKey({ dockerfile: "Dockerfile", inlineDockerfile: text });
    expect(inline("FROM alpine\n")).toBe(inline("FROM alpine\n"));
    expect(inline("FROM alpine\n")).not.toBe(inline("FROM debian\n"));
  });

  it("is spec.cacheKey when the build sets one, apart from any default key", () => {
    const withKey = exampleBuild({ spec: { cacheKey: "team-a/app" } });
    const other = exampleBuild({
      spec: { cacheKey: "team-a/app", dockerfile: "other/Dockerfile" },
    });
    expect(cacheKeyOf(withKey)).toBe(cacheKeyOf(other));
    expect(cacheKeyOf(withKey)).not.toBe(cacheKeyOf(exampleBuild()));
    expect(cacheKeyOf(exampleBuild())).toBe(
      defaultCacheKey({
        gitUrl: "https://github.com/docker/welcome-to-docker.git",
        dockerfile: "Dockerfile",
      }),
    );
  });
});

describe("Jobs routed by this process that the cache does not show yet", () => {
  const job = (name: string, pod: string) => ({
    metadata: {
      name,
      namespace: "apps",
      labels: {
        "buildfarm.dev/pool": "farm",
        "buildfarm.dev/pool-namespace": "builders",
        "buildfarm.dev/arch": "amd64",
      },
      annotations: { "buildfarm.dev/builder-pod": pod },
    },
  });
  const KEY = "builders/farm/amd64";

  it("count on their builder until the cache shows them, the create fails, or 30 s pass", () => {
    let now = 0;
    const routed = new RoutedJobs(() => now);
    routed.add(job("a-amd64", "farm-amd64-x"));
    routed.add(job("b-amd64", "farm-amd64-x"));
    routed.add(job("c-amd64", "farm-amd64-y"));
    expect(routed.podsOf(KEY, () => false).sort()).toEqual([
      "farm-amd64-x",
      "farm-amd64-x",
      "farm-amd64-y",
    ]);
    expect(routed.podsOf("builders/farm/arm64", () => false)).toEqual([]);
    // The cache shows a-amd64 (it counts from there); b-amd64's create failed.
    expect(routed.podsOf(KEY, (_ns, name) => name === "a-amd64").sort()).toEqual([
      "farm-amd64-x",
      "farm-amd64-y",
    ]);
    routed.forget(job("b-amd64", "farm-amd64-x"));
    expect(routed.podsOf(KEY, () => false)).toEqual(["farm-amd64-y"]);
    now = 30_001;
    expect(routed.podsOf(KEY, () => false)).toEqual([]);
  });
});
