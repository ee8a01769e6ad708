// The pool's PKI as Kubernetes objects: the CA Secret and the builders' server certificate
// Secret, kept as they are while valid and re-issued when the renewal policy says so. No I/O:
// the reconciler passes what it read and writes back what this returns.
import type { V1Secret } from "@kubernetes/client-node";
import type { BuilderPool } from "../api/resources.ts";
import { builderName, caSecretName, headlessServiceName, serverSecretName } from "../naming.ts";
import {
  type CertificateAuthority,
  createCertificateAuthority,
  issueServerCertificate,
} from "../pki/certificates.ts";
import { certificateHash, needsRenewal, type RenewalReason } from "../pki/renewal.ts";
import { caSecretData, readCaSecret, readTlsSecret, tlsSecretData } from "../pki/secrets.ts";
import { DEFAULT_CLUSTER_DOMAIN } from "./context.ts";
import { childMeta } from "./meta.ts";

/**
 * The names one architecture's builders answer to: the Service in every form a client in the
 * cluster may use (a build routed to one Deployment pod dials its IP and checks the Service
 * name), and any single label under the headless Service, which covers StatefulSet pods
 * (`<pool>-<arch>-0.<headless>…`) and CoreDNS's `10-1-2-3.<headless>…` names of the others.
 */
export function builderDnsNames(
  pool: BuilderPool,
  arch: string,
  clusterDomain = DEFAULT_CLUSTER_DOMAIN,
): string[] {
  const ns = pool.metadata.namespace;
  const service = builderName(pool.metadata.name, arch);
  const headless = headlessServiceName(pool.metadata.name, arch);
  return [
    service,
    `${service}.${ns}`,
    `${service}.${ns}.svc`,
    `${service}.${ns}.svc.${clusterDomain}`,
    `*.${headless}.${ns}.svc`,
    `*.${headless}.${ns}.svc.${clusterDomain}`,
  ];
}

/** Every name the one server certificate carries: all architectures of the pool. */
export function serverCertificateNames(pool: BuilderPool, clusterDomain?: string): string[] {
  return pool.spec.architectures.flatMap((arch) => builderDnsNames(pool, arch.name, clusterDomain));
}

export const caCommonName = (pool: BuilderPool) =>
  `buildfarm CA ${pool.metadata.namespace}/${pool.metadata.name}`.slice(0, 64);
export const serverCommonName = (pool: BuilderPool) =>
  `buildkitd ${pool.metadata.namespace}/${pool.metadata.name}`.slice(0, 64);

export interface StoredSecrets {
  caSecret?: V1Secret;
  serverSecret?: V1Secret;
}

export interface Reissue {
  reason: RenewalReason;
  message: string;
}

export interface PoolCertificates {
  caSecret: V1Secret;
  serverSecret: V1Secret;
  /** What was issued in this call and why (for Events); empty when both were kept. */
  issued: { ca?: Reissue; server?: Reissue };
  /** certificateHash(server certificate, CA) for the builder pod template. */
  certHash: string;
  /** When the server certificate expires (status.certificateNotAfter). */
  notAfter: Date;
  /** The earliest moment either certificate must be renewed: requeue then. */
  renewAt: Date;
  /** The CA, for whoever issues client certificates in the same pass. */
  ca: CertificateAuthority;
}

function secret(pool: BuilderPool, name: string, type: string, data: Record<string, string>) {
  const object: V1Secret = {
    apiVersion: "v1",
    kind: "Secret",
    metadata: childMeta(pool, name),
    type,
    data,
  };
  return object;
}

/** The CA Secret for `ca`. Opaque: it is not a serving certificate. */
export function caSecret(pool: BuilderPool, data: Record<string, string>): V1Secret {
  return secret(pool, caSecretName(pool.metadata.name), "Opaque", data);
}

/** The builders' kubernetes.io/tls Secret, with the CA as ca.crt (buildkitd's --tlscacert). */
export function serverSecret(pool: BuilderPool, data: Record<string, string>): V1Secret {
  return secret(pool, serverSecretName(pool.metadata.name), "kubernetes.io/tls", data);
}

