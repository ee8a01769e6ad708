// What a certificate says, whether it must be re-issued, and a hash that changes when it does.
// Pure functions of the PEM text and `now`, in the style of cert-manager's trigger policies: the
// reconciler reads the Secret, asks needsRenewal, and issues only when told to.
import { createHash, X509Certificate as NodeCertificate } from "node:crypto";
import { keyMatchesCertificate, type PrivateKey } from "./keys.ts";
import { pemDecodeAll } from "./pem.ts";
import { x509 } from "./x509.ts";

export interface CertificateInfo {
  subject: string;
  issuer: string;
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
  isCA: boolean;
  /** DNS names and IP addresses from subjectAltName, as written. */
  sans: string[];
}

/** Reads a certificate; throws a message without its content when the text is not one. */
export function certificateInfo(certPem: string): CertificateInfo {
  let certificate: NodeCertificate;
  try {
    certificate = new NodeCertificate(certPem);
  } catch {
    throw new Error("not a PEM certificate");
  }
  const san = new x509.X509Certificate(certificate.raw).getExtension(
    x509.SubjectAlternativeNameExtension,
  );
  return {
    subject: certificate.subject,
    issuer: certificate.issuer,
    serialNumber: certificate.serialNumber.toLowerCase(),
    notBefore: certificate.validFromDate,
    notAfter: certificate.validToDate,
    isCA: certificate.ca,
    sans: (san?.names.items ?? [])
      .filter((name) => name.type === "dns" || name.type === "ip")
      .map((name) => name.value),
  };
}

/** The fraction of a certificate's lifetime after which it is renewed. */
export const RENEW_AFTER_FRACTION = 2 / 3;

export type RenewalReason =
  | "Missing"
  | "Unreadable"
  | "NotYetValid"
  | "Expired"
  | "NearExpiry"
  | "SANsChanged"
  | "IssuerChanged"
  | "KeyMismatch";

export type RenewalDecision =
  | {
      renew: false;
      reason: "Valid";
      message: string;
      notAfter: Date;
      /** When two thirds of its life will have passed: requeue then. */
      renewAt: Date;
    }
  | { renew: true; reason: RenewalReason; message: string };

export interface RenewalOptions {
  now: Date;
  /** The names the certificate must carry; order and case do not matter. */
  sans?: readonly string[];
  /** The CA that must have signed it (the signature is checked, not just the issuer name). */
  caPem?: string;
  /** The private key stored beside it, which must match. */
  key?: PrivateKey;
}

function renewAt(notBefore: Date, notAfter: Date): Date {
  const life = notAfter.getTime() - notBefore.getTime();
  return new Date(notBefore.getTime() + Math.floor(life * RENEW_AFTER_FRACTION));
}

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  const left = new Set(a.map((name) => name.toLowerCase()));
  const right = new Set(b.map((name) => name.toLowerCase()));
  return left.size === right.size && [...left].every((name) => right.has(name));
}

function describeNames(wanted: readonly string[], actual: readonly string[]): string {
  const have = new Set(actual.map((name) => name.toLowerCase()));
  const want = new Set(wanted.map((name) => name.toLowerCase()));
  const missing = [...want].filter((name) => !have.has(name));
  const extra = [...have].filter((name) => !want.has(name));
  const parts = [];
  if (missing.length) parts.push(`missing ${missing.join(", ")}`);
  if (extra.length) parts.push(`no longer needed ${extra.join(", ")}`);
  return parts.join("; ");
}

/**
 * Whether a certificate must be re-issued: when it is absent or unreadable, outside its
 * validity, past two thirds of its life, carries other names than wanted, was not signed by the
 * expected CA, or does not match its key. Otherwise says when it will need renewing.
 */
export function needsRenewal(
  certPem: string | undefined,
  options: RenewalOptions,
): RenewalDecision {
  if (certPem === undefined || certPem.trim() === "") {
    return { renew: true, reason: "Missing", message: "no certificate stored yet" };
  }
  let info: CertificateInfo;
  let certificate: NodeCertificate;
  try {
    info = certificateInfo(certPem);
    certificate = new NodeCertificate(certPem);
  } catch {
    return {
      renew: true,
      reason: "Unreadable",
      message: "the stored certificate is not a PEM certificate",
    };
  }
  const now = options.now.getTime();
  if (now < info.notBefore.getTime()) {
    return {
      renew: true,
      reason: "NotYetValid",
      message: `the certificate is valid only from ${info.notBefore.toISOString()}`,
    };
  }
  if (now >= info.notAfter.getTime()) {
    return {
      renew: true,
      reason: "Expired",
      message: `the certificate expired at ${info.notAfter.toISOString()}`,
    };
  }
  if (options.caPem !== undefined) {
    let signedByCa = false;
    try {
      const ca = new NodeCertificate(options.caPem);
      signedByCa = certificate.checkIssued(ca) && certificate.verify(ca.publicKey);
    } catch {
      signedByCa = false;
    }
    if (!signedByCa) {
      return {
        renew: true,
        reason: "IssuerChanged",
        message: "the certificate was not signed by the current CA",
      };
    }
  }
  if (options.key !== undefined && !keyMatchesCertificate(options.key, certPem)) {
    return {
      renew: true,
      reason: "KeyMismatch",
      message: "the stored key does not belong to the certificate",
    };
  }
  if (options.sans !== undefined && !sameNames(options.sans, info.sans)) {
    return {
      renew: true,
      reason: "SANsChanged",
      message: `the certificate's names changed: ${describeNames(options.sans, info.sans)}`,
    };
  }
  const at = renewAt(info.notBefore, info.notAfter);
  if (now >= at.getTime()) {
    return {
      renew: true,
      reason: "NearExpiry",
      message: `two thirds of the certificate's life have passed; it expires at ${info.notAfter.toISOString()}`,
    };
  }
  return {
    renew: false,
    reason: "Valid",
    message: `valid until ${info.notAfter.toISOString()}, renewed from ${at.toISOString()}`,
    notAfter: info.notAfter,
    renewAt: at,
  };
}

/**
 * A short hash of certificates (their DER bytes, so PEM line wrapping does not matter). On the
 * builder pod template it rolls the pods when the server certificate or its CA changes, since
 * buildkitd reads its TLS files only at start.
 */
export function certificateHash(...pems: string[]): string {
  const hash = createHash("sha256");
  for (const pem of pems) {
    for (const der of pemDecodeAll(pem, "CERTIFICATE")) {
      hash.update(der);
    }
  }
  return hash.digest("hex").slice(0, 16);
}
