// A loopback HTTP proxy in front of a real registry that answers chosen requests itself
// (a 503 with Retry-After, say) and forwards the rest untouched.
import { createServer, request } from "node:http";

export interface ProxiedRequest {
  method: string;
  path: string;
  status: number;
  at: number;
}

export interface FaultyProxy {
  host: string;
  requests: ProxiedRequest[];
  stop(): Promise<void>;
}

export interface Fault {
  status: number;
  headers?: Record<string, string>;
}

/** `fault(method, path, n)` decides per request (n counts from 1) whether to fail it. */
export async function startFaultyProxy(
  target: string,
  fault: (method: string, path: string, n: number) => Fault | undefined,
): Promise<FaultyProxy> {
  const upstream = new URL(target);
  const requests: ProxiedRequest[] = [];
  const server = createServer((req, res) => {
    const method = req.method ?? "GET";
    const path = req.url ?? "/";
    const injected = fault(method, path, requests.length + 1);
    if (injected) {
      requests.push({ method, path, status: injected.status, at: Date.now() });
      req.resume();
      res.writeHead(injected.status, { "content-type": "application/json", ...injected.headers });
      res.end(
        JSON.stringify({
          errors: [{ code: "UNAVAILABLE", message: "injected by the test proxy" }],
        }),
      );
      return;
    }
    const forward = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method,
        path,
        headers: req.headers,
      },
      (answer) => {
        requests.push({ method, path, status: answer.statusCode ?? 0, at: Date.now() });
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on("error", (error) => {
      res.writeHead(502).end(String(error));
    });
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (typeof address !== "object" || address === null) throw new Error("proxy has no port");
  return {
    host: `127.0.0.1:${address.port}`,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
