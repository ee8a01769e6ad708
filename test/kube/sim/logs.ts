// Container logs as the kubelet keeps them: per pod and container, the current run and the
// previous one (`previous=true`), with timestamps per line, tailLines/limitBytes, and followers
// for `follow=true` until the container ends.
import type { Stored } from "../objects.ts";
import type { LogOptions, PodLogSource } from "../server.ts";
import { badRequest } from "../status.ts";

interface Line {
  time: string;
  text: string;
}

class RunLog {
  readonly lines: Line[] = [];
  private partial = "";
  ended = false;
  readonly followers = new Set<{ onText: (text: string) => void; onEnd: () => void }>();

  append(text: string): void {
    if (!text) return;
    for (const follower of this.followers) follower.onText(text);
    const pieces = (this.partial + text).split("\n");
    this.partial = pieces.pop()!;
    const time = new Date().toISOString().replace("Z", "000000Z").slice(0, 30);
    for (const piece of pieces) this.lines.push({ time, text: `${piece}\n` });
  }

  end(): void {
    if (this.partial) {
      this.lines.push({ time: new Date().toISOString(), text: this.partial });
      this.partial = "";
    }
    this.ended = true;
    for (const follower of this.followers) follower.onEnd();
    this.followers.clear();
  }

  all(): Line[] {
    return this.partial
      ? [...this.lines, { time: new Date().toISOString(), text: this.partial }]
      : this.lines;
  }

  text(): string {
    return this.all()
      .map((line) => line.text)
      .join("");
  }
}

export class ContainerLogs implements PodLogSource {
  /** `<pod uid>/<container>` → runs, oldest first. */
  private readonly runs = new Map<string, RunLog[]>();
  /** Why a container has no log yet: `<pod uid>/<container>` → waiting reason. */
  private readonly waiting = new Map<string, string>();

  start(podUid: string, container: string): RunLog {
    const key = `${podUid}/${container}`;
    const run = new RunLog();
    const runs = this.runs.get(key) ?? [];
    runs.push(run);
    if (runs.length > 2) runs.shift();
    this.runs.set(key, runs);
    this.waiting.delete(key);
    return run;
  }

  setWaiting(podUid: string, container: string, reason: string): void {
    this.waiting.set(`${podUid}/${container}`, reason);
  }

  forget(podUid: string): void {
    for (const key of [...this.runs.keys()])
      if (key.startsWith(`${podUid}/`)) this.runs.delete(key);
    for (const key of [...this.waiting.keys()])
      if (key.startsWith(`${podUid}/`)) this.waiting.delete(key);
  }

  /** The whole log of a container's current (or previous) run, for tests. */
  text(podUid: string, container: string, previous = false): string {
    const runs = this.runs.get(`${podUid}/${container}`) ?? [];
    const run = previous ? runs[runs.length - 2] : runs[runs.length - 1];
    return run?.text() ?? "";
  }

  private run(pod: Stored, container: string, previous: boolean): RunLog {
    const key = `${pod.metadata.uid}/${container}`;
    const runs = this.runs.get(key) ?? [];
    const run = previous ? runs[runs.length - 2] : runs[runs.length - 1];
    if (!run) {
      if (previous)
        throw badRequest(
          `previous terminated container "${container}" in pod "${pod.metadata.name}" not found`,
        );
      throw badRequest(
        `container "${container}" in pod "${pod.metadata.name}" is waiting to start: ${this.waiting.get(key) ?? "ContainerCreating"}`,
      );
    }
    return run;
  }

  read(pod: Stored, container: string, options: LogOptions): string {
    let lines = this.run(pod, container, options.previous).all();
    if (options.sinceSeconds !== undefined) {
      const since = Date.now() - options.sinceSeconds * 1000;
      lines = lines.filter((line) => Date.parse(line.time) >= since);
    }
    if (options.tailLines !== undefined)
      lines = options.tailLines > 0 ? lines.slice(-options.tailLines) : [];
    let text = lines
      .map((line) => (options.timestamps ? `${line.time} ${line.text}` : line.text))
      .join("");
    if (options.limitBytes !== undefined)
      text = Buffer.from(text).subarray(0, options.limitBytes).toString("utf8");
    return text;
  }

  follow(
    pod: Stored,
    container: string,
    onText: (text: string) => void,
    onEnd: () => void,
  ): () => void {
    const run = this.run(pod, container, false);
    if (run.ended) {
      onEnd();
      return () => {};
    }
    const follower = { onText, onEnd };
    run.followers.add(follower);
    return () => run.followers.delete(follower);
  }
}

export type { RunLog };
