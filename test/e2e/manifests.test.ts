// The kind quickstart cannot run here, but what it applies can be checked: every custom
// resource it creates is valid for the API server and the operator.
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { quickstartManifests } from "../../e2e/kind.ts";
import { parseBuilderPool, parseImageBuild } from "../../src/api/resources.ts";
import { admit } from "../../src/imagebuild/admission.ts";
import { crdValidator } from "../support/crds.ts";

describe("the kind quickstart's manifests", () => {
  const documents = parseAllDocuments(quickstartManifests("hello-1")).map(
    (d) => d.toJS() as Record<string, unknown>,
  );

  it("hold a privileged namespace, a pool and a build", () => {
    expect(documents.map((d) => d.kind)).toEqual(["Namespace", "BuilderPool", "ImageBuild"]);
    expect(documents[0]).toMatchObject({
      metadata: { labels: { "pod-security.kubernetes.io/enforce": "privileged" } },
    });
  });

  it("are valid for the CRD schema and for the operator", () => {
    const pool = documents[1] as Record<string, unknown>;
    const build = documents[2] as Record<string, unknown>;
    expect(crdValidator("builderpools").admit(structuredClone(pool))).toEqual([]);
    expect(crdValidator("imagebuilds").admit(structuredClone(build))).toEqual([]);
    expect(() => parseBuilderPool(pool)).not.toThrow();
    expect(parseImageBuild(build).spec.output.image).toBe("kind-registry:5000/demo/hello");
  });

  it("admit the build on the pool, with the in-cluster registry as plain HTTP for assemble", () => {
    const admission = admit(parseImageBuild(documents[2]), {
      pool: parseBuilderPool(documents[1]),
      buildNamespaceLabels: {},
    });
    expect(admission).toMatchObject({
      admitted: true,
      plan: { insecureRegistries: ["kind-registry:5000"] },
    });
  });
});
