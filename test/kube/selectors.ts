// Label selectors (equality- and set-based, k8s.io/apimachinery/pkg/labels) and field
// selectors (k8s.io/apimachinery/pkg/fields) as the API server parses them from a query.
import type { KubeObject, Stored } from "./objects.ts";
import { badRequest } from "./status.ts";

type Operator = "=" | "!=" | "in" | "notin" | "exists" | "!";

export interface Requirement {
  key: string;
  operator: Operator;
  values: string[];
}

export type LabelSelector = Requirement[];

/** Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h`; throws a 400 on syntax errors. */
export function parseLabelSelector(text: string | null | undefined): LabelSelector {
  if (!text?.trim()) return [];
  const parts: string[] = [];
  let depth = 0;
  let current = "";
  for (const char of text) {
    if (char === "(") depth++;
    if (char === ")") depth--;
    if (char === "," && depth === 0) {
      parts.push(current);
      current = "";
    } else current += char;
  }
  parts.push(current);
  return parts.map((part) => parseRequirement(part.trim(), text));
}

const KEY = "[A-Za-z0-9./_-]+";

function parseRequirement(part: string, whole: string): Requirement {
  let match = new RegExp(`^(${KEY})\\s+(in|notin)\\s*\\(([^)]*)\\)$`).exec(part);
  if (match) {
    return {
      key: match[1]!,
      operator: match[2] as "in" | "notin",
      values: match[3]!
        .split(",")
        .map((value) => value.trim())
        .filter((value) => value !== ""),
    };
  }
  match = new RegExp(`^(${KEY})\\s*(==|=|!=)\\s*([A-Za-z0-9._-]*)$`).exec(part);
  if (match) {
    return {
      key: match[1]!,
      operator: match[2] === "!=" ? "!=" : "=",
      values: [match[3]!],
    };
  }
  match = new RegExp(`^!\\s*(${KEY})$`).exec(part);
  if (match) return { key: match[1]!, operator: "!", values: [] };
  match = new RegExp(`^(${KEY})$`).exec(part);
  if (match) return { key: match[1]!, operator: "exists", values: [] };
  throw badRequest(
    `unable to parse requirement: found '${part}', expected: in, notin, =, ==, !=, gt, lt (selector "${whole}")`,
  );
}

export function matchesLabels(
  selector: LabelSelector,
  labels: Readonly<Record<string, string>> | undefined,
): boolean {
  for (const { key, operator, values } of selector) {
    const has = labels !== undefined && Object.hasOwn(labels, key);
    const value = has ? labels[key] : undefined;
    switch (operator) {
      case "=":
        if (value !== values[0]) return false;
        break;
      case "!=":
        if (value === values[0]) return false;
        break;
      case "in":
        if (!has || !values.includes(value!)) return false;
        break;
      case "notin":
        if (has && values.includes(value!)) return false;
        break;
      case "exists":
        if (!has) return false;
        break;
      case "!":
        if (has) return false;
        break;
    }
  }
  return true;
}

/** A metav1.LabelSelector (matchLabels + matchExpressions) as requirements. */
export function fromLabelSelector(selector: {
  matchLabels?: Readonly<Record<string, string>>;
  matchExpressions?: readonly {
    key: string;
    operator: string;
    values?: readonly string[];
  }[];
}): LabelSelector {
  const out: Requirement[] = Object.entries(selector.matchLabels ?? {}).map(([key, value]) => ({
    key,
    operator: "=",
    values: [value],
  }));
  for (const expression of selector.matchExpressions ?? []) {
    const operator = ({ In: "in", NotIn: "notin", Exists: "exists", DoesNotExist: "!" } as const)[
      expression.operator
    ];
    if (!operator) throw new Error(`unknown label selector operator ${expression.operator}`);
    out.push({ key: expression.key, operator, values: [...(expression.values ?? [])] });
  }
  return out;
}

export interface FieldRequirement {
  field: string;
  operator: "=" | "!=";
  value: string;
}

export type FieldSelector = FieldRequirement[];

export function parseFieldSelector(text: string | null | undefined): FieldSelector {
  if (!text?.trim()) return [];
  return text.split(",").map((part) => {
    const match = /^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$/.exec(part);
    if (!match) throw badRequest(`invalid selector: '${text}'; can't understand '${part}'`);
    return {
      field: match[1]!,
      operator: match[2] === "!=" ? "!=" : "=",
      value: match[3]!,
    };
  });
}

/** Reads a dotted field path (`status.phase`, `involvedObject.name`) from an object. */
export function fieldValue(object: Stored, path: string): string {
  let current: unknown = object;
  for (const part of path.split(".")) {
    if (typeof current !== "object" || current === null) return "";
    current = (current as Record<string, unknown>)[part];
  }
  if (current === undefined || current === null) return "";
  return String(current);
}

export function matchesFields(selector: FieldSelector, object: Stored<KubeObject>): boolean {
  for (const { field, operator, value } of selector) {
    const actual = fieldValue(object, field);
    if (operator === "=" ? actual !== value : actual === value) return false;
  }
  return true;
}

/** Fails like the API server when a field is not selectable for the resource. */
export function checkFieldSelector(selector: FieldSelector, supported: readonly string[]): void {
  for (const { field } of selector) {
    if (!supported.includes(field)) throw badRequest(`field label not supported: ${field}`);
  }
}
