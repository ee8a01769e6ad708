// The builder pod's container args, TLS Secret and buildkitd.toml, run by real buildkitd
// (rootless, as UID 1000): it accepts the config, probes answer over the local socket without a
// certificate, and mTLS admits a build's client certificate from the pool CA only.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { V1Deployment } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureCertificates, type PoolCertificates } from "../../src/builderpool/certificates.ts";
import { CONFIG_KEY } from "../../src/builderpool/config.ts";
import { desiredPool } from "../../src/builderpool/desired.ts";
import { createCertificateAuthority, issueClientCertificate } from "../../src/pki/certificates.ts";
import { readCaSecret } from "../../src/pki/secrets.ts";
import { buildkitTools, PodBuildkitd, run } from "../support/buildkit.ts";
import { examplePool, poolContext } from "./fixtures.ts";

const tools = buildkitTools();
const skip = typeof tools === "string" ? tools : undefined;
if (skip) console.warn(`skipping real-BuildKit pool tests: ${skip}`);

const secretFiles = (data: Record<string, string> = {}) =>
  Object.fromEntries(
    Object.entries(data).map(([key, value]) => [key, Buffer.from(value, "base64").toString()]),
  );

describe.skipIf(skip)("a builder pod's buildkitd, for real", () => {
  const bins = tools as Exclude<typeof tools, string>;
  const pool = examplePool((raw) => {
    raw.spec.buildkit = { gc: { keepStorage: "40Gi", keepDuration: "72h" }, maxParallelism: 2 };
    raw.spec.registries = [
      { host: "127.0.0.1:5000", http: true, insecure: true },
      { host: "[::1]:5001", insecure: true },
    ];
  });
  let certs: PoolCertificates;
  let daemon: PodBuildkitd;
  let probe: string[];
  let startedMs = 0;

  beforeAll(async () => {
    certs = await ensureCertificates(pool, {}, { now: new Date() });
    const desired = desiredPool(pool, poolContext({ certHash: certs.certHash }));
    const deployment = desired.architectures[0]?.workload.object as V1Deployment;
    const container = deployment.spec?.template.spec?.containers[0];
    probe = container?.readinessProbe?.exec?.command ?? [];
    daemon = await PodBuildkitd.prepare({
      certs: secretFiles(certs.serverSecret.data),
      config: { [CONFIG_KEY]: desired.configMap.data?.[CONFIG_KEY] ?? "" },
    });
    const started = Date.now();
    daemon.start(bins, container?.args ?? []);
    await daemon.waitReady(probe, bins.buildctl);
    startedMs = Date.now() - started;
  });

  afterAll(async () => {
    await daemon?.stop();
  });

  const tlsArgs = (dir: string, servername: string, withCert = true) => [
    "--addr",
    `tcp://127.0.0.1:${daemon.port}`,
    "--tlsservername",
    servername,
    "--tlscacert",
    join(dir, "ca.crt"),
    ...(withCert ? ["--tlscert", join(dir, "tls.crt"), "--tlskey", join(dir, "tls.key")] : []),
    "debug",
    "workers",
  ];

  function clientFiles(name: string, issued: Awaited<ReturnType<typeof issueClientCertificate>>) {
    const dir = join(daemon.dir, name);
    mkdirSync(dir);
    writeFileSync(join(dir, "ca.crt"), certs.ca.certPem);
    writeFileSync(join(dir, "tls.crt"), issued.certPem);
    writeFileSync(join(dir, "tls.key"), issued.key.exportPem(), { mode: 0o600 });
    return dir;
  }

  it("starts within seconds and answers the readiness probe over the unix socket, no certificate", async () => {
    // Seconds on a quiet machine; the bound leaves room for a busy one.
    expect(startedMs).toBeLessThan(60_000);
    const result = await run(
      bins.buildctl,
      probe.slice(1).map((arg) => daemon.map(arg)),
    );
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/linux\/amd64/);
  });

  it("reads the generated buildkitd.toml: GC policies as written", async () => {
    const result = await run(bins.buildctl, [
      "--addr",
      daemon.paths.socket,
      "debug",
      "workers",
      "--verbose",
    ]);
    expect(result.stdout).toMatch(/GC Policy rule#0:\s+All:\s+false\s+Keep duration:\s+72h0m0s/);
    expect(result.stdout).toMatch(
      /GC Policy rule#1:\s+All:\s+false\s+Maximum used space:\s+42\.94967296GB/,
    );
    expect(result.stdout).toMatch(
      /GC Policy rule#2:\s+All:\s+true\s+Maximum used space:\s+42\.94967296GB/,
    );
    expect(result.stdout).toMatch(/process-mode:\s+no-sandbox/);
  });

  it("admits a build's client certificate from the pool CA, by Service and per-pod names", async () => {
    const ca = readCaSecret(certs.caSecret.data);
    const client = await issueClientCertificate(ca, {
      commonName: "team-a/app-1",
      now: new Date(),
    });
    const dir = clientFiles("client", client);
    for (const servername of [
      "default-amd64.buildfarm-builders.svc",
      "default-amd64.buildfarm-builders.svc.cluster.local",
      "10-244-3-7.default-amd64-headless.buildfarm-builders.svc",
      "default-arm64.buildfarm-builders.svc",
    ]) {
      const result = await run(bins.buildctl, tlsArgs(dir, servername));
      expect({ servername, code: result.code, stderr: result.stderr }).toEqual({
        servername,
        code: 0,
        stderr: "",
      });
    }
  });

  it("listens on IPv6 too (tcp://:port), for IPv6-only clusters", async () => {
    const ca = readCaSecret(certs.caSecret.data);
    const client = await issueClientCertificate(ca, {
      commonName: "team-a/app-6",
      now: new Date(),
    });
    const dir = clientFiles("client6", client);
    const args = tlsArgs(dir, "default-amd64.buildfarm-builders.svc");
    args[1] = `tcp://[::1]:${daemon.port}`;
    const result = await run(bins.buildctl, args);
    expect(result.code).toBe(0);
  });

  it("refuses a client certificate from another CA, and a client without one", async () => {
    const stranger = await createCertificateAuthority({
      commonName: "buildfarm CA buildfarm-builders/default",
      now: new Date(),
    });
    const impostor = await issueClientCertificate(stranger, {
      commonName: "team-a/app-1",
      now: new Date(),
    });
    const dir = clientFiles("impostor", impostor);
    const refused = await run(bins.buildctl, tlsArgs(dir, "default-amd64.buildfarm-builders.svc"));
    expect(refused.code).not.toBe(0);
    // TLS 1.3: the server rejects the certificate after the client's side of the handshake, so
    // buildctl sees the connection dropped rather than an alert. The same call with the pool's
    // certificate succeeds (above); only the certificate differs.
    expect(refused.stderr).toMatch(/failed to list workers: (Unavailable|.*certificate)/);
    const anonymous = await run(
      bins.buildctl,
      tlsArgs(dir, "default-amd64.buildfarm-builders.svc", false),
    );
    expect(anonymous.code).not.toBe(0);
  });

  it("lets the client refuse a name the server certificate does not carry", async () => {
    const ca = readCaSecret(certs.caSecret.data);
    const client = await issueClientCertificate(ca, {
      commonName: "team-a/app-2",
      now: new Date(),
    });
    const dir = clientFiles("wrong-name", client);
    const result = await run(bins.buildctl, tlsArgs(dir, "default-ppc64le.buildfarm-builders.svc"));
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/certificate is valid for .*not default-ppc64le/);
  });
});
