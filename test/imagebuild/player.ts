// Plays the containers of a build's pods for the simulated kubelet, from the argv the operator
// wrote, the way the real programs would behave:
// - `buildctl` (the init container): reads the client certificate it was given and checks it
//   against the pool's CA (as the builder's mTLS would), then writes BuildKit v0.24's metadata
//   JSON to its --metadata-file in the `out` emptyDir, logs progress lines, exits 0; or fails
//   with a log (FallbackToLogsOnError makes its tail the termination message), or runs until
//   stopped, or waits until a test releases it.
//   With --trace it also writes a trace real buildctl wrote (a fixture; `trace` picks another).
// - `cp <from> <to>` (the report container): copies the metadata file into its termination
//   message file, or fails like busybox cp when the file is missing.
// - the operator image with `cache-report …`: the real trace reader and message.
// - the operator image with `assemble …` (the index and tag Jobs): parses its argv with the
//   real `buildfarm assemble` parser and writes the result line it would write; with
//   --expect-digest it refuses an index of another digest, as the real one does.
// - the check of spec.verify (the verify Job): records its image, node, argv and environment,
//   then passes, fails with a log, or runs until stopped, as the test scripted.
// Builder pods (buildkitd) run until stopped.
import { createHash, X509Certificate } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { formatPlatform } from "../../src/api/platform.ts";
import { readTrace } from "../../src/commands/cache-report.ts";
import { parseAssembleArgs, terminationMessage } from "../../src/imagebuild/assemble-contract.ts";
import { cacheReportMessage } from "../../src/imagebuild/cache-report.ts";
import { caSecretName, LABELS } from "../../src/naming.ts";
import {
  type ContainerContext,
  type ContainerResult,
  defaultExecutor,
  type Executor,
} from "../kube/index.ts";
import { aborted } from "../kube/sim/executor.ts";
import { fixture, metadataJson } from "./fixtures.ts";

/** What one attempt of a platform's buildctl does. */
export type Attempt =
  /** `trace`: what buildctl writes to --trace (default TRACE_COLD; "" writes none). */
  | { kind: "push"; cache?: boolean; log?: string; trace?: string }
  | { kind: "fail"; log: string; exitCode?: number }
  /** Runs until its pod is stopped (deadline, deletion). */
  | { kind: "hang" };

const PUSH: Attempt = { kind: "push" };

/** What the check of spec.verify does (the verify Job's one container). */
export type Check =
  | { kind: "pass"; log?: string }
  | { kind: "fail"; log: string; exitCode?: number }
  /** Runs until its pod is stopped (spec.verify.timeout). */
  | { kind: "hang" };

/** One run of a verify container: what it was given and where it ran. */
export interface PlayedCheck {
  pod: string;
  job: string;
  node: string;
  image: string;
  command: string[];
  args: string[];
  env: Record<string, string>;
  startedAt: number;
  endedAt?: number;
}

export const BUILD_LOG = [
  "#1 [internal] load build definition from Dockerfile",
  "#1 DONE 0.0s",
  "#2 exporting to image",
  "#2 pushing layers done",
  "#2 DONE 0.1s",
  "#3 exporting cache to registry",
  "#3 DONE 0.1s",
  "",
].join("\n");

/** The digest the player pushes for a Job's attempt: distinct per Job, stable across runs. */
export function digestOf(job: string): string {
  return `sha256:${createHash("sha256").update(job).digest("hex")}`;
}

/** The index digest the played `assemble` reports for these platform digests. */
export function indexDigestOf(digests: readonly string[]): string {
  return `sha256:${createHash("sha256")
    .update([...digests].sort().join("\n"))
    .digest("hex")}`;
}

const flag = (args: readonly string[], name: string) => {
  const index = args.indexOf(name);
  return index < 0 ? undefined : args[index + 1];
};

export interface PlayedContainer {
  pod: string;
  job: string;
  container: string;
  attempt: number;
  command: string[];
  args: string[];
  /** When it started (ms since the epoch). */
  at: number;
}

