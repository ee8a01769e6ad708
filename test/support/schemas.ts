// Validates Kubernetes objects against the upstream OpenAPI schemas that kubernetes-models
// ships (one class per apiVersion/kind, each with validate()).

type Validatable = { validate(): void };
type ModelClass = new (data: unknown) => Validatable;

const cache = new Map<string, ModelClass>();

async function modelFor(apiVersion: string, kind: string): Promise<ModelClass> {
  const key = `${apiVersion}/${kind}`;
  const cached = cache.get(key);
  if (cached) return cached;
  const path = apiVersion.includes("/") ? apiVersion : `v1`;
  const module = (await import(`kubernetes-models/${path}/${kind}`)) as Record<string, ModelClass>;
  const model = module[kind] ?? module.default;
  if (!model) throw new Error(`kubernetes-models has no ${apiVersion} ${kind}`);
  cache.set(key, model);
  return model;
}

/** Throws with the schema's complaint when the object is not valid upstream. */
export async function validateUpstream(object: {
  apiVersion?: string;
  kind?: string;
}): Promise<void> {
  if (!object.apiVersion || !object.kind) throw new Error("object has no apiVersion or kind");
  const Model = await modelFor(object.apiVersion, object.kind);
  new Model(object).validate();
}
