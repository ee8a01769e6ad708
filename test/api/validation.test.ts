import { describe, expect, it } from "vitest";
import { parseBuilderPool, parseImageBuild, SpecError } from "../../src/api/resources.ts";
import { crdValidator } from "../support/crds.ts";
import { readYaml } from "../support/files.ts";

type Obj = Record<string, unknown>;
const clone = <T>(value: T): T => structuredClone(value);

function problemsOf(parse: () => unknown): string[] {
  try {
    parse();
    return [];
  } catch (error) {
    if (error instanceof SpecError) return [...error.issues];
    throw error;
  }
}

describe("the examples", () => {
  it.each([
    ["examples/builderpool.yaml", parseBuilderPool, "builderpools"],
    ["examples/imagebuild.yaml", parseImageBuild, "imagebuilds"],
  ] as const)("%s is valid for both the operator and the CRD schema", (file, parse, plural) => {
    const object = readYaml(file);
    expect(problemsOf(() => parse(object))).toEqual([]);
    expect(crdValidator(plural).admit(clone(object))).toEqual([]);
  });

  it.each([
    ["examples/builderpool.yaml", parseBuilderPool, "builderpools"],
    ["examples/imagebuild.yaml", parseImageBuild, "imagebuilds"],
  ] as const)(
    "%s gets the same defaults from the API server as from the operator",
    (file, parse, plural) => {
      const defaultedByServer = clone(readYaml(file));
      crdValidator(plural).admit(defaultedByServer);
      expect(defaultedByServer.spec).toEqual(parse(readYaml(file)).spec);
    },
  );
});

interface InvalidCase {
  name: string;
  kind: "pool" | "build";
  mutate: (spec: Obj) => void;
  /** The field path the error must name. */
  field: string;
  /** Refused by the CRD schema too (false: only the operator can see it, as a condition). */
  crd?: boolean;
}

const at = (spec: Obj, path: string): Obj => path.split(".").reduce((o, k) => o[k] as Obj, spec);

