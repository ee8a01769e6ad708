// `npm run quickstart`: a kind cluster with a local registry, the operator built and installed
// with Helm, a pool and a build applied, and the resulting image index printed.
import { readIndex, requireTools, runQuickstartBuild, sh } from "./kind.ts";

const tools = requireTools();
const name = runQuickstartBuild(tools, "hello");
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
