// One image reference grammar (src/api/reference.ts) for the schema's fields and for the
// registry client `assemble` parses its flags with (src/registry/reference.ts): they must
// accept the same names, or a build the operator admits could fail in its index Job.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { output } from "../../src/api/imagebuild.ts";
import {
  HOST_AND_PORT,
  IMAGE_REFERENCE,
  REGISTRY_HOST,
  REPOSITORY,
  splitHost,
} from "../../src/api/reference.ts";
import { parseAssembleArgs } from "../../src/imagebuild/assemble-contract.ts";
import { parseReference, parseRepository } from "../../src/registry/reference.ts";

const parses = (parse: () => unknown): boolean => {
  try {
    parse();
    return true;
  } catch {
    return false;
  }
};

describe("splitHost: is the first component a registry host?", () => {
  it.each([
    ["registry.example.com/team/app", "registry.example.com", "team/app"],
    ["localhost/app", "localhost", "app"],
    ["localhost:5000/app:v1", "localhost:5000", "app:v1"],
    ["kind-registry:5000/demo/hello", "kind-registry:5000", "demo/hello"],
    ["[::1]:5000/app", "[::1]:5000", "app"],
    ["Registry.Example.com/a", "Registry.Example.com", "a"],
    // Not a host: the name is a Docker Hub path.
    ["team/app", undefined, "team/app"],
    ["app", undefined, "app"],
    ["my.app", undefined, "my.app"],
    ["localhost", undefined, "localhost"],
    ["app:v1", undefined, "app:v1"],
  ])("%s → host %s, then %s", (reference, host, remainder) => {
    expect(splitHost(reference)).toEqual(host === undefined ? { remainder } : { host, remainder });
  });
});

describe("where the two host regexes disagreed, distribution/reference decides", () => {
  // distribution/reference's ipv6address is \[[a-fA-F0-9:]+\]: IPv4-mapped addresses (with
  // '.') are left out on purpose. The registry client's own copy took them; Docker, BuildKit
  // and the schema refuse them, so assemble now does too.
  it.each(["[::ffff:127.0.0.1]:5000", "[::ffff:10.0.0.1]"])("%s is no registry host", (host) => {
    expect(REGISTRY_HOST.test(host)).toBe(false);
    expect(HOST_AND_PORT.test(host)).toBe(false);
    expect(REPOSITORY.test(`${host}/app`)).toBe(false);
    expect(() => parseRepository(`${host}/app`)).toThrow("is not a registry host[:port]");
    const parsed = parseAssembleArgs([
      "--image",
      "ghcr.io/org/app",
      "--digest",
      `linux/amd64=sha256:${"a".repeat(64)}`,
      "--insecure-registry",
      host,
    ]);
    expect(parsed).toMatchObject({
      kind: "usage",
      message: expect.stringMatching(/^--insecure-registry/),
    });
  });

  it("an IPv6 literal without '.' is a host on both sides", () => {
    expect(REPOSITORY.test("[fd00::1]:5000/app")).toBe(true);
    expect(parseRepository("[fd00::1]:5000/app").registry).toBe("[fd00::1]:5000");
  });

  it("--insecure-registry still takes any host[:port] a URL may name, a single label included", () => {
    // A token service's realm (http://auth/token) is no reference's first component.
    expect(HOST_AND_PORT.test("auth")).toBe(true);
    expect(REGISTRY_HOST.test("auth")).toBe(false);
    expect(HOST_AND_PORT.test("-auth")).toBe(false);
  });
});

describe("the schema and the registry client accept the same references", () => {
  // Short strings over the characters that matter to the grammar: separators, case, ports,
  // brackets, the tag and digest signs.
  const alphabet = fc.constantFrom(
    ..."aAz09.-_:/[]@".split(""),
    "localhost",
    "sha256:",
    "f".repeat(64),
  );
  const name = fc.array(alphabet, { maxLength: 12 }).map((parts) => parts.join(""));
  // Names the grammar's pieces build, so that accepted names are common, not only refusals.
  const component = fc.constantFrom("a", "a0", "a.b", "a_b", "a__b", "a--b", "A", "0");
  const host = fc.constantFrom(
    "localhost",
    "localhost:5000",
    "r.example.com",
    "r:5000",
    "R.Example.com:443",
    "[::1]",
    "[::1]:5000",
    "[::ffff:1.2.3.4]:5000",
    "-r.example.com",
    "r-.example.com",
    "r_x.com",
    "r.com:123456",
  );
  const built = fc
    .tuple(
      fc.option(host, { nil: undefined }),
      fc.array(component, { minLength: 1, maxLength: 3 }),
      fc.option(fc.constantFrom("v1", "V_1.x", "-x", ""), { nil: undefined }),
      fc.option(fc.constantFrom(`sha256:${"a".repeat(64)}`, "sha256:abc"), { nil: undefined }),
    )
    .map(
      ([h, path, tag, digest]) =>
        `${h === undefined ? "" : `${h}/`}${path.join("/")}${tag === undefined ? "" : `:${tag}`}${digest === undefined ? "" : `@${digest}`}`,
    );
  const reference = fc.oneof(name, built);

  it.each([
    ["library/<237>", "a".repeat(237), true],
    ["library/<238>", "a".repeat(238), false],
    ["team/<240>", `team/${"a".repeat(240)}`, true],
    ["team/<241>", `team/${"a".repeat(241)}`, false],
    ["r.example.com/<241>", `r.example.com/${"a".repeat(241)}`, true],
    ["r.example.com/<242>", `r.example.com/${"a".repeat(242)}`, false],
  ])("%s: both count Docker Hub's implied docker.io/[library/] to 255", (_, text, ok) => {
    expect(output.shape.image.safeParse(text).success).toBe(ok);
    expect(parses(() => parseRepository(text))).toBe(ok);
  });

  it("spec.output.image accepts exactly what parseRepository parses", () => {
    // The field, not REPOSITORY alone: the 255-character limit (with Docker Hub's implied
    // docker.io/library/) is the field's rule on top of the regex, and the client's too.
    const image = output.shape.image;
    fc.assert(
      fc.property(reference, (text) => {
        expect(image.safeParse(text).success, text).toBe(parses(() => parseRepository(text)));
      }),
      { numRuns: 5000 },
    );
  });

  it("IMAGE_REFERENCE accepts exactly what parseReference parses, within the length limits", () => {
    fc.assert(
      fc.property(
        reference.filter((text) => text.length <= 200),
        (text) => {
          expect(IMAGE_REFERENCE.test(text), text).toBe(parses(() => parseReference(text)));
        },
      ),
      { numRuns: 5000 },
    );
  });
});
