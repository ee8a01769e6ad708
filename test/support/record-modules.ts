// Preloaded with `node --import` by tests that ask which modules a command loads: records the
// URL of every module resolved in the process and, at exit, writes them one per line to the
// file RECORD_MODULES names.
import { writeFileSync } from "node:fs";
import { registerHooks } from "node:module";

const loaded = new Set<string>();
registerHooks({
  resolve(specifier, context, nextResolve) {
    const resolved = nextResolve(specifier, context);
    loaded.add(resolved.url);
    return resolved;
  },
});
process.on("exit", () => {
  const out = process.env.RECORD_MODULES;
  if (out) writeFileSync(out, [...loaded].join("\n"));
});