export class BuildPlayer {
  /** Attempts per Job name, in order; past the list (or for unknown Jobs) they push. */
  private readonly scripts = new Map<string, Attempt[]>();
  private readonly attempts = new Map<string, number>();
  private readonly gates = new Map<string, { release: () => void; promise: Promise<void> }>();
  /** Whether buildctl waits for release(job) before doing what its script says. */
  holdAll = false;
  /** Every container of a build or index pod the player ran. */
  readonly played: PlayedContainer[] = [];
  /** buildctl containers running now (started, not returned), by pod name. */
  readonly running = new Set<string>();
  /** Pods whose buildctl was stopped by the kubelet (deletion, deadline). */
  readonly stopped: string[] = [];
  /** Failures of the player's own checks (a certificate that would not pass mTLS, …). */
  readonly problems: string[] = [];
  /** The builder pod each buildctl reached, as the cluster would route its --addr, by pod. */
  readonly reached = new Map<string, { builder: string; job: string; platform: string }>();
  private readonly checks = new Map<string, Check>();
  /** Every verify container the player ran. */
  readonly checked: PlayedCheck[] = [];
  /** When each container the player ran ended, by `<pod>/<container>` (ms since the epoch). */
  readonly ended = new Map<string, number>();

  /** What the verify Job `job` does; by default the check passes. */
  check(job: string, check: Check): void {
    this.checks.set(job, check);
  }

  script(job: string, ...attempts: Attempt[]): void {
    this.scripts.set(job, attempts);
  }

  /** Lets the held buildctl of `job` go on (and any later attempt of it). */
  release(job: string): void {
    this.gate(job).release();
  }

  /** Jobs whose buildctl is running now. */
  runningJobs(): string[] {
    return [...new Set([...this.running].map((pod) => pod.replace(/-[a-z0-9]{5}$/, "")))].sort();
  }

  private gate(job: string) {
    let gate = this.gates.get(job);
    if (!gate) {
      let release!: () => void;
      const promise = new Promise<void>((resolve) => {
        release = resolve;
      });
      gate = { release, promise };
      this.gates.set(job, gate);
    }
    return gate;
  }

  readonly executor: Executor = (ctx) => {
    const job = ctx.pod.metadata.labels?.["job-name"];
    const component = ctx.pod.metadata.labels?.[LABELS.component];
    if (!job || !["build", "index", "tag", "verify"].includes(component ?? ""))
      return defaultExecutor(ctx);
    if (component === "verify") return this.verify(ctx, job);
    this.played.push({
      pod: ctx.pod.metadata.name,
      job,
      container: ctx.container.name ?? "",
      attempt: ctx.attempt,
      command: [...ctx.command],
      args: [...ctx.args],
      at: Date.now(),
    });
    const key = `${ctx.pod.metadata.name}/${ctx.container.name}`;
    const done = (result: ContainerResult | Promise<ContainerResult>) =>
      Promise.resolve(result).finally(() => this.ended.set(key, Date.now()));
    if (ctx.command[0] === "buildctl") return done(this.buildctl(ctx, job));
    if (ctx.command[0] === "cp") return done(cp(ctx));
    if (ctx.command.length === 0 && ctx.args[0] === "assemble") return done(assemble(ctx));
    if (ctx.command.length === 0 && ctx.args[0] === "cache-report") return done(cacheReport(ctx));
    return { exitCode: 127, log: `exec: ${JSON.stringify(ctx.command[0])}: not found\n` };
  };

  /** The verify container: records what it was given and does what the test scripted. */
  private async verify(ctx: ContainerContext, job: string): Promise<ContainerResult> {
    const played: PlayedCheck = {
      pod: ctx.pod.metadata.name,
      job,
      node: ctx.nodeName,
      image: ctx.image,
      command: [...ctx.command],
      args: [...ctx.args],
      env: { ...ctx.env },
      startedAt: Date.now(),
    };
    this.checked.push(played);
    try {
      const check = this.checks.get(job) ?? { kind: "pass" };
      if (check.kind === "hang" || ctx.signal.aborted) {
        ctx.log("running checks\n");
        await aborted(ctx.signal);
        return { exitCode: 143 };
      }
      ctx.log(check.log ?? "all checks passed\n");
      return { exitCode: check.kind === "pass" ? 0 : (check.exitCode ?? 1) };
    } finally {
      played.endedAt = Date.now();
    }
  }