function decideCa(stored: V1Secret | undefined, now: Date) {
  if (!stored) {
    return { reissue: { reason: "Missing", message: "the pool has no CA yet" } as Reissue };
  }
  let ca: CertificateAuthority;
  try {
    ca = readCaSecret(stored.data);
  } catch (error) {
    return {
      reissue: {
        reason: "Unreadable",
        message: `the CA Secret cannot be used: ${error instanceof Error ? error.message : "unreadable"}`,
      } as Reissue,
    };
  }
  const decision = needsRenewal(ca.certPem, { now });
  if (decision.renew) return { reissue: { reason: decision.reason, message: decision.message } };
  return { ca, renewAt: decision.renewAt };
}

/**
 * The CA and server Secrets the pool should have, given those stored. A valid stored Secret is
 * returned with its data untouched (so comparing hashes finds nothing to write); a missing,
 * damaged or ageing one is re-issued. A new CA always brings a new server certificate.
 */
export async function ensureCertificates(
  pool: BuilderPool,
  stored: StoredSecrets,
  options: { now: Date; clusterDomain?: string },
): Promise<PoolCertificates> {
  const { now } = options;
  const issued: PoolCertificates["issued"] = {};

  const caDecision = decideCa(stored.caSecret, now);
  let ca: CertificateAuthority;
  let caData: Record<string, string>;
  let caRenewAt: Date;
  if ("ca" in caDecision && caDecision.ca && stored.caSecret?.data) {
    ca = caDecision.ca;
    caData = stored.caSecret.data;
    caRenewAt = caDecision.renewAt;
  } else {
    const created = await createCertificateAuthority({ commonName: caCommonName(pool), now });
    ca = created;
    caData = caSecretData(created);
    const decision = needsRenewal(created.certPem, { now });
    caRenewAt = decision.renew ? now : decision.renewAt;
    issued.ca = caDecision.reissue;
  }

  const sans = serverCertificateNames(pool, options.clusterDomain);
  const current = readTlsSecret(stored.serverSecret?.data);
  let reissue: Reissue | undefined;
  if (issued.ca && current.certPem !== undefined) {
    reissue = { reason: "IssuerChanged", message: "the pool has a new CA" };
  } else if (!issued.ca) {
    const decision = needsRenewal(current.certPem, {
      now,
      sans,
      caPem: ca.certPem,
      key: current.key,
    });
    if (decision.renew) reissue = { reason: decision.reason, message: decision.message };
    else if (current.key === undefined) {
      reissue = { reason: "KeyMismatch", message: "the stored key is missing or unreadable" };
    } else if (current.caPem === undefined || !safeEqualHash(current.caPem, ca.certPem)) {
      reissue = {
        reason: "IssuerChanged",
        message: "the stored ca.crt is not the pool's CA",
      };
    }
  }

  let serverData: Record<string, string>;
  let serverPem: string;
  if (reissue || !stored.serverSecret?.data || current.certPem === undefined) {
    const server = await issueServerCertificate(ca, {
      commonName: serverCommonName(pool),
      dnsNames: sans,
      now,
    });
    serverData = tlsSecretData(server);
    serverPem = server.certPem;
    issued.server = reissue ?? { reason: "Missing", message: "no server certificate stored yet" };
  } else {
    serverData = stored.serverSecret.data;
    serverPem = current.certPem;
  }
  const serverDecision = needsRenewal(serverPem, { now });
  if (serverDecision.renew) {
    // Only when the CA itself has less life left than a renewal window: nothing better exists.
    throw new Error(`the new server certificate is already due: ${serverDecision.message}`);
  }
  return {
    caSecret: caSecret(pool, caData),
    serverSecret: serverSecret(pool, serverData),
    issued,
    certHash: certificateHash(serverPem, ca.certPem),
    notAfter: serverDecision.notAfter,
    renewAt: caRenewAt < serverDecision.renewAt ? caRenewAt : serverDecision.renewAt,
    ca,
  };
}

function safeEqualHash(a: string, b: string): boolean {
  try {
    return certificateHash(a) === certificateHash(b);
  } catch {
    return false;
  }
}
