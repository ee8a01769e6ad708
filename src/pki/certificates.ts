// Certificate issuance for buildkitd mTLS: a CA per pool, a server certificate for the builders
// and short-lived client certificates for builds, all ECDSA P-256 signed with SHA-256.
// Every function takes `now`, so tests and renewal decisions are deterministic.
import { createHash, X509Certificate as NodeCertificate, randomBytes } from "node:crypto";
import { isIP } from "node:net";
import {
  bits,
  certificateParts,
  octets,
  oid,
  positiveInteger,
  publicKeyBits,
  sequence,
  TAG,
  time,
  tlv,
  utf8,
} from "./der.ts";
import {
  generateKeyObjects,
  generateKeyPair,
  keyMatchesCertificate,
  PrivateKey,
  SIGNING_ALGORITHM,
} from "./keys.ts";
import { pemEncode } from "./pem.ts";
import { x509 } from "./x509.ts";

export const HOUR_MS = 3_600_000;
export const DAY_MS = 24 * HOUR_MS;
export const CA_VALIDITY_MS = 365 * DAY_MS;
export const SERVER_VALIDITY_MS = 90 * DAY_MS;
export const CLIENT_VALIDITY_MS = 24 * HOUR_MS;
/** notBefore is set this far in the past, so a node whose clock runs behind accepts a new cert. */
export const CLOCK_SKEW_MS = 5 * 60_000;

export interface CertificateAuthority {
  certPem: string;
  key: PrivateKey;
}

export interface IssuedCertificate {
  /** The leaf certificate. */
  certPem: string;
  /** Its private key; prints as a redaction marker, exportPem() gives the PEM text. */
  key: PrivateKey;
  /** The CA that signed it, which is also what the peer's certificate is verified against. */
  caPem: string;
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
}

export interface CaOptions {
  commonName: string;
  now: Date;
  validForMs?: number;
}

export interface ServerCertificateOptions {
  commonName: string;
  /** DNS names; a leading `*.` label is a wildcard. */
  dnsNames: readonly string[];
  ipAddresses?: readonly string[];
  now: Date;
  validForMs?: number;
}

export interface ClientCertificateOptions {
  /** The identity the server sees, e.g. `<namespace>/<build>`. */
  commonName: string;
  now: Date;
  validForMs?: number;
}

const DNS_NAME = /^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** A random positive 128-bit serial number, as hex. */
function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] as number) & 0x7f;
  if (bytes[0] === 0) bytes[0] = 1;
  return bytes.toString("hex");
}

/** RFC 5280's upper bound for a common name. */
const MAX_COMMON_NAME = 64;

/**
 * A build's client certificate names it `<namespace>/<name>`; a namespace (63) and a build name
 * (52) can exceed the 64 characters a common name may hold, and then the start is kept with a
 * hash of the whole, so the name stays distinct and readable. (buildkitd does not read it: it is
 * for whoever looks at the certificate.)
 */
export function clientCommonName(namespace: string, name: string): string {
  const whole = `${namespace}/${name}`;
  if (whole.length <= MAX_COMMON_NAME) return whole;
  const hash = createHash("sha256").update(whole).digest("hex").slice(0, 16);
  return `${whole.slice(0, MAX_COMMON_NAME - hash.length - 1)}~${hash}`;
}

function checkCommonName(commonName: string): void {
  if (
    commonName.length === 0 ||
    commonName.length > MAX_COMMON_NAME ||
    /\p{Cc}/u.test(commonName)
  ) {
    throw new Error(
      `common name ${JSON.stringify(commonName.slice(0, 80))} must be 1 to 64 printable characters`,
    );
  }
}

function checkValidity(validForMs: number): void {
  if (!Number.isFinite(validForMs) || validForMs < 60_000) {
    throw new Error(`a certificate must be valid for at least a minute, not ${validForMs} ms`);
  }
}

function validityWindow(now: Date, validForMs: number, limit?: Date) {
  checkValidity(validForMs);
  const notBefore = new Date(now.getTime() - CLOCK_SKEW_MS);
  const wanted = new Date(now.getTime() + validForMs);
  // A certificate that outlives its CA would fail chain verification once the CA expires.
  const notAfter = limit && limit < wanted ? limit : wanted;
  // X.509 times have whole seconds; round so what we report is what the certificate says.
  return { notBefore: floorSecond(notBefore), notAfter: floorSecond(notAfter) };
}

