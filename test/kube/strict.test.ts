// Where a real kube-apiserver is strict and test/kube must be too (issue 23): MicroTime
// precision, Lease validation, dryRun values, unknown metadata fields, core Event times, nulls
// in custom resources, expired history, server-side apply. Each was seen on a real server; a
// test/kube more lenient than it would keep an operator bug green here and red on a cluster.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Kube, startKube } from "./index.ts";

let kube: Kube;

beforeAll(async () => {
  kube = await startKube({ namespaces: ["s"], nodes: [] });
});
afterAll(() => kube.stop());

/** A raw request, so the test controls the body and Content-Type exactly. */
async function call(
  method: string,
  path: string,
  body?: unknown,
  contentType = "application/json",
): Promise<{ code: number; body: Record<string, unknown> }> {
  const response = await fetch(kube.url + path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": contentType },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { code: response.status, body: text ? JSON.parse(text) : {} };
}

const LEASES = "/apis/coordination.k8s.io/v1/namespaces/s/leases";
const lease = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: "coordination.k8s.io/v1",
  kind: "Lease",
  metadata: { name },
  spec: { holderIdentity: "a", leaseDurationSeconds: 15, ...spec },
});

describe("MicroTime fields", () => {
  it("refuses a Lease renewTime without six fractional digits on create with 400, as the real server words it", async () => {
    const { code, body } = await call(
      "POST",
      LEASES,
      lease("ms", { renewTime: "2024-05-01T10:00:05.123Z" }),
    );
    expect(code).toBe(400);
    expect(body.reason).toBe("BadRequest");
    expect(body.message).toBe(
      'Lease in version "v1" cannot be handled as a Lease: parsing time "2024-05-01T10:00:05.123Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse ".123Z" as ".000000"',
    );
    expect(kube.store.get("leases.coordination.k8s.io", "s", "ms")).toBeUndefined();
  });

  it("refuses an acquireTime without fractions, and accepts and keeps six digits", async () => {
    const bad = await call(
      "POST",
      LEASES,
      lease("nofrac", { acquireTime: "2024-05-01T10:00:05Z" }),
    );
    expect(bad.code).toBe(400);
    expect(bad.body.message).toContain('cannot parse "Z" as ".000000"');
    const good = await call(
      "POST",
      LEASES,
      lease("micro", { acquireTime: "2024-05-01T10:00:05.123456Z" }),
    );
    expect(good.code).toBe(201);
    expect((good.body.spec as Record<string, unknown>).acquireTime).toBe(
      "2024-05-01T10:00:05.123456Z",
    );
  });

  it("refuses the same value in an update with 400 and in a merge patch with 422", async () => {
    const created = await call(
      "POST",
      LEASES,
      lease("upd", { renewTime: "2024-05-01T10:00:05.000000Z" }),
    );
    expect(created.code).toBe(201);
    const put = await call("PUT", `${LEASES}/upd`, {
      ...created.body,
      spec: { ...(created.body.spec as object), renewTime: "2024-05-01T10:00:06.5Z" },
    });
    expect(put.code).toBe(400);
    expect(put.body.message).toContain('cannot parse ".5Z" as ".000000"');
    const patch = await call(
      "PATCH",
      `${LEASES}/upd`,
      { spec: { renewTime: "2024-05-01T10:00:07.123Z" } },
      "application/merge-patch+json",
    );
    expect(patch.code).toBe(422);
    expect(patch.body.reason).toBe("Invalid");
    expect(patch.body.message).toContain('cannot parse ".123Z" as ".000000"');
    expect(kube.store.get("leases.coordination.k8s.io", "s", "upd")?.spec).toMatchObject({
      renewTime: "2024-05-01T10:00:05.000000Z",
    });
  });

  it("refuses an events.k8s.io/v1 eventTime with milliseconds", async () => {
    const { code, body } = await call("POST", "/apis/events.k8s.io/v1/namespaces/s/events", {
      metadata: { name: "e1" },
      eventTime: "2024-05-01T10:00:05.123Z",
      reportingController: "buildfarm.dev/operator",
      reportingInstance: "x",
      action: "Reconcile",
      reason: "Test",
      regarding: { kind: "Pod", namespace: "s", name: "p" },
      type: "Normal",
    });
    expect(code).toBe(400);
    expect(body.message).toContain('cannot parse ".123Z" as ".000000"');
  });
});

describe("Lease validation", () => {
  it("refuses leaseDurationSeconds 0 and a negative leaseTransitions with 422", async () => {
    const zero = await call("POST", LEASES, lease("zero", { leaseDurationSeconds: 0 }));
    expect(zero.code).toBe(422);
    expect(zero.body.details).toMatchObject({
      causes: [
        expect.objectContaining({
          field: "spec.leaseDurationSeconds",
          message: "Invalid value: 0: must be greater than 0",
        }),
      ],
    });
    const negative = await call("POST", LEASES, lease("neg", { leaseTransitions: -1 }));
    expect(negative.code).toBe(422);
    expect(negative.body.details).toMatchObject({
      causes: [
        expect.objectContaining({
          field: "spec.leaseTransitions",
          message: "Invalid value: -1: must be greater than or equal to 0",
        }),
      ],
    });
  });
});

