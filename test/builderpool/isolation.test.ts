// BuilderPool spec.isolation (issue 21): a RuntimeClass and a user namespace on the builder
// pods, valid upstream; hostUsers only where the API server keeps it; trust that cannot change.
import type { V1Deployment, V1StatefulSet } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { SpecError } from "../../src/api/resources.ts";
import { parseKubeVersion } from "../../src/builderpool/context.ts";
import { desiredPool } from "../../src/builderpool/desired.ts";
import { crdValidator } from "../support/crds.ts";
import { readYaml } from "../support/files.ts";
import { examplePool, poolContext } from "./fixtures.ts";
import { cluster, createPool, operator, poolSpec, waitForReady } from "./harness.ts";
import { unknownFields, validateObject } from "./schema.ts";

type Json = Record<string, unknown>;

const isolated = (isolation: Json, cache: Json = { type: "EmptyDir", size: "50Gi" }) =>
  examplePool((raw) => {
    raw.spec.isolation = isolation;
    raw.spec.cache = cache;
  });

const v = (minor: number) => poolContext({ serverVersion: { major: 1, minor } });

function podSpecs(objects: ReturnType<typeof desiredPool>["objects"]) {
  return objects
    .filter((o) => o.kind === "Deployment" || o.kind === "StatefulSet")
    .map((o) => (o as V1Deployment | V1StatefulSet).spec?.template.spec);
}

describe("spec.isolation on the builder pods", () => {
  const full = { runtimeClassName: "kata-qemu", hostUsers: false, trust: "Untrusted" };

  it.each([
    ["a Deployment", { type: "EmptyDir", size: "50Gi" }, "Deployment", "V1Deployment"],
    [
      "a StatefulSet",
      { type: "Persistent", size: "50Gi", storageClassName: "fast" },
      "StatefulSet",
      "V1StatefulSet",
    ],
  ])(
    "renders runtimeClassName and hostUsers: false into %s that validates upstream",
    async (_, cache, kind, type) => {
      const objects = desiredPool(isolated(full, cache), v(33)).objects;
      const workloads = objects.filter((o) => o.kind === kind);
      expect(workloads).toHaveLength(2);
      for (const workload of workloads) {
        const spec = (workload as V1Deployment).spec?.template.spec;
        expect(spec?.runtimeClassName).toBe("kata-qemu");
        expect(spec?.hostUsers).toBe(false);
        // The rest of the builder's security stays what rootlesskit needs.
        expect(spec?.securityContext?.runAsUser).toBe(1000);
        expect(spec?.containers[0]?.securityContext?.seccompProfile).toEqual({
          type: "Unconfined",
        });
        await validateObject(workload);
        expect(unknownFields(workload, type)).toEqual([]);
      }
    },
  );

  it("renders runtimeClassName alone on any server version, and no hostUsers unless false", () => {
    for (const minor of [28, 31, 33]) {
      const specs = podSpecs(
        desiredPool(isolated({ runtimeClassName: "gvisor" }), v(minor)).objects,
      );
      for (const spec of specs) {
        expect(spec?.runtimeClassName).toBe("gvisor");
        expect(spec).not.toHaveProperty("hostUsers");
      }
    }
    const explicitTrue = podSpecs(desiredPool(isolated({ hostUsers: true }), v(33)).objects);
    for (const spec of explicitTrue) expect(spec).not.toHaveProperty("hostUsers");
  });

  it("leaves a pool without isolation, or only trust, exactly as before", () => {
    const plain = desiredPool(examplePool(), v(33)).objects;
    expect(desiredPool(isolated({ trust: "Untrusted" }), v(33)).objects).toEqual(plain);
    for (const spec of podSpecs(plain)) {
      expect(spec).not.toHaveProperty("runtimeClassName");
      expect(spec).not.toHaveProperty("hostUsers");
    }
  });

  it.each([
    [{ major: "1", minor: "32" }, false],
    [{ major: "1", minor: "30" }, false],
    [{ major: "", minor: "", gitVersion: "v1.32.4-eks-1a2b3c" }, false],
    [{ major: "1", minor: "33" }, true],
    [{ major: "1", minor: "33+" }, true],
    [{ major: "1", minor: "36" }, true],
  ])(
    "hostUsers: false on a server reporting %j: rendered %s, else InvalidSpec naming the field",
    (info, rendered) => {
      const context = poolContext({ serverVersion: parseKubeVersion(info) });
      const pool = isolated({ hostUsers: false });
      if (rendered) {
        for (const spec of podSpecs(desiredPool(pool, context).objects))
          expect(spec?.hostUsers).toBe(false);
        return;
      }
      let error: unknown;
      try {
        desiredPool(pool, context);
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(SpecError);
      expect((error as SpecError).message).toMatch(
        /^spec\.isolation\.hostUsers: false needs Kubernetes >= 1\.33, .*UserNamespacesSupport.*drops the pod's hostUsers field/,
      );
    },
  );

  it("a pool asking for user namespaces on a 1.31 API server is InvalidSpec and builds nothing", async () => {
    const kube = await cluster();
    await operator(kube);
    createPool(kube, "farm", poolSpec({ isolation: { hostUsers: false } }));
    const condition = await waitForReady(kube, "farm", { status: "False", reason: "InvalidSpec" });
    expect(condition.message).toContain("spec.isolation.hostUsers: false needs Kubernetes >= 1.33");
    expect(condition.message).toContain("this API server is 1.31");
    expect(kube.store.objects("deployments.apps", "builders")).toEqual([]);
  });
});

describe("spec.isolation through the CRD", () => {
  const validator = () => crdValidator("builderpools");
  const pool = (isolation?: Json): Json => {
    const raw = structuredClone(readYaml("examples/builderpool.yaml")) as Json & { spec: Json };
    if (isolation) raw.spec.isolation = isolation;
    return raw;
  };

  it("defaults trust to Trusted and keeps the other fields", () => {
    const object = pool({ runtimeClassName: "kata", hostUsers: false });
    expect(validator().admit(object)).toEqual([]);
    expect((object.spec as Json).isolation).toEqual({
      runtimeClassName: "kata",
      hostUsers: false,
      trust: "Trusted",
    });
  });

  it.each([
    ["Trusted → Untrusted", { trust: "Trusted" }, { trust: "Untrusted" }],
    ["Untrusted → Trusted", { trust: "Untrusted" }, { trust: "Trusted" }],
    ["Untrusted → isolation removed", { trust: "Untrusted" }, undefined],
    ["no isolation → Untrusted", undefined, { trust: "Untrusted" }],
  ])("refuses changing trust on update: %s", (_, before, after) => {
    const old = pool(before);
    validator().admit(old);
    const causes = validator().admit(pool(after), old);
    expect(causes).toEqual([
      expect.objectContaining({
        field: "spec",
        message: expect.stringContaining("spec.isolation.trust cannot change"),
      }),
    ]);
  });

  it.each([
    [
      "Untrusted, other fields changed",
      { trust: "Untrusted" },
      { trust: "Untrusted", hostUsers: false },
    ],
    ["no isolation → Trusted", undefined, { trust: "Trusted" }],
    ["Trusted → no isolation", { trust: "Trusted" }, undefined],
  ])("allows an update that keeps the trust: %s", (_, before, after) => {
    const old = pool(before);
    validator().admit(old);
    expect(validator().admit(pool(after), old)).toEqual([]);
  });
});
