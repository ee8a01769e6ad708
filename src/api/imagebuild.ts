// ImageBuild: one build of one image for one or more platforms. The spec is immutable:
// a new commit is a new ImageBuild, which is what GitOps controllers and CI expect.
import { z } from "zod";
import { attestationsSpec } from "./attestations.ts";
import type { Trust } from "./builderpool.ts";
import {
  cel,
  DNS_SUBDOMAIN,
  duration,
  durationMs,
  keyedList,
  localObjectReference,
  PRINTABLE,
  parseDuration,
  resources,
  setList,
} from "./meta.ts";
import { platform } from "./platform.ts";
import { CACHE_REF, IMAGE_REFERENCE, REPOSITORY, splitHost, TAG } from "./reference.ts";

/** Characters a git URL may hold; '#' is excluded because the operator appends #revision:subPath. */
export const GIT_URL =
  /^((https?|git|ssh):\/\/|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:)[A-Za-z0-9._~%@:/+=-]+$/;
/**
 * A user, host or scp-style path that starts with '-' is read as an option by git or ssh
 * (`ssh -oProxyCommand=...`, CVE-2017-1000117). git >= 2.14.1 refuses them itself; refusing
 * them here says so before a Job runs.
 */
const GIT_OPTION_LIKE = /^([a-z]+:\/\/)?([^/@]*@)?-|^[^/:]+@[^/:]+:-/;
const GIT_OPTION_MESSAGE =
  "must not start its user, host or path with '-': git and ssh would read it as an option";
/** userinfo with a password: `scheme://user:secret@host`. */
const URL_PASSWORD = /^[a-z]+:\/\/[^/@]*:[^/@]*@/;
const GIT_PASSWORD_MESSAGE =
  "must not carry a password: it would be visible in the build Job; use spec.source.git.authSecretRef";
/** BuildKit reads an http(s) URL as a git repository only when its path ends in .git. */
const HTTP_GIT_PATH = /^https?:\/\/[^/]+\/.*\.git$/;
const GIT_SUFFIX_MESSAGE =
  "an https URL must end in .git: BuildKit otherwise downloads it as a file instead of cloning it";
/** A ref or commit; no leading '-', which `git fetch` would read as an option. */
export const GIT_REVISION = /^[A-Za-z0-9_][A-Za-z0-9_-]*([./][A-Za-z0-9_-]+)*$/;
/** A relative path inside the context: no leading slash, no '.' or '..' component. */
export const RELATIVE_PATH = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/;
const DOT_COMPONENT = /(^|\/)\.\.?(\/|$)/;
export const BUILD_ARG_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const LABEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._/-]*$/;
export const SECRET_ID = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
const SECRET_KEY = /^[-._a-zA-Z0-9]+$/;
/** Kubernetes refuses these as Secret data keys, so no Secret could ever hold one. */
const SECRET_KEY_DOTS_MESSAGE = "must be a Secret data key: not '.', '..' or starting with '..'";

const MAX_TIMEOUT = "168h";

function relativePath(what: string) {
  return cel(
    z
      .string()
      .min(1)
      .max(255)
      .regex(RELATIVE_PATH, {
        message: `must be a relative ${what} of letters, digits, '.', '_', '-' and '/'`,
      })
      .refine((path) => !DOT_COMPONENT.test(path), {
        message: `must stay inside the context: no '.' or '..' component`,
      }),
    {
      rule: "!self.matches('(^|/)[.][.]?(/|$)')",
      message: `must stay inside the context: no '.' or '..' component`,
    },
  );
}

const printableValue = (max: number) =>
  z
    .string()
    .max(max)
    .regex(PRINTABLE, { message: "must not contain control characters or line breaks" });

