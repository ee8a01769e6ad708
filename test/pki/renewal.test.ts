import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  createCertificateAuthority,
  DAY_MS,
  issueServerCertificate,
} from "../../src/pki/certificates.ts";
import { certificateHash, certificateInfo, needsRenewal } from "../../src/pki/renewal.ts";

const NOW = new Date("2026-03-01T12:00:00Z");
const at = (days: number) => new Date(NOW.getTime() + days * DAY_MS);
const names = ["pool-amd64.ns.svc", "*.pool-amd64-headless.ns.svc"];

describe("needsRenewal", async () => {
  const ca = await createCertificateAuthority({ commonName: "ca", now: NOW });
  // A CA with the same name but another key: a name comparison alone would miss it.
  const twin = await createCertificateAuthority({ commonName: "ca", now: NOW });
  const server = await issueServerCertificate(ca, { commonName: "s", dnsNames: names, now: NOW });
  const other = await issueServerCertificate(ca, { commonName: "s", dnsNames: names, now: NOW });
  const renewAt = new Date(
    server.notBefore.getTime() + ((server.notAfter.getTime() - server.notBefore.getTime()) * 2) / 3,
  );

  const cases: [string, string | undefined, Parameters<typeof needsRenewal>[1], string][] = [
    ["nothing stored", undefined, { now: NOW }, "Missing"],
    ["an empty value", "", { now: NOW }, "Missing"],
    [
      "text that is no certificate",
      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
      { now: NOW },
      "Unreadable",
    ],
    ["a clock far behind", server.certPem, { now: at(-1) }, "NotYetValid"],
    [
      "a fresh certificate",
      server.certPem,
      { now: NOW, sans: names, caPem: ca.certPem, key: server.key },
      "Valid",
    ],
    [
      "just before two thirds of its life",
      server.certPem,
      { now: new Date(renewAt.getTime() - 1000) },
      "Valid",
    ],
    ["at two thirds of its life", server.certPem, { now: renewAt }, "NearExpiry"],
    ["past expiry", server.certPem, { now: at(91) }, "Expired"],
    [
      "the same names in another order and case",
      server.certPem,
      { now: NOW, sans: [...names].reverse().map((n) => n.toUpperCase()) },
      "Valid",
    ],
    [
      "a name added",
      server.certPem,
      { now: NOW, sans: [...names, "pool-arm64.ns.svc"] },
      "SANsChanged",
    ],
    ["a name removed", server.certPem, { now: NOW, sans: names.slice(0, 1) }, "SANsChanged"],
    [
      "a same-named CA with another key",
      server.certPem,
      { now: NOW, caPem: twin.certPem },
      "IssuerChanged",
    ],
    [
      "a CA that is not a certificate",
      server.certPem,
      { now: NOW, caPem: "nope" },
      "IssuerChanged",
    ],
    ["a key of another certificate", server.certPem, { now: NOW, key: other.key }, "KeyMismatch"],
  ];

  it.each(cases)("%s → %s", (_name, pem, options, reason) => {
    expect(needsRenewal(pem, options).reason).toBe(reason);
  });

  it("says when to renew a valid certificate, and why it renews one that is not", () => {
    const valid = needsRenewal(server.certPem, { now: NOW });
    expect(valid).toMatchObject({ renew: false, notAfter: server.notAfter, renewAt });
    const changed = needsRenewal(server.certPem, {
      now: NOW,
      sans: [names[0] as string, "new.ns.svc"],
    });
    expect(changed.message).toBe(
      "the certificate's names changed: missing new.ns.svc; no longer needed *.pool-amd64-headless.ns.svc",
    );
  });

  it("renews exactly once two thirds of any lifetime have passed (property)", async () => {
    const cert = await issueServerCertificate(ca, {
      commonName: "s",
      dnsNames: names,
      now: NOW,
      validForMs: 7 * DAY_MS,
    });
    const info = certificateInfo(cert.certPem);
    const life = info.notAfter.getTime() - info.notBefore.getTime();
    fc.assert(
      fc.property(fc.integer({ min: 0, max: life - 1 }), (offset) => {
        const decision = needsRenewal(cert.certPem, {
          now: new Date(info.notBefore.getTime() + offset),
        });
        return decision.renew === offset >= Math.floor((life * 2) / 3);
      }),
    );
  });
});

describe("certificateHash", async () => {
  const ca = await createCertificateAuthority({ commonName: "ca", now: NOW });
  const server = await issueServerCertificate(ca, { commonName: "s", dnsNames: names, now: NOW });
  const renewed = await issueServerCertificate(ca, { commonName: "s", dnsNames: names, now: NOW });

  it("is stable across PEM formatting and changes with the certificate or its CA", () => {
    const hash = certificateHash(server.certPem, ca.certPem);
    expect(hash).toMatch(/^[0-9a-f]{16}$/);
    expect(certificateHash(server.certPem.replaceAll("\n", "\r\n"), ca.certPem)).toBe(hash);
    expect(certificateHash(renewed.certPem, ca.certPem)).not.toBe(hash);
    expect(certificateHash(server.certPem)).not.toBe(hash);
  });
});

describe("certificateInfo", async () => {
  const ca = await createCertificateAuthority({ commonName: "ca", now: NOW });
  const server = await issueServerCertificate(ca, {
    commonName: "s",
    dnsNames: names,
    ipAddresses: ["10.0.0.1"],
    now: NOW,
  });

  it("reads names, validity and serial", () => {
    expect(certificateInfo(server.certPem)).toMatchObject({
      subject: "CN=s",
      isCA: false,
      sans: [...names, "10.0.0.1"],
      serialNumber: server.serialNumber,
      notAfter: server.notAfter,
    });
  });
});
