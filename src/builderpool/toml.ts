// Just enough TOML to write buildkitd.toml: tables, arrays of tables, and string, integer,
// boolean and string-array values, with keys and strings escaped as TOML 1.0 basic strings.

export type TomlValue = string | number | bigint | boolean | readonly string[];

/** A table or array-of-tables header and its key/value lines, written in this order. */
export interface TomlSection {
  /** Dotted path of the table, e.g. ["worker", "oci"] or ["registry", "host:5000"]. */
  path: readonly string[];
  /** An entry of an array of tables ([[path]]) rather than a table ([path]). */
  arrayItem?: boolean;
  comment?: string;
  entries: readonly (readonly [string, TomlValue])[];
}

export function tomlString(text: string): string {
  let out = '"';
  for (const char of text) {
    const code = char.codePointAt(0) as number;
    if (char === '"') out += '\\"';
    else if (char === "\\") out += "\\\\";
    else if (char === "\n") out += "\\n";
    else if (char === "\t") out += "\\t";
    else if (char === "\r") out += "\\r";
    else if (code < 0x20 || code === 0x7f) out += `\\u${code.toString(16).padStart(4, "0")}`;
    else out += char;
  }
  return `${out}"`;
}

/**
 * A bare key when it can be one, else a quoted key. Brackets in a quoted key are written as
 * \u escapes: BuildKit reads its config with go-toml v1, whose lexer ends a table header at
 * the first `]` even inside quotes (`[registry."[::1]:5000"]` fails to parse there), while its
 * key parser does decode the escapes. Any TOML 1.0 reader sees the same key either way.
 */
export function tomlKey(key: string): string {
  if (/^[A-Za-z0-9_-]+$/.test(key)) return key;
  return tomlString(key).replaceAll("[", "\\u005B").replaceAll("]", "\\u005D");
}

export function tomlValue(value: TomlValue): string {
  if (typeof value === "string") return tomlString(value);
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error(`${value} is not a TOML integer`);
    return String(value);
  }
  return `[${value.map(tomlString).join(", ")}]`;
}

function comment(text: string): string {
  return text
    .split("\n")
    .map((line) => `# ${line.replace(/\p{Cc}/gu, " ")}`.trimEnd())
    .join("\n");
}

/** The document: a leading comment, then each section separated by a blank line. */
export function renderToml(header: string, sections: readonly TomlSection[]): string {
  const parts = [comment(header)];
  for (const section of sections) {
    const path = section.path.map(tomlKey).join(".");
    const lines = [];
    if (section.comment) lines.push(comment(section.comment));
    lines.push(section.arrayItem ? `[[${path}]]` : `[${path}]`);
    for (const [key, value] of section.entries) {
      lines.push(`  ${tomlKey(key)} = ${tomlValue(value)}`);
    }
    parts.push(lines.join("\n"));
  }
  return `${parts.join("\n\n")}\n`;
}
