// `npm run image -- --push REF | --oci FILE`: the operator image for linux/amd64 and
// linux/arm64, built from this checkout's Dockerfile by BuildKit (e2e/image-build.ts).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findProgram } from "../test/support/buildkit.ts";
import {
  gitRevision,
  IMAGE_USAGE,
  imageBuildArgv,
  packageVersion,
  parseImageArgs,
  runImageBuild,
} from "./image-build.ts";
import { ROOT } from "./kind.ts";

async function main(argv: string[]): Promise<number> {
  const scratch = await mkdtemp(join(tmpdir(), "buildfarm-image-"));
  try {
    const parsed = parseImageArgs(argv, {
      root: ROOT,
      version: await packageVersion(ROOT),
      revision: gitRevision(ROOT),
      metadataFile: join(scratch, "metadata.json"),
    });
    if ("help" in parsed) {
      process.stdout.write(IMAGE_USAGE);
      return 0;
    }
    if ("usage" in parsed) {
      process.stderr.write(`npm run image: ${parsed.usage}\n\n${IMAGE_USAGE}`);
      return 2;
    }
    const buildctl = process.env.BUILDCTL || findProgram("buildctl");
    if (!buildctl) {
      process.stderr.write(
        "npm run image: buildctl not found on BUILDKIT_BIN or PATH: install BuildKit's release (https://github.com/moby/buildkit/releases) or set BUILDCTL\n",
      );
      return 1;
    }
    const target =
      parsed.output.kind === "push"
        ? parsed.output.reference
        : `${parsed.output.file} (${parsed.output.name})`;
    process.stderr.write(
      `building buildfarm ${parsed.version} (${parsed.revision}) for ${parsed.platforms.join(", ")} → ${target}\n` +
        `${buildctl} ${imageBuildArgv(parsed).join(" ")}\n`,
    );
    const started = Date.now();
    const result = await runImageBuild(buildctl, parsed, (text) => process.stderr.write(text));
    if (result.code !== 0) {
      const unreachable = /connection error|no such file or directory|connection refused/i.test(
        result.tail,
      );
      const hint =
        unreachable && !parsed.global.includes("--addr") && !process.env.BUILDKIT_HOST
          ? " (no buildkitd at buildctl's default address: start one, e.g. docker run -d --privileged --name buildkitd moby/buildkit:v0.24.0, and pass --addr docker-container://buildkitd)"
          : "";
      process.stderr.write(`npm run image: buildctl exited ${result.code}${hint}\n`);
      return result.code;
    }
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    const where =
      parsed.output.kind === "push"
        ? `${parsed.output.repository}@${result.digest}`
        : `${parsed.output.file}: load it with kind load image-archive ${parsed.output.file} (image ${parsed.output.name})`;
    process.stderr.write(`built in ${seconds} s: index ${result.digest}\n`);
    process.stdout.write(`${where}\n`);
    return 0;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

process.exitCode = await main(process.argv.slice(2));
