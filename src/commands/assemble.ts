// `buildfarm assemble`: combine per-platform images, pushed by digest, into one multi-arch
// index, push it by digest, then tag it. The index Job of an ImageBuild runs this; its result
// is one JSON line on stdout and, for Kubernetes, in the termination message file. Its flags
// and that line are src/imagebuild/assemble-contract.ts's, shared with the Jobs that run it.
import { writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { errorMessage } from "../errors.ts";
import {
  ASSEMBLE_USAGE,
  type AssembleOutput,
  failureMessageLine,
  parseAssembleArgs,
  terminationMessage,
} from "../imagebuild/assemble-contract.ts";
import { assemble } from "../registry/assemble.ts";
import { AssemblyError } from "../registry/assembly.ts";
import { RegistryClient } from "../registry/client.ts";
import { RegistryError } from "../registry/errors.ts";
import type { Logger } from "../registry/logger.ts";
import { apiHost, parseRepository } from "../registry/reference.ts";

function makeLogger(format: "text" | "json", level: string): Logger {
  if (format === "json") {
    return pino(
      { level, base: { component: "assemble" }, timestamp: pino.stdTimeFunctions.isoTime },
      pino.destination({ dest: 2, sync: true }),
    );
  }
  const order = ["debug", "info", "warn", "error"];
  const min = order.indexOf(level);
  const line =
    (name: string) =>
    (fields: Record<string, unknown>, message: string): void => {
      if (order.indexOf(name) < min) return;
      const extra = Object.entries(fields)
        .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
        .join(" ");
      process.stderr.write(
        `${name === "info" ? "" : `${name}: `}${message}${extra ? ` ${extra}` : ""}\n`,
      );
    };
  return { debug: line("debug"), info: line("info"), warn: line("warn"), error: line("error") };
}

export async function assembleCommand(argv: string[]): Promise<number> {
  const parsed = parseAssembleArgs(argv);
  if (parsed.kind === "help") {
    process.stdout.write(ASSEMBLE_USAGE);
    return 0;
  }
  if (parsed.kind === "usage") {
    process.stderr.write(`buildfarm assemble: ${parsed.message}\n\n${ASSEMBLE_USAGE}`);
    return 2;
  }
  const flags = parsed.flags;
  const logger = makeLogger(flags["log-format"], flags["log-level"]);
  const repository = parseRepository(flags.image);
  const dockerConfig =
    flags["docker-config"] ?? process.env.DOCKER_CONFIG ?? join(homedir(), ".docker");
  const terminationPath = flags["termination-message-path"];

  let client: RegistryClient | undefined;
  try {
    client = await RegistryClient.create({
      dockerConfig,
      insecureHosts: flags["insecure-registry"].map(apiHost),
      ...(flags["ca-file"] ? { caFile: flags["ca-file"] } : {}),
      logger,
      userAgent: "buildfarm-assemble",
    });
    const result = await assemble(
      client,
      {
        repository,
        inputs: flags.digest.map(({ platform, digest }) => ({ platform, digest })),
        tags: [...new Set(flags.tag)],
        format: flags.format,
        annotations: Object.fromEntries(flags.annotation),
        ...(flags["expect-digest"] ? { expectDigest: flags["expect-digest"] } : {}),
      },
      logger,
    );
    const output: AssembleOutput = {
      digest: result.index.digest,
      image: `${flags.image}@${result.index.digest}`,
      mediaType: result.index.mediaType,
      platforms: result.index.platforms,
      tags: result.tags,
      ...(result.index.attestations.length > 0 ? { attestations: result.index.attestations } : {}),
    };
    const line = JSON.stringify(output);
    if (terminationPath) await writeFile(terminationPath, terminationMessage(output));
    process.stdout.write(`${line}\n`);
    return 0;
  } catch (error) {
    const known = error instanceof RegistryError || error instanceof AssemblyError;
    const raw = errorMessage(error);
    const reason = (client ? client.redactor.redact(raw) : raw).replace(/\s*\n\s*/g, " ");
    if (flags["log-format"] === "json") logger.error({ known }, reason);
    else process.stderr.write(`buildfarm assemble: ${reason}\n`);
    if (terminationPath) {
      await writeFile(terminationPath, failureMessageLine(reason)).catch(() => {});
    }
    return 1;
  } finally {
    await client?.close();
  }
}
