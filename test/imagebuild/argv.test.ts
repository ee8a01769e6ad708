import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  BUILD_ARG_NAME,
  cacheRefOf,
  GIT_REVISION,
  GIT_URL,
  type ImageBuildSpec,
  imageBuildSpec,
  LABEL_NAME,
  RELATIVE_PATH,
  SECRET_ID,
} from "../../src/api/imagebuild.ts";
import { platformSlug } from "../../src/api/platform.ts";
import { CACHE_REF, REPOSITORY, TAG } from "../../src/api/reference.ts";
import type { ImageBuild } from "../../src/api/resources.ts";
import type { BuildPlan } from "../../src/imagebuild/admission.ts";
import { ArgvError, buildctlArgv, csvPair } from "../../src/imagebuild/argv.ts";
import { cacheRefForPlatform } from "../../src/imagebuild/cache-ref.ts";
import { gitHost, TOKEN_HOST } from "../../src/imagebuild/source.ts";
import { exampleBuild, examplePlan } from "./fixtures.ts";

const build = exampleBuild();
const plan = examplePlan(build);
const amd64 = plan.targets[0] as BuildPlan["targets"][0];

describe("buildctl argv for the example build", () => {
  it("is exactly this array (each flag checked against BuildKit v0.24.0)", () => {
    expect(buildctlArgv(build, plan, amd64)).toEqual([
      "--addr",
      "tcp://default-amd64.buildfarm-builders.svc:1234",
      "--tlsservername",
      "default-amd64.buildfarm-builders.svc",
      "--tlscacert",
      "/etc/buildkit/certs/ca.crt",
      "--tlscert",
      "/etc/buildkit/certs/tls.crt",
      "--tlskey",
      "/etc/buildkit/certs/tls.key",
      "--wait",
      "--timeout",
      "120",
      "build",
      "--progress",
      "plain",
      "--trace",
      "/trace/trace.json",
      "--frontend",
      "dockerfile.v0",
      "--opt",
      "context=https://github.com/docker/welcome-to-docker.git#main",
      "--opt",
      "filename=Dockerfile",
      "--opt",
      "platform=linux/amd64",
      "--opt",
      "build-arg:NODE_ENV=production",
      "--opt",
      "label:org.opencontainers.image.source=https://github.com/docker/welcome-to-docker",
      "--output",
      "type=image,name=registry.example.com/demo/welcome-to-docker,push-by-digest=true,name-canonical=true,push=true,oci-mediatypes=true",
      "--export-cache",
      "type=registry,ref=registry.example.com/demo/welcome-to-docker:buildcache-amd64,mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true",
      "--import-cache",
      "type=registry,ref=registry.example.com/demo/welcome-to-docker:buildcache-amd64",
      "--metadata-file",
      "/out/metadata.json",
    ]);
  });

  it("dials the arm64 builder for linux/arm64 and exports that platform's cache", () => {
    const argv = buildctlArgv(build, plan, plan.targets[1] as BuildPlan["targets"][0]);
    expect(argv).toContain("tcp://default-arm64.buildfarm-builders.svc:1234");
    expect(argv).toContain("platform=linux/arm64");
    expect(argv.find((a) => a.startsWith("type=registry,ref=") && a.includes("mode="))).toContain(
      ":buildcache-arm64,",
    );
  });
});

