import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import tls from "node:tls";
import { describe, expect, it } from "vitest";
import {
  CLIENT_VALIDITY_MS,
  CLOCK_SKEW_MS,
  clientCommonName,
  createCertificateAuthority,
  DAY_MS,
  issueClientCertificate,
  issueServerCertificate,
  loadCertificateAuthority,
} from "../../src/pki/certificates.ts";
import { keyMatchesCertificate } from "../../src/pki/keys.ts";
import { x509 } from "../../src/pki/x509.ts";

const NOW = new Date("2026-03-01T12:00:00Z");
const names = ["pool-amd64.ns.svc", "*.pool-amd64-headless.ns.svc"];

describe("the pool CA", async () => {
  const ca = await createCertificateAuthority({ commonName: "buildfarm CA ns/pool", now: NOW });
  const cert = new X509Certificate(ca.certPem);

  it("is a self-signed ECDSA P-256 CA valid for one year", () => {
    expect(cert.ca).toBe(true);
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.publicKey.asymmetricKeyType).toBe("ec");
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    expect(cert.validFromDate.getTime()).toBe(NOW.getTime() - CLOCK_SKEW_MS);
    expect(cert.validToDate.getTime()).toBe(NOW.getTime() + 365 * DAY_MS);
  });

  it("may sign certificates (keyCertSign) but no intermediate CAs (path length 0)", () => {
    const parsed = new x509.X509Certificate(ca.certPem);
    const constraints = parsed.getExtension(x509.BasicConstraintsExtension);
    expect(constraints?.ca).toBe(true);
    expect(constraints?.pathLength).toBe(0);
    expect(constraints?.critical).toBe(true);
    const usages = parsed.getExtension(x509.KeyUsagesExtension);
    expect(usages && usages.usages & x509.KeyUsageFlags.keyCertSign).toBeTruthy();
  });

  it("loads back from its PEM text", () => {
    const loaded = loadCertificateAuthority(ca.certPem, ca.key.exportPem());
    expect(keyMatchesCertificate(loaded.key, ca.certPem)).toBe(true);
  });

  it("refuses a key that is not the CA's, and a certificate that is not a CA", async () => {
    const other = await createCertificateAuthority({ commonName: "other", now: NOW });
    expect(() => loadCertificateAuthority(ca.certPem, other.key.exportPem())).toThrow(
      "the CA key does not belong to the CA certificate",
    );
    const leaf = await issueServerCertificate(ca, { commonName: "s", dnsNames: names, now: NOW });
    expect(() => loadCertificateAuthority(leaf.certPem, leaf.key.exportPem())).toThrow(
      /is not a CA/,
    );
    expect(() => loadCertificateAuthority("garbage", ca.key.exportPem())).toThrow(
      "the CA certificate is not a PEM certificate",
    );
  });
});

describe("the buildkitd server certificate", async () => {
  const ca = await createCertificateAuthority({ commonName: "ca", now: NOW });
  const server = await issueServerCertificate(ca, {
    commonName: "buildkitd ns/pool",
    dnsNames: names,
    now: NOW,
  });
  const cert = new X509Certificate(server.certPem);
  const caCert = new X509Certificate(ca.certPem);

  it("chains to the pool CA", () => {
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(server.caPem).toBe(ca.certPem);
  });

  it("is for serving (serverAuth) and lasts 90 days", () => {
    expect(cert.keyUsage).toEqual(["1.3.6.1.5.5.7.3.1"]);
    expect(server.notAfter.getTime()).toBe(NOW.getTime() + 90 * DAY_MS);
    expect(cert.validToDate).toEqual(server.notAfter);
    expect(cert.validFromDate).toEqual(server.notBefore);
  });

  it.each([
    ["pool-amd64.ns.svc", true],
    ["10-244-1-7.pool-amd64-headless.ns.svc", true],
    ["pool-amd64-0.pool-amd64-headless.ns.svc", true],
    ["a.b.pool-amd64-headless.ns.svc", false],
    ["pool-arm64.ns.svc", false],
  ])("answers to %s: %s", (host, valid) => {
    expect(cert.checkHost(host) !== undefined).toBe(valid);
  });

  it("carries IPv4 and IPv6 addresses as iPAddress names", async () => {
    const withIps = await issueServerCertificate(ca, {
      commonName: "s",
      dnsNames: ["pool.ns.svc"],
      ipAddresses: ["10.244.1.7", "fd00::1", "2001:db8:0:0:1:0:0:1", "::ffff:10.0.0.1"],
      now: NOW,
    });
    const parsed = new X509Certificate(withIps.certPem);
    expect(parsed.subjectAltName).toBe(
      "DNS:pool.ns.svc, IP Address:10.244.1.7, IP Address:FD00:0:0:0:0:0:0:1, IP Address:2001:DB8:0:0:1:0:0:1, IP Address:0:0:0:0:0:FFFF:A00:1",
    );
    expect(parsed.checkIP("fd00::1")).toBe("fd00::1");
  });

  it("has the leaf extensions: CA:false and digitalSignature (critical), key identifiers chaining to the CA", () => {
    const parsed = new x509.X509Certificate(server.certPem);
    const constraints = parsed.getExtension(x509.BasicConstraintsExtension);
    expect(constraints?.ca).toBe(false);
    expect(constraints?.critical).toBe(true);
    const usages = parsed.getExtension(x509.KeyUsagesExtension);
    expect(usages?.usages).toBe(x509.KeyUsageFlags.digitalSignature);
    expect(usages?.critical).toBe(true);
    const authority = parsed.getExtension(x509.AuthorityKeyIdentifierExtension);
    const caKeyId = new x509.X509Certificate(ca.certPem).getExtension(
      x509.SubjectKeyIdentifierExtension,
    )?.keyId;
    expect(authority?.keyId).toBe(caKeyId);
    expect(parsed.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId).toMatch(
      /^[0-9a-f]{40}$/,
    );
  });

  it("never outlives its CA", async () => {
    const late = new Date(caCert.validToDate.getTime() - 10 * DAY_MS);
    const short = await issueServerCertificate(ca, { commonName: "s", dnsNames: names, now: late });
    expect(short.notAfter).toEqual(caCert.validToDate);
  });

  it("is refused for names that are not DNS names", async () => {
    await expect(
      issueServerCertificate(ca, { commonName: "s", dnsNames: ["Bad_Name"], now: NOW }),
    ).rejects.toThrow('"Bad_Name" is not a lowercase DNS name');
    await expect(
      issueServerCertificate(ca, { commonName: "s", dnsNames: [], now: NOW }),
    ).rejects.toThrow(/at least one DNS name/);
  });
});

