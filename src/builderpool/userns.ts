// Why a builder crash-loops, when the reason is the node: rootless BuildKit needs unprivileged
// user namespaces, and several node OSes restrict them by default. rootlesskit then fails at its
// first step with a signature of its own (rootlesskit pkg/parent: warnSysctl and
// warnOnChildStartFailure; BuildKit docs/rootless.md), which lands in the builder container's
// termination message (FallbackToLogsOnError: the tail of its log). A pure function of the
// builder pods' statuses: the pool's status says which node, and what to set on it.
import type { V1ContainerStatus, V1Pod } from "@kubernetes/client-node";

export const USER_NAMESPACES_UNAVAILABLE = "UserNamespacesUnavailable";

interface Signature {
  /** Any of these in the termination message. */
  patterns: RegExp[];
  /** The setting to change on the node, as sysctl takes it. */
  setting: string;
  /** Where that setting is the cause, for the message. */
  os: string;
}

// Most specific first: rootlesskit's own warnings name the sysctl; the bare fork/exec error
// says which errno the kernel gave the user-namespace clone.
const SIGNATURES: Signature[] = [
  {
    patterns: [
      /apparmor_restrict_unprivileged_userns is set to 1/,
      /fork\/exec \/proc\/self\/exe: permission denied/,
    ],
    setting: "kernel.apparmor_restrict_unprivileged_userns=0",
    os: "Ubuntu 24.04 and later restrict unprivileged user namespaces through AppArmor",
  },
  {
    patterns: [
      /max_user_namespaces needs to be set to non-zero/,
      /fork\/exec \/proc\/self\/exe: no space left on device/,
    ],
    setting: "user.max_user_namespaces=16384",
    os: "Bottlerocket (EKS) allows no user namespaces by default",
  },
  {
    patterns: [
      /unprivileged_userns_clone needs to be set to 1/,
      /fork\/exec \/proc\/self\/exe: operation not permitted/,
    ],
    setting: "kernel.unprivileged_userns_clone=1",
    os: "Debian 10 and older kernels forbid unprivileged user namespaces unless enabled",
  },
];

export interface UserNamespaceProblem {
  pod: string;
  node: string;
  setting: string;
  /** One line for a condition: which builder, which node, what it logged, what to set. */
  message: string;
}

/** The line of the message that matched, trimmed, for the condition. */
function matchedLine(message: string, pattern: RegExp): string {
  const line = message.split("\n").find((candidate) => pattern.test(candidate)) ?? "";
  return line.trim().slice(0, 300);
}

/** The last termination of a container: its current state if it has ended, else the previous. */
function lastTermination(status: V1ContainerStatus) {
  return status.state?.terminated ?? status.lastState?.terminated;
}

/**
 * The first builder pod (by name) whose container `container` ended unsuccessfully with a
 * user-namespace signature in its termination message, and what to set on its node; undefined
 * when no builder failed that way. A builder that is running and Ready does not count, even
 * if an earlier run failed: the node has been fixed since.
 */
export function userNamespaceProblem(
  pods: readonly V1Pod[],
  container: string,
): UserNamespaceProblem | undefined {
  const sorted = [...pods].sort((a, b) =>
    (a.metadata?.name ?? "").localeCompare(b.metadata?.name ?? ""),
  );
  for (const pod of sorted) {
    const status = pod.status?.containerStatuses?.find((entry) => entry.name === container);
    if (!status || status.ready) continue;
    const ended = lastTermination(status);
    if (!ended || ended.exitCode === 0 || !ended.message) continue;
    for (const signature of SIGNATURES) {
      const pattern = signature.patterns.find((candidate) => candidate.test(ended.message ?? ""));
      if (!pattern) continue;
      const node = pod.spec?.nodeName ?? "(not scheduled)";
      const name = pod.metadata?.name ?? "";
      return {
        pod: name,
        node,
        setting: signature.setting,
        message: `builder ${name} on node ${node} cannot create a user namespace (${matchedLine(ended.message, pattern)}): ${signature.os}; set ${signature.setting} on the node (README "Node prerequisites")`,
      };
    }
  }
  return undefined;
}
