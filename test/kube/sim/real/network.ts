// The cluster network for pods that are host processes: kube-proxy for Services and the
// resolution of what a pod dials (mapping 4 in mapping.ts). A Service port gets one loopback
// listener; each connection to it picks a Ready endpoint by the Service's selector, at that
// moment, as kube-proxy's rules do for a ClusterIP, and is piped to that pod's port (mapping 3).
// No endpoint, or an endpoint not listening on the target port: the connection is closed, so
// a wrong selector, port name or listen address shows up as a build that cannot connect, and
// a wrong affinity as a build on the wrong builder.
import { createConnection, createServer, type Server, type Socket } from "node:net";
import type { IPod } from "kubernetes-models/v1/Pod";
import type { IService } from "kubernetes-models/v1/Service";
import type { KubeObject, Stored } from "../../objects.ts";
import type { Store } from "../../store.ts";
import { type Dialer, type PodPorts, serviceName } from "./mapping.ts";

type Pod = Stored<IPod & KubeObject>;

export interface ProxiedConnection {
  service: string;
  port: number;
  /** The endpoint pod chosen, or undefined when there was none. */
  pod?: string;
  at: number;
}

/** Whether a pod is a Ready endpoint: running, Ready, not terminating. */
export function isReadyEndpoint(pod: Pod): boolean {
  if (pod.metadata.deletionTimestamp || pod.status?.phase !== "Running") return false;
  return (pod.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
}

function selects(selector: Record<string, string> | undefined, pod: Pod): boolean {
  if (!selector || Object.keys(selector).length === 0) return false;
  const labels = pod.metadata.labels ?? {};
  return Object.entries(selector).every(([key, value]) => labels[key] === value);
}

/** A container port by number, or by name through the pod's container ports. */
function containerPort(pod: Pod, target: number | string): number | undefined {
  if (typeof target === "number") return target;
  if (/^\d+$/.test(target)) return Number(target);
  for (const container of pod.spec?.containers ?? [])
    for (const port of container.ports ?? []) if (port.name === target) return port.containerPort;
  return undefined;
}

export class ClusterNetwork implements Dialer {
  private readonly store: Store;
  private readonly ports: PodPorts;
  private readonly proxies = new Map<string, { server: Server; hostPort: Promise<number> }>();
  private readonly sockets = new Set<Socket>();
  readonly connections: ProxiedConnection[] = [];

  constructor(store: Store, ports: PodPorts) {
    this.store = store;
    this.ports = ports;
  }

  /**
   * Where a dial from a pod lands: the pod's own loopback ports, a pod IP, a pod under a
   * headless Service, or the kube-proxy listener of a Service port; undefined for names and
   * addresses the cluster does not know.
   */
  async dial(
    host: string,
    port: number,
    from: { podUid: string; namespace: string },
  ): Promise<string | undefined> {
    const bare = host.replace(/^\[|\]$/g, "");
    if (bare === "127.0.0.1" || bare === "localhost" || bare === "::1") {
      const own = this.ports.lookup(from.podUid, port, true);
      return own === undefined ? undefined : `127.0.0.1:${own}`;
    }
    const byIp = this.store
      .objects<IPod & KubeObject>("pods")
      .find((pod) => pod.status?.podIP === bare && !pod.metadata.deletionTimestamp);
    if (byIp) {
      const hostPort = this.ports.lookup(
        byIp.metadata.uid!,
        port,
        byIp.metadata.uid === from.podUid,
      );
      // Nothing listens there: a port no process of this machine uses, so the dial is refused.
      return `127.0.0.1:${hostPort ?? 9}`;
    }
    const wanted = serviceName(host, from.namespace);
    if (!wanted) return undefined;
    const service = this.store.get<IService & KubeObject>(
      "services",
      wanted.namespace,
      wanted.name,
    );
    if (!service) return undefined;
    if (wanted.pod !== undefined) {
      // A pod's own record under a headless Service: published while it is Ready (unless the
      // Service publishes not-ready addresses), named by its IP with dashes or its hostname.
      if (service.spec?.clusterIP !== "None") return undefined;
      const pod = this.store
        .objects<IPod & KubeObject>("pods", wanted.namespace)
        .find(
          (candidate) =>
            selects(service.spec?.selector, candidate) &&
            (service.spec?.publishNotReadyAddresses || isReadyEndpoint(candidate)) &&
            (candidate.status?.podIP?.replaceAll(".", "-") === wanted.pod ||
              (candidate.spec?.hostname === wanted.pod &&
                candidate.spec?.subdomain === wanted.name)),
        );
      if (!pod) return undefined;
      const own = pod.metadata.uid === from.podUid;
      return `127.0.0.1:${this.ports.lookup(pod.metadata.uid!, port, own) ?? 9}`;
    }
    return `127.0.0.1:${await this.proxyFor(wanted.namespace, wanted.name, port)}`;
  }

  private proxyFor(namespace: string, name: string, port: number): Promise<number> {
    const key = `${namespace}/${name}:${port}`;
    let proxy = this.proxies.get(key);
    if (!proxy) {
      const server = createServer((socket) => this.forward(socket, namespace, name, port));
      const hostPort = new Promise<number>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => {
          const address = server.address();
          resolve(typeof address === "object" && address ? address.port : 0);
        });
      });
      proxy = { server, hostPort };
      this.proxies.set(key, proxy);
    }
    return proxy.hostPort;
  }

  /** One connection: the Service as it is now, a random Ready endpoint, that pod's port. */
  private forward(client: Socket, namespace: string, name: string, port: number): void {
    this.sockets.add(client);
    client.once("close", () => this.sockets.delete(client));
    client.on("error", () => {});
    const record: ProxiedConnection = { service: `${namespace}/${name}`, port, at: Date.now() };
    this.connections.push(record);
    const service = this.store.get<IService & KubeObject>("services", namespace, name);
    const servicePort = service?.spec?.ports?.find((p) => p.port === port);
    if (!service || !servicePort) return void client.destroy();
    const headless = service.spec?.clusterIP === "None";
    const target = headless ? port : (servicePort.targetPort ?? servicePort.port);
    const endpoints = this.store
      .objects<IPod & KubeObject>("pods", namespace)
      .filter((pod) => selects(service.spec?.selector, pod) && isReadyEndpoint(pod));
    const pod = endpoints[Math.floor(Math.random() * endpoints.length)];
    if (!pod) return void client.destroy();
    record.pod = pod.metadata.name;
    const number = containerPort(pod, target);
    const hostPort =
      number === undefined ? undefined : this.ports.lookup(pod.metadata.uid!, number, false);
    if (hostPort === undefined) return void client.destroy();
    const upstream = createConnection({ host: "127.0.0.1", port: hostPort });
    this.sockets.add(upstream);
    upstream.once("close", () => this.sockets.delete(upstream));
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
    client.pipe(upstream).pipe(client);
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await Promise.all(
      [...this.proxies.values()].map(
        ({ server }) => new Promise<void>((resolve) => server.close(() => resolve())),
      ),
    );
    this.proxies.clear();
  }
}
