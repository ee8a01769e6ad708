// Which resources test/kube serves: the built-in kinds the operator touches and any CRD
// created through the API (crds/*.yaml at start), with what the API server knows about each
// (scope, subresources, generation, delete behaviour) and the discovery documents it serves.
import { CrdValidator } from "./crd-validation.ts";
import type { KubeObject } from "./objects.ts";
import type { GroupKind, GroupResource } from "./status.ts";

export interface ResourceInfo extends GroupResource {
  version: string;
  kind: string;
  listKind: string;
  singular: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  /** Subresources served besides the object itself. */
  subresources: ("status" | "log" | "finalize" | "binding")[];
  /** `spec`: bumped when anything outside metadata and status changes; `none`: never set. */
  generation: "spec" | "none";
  /** A DELETE answers with the object (pods, services...) rather than a Status. */
  returnDeletedObject: boolean;
  /** What a DELETE without propagationPolicy does to dependents (batch/v1 Jobs orphan). */
  defaultPropagation: "Background" | "Orphan";
  /** Built-in kinds: list items carry no kind/apiVersion, strategic merge patch works. */
  builtin: boolean;
  /** A PUT may omit metadata.resourceVersion (false for custom resources). */
  allowUnconditionalUpdate: boolean;
  /** Fields a fieldSelector may use. */
  fieldSelectors: string[];
  nameRule: "subdomain" | "label" | "dns1035";
  /** The custom resource's schema, for custom resources. */
  validator?: CrdValidator;
  printerColumns?: unknown[];
}

export const apiVersionOf = (info: ResourceInfo) =>
  info.group ? `${info.group}/${info.version}` : info.version;

export const groupKindOf = (info: ResourceInfo): GroupKind => ({
  group: info.group,
  kind: info.kind,
});

/** `pods`, `jobs.batch`, `imagebuilds.buildfarm.dev`: how tests name a resource. */
export const resourceId = (info: GroupResource) =>
  info.group ? `${info.resource}.${info.group}` : info.resource;

const META_FIELDS = ["metadata.name", "metadata.namespace"];

function builtin(
  group: string,
  version: string,
  resource: string,
  kind: string,
  options: Partial<ResourceInfo> = {},
): ResourceInfo {
  return {
    group,
    version,
    resource,
    kind,
    listKind: `${kind}List`,
    singular: kind.toLowerCase(),
    namespaced: true,
    shortNames: [],
    categories: [],
    subresources: [],
    generation: "none",
    returnDeletedObject: false,
    defaultPropagation: "Background",
    builtin: true,
    allowUnconditionalUpdate: true,
    fieldSelectors: META_FIELDS,
    nameRule: "subdomain",
    ...options,
  };
}

export function builtinResources(): ResourceInfo[] {
  return [
    builtin("", "v1", "namespaces", "Namespace", {
      namespaced: false,
      shortNames: ["ns"],
      subresources: ["status", "finalize"],
      returnDeletedObject: true,
      nameRule: "label",
      fieldSelectors: [...META_FIELDS, "status.phase"],
    }),
    builtin("", "v1", "nodes", "Node", {
      namespaced: false,
      shortNames: ["no"],
      subresources: ["status"],
      fieldSelectors: [...META_FIELDS, "spec.unschedulable"],
    }),
    builtin("", "v1", "pods", "Pod", {
      shortNames: ["po"],
      categories: ["all"],
      subresources: ["status", "log", "binding"],
      returnDeletedObject: true,
      fieldSelectors: [
        ...META_FIELDS,
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
      ],
    }),
    builtin("", "v1", "secrets", "Secret", { fieldSelectors: [...META_FIELDS, "type"] }),
    builtin("", "v1", "configmaps", "ConfigMap", { shortNames: ["cm"] }),
    builtin("", "v1", "services", "Service", {
      shortNames: ["svc"],
      categories: ["all"],
      subresources: ["status"],
      returnDeletedObject: true,
      nameRule: "dns1035",
    }),
    builtin("", "v1", "endpoints", "Endpoints", { shortNames: ["ep"] }),
    builtin("", "v1", "serviceaccounts", "ServiceAccount", {
      shortNames: ["sa"],
      returnDeletedObject: true,
    }),
    builtin("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", {
      shortNames: ["pvc"],
      subresources: ["status"],
      returnDeletedObject: true,
    }),
    builtin("", "v1", "events", "Event", {
      shortNames: ["ev"],
      fieldSelectors: [
        ...META_FIELDS,
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
      ],
    }),
    builtin("apps", "v1", "deployments", "Deployment", {
      shortNames: ["deploy"],
      categories: ["all"],
      subresources: ["status"],
      generation: "spec",
    }),
    builtin("apps", "v1", "replicasets", "ReplicaSet", {
      shortNames: ["rs"],
      categories: ["all"],
      subresources: ["status"],
      generation: "spec",
    }),
    builtin("apps", "v1", "statefulsets", "StatefulSet", {
      shortNames: ["sts"],
      categories: ["all"],
      subresources: ["status"],
      generation: "spec",
    }),
    builtin("batch", "v1", "jobs", "Job", {
      categories: ["all"],
      subresources: ["status"],
      generation: "spec",
      defaultPropagation: "Orphan",
      fieldSelectors: [...META_FIELDS, "status.successful"],
    }),
    builtin("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", {
      shortNames: ["pdb"],
      subresources: ["status"],
      generation: "spec",
    }),
    builtin("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", {
      shortNames: ["netpol"],
      generation: "spec",
    }),
    builtin("coordination.k8s.io", "v1", "leases", "Lease"),
    builtin("events.k8s.io", "v1", "events", "Event", {
      shortNames: ["ev"],
      fieldSelectors: [
        ...META_FIELDS,
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "reason",
        "reportingController",
        "type",
      ],
    }),
    builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", {
      namespaced: false,
      shortNames: ["crd", "crds"],
      subresources: ["status"],
      generation: "spec",
    }),
  ];
}