describe("buildctl argv variants", () => {
  const argvOf = (
    patch: Parameters<typeof exampleBuild>[0],
    planPatch: Partial<BuildPlan> = {},
  ) => {
    const b = exampleBuild(patch);
    return buildctlArgv(b, { ...examplePlan(b), ...planPatch }, amd64);
  };
  const valuesOf = (argv: string[], flag: string) =>
    argv.flatMap((arg, i) => (arg === flag ? [argv[i + 1] as string] : []));

  it("adds the subdirectory after the revision and keeps filename relative to it", () => {
    const argv = argvOf({
      spec: { source: { git: { subPath: "app/web" } }, dockerfile: "build/Dockerfile" },
    });
    expect(valuesOf(argv, "--opt")).toContain(
      "context=https://github.com/docker/welcome-to-docker.git#main:app/web",
    );
    expect(valuesOf(argv, "--opt")).toContain("filename=build/Dockerfile");
  });

  it("passes the stage as target", () => {
    expect(valuesOf(argvOf({ spec: { target: "runtime" } }), "--opt")).toContain("target=runtime");
  });

  it("mounts each build secret as a file and names it by id", () => {
    const argv = argvOf({
      spec: { secrets: [{ id: "npmrc", secretRef: { name: "npm", key: "npmrc" } }] },
    });
    expect(valuesOf(argv, "--secret")).toEqual(["id=npmrc,src=/etc/buildfarm/secrets/npmrc"]);
  });

  it("authenticates https git with BuildKit's GIT_AUTH_TOKEN.<host> secret", () => {
    const argv = argvOf(
      { spec: { source: { git: { authSecretRef: { name: "git" } } } } },
      { gitAuth: { kind: "token", host: "github.com" } },
    );
    expect(valuesOf(argv, "--secret")).toEqual([
      "id=GIT_AUTH_TOKEN.github.com,src=/etc/buildfarm/git/token",
    ]);
  });

  it("forwards an ssh key as the default agent for ssh git", () => {
    const argv = argvOf(
      {
        spec: {
          source: {
            git: {
              url: "git@github.com:docker/welcome-to-docker.git",
              authSecretRef: { name: "git" },
            },
          },
        },
      },
      { gitAuth: { kind: "ssh" } },
    );
    expect(valuesOf(argv, "--ssh")).toEqual(["default=/etc/buildfarm/git/ssh-privatekey"]);
  });

  it("sends an inline context from the mounted directory", () => {
    const argv = argvOf({
      spec: { source: { git: null, inline: { dockerfile: "FROM scratch" } } },
    });
    expect(valuesOf(argv, "--local")).toEqual([
      "context=/workspace/context",
      "dockerfile=/workspace/context",
    ]);
    expect(valuesOf(argv, "--opt").some((opt) => opt.startsWith("context="))).toBe(false);
  });

  it("drops ignore-error when failOnExportError asks for the strict behaviour", () => {
    const [exported] = valuesOf(
      argvOf({ spec: { cache: { failOnExportError: true, mode: "min" } } }),
      "--export-cache",
    );
    expect(exported).toBe(
      "type=registry,ref=registry.example.com/demo/welcome-to-docker:buildcache-amd64,mode=min,image-manifest=true,oci-mediatypes=true",
    );
  });

  it("imports the extra caches per platform too", () => {
    const argv = argvOf({
      spec: { cache: { importFrom: ["registry.example.com/demo/welcome-to-docker:main"] } },
    });
    expect(valuesOf(argv, "--import-cache")).toEqual([
      "type=registry,ref=registry.example.com/demo/welcome-to-docker:buildcache-amd64",
      "type=registry,ref=registry.example.com/demo/welcome-to-docker:main-amd64",
    ]);
  });

  it("neither imports nor exports a cache when it is disabled", () => {
    const argv = argvOf({ spec: { cache: { disabled: true, importFrom: ["r.example.com/a:b"] } } });
    expect(argv).not.toContain("--export-cache");
    expect(argv).not.toContain("--import-cache");
  });

  it("passes each named context as --opt context:<name>=docker-image://<image>", () => {
    const argv = argvOf({
      spec: {
        contexts: [
          {
            name: "node:24-bookworm-slim",
            image: `mirror.example.com/node@sha256:${"a".repeat(64)}`,
          },
          { name: "tools", image: "mirror.example.com/tools:1" },
        ],
      },
    });
    expect(valuesOf(argv, "--opt")).toEqual(
      expect.arrayContaining([
        `context:node:24-bookworm-slim=docker-image://mirror.example.com/node@sha256:${"a".repeat(64)}`,
        "context:tools=docker-image://mirror.example.com/tools:1",
      ]),
    );
  });

  it("keeps commas, quotes and '=' in build arguments and labels verbatim (--opt splits at the first '=' only)", () => {
    const argv = argvOf({ spec: { buildArgs: [{ name: "A", value: 'x,y"z=w' }] } });
    expect(valuesOf(argv, "--opt")).toContain('build-arg:A=x,y"z=w');
  });
});

describe("buildctl argv refuses what the schema would not accept", () => {
  const invalid: [string, (spec: ImageBuildSpec) => void][] = [
    [
      "an image with an injected output key",
      (s) => {
        s.output.image = "r.example.com/app,push=false";
      },
    ],
    [
      "a build argument with a newline",
      (s) => {
        s.buildArgs = [{ name: "A", value: "x\ny" }];
      },
    ],
    [
      "a secret id with a comma",
      (s) => {
        s.secrets = [{ id: "a,src=/etc/passwd", secretRef: { name: "s", key: "k" } }];
      },
    ],
    [
      "a cache ref with a quote",
      (s) => {
        s.cache.ref = 'r.example.com/app:"x';
      },
    ],
    [
      "a revision with a colon",
      (s) => {
        if (s.source.git) s.source.git.revision = "main:../..";
      },
    ],
  ];
  it.each(invalid)("%s", (_name, mutate) => {
    const bad = structuredClone(build) as ImageBuild;
    mutate(bad.spec);
    expect(() => buildctlArgv(bad, plan, amd64)).toThrow(ArgvError);
  });

  it("refuses a CSV field value that could start another key or requote", () => {
    for (const value of ["a,b", 'a"b', "a\nb", "a\rb"])
      expect(() => csvPair("ref", value)).toThrow(ArgvError);
    expect(csvPair("ref", "r.example.com/a:b")).toBe("ref=r.example.com/a:b");
  });
});