export const gitSource = z
  .object({
    url: cel(
      z
        .string()
        .min(1)
        .max(2048)
        .regex(GIT_URL, {
          message:
            "must be a git URL (https://, ssh://, git:// or user@host:path) without spaces or '#'",
        })
        .refine((url) => !URL_PASSWORD.test(url), { message: GIT_PASSWORD_MESSAGE })
        .refine((url) => !GIT_OPTION_LIKE.test(url), { message: GIT_OPTION_MESSAGE })
        .refine((url) => !/^https?:/.test(url) || HTTP_GIT_PATH.test(url), {
          message: GIT_SUFFIX_MESSAGE,
        }),
      // The same two checks for the API server, written without backslashes for CEL.
      { rule: "!self.matches('^[a-z]+://[^/@]*:[^/@]*@')", message: GIT_PASSWORD_MESSAGE },
      {
        rule: "!self.matches('^([a-z]+://)?([^/@]*@)?-|^[^/:]+@[^/:]+:-')",
        message: GIT_OPTION_MESSAGE,
      },
      {
        rule: "!(self.startsWith('https://') || self.startsWith('http://')) || self.matches('^https?://[^/]+/.*[.]git$')",
        message: GIT_SUFFIX_MESSAGE,
      },
    ).describe("Repository URL that BuildKit fetches itself."),
    revision: z
      .string()
      .max(255)
      .regex(GIT_REVISION, {
        message: "must be a branch, tag or commit without '..' or a leading '-'",
      })
      .default("HEAD")
      .describe("Branch, tag or commit to build. A full commit SHA makes the build reproducible."),
    subPath: relativePath("directory")
      .optional()
      .describe("Directory inside the repository used as the build context."),
    authSecretRef: localObjectReference
      .optional()
      .describe(
        "Secret for a private repository: key 'token' (sent as BuildKit's GIT_AUTH_TOKEN for the URL's host) or 'ssh-privatekey' (a kubernetes.io/ssh-auth Secret, forwarded with --ssh).",
      ),
  })
  .describe("A git repository as the build context.");
export type GitSource = z.infer<typeof gitSource>;

export const INLINE_MAX_BYTES = 256 * 1024;

export const inlineSource = z
  .object({
    dockerfile: z.string().min(1).max(65536).describe("The Dockerfile's text."),
    files: keyedList(
      z.object({
        path: relativePath("file path").describe("Path of the file inside the context."),
        content: z.string().max(65536).describe("The file's text."),
      }),
      "path",
      32,
    )
      .optional()
      .describe("Small files placed in the build context beside the Dockerfile."),
  })
  .refine(
    (source) =>
      source.dockerfile.length +
        (source.files ?? []).reduce((sum, file) => sum + file.content.length, 0) <=
      INLINE_MAX_BYTES,
    { message: `inline context must not exceed ${INLINE_MAX_BYTES / 1024} KiB in all` },
  )
  .describe("An inline Dockerfile and small context, for builds that need no repository.");
export type InlineSource = z.infer<typeof inlineSource>;

export const source = cel(
  z
    .object({
      git: gitSource.optional(),
      inline: inlineSource.optional(),
    })
    .refine((s) => (s.git === undefined) !== (s.inline === undefined), {
      message: "set exactly one of source.git or source.inline",
    })
    .describe("Where the build context comes from: exactly one of git or inline."),
  {
    rule: "has(self.git) != has(self.inline)",
    message: "set exactly one of source.git or source.inline",
  },
);

/** A name prefix a list refuses, with why (in zod and, for the API server, in CEL). */
interface ForbiddenPrefix {
  prefix: string;
  message: string;
}

const nameValue = (
  namePattern: RegExp,
  nameMessage: string,
  what: string,
  forbidden?: ForbiddenPrefix,
) => {
  const name = z
    .string()
    .min(1)
    .max(128)
    .regex(namePattern, { message: nameMessage })
    .refine((text) => !forbidden || !text.startsWith(forbidden.prefix), {
      message: forbidden?.message ?? "",
    });
  return keyedList(
    z.object({
      name: (forbidden
        ? cel(name, { rule: `!self.startsWith('${forbidden.prefix}')`, message: forbidden.message })
        : name
      ).describe(`The ${what}'s name.`),
      value: printableValue(4096).describe(`The ${what}'s value.`),
    }),
    "name",
    128,
  );
};

/**
 * BuildKit also reads build arguments named BUILDKIT_ATTEST_<TYPE> as attestation requests
 * (frontend/attestations/parse.go): one would add or override attestations outside
 * spec.attestations, with a scanner image of the build's choosing instead of the pool's.
 */
const ATTEST_BUILD_ARG: ForbiddenPrefix = {
  prefix: "BUILDKIT_ATTEST_",
  message:
    "must not start with BUILDKIT_ATTEST_: BuildKit would read it as an attestation request; use spec.attestations",
};

/** Docker Hub's full name of a repository without a host: docker.io/[library/]path. */
function dockerHubName(image: string): string | undefined {
  if (splitHost(image).host !== undefined) return undefined;
  return image.includes("/") ? `docker.io/${image}` : `docker.io/library/${image}`;
}
const HUB_NAME_MESSAGE =
  "must be at most 255 characters as Docker Hub names it (docker.io/[library/]<path>); name a registry host or shorten the path";

