// The small pure parts of the registry client: references, WWW-Authenticate challenges,
// Retry-After and backoff, and the redactor (platforms: test/api/platform.test.ts).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseWwwAuthenticate } from "../../src/registry/challenge.ts";
import { REDACTED, Redactor } from "../../src/registry/redact.ts";
import { parseReference, parseRepository } from "../../src/registry/reference.ts";
import {
  DEFAULT_RETRY,
  isRetryableStatus,
  parseRetryAfter,
  retryDelay,
} from "../../src/registry/retry.ts";

describe("image references", () => {
  it.each([
    ["alpine", "docker.io", "registry-1.docker.io", "library/alpine"],
    ["docker.io/alpine", "docker.io", "registry-1.docker.io", "library/alpine"],
    ["index.docker.io/library/alpine", "docker.io", "registry-1.docker.io", "library/alpine"],
    ["registry-1.docker.io/team/app", "docker.io", "registry-1.docker.io", "team/app"],
    ["team/app", "docker.io", "registry-1.docker.io", "team/app"],
    ["ghcr.io/org/app", "ghcr.io", "ghcr.io", "org/app"],
    [
      "Registry.Example.com:5000/a/b/c",
      "registry.example.com:5000",
      "registry.example.com:5000",
      "a/b/c",
    ],
    ["localhost/app", "localhost", "localhost", "app"],
    ["localhost:5000/app", "localhost:5000", "localhost:5000", "app"],
    ["127.0.0.1:5000/demo/app", "127.0.0.1:5000", "127.0.0.1:5000", "demo/app"],
    ["[::1]:5000/app", "[::1]:5000", "[::1]:5000", "app"],
    ["myregistry:5000/app", "myregistry:5000", "myregistry:5000", "app"],
    ["a.b/x__y/z-1.2", "a.b", "a.b", "x__y/z-1.2"],
  ])("%s is registry %s served by %s, path %s", (text, registry, host, path) => {
    expect(parseRepository(text)).toEqual({ registry, host, path, name: `${registry}/${path}` });
  });

  it("splits tag and digest", () => {
    const digest = `sha256:${"a".repeat(64)}`;
    expect(parseReference(`ghcr.io/org/app:v1.2@${digest}`)).toMatchObject({ tag: "v1.2", digest });
    expect(parseReference("localhost:5000/app:latest")).toMatchObject({
      repository: { registry: "localhost:5000", path: "app" },
      tag: "latest",
    });
  });

  it.each([
    ["", "it is empty"],
    ["Team/App", 'path component "Team" must be lower-case'],
    ["ghcr.io/Org/app", 'path component "Org" must be lower-case'],
    ["app:", "the tag must be"],
    ["app@sha256:abc", "the digest must be sha256:"],
    ["a b/c", "it contains whitespace"],
    ["ghcr.io//app", 'path component ""'],
  ])("refuses %j (%s)", (text, why) => {
    expect(() => parseReference(text)).toThrow(why);
  });

  it("refuses a tag or digest where a repository is wanted", () => {
    expect(() => parseRepository("ghcr.io/org/app:v1")).toThrow(
      "must be a repository without tag or digest",
    );
  });
});

