// The writes a decision asks for (decide.ts's actions), in order. Every create is idempotent by
// name: one that finds its object already there (a cache behind the server, a restarted
// operator) is fine, and either way the object is expected until the cache shows it.
import type { KubernetesObject, V1Secret } from "@kubernetes/client-node";
import type { ImageBuild } from "../api/resources.ts";
import { COMPONENTS, caSecretName, LABELS, MANAGED_BY } from "../naming.ts";
import { clientCommonName, issueClientCertificate } from "../pki/certificates.ts";
import { readCaSecret, tlsSecretData } from "../pki/secrets.ts";
import { ownerReference } from "../runtime/apply.ts";
import {
  isAlreadyExists,
  type KubeClient,
  RESOURCES,
  type ResourceType,
} from "../runtime/client.ts";
import type { ReconcileContext } from "../runtime/controller.ts";
import { type Informer, keyOf } from "../runtime/informer.ts";
import type { Action } from "./decision.ts";
import type { Expectations } from "./expectations.ts";

export interface PerformContext {
  client: KubeClient;
  /** Where each create is recorded until the cache shows it. */
  expected: Expectations;
  /** The pools' CA Secrets, which sign the builds' client certificates. */
  secrets: Informer<V1Secret>;
  now: () => Date;
  log: ReconcileContext["log"];
}

export async function perform(
  context: PerformContext,
  build: ImageBuild,
  raw: KubernetesObject,
  actions: readonly Action[],
): Promise<void> {
  const { client, log } = context;
  const namespace = build.metadata.namespace;
  for (const action of actions) {
    switch (action.type) {
      case "CreateClientSecret":
        await createClientSecret(context, build, raw, action.name, action.pool);
        break;
      case "CreateConfigMap":
        await createIgnoringExisting(context, RESOURCES.configMap, action.object, raw);
        break;
      case "CreateJob":
        if (await createIgnoringExisting(context, RESOURCES.job, action.object, raw)) {
          log.info({ job: action.object.metadata?.name, platform: action.platform }, "job created");
        }
        break;
      case "DeleteJob":
        if (
          await client.delete(RESOURCES.job, namespace, action.name, {
            propagationPolicy: action.propagationPolicy,
          })
        ) {
          log.info({ job: action.name, reason: action.reason }, "job deleted");
        }
        break;
      case "DeleteSecret":
        await client.delete(RESOURCES.secret, namespace, action.name);
        break;
      case "DeleteConfigMap":
        await client.delete(RESOURCES.configMap, namespace, action.name);
        break;
    }
  }
}

/**
 * Creates an object; one that exists already (a cache behind the server) is fine. Either
 * way it is expected in the cache (see BuildQueues.expectedJobsOf).
 */
async function createIgnoringExisting(
  { client, expected }: PerformContext,
  type: ResourceType,
  object: KubernetesObject,
  owner: KubernetesObject,
): Promise<boolean> {
  let created = true;
  try {
    await client.create(type, object);
  } catch (error) {
    if (!isAlreadyExists(error)) throw error;
    created = false;
  }
  expected.expect(type.kind, object.metadata?.namespace ?? "", object.metadata?.name ?? "", {
    uid: owner.metadata?.uid ?? "",
    key: keyOf(owner),
  });
  return created;
}

/** A 24 h client certificate from the pool's CA, in a Secret the build owns. */
async function createClientSecret(
  context: PerformContext,
  build: ImageBuild,
  raw: KubernetesObject,
  name: string,
  pool: { name: string; namespace: string },
): Promise<void> {
  const caSecret = context.secrets.get(pool.namespace, caSecretName(pool.name));
  if (!caSecret)
    throw new Error(
      `the CA Secret of BuilderPool ${pool.namespace}/${pool.name} does not exist yet; the pool controller creates it`,
    );
  const issued = await issueClientCertificate(readCaSecret(caSecret.data), {
    commonName: clientCommonName(build.metadata.namespace, build.metadata.name),
    now: context.now(),
  });
  const secret: V1Secret = {
    apiVersion: "v1",
    kind: "Secret",
    type: "kubernetes.io/tls",
    metadata: {
      name,
      namespace: build.metadata.namespace,
      labels: {
        [LABELS.managedBy]: MANAGED_BY,
        [LABELS.build]: build.metadata.name,
        [LABELS.component]: COMPONENTS.build,
      },
      ownerReferences: [ownerReference(raw)],
    },
    data: tlsSecretData(issued),
  };
  await createIgnoringExisting(context, RESOURCES.secret, secret, raw);
}
