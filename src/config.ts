// Operator configuration from flags and environment, validated with zod. A bad value is
// reported naming the flag and the environment variable it could have come from.
import { parseArgs } from "node:util";
import { z } from "zod";
import { DEFAULT_BUILDKIT_IMAGE } from "./api/builderpool.ts";
import { DURATION, parseDuration } from "./api/meta.ts";
import { PLATFORM } from "./api/platform.ts";
import { IMAGE_REFERENCE } from "./api/reference.ts";
import { errorMessage } from "./errors.ts";
import { DEFAULT_OPERATOR_IMAGE_PLATFORMS } from "./naming.ts";

export const DEFAULT_OPERATOR_IMAGE = "ghcr.io/buildfarm-dev/buildfarm:0.1.0";

interface Setting {
  flag: string;
  env: string;
  type: "string" | "boolean";
  description: string;
}

const SETTINGS = {
  namespaces: {
    flag: "namespaces",
    env: "WATCH_NAMESPACES",
    type: "string",
    description: "comma-separated namespaces to watch; empty watches the whole cluster",
  },
  leaderElect: {
    flag: "leader-elect",
    env: "LEADER_ELECT",
    type: "string",
    description: "elect a leader through a Lease (true|false, default true)",
  },
  leaseName: {
    flag: "lease-name",
    env: "LEASE_NAME",
    type: "string",
    description: "name of the leader-election Lease (default buildfarm-operator)",
  },
  leaseNamespace: {
    flag: "lease-namespace",
    env: "POD_NAMESPACE",
    type: "string",
    description: "namespace of the Lease (default: the pod's namespace, else default)",
  },
  leaseDuration: {
    flag: "leader-elect-lease-duration",
    env: "LEASE_DURATION",
    type: "string",
    description:
      "how long a standby waits after the last renewal before taking the Lease (default 15s)",
  },
  renewDeadline: {
    flag: "leader-elect-renew-deadline",
    env: "RENEW_DEADLINE",
    type: "string",
    description: "how long the leader tries to renew before it stops writing (default 10s)",
  },
  retryPeriod: {
    flag: "leader-elect-retry-period",
    env: "RETRY_PERIOD",
    type: "string",
    description: "how often the Lease is renewed, or tried by a standby (default 2s)",
  },
  syncPeriod: {
    flag: "sync-period",
    env: "SYNC_PERIOD",
    type: "string",
    description: "how often every cached object is reconciled again (default 10m)",
  },
  identity: {
    flag: "identity",
    env: "POD_NAME",
    type: "string",
    description: "this instance's identity in the Lease (default: hostname)",
  },
  metricsAddress: {
    flag: "metrics-bind-address",
    env: "METRICS_BIND_ADDRESS",
    type: "string",
    description:
      "host:port of /metrics, /healthz and /readyz (default :8080: every address, IPv6 and IPv4 where the node has IPv6, else IPv4; 0 disables)",
  },
  logLevel: {
    flag: "log-level",
    env: "LOG_LEVEL",
    type: "string",
    description: "trace|debug|info|warn|error (default info)",
  },
  poolWorkers: {
    flag: "pool-workers",
    env: "POOL_WORKERS",
    type: "string",
    description: "concurrent BuilderPool reconciles (default 2)",
  },
  buildWorkers: {
    flag: "build-workers",
    env: "BUILD_WORKERS",
    type: "string",
    description: "concurrent ImageBuild reconciles (default 4)",
  },
  buildkitImage: {
    flag: "buildkit-image",
    env: "BUILDKIT_IMAGE",
    type: "string",
    description: `default rootless BuildKit image (default ${DEFAULT_BUILDKIT_IMAGE})`,
  },
  operatorImage: {
    flag: "operator-image",
    env: "OPERATOR_IMAGE",
    type: "string",
    description: "this operator's image, run by index Jobs as `buildfarm assemble`",
  },
  operatorImagePlatforms: {
    flag: "operator-image-platforms",
    env: "OPERATOR_IMAGE_PLATFORMS",
    type: "string",
    description: `platforms the operator image is built for; the Jobs that run it (platform pods' cache report, index, tag) go only to their nodes (default ${DEFAULT_OPERATOR_IMAGE_PLATFORMS.join(",")})`,
  },
  builderCacheInterval: {
    flag: "builder-cache-interval",
    env: "BUILDER_CACHE_INTERVAL",
    type: "string",
    description:
      "how often each builder is asked for its cache usage (buildfarm_builder_cache_bytes; default 60s, 0 turns it off)",
  },
  operatorNamespace: {
    flag: "operator-namespace",
    env: "POD_NAMESPACE",
    type: "string",
    description:
      "the operator pods' namespace, which the pools' NetworkPolicies admit to the builders for the cache usage (default: none, outside a cluster)",
  },
  shutdownTimeout: {
    flag: "shutdown-timeout",
    env: "SHUTDOWN_TIMEOUT",
    type: "string",
    description: "how long in-flight reconciles may finish after SIGTERM (default 30s)",
  },
  kubeconfig: {
    flag: "kubeconfig",
    env: "KUBECONFIG",
    type: "string",
    description: "kubeconfig file (default: in-cluster, else ~/.kube/config)",
  },
} as const satisfies Record<string, Setting>;