describe("WWW-Authenticate", () => {
  it.each([
    [
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push"',
      [
        {
          scheme: "bearer",
          params: {
            realm: "https://auth.docker.io/token",
            service: "registry.docker.io",
            scope: "repository:samalba/my-app:pull,push",
          },
        },
      ],
    ],
    ['Basic realm="Registry Realm"', [{ scheme: "basic", params: { realm: "Registry Realm" } }]],
    [
      'Bearer realm="https://r/token", error="insufficient_scope", scope="repository:a:pull repository:b:pull"',
      [
        {
          scheme: "bearer",
          params: {
            realm: "https://r/token",
            error: "insufficient_scope",
            scope: "repository:a:pull repository:b:pull",
          },
        },
      ],
    ],
    [
      'Negotiate abc==, Basic realm="x", BEARER Realm=https://t/token,Service=svc',
      [
        { scheme: "negotiate", params: {} },
        { scheme: "basic", params: { realm: "x" } },
        { scheme: "bearer", params: { realm: "https://t/token", service: "svc" } },
      ],
    ],
    [
      'Bearer realm="a\\"quoted\\" realm"',
      [{ scheme: "bearer", params: { realm: 'a"quoted" realm' } }],
    ],
    ["", []],
  ])("%s", (header, challenges) => {
    expect(parseWwwAuthenticate(header)).toEqual(challenges);
  });

  it("round-trips any challenge list written with quoted values", () => {
    const token = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,10}$/);
    const value = fc.string({ maxLength: 30 }).filter((s) => !/\p{Cc}/u.test(s));
    const challenge = fc.record({
      scheme: token,
      params: fc.dictionary(
        token.map((k) => k.toLowerCase()),
        value,
        { maxKeys: 4 },
      ),
    });
    fc.assert(
      fc.property(fc.array(challenge, { minLength: 1, maxLength: 3 }), (challenges) => {
        const header = challenges
          .map(({ scheme, params }) =>
            [
              scheme,
              Object.entries(params)
                .map(([k, v]) => `${k}="${v.replace(/["\\]/g, "\\$&")}"`)
                .join(", "),
            ]
              .filter(Boolean)
              .join(" "),
          )
          .join(", ");
        expect(parseWwwAuthenticate(header)).toEqual(
          challenges.map(({ scheme, params }) => ({ scheme: scheme.toLowerCase(), params })),
        );
      }),
    );
  });
});

describe("retries", () => {
  it.each([
    [429, true],
    [500, true],
    [502, true],
    [503, true],
    [504, true],
    [501, false],
    [505, false],
    [400, false],
    [401, false],
    [404, false],
  ])("status %i is retried: %s", (status, retried) => {
    expect(isRetryableStatus(status)).toBe(retried);
  });

  it("reads Retry-After as seconds or an HTTP date", () => {
    const now = Date.parse("2025-01-01T00:00:00Z");
    expect(parseRetryAfter("3", now)).toBe(3000);
    expect(parseRetryAfter("Wed, 01 Jan 2025 00:00:05 GMT", now)).toBe(5000);
    expect(parseRetryAfter("Tue, 31 Dec 2024 23:59:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });

  it("backs off exponentially with jitter, honours Retry-After, and never waits past the cap", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20 }),
        fc.option(fc.integer({ min: 0, max: 10_000_000 }), { nil: undefined }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (attempt, retryAfter, random) => {
          const delay = retryDelay(DEFAULT_RETRY, attempt, retryAfter, () => random);
          expect(delay).toBeGreaterThanOrEqual(0);
          expect(delay).toBeLessThanOrEqual(DEFAULT_RETRY.maxDelayMs);
          if (retryAfter !== undefined) {
            expect(delay).toBe(Math.min(retryAfter, DEFAULT_RETRY.maxDelayMs));
          } else {
            const full = DEFAULT_RETRY.baseDelayMs * 2 ** (attempt - 1);
            expect(delay).toBeGreaterThanOrEqual(Math.min(full / 2, DEFAULT_RETRY.maxDelayMs) - 1);
          }
        },
      ),
    );
  });
});

describe("the redactor", () => {
  it("removes every known secret and its URL encoding, longest first", () => {
    const redactor = new Redactor();
    redactor.add("p@ss word");
    redactor.add("cC5zcyB3b3Jk");
    redactor.add(undefined);
    redactor.add("");
    expect(redactor.redact("pw=p@ss word q=p%40ss%20word auth=cC5zcyB3b3Jk")).toBe(
      `pw=${REDACTED} q=${REDACTED} auth=${REDACTED}`,
    );
    expect(redactor.redactFields({ nested: { list: ["x p@ss word y"] }, n: 1 })).toEqual({
      nested: { list: [`x ${REDACTED} y`] },
      n: 1,
    });
  });

  it("leaves no secret in any text", () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 4, maxLength: 20 }),
        fc.string(),
        fc.string(),
        (secret, before, after) => {
          const redactor = new Redactor();
          redactor.add(secret);
          expect(redactor.redact(`${before}${secret}${after}${secret}`)).not.toContain(secret);
        },
      ),
    );
  });
});