export const output = z
  .object({
    image: cel(
      z
        .string()
        .min(1)
        .max(255)
        .regex(REPOSITORY, {
          message:
            "must be an image repository without tag or digest, e.g. registry.example.com/team/app (lower-case, no spaces)",
        })
        .refine((image) => (dockerHubName(image)?.length ?? 0) <= 255, {
          message: HUB_NAME_MESSAGE,
        }),
      // The reference grammar limits the name with its implied docker.io/ (and library/). The
      // rule's first alternative is splitHost's: a first component that names a registry.
      {
        rule: "self.matches('^([^/]*[.:][^/]*|localhost|[[][^/]*)/') || size(self) <= (self.contains('/') ? 245 : 237)",
        message: HUB_NAME_MESSAGE,
      },
    ).describe("Repository the image is pushed to, without tag."),
    tags: setList(
      z
        .string()
        .max(128)
        .regex(TAG, { message: "must be a tag of at most 128 letters, digits, '.', '_' or '-'" }),
      16,
      "tag",
    )
      .default([])
      .describe("Tags applied to the multi-arch index once every platform has pushed."),
    pushSecretRef: localObjectReference
      .optional()
      .describe("A kubernetes.io/dockerconfigjson Secret with push rights to the repository."),
  })
  .describe("Where the finished image goes.");
export type Output = z.infer<typeof output>;

export const cacheSpec = cel(
  z
    .object({
      disabled: z
        .boolean()
        .default(false)
        .describe("Build without importing or exporting a registry cache."),
      ref: z
        .string()
        .max(255)
        .regex(CACHE_REF, {
          message: "must be an image reference such as registry.example.com/team/app:buildcache",
        })
        .optional()
        .describe(
          "Registry cache reference. Each platform gets its own tag, the ref's tag plus -<platform> (app:buildcache-amd64), since one ref shared by several platforms keeps only the last one's cache. Defaults to <output.image>:buildcache.",
        ),
      mode: z
        .enum(["min", "max"])
        .default("max")
        .describe("max exports every intermediate layer; min only the final image's."),
      importFrom: setList(
        z.string().max(255).regex(CACHE_REF, { message: "must be an image reference" }),
        8,
        "cache ref",
      )
        .optional()
        .describe(
          "More cache refs to import, e.g. the main branch's cache for a feature branch (each with -<arch>).",
        ),
      imageManifest: z
        .boolean()
        .default(true)
        .describe("Store the cache as an image manifest, which registries such as ECR require."),
      ociMediaTypes: z
        .boolean()
        .default(true)
        .describe("Use OCI media types for the cache manifest."),
      failOnExportError: z
        .boolean()
        .default(false)
        .describe(
          "Fail the build when the registry refuses the cache export. By default the image still ships and CacheExported=False reports the registry's message.",
        ),
    })
    .refine((cache) => !cache.imageManifest || cache.ociMediaTypes, {
      message:
        "imageManifest requires ociMediaTypes: BuildKit refuses an image-manifest cache with Docker media types",
    })
    .describe("The registry cache shared by builds of this image."),
  {
    rule: "!has(self.imageManifest) || !self.imageManifest || !has(self.ociMediaTypes) || self.ociMediaTypes",
    message:
      "imageManifest requires ociMediaTypes: BuildKit refuses an image-manifest cache with Docker media types",
  },
);
export type CacheSpec = z.infer<typeof cacheSpec>;

export const buildSecret = z
  .object({
    id: z
      .string()
      .min(1)
      .max(128)
      .regex(SECRET_ID, {
        message: "must be letters, digits, '_', '.' or '-' (no '/', ',' or '=')",
      })
      .describe("The id a Dockerfile mounts with RUN --mount=type=secret,id=<id>."),
    secretRef: z
      .object({
        name: z
          .string()
          .min(1)
          .max(253)
          .regex(DNS_SUBDOMAIN, { message: "must be a Secret name" })
          .describe("Secret in the build's namespace."),
        key: cel(
          z
            .string()
            .min(1)
            .max(253)
            .regex(SECRET_KEY, { message: "must be a Secret data key" })
            .refine((key) => key !== "." && !key.startsWith(".."), {
              message: SECRET_KEY_DOTS_MESSAGE,
            }),
          { rule: "self != '.' && !self.startsWith('..')", message: SECRET_KEY_DOTS_MESSAGE },
        ).describe("Key within the Secret."),
      })
      .describe("Where the secret's value is read from."),
  })
  .describe("A build secret, passed to BuildKit as a secret, never as a build argument.");
