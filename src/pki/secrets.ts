// The data maps of the Secrets that carry certificates, in the layouts naming.ts fixes: the CA
// Secret (ca.crt, ca.key) and kubernetes.io/tls Secrets (tls.crt, tls.key, ca.crt) for the
// builders and for each build. Values are base64, as a Secret's `data` holds them.
import { createHash } from "node:crypto";
import { CA_KEYS, TLS_KEYS } from "../naming.ts";
import {
  type CertificateAuthority,
  type IssuedCertificate,
  loadCertificateAuthority,
} from "./certificates.ts";
import { PrivateKey } from "./keys.ts";

type SecretData = Record<string, string>;

const encode = (text: string) => Buffer.from(text, "utf8").toString("base64");

function decode(data: SecretData | undefined, key: string): string | undefined {
  const value = data?.[key];
  return value === undefined ? undefined : Buffer.from(value, "base64").toString("utf8");
}

/** `data` of the CA Secret. The one place the CA key leaves its wrapper. */
export function caSecretData(ca: CertificateAuthority): SecretData {
  return { [CA_KEYS.cert]: encode(ca.certPem), [CA_KEYS.key]: encode(ca.key.exportPem()) };
}

/** `data` of a kubernetes.io/tls Secret for an issued certificate, with its CA as ca.crt. */
export function tlsSecretData(issued: IssuedCertificate): SecretData {
  return {
    [TLS_KEYS.ca]: encode(issued.caPem),
    [TLS_KEYS.cert]: encode(issued.certPem),
    [TLS_KEYS.key]: encode(issued.key.exportPem()),
  };
}

/**
 * The CA stored in a CA Secret's data. Throws (without quoting the key) when an entry is
 * missing, unreadable or the key does not match the certificate.
 */
export function readCaSecret(data: SecretData | undefined): CertificateAuthority {
  const certData = data?.[CA_KEYS.cert];
  const keyData = data?.[CA_KEYS.key];
  if (certData === undefined || keyData === undefined) {
    throw new Error(`the CA Secret must hold ${CA_KEYS.cert} and ${CA_KEYS.key}`);
  }
  // Every build reads its pool's CA Secret anew (Secrets are never cached whole), and parsing
  // and checking the key was a quarter of a build's CPU. The loaded CA is kept by a digest of
  // the Secret's two entries, so a rotated or replaced CA (other bytes) is loaded and checked
  // again, and the cache keeps no Secret text of its own.
  const digest = createHash("sha256").update(certData).update("\0").update(keyData).digest("hex");
  const known = loadedCas.get(digest);
  if (known) return known;
  const ca = loadCertificateAuthority(
    Buffer.from(certData, "base64").toString("utf8"),
    Buffer.from(keyData, "base64").toString("utf8"),
  );
  // A few pools per operator: the bound only stops a rotation loop from growing it.
  if (loadedCas.size >= 64) loadedCas.clear();
  loadedCas.set(digest, ca);
  return ca;
}

const loadedCas = new Map<string, CertificateAuthority>();

export interface StoredTls {
  certPem?: string;
  caPem?: string;
  /** Undefined when absent or unreadable; needsRenewal then reports KeyMismatch or Missing. */
  key?: PrivateKey;
}

/** What a kubernetes.io/tls Secret holds, tolerating damage so renewal can replace it. */
export function readTlsSecret(data: SecretData | undefined): StoredTls {
  const keyPem = decode(data, TLS_KEYS.key);
  let key: PrivateKey | undefined;
  if (keyPem !== undefined) {
    try {
      key = PrivateKey.fromPem(keyPem, TLS_KEYS.key);
    } catch {
      key = undefined;
    }
  }
  return { certPem: decode(data, TLS_KEYS.cert), caPem: decode(data, TLS_KEYS.ca), key };
}
