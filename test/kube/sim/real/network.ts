// The cluster network for pods that are host processes: cluster DNS, kube-proxy and a
// NetworkPolicy-enforcing network plugin, behind mapping 4 of mapping.ts. What a pod dials in
// the cluster (a Service name, a pod under a headless Service, a pod IP) becomes a loopback
// listener for that pod and that destination. Each connection to it then does what the
// cluster would at that moment: a Service picks a random Ready endpoint by its selector
// (kube-proxy's rules for a ClusterIP) and resolves its targetPort through the pod's container
// ports; the destination pod's NetworkPolicies must admit the dialling pod (as Calico or
// Cilium enforce them); the connection is piped to that pod's port (mapping 3). No endpoint, a
// port nobody listens on, a policy that does not admit the caller: the connection is closed.
// So a wrong selector, affinity, port, listen address or policy shows up as a build on the
// wrong builder or a build that cannot connect.
import { createConnection, createServer, type Server, type Socket } from "node:net";
import type { INetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import type { IPod } from "kubernetes-models/v1/Pod";
import type { IService } from "kubernetes-models/v1/Service";
import type { KubeObject, Stored } from "../../objects.ts";
import { fromLabelSelector, matchesLabels } from "../../selectors.ts";
import type { Store } from "../../store.ts";
import { type Dialer, type PodPorts, serviceName } from "./mapping.ts";

type Pod = Stored<IPod & KubeObject>;
type NetworkPolicy = Stored<INetworkPolicy & KubeObject>;

export interface ProxiedConnection {
  /** The dialling pod. */
  from: string;
  /** `<ns>/<service>` or `<ns>/<pod>`, as dialled. */
  to: string;
  /** The host the pod dialled: a DNS name, or an IP that needed no lookup. */
  dialled: string;
  port: number;
  /** The pod the connection reached, when it reached one. */
  pod?: string;
  /** Why it was closed instead. */
  refused?: string;
  at: number;
}

/** Whether a pod is a Ready endpoint: running, Ready, not terminating. */
export function isReadyEndpoint(pod: Pod): boolean {
  if (pod.metadata.deletionTimestamp || pod.status?.phase !== "Running") return false;
  return (pod.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
}

function selects(selector: Readonly<Record<string, string>> | undefined, pod: Pod): boolean {
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

type Selector = Parameters<typeof fromLabelSelector>[0];
const matches = (selector: Selector | undefined, labels: Readonly<Record<string, string>>) =>
  matchesLabels(fromLabelSelector(selector ?? {}), labels);

/**
 * Whether the NetworkPolicies of `target`'s namespace let `source` reach `target` on a
 * container port (networking.k8s.io/v1 semantics): a pod that no Ingress policy selects takes
 * any connection; otherwise some rule of a selecting policy must admit both the peer (pod
 * selector in the policy's namespace, namespace selector, or both together) and the port.
 * ipBlock peers admit nothing here: the dialling processes have no pod-network address.
 */
export function ingressAllowed(store: Store, source: Pod, target: Pod, port: number): boolean {
  const namespace = target.metadata.namespace;
  const policies = store
    .objects<INetworkPolicy & KubeObject>("networkpolicies.networking.k8s.io", namespace)
    .filter(
      (policy: NetworkPolicy) =>
        (policy.spec?.policyTypes ?? ["Ingress"]).includes("Ingress") &&
        matches(policy.spec?.podSelector, target.metadata.labels ?? {}),
    );
  if (policies.length === 0) return true;
  const sourceNamespace = store.get("namespaces", undefined, source.metadata.namespace ?? "");
  const namespaceLabels = sourceNamespace?.metadata.labels ?? {};
  const peerAdmits = (
    peer: NonNullable<NonNullable<NetworkPolicy["spec"]>["ingress"]>[number]["from"],
  ) =>
    !peer?.length ||
    peer.some((p) => {
      if (p.ipBlock) return false;
      if (p.namespaceSelector && !matches(p.namespaceSelector, namespaceLabels)) return false;
      if (!p.namespaceSelector && source.metadata.namespace !== namespace) return false;
      return !p.podSelector || matches(p.podSelector, source.metadata.labels ?? {});
    });
  const portAdmits = (
    ports: NonNullable<NonNullable<NetworkPolicy["spec"]>["ingress"]>[number]["ports"],
  ) =>
    !ports?.length ||
    ports.some((p) => {
      if ((p.protocol ?? "TCP") !== "TCP") return false;
      if (p.port === undefined) return true;
      const first = containerPort(target, p.port);
      return first !== undefined && port >= first && port <= (p.endPort ?? first);
    });
  return policies.some((policy) =>
    (policy.spec?.ingress ?? []).some((rule) => peerAdmits(rule.from) && portAdmits(rule.ports)),
  );
}

type Destination = (
  | { kind: "service"; namespace: string; name: string; port: number }
  | { kind: "pod"; namespace: string; name: string; uid: string; port: number }
) & { dialled: string };

/**
 * Which cluster DNS the pods see. CoreDNS (kind, kubeadm, EKS) also answers
 * `<ip-with-dashes>.<headless>.<ns>.svc` for a pod without a hostname; kube-dns (GKE Standard's
 * default) names such pods by a hash, so that name is NXDOMAIN there.
 */
export type ClusterDns = "coredns" | "kube-dns";

export class ClusterNetwork implements Dialer {
  private readonly store: Store;
  private readonly ports: PodPorts;
  /** One listener per dialling pod and destination, so each connection knows its source. */
  private readonly proxies = new Map<
    string,
    { server: Server; hostPort: Promise<number>; podUid: string }
  >();
  private readonly sockets = new Set<Socket>();
  readonly connections: ProxiedConnection[] = [];

  private readonly dns: ClusterDns;

  constructor(store: Store, ports: PodPorts, dns: ClusterDns = "coredns") {
    this.store = store;
    this.ports = ports;
    this.dns = dns;
  }

  /**
   * Where a dial from a pod lands: the pod's own loopback ports directly; a pod IP, a pod under
   * a headless Service, or a Service port through a listener for this pod and destination;
   * undefined for names and addresses the cluster does not know.
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
    if (byIp) return this.listener(from.podUid, podDestination(byIp, port, host));
    const wanted = serviceName(host, from.namespace);
    if (!wanted) return undefined;
    if (wanted.pod !== undefined && this.dns === "kube-dns" && /^[0-9a-f-]+$/.test(wanted.pod)) {
      const byHostname = this.store
        .objects<IPod & KubeObject>("pods", wanted.namespace)
        .some((pod) => pod.spec?.hostname === wanted.pod && pod.spec?.subdomain === wanted.name);
      if (!byHostname) return undefined;
    }
    const service = this.store.get<IService & KubeObject>(
      "services",
      wanted.namespace,
      wanted.name,
    );
    if (!service) return undefined;
    if (wanted.pod === undefined)
      return this.listener(from.podUid, { kind: "service", ...wanted, port, dialled: host });
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
            (candidate.spec?.hostname === wanted.pod && candidate.spec?.subdomain === wanted.name)),
      );
    return pod ? this.listener(from.podUid, podDestination(pod, port, host)) : undefined;
  }

  private async listener(podUid: string, to: Destination): Promise<string> {
    const key = `${podUid}>${to.kind}/${to.namespace}/${to.name}:${to.port}@${to.dialled}`;
    let proxy = this.proxies.get(key);
    if (!proxy) {
      const server = createServer((socket) => this.forward(socket, podUid, to));
      const hostPort = new Promise<number>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => {
          const address = server.address();
          resolve(typeof address === "object" && address ? address.port : 0);
        });
      });
      proxy = { server, hostPort, podUid };
      this.proxies.set(key, proxy);
    }
    return `127.0.0.1:${await proxy.hostPort}`;
  }

  /** The pod a connection goes to and its container port, or why there is none. */
  private route(to: Destination): { pod: Pod; port: number } | string {
    if (to.kind === "pod") {
      const pod = this.store.get<IPod & KubeObject>("pods", to.namespace, to.name);
      return pod && pod.metadata.uid === to.uid ? { pod, port: to.port } : "the pod is gone";
    }
    const service = this.store.get<IService & KubeObject>("services", to.namespace, to.name);
    const servicePort = service?.spec?.ports?.find((p) => p.port === to.port);
    if (!service || !servicePort) return `no port ${to.port} on the Service`;
    const headless = service.spec?.clusterIP === "None";
    const target = headless ? to.port : (servicePort.targetPort ?? servicePort.port);
    const endpoints = this.store
      .objects<IPod & KubeObject>("pods", to.namespace)
      .filter((pod) => selects(service.spec?.selector, pod) && isReadyEndpoint(pod));
    const pod = endpoints[Math.floor(Math.random() * endpoints.length)];
    if (!pod) return "no Ready endpoint";
    const number = containerPort(pod, target);
    return number === undefined
      ? `pod ${pod.metadata.name} has no port ${target}`
      : { pod, port: number };
  }

  private forward(client: Socket, podUid: string, to: Destination): void {
    this.sockets.add(client);
    client.once("close", () => this.sockets.delete(client));
    client.on("error", () => {});
    const source = this.store
      .objects<IPod & KubeObject>("pods")
      .find((p) => p.metadata.uid === podUid);
    const record: ProxiedConnection = {
      from: source ? `${source.metadata.namespace}/${source.metadata.name}` : podUid,
      to: `${to.namespace}/${to.name}`,
      dialled: to.dialled,
      port: to.port,
      at: Date.now(),
    };
    this.connections.push(record);
    const hostPort = this.admit(record, source, to);
    if (typeof hostPort === "string") {
      record.refused = hostPort;
      client.destroy();
      return;
    }
    const upstream = createConnection({ host: "127.0.0.1", port: hostPort });
    this.sockets.add(upstream);
    upstream.once("close", () => this.sockets.delete(upstream));
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
    client.pipe(upstream).pipe(client);
  }

  /** The loopback port a connection goes to, or why it is closed. */
  private admit(
    record: ProxiedConnection,
    source: Pod | undefined,
    to: Destination,
  ): number | string {
    const routed = this.route(to);
    if (typeof routed === "string") return routed;
    record.pod = routed.pod.metadata.name;
    if (!source) return "the dialling pod is gone";
    if (!ingressAllowed(this.store, source, routed.pod, routed.port))
      return "no NetworkPolicy admits it";
    const own = source.metadata.uid === routed.pod.metadata.uid;
    const hostPort = this.ports.lookup(routed.pod.metadata.uid!, routed.port, own);
    return hostPort ?? `nothing listens on port ${routed.port}`;
  }

  /** Closes the listeners a pod's dials opened (its containers have ended). */
  async release(podUid: string): Promise<void> {
    const closing: Promise<void>[] = [];
    for (const [key, proxy] of this.proxies) {
      if (proxy.podUid !== podUid) continue;
      this.proxies.delete(key);
      closing.push(new Promise((resolve) => proxy.server.close(() => resolve())));
    }
    await Promise.all(closing);
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

function podDestination(pod: Pod, port: number, dialled: string): Destination {
  return {
    kind: "pod",
    namespace: pod.metadata.namespace!,
    name: pod.metadata.name!,
    uid: pod.metadata.uid!,
    port,
    dialled,
  };
}
