// The two Services per architecture: `<pool>-<arch>` load-balances builds over the ready
// builders; the headless `<pool>-<arch>-headless` gives each builder pod its own DNS name, so a
// build can be routed to a chosen builder (cache locality) and still verify its certificate.
import type { V1Service } from "@kubernetes/client-node";
import type { ArchitectureSpec } from "../api/builderpool.ts";
import type { BuilderPool } from "../api/resources.ts";
import { BUILDKIT_PORT, builderName, headlessServiceName } from "../naming.ts";
import { builderSelectorLabels, childMeta } from "./meta.ts";

export const BUILDKIT_PORT_NAME = "buildkit";

function service(pool: BuilderPool, arch: ArchitectureSpec, name: string, headless: boolean) {
  const service: V1Service = {
    apiVersion: "v1",
    kind: "Service",
    metadata: childMeta(pool, name, { arch: arch.name }),
    spec: {
      type: "ClusterIP",
      selector: builderSelectorLabels(pool.metadata.name, arch.name),
      ports: [
        {
          name: BUILDKIT_PORT_NAME,
          protocol: "TCP",
          port: BUILDKIT_PORT,
          targetPort: BUILDKIT_PORT_NAME,
        },
      ],
    },
  };
  if (headless && service.spec) {
    service.spec.clusterIP = "None";
    // Only ready builders get DNS records; a starting buildkitd refuses connections.
    service.spec.publishNotReadyAddresses = false;
  }
  return service;
}

export function builderService(pool: BuilderPool, arch: ArchitectureSpec): V1Service {
  return service(pool, arch, builderName(pool.metadata.name, arch.name), false);
}

export function headlessService(pool: BuilderPool, arch: ArchitectureSpec): V1Service {
  return service(pool, arch, headlessServiceName(pool.metadata.name, arch.name), true);
}

/**
 * Carries over what the API server assigned when the Service was created, for a replace: the
 * cluster IPs are immutable and a replace without them is refused.
 */
export function preserveServiceFields(current: V1Service, desired: V1Service): V1Service {
  const spec = current.spec;
  if (!spec || !desired.spec) return desired;
  return {
    ...desired,
    spec: {
      ...desired.spec,
      clusterIP: spec.clusterIP ?? desired.spec.clusterIP,
      ...(spec.clusterIPs ? { clusterIPs: spec.clusterIPs } : {}),
      ...(spec.ipFamilies ? { ipFamilies: spec.ipFamilies } : {}),
      ...(spec.ipFamilyPolicy ? { ipFamilyPolicy: spec.ipFamilyPolicy } : {}),
    },
  };
}