describe("a build's client certificate", async () => {
  const ca = await createCertificateAuthority({ commonName: "ca", now: NOW });
  const client = await issueClientCertificate(ca, { commonName: "team-a/app-7f3c", now: NOW });
  const cert = new X509Certificate(client.certPem);

  it("names the build, is for clients (clientAuth) and lasts 24 hours", () => {
    expect(cert.subject).toBe("CN=team-a/app-7f3c");
    expect(cert.keyUsage).toEqual(["1.3.6.1.5.5.7.3.2"]);
    expect(client.notAfter.getTime() - NOW.getTime()).toBe(CLIENT_VALIDITY_MS);
    expect(cert.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
  });

  it("is issued for the longest namespace and build names, under a shortened, distinct name", async () => {
    const namespace = "n".repeat(63);
    const [first, second] = ["a", "b"].map((end) =>
      clientCommonName(namespace, `${"b".repeat(51)}${end}`),
    );
    expect(first).toHaveLength(64);
    expect(first).not.toBe(second);
    expect(first?.startsWith("n".repeat(47))).toBe(true);
    const issued = await issueClientCertificate(ca, { commonName: first as string, now: NOW });
    expect(new X509Certificate(issued.certPem).subject).toBe(`CN=${first}`);
    expect(clientCommonName("team-a", "app-7f3c")).toBe("team-a/app-7f3c");
  });

  it("can be made shorter, not shorter than a minute", async () => {
    const short = await issueClientCertificate(ca, {
      commonName: "x",
      now: NOW,
      validForMs: 3_600_000,
    });
    expect(short.notAfter.getTime() - NOW.getTime()).toBe(3_600_000);
    await expect(
      issueClientCertificate(ca, { commonName: "x", now: NOW, validForMs: 10 }),
    ).rejects.toThrow(/at least a minute/);
  });

  it("has GeneralizedTime validity past 2049 (RFC 5280 4.1.2.5)", async () => {
    const late = new Date("2049-12-31T12:00:00Z");
    const longCa = await createCertificateAuthority({ commonName: "ca", now: late });
    const issued = await issueClientCertificate(longCa, { commonName: "x", now: late });
    expect(new X509Certificate(issued.certPem).validToDate).toEqual(issued.notAfter);
    expect(issued.notAfter.getUTCFullYear()).toBe(2050);
  });

  it("cannot be issued by an expired CA", async () => {
    await expect(
      issueClientCertificate(ca, { commonName: "x", now: new Date(NOW.getTime() + 400 * DAY_MS) }),
    ).rejects.toThrow(/the CA expired at/);
  });
});

describe("mutual TLS with these certificates (node:tls, the same checks Go's crypto/tls makes)", async () => {
  const now = new Date();
  const ca = await createCertificateAuthority({ commonName: "ca", now });
  const server = await issueServerCertificate(ca, { commonName: "s", dnsNames: names, now });
  const client = await issueClientCertificate(ca, { commonName: "ns/build", now });
  const stranger = await createCertificateAuthority({ commonName: "ca", now });
  const impostor = await issueClientCertificate(stranger, { commonName: "ns/build", now });

  async function handshake(clientCert: typeof client | undefined, servername: string) {
    const listener = tls.createServer(
      {
        cert: server.certPem,
        key: server.key.exportPem(),
        ca: server.caPem,
        requestCert: true,
        rejectUnauthorized: true,
      },
      (socket) => socket.end("ok"),
    );
    listener.listen(0, "127.0.0.1");
    await once(listener, "listening");
    const { port } = listener.address() as AddressInfo;
    try {
      return await new Promise<string>((resolve) => {
        const socket = tls.connect({
          host: "127.0.0.1",
          port,
          servername,
          ca: ca.certPem,
          ...(clientCert ? { cert: clientCert.certPem, key: clientCert.key.exportPem() } : {}),
        });
        let data = "";
        socket.on("data", (chunk) => {
          data += chunk;
        });
        socket.on("end", () => resolve(data === "ok" ? "accepted" : "refused"));
        socket.on("error", (error) => resolve(`refused: ${error.message}`));
      });
    } finally {
      listener.close();
    }
  }

  it("a client certificate from the pool CA gets in", async () => {
    expect(await handshake(client, "pool-amd64.ns.svc")).toBe("accepted");
    expect(await handshake(client, "10-1-2-3.pool-amd64-headless.ns.svc")).toBe("accepted");
  });

  it("one from another CA, or none, is refused", async () => {
    expect(await handshake(impostor, "pool-amd64.ns.svc")).toMatch(/^refused/);
    expect(await handshake(undefined, "pool-amd64.ns.svc")).toMatch(/^refused/);
  });

  it("the client refuses a server name the certificate does not carry", async () => {
    expect(await handshake(client, "pool-arm64.ns.svc")).toMatch(
      /^refused: Hostname\/IP does not match/,
    );
  });
});