const INVALID: InvalidCase[] = [
  {
    name: "platform without os",
    kind: "build",
    mutate: (s) => {
      s.platforms = ["linux/amd64", "arm64"];
    },
    field: "spec.platforms[1]",
  },
  {
    name: "platform with a shell metacharacter",
    kind: "build",
    mutate: (s) => {
      s.platforms = ["linux/amd64;rm"];
    },
    field: "spec.platforms[0]",
  },
  {
    name: "windows platform",
    kind: "build",
    mutate: (s) => {
      s.platforms = ["windows/amd64"];
    },
    field: "spec.platforms[0]",
  },
  {
    name: "duplicated platforms",
    kind: "build",
    mutate: (s) => {
      s.platforms = ["linux/amd64", "linux/amd64"];
    },
    field: "spec.platforms[1]",
  },
  {
    name: "no platforms",
    kind: "build",
    mutate: (s) => {
      s.platforms = [];
    },
    field: "spec.platforms",
  },
  {
    name: "too many platforms",
    kind: "build",
    mutate: (s) => {
      s.platforms = [
        "linux/amd64",
        "linux/arm64",
        "linux/arm/v7",
        "linux/arm/v6",
        "linux/ppc64le",
        "linux/s390x",
        "linux/riscv64",
        "linux/386",
        "linux/amd64/v2",
      ];
    },
    field: "spec.platforms",
  },
  {
    name: "dockerfile path with ..",
    kind: "build",
    mutate: (s) => {
      s.dockerfile = "../../etc/passwd";
    },
    field: "spec.dockerfile",
  },
  {
    name: "absolute dockerfile path",
    kind: "build",
    mutate: (s) => {
      s.dockerfile = "/Dockerfile";
    },
    field: "spec.dockerfile",
  },
  {
    name: "subPath escaping the repository",
    kind: "build",
    mutate: (s) => {
      at(s, "source.git").subPath = "app/../../x";
    },
    field: "spec.source.git.subPath",
  },
  {
    name: "image reference with a space",
    kind: "build",
    mutate: (s) => {
      at(s, "output").image = "registry.example.com/my app";
    },
    field: "spec.output.image",
  },
  {
    name: "upper-case repository",
    kind: "build",
    mutate: (s) => {
      at(s, "output").image = "registry.example.com/Team/App";
    },
    field: "spec.output.image",
  },
  {
    name: "image with a tag",
    kind: "build",
    mutate: (s) => {
      at(s, "output").image = "registry.example.com/app:v1";
    },
    field: "spec.output.image",
  },
  {
    name: "image with a comma that would split buildctl's CSV",
    kind: "build",
    mutate: (s) => {
      at(s, "output").image = "registry.example.com/app,push=false";
    },
    field: "spec.output.image",
  },
  {
    name: "tag with a slash",
    kind: "build",
    mutate: (s) => {
      at(s, "output").tags = ["feature/x"];
    },
    field: "spec.output.tags[0]",
  },
  {
    name: "tag longer than 128",
    kind: "build",
    mutate: (s) => {
      at(s, "output").tags = ["a".repeat(129)];
    },
    field: "spec.output.tags[0]",
  },
  {
    name: "too many tags",
    kind: "build",
    mutate: (s) => {
      at(s, "output").tags = Array.from({ length: 17 }, (_, i) => `t${i}`);
    },
    field: "spec.output.tags",
  },
  {
    name: "build-arg name containing =",
    kind: "build",
    mutate: (s) => {
      s.buildArgs = [{ name: "A=B", value: "x" }];
    },
    field: "spec.buildArgs[0].name",
  },
  {
    name: "build-arg value with a newline",
    kind: "build",
    mutate: (s) => {
      s.buildArgs = [{ name: "A", value: "x\ny" }];
    },
    field: "spec.buildArgs[0].value",
  },
  {
    name: "duplicated build-arg",
    kind: "build",
    mutate: (s) => {
      s.buildArgs = [
        { name: "A", value: "1" },
        { name: "A", value: "2" },
      ];
    },
    field: "spec.buildArgs[1]",
  },
  {
    name: "secret id containing /",
    kind: "build",
    mutate: (s) => {
      s.secrets = [{ id: "npm/token", secretRef: { name: "npm", key: "token" } }];
    },
    field: "spec.secrets[0].id",
  },
  {
    name: "secret id containing a comma",
    kind: "build",
    mutate: (s) => {
      s.secrets = [{ id: "a,src=/etc/shadow", secretRef: { name: "npm", key: "token" } }];
    },
    field: "spec.secrets[0].id",
  },
  {
    name: "secret without key",
    kind: "build",
    mutate: (s) => {
      s.secrets = [{ id: "npm", secretRef: { name: "npm" } }];
    },
    field: "spec.secrets[0].secretRef.key",
  },
  {
    name: "empty poolRef name",
    kind: "build",
    mutate: (s) => {
      s.poolRef = { name: "" };
    },
    field: "spec.poolRef.name",
  },
  {
    name: "missing poolRef",
    kind: "build",
    mutate: (s) => {
      delete s.poolRef;
    },
    field: "spec.poolRef",
  },
  {
    name: "timeout abc",
    kind: "build",
    mutate: (s) => {
      s.timeout = "abc";
    },
    field: "spec.timeout",
  },
  {
    name: "timeout zero",
    kind: "build",
    mutate: (s) => {
      s.timeout = "0s";
    },
    field: "spec.timeout",
  },
  {
    name: "verify env named IMAGE, which the operator sets",
    kind: "build",
    mutate: (s) => {
      s.verify = { command: ["/check"], env: [{ name: "IMAGE", value: "other" }] };
    },
    field: "spec.verify.env[0].name",
  },
  {
    name: "verify with an empty command",
    kind: "build",
    mutate: (s) => {
      s.verify = { command: [] };
    },
    field: "spec.verify.command",
  },
  {
    name: "verify timeout over a day",
    kind: "build",
    mutate: (s) => {
      s.verify = { command: ["/check"], timeout: "25h" };
    },
    field: "spec.verify.timeout",
  },
  {
    name: "verify image with a space",
    kind: "build",
    mutate: (s) => {
      s.verify = { command: ["/check"], image: "acme/check v1" };
    },
    field: "spec.verify.image",
  },
  {
    name: "timeout over a week",
    kind: "build",
    mutate: (s) => {
      s.timeout = "200h";
    },
    field: "spec.timeout",
  },
  {
    name: "negative retries",
    kind: "build",
    mutate: (s) => {
      s.retries = -1;
    },
    field: "spec.retries",
  },
  {
    name: "fractional retries",
    kind: "build",
    mutate: (s) => {
      s.retries = 1.5;
    },
    field: "spec.retries",
  },
  {
    name: "git URL with a fragment",
    kind: "build",
    mutate: (s) => {
      at(s, "source.git").url = "https://example.com/r.git#main:../..";
    },
    field: "spec.source.git.url",
  },
  {
    name: "git URL with a space",
    kind: "build",
    mutate: (s) => {
      at(s, "source.git").url = "https://example.com/r.git --upload-pack=touch";
    },
    field: "spec.source.git.url",
  },
  {
    name: "git URL with a newline",
    kind: "build",
    mutate: (s) => {
      at(s, "source.git").url = "https://example.com/r.git\nx";
    },
    field: "spec.source.git.url",
  },
  {
    name: "git file:// URL",
    kind: "build",
    mutate: (s) => {
      at(s, "source.git").url = "file:///etc";
    },
    field: "spec.source.git.url",
  },
  {
    name: "git URL with a password",
    kind: "build",
    mutate: (s) => {
      at(s, "source.git").url = "https://bob:hunter2@example.com/r.git";
    },
    field: "spec.source.git.url",
  },
  {
    name: "https git URL without .git",
    kind: "build",
    mutate: (s) => {
      at(s, "source.git").url = "https://example.com/org/repo";
    },
    field: "spec.source.git.url",
  },
  {
    name: "image-manifest cache with Docker media types",
    kind: "build",
    mutate: (s) => {
      at(s, "cache").ociMediaTypes = false;
    },
    field: "spec.cache",
  },
  {
    name: "revision with ..",
    kind: "build",
    mutate: (s) => {
      at(s, "source.git").revision = "main..evil";
    },
    field: "spec.source.git.revision",
  },
  {
    name: "both git and inline sources",
    kind: "build",
    mutate: (s) => {
      at(s, "source").inline = { dockerfile: "FROM x" };
    },
    field: "spec.source",
  },
  {
    name: "neither git nor inline",
    kind: "build",
    mutate: (s) => {
      s.source = {};
    },
    field: "spec.source",
  },
  {
    name: "cache mode medium",
    kind: "build",
    mutate: (s) => {
      at(s, "cache").mode = "medium";
    },
    field: "spec.cache.mode",
  },
  {
    name: "cache ref with a digest",
    kind: "build",
    mutate: (s) => {
      at(s, "cache").ref = "registry.example.com/app@sha256:abc";
    },
    field: "spec.cache.ref",
  },
  {
    name: "unknown label key characters",
    kind: "build",
    mutate: (s) => {
      s.labels = [{ name: "bad key", value: "v" }];
    },
    field: "spec.labels[0].name",
  },
  {
    name: "ttl over 30 days",
    kind: "build",
    mutate: (s) => {
      s.ttlSecondsAfterFinished = 31 * 86400;
    },
    field: "spec.ttlSecondsAfterFinished",
  },
  {
    name: "a BuildKit image whose registry host starts with '-'",
    kind: "pool",
    mutate: (s) => {
      s.buildkit = { ...(s.buildkit as Obj), image: "-registry.example.com/buildkit:v0.24.0" };
    },
    field: "spec.buildkit.image",
  },
  {
    name: "negative replicas",
    kind: "pool",
    mutate: (s) => {
      (s.architectures as Obj[])[0]!.replicas = -1;
    },
    field: "spec.architectures[0].replicas",
  },
  {
    name: "unknown architecture",
    kind: "pool",
    mutate: (s) => {
      (s.architectures as Obj[])[0]!.name = "x86";
    },
    field: "spec.architectures[0].name",
  },
  {
    name: "duplicated architecture",
    kind: "pool",
    mutate: (s) => {
      (s.architectures as Obj[])[1]!.name = "amd64";
    },
    field: "spec.architectures[1]",
  },
  {
    name: "no architectures",
    kind: "pool",
    mutate: (s) => {
      s.architectures = [];
    },
    field: "spec.architectures",
  },
  {
    name: "quantity 4 gigs",
    kind: "pool",
    mutate: (s) => {
      at(s, "cache").size = "4 gigs";
    },
    field: "spec.cache.size",
  },
  {
    name: "resource quantity with a unit typo",
    kind: "pool",
    mutate: (s) => {
      ((s.architectures as Obj[])[0]!.resources as Obj).limits = { memory: "8GB" };
    },
    field: "spec.architectures[0].resources.limits.memory",
  },
  {
    name: "maxConcurrentBuilds zero",
    kind: "pool",
    mutate: (s) => {
      s.maxConcurrentBuilds = 0;
    },
    field: "spec.maxConcurrentBuilds",
  },
  {
    name: "extra flag overriding --addr",
    kind: "pool",
    mutate: (s) => {
      at(s, "buildkit").extraFlags = ["--addr=tcp://0.0.0.0:9999"];
    },
    field: "spec.buildkit.extraFlags[0]",
  },
  {
    name: "extra flag with a space",
    kind: "pool",
    mutate: (s) => {
      at(s, "buildkit").extraFlags = ["--debug --oci-worker=false"];
    },
    field: "spec.buildkit.extraFlags[0]",
  },
  {
    name: "gc keepDuration forever",
    kind: "pool",
    mutate: (s) => {
      at(s, "buildkit.gc").keepDuration = "forever";
    },
    field: "spec.buildkit.gc.keepDuration",
  },
  {
    name: "autoscaling min above max",
    kind: "pool",
    mutate: (s) => {
      (s.architectures as Obj[])[0]!.autoscaling = { minReplicas: 3, maxReplicas: 2 };
    },
    field: "spec.architectures[0].autoscaling",
  },
  {
    name: "served platform that is not a platform",
    kind: "pool",
    mutate: (s) => {
      (s.architectures as Obj[])[1]!.platforms = ["arm/v7"];
    },
    field: "spec.architectures[1].platforms[0]",
  },
  {
    name: "cache type tmpfs",
    kind: "pool",
    mutate: (s) => {
      at(s, "cache").type = "Tmpfs";
    },
    field: "spec.cache.type",
  },
  {
    name: "node selector key with a space",
    kind: "pool",
    mutate: (s) => {
      (s.architectures as Obj[])[0]!.nodeSelector = { "bad key": "x" };
    },
    field: 'spec.architectures[0].nodeSelector["bad key"]',
    crd: false,
  },
  // Issue 21: attestations and isolation.
  {
    name: "attestations asking for nothing",
    kind: "build",
    mutate: (s) => {
      s.attestations = {};
    },
    field: "spec.attestations",
  },
  {
    name: "provenance mode outside min|max (a CSV injection)",
    kind: "build",
    mutate: (s) => {
      s.attestations = { provenance: { mode: "max,inline-only=true" } };
    },
    field: "spec.attestations.provenance.mode",
  },
  {
    name: "a build argument BuildKit would read as an attestation request",
    kind: "build",
    mutate: (s) => {
      s.buildArgs = [{ name: "BUILDKIT_ATTEST_SBOM", value: "generator=evil.example.com/x" }];
    },
    field: "spec.buildArgs[0].name",
  },
  {
    name: "an SBOM generator with a ',' (would add a key to attest:sbom)",
    kind: "pool",
    mutate: (s) => {
      s.buildkit = { sbomGenerator: "docker/buildkit-syft-scanner:1,disabled=true" };
    },
    field: "spec.buildkit.sbomGenerator",
  },
  {
    name: "a RuntimeClass name with a shell metacharacter",
    kind: "pool",
    mutate: (s) => {
      s.isolation = { runtimeClassName: "kata;reboot" };
    },
    field: "spec.isolation.runtimeClassName",
  },
  {
    name: "a trust level that is not Trusted or Untrusted",
    kind: "pool",
    mutate: (s) => {
      s.isolation = { trust: "untrusted" };
    },
    field: "spec.isolation.trust",
  },
  {
    name: "a named context whose name has '=' (it would split buildctl's --opt)",
    kind: "build",
    mutate: (s) => {
      s.contexts = [{ name: "node=x", image: "mirror.example.com/node:24" }];
    },
    field: "spec.contexts[0].name",
  },
  {
    name: "a named context whose image is a URL, not an image reference",
    kind: "build",
    mutate: (s) => {
      s.contexts = [{ name: "node:24", image: "https://example.com/node.tar" }];
    },
    field: "spec.contexts[0].image",
  },
  {
    name: "two named contexts for one name",
    kind: "build",
    mutate: (s) => {
      s.contexts = [
        { name: "node:24", image: "mirror.example.com/node:24" },
        { name: "node:24", image: "mirror.example.com/node:25" },
      ];
    },
    field: "spec.contexts[1]",
  },
  {
    name: "hostUsers as a string",
    kind: "pool",
    mutate: (s) => {
      s.isolation = { hostUsers: "false" };
    },
    field: "spec.isolation.hostUsers",
  },
];