function floorSecond(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}

/** A new self-signed CA that may sign leaf certificates only (path length 0). */
export async function createCertificateAuthority(
  options: CaOptions,
): Promise<CertificateAuthority & { notBefore: Date; notAfter: Date }> {
  checkCommonName(options.commonName);
  const { notBefore, notAfter } = validityWindow(options.now, options.validForMs ?? CA_VALIDITY_MS);
  const keys = await generateKeyPair();
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: [{ CN: [options.commonName] }, { O: ["buildfarm"] }],
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return {
    certPem: certificate.toString("pem"),
    key: await PrivateKey.fromCryptoKey(keys.privateKey),
    notBefore,
    notAfter,
  };
}

/**
 * Reads a CA from the text of its Secret. Throws, without quoting the key, when the
 * certificate is not a CA or the key does not belong to it.
 */
export function loadCertificateAuthority(certPem: string, keyPem: string): CertificateAuthority {
  let certificate: NodeCertificate;
  try {
    certificate = new NodeCertificate(certPem);
  } catch {
    throw new Error("the CA certificate is not a PEM certificate");
  }
  if (!certificate.ca) throw new Error("the CA certificate is not a CA (basicConstraints)");
  const key = PrivateKey.fromPem(keyPem, "the CA key");
  if (!keyMatchesCertificate(key, certPem)) {
    throw new Error("the CA key does not belong to the CA certificate");
  }
  return { certPem: certificate.toString(), key };
}

/** Non-secret facts of a CA certificate a leaf needs, parsed once per CA (certificates are public). */
const caFacts = new Map<string, { subject: Uint8Array; keyId: Uint8Array; notAfter: Date }>();