export type BuildSecret = z.infer<typeof buildSecret>;

const MAX_VERIFY_TIMEOUT = "24h";
const VERIFY_IMAGE_ENV = "must not be IMAGE: the operator sets IMAGE=<repository>@<digest>";

export const verifySpec = z
  .object({
    image: z
      .string()
      .max(512)
      .regex(IMAGE_REFERENCE, {
        message: "must be an image reference such as registry.example.com/team/check:v1",
      })
      .optional()
      .describe(
        "Image the check runs in. By default the image just built, by digest, on a node of the architecture of the first platform in spec.platforms.",
      ),
    command: z
      .array(printableValue(4096))
      .min(1)
      .max(64)
      .describe("The check's command, as an argv (no shell is added)."),
    args: z
      .array(printableValue(4096))
      .max(256)
      .optional()
      .describe("Arguments after the command."),
    env: keyedList(
      z.object({
        name: cel(
          z
            .string()
            .min(1)
            .max(128)
            .regex(BUILD_ARG_NAME, { message: "must be an environment variable name" })
            .refine((name) => name !== "IMAGE", { message: VERIFY_IMAGE_ENV }),
          { rule: "self != 'IMAGE'", message: VERIFY_IMAGE_ENV },
        ).describe("Variable name."),
        value: printableValue(4096).describe("Variable value."),
      }),
      "name",
      64,
    )
      .optional()
      .describe("Environment for the check, beside IMAGE=<repo>@<digest>."),
    resources: resources
      .optional()
      .describe(
        "CPU and memory for the check's container, per key over the pool's jobResources.verify and the defaults (requests 100m CPU, 128Mi; limits 1 CPU, 512Mi).",
      ),
    timeout: cel(
      duration
        .default("10m")
        .refine((text) => (durationMs(text) ?? 1) > 0, { message: "must be longer than zero" })
        .refine((text) => (durationMs(text) ?? 0) <= parseDuration(MAX_VERIFY_TIMEOUT), {
          message: `must be at most ${MAX_VERIFY_TIMEOUT}`,
        }),
      {
        rule: `duration(self) > duration('0s') && duration(self) <= duration('${MAX_VERIFY_TIMEOUT}')`,
        message: `must be longer than zero and at most ${MAX_VERIFY_TIMEOUT}`,
      },
    ).describe("How long the check may run before it counts as failed."),
  })
  .describe(
    "A check that runs against the pushed image before any tag is applied: the index is pushed by digest only, the check runs with IMAGE=<repository>@<digest>, and the tags are applied only if it exits 0.",
  );
export type VerifySpec = z.infer<typeof verifySpec>;

/** What FROM may name: an image reference (node:24-bookworm-slim) or a stage name. */
const CONTEXT_NAME = new RegExp(
  `^(${IMAGE_REFERENCE.source.slice(1, -1)}|[A-Za-z0-9][A-Za-z0-9_.-]*)$`,
);

export const namedContext = z
  .object({
    name: z
      .string()
      .min(1)
      .max(255)
      .regex(CONTEXT_NAME, {
        message:
          "must be what the Dockerfile's FROM names: an image reference such as node:24-bookworm-slim or a stage name",
      })
      .describe("The name as the Dockerfile's FROM or COPY --from= writes it."),
    image: z
      .string()
      .min(1)
      .max(512)
      .regex(IMAGE_REFERENCE, {
        message:
          "must be an image reference such as mirror.example.com/library/node@sha256:… (pin a digest for a reproducible build)",
      })
      .describe(
        "The image the name resolves to; pulled by the builder, so a plain-HTTP registry must be in the pool's spec.registries.",
      ),
  })
  .describe("One named context.");
export type NamedContext = z.infer<typeof namedContext>;

export const poolRef = z
  .object({
    name: z
      .string()
      .min(1, { message: "must name a BuilderPool" })
      .max(40)
      .regex(/^[a-z]([-a-z0-9]*[a-z0-9])?$/, { message: "must be a BuilderPool name" })
      .describe("The BuilderPool's name."),
    namespace: z
      .string()
      .max(63)
      .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, { message: "must be a namespace name" })
      .optional()
      .describe("The pool's namespace; defaults to the build's namespace."),
  })
  .describe("The BuilderPool that runs this build.");