describe("an invalid spec is refused with a message that names the field", () => {
  const base = {
    pool: readYaml("examples/builderpool.yaml"),
    build: readYaml("examples/imagebuild.yaml"),
  };

  it("covers at least 30 cases", () => {
    expect(INVALID.length).toBeGreaterThanOrEqual(30);
  });

  it.each(INVALID)("$kind: $name → $field", ({ kind, mutate, field, crd = true }) => {
    const object = clone(base[kind]);
    mutate(object.spec as Obj);
    const problems = problemsOf(() =>
      (kind === "pool" ? parseBuilderPool : parseImageBuild)(clone(object)),
    );
    expect(
      problems.some((line) => line.startsWith(`${field}: `)),
      problems.join("\n"),
    ).toBe(true);
    const causes = crdValidator(kind === "pool" ? "builderpools" : "imagebuilds").admit(
      clone(object),
    );
    if (crd)
      expect(
        causes.map((cause) => cause.field),
        JSON.stringify(causes),
      ).toContain(field);
    else expect(causes).toEqual([]);
  });

  it("explains a bad name in terms of the children it would produce", () => {
    const object = clone(base.build);
    (object.metadata as Obj).name = "x".repeat(53);
    expect(problemsOf(() => parseImageBuild(object))).toEqual([
      expect.stringMatching(
        /^metadata\.name: .*at most 52 characters, because its Jobs are named <build>-<arch>/,
      ),
    ]);
    expect(crdValidator("imagebuilds").admit(object)).toEqual([
      expect.objectContaining({
        field: "",
        message: expect.stringContaining("at most 52 characters"),
      }),
    ]);
  });

  it("refuses a change to an ImageBuild's spec on update, but not a status-only write", () => {
    const validator = crdValidator("imagebuilds");
    const old = clone(base.build);
    validator.admit(old);
    const changed = clone(old);
    (changed.spec as Obj).retries = 3;
    expect(validator.admit(changed, old)).toEqual([
      expect.objectContaining({
        field: "spec",
        message: expect.stringContaining("spec is immutable"),
      }),
    ]);
    const same = clone(old);
    same.status = { phase: "Building" };
    expect(validator.admit(same, old)).toEqual([]);
  });

  it("counts characters as the API server does: 4,096 emoji pass both, 4,097 neither", () => {
    const validator = crdValidator("imagebuilds");
    const withValue = (value: string) => {
      const object = clone(base.build);
      (object.spec as Obj).buildArgs = [{ name: "EMOJI", value }];
      return object;
    };
    // Each is one character (code point) and two UTF-16 units; both sides count code points.
    const fits = withValue("\u{1F600}".repeat(4096));
    expect(validator.admit(fits)).toEqual([]);
    expect(problemsOf(() => parseImageBuild(fits))).toEqual([]);
    const over = withValue("\u{1F600}".repeat(4097));
    expect(validator.admit(over)).toEqual([
      expect.objectContaining({ field: "spec.buildArgs[0].value" }),
    ]);
    expect(problemsOf(() => parseImageBuild(over))).toEqual([
      "spec.buildArgs[0].value: must be at most 4096 characters",
    ]);
  });

  it("turns a 1 MiB string into a length error, not a crash", () => {
    const object = clone(base.build);
    (object.spec as Obj).buildArgs = [{ name: "BIG", value: "x".repeat(1 << 20) }];
    expect(problemsOf(() => parseImageBuild(object))).toEqual([
      "spec.buildArgs[0].value: must be at most 4096 characters",
    ]);
  });
});
