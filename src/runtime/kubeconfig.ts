// Loading the kubeconfig the operator and the CLI run with: --kubeconfig, else KUBECONFIG,
// ~/.kube/config or the pod's service account, with an error that says what to set.
import { KubeConfig } from "@kubernetes/client-node";
import { errorMessage } from "../errors.ts";

export function loadKubeConfig(path: string | undefined): KubeConfig {
  const config = new KubeConfig();
  try {
    if (path) config.loadFromFile(path);
    else config.loadFromDefault();
  } catch (error) {
    throw new Error(`cannot load kubeconfig ${path ?? "(default)"}: ${errorMessage(error)}`);
  }
  if (!config.getCurrentCluster()) {
    throw new Error(
      "no Kubernetes cluster configured: set --kubeconfig, KUBECONFIG, ~/.kube/config, or run in a pod",
    );
  }
  return config;
}
