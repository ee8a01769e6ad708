import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { renderCrds } from "../api/crd.ts";

/** `buildfarm crds [--out DIR]...`: the generated CRDs, to stdout or as files in each DIR. */
const USAGE = `usage: buildfarm crds [--out DIR]...

Prints the generated CustomResourceDefinitions, or writes them as files into each DIR.
`;

export async function crdsCommand(argv: string[]): Promise<number> {
  let values: { out?: string[]; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { out: { type: "string", multiple: true }, help: { type: "boolean", short: "h" } },
      strict: true,
    }));
  } catch (error) {
    process.stderr.write(`buildfarm crds: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
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
