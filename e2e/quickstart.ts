// `npm run quickstart`: a kind cluster with a local registry, the operator built and installed
// with Helm, a pool and a build applied, and the resulting image index printed.
import {
  buildAndInstall,
  ensureCluster,
  log,
  quickstartManifests,
  readIndex,
  requireTools,
  seedBaseImage,
  sh,
} from "./kind.ts";

const tools = requireTools();
ensureCluster(tools);
seedBaseImage();
buildAndInstall(tools);
const name = `hello-${Date.now().toString(36)}`;
sh(tools.kubectl, ["apply", "-f", "-"], { input: quickstartManifests(name) });
log("waiting for the builders and the build (first run pulls the BuildKit image)");
sh(tools.kubectl, [
  "-n",
  "builds",
  "wait",
  "--for=condition=Ready",
  "builderpool/kind",
  "--timeout=10m",
]);
sh(tools.kubectl, [
  "-n",
  "builds",
  "wait",
  "--for=condition=Succeeded",
  `imagebuild/${name}`,
  "--timeout=15m",
]);
const digest = sh(tools.kubectl, [
  "-n",
  "builds",
  "get",
  "imagebuild",
  name,
  "-o",
  "jsonpath={.status.digest}",
]).trim();
const index = await readIndex("demo/hello", digest);
process.stdout.write(
  `\nImage: kind-registry:5000/demo/hello@${digest}\n${JSON.stringify(index, null, 2)}\n`,
);
process.stdout.write(`\nNext: kubectl -n builds get imagebuilds,builderpools\n`);
