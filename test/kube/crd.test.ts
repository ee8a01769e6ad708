// The two CRDs served from crds/*.yaml: schema validation with the API server's causes, CEL
// rules including the immutable spec, defaults and pruning, and the CRDs themselves.
import { ApiextensionsV1Api, CustomObjectsApi } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectStatus, jsonPatch, mergePatch } from "./client.ts";
import { type Kube, startKube } from "./index.ts";

let kube: Kube;
let custom: CustomObjectsApi;

beforeAll(async () => {
  kube = await startKube({ namespaces: ["c"], nodes: [] });
  custom = kube.kubeConfig().makeApiClient(CustomObjectsApi);
});
afterAll(() => kube.stop());

const IB = { group: "buildfarm.dev", version: "v1alpha1", namespace: "c", plural: "imagebuilds" };

type ImageBuild = {
  metadata: Record<string, unknown>;
  spec: Record<string, unknown>;
  status?: unknown;
};

function imageBuild(name: string, spec: Record<string, unknown> = {}) {
  return {
    apiVersion: "buildfarm.dev/v1alpha1",
    kind: "ImageBuild",
    metadata: { name },
    spec: {
      poolRef: { name: "default" },
      source: { git: { url: "https://github.com/docker/welcome-to-docker.git" } },
      platforms: ["linux/amd64"],
      output: { image: "registry.example.com/demo/app" },
      ...spec,
    },
  };
}

describe("custom resource validation", () => {
  it("refuses an injected platform with 422 Invalid and the schema's cause", async () => {
    const status = await expectStatus(
      custom.createNamespacedCustomObject({
        ...IB,
        body: imageBuild("bad", { platforms: ["linux/amd64;rm"] }),
      }),
    );
    expect(status.code).toBe(422);
    expect(status.reason).toBe("Invalid");
    expect(status.details).toMatchObject({
      name: "bad",
      group: "buildfarm.dev",
      kind: "ImageBuild",
    });
    expect(status.details?.causes).toEqual([
      {
        reason: "FieldValueInvalid",
        field: "spec.platforms[0]",
        message: expect.stringMatching(
          /^Invalid value: "linux\/amd64;rm": spec\.platforms\[0\] in body should match '/,
        ),
      },
    ]);
    expect(status.message).toMatch(
      /^ImageBuild\.buildfarm\.dev "bad" is invalid: spec\.platforms\[0\]: Invalid value: /,
    );
  });

  it("evaluates CEL rules (exactly one source)", async () => {
    const status = await expectStatus(
      custom.createNamespacedCustomObject({
        ...IB,
        body: imageBuild("two-sources", {
          source: {
            git: { url: "https://example.com/x.git" },
            inline: { dockerfile: "FROM scratch" },
          },
        }),
      }),
    );
    expect(status.details?.causes).toEqual([
      expect.objectContaining({
        field: "spec.source",
        message: expect.stringContaining("set exactly one of source.git or source.inline"),
      }),
    ]);
  });

  it("evaluates rules on metadata.name", async () => {
    const status = await expectStatus(
      custom.createNamespacedCustomObject({ ...IB, body: imageBuild("x".repeat(53)) }),
    );
    expect(status.details?.causes?.[0]?.message).toContain("at most 52 characters");
  });

  it("refuses a spec change as immutable", async () => {
    const created = (await custom.createNamespacedCustomObject({
      ...IB,
      body: imageBuild("frozen"),
    })) as ImageBuild;
    const status = await expectStatus(
      custom.replaceNamespacedCustomObject({
        ...IB,
        name: "frozen",
        body: { ...created, spec: { ...created.spec, platforms: ["linux/arm64"] } },
      }),
    );
    expect(status.code).toBe(422);
    expect(status.details?.causes).toEqual([
      expect.objectContaining({
        field: "spec",
        message: expect.stringContaining(
          "spec is immutable: create a new ImageBuild for a new build",
        ),
      }),
    ]);
    const patched = await expectStatus(
      custom.patchNamespacedCustomObject(
        { ...IB, name: "frozen", body: [{ op: "replace", path: "/spec/target", value: "other" }] },
        jsonPatch(),
      ),
    );
    expect(patched.code).toBe(422);
  });

  it("still takes metadata and status changes of an immutable-spec object", async () => {
    const labelled = (await custom.patchNamespacedCustomObject(
      { ...IB, name: "frozen", body: { metadata: { labels: { team: "a" } } } },
      mergePatch(),
    )) as ImageBuild;
    expect(labelled.metadata.labels).toEqual({ team: "a" });
    const withStatus = (await custom.patchNamespacedCustomObjectStatus(
      { ...IB, name: "frozen", body: { status: { phase: "Queued" } } },
      mergePatch(),
    )) as ImageBuild;
    expect(withStatus.status).toMatchObject({ phase: "Queued" });
  });

  it("validates status through /status too", async () => {
    const status = await expectStatus(
      custom.patchNamespacedCustomObjectStatus(
        { ...IB, name: "frozen", body: { status: { phase: "Exploded" } } },
        mergePatch(),
      ),
    );
    expect(status.details?.causes?.[0]).toMatchObject({
      reason: "FieldValueNotSupported",
      field: "status.phase",
    });
  });

  it("applies schema defaults and prunes unknown fields", async () => {
    const created = (await custom.createNamespacedCustomObject({
      ...IB,
      body: {
        ...imageBuild("defaulted"),
        unknownTop: 1,
        spec: { ...imageBuild("defaulted").spec, unknownField: true },
      },
    })) as ImageBuild & { unknownTop?: number };
    expect(created.spec.dockerfile).toBe("Dockerfile");
    expect(created.spec.timeout).toBe("1h");
    expect(created.spec).not.toHaveProperty("unknownField");
    expect(created).not.toHaveProperty("unknownTop");
  });
});

describe("the CRDs", () => {
  it("are served as CustomResourceDefinitions, Established", async () => {
    const crds = await kube
      .kubeConfig()
      .makeApiClient(ApiextensionsV1Api)
      .listCustomResourceDefinition();
    const names = crds.items.map((crd) => crd.metadata?.name).sort();
    expect(names).toEqual(["builderpools.buildfarm.dev", "imagebuilds.buildfarm.dev"]);
    for (const crd of crds.items)
      expect(crd.status?.conditions?.find((c) => c.type === "Established")?.status).toBe("True");
  });

  it("unregister their resource, and delete its objects, when deleted", async () => {
    const api = kube.kubeConfig().makeApiClient(ApiextensionsV1Api);
    const crd = await api.readCustomResourceDefinition({ name: "imagebuilds.buildfarm.dev" });
    await api.deleteCustomResourceDefinition({ name: "imagebuilds.buildfarm.dev" });
    const status = await expectStatus(custom.listNamespacedCustomObject(IB));
    expect(status.code).toBe(404);
    const { metadata, status: _status, ...rest } = crd;
    await api.createCustomResourceDefinition({
      body: { ...rest, metadata: { name: metadata?.name } },
    });
    const list = (await custom.listNamespacedCustomObject(IB)) as { items: unknown[] };
    expect(list.items).toEqual([]);
  });
});
