#!/usr/bin/env node
// The `buildfarm` command. Each subcommand lives in src/commands and is loaded only when
// used, so `buildfarm assemble` in an index Job starts without the Kubernetes client.
//
// This module has no static import and checks the Node version first: the commands (and the
// libraries they load, e.g. node:tls getCACertificates) need Node 24, and an older Node would
// die inside one of them with a message that names neither Node nor the version.
const NODE_MAJOR = Number(process.versions.node.split(".")[0]);
if (NODE_MAJOR < 24) {
  process.stderr.write(`buildfarm needs Node 24 (this is ${NODE_MAJOR}.x)\n`);
  process.exit(1);
}

const USAGE = `usage: buildfarm <command> [options]
       buildfarm --version

commands:
  operator [options]   run the controllers against the current kube context (--help for options)
  status <imagebuild>  a build's phases, builders, durations and digests (-n namespace)
  logs <imagebuild>    the logs of a build's pods, prefixed by platform (-f follow, -w wait: exit 1 unless it succeeds)
  crds [--out DIR]     print the CustomResourceDefinitions, or write them into DIR
  assemble [options]   combine per-platform images into one multi-arch index and tag it
                       (buildfarm assemble --help)
  cache-report --trace FILE
                       sum up a buildctl trace: build steps cached and executed (platform pods)
`;

type Command = (argv: string[]) => Promise<number>;

const COMMANDS: Record<string, () => Promise<Command>> = {
  operator: async () => (await import("./commands/operator.ts")).operatorCommand,
  crds: async () => (await import("./commands/crds.ts")).crdsCommand,
  status: async () => (await import("./commands/status.ts")).statusCommand,
  logs: async () => (await import("./commands/logs.ts")).logsCommand,
  assemble: async () => (await import("./commands/assemble.ts")).assembleCommand,
  "cache-report": async () => (await import("./commands/cache-report.ts")).cacheReportCommand,
};

/**
 * `buildfarm <version> (<revision>)`: package.json's version next to this script (the
 * checkout's, or the image's /app/package.json) and the source revision the image was built
 * from (BUILDFARM_REVISION, which the Dockerfile sets from its build argument).
 */
async function version(): Promise<string> {
  const { readFile } = await import("node:fs/promises");
  const manifest = JSON.parse(
    await readFile(new URL("../package.json", import.meta.url), "utf8"),
  ) as { version?: string };
  const revision = process.env.BUILDFARM_REVISION || "unknown revision";
  return `buildfarm ${manifest.version ?? "unknown"} (${revision})\n`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === "--version") {
    process.stdout.write(await version());
    return 0;
  }
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    process.stdout.write(USAGE);
    return name === undefined ? 2 : 0;
  }
  const load = COMMANDS[name];
  if (!load) {
    process.stderr.write(`buildfarm: unknown command ${JSON.stringify(name)}\n\n${USAGE}`);
    return 2;
  }
  return (await load())(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`buildfarm: ${error instanceof Error ? error.message : String(error)}\n`);
    // Exit now: whatever a failed command left open (a socket, a timer) must not keep the
    // process, and with it a pod that does nothing, alive.
    process.exit(1);
  },
);
