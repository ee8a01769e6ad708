import { X509Certificate } from "node:crypto";
import type { V1Secret } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import {
  builderDnsNames,
  ensureCertificates,
  serverCertificateNames,
} from "../../src/builderpool/certificates.ts";
import { certificateEvents } from "../../src/builderpool/events.ts";
import { DAY_MS } from "../../src/pki/certificates.ts";
import { certificateInfo } from "../../src/pki/renewal.ts";
import { stableHash } from "../../src/runtime/hash.ts";
import { examplePool } from "./fixtures.ts";
import { validateObject } from "./schema.ts";

const NOW = new Date("2026-03-01T12:00:00Z");
const later = (days: number) => new Date(NOW.getTime() + days * DAY_MS);
const decode = (secret: V1Secret, key: string) =>
  Buffer.from(secret.data?.[key] ?? "", "base64").toString("utf8");

describe("the names on the server certificate", () => {
  it("cover the Service in every form and one label under the headless Service", () => {
    expect(builderDnsNames(examplePool(), "arm64")).toEqual([
      "default-arm64",
      "default-arm64.buildfarm-builders",
      "default-arm64.buildfarm-builders.svc",
      "default-arm64.buildfarm-builders.svc.cluster.local",
      "*.default-arm64-headless.buildfarm-builders.svc",
      "*.default-arm64-headless.buildfarm-builders.svc.cluster.local",
    ]);
  });

  it("cover every architecture, in the cluster's domain", () => {
    const names = serverCertificateNames(examplePool(), "corp.internal");
    expect(names).toHaveLength(12);
    expect(names).toContain("default-amd64.buildfarm-builders.svc.corp.internal");
    expect(names).toContain("*.default-arm64-headless.buildfarm-builders.svc.corp.internal");
  });
});

describe("ensureCertificates", async () => {
  const pool = examplePool();
  const first = await ensureCertificates(pool, {}, { now: NOW });

  it("issues a CA and a server certificate for a new pool", () => {
    expect(first.issued.ca?.reason).toBe("Missing");
    expect(first.issued.server?.reason).toBe("Missing");
    expect(first.caSecret.metadata?.name).toBe("default-buildkit-ca");
    expect(first.caSecret.type).toBe("Opaque");
    expect(Object.keys(first.caSecret.data ?? {}).sort()).toEqual(["ca.crt", "ca.key"]);
    expect(first.serverSecret.metadata?.name).toBe("default-buildkit-server");
    expect(first.serverSecret.type).toBe("kubernetes.io/tls");
    expect(Object.keys(first.serverSecret.data ?? {}).sort()).toEqual([
      "ca.crt",
      "tls.crt",
      "tls.key",
    ]);
    validateObject(first.caSecret);
    validateObject(first.serverSecret);
  });

  it("signs the server certificate with the CA it stores beside it", () => {
    const server = new X509Certificate(decode(first.serverSecret, "tls.crt"));
    const ca = new X509Certificate(decode(first.caSecret, "ca.crt"));
    expect(decode(first.serverSecret, "ca.crt")).toBe(decode(first.caSecret, "ca.crt"));
    expect(server.verify(ca.publicKey)).toBe(true);
    expect(certificateInfo(server.toString()).sans).toEqual(serverCertificateNames(pool));
    expect(first.notAfter).toEqual(server.validToDate);
  });

  it("keeps both, byte for byte, when they are valid: nothing to write", async () => {
    const again = await ensureCertificates(
      pool,
      { caSecret: first.caSecret, serverSecret: first.serverSecret },
      { now: later(30) },
    );
    expect(again.issued).toEqual({});
    expect(stableHash(again.caSecret)).toBe(stableHash(first.caSecret));
    expect(stableHash(again.serverSecret)).toBe(stableHash(first.serverSecret));
    expect(again.certHash).toBe(first.certHash);
    expect(again.renewAt).toEqual(new Date(first.notAfter.getTime() - 30 * DAY_MS - 100_000));
  });

  it("renews the server certificate at two thirds of its life; the CA stays, the hash rolls the pods", async () => {
    const renewed = await ensureCertificates(
      pool,
      { caSecret: first.caSecret, serverSecret: first.serverSecret },
      { now: later(61) },
    );
    expect(renewed.issued.ca).toBeUndefined();
    expect(renewed.issued.server?.reason).toBe("NearExpiry");
    expect(stableHash(renewed.caSecret)).toBe(stableHash(first.caSecret));
    expect(renewed.certHash).not.toBe(first.certHash);
    expect(renewed.notAfter).toEqual(new Date(later(61).getTime() + 90 * DAY_MS));
    expect(certificateEvents(renewed.issued)).toEqual([
      {
        type: "Normal",
        reason: "CertificateRotated",
        message: expect.stringMatching(
          /^issued a new buildkitd server certificate \(NearExpiry\): two thirds/,
        ),
      },
    ]);
  });

  it("re-issues the server certificate when an architecture is added", async () => {
    const wider = examplePool((raw) => {
      (raw.spec.architectures as unknown[]).push({ name: "s390x" });
    });
    const result = await ensureCertificates(
      wider,
      { caSecret: first.caSecret, serverSecret: first.serverSecret },
      { now: later(1) },
    );
    expect(result.issued.server?.reason).toBe("SANsChanged");
    expect(result.issued.server?.message).toContain("missing default-s390x");
  });

  it("rotates the CA near its end, and with it the server certificate", async () => {
    const result = await ensureCertificates(
      pool,
      { caSecret: first.caSecret, serverSecret: first.serverSecret },
      { now: later(250) },
    );
    expect(result.issued.ca?.reason).toBe("NearExpiry");
    expect(result.issued.server?.reason).toBe("IssuerChanged");
    expect(certificateEvents(result.issued).map((event) => event.reason)).toEqual([
      "CARotated",
      "CertificateRotated",
    ]);
  });

  it.each([
    [
      "a damaged CA key",
      (ca: V1Secret, server: V1Secret) => [
        { ...ca, data: { ...ca.data, "ca.key": "bm9wZQ==" } },
        server,
      ],
      { ca: "Unreadable", server: "IssuerChanged" },
    ],
    [
      "a server Secret without its key",
      (ca: V1Secret, server: V1Secret) => [
        ca,
        { ...server, data: { ...server.data, "tls.key": "bm9wZQ==" } },
      ],
      { server: "KeyMismatch" },
    ],
    [
      "a server Secret whose ca.crt is someone else's",
      (ca: V1Secret, server: V1Secret) => [
        ca,
        { ...server, data: { ...server.data, "ca.crt": server.data?.["tls.crt"] as string } },
      ],
      { server: "IssuerChanged" },
    ],
    ["no server Secret", (ca: V1Secret) => [ca, undefined], { server: "Missing" }],
  ] as const)("repairs %s", async (_name, damage, reasons) => {
    const [caSecret, serverSecret] = damage(first.caSecret, first.serverSecret) as [
      V1Secret,
      V1Secret | undefined,
    ];
    const result = await ensureCertificates(pool, { caSecret, serverSecret }, { now: later(1) });
    expect({ ca: result.issued.ca?.reason, server: result.issued.server?.reason }).toEqual({
      ca: undefined,
      ...reasons,
    });
  });

  it("never puts key material in what it reports", async () => {
    const result = await ensureCertificates(pool, {}, { now: NOW });
    const report = JSON.stringify({
      issued: result.issued,
      ca: result.ca,
      events: certificateEvents(result.issued),
    });
    expect(report).not.toContain("PRIVATE KEY");
  });
});
