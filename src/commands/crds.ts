import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { renderChartCrds, renderCrds } from "../api/crd.ts";

/**
 * `buildfarm crds [--out DIR]... [--chart DIR]...`: the generated CRDs, to stdout, as files in
 * each --out DIR, and as the Helm chart's templates in each --chart DIR.
 */
const USAGE = `usage: buildfarm crds [--out DIR]... [--chart DIR]...

Prints the generated CustomResourceDefinitions, or writes them as files into each --out DIR and
as Helm templates (behind crds.enabled, kept on uninstall with crds.keep) into each --chart DIR.
`;

export async function crdsCommand(argv: string[]): Promise<number> {
  let values: { out?: string[]; chart?: string[]; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        out: { type: "string", multiple: true },
        chart: { type: "string", multiple: true },
        help: { type: "boolean", short: "h" },
      },
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
  if (!values.out?.length && !values.chart?.length) {
    process.stdout.write(crds.map((crd) => crd.yaml).join("---\n"));
    return 0;
  }
  for (const dir of values.out ?? []) {
    await mkdir(dir, { recursive: true });
    for (const crd of crds) await writeFile(join(dir, crd.file), crd.yaml);
  }
  for (const dir of values.chart ?? []) {
    await mkdir(dir, { recursive: true });
    for (const crd of renderChartCrds()) await writeFile(join(dir, crd.file), crd.template);
  }
  return 0;
}
