import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { renderCrds } from "../api/crd.ts";

/** `buildfarm crds [--out DIR]...`: the generated CRDs, to stdout or as files in each DIR. */
export async function crdsCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { out: { type: "string", multiple: true } },
    strict: true,
  });
  const crds = renderCrds();
  if (!values.out?.length) {
    process.stdout.write(crds.map((crd) => crd.yaml).join("---\n"));
    return 0;
  }
  for (const dir of values.out) {
    await mkdir(dir, { recursive: true });
    for (const crd of crds) await writeFile(join(dir, crd.file), crd.yaml);
  }
  return 0;
}
