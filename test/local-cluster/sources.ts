// What the real builds build from: a base image made of Debian's busybox-static for amd64 and
// arm64, pushed to the test registry as one OCI index, and a git repository served by
// `git daemon` on loopback, with a Dockerfile per branch.
import { execFile, spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { blob, descriptor, pushBlob, pushManifest } from "../registry/fixtures.ts";
import { freePort } from "../support/buildkit.ts";
import type { RunningRegistry } from "../support/registry.ts";

const execFileAsync = promisify(execFile);

export const ARCHITECTURES = ["amd64", "arm64"] as const;
export type Arch = (typeof ARCHITECTURES)[number];

/** Where the downloaded .deb files are kept between runs. */
const DEB_CACHE = join(tmpdir(), "buildfarm-debs");

/** The applets the Dockerfiles use, as links to busybox. */
const APPLETS = [
  "sh",
  "uname",
  "cat",
  "echo",
  "test",
  "[",
  "sha256sum",
  "cut",
  "sleep",
  "ls",
  "true",
];

/**
 * busybox-static .deb files for both architectures: from the cache, else `apt-get download`
 * (arm64 needs `dpkg --add-architecture arm64 && apt-get update` first, as .ci/run does).
 * Resolves to the files, or to the one-line reason they could not be had.
 */
export async function busyboxDebs(): Promise<Record<Arch, string> | string> {
  const debs = await debianDebs(["busybox-static"]);
  if (typeof debs === "string") return debs;
  return { amd64: debs.amd64["busybox-static"]!, arm64: debs.arm64["busybox-static"]! };
}

/**
 * Debian packages' .deb files for both architectures (package name → file), kept in
 * DEB_CACHE between runs; or the one-line reason they could not be had.
 */
export async function debianDebs(
  packages: readonly string[],
): Promise<Record<Arch, Record<string, string>> | string> {
  await mkdir(DEB_CACHE, { recursive: true });
  const find = () => {
    const files = readdirSync(DEB_CACHE);
    return Object.fromEntries(
      ARCHITECTURES.map((arch) => [
        arch,
        Object.fromEntries(
          packages.flatMap((name) => {
            const file = files.find(
              (f) =>
                f.startsWith(`${name}_`) && (f.endsWith(`_${arch}.deb`) || f.endsWith("_all.deb")),
            );
            return file ? [[name, join(DEB_CACHE, file)]] : [];
          }),
        ),
      ]),
    ) as Record<Arch, Record<string, string>>;
  };
  const wanted = () => {
    const found = find();
    return ARCHITECTURES.flatMap((arch) =>
      packages.filter((name) => !found[arch][name]).map((name) => `${name}:${arch}`),
    );
  };
  const missing = wanted();
  if (missing.length) {
    try {
      await execFileAsync("apt-get", ["download", ...missing], { cwd: DEB_CACHE });
    } catch (error) {
      const stderr = String((error as { stderr?: string }).stderr ?? error).trim();
      return `apt-get download ${missing.join(" ")} failed (dpkg --add-architecture arm64 && apt-get update first): ${stderr.split("\n").pop()}`;
    }
  }
  const still = wanted();
  if (still.length) return `no .deb for ${still.join(", ")} in ${DEB_CACHE}`;
  return find();
}

const OCI = {
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layer: "application/vnd.oci.image.layer.v1.tar+gzip",
  index: "application/vnd.oci.image.index.v1+json",
} as const;

const sha256 = async (bytes: Uint8Array) => {
  const { createHash } = await import("node:crypto");
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
};

/** A directory's entries as a reproducible tar (sorted, owned by root, mtime 0). */
export async function reproducibleTar(root: string, entries: readonly string[]): Promise<Buffer> {
  const { stdout } = await execFileAsync(
    "tar",
    [
      "--sort=name",
      "--owner=0",
      "--group=0",
      "--numeric-owner",
      "--mtime=@0",
      "-C",
      root,
      "-cf",
      "-",
      ...entries,
    ],
    { encoding: "buffer", maxBuffer: 1024 * 1024 * 1024 },
  );
  return stdout;
}

/** Lays /bin/busybox from the .deb and links for the applets into root/bin. */
export async function installBusybox(
  deb: string,
  root: string,
  applets: readonly string[] = APPLETS,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "buildfarm-busybox-"));
  try {
    await execFileAsync("dpkg-deb", ["-x", deb, dir]);
    await mkdir(join(root, "bin"), { recursive: true });
    await writeFile(join(root, "bin", "busybox"), await readFile(join(dir, "bin", "busybox")), {
      mode: 0o755,
    });
    for (const applet of applets) await symlink("busybox", join(root, "bin", applet));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** One layer: /bin/busybox from the .deb and the applet links, as a reproducible tar. */
async function busyboxLayer(deb: string): Promise<Buffer> {
  const root = await mkdtemp(join(tmpdir(), "buildfarm-busybox-root-"));
  try {
    await installBusybox(deb, root);
    await mkdir(join(root, "tmp"), { mode: 0o1777 });
    return await reproducibleTar(root, ["bin", "tmp"]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** What one architecture's image is made of: its layers (uncompressed tars) and its config. */
export interface ImageParts {
  layers: Buffer[];
  /** The config's `config` (Env, Cmd, User, WorkingDir, ...). */
  config: Record<string, unknown>;
  createdBy: string;
}

/**
 * Pushes `<registry>/<repository>:<tag>`: an OCI index with one image per architecture.
 * Returns the reference by tag and the index's digest.
 */
export async function pushImageIndex(
  registry: RunningRegistry,
  repository: string,
  tag: string,
  parts: (arch: Arch) => Promise<ImageParts>,
): Promise<{ reference: string; digest: string }> {
  const manifests: Record<string, unknown>[] = [];
  for (const arch of ARCHITECTURES) {
    const image = await parts(arch);
    const layers = image.layers.map((archive) => blob(OCI.layer, gzipSync(archive, { level: 6 })));
    const platform = {
      os: "linux",
      architecture: arch,
      ...(arch === "arm64" ? { variant: "v8" } : {}),
    };
    const config = blob(OCI.config, {
      ...platform,
      created: "1970-01-01T00:00:00Z",
      config: image.config,
      rootfs: {
        type: "layers",
        diff_ids: await Promise.all(image.layers.map((archive) => sha256(archive))),
      },
      history: image.layers.map(() => ({
        created: "1970-01-01T00:00:00Z",
        created_by: image.createdBy,
      })),
    });
    const manifest = blob(OCI.manifest, {
      schemaVersion: 2,
      mediaType: OCI.manifest,
      config: descriptor(config),
      layers: layers.map((layer) => descriptor(layer)),
    });
    for (const b of [...layers, config]) await pushBlob(registry, repository, b);
    await pushManifest(registry, repository, manifest.digest, manifest);
    manifests.push(descriptor(manifest, { platform }));
  }
  const index = blob(OCI.index, { schemaVersion: 2, mediaType: OCI.index, manifests });
  await pushManifest(registry, repository, tag, index);
  return { reference: `${registry.host}/${repository}:${tag}`, digest: index.digest };
}

/**
 * Pushes `<registry>/<repository>:<tag>`: an OCI index of one busybox image per architecture.
 * Returns the reference.
 */
export async function pushBaseImage(
  registry: RunningRegistry,
  debs: Record<Arch, string>,
  repository = "base",
  tag = "busybox",
): Promise<string> {
  const pushed = await pushImageIndex(registry, repository, tag, async (arch) => ({
    layers: [await busyboxLayer(debs[arch])],
    config: { Env: ["PATH=/bin"], Cmd: ["/bin/sh"] },
    createdBy: "busybox-static from Debian",
  }));
  return pushed.reference;
}

export interface GitServer {
  /** git://127.0.0.1:PORT/<name>.git */
  url: string;
  /** Commit of each branch. */
  commits: Record<string, string>;
  stop(): Promise<void>;
}

const git = (cwd: string, ...args: string[]) =>
  execFileAsync(
    "git",
    ["-c", "user.name=buildfarm tests", "-c", "user.email=tests@buildfarm.invalid", ...args],
    { cwd, env: { ...process.env, GIT_CONFIG_NOSYSTEM: "1", HOME: cwd } },
  );

/**
 * A bare repository `<name>.git` with one branch per entry (files by path), served read-only
 * by `git daemon` on 127.0.0.1 as BuildKit fetches contexts in a cluster: by itself.
 */
export async function startGitServer(
  name: string,
  branches: Record<string, Record<string, string>>,
): Promise<GitServer> {
  const dir = await mkdtemp(join(tmpdir(), "buildfarm-git-"));
  const bare = join(dir, "repos", `${name}.git`);
  const work = join(dir, "work");
  await mkdir(work, { recursive: true });
  await git(dir, "init", "--quiet", "--bare", "--initial-branch=main", bare);
  const commits: Record<string, string> = {};
  for (const [branch, files] of Object.entries(branches)) {
    await rm(work, { recursive: true, force: true });
    await mkdir(work);
    await git(work, "init", "--quiet", `--initial-branch=${branch}`);
    for (const [path, content] of Object.entries(files)) {
      await mkdir(join(work, path, ".."), { recursive: true });
      await writeFile(join(work, path), content);
    }
    await git(work, "add", "-A");
    await git(work, "commit", "--quiet", "-m", `${branch}: fixture`);
    await git(work, "push", "--quiet", "--force", bare, `HEAD:refs/heads/${branch}`);
    commits[branch] = (await git(work, "rev-parse", "HEAD")).stdout.trim();
  }
  const port = await freePort();
  const daemon = spawn(
    "git",
    [
      "daemon",
      `--base-path=${join(dir, "repos")}`,
      "--export-all",
      "--reuseaddr",
      "--informative-errors",
      "--listen=127.0.0.1",
      `--port=${port}`,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let log = "";
  daemon.stderr?.on("data", (chunk) => {
    log = (log + chunk).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => daemon.once("exit", () => resolve()));
  const deadline = Date.now() + 10_000;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ host: "127.0.0.1", port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) break;
    if (daemon.exitCode !== null || Date.now() > deadline)
      throw new Error(`git daemon did not listen on 127.0.0.1:${port}: ${log}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url: `git://127.0.0.1:${port}/${name}.git`,
    commits,
    async stop() {
      if (daemon.exitCode === null) daemon.kill("SIGTERM");
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
