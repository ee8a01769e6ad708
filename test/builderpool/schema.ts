// Validates generated objects two ways: against the upstream OpenAPI schemas (kubernetes-models,
// which checks types, enums and required fields but lets unknown fields through), and field by
// field against client-node's models, which catches a misspelt or misplaced field.

import type { KubernetesObject } from "@kubernetes/client-node";
import * as k8s from "@kubernetes/client-node";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { StatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Secret } from "kubernetes-models/v1/Secret";
import { Service } from "kubernetes-models/v1/Service";

type Validating = { validate(): void };
const MODELS: Record<string, { model: new (data: never) => Validating; type: string }> = {
  Deployment: { model: Deployment as never, type: "V1Deployment" },
  StatefulSet: { model: StatefulSet as never, type: "V1StatefulSet" },
  Service: { model: Service as never, type: "V1Service" },
  ConfigMap: { model: ConfigMap as never, type: "V1ConfigMap" },
  Secret: { model: Secret as never, type: "V1Secret" },
  PodDisruptionBudget: { model: PodDisruptionBudget as never, type: "V1PodDisruptionBudget" },
  NetworkPolicy: { model: NetworkPolicy as never, type: "V1NetworkPolicy" },
};

const SCALARS = new Set(["string", "number", "boolean", "Date", "object", "any", "IntOrString"]);

interface Attribute {
  name: string;
  baseName: string;
  type: string;
}

/** Paths of fields the client-node model of `type` does not know, by their wire names. */
export function unknownFields(value: unknown, type: string, path = ""): string[] {
  if (value === undefined || value === null || SCALARS.has(type)) return [];
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    return (value as unknown[]).flatMap((item, index) =>
      unknownFields(item, array[1] as string, `${path}[${index}]`),
    );
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    return Object.entries(value as Record<string, unknown>).flatMap(([key, item]) =>
      unknownFields(item, map[1] as string, `${path}.${key}`),
    );
  }
  const model = (k8s as unknown as Record<string, { getAttributeTypeMap?: () => Attribute[] }>)[
    type
  ];
  if (!model?.getAttributeTypeMap) throw new Error(`no client-node model ${type} at ${path}`);
  const attributes = model.getAttributeTypeMap();
  return Object.entries(value as Record<string, unknown>).flatMap(([key, item]) => {
    const attribute = attributes.find((candidate) => candidate.baseName === key);
    if (!attribute) return [`${path}.${key}`];
    return unknownFields(item, attribute.type, `${path}.${key}`);
  });
}

/** Throws with every problem when the object is not valid for its kind. */
export function validateObject(object: KubernetesObject): void {
  const entry = MODELS[object.kind ?? ""];
  if (!entry) throw new Error(`no schema for kind ${object.kind}`);
  // Round-trip through JSON first: what gets validated is what would go on the wire.
  const wire = JSON.parse(JSON.stringify(object));
  new entry.model(wire as never).validate();
  const unknown = unknownFields(wire, entry.type);
  if (unknown.length > 0) {
    throw new Error(
      `${object.kind} ${object.metadata?.name} has unknown fields: ${unknown.join(", ")}`,
    );
  }
}