describe("dryRun", () => {
  it("answers a dryRun value other than All with 422 and creates nothing", async () => {
    const { code, body } = await call("POST", "/api/v1/namespaces/s/configmaps?dryRun=Yes", {
      metadata: { name: "dry-bad" },
    });
    expect(code).toBe(422);
    expect(body.message).toContain('dryRun: Unsupported value: []string{"Yes"}');
    expect(kube.store.get("configmaps", "s", "dry-bad")).toBeUndefined();
  });

  it("answers dryRun=All with the object and stores nothing", async () => {
    const { code, body } = await call("POST", "/api/v1/namespaces/s/configmaps?dryRun=All", {
      metadata: { name: "dry-all" },
    });
    expect(code).toBe(201);
    expect((body.metadata as Record<string, unknown>).name).toBe("dry-all");
    expect(kube.store.get("configmaps", "s", "dry-all")).toBeUndefined();
  });
});

describe("decoding drops what the real server drops", () => {
  it("drops unknown metadata fields", async () => {
    const { code, body } = await call("POST", "/api/v1/namespaces/s/configmaps", {
      metadata: { name: "meta", labels: { a: "b" }, owner: "me", clusterName: "x" },
    });
    expect(code).toBe(201);
    expect(body.metadata).not.toHaveProperty("owner");
    expect(body.metadata).not.toHaveProperty("clusterName");
    expect((body.metadata as Record<string, unknown>).labels).toEqual({ a: "b" });
    expect(kube.store.get("configmaps", "s", "meta")?.metadata).not.toHaveProperty("owner");
  });

  it("truncates a core Event's firstTimestamp and lastTimestamp to seconds", async () => {
    const { code, body } = await call("POST", "/api/v1/namespaces/s/events", {
      metadata: { name: "ev" },
      involvedObject: { kind: "Pod", namespace: "s", name: "p" },
      reason: "Test",
      message: "m",
      type: "Normal",
      count: 1,
      firstTimestamp: "2024-05-01T10:00:05.123Z",
      lastTimestamp: "2024-05-01T10:00:06.999999Z",
    });
    expect(code).toBe(201);
    expect(body.firstTimestamp).toBe("2024-05-01T10:00:05Z");
    expect(body.lastTimestamp).toBe("2024-05-01T10:00:06Z");
  });

  it("drops a null for a non-nullable custom resource field and applies its default", async () => {
    const { code, body } = await call(
      "POST",
      "/apis/buildfarm.dev/v1alpha1/namespaces/s/imagebuilds",
      {
        apiVersion: "buildfarm.dev/v1alpha1",
        kind: "ImageBuild",
        metadata: { name: "nulls" },
        spec: {
          poolRef: { name: "default" },
          source: { git: { url: "https://github.com/docker/welcome-to-docker.git" } },
          platforms: ["linux/amd64"],
          output: { image: "registry.example.com/demo/app" },
          dockerfile: null,
          target: null,
        },
      },
    );
    expect(code).toBe(201);
    const spec = body.spec as Record<string, unknown>;
    expect(spec.dockerfile).toBe("Dockerfile");
    expect(spec).not.toHaveProperty("target");
  });
});

describe("expired history at a realistic rate", () => {
  it("compacts by default, so a watch from an old resourceVersion meets 410 Gone", async () => {
    const compacting = await startKube({ nodes: [], compactionIntervalMs: 100 });
    try {
      const before = compacting.store.resourceVersion;
      compacting.store.create("configmaps", { metadata: { name: "a", namespace: "default" } });
      const status = await compacting.waitFor(
        async () => {
          compacting.store.create("configmaps", {
            metadata: { generateName: "tick-", namespace: "default" },
          });
          const response = await fetch(
            `${compacting.url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=${before}&timeoutSeconds=1`,
          );
          const first = (await response.text()).split("\n")[0]!;
          const event = JSON.parse(first) as { type: string; object: { code?: number } };
          return event.type === "ERROR" ? event.object : undefined;
        },
        { timeout: 60_000, interval: 100 },
      );
      expect(status.code).toBe(410);
    } finally {
      await compacting.stop();
    }
  });

  it("compacts on a timer unless a test turns it off", async () => {
    const options = (await import("./index.ts")).DEFAULT_COMPACTION_INTERVAL_MS;
    expect(options).toBeGreaterThan(0);
    expect(options).toBeLessThanOrEqual(30_000);
  });

  it("expires a list's continue token once its resourceVersion is compacted", async () => {
    const compacting = await startKube({ nodes: [], compactionIntervalMs: 100 });
    try {
      for (const name of ["a", "b", "c"])
        compacting.store.create("configmaps", { metadata: { name, namespace: "default" } });
      const page = await fetch(`${compacting.url}/api/v1/namespaces/default/configmaps?limit=1`);
      const token = ((await page.json()) as { metadata: { continue: string } }).metadata.continue;
      const code = await compacting.waitFor(
        async () => {
          compacting.store.create("configmaps", {
            metadata: { generateName: "tick-", namespace: "default" },
          });
          const response = await fetch(
            `${compacting.url}/api/v1/namespaces/default/configmaps?limit=1&continue=${encodeURIComponent(token)}`,
          );
          await response.text();
          return response.status === 410 ? response.status : undefined;
        },
        { timeout: 60_000, interval: 100 },
      );
      expect(code).toBe(410);
    } finally {
      await compacting.stop();
    }
  });
});

describe("server-side apply", () => {
  it("answers an apply patch with 415 saying test/kube does not implement it, even for a missing object", async () => {
    const { code, body } = await call(
      "PATCH",
      "/api/v1/namespaces/s/configmaps/missing?fieldManager=t",
      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: missing\n",
      "application/apply-patch+yaml",
    );
    expect(code).toBe(415);
    expect(body.reason).toBe("UnsupportedMediaType");
    expect(body.message).toContain("test/kube does not implement server-side apply");
  });
});
