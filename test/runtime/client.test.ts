// The KubeClient against an HTTPS API server: requests reuse their connections. client-node
// builds a new undici Agent (so new TCP and TLS connections) for every request it
// authenticates; the client keeps one for a while instead.
import { once } from "node:events";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCertificateAuthority, issueServerCertificate } from "../../src/pki/certificates.ts";
import { KubeClient, RESOURCES } from "../../src/runtime/client.ts";

let server: Server;
let connections = 0;
let kubeConfig: KubeConfig;

beforeAll(async () => {
  const now = new Date();
  const ca = await createCertificateAuthority({ commonName: "test-ca", now });
  const tls = await issueServerCertificate(ca, {
    commonName: "api",
    dnsNames: ["localhost"],
    ipAddresses: ["127.0.0.1"],
    now,
  });
  server = createServer({ cert: tls.certPem, key: tls.key.exportPem() }, (req, res) => {
    if (req.url?.includes("/hang")) return; // never answers
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(
      '{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}',
    );
  });
  server.on("secureConnection", () => {
    connections++;
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  kubeConfig = new KubeConfig();
  kubeConfig.loadFromOptions({
    clusters: [
      {
        name: "tls",
        server: `https://127.0.0.1:${port}`,
        caData: Buffer.from(ca.certPem).toString("base64"),
      },
    ],
    users: [{ name: "tls", token: "a-token" }],
    contexts: [{ name: "tls", cluster: "tls", user: "tls" }],
    currentContext: "tls",
  });
});

afterAll(() => {
  server?.closeAllConnections();
  server?.close();
});

describe("the KubeClient over TLS", () => {
  it("sends 30 requests one after another over at most two connections", async () => {
    const client = new KubeClient(kubeConfig);
    const before = connections;
    for (let i = 0; i < 30; i++) await client.list(RESOURCES.configMap, "default");
    // Measured: the second request opens a second connection, then every request reuses it
    // (without reuse: 30).
    expect(connections - before).toBeLessThanOrEqual(2);
  });

  it("abandons a request that gets no answer within its timeout (the Lease client's)", async () => {
    const client = new KubeClient(kubeConfig, { requestTimeoutMs: 300 });
    // The server never answers "hang": only the client's own timeout can end the request.
    await expect(client.get(RESOURCES.configMap, "default", "hang")).rejects.toThrow();
  });
});
