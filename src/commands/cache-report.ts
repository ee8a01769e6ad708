// `buildfarm cache-report --trace FILE --termination-message-path FILE`: the `cache-report`
// container of a platform pod. It reads buildctl's trace (one JSON SolveStatus per line) as a
// stream and leaves one JSON line, the steps cached and executed and the seconds executing, as
// its termination message (src/imagebuild/cache-report.ts). It always exits 0: a missing,
// truncated or garbled trace gives no report, a line saying why in its log and an `error` in
// the message, never a failed platform, since the image was already pushed.
import { createReadStream } from "node:fs";
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { errorMessage } from "../errors.ts";
import { type CacheReport, cacheReportMessage, TraceReader } from "../imagebuild/cache-report.ts";
import type { Parsed } from "../imagebuild/metadata.ts";

const USAGE = `usage: buildfarm cache-report --trace FILE [--termination-message-path FILE]

Sums up a buildctl --trace file: build steps cached and executed, seconds executing.
Prints one JSON line and writes it to the termination message file; always exits 0.
`;

/** A trace line longer than this is not read whole: no report rather than an unbounded buffer. */
const MAX_LINE = 16 * 1024 * 1024;

/** Reads the trace as a stream, line by line, without holding more than one line. */
export async function readTrace(path: string): Promise<Parsed<CacheReport>> {
  const reader = new TraceReader();
  let pending = "";
  let endsWithNewline = true;
  let empty = true;
  try {
    for await (const chunk of createReadStream(path, { encoding: "utf8" })) {
      const text = pending + (chunk as string);
      empty = false;
      const lines = text.split("\n");
      pending = lines.pop() ?? "";
      if (pending.length > MAX_LINE)
        return { ok: false, error: `a trace line is longer than ${MAX_LINE} bytes` };
      for (const line of lines) reader.add(line);
      endsWithNewline = text.endsWith("\n");
    }
  } catch (error) {
    return { ok: false, error: `cannot read the trace: ${errorMessage(error)}` };
  }
  if (empty) return { ok: false, error: "the trace is empty" };
  if (!endsWithNewline || pending !== "")
    return { ok: false, error: "the trace does not end with a newline (cut mid-line)" };
  return reader.report();
}

export async function cacheReportCommand(argv: string[]): Promise<number> {
  let values: { trace?: string; "termination-message-path"?: string; help?: boolean };
  try {
    values = parseArgs({
      args: argv,
      options: {
        trace: { type: "string" },
        "termination-message-path": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    process.stderr.write(`buildfarm cache-report: ${errorMessage(error)}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!values.trace) {
    process.stderr.write(`buildfarm cache-report: --trace is required\n\n${USAGE}`);
    return 2;
  }
  const report = await readTrace(values.trace);
  if (!report.ok) process.stderr.write(`cache-report: no report: ${report.error}\n`);
  const message = cacheReportMessage(report);
  process.stdout.write(message);
  const path = values["termination-message-path"];
  if (path) {
    try {
      await writeFile(path, message);
    } catch (error) {
      process.stderr.write(`cache-report: cannot write ${path}: ${errorMessage(error)}\n`);
    }
  }
  return 0;
}
