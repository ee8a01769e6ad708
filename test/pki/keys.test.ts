import { Writable } from "node:stream";
import { inspect } from "node:util";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { createCertificateAuthority, issueClientCertificate } from "../../src/pki/certificates.ts";
import { PrivateKey } from "../../src/pki/keys.ts";
import { pemBlocks, pemDecode, pemEncode } from "../../src/pki/pem.ts";
import { readCaSecret, readTlsSecret, tlsSecretData } from "../../src/pki/secrets.ts";

const NOW = new Date("2026-03-01T12:00:00Z");

describe("PEM", () => {
  it("round-trips DER through 64-column base64", () => {
    const der = new Uint8Array(Array.from({ length: 200 }, (_, i) => i));
    const pem = pemEncode("CERTIFICATE", der);
    expect(pem.split("\n").every((line) => line.length <= 64)).toBe(true);
    expect(pemDecode(pem, "CERTIFICATE")).toEqual(der);
    expect(pemDecode(pem.replaceAll("\n", "\r\n"), "CERTIFICATE")).toEqual(der);
  });

  it("reads bundles and says which label it missed", () => {
    const one = pemEncode("CERTIFICATE", new Uint8Array([1]));
    const two = pemEncode("CERTIFICATE", new Uint8Array([2]));
    expect(pemBlocks(`${one}junk\n${two}`).map((b) => b.der[0])).toEqual([1, 2]);
    expect(() => pemDecode(`${one}${two}`, "CERTIFICATE")).toThrow(
      "expected one PEM CERTIFICATE block, found 2",
    );
    expect(() => pemDecode(one, "PRIVATE KEY")).toThrow("no PEM PRIVATE KEY block found");
  });
});

describe("private keys never show up in logs, errors or serialised objects", async () => {
  const ca = await createCertificateAuthority({ commonName: "ca", now: NOW });
  const issued = await issueClientCertificate(ca, { commonName: "ns/build", now: NOW });
  const pem = issued.key.exportPem();
  const body = pem.split("\n")[1] as string;

  it("exportPem gives the PKCS#8 text, for the Secret", () => {
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
  });

  it.each([
    ["JSON.stringify", () => JSON.stringify(issued)],
    ["util.inspect", () => inspect(issued, { depth: 10, showHidden: true })],
    ["a template literal", () => `${issued.key}`],
    ["String()", () => String(ca.key)],
    ["string concatenation", () => `key: ${issued.key}`],
    ["structuredClone", () => JSON.stringify(structuredClone({ ...issued }))],
    ["Object.entries", () => JSON.stringify(Object.entries(issued.key))],
  ])("%s shows a redaction marker", (_how, render) => {
    const text = render();
    expect(text).not.toContain("PRIVATE KEY");
    expect(text).not.toContain(body);
  });

  it("a pino log line of the issued certificate holds no key", () => {
    let out = "";
    const sink = new Writable({
      write(chunk, _encoding, done) {
        out += chunk;
        done();
      },
    });
    pino({}, sink).info({ issued, ca }, "issued a client certificate");
    expect(out).toContain("[PrivateKey redacted]");
    expect(out).not.toContain("PRIVATE KEY-----");
    expect(out).not.toContain(body);
  });

  it("errors about a bad key never quote it", () => {
    const damaged = pem.replace(body, `${body.slice(0, 10)}!!!${body.slice(13)}`);
    for (const attempt of [
      () => PrivateKey.fromPem(damaged),
      () => readCaSecret({ "ca.crt": b64(ca.certPem), "ca.key": b64(damaged) }),
      () => readCaSecret({ "ca.crt": b64(ca.certPem), "ca.key": b64(pem) }),
    ]) {
      let message = "";
      try {
        attempt();
      } catch (error) {
        message = `${(error as Error).message} ${(error as Error).stack} ${inspect(error)}`;
      }
      expect(message).not.toBe("");
      expect(message).not.toContain(body.slice(0, 20));
      expect(message).not.toContain("PRIVATE KEY-----");
    }
  });

  it("refuses keys other than ECDSA P-256", async () => {
    const { generateKeyPairSync } = await import("node:crypto");
    const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey.export({
      type: "pkcs8",
      format: "pem",
    });
    expect(() => PrivateKey.fromPem(rsa as string, "tls.key")).toThrow(
      "tls.key is not an ECDSA P-256 key",
    );
  });

  it("a TLS Secret's data round-trips, tolerating a damaged key", () => {
    const data = tlsSecretData(issued);
    expect(readTlsSecret(data).key?.exportPem()).toBe(pem);
    expect(readTlsSecret(data).certPem).toBe(issued.certPem);
    expect(readTlsSecret({ ...data, "tls.key": b64("nope") }).key).toBeUndefined();
  });
});

const b64 = (text: string) => Buffer.from(text).toString("base64");
