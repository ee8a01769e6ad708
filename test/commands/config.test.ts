import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../src/config.ts";
import { HealthServer } from "../../src/runtime/server.ts";

describe("operator configuration: leader election timing and the sync period", () => {
  it("defaults to client-go's 15s/10s/2s and controller-runtime's 10m", () => {
    const config = loadConfig([], {});
    expect([config.leaseDuration, config.renewDeadline, config.retryPeriod]).toEqual([
      15_000, 10_000, 2_000,
    ]);
    expect(config.syncPeriod).toBe(600_000);
  });

  it("takes flags before environment variables", () => {
    const config = loadConfig(
      [
        "--leader-elect-lease-duration=4s",
        "--leader-elect-renew-deadline",
        "3s",
        "--sync-period=10s",
      ],
      { RETRY_PERIOD: "500ms", LEASE_DURATION: "1h" },
    );
    expect([config.leaseDuration, config.renewDeadline, config.retryPeriod]).toEqual([
      4_000, 3_000, 500,
    ]);
    expect(config.syncPeriod).toBe(10_000);
  });

  it.each([
    [
      ["--sync-period=soon"],
      '--sync-period (or $SYNC_PERIOD) "soon": must be a duration such as 30s',
    ],
    [["--sync-period=0s"], '--sync-period (or $SYNC_PERIOD) "0s": must be longer than 0'],
    [
      ["--leader-elect-renew-deadline=20s"],
      "--leader-elect-retry-period < --leader-elect-renew-deadline < --leader-elect-lease-duration must hold",
    ],
  ])("refuses %j", (argv, message) => {
    expect(() => loadConfig(argv, {})).toThrow(ConfigError);
    expect(() => loadConfig(argv, {})).toThrow(message);
  });
});

describe("operator configuration: the health and metrics address", () => {
  /** Starts the health server where the config says and asks /healthz over `host`. */
  async function answers(
    metrics: { host?: string; port: number },
    hosts: string[],
  ): Promise<Record<string, number | string>> {
    const server = new HealthServer({
      ...metrics,
      registry: new Registry(),
      ready: () => ({ ready: true }),
    });
    const { port } = await server.listen();
    try {
      const out: Record<string, number | string> = {};
      for (const host of hosts) {
        const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}/healthz`;
        out[host] = await fetch(url).then(
          (response) => response.status,
          (error: Error) => String((error.cause as Error | undefined)?.message ?? error.message),
        );
      }
      return out;
    } finally {
      await server.close();
    }
  }

  it("binds every address, IPv6 and IPv4, by default (IPv6-only clusters probe the pod's IPv6 address)", async () => {
    const { metrics } = loadConfig([], {});
    expect(metrics).toEqual({ port: 8080 });
    // The default host on a free port: answers on ::1 and on 127.0.0.1.
    expect(await answers({ ...metrics!, port: 0 }, ["::1", "127.0.0.1"])).toEqual({
      "::1": 200,
      "127.0.0.1": 200,
    });
  });

  it.each([
    [":9090", { port: 9090 }],
    ["[::]:9090", { host: "::", port: 9090 }],
    ["[::1]:9090", { host: "::1", port: 9090 }],
    ["0.0.0.0:9090", { host: "0.0.0.0", port: 9090 }],
    ["127.0.0.1:9090", { host: "127.0.0.1", port: 9090 }],
  ])("reads --metrics-bind-address %s as the host Node listens on", (flag, expected) => {
    expect(loadConfig([`--metrics-bind-address=${flag}`], {}).metrics).toEqual(expected);
  });

  it("listens on a bracketed IPv6 address it was given", async () => {
    const { metrics } = loadConfig(["--metrics-bind-address=[::1]:0"], {});
    expect(await answers(metrics!, ["::1"])).toEqual({ "::1": 200 });
  });
});

describe("operator configuration: the platforms of the operator image", () => {
  it("defaults to linux/amd64 and linux/arm64, and takes a list", () => {
    expect(loadConfig([], {}).operatorImagePlatforms).toEqual(["linux/amd64", "linux/arm64"]);
    expect(
      loadConfig(["--operator-image-platforms=linux/arm64"], {}).operatorImagePlatforms,
    ).toEqual(["linux/arm64"]);
    expect(
      loadConfig([], { OPERATOR_IMAGE_PLATFORMS: "linux/amd64, linux/arm/v7" })
        .operatorImagePlatforms,
    ).toEqual(["linux/amd64", "linux/arm/v7"]);
  });

  it("refuses what is not a Linux platform, naming the flag", () => {
    expect(() => loadConfig(["--operator-image-platforms=windows/amd64"], {})).toThrow(
      /--operator-image-platforms \(or \$OPERATOR_IMAGE_PLATFORMS\) "windows\/amd64": each platform must be linux/,
    );
  });
});
