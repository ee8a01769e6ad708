// What the desired-state functions need besides the pool itself: facts the reconciler read from
// the cluster or was configured with. Keeping them in one value keeps those functions pure.
import { DEFAULT_BUILDKIT_IMAGE } from "../api/builderpool.ts";

export interface KubeVersion {
  major: number;
  minor: number;
}

export interface PoolContext {
  /** The API server's version, from GET /version (see parseKubeVersion). */
  serverVersion: KubeVersion;
  /** certificateHash(server cert, CA cert): a new certificate rolls the builder pods. */
  certHash: string;
  /** The operator's --buildkit-image, used by pools that kept the schema default. */
  defaultImage?: string;
  /** The cluster's DNS domain (kubelet --cluster-domain), cluster.local unless told. */
  clusterDomain?: string;
  /**
   * Replicas per architecture decided elsewhere (the queue-driven autoscaler); an architecture
   * missing here runs spec.architectures[].replicas.
   */
  replicas?: Readonly<Record<string, number>>;
  /**
   * The namespace the operator's pods run in, when it collects the builders' cache usage: the
   * pool's NetworkPolicy then admits them on the builders' port too (cache-usage.ts).
   */
  operatorNamespace?: string;
}

export const DEFAULT_CLUSTER_DOMAIN = "cluster.local";

/**
 * Reads the /version answer. Managed clusters report minors such as "30+" and git versions
 * such as "v1.30.2-eks-1a2b3c"; the major and minor numbers are what matter here.
 */
export function parseKubeVersion(info: {
  major?: string;
  minor?: string;
  gitVersion?: string;
}): KubeVersion {
  const major = Number.parseInt(info.major ?? "", 10);
  const minor = Number.parseInt(info.minor ?? "", 10);
  if (Number.isFinite(major) && Number.isFinite(minor)) return { major, minor };
  const match = /^v?(\d+)\.(\d+)/.exec(info.gitVersion ?? "");
  if (match) return { major: Number(match[1]), minor: Number(match[2]) };
  throw new Error(`cannot read the Kubernetes version from ${JSON.stringify(info).slice(0, 200)}`);
}

export function atLeast(version: KubeVersion, major: number, minor: number): boolean {
  return version.major > major || (version.major === major && version.minor >= minor);
}

/**
 * The image the builders run. The CRD defaults spec.buildkit.image to DEFAULT_BUILDKIT_IMAGE,
 * so a stored pool cannot say whether a person chose that value; an operator configured with
 * another default image applies it to pools that carry the schema default.
 */
export function builderImage(specImage: string | undefined, context: PoolContext): string {
  if (specImage === undefined || specImage === DEFAULT_BUILDKIT_IMAGE) {
    return context.defaultImage ?? DEFAULT_BUILDKIT_IMAGE;
  }
  return specImage;
}
