// `npm run e2e`: the quickstart on kind, asserting what a user relies on. Exits non-zero on
// any failed expectation, and when Docker or kind is missing (saying what is missing).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  log,
  NATIVE_ARCH,
  REGISTRY_PORT,
  readIndex,
  requireTools,
  runQuickstartBuild,
  sh,
} from "./kind.ts";

const tools = requireTools();
const name = runQuickstartBuild(tools, "e2e");

const build = JSON.parse(
  sh(tools.kubectl, ["-n", "builds", "get", "imagebuild", name, "-o", "json"]),
) as {
  metadata: { generation: number };
  status: {
    phase: string;
    digest: string;
    image: string;
    observedGeneration: number;
    platforms: { platform: string; phase: string; digest: string }[];
  };
};
assert.equal(build.status.phase, "Succeeded");
assert.equal(build.status.observedGeneration, build.metadata.generation);
assert.match(build.status.digest, /^sha256:[a-f0-9]{64}$/);
assert.equal(build.status.image, `kind-registry:5000/demo/hello@${build.status.digest}`);
assert.deepEqual(
  build.status.platforms.map((p) => [p.platform, p.phase]),
  [[`linux/${NATIVE_ARCH}`, "Succeeded"]],
);

const index = await readIndex("demo/hello", build.status.digest);
assert.deepEqual(index.platforms, [`linux/${NATIVE_ARCH}`]);
const tagged = await fetch(`http://localhost:${REGISTRY_PORT}/v2/demo/hello/manifests/latest`, {
  method: "HEAD",
  headers: { Accept: index.mediaType },
});
assert.equal(
  tagged.headers.get("docker-content-digest"),
  build.status.digest,
  "tag latest points at the index",
);

// The spec is immutable: the API server refuses a change.
const patch = spawnPatch(name);
assert.notEqual(patch.status, 0, "changing an ImageBuild's spec must be refused");
assert.match(patch.stderr, /spec is immutable/);

log(`e2e passed: ${build.status.image} (${index.platforms.join(", ")})`);

function spawnPatch(buildName: string) {
  const result = spawnSync(
    tools.kubectl,
    [
      "-n",
      "builds",
      "patch",
      "imagebuild",
      buildName,
      "--type=merge",
      "-p",
      '{"spec":{"retries":3}}',
    ],
    { encoding: "utf8" },
  );
  return { status: result.status, stderr: result.stderr };
}
