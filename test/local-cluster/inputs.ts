// What a local cluster needs from this machine. Two views of the same list: the real-BuildKit
// tests' skip rule (one line saying why a suite skips; under CI a missing piece fails instead),
// and the sandbox's checklist, which names everything missing at once with how to install it.
import { accessSync, constants, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  BUILDKIT_UID,
  type BuildkitTools,
  buildkitOrSkip,
  findProgram,
  setupBin,
} from "../support/buildkit.ts";
import { REPO_ROOT } from "../support/files.ts";
import { type Arch, busyboxDebs } from "./sources.ts";

/**
 * What startLocalCluster needs from this machine, or undefined after the one line saying why
 * `suite` skips (under CI a missing piece fails instead).
 */
export async function realClusterInputs(
  suite: string,
): Promise<{ tools: BuildkitTools; debs: Record<Arch, string> } | undefined> {
  const tools = buildkitOrSkip(suite, { arm64: true, root: true });
  if (!tools) return undefined;
  const debs = await busyboxDebs();
  if (typeof debs !== "string") return { tools, debs };
  const ci = process.env.CI;
  if (ci && ci !== "false" && ci !== "0") throw new Error(`CI is set and ${suite}: ${debs}`);
  process.stderr.write(`skipping ${suite}: ${debs}\n`);
  return undefined;
}

/** What the checklist reads from the machine (a fake in unit tests). */
export interface PrerequisiteProbe {
  uid: number;
  /** process.arch */
  arch: string;
  /** A program on BUILDKIT_BIN, PATH or setup.sh's directory. */
  find(program: string): string | undefined;
  exists(path: string): boolean;
  /** A file's text, "" when it cannot be read. */
  read(path: string): string;
  /** Where setup.sh puts BuildKit ($BUILDKIT_HOME/bin). */
  setupBin: string;
  /** ../shared/buildkit/setup.sh beside the repository, when this checkout has it. */
  setupScript?: string;
}

export function systemProbe(): PrerequisiteProbe {
  const setupScript = join(REPO_ROOT, "..", "shared", "buildkit", "setup.sh");
  return {
    uid: process.getuid?.() ?? -1,
    arch: process.arch,
    find: findProgram,
    exists: (path) => {
      try {
        accessSync(path, constants.F_OK);
        return true;
      } catch {
        return false;
      }
    },
    read: (path) => {
      try {
        return readFileSync(path, "utf8");
      } catch {
        return "";
      }
    },
    setupBin: setupBin(),
    ...(existsSync(setupScript) ? { setupScript: "../shared/buildkit/setup.sh" } : {}),
  };
}

/** One missing piece: what it is, and the commands (or steps) that install it. */
export interface Prerequisite {
  missing: string;
  install: string[];
}

const BUILDKIT_VERSION = "v0.24.0";

/** Everything the sandbox needs and this machine lacks, each with how to install it. */
export function sandboxPrerequisites(probe: PrerequisiteProbe): Prerequisite[] {
  const problems: Prerequisite[] = [];
  const apt = (missing: string, ...packages: string[]) =>
    problems.push({ missing, install: [`sudo apt-get install -y ${packages.join(" ")}`] });
  const setup = probe.setupScript ? [`sudo bash ${probe.setupScript}`] : [];
  const hostArch = probe.arch === "arm64" ? "arm64" : "amd64";

  if (probe.uid !== 0)
    problems.push({
      missing:
        "root: the pods run as their own users (buildkitd as UID 1000, build Jobs as 65532), and switching users needs root",
      install: ['sudo env "PATH=$PATH" npm run sandbox'],
    });
  const buildkitd = probe.find("buildkitd");
  const buildctl = probe.find("buildctl");
  if (!buildkitd || !buildctl) {
    const names = [!buildkitd && "buildkitd", !buildctl && "buildctl"].filter(Boolean).join(", ");
    problems.push({
      missing: `BuildKit ${BUILDKIT_VERSION} (${names}): looked on BUILDKIT_BIN, PATH and ${probe.setupBin}`,
      install: [
        ...setup,
        ...(setup.length ? ["or, from BuildKit's release tarball:"] : []),
        `curl -fsSL https://github.com/moby/buildkit/releases/download/${BUILDKIT_VERSION}/buildkit-${BUILDKIT_VERSION}.linux-${hostArch}.tar.gz | sudo tar -xz -C /usr/local`,
        "(or unpack it anywhere and export BUILDKIT_BIN=<dir>/bin)",
      ],
    });
  }
  if (!probe.find("rootlesskit"))
    apt("rootlesskit (rootless buildkitd runs under it)", "rootlesskit");
  if (!probe.find("newuidmap"))
    apt("newuidmap/newgidmap (rootlesskit maps the builder's user namespace)", "uidmap");
  if (probe.uid === 0 && !probe.find("setpriv"))
    apt("setpriv (runs each pod's process as its user)", "util-linux");
  const user = probe
    .read("/etc/passwd")
    .split("\n")
    .map((line) => line.split(":"))
    .find((fields) => fields[2] === String(BUILDKIT_UID))?.[0];
  if (!user) {
    problems.push({
      missing: `a user with UID ${BUILDKIT_UID} and subordinate IDs (rootless buildkitd runs as it)`,
      install: setup.length
        ? setup
        : [
            `sudo useradd -u ${BUILDKIT_UID} -m -s /bin/sh buildkit`,
            "echo buildkit:100000:65536 | sudo tee -a /etc/subuid /etc/subgid",
          ],
    });
  } else {
    for (const file of ["/etc/subuid", "/etc/subgid"]) {
      const entries = probe.read(file).split("\n");
      if (!entries.some((l) => l.startsWith(`${user}:`) || l.startsWith(`${BUILDKIT_UID}:`)))
        problems.push({
          missing: `${file} has no range for ${user} (UID ${BUILDKIT_UID}); rootlesskit needs one`,
          install: [`echo ${user}:100000:65536 | sudo tee -a ${file}`],
        });
    }
  }
  // The other architecture's RUN steps run under QEMU, through the kernel's binfmt_misc.
  const [foreign, handler] =
    hostArch === "amd64" ? ["linux/arm64", "qemu-aarch64"] : ["linux/amd64", "qemu-x86_64"];
  if (!probe.exists(`/proc/sys/fs/binfmt_misc/${handler}`))
    problems.push({
      missing: `QEMU for ${foreign} RUN steps: no /proc/sys/fs/binfmt_misc/${handler}`,
      install: [
        ...setup,
        ...(setup.length ? ["or:"] : []),
        "sudo apt-get install -y qemu-user-static binfmt-support",
        `(in a container without systemd, register it: grep -v '^#' /usr/lib/binfmt.d/${handler}.conf | sudo tee /proc/sys/fs/binfmt_misc/register)`,
      ],
    });
  if (!probe.find("docker-registry"))
    apt("docker-registry (the sandbox's registry: CNCF Distribution)", "docker-registry");
  if (!probe.find("git")) apt("git (the example app is served by git daemon)", "git");
  if (!probe.find("dpkg-deb") || !probe.find("apt-get"))
    problems.push({
      missing:
        "dpkg-deb and apt-get: the base image is made from Debian's busybox-static packages (Debian or Ubuntu needed)",
      install: [],
    });
  return problems;
}