export const imageBuildSpec = cel(
  z
    .object({
      poolRef,
      source,
      dockerfile: relativePath("file path")
        .default("Dockerfile")
        .describe("Path of the Dockerfile inside the context."),
      target: z
        .string()
        .max(128)
        .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, { message: "must be a Dockerfile stage name" })
        .optional()
        .describe("The Dockerfile stage to build."),
      contexts: keyedList(namedContext, "name", 16)
        .optional()
        .describe(
          "BuildKit named contexts: FROM <name> and COPY --from=<name> in the Dockerfile resolve to the image given instead, so a base can come from a mirror or a pinned digest without editing the Dockerfile (buildctl --opt context:<name>=docker-image://<image>).",
        ),
      buildArgs: nameValue(
        BUILD_ARG_NAME,
        "must be a build argument name: letters, digits and '_', not starting with a digit",
        "build argument",
        ATTEST_BUILD_ARG,
      )
        .optional()
        .describe(
          "Values for the Dockerfile's ARG instructions. Never put secrets here: use secrets.",
        ),
      labels: nameValue(
        LABEL_NAME,
        "must be a label key such as org.opencontainers.image.source",
        "label",
      )
        .optional()
        .describe("Labels written into the image config."),
      platforms: setList(platform, 8, "platform")
        .min(1, { message: "must list at least one platform" })
        .describe("Platforms to build, each natively on builders of its architecture."),
      output,
      cache: cacheSpec.prefault({}),
      secrets: keyedList(buildSecret, "id", 32)
        .optional()
        .describe("Build secrets from Secrets in the build's namespace."),
      timeout: cel(
        duration
          .default("1h")
          .refine((text) => (durationMs(text) ?? 1) > 0, { message: "must be longer than zero" })
          .refine((text) => (durationMs(text) ?? 0) <= parseDuration(MAX_TIMEOUT), {
            message: `must be at most ${MAX_TIMEOUT}`,
          }),
        {
          rule: `duration(self) > duration('0s') && duration(self) <= duration('${MAX_TIMEOUT}')`,
          message: `must be longer than zero and at most ${MAX_TIMEOUT}`,
        },
      ).describe("How long each platform's build may run before it is stopped."),
      retries: z
        .number()
        .int()
        .min(0, { message: "must not be negative" })
        .max(10)
        .default(0)
        .describe("How often a failed platform build is retried."),
      ttlSecondsAfterFinished: z
        .number()
        .int()
        .min(0)
        .max(30 * 86400)
        .optional()
        .describe(
          "Delete the build's Jobs and client certificate this long after it finishes; the ImageBuild and its status stay.",
        ),
      jobResources: z
        .object({
          build: resources
            .optional()
            .describe("For each platform Job's buildctl, over the pool's jobResources.build."),
          assemble: resources
            .optional()
            .describe(
              "For the index and tag Jobs' buildfarm assemble, over the pool's jobResources.assemble.",
            ),
        })
        .optional()
        .describe(
          "Requests and limits of this build's Jobs, per key over the pool's spec.jobResources and the defaults (spec.verify.resources for the check).",
        ),
      cacheKey: z
        .string()
        .max(255)
        .regex(PRINTABLE, { message: "must not contain control characters or line breaks" })
        .optional()
        .describe(
          "Builds with the same key go to the same builder for cache locality. Defaults to git URL + Dockerfile path + target.",
        ),
      verify: verifySpec.optional(),
      attestations: attestationsSpec.optional(),
    })
    .describe("What to build. Immutable: a new commit is a new ImageBuild."),
  {
    rule: "self == oldSelf",
    message: "spec is immutable: create a new ImageBuild for a new build",
  },
);
export type ImageBuildSpec = z.infer<typeof imageBuildSpec>;

/**
 * The tag suffix of registry cache refs that builds on Untrusted pools write and read
 * (docs/architecture.md, "Untrusted pools"); the per-platform suffix follows it.
 */
export const UNTRUSTED_CACHE_SUFFIX = "-untrusted";

/**
 * The cache ref this build exports to, before the per-architecture suffix. A build on an
 * Untrusted pool defaults to <image>:buildcache-untrusted, apart from the trusted builds' ref.
 */
export function cacheRefOf(spec: ImageBuildSpec, trust: Trust = "Trusted"): string {
  const tag = trust === "Untrusted" ? `buildcache${UNTRUSTED_CACHE_SUFFIX}` : "buildcache";
  return spec.cache.ref ?? `${spec.output.image}:${tag}`;
}
