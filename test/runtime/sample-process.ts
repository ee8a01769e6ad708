// The sample controller as its own process, so a test can kill it with SIGKILL: no graceful
// shutdown, no Lease release, exactly what a crashed pod leaves behind. Reconcile records go
// to stdout as JSON lines; "ready" once the caches synced.
import { KubeConfig } from "@kubernetes/client-node";
import { sampleManager } from "./sample.ts";

const [server, instance, lease] = process.argv.slice(2);
if (!server || !instance || !lease)
  throw new Error("usage: sample-process.ts <server> <instance> <lease-json>");
const kubeConfig = new KubeConfig();
kubeConfig.loadFromOptions({
  clusters: [{ name: "test", server, skipTLSVerify: true }],
  users: [],
  contexts: [{ name: "test", cluster: "test", user: "" }],
  currentContext: "test",
});
const manager = sampleManager({
  kubeConfig,
  instance,
  leaderElection: JSON.parse(lease),
  record: (record) => process.stdout.write(`${JSON.stringify(record)}\n`),
});
await manager.start();
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
const outcome = await manager.done;
process.stdout.write(`${JSON.stringify({ outcome })}\n`);
