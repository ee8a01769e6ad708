// npm run test:stress: the whole `npm test`, several times in a row, with a CPU hog beside it,
// to show the suite holds on a busy laptop or CI runner. A test that counts events in a time
// window or races a timer fails here first.
//
//   npm run test:stress              three runs beside `stress-ng --cpu <cores>`
//   npm run test:stress -- --runs 5 --hogs 4
import { spawn, spawnSync } from "node:child_process";
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    hogs: { type: "string", default: String(availableParallelism()) },
  },
});
const runs = Number(values.runs);
const hogs = Number(values.hogs);
if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(hogs) || hogs < 0) {
  console.error("test:stress: --runs must be a positive integer and --hogs a whole number");
  process.exit(2);
}
if (hogs > 0 && spawnSync("stress-ng", ["--version"]).error) {
  console.error(
    "test:stress: stress-ng is not installed (Debian/Ubuntu: sudo apt-get install stress-ng)",
  );
  process.exit(1);
}

// The hog runs for as long as the runs do, and is stopped whatever happens to them.
const hog =
  hogs > 0 ? spawn("stress-ng", ["--cpu", String(hogs), "--quiet"], { stdio: "ignore" }) : null;
const stopHog = () => hog?.kill("SIGTERM");
process.on("exit", stopHog);
for (const signal of ["SIGINT", "SIGTERM"] as const)
  process.on(signal, () => {
    stopHog();
    process.exit(130);
  });

const results: { run: number; code: number; seconds: number }[] = [];
for (let run = 1; run <= runs; run++) {
  console.log(`test:stress: run ${run} of ${runs}, beside stress-ng --cpu ${hogs}`);
  const started = performance.now();
  const code = await new Promise<number>((resolve) => {
    // npm is on PATH inside an npm script; the child inherits the terminal.
    const child = spawn("npm", ["test"], { stdio: "inherit" });
    child.on("exit", (exitCode, signal) => resolve(exitCode ?? (signal ? 128 : 1)));
  });
  results.push({ run, code, seconds: Math.round((performance.now() - started) / 1000) });
}
stopHog();

for (const { run, code, seconds } of results)
  console.log(
    `test:stress: run ${run}: ${code === 0 ? "passed" : `FAILED (exit ${code})`} in ${seconds} s`,
  );
const failed = results.filter((result) => result.code !== 0).length;
console.log(`test:stress: ${runs - failed} of ${runs} passed beside stress-ng --cpu ${hogs}`);
process.exit(failed === 0 ? 0 : 1);