  private async buildctl(ctx: ContainerContext, job: string): Promise<ContainerResult> {
    const attempt = this.attempts.get(job) ?? 0;
    this.attempts.set(job, attempt + 1);
    const pod = ctx.pod.metadata.name;
    this.running.add(pod);
    try {
      const problem = (await this.checkCertificates(ctx)) ?? this.dial(ctx, job);
      if (problem) {
        this.problems.push(`${pod}: ${problem}`);
        return { exitCode: 1, log: `error: ${problem}\n` };
      }
      if (this.holdAll) {
        await Promise.race([this.gate(job).promise, aborted(ctx.signal)]);
      }
      const step = this.scripts.get(job)?.[attempt] ?? PUSH;
      if (step.kind === "hang" || ctx.signal.aborted) {
        ctx.log("#1 [internal] load build definition from Dockerfile\n");
        await aborted(ctx.signal);
        this.stopped.push(pod);
        return { exitCode: 143 };
      }
      if (step.kind === "fail") {
        ctx.log(step.log);
        return { exitCode: step.exitCode ?? 1 };
      }
      const platform = (
        ctx.args.find((arg, i) => ctx.args[i - 1] === "--opt" && arg.startsWith("platform=")) ?? ""
      ).slice("platform=".length);
      const file = ctx.hostPath(flag(ctx.args, "--metadata-file") ?? "/nowhere");
      await mkdir(dirname(file), { recursive: true });
      // buildctl writes the file atomically: a temporary file beside it, then a rename.
      await writeFile(file, metadataJson(platform, digestOf(job), { cache: step.cache !== false }));
      const trace = flag(ctx.args, "--trace");
      if (trace && step.trace !== "")
        await writeFile(ctx.hostPath(trace), step.trace ?? TRACE_COLD);
      ctx.log(step.log ?? BUILD_LOG);
      return { exitCode: 0 };
    } finally {
      this.running.delete(pod);
    }
  }