// ---------------------------------------------------------------------------------------
// Properties over arbitrary valid specs.

/** encoding/csv's reading of one record (RFC 4180, no lazy quotes), as buildctl parses flags. */
function goCsvRecord(text: string): string[] {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    let field = "";
    if (text[i] === '"') {
      i++;
      for (;;) {
        if (i >= text.length) throw new Error('extraneous or missing " in quoted-field');
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += text[i++];
      }
    } else {
      while (i < text.length && text[i] !== ",") {
        if (text[i] === '"') throw new Error('bare " in non-quoted-field');
        field += text[i++];
      }
    }
    fields.push(field);
    if (i >= text.length) return fields;
    if (text[i] !== ",") throw new Error("garbage after quoted field");
    i++;
  }
}

function csvMap(value: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const field of goCsvRecord(value)) {
    const eq = field.indexOf("=");
    map.set(field.slice(0, eq).toLowerCase(), field.slice(eq + 1));
  }
  return map;
}

const tricky = fc.string({
  unit: fc.constantFrom(
    "a",
    "Z",
    "0",
    " ",
    ",",
    '"',
    "=",
    ":",
    "/",
    "#",
    "é",
    "💥",
    "\t",
    "\n",
    "\u0000",
    "\\",
  ),
  maxLength: 24,
});
const matching = (pattern: RegExp, maxLength: number) =>
  fc.stringMatching(pattern).filter((s) => s.length > 0 && s.length <= maxLength);

const gitArb = fc.record(
  {
    url: fc.oneof(
      fc.constantFrom(
        "https://github.com/docker/welcome-to-docker.git",
        "https://git.example.com:8443/team/app.git",
        "git@github.com:org/repo.git",
        "ssh://git@example.com/org/repo.git",
      ),
      matching(GIT_URL, 300),
    ),
    revision: matching(GIT_REVISION, 255),
    subPath: matching(RELATIVE_PATH, 255),
  },
  { requiredKeys: ["url"] },
);

const specArb = fc
  .record(
    {
      source: fc.oneof(
        gitArb.map((git) => ({ git })),
        fc.record({ inline: fc.record({ dockerfile: fc.constant("FROM scratch\n") }) }),
      ),
      dockerfile: matching(RELATIVE_PATH, 255),
      target: matching(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 128),
      buildArgs: fc.uniqueArray(fc.record({ name: matching(BUILD_ARG_NAME, 128), value: tricky }), {
        selector: (a) => a.name,
        maxLength: 4,
      }),
      labels: fc.uniqueArray(fc.record({ name: matching(LABEL_NAME, 128), value: tricky }), {
        selector: (a) => a.name,
        maxLength: 4,
      }),
      platforms: fc.uniqueArray(
        fc.constantFrom("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x"),
        {
          minLength: 1,
          maxLength: 4,
        },
      ),
      output: fc.record({
        image: matching(REPOSITORY, 255),
        tags: fc.uniqueArray(matching(TAG, 128), { maxLength: 3 }),
      }),
      cache: fc.record(
        {
          disabled: fc.boolean(),
          ref: matching(CACHE_REF, 255),
          mode: fc.constantFrom("min", "max"),
          importFrom: fc.uniqueArray(matching(CACHE_REF, 255), { maxLength: 2 }),
          imageManifest: fc.boolean(),
          ociMediaTypes: fc.boolean(),
          failOnExportError: fc.boolean(),
        },
        { requiredKeys: [] },
      ),
      secrets: fc.uniqueArray(
        fc.record({
          id: matching(SECRET_ID, 128),
          secretRef: fc.record({
            name: fc.constantFrom("npm", "creds.v1"),
            key: fc.constantFrom("k", "a.b"),
          }),
        }),
        { selector: (s) => s.id, maxLength: 3 },
      ),
    },
    { requiredKeys: ["source", "platforms", "output"] },
  )
  .map((partial) => imageBuildSpec.safeParse({ poolRef: { name: "default" }, ...partial }))
  .filter((parsed) => parsed.success)
  .map((parsed) => parsed.data as ImageBuildSpec);

/** What the context option must be: the revision (unless HEAD, the default branch) and subPath. */
function expectedContext(git: NonNullable<ImageBuildSpec["source"]["git"]>): string {
  const ref = git.revision === "HEAD" ? "" : git.revision;
  const fragment = git.subPath ? `${ref}:${git.subPath}` : ref;
  return fragment ? `${git.url}#${fragment}` : git.url;
}

