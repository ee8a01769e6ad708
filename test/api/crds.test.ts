import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseCel } from "@bufbuild/cel";
import { CustomResourceDefinition } from "kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { renderCrds } from "../../src/api/crd.ts";
import { REPO_ROOT } from "../support/files.ts";

type Node = Record<string, unknown>;

/** Walks every schema node with its path. */
function walk(node: Node, path: string, visit: (node: Node, path: string) => void): void {
  visit(node, path);
  for (const [name, child] of Object.entries((node.properties ?? {}) as Record<string, Node>)) {
    walk(child, `${path}.${name}`, visit);
  }
  if (node.items) walk(node.items as Node, `${path}[]`, visit);
  if (typeof node.additionalProperties === "object")
    walk(node.additionalProperties as Node, `${path}{}`, visit);
}

describe("generated CRDs", () => {
  const rendered = renderCrds();

  it.each(rendered)(
    "crds/$file is up to date with src/api (run npm run crds)",
    ({ file, yaml }) => {
      expect(readFileSync(join(REPO_ROOT, "crds", file), "utf8")).toBe(yaml);
    },
  );

  it.each(rendered)(
    "$file is a valid apiextensions.k8s.io/v1 CustomResourceDefinition",
    ({ yaml }) => {
      const crd = new CustomResourceDefinition(parse(yaml));
      expect(() => crd.validate()).not.toThrow();
    },
  );

  it.each(rendered)(
    "$file has a structural schema: typed nodes, no refs, described fields",
    ({ yaml }) => {
      const schema = parse(yaml).spec.versions[0].schema.openAPIV3Schema as Node;
      const problems: string[] = [];
      walk(schema, "", (node, path) => {
        if (JSON.stringify(node).includes('"$ref"')) problems.push(`${path}: $ref`);
        const intOrString = node["x-kubernetes-int-or-string"] === true;
        if (typeof node.type !== "string" && !intOrString) problems.push(`${path}: no type`);
        if ((node.anyOf || node.oneOf || node.allOf) && !intOrString)
          problems.push(`${path}: union`);
        if (node["x-kubernetes-preserve-unknown-fields"])
          problems.push(`${path}: preserves unknown fields`);
        const isField =
          !path.endsWith("[]") && !path.endsWith("{}") && path !== "" && path !== ".metadata";
        if (isField && typeof node.description !== "string")
          problems.push(`${path}: no description`);
        if (
          node.type === "string" &&
          node.enum === undefined &&
          node.maxLength === undefined &&
          ![".apiVersion", ".kind"].includes(path)
        )
          problems.push(`${path}: unbounded string`);
        if (node.type === "array" && node.maxItems === undefined)
          problems.push(`${path}: unbounded list`);
        if (node["x-kubernetes-list-type"] === "map") {
          const items = node.items as Node;
          for (const key of node["x-kubernetes-list-map-keys"] as string[]) {
            if (!(items.required as string[] | undefined)?.includes(key))
              problems.push(`${path}: map key ${key} not required`);
          }
        }
      });
      expect(problems).toEqual([]);
    },
  );

  it.each(rendered)("$file has only CEL rules that compile", ({ yaml }) => {
    const schema = parse(yaml).spec.versions[0].schema.openAPIV3Schema as Node;
    const rules: string[] = [
      ...((schema["x-kubernetes-validations"] as { rule: string }[]) ?? []).map((r) => r.rule),
    ];
    walk(schema, "", (node) => {
      for (const rule of (node["x-kubernetes-validations"] as { rule: string }[] | undefined) ?? [])
        rules.push(rule.rule);
    });
    expect(rules.length).toBeGreaterThan(0);
    const broken = rules.filter((rule) => {
      try {
        parseCel(rule);
        return false;
      } catch {
        return true;
      }
    });
    expect(broken).toEqual([]);
    // cel-go refuses escapes such as \. or \/ in string literals (its unescape knows only a few),
    // which @bufbuild/cel lets through; rules are written with character classes instead.
    expect(rules.filter((rule) => /\\(?![\\'"nrt])/.test(rule))).toEqual([]);
  });

  it("makes the ImageBuild spec immutable and exposes the status subresource and printer columns", () => {
    const crd = parse(rendered.find((c) => c.file.includes("imagebuilds"))!.yaml);
    const version = crd.spec.versions[0];
    expect(version.subresources).toEqual({ status: {} });
    expect(
      version.schema.openAPIV3Schema.properties.spec["x-kubernetes-validations"],
    ).toContainEqual(expect.objectContaining({ rule: "self == oldSelf" }));
    expect(version.additionalPrinterColumns.map((c: { name: string }) => c.name)).toEqual(
      expect.arrayContaining(["Phase", "Image", "Digest", "Age"]),
    );
    expect(crd.spec.names).toMatchObject({ shortNames: ["ib"], categories: ["buildfarm"] });
  });
});
