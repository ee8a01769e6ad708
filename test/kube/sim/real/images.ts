// What a container runtime reads from an image's config, for the images the real-process
// executor runs: entrypoint, default command, environment, user, working directory, and the
// directories the image gives its user. Taken from the images' own Dockerfiles:
// moby/buildkit's (rootless stage, v0.24.0) and this repository's.

export interface ImageConfig {
  /** `ENTRYPOINT`, in the image's own paths. */
  entrypoint: string[];
  /** `CMD`: the arguments when the pod gives none. */
  cmd: string[];
  /** `ENV`; the pod's env wins over it. */
  env: Record<string, string>;
  /** `USER`; the pod's runAsUser/runAsGroup win over it. */
  uid: number;
  gid: number;
  /** `WORKDIR` ("/" when unset). */
  workingDir: string;
  /** Directories the image creates and chowns to its user (writable unless the root is read-only). */
  userDirs: string[];
}

/**
 * moby/buildkit:*-rootless: `USER 1000:1000`, `ENV HOME=/home/user USER=user
 * XDG_RUNTIME_DIR=/run/user/1000 TMPDIR=/home/user/.local/tmp BUILDKIT_HOST=unix:///run/user/1000/buildkit/buildkitd.sock`,
 * `ENTRYPOINT ["rootlesskit", "buildkitd"]`; /run/user/1000 and /home/user belong to the user.
 * The BUILDKIT_HOST default is why the builders' probe `buildctl debug workers` needs no flag.
 */
export const ROOTLESS_BUILDKIT: ImageConfig = {
  entrypoint: ["rootlesskit", "buildkitd"],
  cmd: [],
  env: {
    HOME: "/home/user",
    USER: "user",
    XDG_RUNTIME_DIR: "/run/user/1000",
    TMPDIR: "/home/user/.local/tmp",
    BUILDKIT_HOST: "unix:///run/user/1000/buildkit/buildkitd.sock",
  },
  uid: 1000,
  gid: 1000,
  workingDir: "/",
  userDirs: [
    "/run/user/1000",
    "/home/user",
    "/home/user/.local/tmp",
    "/home/user/.local/share/buildkit",
  ],
};

/**
 * The operator's image (Dockerfile): distroless nodejs24 `nonroot`, `WORKDIR /app`,
 * `USER 65532:65532`, `ENV NODE_ENV=production`,
 * `ENTRYPOINT ["/nodejs/bin/node", "/app/dist/cli.js"]`, `CMD ["operator"]`.
 */
export const OPERATOR: ImageConfig = {
  entrypoint: ["/nodejs/bin/node", "/app/dist/cli.js"],
  cmd: ["operator"],
  env: { NODE_ENV: "production" },
  uid: 65532,
  gid: 65532,
  workingDir: "/app",
  userDirs: ["/home/nonroot"],
};

function repositoryAndTag(image: string): { repository: string; tag: string } {
  const withoutDigest = image.replace(/@.*$/, "");
  const colon = withoutDigest.lastIndexOf(":");
  const slash = withoutDigest.lastIndexOf("/");
  const tagged = colon > slash;
  const repository = (tagged ? withoutDigest.slice(0, colon) : withoutDigest).replace(
    /^(docker\.io|index\.docker\.io)\//,
    "",
  );
  return { repository, tag: tagged ? withoutDigest.slice(colon + 1) : "latest" };
}

/** The config of an image this harness runs for real, or undefined. */
export function imageConfig(image: string, operatorImage: string): ImageConfig | undefined {
  const { repository, tag } = repositoryAndTag(image);
  if (repository === "moby/buildkit" && tag.endsWith("-rootless")) return ROOTLESS_BUILDKIT;
  if (repository === repositoryAndTag(operatorImage).repository) return OPERATOR;
  return undefined;
}