function factsOf(caPem: string) {
  let facts = caFacts.get(caPem);
  if (!facts) {
    const certificate = new NodeCertificate(caPem);
    const parts = certificateParts(new Uint8Array(certificate.raw));
    facts = {
      subject: parts.subject,
      keyId: keyIdentifier(parts.publicKey),
      notAfter: certificate.validToDate,
    };
    // A handful of pools per operator; the bound only keeps a CA rotation loop from growing it.
    if (caFacts.size >= 256) caFacts.clear();
    caFacts.set(caPem, facts);
  }
  return facts;
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits (as @peculiar/x509 does for the CA). */
const keyIdentifier = (publicKey: Uint8Array) =>
  new Uint8Array(createHash("sha1").update(publicKey).digest());

const OID = {
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  commonName: "2.5.4.3",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  subjectKeyIdentifier: "2.5.29.14",
  authorityKeyIdentifier: "2.5.29.35",
  extendedKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;

function extension(id: string, critical: boolean, value: Uint8Array): Uint8Array {
  return sequence(
    oid(id),
    ...(critical ? [tlv(TAG.boolean, Uint8Array.of(0xff))] : []),
    octets(value),
  );
}

/** A subjectAltName's GeneralName: dNSName [2] or iPAddress [7], both implicit. */
type AltName = { type: "dns" | "ip"; value: string };

function ipBytes(ip: string): Uint8Array {
  if (isIP(ip) === 4) return Uint8Array.from(ip.split(".").map(Number));
  // IPv6: expand "::", and a trailing dotted IPv4 part into two groups.
  let text = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = (v4[1] as string).split(".").map(Number) as [
      number,
      number,
      number,
      number,
    ];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups =
    tail === undefined
      ? left
      : [...left, ...Array(8 - left.length - right.length).fill("0"), ...right];
  const bytes = new Uint8Array(16);
  groups.forEach((group, i) => {
    const value = Number.parseInt(group, 16);
    bytes[2 * i] = value >> 8;
    bytes[2 * i + 1] = value & 0xff;
  });
  return bytes;
}

/**
 * A leaf certificate signed by `ca`: the TBSCertificate is encoded here (src/pki/der.ts) and
 * signed with Node's crypto, each with a fresh P-256 key. The extensions are those a leaf always
 * had: basicConstraints CA:false and keyUsage digitalSignature (both critical), subject and
 * authority key identifiers, the extended key usage, and for servers the subjectAltName.
 */
function issue(
  ca: CertificateAuthority,
  subject: string,
  usage: "serverAuth" | "clientAuth",
  altNames: readonly AltName[],
  now: Date,
  validForMs: number,
): IssuedCertificate {
  const facts = factsOf(ca.certPem);
  const { notBefore, notAfter } = validityWindow(now, validForMs, facts.notAfter);
  if (notAfter.getTime() <= now.getTime()) {
    throw new Error(`the CA expired at ${facts.notAfter.toISOString()}; renew it first`);
  }
  const keys = generateKeyObjects();
  const spki = new Uint8Array(keys.publicKey.export({ type: "spki", format: "der" }));
  const serial = serialNumber();
  const algorithm = sequence(oid(OID.ecdsaWithSha256));
  const extensions = [
    extension(OID.basicConstraints, true, sequence()),
    // digitalSignature is bit 0: one byte, 7 unused bits.
    extension(OID.keyUsage, true, tlv(TAG.bitString, Uint8Array.of(7, 0x80))),
    extension(OID.subjectKeyIdentifier, false, octets(keyIdentifier(publicKeyBits(spki)))),
    extension(OID.authorityKeyIdentifier, false, sequence(tlv(0x80, facts.keyId))),
    extension(OID.extendedKeyUsage, false, sequence(oid(OID[usage]))),
    ...(altNames.length > 0
      ? [
          extension(
            OID.subjectAltName,
            false,
            sequence(
              ...altNames.map((name) =>
                name.type === "dns"
                  ? tlv(0x82, Buffer.from(name.value, "ascii"))
                  : tlv(0x87, ipBytes(name.value)),
              ),
            ),
          ),
        ]
      : []),
  ];
  const tbs = sequence(
    tlv(0xa0, tlv(TAG.integer, Uint8Array.of(2))), // v3
    positiveInteger(Buffer.from(serial, "hex")),
    algorithm,
    facts.subject,
    sequence(time(notBefore), time(notAfter)),
    sequence(tlv(TAG.set, sequence(oid(OID.commonName), utf8(subject)))),
    spki,
    tlv(0xa3, sequence(...extensions)),
  );
  const certificate = sequence(tbs, algorithm, bits(ca.key.sign(tbs)));
  return {
    certPem: pemEncode("CERTIFICATE", certificate),
    key: PrivateKey.fromKeyObject(keys.privateKey),
    caPem: ca.certPem,
    serialNumber: serial,
    notBefore,
    notAfter,
  };
}

/** A buildkitd server certificate (serverAuth) for the given names, signed by `ca`. */
export async function issueServerCertificate(
  ca: CertificateAuthority,
  options: ServerCertificateOptions,
): Promise<IssuedCertificate> {
  checkCommonName(options.commonName);
  const ips = options.ipAddresses ?? [];
  if (options.dnsNames.length === 0 && ips.length === 0) {
    throw new Error("a server certificate needs at least one DNS name or IP address");
  }
  for (const name of options.dnsNames) {
    if (name.length > 253 || !DNS_NAME.test(name)) {
      throw new Error(`${JSON.stringify(name.slice(0, 80))} is not a lowercase DNS name`);
    }
  }
  for (const ip of ips) {
    if (isIP(ip) === 0) throw new Error(`${JSON.stringify(ip.slice(0, 80))} is not an IP address`);
  }
  return issue(
    ca,
    options.commonName,
    "serverAuth",
    [
      ...options.dnsNames.map((value) => ({ type: "dns" as const, value })),
      ...ips.map((value) => ({ type: "ip" as const, value })),
    ],
    options.now,
    options.validForMs ?? SERVER_VALIDITY_MS,
  );
}

/**
 * A short-lived client certificate (clientAuth, 24 hours by default) for one build, signed by
 * the pool's CA. buildkitd admits any client whose certificate chains to that CA.
 */
export async function issueClientCertificate(
  ca: CertificateAuthority,
  options: ClientCertificateOptions,
): Promise<IssuedCertificate> {
  checkCommonName(options.commonName);
  return issue(
    ca,
    options.commonName,
    "clientAuth",
    [],
    options.now,
    options.validForMs ?? CLIENT_VALIDITY_MS,
  );
}
