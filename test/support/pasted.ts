// Commands as a user pastes them, and a cluster to paste them into: the real helm and kubectl of
// tools.ts against test/kube, through json-proxy.ts (client-go sends some bodies as protobuf).
// Used by the chart's install-story and upgrade tests, which parse their commands out of the
// README and the chart's NOTES instead of copying them.
import { execFile } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import { type Kube, type KubeOptions, startKube } from "../kube/index.ts";
import { type JsonProxy, startJsonProxy } from "./json-proxy.ts";
import { layerBinary } from "./tools.ts";

const run = promisify(execFile);

/**
 * What helm needs to install into test/kube, which serves no server-side apply, no OpenAPI
 * schemas and no RBAC kinds: client-side apply, no schema validation, no RBAC objects.
 */
export const HELM_HARNESS = [
  "--server-side=false",
  "--disable-openapi-validation",
  "--set",
  "rbac.create=false",
];

/** Shell words of one command line: whitespace-separated, with '…' and "…" quoting. */
export function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  let quote: string | undefined;
  for (const char of line) {
    if (quote) {
      if (char === quote) quote = undefined;
      else word = (word ?? "") + char;
    } else if (char === "'" || char === '"') {
      quote = char;
      word ??= "";
    } else if (/\s/.test(char)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else word = (word ?? "") + char;
  }
  if (quote) throw new Error(`unterminated ${quote} in ${line}`);
  if (word !== undefined) words.push(word);
  return words;
}

/** The `helm`, `kubectl` and `curl` commands of a text, in order, continuation lines joined. */
export function commandsOf(text: string): string[][] {
  return text
    .replace(/\\\n\s*/g, " ")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => /^(helm|kubectl|curl) /.test(line))
    .map(shellWords);
}

/** The ```sh blocks of one `## heading` section of a Markdown text, joined. */
export function shellBlocks(markdown: string, heading: string): string {
  const start = markdown.indexOf(`\n## ${heading}\n`);
  if (start < 0) throw new Error(`no section "## ${heading}"`);
  const end = markdown.indexOf("\n## ", start + 1);
  const section = markdown.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((match) => match[1]).join("\n");
}

export interface PasteCluster {
  kube: Kube;
  proxy: JsonProxy;
  /** Where the commands run. */
  cwd: string;
  helm(args: string[]): Promise<string>;
  kubectl(args: string[]): Promise<string>;
  stop(): Promise<void>;
}

/** A fresh test/kube for helm and kubectl; commands run in `cwd` (default: a new empty directory). */
export async function startPasteCluster(
  options: { cwd?: string; kube?: KubeOptions } = {},
): Promise<PasteCluster> {
  const kube = await startKube({ crds: [], ...options.kube });
  const proxy = await startJsonProxy(kube.url);
  const scratch = await mkdtemp(join(tmpdir(), "buildfarm-paste-"));
  const kubeconfig = join(scratch, ".kubeconfig");
  await writeFile(kubeconfig, kube.kubeConfig().exportConfig().replace(kube.url, proxy.url));
  // Helm's own homes in the scratch directory: no user repositories, no network.
  const env = {
    ...process.env,
    KUBECONFIG: kubeconfig,
    HELM_CACHE_HOME: join(scratch, ".helm", "cache"),
    HELM_CONFIG_HOME: join(scratch, ".helm", "config"),
    HELM_DATA_HOME: join(scratch, ".helm", "data"),
  };
  const cwd = options.cwd ?? scratch;
  const exec = (binary: string) => async (args: string[]) => {
    try {
      return (await run(binary, args, { env, cwd, timeout: 60_000 })).stdout;
    } catch (error) {
      const stderr = (error as { stderr?: string }).stderr;
      throw new Error(`${basename(binary)} ${args.join(" ")}: ${stderr}`);
    }
  };
  return {
    kube,
    proxy,
    cwd,
    helm: exec(layerBinary("helm")),
    kubectl: exec(layerBinary("kubectl")),
    stop: async () => {
      await proxy.stop();
      await kube.stop();
    },
  };
}
