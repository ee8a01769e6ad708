// The operator's HTTP endpoints: /metrics for Prometheus, /healthz for the liveness probe
// (the event loop answers), /readyz for the readiness probe (every cache has synced).
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

export interface HealthServerOptions {
  /** Where to listen; absent: every address, as Node chooses (:: where IPv6 exists). */
  host?: string;
  port: number;
  registry: Registry;
  ready: () => { ready: boolean; reason?: string };
}

export class HealthServer {
  private readonly server: Server;
  private readonly options: HealthServerOptions;

  constructor(options: HealthServerOptions) {
    this.options = options;
    this.server = createServer((request, response) => {
      const path = new URL(request.url ?? "/", "http://localhost").pathname;
      if (path === "/metrics") {
        options.registry.metrics().then(
          (text) => {
            response.writeHead(200, { "Content-Type": options.registry.contentType });
            response.end(text);
          },
          (error: unknown) => {
            response.writeHead(500, { "Content-Type": "text/plain" });
            response.end(String(error));
          },
        );
        return;
      }
      if (path === "/healthz" || path === "/livez") {
        response.writeHead(200, { "Content-Type": "text/plain" });
        response.end("ok\n");
        return;
      }
      if (path === "/readyz") {
        const state = options.ready();
        response.writeHead(state.ready ? 200 : 503, { "Content-Type": "text/plain" });
        response.end(state.ready ? "ok\n" : `not ready: ${state.reason ?? "starting"}\n`);
        return;
      }
      response.writeHead(404, { "Content-Type": "text/plain" });
      response.end("not found\n");
    });
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.options.port, this.options.host, () =>
        resolve(this.server.address() as AddressInfo),
      );
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }
}
