// A container's environment as the kubelet builds it: envFrom, env with valueFrom
// (fieldRef, secretKeyRef, configMapKeyRef) and $(VAR) expansion, which also applies to the
// command and args.
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IPod } from "kubernetes-models/v1/Pod";
import type { KubeObject, Stored } from "../objects.ts";
import type { Store } from "../store.ts";
import { fieldRefValue } from "./sandbox.ts";

/** A reference the container needs that does not exist yet (CreateContainerConfigError). */
export class ConfigError extends Error {}

type DataObject = KubeObject & { data?: Record<string, string> };

function lookup(
  store: Store,
  kind: "secrets" | "configmaps",
  namespace: string,
  name: string,
  key: string | undefined,
  optional: boolean | undefined,
): string | Record<string, string> | undefined {
  const object = store.get<DataObject>(kind, namespace, name);
  const word = kind === "secrets" ? "secret" : "configmap";
  if (!object) {
    if (optional) return undefined;
    throw new ConfigError(`${word} "${name}" not found`);
  }
  const decode = (value: string) =>
    kind === "secrets" ? Buffer.from(value, "base64").toString("utf8") : value;
  if (key === undefined)
    return Object.fromEntries(Object.entries(object.data ?? {}).map(([k, v]) => [k, decode(v)]));
  const value = object.data?.[key];
  if (value === undefined) {
    if (optional) return undefined;
    throw new ConfigError(
      `couldn't find key ${key} in ${kind === "secrets" ? "Secret" : "ConfigMap"} ${namespace}/${name}`,
    );
  }
  return decode(value);
}

/** $(VAR) expansion as the kubelet does it: $$ escapes, unknown references stay as written. */
export function expand(text: string, env: Record<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (match, name: string | undefined) => {
    if (match === "$$") return "$";
    return name !== undefined && Object.hasOwn(env, name) ? env[name]! : match;
  });
}

export function resolveEnv(
  pod: Stored<IPod>,
  container: Stored<IContainer>,
  store: Store,
): Record<string, string> {
  const namespace = pod.metadata?.namespace ?? "default";
  const env: Record<string, string> = {
    HOSTNAME: pod.spec?.hostname ?? pod.metadata?.name ?? "",
    KUBERNETES_SERVICE_HOST: "10.96.0.1",
    KUBERNETES_SERVICE_PORT: "443",
    KUBERNETES_SERVICE_PORT_HTTPS: "443",
    KUBERNETES_PORT: "tcp://10.96.0.1:443",
  };
  for (const source of container.envFrom ?? []) {
    const prefix = source.prefix ?? "";
    const values = source.configMapRef
      ? lookup(
          store,
          "configmaps",
          namespace,
          source.configMapRef.name ?? "",
          undefined,
          source.configMapRef.optional,
        )
      : source.secretRef
        ? lookup(
            store,
            "secrets",
            namespace,
            source.secretRef.name ?? "",
            undefined,
            source.secretRef.optional,
          )
        : undefined;
    for (const [key, value] of Object.entries((values ?? {}) as Record<string, string>))
      env[prefix + key] = value;
  }
  for (const variable of container.env ?? []) {
    const from = variable.valueFrom;
    let value: string | undefined;
    if (!from) value = expand(variable.value ?? "", env);
    else if (from.fieldRef) value = fieldRefValue(pod, from.fieldRef.fieldPath);
    else if (from.secretKeyRef)
      value = lookup(
        store,
        "secrets",
        namespace,
        from.secretKeyRef.name ?? "",
        from.secretKeyRef.key,
        from.secretKeyRef.optional,
      ) as string | undefined;
    else if (from.configMapKeyRef)
      value = lookup(
        store,
        "configmaps",
        namespace,
        from.configMapKeyRef.name ?? "",
        from.configMapKeyRef.key,
        from.configMapKeyRef.optional,
      ) as string | undefined;
    else value = "";
    if (value !== undefined) env[variable.name] = value;
  }
  return env;
}
