import { CrdValidator } from "../kube/crd-validation.ts";
import { readYaml } from "./files.ts";

type Crd = { spec: { versions: { schema: { openAPIV3Schema: Record<string, unknown> } }[] } };

/** The checked-in CRD files, as the API server would load them. */
export function loadCrd(plural: "builderpools" | "imagebuilds"): Crd {
  return readYaml(`crds/buildfarm.dev_${plural}.yaml`) as unknown as Crd;
}

export function crdValidator(plural: "builderpools" | "imagebuilds"): CrdValidator {
  const version = loadCrd(plural).spec.versions[0];
  if (!version) throw new Error(`crds/buildfarm.dev_${plural}.yaml has no version`);
  return new CrdValidator(version.schema.openAPIV3Schema);
}