interface CrdVersion {
  name: string;
  served?: boolean;
  storage?: boolean;
  subresources?: { status?: unknown };
  schema?: { openAPIV3Schema?: Record<string, unknown> };
  additionalPrinterColumns?: unknown[];
}

interface Crd extends KubeObject {
  spec: {
    group: string;
    scope: "Namespaced" | "Cluster";
    names: {
      kind: string;
      listKind?: string;
      plural: string;
      singular?: string;
      shortNames?: string[];
      categories?: string[];
    };
    versions: CrdVersion[];
  };
}

/** What a CustomResourceDefinition registers (its storage version; one version served). */
export function resourceFromCrd(object: KubeObject): ResourceInfo {
  const crd = object as Crd;
  const version = crd.spec.versions.find((v) => v.storage) ?? crd.spec.versions[0];
  if (!version) throw new Error(`CRD ${crd.metadata.name} has no version`);
  const schema = version.schema?.openAPIV3Schema ?? {
    type: "object",
    "x-kubernetes-preserve-unknown-fields": true,
  };
  const names = crd.spec.names;
  return {
    group: crd.spec.group,
    version: version.name,
    resource: names.plural,
    kind: names.kind,
    listKind: names.listKind ?? `${names.kind}List`,
    singular: names.singular ?? names.kind.toLowerCase(),
    namespaced: crd.spec.scope === "Namespaced",
    shortNames: names.shortNames ?? [],
    categories: names.categories ?? [],
    subresources: version.subresources?.status !== undefined ? ["status"] : [],
    generation: "spec",
    returnDeletedObject: false,
    defaultPropagation: "Background",
    builtin: false,
    allowUnconditionalUpdate: false,
    fieldSelectors: META_FIELDS,
    nameRule: "subdomain",
    validator: new CrdValidator(schema),
    printerColumns: version.additionalPrinterColumns ?? [],
  };
}

const VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/** APIResourceList for one group version. */
export function apiResourceList(groupVersion: string, resources: ResourceInfo[]) {
  const out: Record<string, unknown>[] = [];
  for (const info of resources) {
    out.push({
      name: info.resource,
      singularName: info.singular,
      namespaced: info.namespaced,
      kind: info.kind,
      verbs: VERBS,
      ...(info.shortNames.length ? { shortNames: info.shortNames } : {}),
      ...(info.categories.length ? { categories: info.categories } : {}),
    });
    for (const sub of info.subresources) {
      if (sub === "binding") continue;
      out.push({
        name: `${info.resource}/${sub}`,
        singularName: "",
        namespaced: info.namespaced,
        kind: sub === "log" ? "Pod" : info.kind,
        verbs:
          sub === "log" ? ["get"] : sub === "finalize" ? ["update"] : ["get", "patch", "update"],
      });
    }
  }
  return { kind: "APIResourceList", apiVersion: "v1", groupVersion, resources: out };
}

export function apiGroup(name: string, version: string) {
  const groupVersion = { groupVersion: `${name}/${version}`, version };
  return {
    kind: "APIGroup",
    apiVersion: "v1",
    name,
    versions: [groupVersion],
    preferredVersion: groupVersion,
  };
}