type SettingName = keyof typeof SETTINGS;

const NAMESPACE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const bool = z
  .enum(["true", "false", "1", "0"], { message: "must be true or false" })
  .transform((v) => v === "true" || v === "1");
const count = (max: number) =>
  z
    .string()
    .regex(/^[0-9]+$/, { message: "must be a whole number" })
    .transform(Number)
    .pipe(
      z
        .number()
        .int()
        .min(1, { message: "must be at least 1" })
        .max(max, { message: `must be at most ${max}` }),
    );
const duration = (fallback: string) =>
  z
    .string()
    .regex(DURATION, { message: "must be a duration such as 30s" })
    .default(fallback)
    .transform(parseDuration)
    .pipe(z.number().positive({ message: "must be longer than 0" }));
const hostPort = z.string().regex(/^(0|(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]*):[0-9]{1,5})$/, {
  message: "must be host:port (e.g. [::]:8080, 0.0.0.0:8080 or :8080), or 0 to disable",
});

/** A comma-separated list (spaces around items allowed), each item checked by `items`. */
const commaList = <T extends z.ZodType<unknown, string[]>>(fallback: string, items: T) =>
  z
    .string()
    .default(fallback)
    .transform((text) =>
      text
        .split(",")
        .map((item) => item.trim())
        .filter(Boolean),
    )
    .pipe(items);

const schema = z.object({
  namespaces: commaList(
    "",
    z.array(z.string().max(63).regex(NAMESPACE, { message: "each namespace must be a DNS label" })),
  ),
  leaderElect: bool.default(true),
  leaseName: z
    .string()
    .max(253)
    .regex(NAMESPACE, { message: "must be a Kubernetes name" })
    .default("buildfarm-operator"),
  leaseNamespace: z
    .string()
    .max(63)
    .regex(NAMESPACE, { message: "must be a namespace name" })
    .default("default"),
  leaseDuration: duration("15s"),
  renewDeadline: duration("10s"),
  retryPeriod: duration("2s"),
  syncPeriod: duration("10m"),
  identity: z.string().min(1).max(128).optional(),
  metricsAddress: hostPort.default(":8080"),
  logLevel: z
    .enum(["trace", "debug", "info", "warn", "error", "silent"], {
      message: "must be trace, debug, info, warn or error",
    })
    .default("info"),
  poolWorkers: count(64).default(2),
  buildWorkers: count(256).default(4),
  buildkitImage: z
    .string()
    .max(512)
    .regex(IMAGE_REFERENCE, { message: "must be an image reference" })
    .default(DEFAULT_BUILDKIT_IMAGE),
  operatorImage: z
    .string()
    .max(512)
    .regex(IMAGE_REFERENCE, { message: "must be an image reference" })
    .default(DEFAULT_OPERATOR_IMAGE),
  operatorImagePlatforms: commaList(
    DEFAULT_OPERATOR_IMAGE_PLATFORMS.join(","),
    z
      .array(
        z.string().regex(PLATFORM, {
          message: "each platform must be linux/<arch>[/variant], e.g. linux/arm64",
        }),
      )
      .min(1, { message: "must name at least one platform" }),
  ),
  builderCacheInterval: z
    .string()
    .regex(new RegExp(`^(0|${DURATION.source.replace(/^\^|\$$/g, "")})$`), {
      message: "must be a duration such as 60s, or 0 to turn it off",
    })
    .default("60s")
    .transform((text) => (text === "0" ? 0 : parseDuration(text))),
  operatorNamespace: z
    .string()
    .max(63)
    .regex(NAMESPACE, { message: "must be a namespace name" })
    .optional(),
  shutdownTimeout: z
    .string()
    .regex(DURATION, { message: "must be a duration such as 30s" })
    .default("30s")
    .transform(parseDuration),
  kubeconfig: z.string().min(1).optional(),
});

