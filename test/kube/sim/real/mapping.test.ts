// The real-process executor's mappings, without BuildKit: which arguments are mapped and which
// are left exactly as the pod spec has them, how cluster names resolve, and kube-proxy's choice
// of endpoint (by selector and readiness, per connection), with echo servers standing for pods.
import { createConnection, createServer, type Server } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { buildJob } from "../../../../src/imagebuild/jobs.ts";
import { exampleBuild, examplePlan } from "../../../imagebuild/fixtures.ts";
import type { KubeObject } from "../../objects.ts";
import { Store } from "../../store.ts";
import { imageConfig } from "./images.ts";
import {
  type ArgMapper,
  listenScope,
  mapArgv,
  mapEnv,
  PodPorts,
  parseTcp,
  serviceName,
} from "./mapping.ts";
import { ClusterNetwork } from "./network.ts";

const programs = {
  buildkitd: "/opt/bk/buildkitd",
  buildctl: "/opt/bk/buildctl",
  rootlesskit: "/usr/bin/rootlesskit",
  cli: "/repo/src/cli.ts",
};

/** Marks what it mapped, so a test sees exactly which arguments went through which mapping. */
const marker: ArgMapper = {
  path: (path) => `<host>${path}`,
  dial: async (address) => `<dial ${address}>`,
  listen: async (address) => `<listen ${address}>`,
};

