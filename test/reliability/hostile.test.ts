// Hostile input (issue 8). Two halves:
// 1. The corpus (hostile-corpus.ts) sent through the in-process API server to one running
//    operator: each spec is refused by the CRD schema with a cause naming the field, reported
//    with a condition, or built with the value as one whole argv element; afterwards the same
//    operator still builds a normal spec and logged no error.
// 2. Properties over arbitrary specs the operator's schema accepts, built into Jobs by the real
//    Job builder: no value reaches a place it was not validated for.
import path from "node:path";
import type { KubernetesObject, V1Container, V1Job } from "@kubernetes/client-node";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BUILD_ARG_NAME,
  GIT_REVISION,
  type ImageBuildSpec,
  imageBuildSpec,
  LABEL_NAME,
  RELATIVE_PATH,
  SECRET_ID,
} from "../../src/api/imagebuild.ts";
import { CACHE_REF, REPOSITORY, TAG } from "../../src/api/reference.ts";
import type { ImageBuild } from "../../src/api/resources.ts";
import { admit, type BuildPlan } from "../../src/imagebuild/admission.ts";
import { parseAssembleArgs } from "../../src/imagebuild/assemble-contract.ts";
import { buildJob, indexJob, inlineContextConfigMap } from "../../src/imagebuild/jobs.ts";
import { BUILD_PATHS } from "../../src/naming.ts";
import { KubeApiError, RESOURCES } from "../../src/runtime/client.ts";
import {
  BUILDS,
  type Build,
  type BuildCluster,
  buildSpec,
  condition,
  NS,
  phaseIs,
  startBuildCluster,
} from "../imagebuild/cluster.ts";
import { exampleBuild, examplePool, merge } from "../imagebuild/fixtures.ts";
import { crdValidator } from "../support/crds.ts";
import { CORPUS, type HostileCase, type Json } from "./hostile-corpus.ts";

/** Programs a build pod may run; `assemble` is the operator image's entrypoint (no command). */
const PROGRAMS = new Set(["buildctl", "cp"]);
/** The operator image's subcommands a Job runs, through its entrypoint (no command). */
const SUBCOMMANDS = new Set(["assemble", "cache-report"]);
const SHELLS = /^(\/(usr\/)?bin\/)?(sh|bash|ash|dash|zsh|busybox|env)$/;

function containersOf(job: V1Job): V1Container[] {
  const pod = job.spec?.template.spec;
  return [...(pod?.initContainers ?? []), ...(pod?.containers ?? [])];
}

/** The container runs an argv array of a known program, never a shell line. */
function expectArgvOnly(container: V1Container): void {
  const command = container.command ?? [];
  expect(Array.isArray(container.args ?? [])).toBe(true);
  if (command.length === 0) expect(SUBCOMMANDS.has(container.args?.[0] ?? "")).toBe(true);
  else expect(command.length === 1 && PROGRAMS.has(command[0] as string), `${command}`).toBe(true);
  for (const element of [...command, ...(container.args ?? [])]) {
    expect(typeof element).toBe("string");
    expect(element).not.toMatch(SHELLS);
    expect(element).not.toMatch(/[\0\r\n]/);
  }
}

/** Every string a container would hand to a process or the kubelet. */
function containerStrings(container: V1Container): string[] {
  return [
    ...(container.command ?? []),
    ...(container.args ?? []),
    ...(container.env ?? []).flatMap((e) => [e.name, e.value ?? ""]),
    ...(container.volumeMounts ?? []).flatMap((m) => [m.mountPath, m.subPath ?? ""]),
  ];
}

/** Whether `argv` holds `flag` immediately followed by `value`. */
const hasPair = (argv: readonly string[], [flag, value]: [string, string]) =>
  argv.some((element, i) => element === flag && argv[i + 1] === value);

// ---------------------------------------------------------------------------------------
// 1. The corpus, through the API server and one operator.

const BASE: Json = buildSpec({ platforms: ["linux/amd64"] });
const HOSTILE_SECRET = "hostile-secret";
const nameOf = (index: number) => `hostile-${index}`;

type Result = { refused: KubeApiError } | { created: Build } | { unexpected: unknown };