function withSpec(spec: ImageBuildSpec): { build: ImageBuild; plan: BuildPlan } {
  const b: ImageBuild = { ...build, spec };
  const host = spec.source.git ? gitHost(spec.source.git.url) : undefined;
  const gitAuth = host && TOKEN_HOST.test(host) ? { kind: "token" as const, host } : undefined;
  return {
    build: b,
    plan: {
      ...plan,
      targets: spec.platforms.map((platform) => ({
        platform,
        slug: platformSlug(platform),
        architecture: "amd64",
      })),
      ...(gitAuth ? { gitAuth } : {}),
    },
  };
}

describe("buildctl argv over arbitrary valid specs", () => {
  it("is the same array for the same spec, however its objects were built", () => {
    fc.assert(
      fc.property(specArb, (spec) => {
        const { build: b, plan: p } = withSpec(spec);
        const reordered = JSON.parse(
          JSON.stringify(b, (_k, v) =>
            v && typeof v === "object" && !Array.isArray(v)
              ? Object.fromEntries(Object.entries(v).reverse())
              : v,
          ),
        ) as ImageBuild;
        for (const target of p.targets) {
          expect(buildctlArgv(reordered, p, target)).toEqual(buildctlArgv(b, p, target));
        }
      }),
      { numRuns: 150 },
    );
  });

  it("has no element with a line break or NUL", () => {
    fc.assert(
      fc.property(specArb, (spec) => {
        const { build: b, plan: p } = withSpec(spec);
        for (const target of p.targets) {
          for (const element of buildctlArgv(b, p, target)) expect(element).not.toMatch(/[\r\n\0]/);
        }
      }),
      { numRuns: 150 },
    );
  });

  it("gives every CSV-parsed flag exactly the keys the operator chose, with the spec's values", () => {
    fc.assert(
      fc.property(specArb, (spec) => {
        const { build: b, plan: p } = withSpec(spec);
        for (const target of p.targets) {
          const argv = buildctlArgv(b, p, target);
          argv.forEach((arg, i) => {
            const value = argv[i + 1] as string;
            if (arg === "--output") {
              const map = csvMap(value);
              expect([...map.keys()]).toEqual([
                "type",
                "name",
                "push-by-digest",
                "name-canonical",
                "push",
                "oci-mediatypes",
              ]);
              expect(map.get("name")).toBe(spec.output.image);
              expect(map.get("push")).toBe("true");
            }
            if (arg === "--export-cache") {
              const map = csvMap(value);
              const keys = ["type", "ref", "mode", "image-manifest", "oci-mediatypes"];
              if (!spec.cache.failOnExportError) keys.push("ignore-error");
              expect([...map.keys()]).toEqual(keys);
              expect(map.get("ref")).toBe(cacheRefForPlatform(cacheRefOf(spec), target.slug));
              expect(map.get("mode")).toBe(spec.cache.mode);
            }
            if (arg === "--import-cache") {
              expect([...csvMap(value).keys()]).toEqual(["type", "ref"]);
            }
            if (arg === "--secret") {
              const map = csvMap(value);
              expect([...map.keys()]).toEqual(["id", "src"]);
              const id = map.get("id") as string;
              const known =
                (spec.secrets ?? []).some((s) => s.id === id) ||
                id === `GIT_AUTH_TOKEN.${p.gitAuth?.kind === "token" ? p.gitAuth.host : ""}`;
              expect(known).toBe(true);
            }
          });
        }
      }),
      { numRuns: 200 },
    );
  });

  it("carries no --opt the spec did not ask for, and every value is the spec's own", () => {
    fc.assert(
      fc.property(specArb, (spec) => {
        const { build: b, plan: p } = withSpec(spec);
        const target = p.targets[0] as BuildPlan["targets"][0];
        const argv = buildctlArgv(b, p, target);
        const opts = argv.flatMap((arg, i) => (arg === "--opt" ? [argv[i + 1] as string] : []));
        const expected = [
          ...(spec.source.git ? [`context=${expectedContext(spec.source.git)}`] : []),
          `filename=${spec.dockerfile}`,
          `platform=${target.platform}`,
          ...(spec.target ? [`target=${spec.target}`] : []),
          ...(spec.buildArgs ?? []).map((a) => `build-arg:${a.name}=${a.value}`),
          ...(spec.labels ?? []).map((l) => `label:${l.name}=${l.value}`),
        ];
        expect(opts).toEqual(expected);
      }),
      { numRuns: 150 },
    );
  });

  it("never lets the patterns feeding CSV flags match a comma, quote or line break", () => {
    const bad = fc.constantFrom(",", '"', "\n", "\r");
    fc.assert(
      fc.property(fc.string(), bad, fc.string(), (before, character, after) => {
        const text = `${before}${character}${after}`;
        for (const pattern of [REPOSITORY, CACHE_REF, SECRET_ID, TOKEN_HOST])
          expect(pattern.test(text)).toBe(false);
      }),
    );
  });
});