describe("argv mapping", () => {
  it("maps buildkitd's paths and listen addresses, through the rootless image's entrypoint", async () => {
    const argv = await mapArgv(
      [
        ...imageConfig("moby/buildkit:v0.24.0-rootless", "x/op:1")!.entrypoint,
        ...["--addr", "unix:///run/user/1000/buildkit/buildkitd.sock", "--addr", "tcp://:1234"],
        ...[
          "--tlscacert",
          "/etc/buildkit/certs/ca.crt",
          "--root",
          "/home/user/.local/share/buildkit",
        ],
        ...["--config=/etc/buildkit/config/buildkitd.toml", "--oci-worker-no-process-sandbox"],
        ...["--oci-worker-gc-keepstorage", "/not/a/path/flag"],
      ],
      programs,
      marker,
    );
    expect(argv).toEqual({
      file: "/usr/bin/rootlesskit",
      args: [
        "buildkitd",
        ...["--addr", "<listen unix:///run/user/1000/buildkit/buildkitd.sock>"],
        ...["--addr", "<listen tcp://:1234>"],
        ...["--tlscacert", "<host>/etc/buildkit/certs/ca.crt"],
        ...["--root", "<host>/home/user/.local/share/buildkit"],
        ...[
          "--config=<host>/etc/buildkit/config/buildkitd.toml",
          "--oci-worker-no-process-sandbox",
        ],
        // A flag the table does not know passes through untouched.
        ...["--oci-worker-gc-keepstorage", "/not/a/path/flag"],
      ],
    });
  });

  it("maps the operator's buildctl argv only where it names files or the builder address", async () => {
    const args = [
      ...[
        "--addr",
        "tcp://farm-amd64.builders.svc:1234",
        "--tlsservername",
        "farm-amd64.builders.svc",
      ],
      ...["--tlscacert", "/etc/buildkit/certs/ca.crt", "--wait", "--timeout", "120", "build"],
      ...[
        "--opt",
        "build-arg:DIR=/etc/passwd",
        "--opt",
        "context=git://127.0.0.1:1/a.git#main:app",
      ],
      ...["--secret", "id=token,src=/etc/buildfarm/secrets/token", "--local", "context=/workspace"],
      ...["--ssh", "default=/etc/buildfarm/git/ssh-privatekey"],
      ...["--output", "type=image,name=127.0.0.1:5000/app,push=true"],
      ...["--export-cache", "type=registry,ref=127.0.0.1:5000/app:buildcache-amd64"],
      ...["--metadata-file", "/out/metadata.json"],
    ];
    expect(await mapArgv(["buildctl", ...args], programs, marker)).toEqual({
      file: "/opt/bk/buildctl",
      args: [
        ...["--addr", "<dial tcp://farm-amd64.builders.svc:1234>"],
        // The TLS server name stays the Service's DNS name: the certificate is checked against it.
        ...["--tlsservername", "farm-amd64.builders.svc"],
        ...[
          "--tlscacert",
          "<host>/etc/buildkit/certs/ca.crt",
          "--wait",
          "--timeout",
          "120",
          "build",
        ],
        // Build arguments are the user's text, even when they look like paths.
        ...[
          "--opt",
          "build-arg:DIR=/etc/passwd",
          "--opt",
          "context=git://127.0.0.1:1/a.git#main:app",
        ],
        ...["--secret", "id=token,src=<host>/etc/buildfarm/secrets/token"],
        ...["--local", "context=<host>/workspace"],
        ...["--ssh", "default=<host>/etc/buildfarm/git/ssh-privatekey"],
        // Registry references are what BuildKit pushes to: never touched.
        ...["--output", "type=image,name=127.0.0.1:5000/app,push=true"],
        ...["--export-cache", "type=registry,ref=127.0.0.1:5000/app:buildcache-amd64"],
        ...["--metadata-file", "<host>/out/metadata.json"],
      ],
    });
  });

  it.each([
    [
      "a git source with a token and build secrets",
      {
        secrets: [{ id: "npmrc", secretRef: { name: "npm", key: "npmrc" } }],
        source: { git: { authSecretRef: { name: "git-auth" } } },
      },
    ],
    [
      "an inline source",
      {
        source: {
          git: null,
          inline: { dockerfile: "FROM x", files: [{ path: "a.txt", content: "a" }] },
        },
      },
    ],
  ])("maps every argument of a build Job that names a file under a mount (%s)", async (_, spec) => {
    // If the operator gives buildctl a new flag whose value is a file, the table must learn it.
    const build = exampleBuild({ spec });
    const plan = examplePlan(build);
    const job = buildJob(build, plan, plan.targets[0]!);
    const pod = job.spec?.template.spec;
    for (const container of [...(pod?.initContainers ?? []), ...(pod?.containers ?? [])]) {
      // A container without a command runs its image's entrypoint (the operator image's node).
      const entrypoint =
        container.command ??
        imageConfig(container.image ?? "", container.image ?? "")?.entrypoint ??
        [];
      const original = [...entrypoint, ...(container.args ?? [])];
      const mapped = await mapArgv(original, programs, marker);
      if ("error" in mapped) throw new Error(mapped.error);
      const mounts = [
        ...(container.volumeMounts ?? []).map((m) => m.mountPath),
        container.terminationMessagePath ?? "/dev/termination-log",
      ];
      const namesFile = (arg: string) =>
        mounts.some((m) => new RegExp(`(^|[=,])${m.replace(/[.]/g, "\\.")}(/|$|,)`).test(arg));
      const missed = original
        .slice(1)
        .filter((arg, i) => namesFile(arg) && !mapped.args[i]!.includes("<host>"));
      expect({ container: container.name, missed }).toEqual({
        container: container.name,
        missed: [],
      });
      expect(original.slice(1).some(namesFile)).toBe(true);
    }
  });

  it("runs the operator image's entrypoint as this Node on src/cli.ts, mapping assemble's files", async () => {
    const operator = imageConfig(
      "ghcr.io/buildfarm-dev/buildfarm:0.1.0",
      "ghcr.io/buildfarm-dev/buildfarm:0.1.0",
    )!;
    const argv = await mapArgv(
      [
        ...operator.entrypoint,
        ...[
          "assemble",
          "--image",
          "127.0.0.1:5000/app",
          "--docker-config",
          "/etc/buildfarm/docker",
        ],
        ...["--termination-message-path", "/dev/termination-log"],
      ],
      programs,
      marker,
    );
    expect(argv).toEqual({
      file: process.execPath,
      args: [
        "/repo/src/cli.ts",
        ...[
          "assemble",
          "--image",
          "127.0.0.1:5000/app",
          "--docker-config",
          "<host>/etc/buildfarm/docker",
        ],
        ...["--termination-message-path", "<host>/dev/termination-log"],
      ],
    });
  });

  it("maps cp's operands, and refuses programs the image does not have", async () => {
    expect(
      await mapArgv(["cp", "/out/metadata.json", "/dev/termination-log"], programs, marker),
    ).toEqual({
      file: "/bin/cp",
      args: ["<host>/out/metadata.json", "<host>/dev/termination-log"],
    });
    expect(await mapArgv(["sh", "-c", "true"], programs, marker)).toEqual({
      error: expect.stringMatching(/executable file not found/),
    });
  });

  it("maps path and address variables, and sets PATH to the BuildKit binaries first", async () => {
    const env = await mapEnv(
      {
        ...imageConfig("moby/buildkit:v0.24.0-rootless", "x/op:1")!.env,
        DOCKER_CONFIG: "/etc/buildfarm/docker",
        NODE_ENV: "/production",
      },
      marker,
      "/opt/bk",
    );
    expect(env).toEqual({
      HOME: "<host>/home/user",
      USER: "user",
      XDG_RUNTIME_DIR: "<host>/run/user/1000",
      TMPDIR: "<host>/home/user/.local/tmp",
      BUILDKIT_HOST: "<dial unix:///run/user/1000/buildkit/buildkitd.sock>",
      DOCKER_CONFIG: "<host>/etc/buildfarm/docker",
      NODE_ENV: "/production",
      PATH: "/opt/bk:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    });
  });
});

describe("names and addresses", () => {
  it.each([
    [
      "farm-amd64.builders.svc.cluster.local",
      "apps",
      { name: "farm-amd64", namespace: "builders" },
    ],
    ["farm-amd64.builders.svc", "apps", { name: "farm-amd64", namespace: "builders" }],
    ["farm-amd64.builders", "apps", { name: "farm-amd64", namespace: "builders" }],
    ["farm-amd64", "apps", { name: "farm-amd64", namespace: "apps" }],
    [
      "10-244-0-3.farm-amd64-headless.builders.svc",
      "apps",
      { pod: "10-244-0-3", name: "farm-amd64-headless", namespace: "builders" },
    ],
    [
      "farm-amd64-0.farm-amd64-headless.builders.svc.cluster.local",
      "apps",
      { pod: "farm-amd64-0", name: "farm-amd64-headless", namespace: "builders" },
    ],
    ["farm-amd64.builders.svc.cluster", "apps", undefined],
    ["registry.example.com.au", "apps", undefined],
    ["127.0.0.1", "apps", undefined],
    ["[::1]", "apps", undefined],
  ])("%s from a pod in %s", (host, namespace, expected) => {
    expect(serviceName(host, namespace)).toEqual(expected);
  });

  it("tells listeners on every pod address from listeners on the pod's own loopback", () => {
    expect(parseTcp("tcp://:1234")).toEqual({ host: "", port: 1234 });
    expect(parseTcp("tcp://[::]:1234")).toEqual({ host: "[::]", port: 1234 });
    expect(parseTcp("unix:///x.sock")).toBeUndefined();
    expect(["", "0.0.0.0", "[::]"].map(listenScope)).toEqual(["pod", "pod", "pod"]);
    expect(["127.0.0.1", "localhost", "[::1]"].map(listenScope)).toEqual([
      "loopback",
      "loopback",
      "loopback",
    ]);
    expect(listenScope("10.0.0.1")).toBeUndefined();
  });
});

describe("kube-proxy", () => {
  const servers: Server[] = [];
  let network: ClusterNetwork | undefined;
  afterEach(async () => {
    await network?.stop();
    for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
  });

  /** A "pod process": a TCP server answering its name. */
  async function echo(name: string): Promise<number> {
    const server = createServer((socket) => socket.end(name));
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return (server.address() as { port: number }).port;
  }

  async function call(address: string | undefined): Promise<string> {
    if (!address) return "unresolved";
    const [host, port] = [
      address.slice(0, address.lastIndexOf(":")),
      address.slice(address.lastIndexOf(":") + 1),
    ];
    return await new Promise((resolve) => {
      let text = "";
      const socket = createConnection({ host, port: Number(port) });
      socket.on("data", (chunk) => {
        text += chunk;
      });
      socket.on("close", () => resolve(text || "closed"));
      socket.on("error", () => resolve("refused"));
    });
  }

  function setUp() {
    const store = new Store({ historySize: 100, serverVersion: { major: 1, minor: 31 } });
    for (const name of ["builders", "apps", "elsewhere"])
      store.create("namespaces", { metadata: { name } });
    const ports = new PodPorts();
    network = new ClusterNetwork(store, ports);
    const pod = (
      name: string,
      labels: Record<string, string>,
      ready: boolean,
      ip: string,
      namespace = "builders",
    ) => {
      const created = store.create("pods", {
        metadata: { name, namespace, labels },
        spec: {
          containers: [
            { name: "c", image: "i", ports: [{ name: "buildkit", containerPort: 1234 }] },
          ],
        },
      });
      store.mutate(
        "pods",
        namespace,
        name,
        (draft: KubeObject & { status?: unknown }) => {
          draft.status = {
            phase: "Running",
            podIP: ip,
            conditions: [{ type: "Ready", status: ready ? "True" : "False" }],
          };
        },
        { subresource: "status" },
      );
      return created.metadata.uid!;
    };
    const service = (
      name: string,
      selector: Record<string, string>,
      targetPort: string | number,
      headless = false,
    ) =>
      store.create("services", {
        metadata: { name, namespace: "builders" },
        spec: {
          selector,
          ports: [{ name: "buildkit", port: 1234, targetPort }],
          ...(headless ? { clusterIP: "None" } : {}),
        },
      });
    const client = {
      podUid: pod("client", { role: "build" }, true, "10.244.1.1", "apps"),
      namespace: "apps",
    };
    return { store, ports, pod, service, client, network: network! };
  }

  it("sends each connection to a Ready pod the Service selects, through its named port", async () => {
    const { ports, pod, service, client, network } = setUp();
    const amd = pod("farm-amd64-1", { arch: "amd64" }, true, "10.244.0.2");
    const arm = pod("farm-arm64-1", { arch: "arm64" }, true, "10.244.0.3");
    ports.bind(amd, 1234, { hostPort: await echo("amd64 builder"), scope: "pod" });
    ports.bind(arm, 1234, { hostPort: await echo("arm64 builder"), scope: "pod" });
    service("farm-amd64", { arch: "amd64" }, "buildkit");
    // A selector naming the wrong architecture sends builds to the wrong builder, as it would.
    service("farm-wrong", { arch: "arm64" }, "buildkit");
    const address = await network.dial("farm-amd64.builders.svc", 1234, client);
    expect(await call(address)).toBe("amd64 builder");
    expect(await call(await network.dial("farm-wrong.builders.svc", 1234, client))).toBe(
      "arm64 builder",
    );
    // The pod's IP reaches it directly, and so does its name under a headless Service.
    expect(await call(await network.dial("10.244.0.3", 1234, client))).toBe("arm64 builder");
    service("farm-arm64-headless", { arch: "arm64" }, "buildkit", true);
    expect(
      await call(await network.dial("10-244-0-3.farm-arm64-headless.builders.svc", 1234, client)),
    ).toBe("arm64 builder");
    expect(await network.dial("10-244-0-2.farm-arm64-headless.builders.svc", 1234, client)).toBe(
      undefined,
    );
    expect(network.connections.map((c) => [c.from, c.pod])).toEqual([
      ["apps/client", "farm-amd64-1"],
      ["apps/client", "farm-arm64-1"],
      ["apps/client", "farm-arm64-1"],
      ["apps/client", "farm-arm64-1"],
    ]);
  });

  it("closes connections when no endpoint is Ready, the port is wrong, or the pod listens only on its loopback", async () => {
    const { ports, pod, service, client, network } = setUp();
    const notReady = pod("starting", { app: "a" }, false, "10.244.0.4");
    ports.bind(notReady, 1234, { hostPort: await echo("starting"), scope: "pod" });
    service("a", { app: "a" }, "buildkit");
    expect(await call(await network.dial("a.builders.svc", 1234, client))).toBe("closed");
    const local = pod("local", { app: "b" }, true, "10.244.0.5");
    ports.bind(local, 1234, { hostPort: await echo("local"), scope: "loopback" });
    service("b", { app: "b" }, 1234);
    expect(await call(await network.dial("b.builders.svc", 1234, client))).toBe("closed");
    expect(await call(await network.dial("10.244.0.5", 1234, client))).toBe("closed");
    // ...but the pod itself reaches its loopback listener.
    expect(
      await call(await network.dial("127.0.0.1", 1234, { podUid: local, namespace: "builders" })),
    ).toBe("local");
    service("c", { app: "b" }, "no-such-port");
    expect(await call(await network.dial("c.builders.svc", 1234, client))).toBe("closed");
    // A Service port that does not exist.
    expect(await call(await network.dial("b.builders.svc", 4321, client))).toBe("closed");
    expect(network.connections.map((c) => c.refused)).toEqual([
      "no Ready endpoint",
      "nothing listens on port 1234",
      "nothing listens on port 1234",
      "pod local has no port no-such-port",
      "no port 4321 on the Service",
    ]);
  });

  it("admits only what the destination pod's NetworkPolicies admit, as an enforcing plugin does", async () => {
    const { store, ports, pod, service, client, network } = setUp();
    const builder = pod("builder", { app: "builder" }, true, "10.244.0.6");
    ports.bind(builder, 1234, { hostPort: await echo("builder"), scope: "pod" });
    service("builder", { app: "builder" }, "buildkit");
    const stranger = {
      podUid: pod("stranger", { role: "other" }, true, "10.244.1.2", "apps"),
      namespace: "apps",
    };
    const faraway = {
      podUid: pod("faraway", { role: "build" }, true, "10.244.1.3", "elsewhere"),
      namespace: "elsewhere",
    };
    const dialFrom = async (from: { podUid: string; namespace: string }) =>
      call(await network.dial("builder.builders.svc", 1234, from));
    // No policy selects the builder: everyone gets in.
    expect(await dialFrom(stranger)).toBe("builder");
    store.create("networkpolicies.networking.k8s.io", {
      metadata: { name: "builders", namespace: "builders" },
      spec: {
        podSelector: { matchLabels: { app: "builder" } },
        policyTypes: ["Ingress"],
        ingress: [
          {
            from: [
              {
                namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "apps" } },
                podSelector: { matchLabels: { role: "build" } },
              },
            ],
            ports: [{ protocol: "TCP", port: "buildkit" }],
          },
        ],
      },
    });
    expect(await dialFrom(client)).toBe("builder");
    expect(await dialFrom(stranger)).toBe("closed");
    expect(await dialFrom(faraway)).toBe("closed");
    expect(network.connections.slice(-2).map((c) => c.refused)).toEqual([
      "no NetworkPolicy admits it",
      "no NetworkPolicy admits it",
    ]);
  });

  it("leaves names the cluster does not know to the machine's resolver", async () => {
    const { client, network } = setUp();
    expect(await network.dial("nothing.builders.svc", 1234, client)).toBeUndefined();
    expect(await network.dial("registry.example.com", 443, client)).toBeUndefined();
    expect(await network.dial("127.0.0.1", 5000, client)).toBeUndefined();
  });
});
