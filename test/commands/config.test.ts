import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../src/config.ts";

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
