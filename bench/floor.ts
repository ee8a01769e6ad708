// The floor of the burst benchmark: the same writes the operator made for each build (its client
// Secret, its two platform Jobs, its status), issued by a plain client-node loop with as many
// workers as the operator has, in a process of its own. It watches ImageBuilds and handles
// each one as it appears: nothing is read, parsed, queued or decided, no certificate issued.
//
//   node bench/floor.ts <kubeconfig> <namespace> <templates.json> <workers>
//
// templates.json: { "<build>": { secret, jobs: [..], status } } as the operator wrote them,
// with the owner uid to put back as "$OWNER_UID". Prints one JSON line when every build is done.
import { readFileSync } from "node:fs";
import {
  BatchV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  type V1Job,
  type V1Secret,
  Watch,
} from "@kubernetes/client-node";

interface Template {
  secret: V1Secret;
  jobs: V1Job[];
  status: unknown;
}

const argv = process.argv.slice(2);
if (argv.length !== 4) {
  process.stderr.write(
    "usage: node bench/floor.ts <kubeconfig> <namespace> <templates.json> <workers>\n",
  );
  process.exit(2);
}
const [kubeconfig, namespace, file, workerArg] = argv as [string, string, string, string];
const templates = JSON.parse(readFileSync(file, "utf8")) as Record<string, Template>;
const config = new KubeConfig();
config.loadFromFile(kubeconfig);
const core = config.makeApiClient(CoreV1Api);
const batch = config.makeApiClient(BatchV1Api);
const custom = config.makeApiClient(CustomObjectsApi);

const withOwner = <T>(object: T, uid: string): T =>
  JSON.parse(JSON.stringify(object).replaceAll("$OWNER_UID", uid)) as T;

const pending: { name: string; object: Record<string, unknown> }[] = [];
const waiting: ((item: { name: string; object: Record<string, unknown> }) => void)[] = [];
let remaining = Object.keys(templates).length;
let writes = 0;

async function handle(name: string, object: Record<string, unknown>): Promise<void> {
  const template = templates[name];
  if (!template) return;
  const uid = (object.metadata as { uid: string }).uid;
  await core.createNamespacedSecret({ namespace, body: withOwner(template.secret, uid) });
  writes++;
  for (const job of template.jobs) {
    await batch.createNamespacedJob({ namespace, body: withOwner(job, uid) });
    writes++;
  }
  await custom.replaceNamespacedCustomObjectStatus({
    group: "buildfarm.dev",
    version: "v1alpha1",
    namespace,
    plural: "imagebuilds",
    name,
    body: { ...object, status: template.status },
  });
  writes++;
}

const started = performance.now();
let done!: () => void;
const finished = new Promise<void>((resolve) => {
  done = resolve;
});
async function worker(): Promise<void> {
  for (;;) {
    if (remaining <= 0) return;
    const item =
      pending.shift() ??
      (await new Promise<{ name: string; object: Record<string, unknown> }>((resolve) =>
        waiting.push(resolve),
      ));
    if (!item.name) return;
    await handle(item.name, item.object);
    if (--remaining === 0) {
      done();
      for (const resolve of waiting.splice(0)) resolve({ name: "", object: {} });
    }
  }
}

const watch = new Watch(config);
const controller = await watch.watch(
  `/apis/buildfarm.dev/v1alpha1/namespaces/${namespace}/imagebuilds`,
  {},
  (type: string, object: Record<string, unknown>) => {
    if (type !== "ADDED") return;
    const name = (object.metadata as { name: string }).name;
    const item = { name, object };
    const resolve = waiting.shift();
    if (resolve) resolve(item);
    else pending.push(item);
  },
  () => undefined,
);
const cpuAtReady = process.cpuUsage();
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
const workers = Array.from({ length: Number(workerArg) }, () => worker());
await finished;
await Promise.all(workers);
controller.abort();
process.stdout.write(
  `${JSON.stringify({ writes, ms: performance.now() - started, cpu: process.cpuUsage(cpuAtReady) })}\n`,
);
process.exit(0);
