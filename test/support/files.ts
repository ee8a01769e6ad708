import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Every YAML document of a file in the repository, as plain objects. */
export function readYamlDocuments(relativePath: string): Record<string, unknown>[] {
  const text = readFileSync(join(REPO_ROOT, relativePath), "utf8");
  return parseAllDocuments(text)
    .map((document) => document.toJS() as Record<string, unknown> | null)
    .filter((document): document is Record<string, unknown> => document !== null);
}

export function readYaml(relativePath: string): Record<string, unknown> {
  const [first] = readYamlDocuments(relativePath);
  if (!first) throw new Error(`${relativePath} holds no YAML document`);
  return first;
}