describe("the hostile corpus, sent to one operator through the API server", () => {
  let cluster: BuildCluster;
  const results = new Map<string, Result>();
  /** Accepted builds, settled once they reach a terminal phase (or the error why not). */
  const settled = new Map<string, Promise<Build | Error>>();

  beforeAll(async () => {
    // Room for every accepted case at once, so the corpus is one round of builds.
    cluster = await startBuildCluster({ pool: { maxConcurrentBuilds: 64 } });
    await cluster.client.create(RESOURCES.secret, {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: HOSTILE_SECRET, namespace: NS },
      stringData: { value: "s3cret", token: "t0ken" },
    } as KubernetesObject);
    await Promise.all(
      CORPUS.map(async (entry, index) => {
        const name = nameOf(index);
        try {
          const created = await cluster.client.create<Build>(BUILDS, {
            apiVersion: "buildfarm.dev/v1alpha1",
            kind: "ImageBuild",
            metadata: { name, namespace: NS },
            spec: merge(BASE, entry.patch) as Json,
          } as Build);
          results.set(name, { created });
          const done = cluster
            .waitForBuild(name, phaseIs("Succeeded", "Failed", "Cancelled"), { timeout: 40_000 })
            .catch((error: Error) => error);
          settled.set(name, done);
        } catch (error) {
          results.set(
            name,
            error instanceof KubeApiError && error.code === 422
              ? { refused: error }
              : { unexpected: error },
          );
        }
      }),
    );
  }, 120_000);
  afterAll(() => cluster?.stop());

  it("has at least 50 entries, distinctly named, in every category the issue lists", () => {
    expect(CORPUS.length).toBeGreaterThanOrEqual(50);
    expect(new Set(CORPUS.map((c) => c.name)).size).toBe(CORPUS.length);
    const categories = new Set(CORPUS.map((c) => c.category));
    for (const category of [
      "shell metacharacters",
      "newlines and control characters",
      "path traversal",
      "1 MiB strings",
      "Unicode look-alikes",
      "sizes",
      "platforms",
      "option injection",
    ] as const)
      expect(categories).toContain(category);
    // Both kinds of outcome are exercised, not only refusals.
    const kinds = CORPUS.map((c) => Object.keys(c.expect)[0]);
    for (const kind of ["refused", "reported", "built"]) expect(kinds).toContain(kind);
  });

  it.each(CORPUS.map((entry, index) => ({ ...entry, index })))(
    "$category: $name",
    async ({ index, expect: outcome }: HostileCase & { index: number }) => {
      const name = nameOf(index);
      const result = results.get(name);
      if (!result || "unexpected" in result)
        throw new Error(`creating ${name} failed unexpectedly: ${String(result?.unexpected)}`);

      if ("refused" in outcome) {
        expect(
          "refused" in result,
          `${name} was accepted; expected a 422 on ${outcome.refused.field}`,
        ).toBe(true);
        if (!("refused" in result)) return;
        const status = result.refused.status;
        expect(status?.reason).toBe("Invalid");
        const causes = status?.details?.causes ?? [];
        expect(
          causes.some(
            (cause) =>
              cause.field === outcome.refused.field &&
              outcome.refused.message.test(cause.message ?? ""),
          ),
          JSON.stringify(causes.map((c) => ({ ...c, message: c.message?.slice(0, 200) }))),
        ).toBe(true);
        // The one-line message kubectl prints names the field too.
        expect(status?.message).toContain(`${outcome.refused.field}: `);
        expect(cluster.kube.store.get("imagebuilds.buildfarm.dev", NS, name)).toBeUndefined();
        return;
      }

      expect(
        "created" in result,
        `${name} was refused: ${"refused" in result ? result.refused.message.slice(0, 300) : ""}`,
      ).toBe(true);
      const build = await settled.get(name);
      if (build instanceof Error) throw build;
      const jobs = cluster.kube.store
        .objects("jobs.batch", NS)
        .filter((job) => job.metadata.name?.startsWith(`${name}-`)) as unknown as V1Job[];

      if ("reported" in outcome) {
        const { phase, reason, message } = outcome.reported;
        expect(build?.status?.phase).toBe(phase);
        for (const type of ["Succeeded", "Ready"]) {
          const found = condition(build, type);
          expect(found, type).toMatchObject({ status: "False", reason });
          expect(found?.message).toMatch(message);
        }
        // Nothing ran for a spec the operator refused.
        expect(jobs.map((job) => job.metadata?.name)).toEqual([]);
        return;
      }

      expect(build?.status?.phase, JSON.stringify(build?.status?.conditions)).toBe("Succeeded");
      const platformJob = jobs.find((job) => job.metadata?.name === `${name}-amd64`);
      const buildctl = platformJob && containersOf(platformJob).find((c) => c.name === "buildctl");
      const argv = buildctl?.args ?? [];
      for (const pair of outcome.built.argv)
        expect(hasPair(argv, pair), `${pair[0]} ${JSON.stringify(pair[1]).slice(0, 200)}`).toBe(
          true,
        );
      // What the kubelet ran is what the Job said, element for element.
      const played = cluster.player.played.find(
        (p) => p.job === `${name}-amd64` && p.container === "buildctl",
      );
      expect(played?.command).toEqual(["buildctl"]);
      expect(played?.args).toEqual(argv);
      for (const text of outcome.built.absent ?? []) {
        for (const job of jobs)
          for (const container of containersOf(job))
            for (const element of containerStrings(container)) expect(element).not.toContain(text);
      }
    },
  );

  it("ran every container of every Job as an argv of buildctl, cp, assemble or cache-report (a verify Job: the spec's own check), never a shell", async () => {
    await Promise.all(settled.values());
    const jobs = cluster.kube.store.objects("jobs.batch", NS) as unknown as V1Job[];
    expect(jobs.length).toBeGreaterThan(0);
    // A verify Job runs the user's own check in the image the user names: its container must
    // carry exactly the spec's verify.command and args, nothing the operator wrapped around it.
    const verifyArgv = new Map<string, string[]>();
    for (const build of cluster.kube.store.objects("imagebuilds.buildfarm.dev", NS)) {
      const verify = (build as { spec?: { verify?: { command: string[]; args?: string[] } } }).spec
        ?.verify;
      if (verify)
        verifyArgv.set(`${build.metadata.name}-verify`, [
          ...verify.command,
          ...(verify.args ?? []),
        ]);
    }
    let verified = 0;
    for (const job of jobs)
      for (const container of containersOf(job)) {
        const expected = verifyArgv.get(job.metadata?.name ?? "");
        if (expected && container.name === "verify") {
          expect([...(container.command ?? []), ...(container.args ?? [])]).toEqual(expected);
          verified++;
        } else expectArgvOnly(container);
      }
    expect(verified).toBe(verifyArgv.size);
    for (const played of cluster.player.played) {
      if (verifyArgv.has(played.job) && played.container === "verify") continue;
      if (played.command.length > 0) expect(PROGRAMS.has(played.command[0] as string)).toBe(true);
      else expect(SUBCOMMANDS.has(played.args[0] ?? "")).toBe(true);
    }
  });

  it("left the operator running: a normal build afterwards succeeds, and nothing was logged as an error", async () => {
    await Promise.all(settled.values());
    await cluster.createBuild("after-the-corpus", { platforms: ["linux/amd64", "linux/arm64"] });
    const after = await cluster.waitForBuild("after-the-corpus", phaseIs("Succeeded", "Failed"), {
      timeout: 30_000,
    });
    expect(after.status?.phase).toBe("Succeeded");
    // Every accepted build was reconciled to a terminal phase by this same process.
    for (const [name, done] of settled) {
      const build = await done;
      expect(build instanceof Error ? build.message : build.status?.observedGeneration, name).toBe(
        1,
      );
    }
    const errors = cluster.operator.logs.filter((line) => ["error", "fatal"].includes(line.level));
    expect(errors).toEqual([]);
    expect(cluster.player.problems).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------
// 2. Properties of the Job builder over arbitrary specs the schema accepts.

/** Characters that break shells, CSV, flags and eyes; all printable, so the schema may accept them. */
const PRINTABLE_HOSTILE = [
  ..."aZ0-_./:@=,;|&$()`'\"\\<>*?!#%~{}[] ",
  "\u0430", // Cyrillic а
  "\uff1b", // full-width ;
  "\u2215", // division slash
  "\u202e", // right-to-left override
  "\u200b", // zero-width space
  "\ufeff", // byte order mark
  "💥",
  "é",
];
/** Line breaks and control characters: no single-line field may hold them. */
const CONTROL = ["\n", "\r", "\t", "\u0000", "\u001b", "\u0085", "\u007f", "\u2028", "\u2029"];

const hostileText = (maxLength: number) =>
  fc.string({ unit: fc.constantFrom(...PRINTABLE_HOSTILE), maxLength });
const matching = (pattern: RegExp, maxLength: number) =>
  fc.stringMatching(pattern).filter((s) => s.length > 0 && s.length <= maxLength);
/** A marker that cannot occur in the hostile alphabet, to trace a value through the Job. */
const marker = (id: string) => `\u27e6${id}\u27e7`;

const pool = examplePool();
const metadataOf = exampleBuild().metadata;

const gitUrl = fc.oneof(
  fc.constantFrom(
    "https://github.com/docker/welcome-to-docker.git",
    "https://x-oauth@github.com/a/b.git",
    "https://git.example.com:8443/%2e%2e/%0a%3b.git",
    "ssh://git@example.com:2222/org/repo.git",
    "git@github.com:org/repo.git",
    "git://example.com/a=b+c~d.git",
  ),
  matching(/^(ssh|git):\/\/[A-Za-z0-9._~%@:/+=-]+$/, 200),
);

/** Specs with hostile free text (markers first) and pattern-valid everything else. */
const hostileSpec = fc
  .record(
    {
      git: fc.record(
        {
          url: gitUrl,
          revision: matching(GIT_REVISION, 255),
          subPath: matching(RELATIVE_PATH, 255),
          authSecretRef: fc.constant({ name: "git-auth" }),
        },
        { requiredKeys: ["url"] },
      ),
      inline: fc.record(
        {
          dockerfile: hostileText(40).map((text) => `${marker("dockerfile")}FROM scratch ${text}`),
          files: fc.uniqueArray(
            fc.record({ path: matching(RELATIVE_PATH, 64), content: hostileText(40) }),
            { selector: (f) => f.path, maxLength: 3 },
          ),
        },
        { requiredKeys: ["dockerfile"] },
      ),
      useInline: fc.boolean(),
      dockerfile: matching(RELATIVE_PATH, 255),
      target: matching(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 128),
      buildArgs: fc.uniqueArray(
        fc.record({ name: matching(BUILD_ARG_NAME, 128), value: hostileText(60) }),
        { selector: (a) => a.name, maxLength: 4 },
      ),
      labels: fc.uniqueArray(
        fc.record({ name: matching(LABEL_NAME, 128), value: hostileText(60) }),
        { selector: (l) => l.name, maxLength: 4 },
      ),
      platforms: fc.uniqueArray(fc.constantFrom("linux/amd64", "linux/arm64"), {
        minLength: 1,
        maxLength: 2,
      }),
      image: matching(REPOSITORY, 255),
      tags: fc.uniqueArray(matching(TAG, 128), { maxLength: 3 }),
      cache: fc.record(
        {
          disabled: fc.boolean(),
          ref: matching(CACHE_REF, 200),
          importFrom: fc.uniqueArray(matching(CACHE_REF, 200), { maxLength: 2 }),
        },
        { requiredKeys: [] },
      ),
      secrets: fc.uniqueArray(
        fc.record({
          id: matching(SECRET_ID, 128),
          secretRef: fc.record({
            name: fc.constantFrom("npm", "creds.v1"),
            key: fc.constantFrom("value", "npmrc"),
          }),
        }),
        { selector: (s) => s.id, maxLength: 3 },
      ),
      cacheKey: hostileText(60),
    },
    { requiredKeys: ["git", "inline", "useInline", "platforms", "image"] },
  )
  .map(({ git, inline, useInline, image, tags, buildArgs, labels, cacheKey, ...rest }) => {
    // Markers make each free-text value findable: `⟦arg2⟧…` can only come from buildArgs[2].
    const files = (inline.files ?? []).map((f, i) => ({
      ...f,
      content: `${marker(`file${i}`)}${f.content}`,
    }));
    return imageBuildSpec.safeParse({
      poolRef: { name: pool.metadata.name, namespace: pool.metadata.namespace },
      source: useInline ? { inline: { ...inline, files } } : { git },
      output: { image, tags: tags ?? [], pushSecretRef: { name: "push" } },
      ...(buildArgs
        ? {
            buildArgs: buildArgs.map((a, i) => ({ ...a, value: `${marker(`arg${i}`)}${a.value}` })),
          }
        : {}),
      ...(labels
        ? { labels: labels.map((l, i) => ({ ...l, value: `${marker(`label${i}`)}${l.value}` })) }
        : {}),
      ...(cacheKey === undefined ? {} : { cacheKey: `${marker("cacheKey")}${cacheKey}` }),
      ...rest,
    });
  })
  .filter((parsed) => parsed.success)
  .map((parsed) => parsed.data as ImageBuildSpec);

interface Built {
  build: ImageBuild;
  plan: BuildPlan;
  jobs: V1Job[];
  index: V1Job;
  digests: { platform: string; digest: string }[];
  configMapData: Record<string, string>;
}

/** Admits the spec on the example pool (every referenced Secret present) and builds every object. */
function buildAll(spec: ImageBuildSpec): Built | undefined {
  const build: ImageBuild = {
    apiVersion: "buildfarm.dev/v1alpha1",
    kind: "ImageBuild",
    metadata: { ...metadataOf, namespace: pool.metadata.namespace },
    spec,
  };
  const secrets = ["git-auth", "npm", "creds.v1"].map((name) => [
    name,
    { type: "Opaque", keys: ["token", "ssh-privatekey", "value", "npmrc"] },
  ]);
  const admission = admit(build, {
    pool,
    buildNamespaceLabels: {},
    pushSecret: { type: "kubernetes.io/dockerconfigjson", keys: [".dockerconfigjson"] },
    secrets: Object.fromEntries(secrets),
  });
  // Refused at admission (e.g. a token for a host BuildKit cannot name): a condition, no Job.
  if (!admission.admitted) return undefined;
  const { plan } = admission;
  const digests = plan.targets.map((t, i) => ({
    platform: t.platform,
    digest: `sha256:${String(i).repeat(64)}`,
  }));
  return {
    build,
    plan,
    jobs: plan.targets.map((target) => buildJob(build, plan, target)),
    index: indexJob(build, plan, digests, { image: "ghcr.io/buildfarm/operator:v1" }),
    digests,
    configMapData: spec.source.inline ? (inlineContextConfigMap(build, plan).data ?? {}) : {},
  };
}

/** buildctl's flags, global then `build`'s; every one takes a value except --wait. */
const GLOBAL_FLAGS = new Set([
  "--addr",
  "--tlsservername",
  "--tlscacert",
  "--tlscert",
  "--tlskey",
  "--timeout",
]);
const BUILD_FLAGS = new Set([
  "--progress",
  "--frontend",
  "--opt",
  "--local",
  "--secret",
  "--ssh",
  "--output",
  "--export-cache",
  "--import-cache",
  "--metadata-file",
  "--trace",
]);

/** Reads the argv the way Go's flag package does: a flag position must hold a known flag. */
function parseBuildctl(argv: readonly string[]): [string, string][] {
  const pairs: [string, string][] = [];
  let i = 0;
  let flags = GLOBAL_FLAGS;
  while (i < argv.length) {
    const token = argv[i] as string;
    if (token === "--wait" && flags === GLOBAL_FLAGS) {
      i += 1;
    } else if (token === "build" && flags === GLOBAL_FLAGS) {
      flags = BUILD_FLAGS;
      i += 1;
    } else {
      if (!flags.has(token)) throw new Error(`argv[${i}] ${JSON.stringify(token)} is not a flag`);
      if (i + 1 >= argv.length) throw new Error(`${token} has no value`);
      pairs.push([token, argv[i + 1] as string]);
      i += 2;
    }
  }
  if (flags !== BUILD_FLAGS) throw new Error("no build subcommand");
  return pairs;
}

/** Every string leaf of an object, with its path. */
function leaves(value: unknown, at = ""): [string, string][] {
  if (typeof value === "string") return [[at, value]];
  if (Array.isArray(value)) return value.flatMap((item, i) => leaves(item, `${at}[${i}]`));
  if (value && typeof value === "object")
    return Object.entries(value).flatMap(([key, item]) => [
      [`${at}{key}`, key] as [string, string],
      ...leaves(item, `${at}.${key}`),
    ]);
  return [];
}

const CSV_KEYS: Record<string, string[][]> = {
  "--output": [["type", "name", "push-by-digest", "name-canonical", "push", "oci-mediatypes"]],
  "--export-cache": [
    ["type", "ref", "mode", "image-manifest", "oci-mediatypes", "ignore-error"],
    ["type", "ref", "mode", "image-manifest", "oci-mediatypes"],
  ],
  "--import-cache": [["type", "ref"]],
  "--secret": [["id", "src"]],
};

describe("the Job builder over arbitrary specs the schema accepts, hostile text included", () => {
  const RUNS = { numRuns: 300 };

  it("builds every Job without throwing (a throw would be a reconcile error loop, not a condition)", () => {
    let admitted = 0;
    fc.assert(
      fc.property(hostileSpec, (spec) => {
        if (buildAll(spec)) admitted++;
      }),
      RUNS,
    );
    // The property means little if admission turned most specs away.
    expect(admitted).toBeGreaterThan(RUNS.numRuns / 2);
  });

  it("runs buildctl and cp as argv arrays whose flag positions hold only buildctl's own flags", () => {
    fc.assert(
      fc.property(hostileSpec, (spec) => {
        const built = buildAll(spec);
        if (!built) return;
        for (const job of [...built.jobs, built.index])
          for (const container of containersOf(job)) expectArgvOnly(container);
        for (const job of built.jobs) {
          const buildctl = containersOf(job).find((c) => c.name === "buildctl");
          const pairs = parseBuildctl(buildctl?.args ?? []);
          for (const [flag, value] of pairs) {
            const keys = CSV_KEYS[flag];
            if (keys) {
              // One CSV record whose keys are exactly the operator's: no quote, no injected key.
              expect(value).not.toContain('"');
              const fields = value.split(",").map((field) => field.slice(0, field.indexOf("=")));
              expect(keys).toContainEqual(fields);
            }
            if (flag === "--opt") {
              const key = value.slice(0, value.indexOf("="));
              const known =
                ["context", "filename", "platform", "target"].includes(key) ||
                (spec.buildArgs ?? []).some((a) => key === `build-arg:${a.name}`) ||
                (spec.labels ?? []).some((l) => key === `label:${l.name}`);
              expect(known, key).toBe(true);
            }
          }
        }
      }),
      RUNS,
    );
  });

  it("puts each free-text value in exactly one argv element per platform, `build-arg:NAME=value` or `label:NAME=value`, and nowhere else", () => {
    fc.assert(
      fc.property(hostileSpec, (spec) => {
        const built = buildAll(spec);
        if (!built) return;
        const all = leaves({ jobs: built.jobs, index: built.index });
        const traced = [
          ...(spec.buildArgs ?? []).map((a, i) => ({
            id: `arg${i}`,
            element: `build-arg:${a.name}=${a.value}`,
          })),
          ...(spec.labels ?? []).map((l, i) => ({
            id: `label${i}`,
            element: `label:${l.name}=${l.value}`,
          })),
        ];
        for (const { id, element } of traced) {
          const hits = all.filter(([, text]) => text.includes(marker(id)));
          expect(hits.map(([, text]) => text)).toEqual(built.jobs.map(() => element));
          for (const [at] of hits) {
            expect(at).toMatch(
              /^\.jobs\[\d+\]\.spec\.template\.spec\.initContainers\[0\]\.args\[\d+\]$/,
            );
            const args = (built.jobs[Number(/\[(\d+)\]/.exec(at)?.[1])] as V1Job).spec?.template
              .spec?.initContainers?.[0]?.args as string[];
            expect(args[Number(/args\[(\d+)\]$/.exec(at)?.[1]) - 1]).toBe("--opt");
          }
        }
        // The cache key only routes; the inline context only travels in the ConfigMap.
        const elsewhere = [
          "cacheKey",
          "dockerfile",
          ...(spec.source.inline?.files ?? []).map((_, i) => `file${i}`),
        ];
        for (const id of elsewhere)
          expect(all.filter(([, text]) => text.includes(marker(id)))).toEqual([]);
        for (const [i, file] of (spec.source.inline?.files ?? []).entries())
          expect(built.configMapData[`file-${i}`]).toBe(file.content);
      }),
      RUNS,
    );
  });

  it("gives assemble an argv its real parser reads back as the spec's image, tags and digests", () => {
    fc.assert(
      fc.property(hostileSpec, (spec) => {
        const built = buildAll(spec);
        if (!built) return;
        const [assemble] = containersOf(built.index);
        const parsed = parseAssembleArgs((assemble?.args ?? []).slice(1));
        if (parsed.kind !== "ok")
          throw new Error(`assemble refuses its argv: ${JSON.stringify(parsed)}`);
        expect(parsed.flags.image).toBe(spec.output.image);
        expect(parsed.flags.tag).toEqual(spec.output.tags);
        expect(parsed.flags.digest.map((d) => d.digest)).toEqual(
          built.digests.map((d) => d.digest),
        );
      }),
      RUNS,
    );
  });

  it("mounts only normalized absolute paths, inline files inside the context, secrets as single file names", () => {
    fc.assert(
      fc.property(hostileSpec, (spec) => {
        const built = buildAll(spec);
        if (!built) return;
        for (const job of [...built.jobs, built.index]) {
          for (const container of containersOf(job)) {
            for (const mount of container.volumeMounts ?? []) {
              expect(path.posix.isAbsolute(mount.mountPath)).toBe(true);
              expect(path.posix.normalize(mount.mountPath)).toBe(mount.mountPath);
              if (mount.subPath !== undefined) {
                expect(mount.mountPath.startsWith(`${BUILD_PATHS.context}/`)).toBe(true);
                expect(mount.subPath).toMatch(/^(dockerfile|file-\d+)$/);
              }
            }
            // Environment is the operator's own: no spec value becomes a variable.
            for (const env of container.env ?? [])
              expect(Object.values(BUILD_PATHS)).toContain(env.value);
          }
          for (const volume of job.spec?.template.spec?.volumes ?? []) {
            for (const source of volume.projected?.sources ?? [])
              for (const item of source.secret?.items ?? []) {
                expect(item.path).toMatch(/^[^/]+$/);
                expect([".", ".."]).not.toContain(item.path);
              }
          }
        }
      }),
      RUNS,
    );
  });
});

// ---------------------------------------------------------------------------------------
// The CRD schema and the operator's schema judge every hostile string alike, so "refused by
// the API server" covers all that the operator would otherwise report as InvalidSpec.

type Setter = (spec: Json, value: string) => void;
const at =
  (...keys: (string | number)[]): Setter =>
  (spec, value) => {
    let target = spec as Record<string | number, unknown>;
    for (const key of keys.slice(0, -1)) target = target[key] as Record<string | number, unknown>;
    target[keys.at(-1) as string | number] = value;
  };

const STRING_FIELDS: [string, string, Setter][] = [
  ["poolRef.name", "farm", at("poolRef", "name")],
  ["poolRef.namespace", "builds", at("poolRef", "namespace")],
  ["source.git.url", "https://github.com/docker/welcome-to-docker.git", at("source", "git", "url")],
  ["source.git.revision", "main", at("source", "git", "revision")],
  ["source.git.subPath", "app/web", at("source", "git", "subPath")],
  ["dockerfile", "build/Dockerfile", at("dockerfile")],
  ["target", "runtime", at("target")],
  ["buildArgs[0].name", "NODE_ENV", at("buildArgs", 0, "name")],
  ["buildArgs[0].value", "production", at("buildArgs", 0, "value")],
  ["labels[0].name", "org.opencontainers.image.source", at("labels", 0, "name")],
  ["labels[0].value", "x", at("labels", 0, "value")],
  ["platforms[0]", "linux/amd64", at("platforms", 0)],
  ["output.image", "registry.example.com/demo/app", at("output", "image")],
  ["output.tags[0]", "v1.2.3", at("output", "tags", 0)],
  ["output.pushSecretRef.name", "registry-push", at("output", "pushSecretRef", "name")],
  ["cache.ref", "registry.example.com/demo/app:cache", at("cache", "ref")],
  ["cache.importFrom[0]", "registry.example.com/demo/app:main", at("cache", "importFrom", 0)],
  ["secrets[0].id", "npmrc", at("secrets", 0, "id")],
  ["secrets[0].secretRef.name", "npm", at("secrets", 0, "secretRef", "name")],
  ["secrets[0].secretRef.key", "npmrc", at("secrets", 0, "secretRef", "key")],
  ["cacheKey", "team-a", at("cacheKey")],
  ["timeout", "30m", at("timeout")],
  ["verify.image", "registry.example.com/check:v1", at("verify", "image")],
  ["verify.command[0]", "/check", at("verify", "command", 0)],
];

const FIELD_BASE: Json = merge(BASE, {
  source: { git: { subPath: "app/web" } },
  target: "runtime",
  buildArgs: [{ name: "NODE_ENV", value: "production" }],
  labels: [{ name: "org.opencontainers.image.source", value: "x" }],
  output: { tags: ["v1.2.3"] },
  cache: {
    ref: "registry.example.com/demo/app:cache",
    importFrom: ["registry.example.com/demo/app:main"],
  },
  secrets: [{ id: "npmrc", secretRef: { name: "npm", key: "npmrc" } }],
  cacheKey: "team-a",
  timeout: "30m",
  verify: { image: "registry.example.com/check:v1", command: ["/check"] },
}) as Json;

/** A valid value with hostile characters spliced in, or a hostile string of its own. */
const hostileVariant = (valid: string) =>
  fc.oneof(
    fc
      .tuple(
        fc.nat({ max: valid.length }),
        fc.nat({ max: valid.length }),
        fc.string({
          unit: fc.constantFrom(...PRINTABLE_HOSTILE, ...CONTROL),
          minLength: 1,
          maxLength: 4,
        }),
      )
      .map(
        ([from, to, insert]) =>
          valid.slice(0, Math.min(from, to)) + insert + valid.slice(Math.max(from, to)),
      ),
    fc.string({ unit: fc.constantFrom(...PRINTABLE_HOSTILE, ...CONTROL), maxLength: 24 }),
    fc.constantFrom(`-${valid}`, `${valid}-`, `${valid}\n`, `..${valid}`, `${valid}/..`, ""),
  );

describe("the CRD schema and the operator's schema on hostile strings", () => {
  const validator = crdValidator("imagebuilds");
  const object = (spec: Json) => ({
    apiVersion: "buildfarm.dev/v1alpha1",
    kind: "ImageBuild",
    metadata: { name: "b", namespace: NS },
    spec,
  });

  it("accept the base spec", () => {
    expect(validator.admit(object(structuredClone(FIELD_BASE)))).toEqual([]);
    expect(imageBuildSpec.safeParse(FIELD_BASE).success).toBe(true);
  });

  it.each(STRING_FIELDS)("agree on spec.%s", (field, valid, set) => {
    fc.assert(
      fc.property(hostileVariant(valid), (value) => {
        const spec = structuredClone(FIELD_BASE);
        set(spec, value);
        const operator = imageBuildSpec.safeParse(structuredClone(spec));
        const causes = validator.admit(object(spec));
        const apiServer = causes.length === 0;
        expect(
          apiServer,
          `${JSON.stringify(value)}: API server ${apiServer ? "accepts" : `refuses (${JSON.stringify(causes)})`}, operator ${operator.success ? "accepts" : `refuses (${operator.error?.issues.map((i) => i.message)})`}`,
        ).toBe(operator.success);
        // A refusal names this field.
        if (!apiServer)
          expect(causes.map((c) => c.field).join(" ")).toContain(`spec.${field.split("[")[0]}`);
      }),
      { numRuns: 120 },
    );
  });
});