  /**
   * Where the cluster would take buildctl's --addr, checked as a builder would see it: a
   * Service name reaches some Ready builder of that Service; a pod IP reaches that pod with no
   * name looked up; a StatefulSet pod's own name under the headless Service
   * (`<hostname>.<headless>.<ns>.svc`) reaches that pod only while it is Ready (the headless
   * Service publishes ready pods only). `<ip-dashed>.<headless>` names do not resolve: only
   * CoreDNS's fallback serves them (kube-dns names such pods by hash). The server certificate
   * must carry the --tlsservername, which for a name is that name. Records the pod reached.
   */
  private dial(ctx: ContainerContext, job: string): string | undefined {
    const address = flag(ctx.args, "--addr") ?? "";
    const serverName = flag(ctx.args, "--tlsservername") ?? "";
    const match = /^tcp:\/\/(\[[0-9a-fA-F:.]+\]|[^:]+):1234$/.exec(address);
    if (!match) return `cannot dial ${address}`;
    const host = match[1] as string;
    const ip = /^\[.*\]$|^[0-9.]+$/.test(host) ? host.replace(/^\[|\]$/g, "") : undefined;
    const labels = ctx.pod.metadata.labels ?? {};
    const namespace = labels[LABELS.poolNamespace] ?? "";
    const pool = labels[LABELS.pool] ?? "";
    const arch = labels[LABELS.arch] ?? "";
    const builders = (ctx.store.objects("pods", namespace) as unknown as BuilderPodObject[]).filter(
      (pod) =>
        pod.metadata.labels?.[LABELS.component] === "builder" &&
        pod.metadata.labels?.[LABELS.pool] === pool &&
        pod.metadata.labels?.[LABELS.arch] === arch &&
        !pod.metadata.deletionTimestamp &&
        pod.status?.phase === "Running" &&
        (pod.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True"),
    );
    const headless = `${pool}-${arch}-headless.${namespace}.svc`;
    let reached: BuilderPodObject | undefined;
    if (ip !== undefined) {
      reached = builders.find((pod) => pod.status?.podIP === ip);
      if (!reached) return `${host} is no Ready builder pod's IP`;
    } else if (host === `${pool}-${arch}.${namespace}.svc`) {
      reached = builders[0];
      // Through the Service buildctl waits (--wait) until some builder answers.
      if (!reached) return undefined;
    } else if (host.endsWith(`.${headless}`)) {
      const label = host.slice(0, -headless.length - 1);
      reached = builders.find(
        (pod) => pod.spec?.hostname === label && pod.spec?.subdomain === `${pool}-${arch}-headless`,
      );
      if (!reached) return `${host} does not resolve: no Ready builder pod has that name`;
    } else {
      return `${host} is no builder of ${namespace}/${pool} for ${arch}`;
    }
    const secret = ctx.store.get("secrets", namespace, `${pool}-buildkit-server`) as
      | { data?: Record<string, string> }
      | undefined;
    const cert = Buffer.from(secret?.data?.["tls.crt"] ?? "", "base64").toString("utf8");
    if (!cert || new X509Certificate(cert).checkHost(serverName) === undefined)
      return `the builders' server certificate does not cover --tlsservername ${serverName}`;
    if (ip === undefined && serverName !== host)
      return `--tlsservername ${serverName} is not the dialled ${host}`;
    this.reached.set(ctx.pod.metadata.name, {
      builder: reached.metadata.name,
      job,
      platform: labels[LABELS.platform] ?? "",
    });
    return undefined;
  }

  /** The client certificate must be issued by the pool's CA, or the builder would refuse it. */
  private async checkCertificates(ctx: ContainerContext): Promise<string | undefined> {
    try {
      const [ca, cert] = await Promise.all([
        readFile(ctx.hostPath(flag(ctx.args, "--tlscacert") ?? ""), "utf8"),
        readFile(ctx.hostPath(flag(ctx.args, "--tlscert") ?? ""), "utf8"),
        readFile(ctx.hostPath(flag(ctx.args, "--tlskey") ?? ""), "utf8"),
      ]);
      const labels = ctx.pod.metadata.labels ?? {};
      const poolCa = ctx.store.get(
        "secrets",
        labels[LABELS.poolNamespace] ?? "",
        caSecretName(labels[LABELS.pool] ?? ""),
      ) as { data?: Record<string, string> } | undefined;
      const poolCaCert = Buffer.from(poolCa?.data?.["ca.crt"] ?? "", "base64").toString("utf8");
      if (poolCaCert === "") return "the pool's CA Secret is missing";
      const issuer = new X509Certificate(poolCaCert);
      if (new X509Certificate(ca).fingerprint256 !== issuer.fingerprint256)
        return "the client Secret's ca.crt is not the pool's CA";
      if (!new X509Certificate(cert).verify(issuer.publicKey))
        return "the client certificate is not signed by the pool's CA";
      return undefined;
    } catch (error) {
      return `reading the client certificate: ${error instanceof Error ? error.message : String(error)}`;
    }
  }
}

interface BuilderPodObject {
  metadata: { name: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec?: { hostname?: string; subdomain?: string };
  status?: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[] };
}

async function cp(ctx: ContainerContext): Promise<ContainerResult> {
  const [from, to] = ctx.args;
  if (!from || !to) return { exitCode: 1, log: "BusyBox: usage: cp SOURCE DEST\n" };
  try {
    await writeFile(ctx.hostPath(to), await readFile(ctx.hostPath(from)));
    return { exitCode: 0 };
  } catch {
    return { exitCode: 1, log: `cp: can't stat '${from}': No such file or directory\n` };
  }
}

/** `buildfarm cache-report`: the real trace reader and termination message; always exits 0. */
async function cacheReport(ctx: ContainerContext): Promise<ContainerResult> {
  const trace = flag(ctx.args, "--trace");
  const path = flag(ctx.args, "--termination-message-path");
  const report = await readTrace(ctx.hostPath(trace ?? "/nowhere"));
  if (path) await writeFile(ctx.hostPath(path), cacheReportMessage(report));
  return { exitCode: 0, log: report.ok ? "" : `cache-report: no report: ${report.error}\n` };
}

/** `buildfarm assemble`, played: the real argv parser, the real result line. */
async function assemble(ctx: ContainerContext): Promise<ContainerResult> {
  const parsed = parseAssembleArgs(ctx.args.slice(1));
  if (parsed.kind !== "ok") {
    return {
      exitCode: 2,
      log: `buildfarm assemble: ${parsed.kind === "usage" ? parsed.message : "help"}\n`,
    };
  }
  const { flags } = parsed;
  const digests = flags.digest.map(({ digest }) => digest);
  const digest = indexDigestOf(digests);
  const path = flags["termination-message-path"];
  const expected = flags["expect-digest"];
  if (expected !== undefined && expected !== digest) {
    const error = `the index assembled from these inputs is ${digest}, not the expected ${expected}; nothing was pushed or tagged`;
    if (path) await writeFile(ctx.hostPath(path), JSON.stringify({ error }));
    return { exitCode: 1, log: `buildfarm assemble: ${error}\n` };
  }
  const output = {
    digest,
    image: `${flags.image}@${digest}`,
    mediaType: "application/vnd.oci.image.index.v1+json",
    platforms: flags.digest.map(({ platform }) => formatPlatform(platform)),
    tags: [...new Set(flags.tag)],
  };
  if (path) await writeFile(ctx.hostPath(path), terminationMessage(output));
  return { exitCode: 0, log: `${JSON.stringify(output)}\n` };
}

/** Traces real buildctl wrote: a first build (4 steps run), then on a fresh builder from the registry cache. */
export const TRACE_COLD = fixture("trace-cold.jsonl");
export const TRACE_CACHED = fixture("trace-cached.jsonl");

/** A failing build's log, as real buildctl printed it. */
export const FAILED_LOG = fixture("build-failed.txt");
/** A build whose cache export the registry refused (ignore-error=true), as real buildctl printed it. */
export const CACHE_REFUSED_LOG = fixture("cache-export-refused.txt");