export type OperatorConfig = z.infer<typeof schema> & {
  metrics: { host?: string; port: number } | undefined;
};

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

export const CONFIG_USAGE = Object.values(SETTINGS)
  .map(
    (setting: Setting) => `  --${setting.flag.padEnd(22)} ${setting.description} [$${setting.env}]`,
  )
  .join("\n");

/** Flags win over environment variables; both are validated. */
export function loadConfig(argv: string[], env: NodeJS.ProcessEnv): OperatorConfig {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: argv,
      options: Object.fromEntries(
        Object.values(SETTINGS).map((setting) => [setting.flag, { type: "string" as const }]),
      ),
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    throw new ConfigError(`${errorMessage(error)}\n\noptions:\n${CONFIG_USAGE}`);
  }
  const raw: Record<string, string | undefined> = {};
  for (const [name, setting] of Object.entries(SETTINGS) as [SettingName, Setting][]) {
    const value = values[setting.flag] ?? env[setting.env];
    raw[name] = typeof value === "string" && value !== "" ? value : undefined;
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const setting = SETTINGS[issue.path[0] as SettingName];
      return `--${setting.flag} (or $${setting.env}) ${JSON.stringify(raw[issue.path[0] as string] ?? "")}: ${issue.message}`;
    });
    throw new ConfigError(lines.join("\n"));
  }
  const { leaseDuration, renewDeadline, retryPeriod } = parsed.data;
  if (!(retryPeriod < renewDeadline && renewDeadline < leaseDuration))
    throw new ConfigError(
      "--leader-elect-retry-period < --leader-elect-renew-deadline < --leader-elect-lease-duration must hold: the leader stops writing before a standby may take over",
    );
  const address = parsed.data.metricsAddress;
  const colon = address.lastIndexOf(":");
  // An empty host lets Node listen on "::" (every IPv6 and, dual-stack, every IPv4 address)
  // where the kernel has IPv6, and on 0.0.0.0 where it has none (ipv6.disable=1, where "::"
  // fails with EAFNOSUPPORT): the kubelet's probes then reach the pod on IPv4, IPv6 and
  // dual-stack clusters alike, whereas "0.0.0.0" refuses those of an IPv6-only cluster. Node
  // wants IPv6 hosts without brackets.
  const metrics =
    address === "0"
      ? undefined
      : {
          ...(colon > 0 ? { host: address.slice(0, colon).replace(/^\[(.*)\]$/, "$1") } : {}),
          port: Number(address.slice(colon + 1)),
        };
  if (metrics && metrics.port > 65535)
    throw new ConfigError(
      `--metrics-bind-address ${JSON.stringify(address)}: port must be at most 65535`,
    );
  return { ...parsed.data, metrics };
}
