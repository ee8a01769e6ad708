// Server-side printing for custom resources, as kube-apiserver does it for `kubectl get`: a
// meta.k8s.io/v1 Table whose columns are Name and the CRD version's additionalPrinterColumns,
// each cell the column's JSONPath evaluated on the object (dates as ages, like "5m"). test/kube
// answers plain JSON only, where kubectl falls back to NAME and AGE; json-proxy.ts turns its
// answers into Tables when kubectl asks for one.

export interface PrinterColumn {
  name: string;
  type: string;
  format?: string;
  description?: string;
  priority?: number;
  jsonPath: string;
}

type Json = Record<string, unknown>;

/**
 * The first value a printer column's JSONPath selects: `.a.b`, `[n]` and the filter
 * `[?(@.key=="value")]` (what CRDs use), or undefined when the path selects nothing.
 */
export function jsonPathValue(object: unknown, path: string): unknown {
  let values: unknown[] = [object];
  const tokens = path.match(/\.[^.[]+|\[\?\(@\.[^=]+==(?:"[^"]*"|'[^']*')\)\]|\[\d+\]/g) ?? [];
  if (tokens.join("") !== path) return undefined; // a JSONPath this evaluator does not know
  for (const token of tokens) {
    const next: unknown[] = [];
    for (const value of values) {
      if (token.startsWith(".")) {
        if (value && typeof value === "object" && !Array.isArray(value))
          next.push((value as Json)[token.slice(1)]);
      } else if (token.startsWith("[?")) {
        const [, key, quoted] = /^\[\?\(@\.([^=]+)==(.*)\)\]$/.exec(token) ?? [];
        const wanted = quoted?.slice(1, -1);
        if (Array.isArray(value))
          next.push(...value.filter((item) => (item as Json)?.[key ?? ""] === wanted));
      } else if (Array.isArray(value)) {
        next.push(value[Number(token.slice(1, -1))]);
      }
    }
    values = next.filter((value) => value !== undefined && value !== null);
  }
  return values[0];
}

/** kubectl's short ages (apimachinery's HumanDuration): 45s, 3m20s, 5h, 2d3h, 400d. */
export function humanDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const m = Math.floor(s / 60);
  const h = Math.floor(s / 3600);
  const d = Math.floor(h / 24);
  if (s < 120) return `${s}s`;
  if (m < 10) return s % 60 === 0 ? `${m}m` : `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  if (h < 8) return m % 60 === 0 ? `${h}h` : `${h}h${m % 60}m`;
  if (h < 48) return `${h}h`;
  if (h < 192) return h % 24 === 0 ? `${d}d` : `${d}d${h % 24}h`;
  if (h < 24 * 365 * 2) return `${d}d`;
  const y = Math.floor(d / 365);
  if (h < 24 * 365 * 8) return d % 365 === 0 ? `${y}y` : `${y}y${d % 365}d`;
  return `${y}y`;
}

function cell(object: Json, column: PrinterColumn, now: number): unknown {
  const value = jsonPathValue(object, column.jsonPath);
  if (value === undefined) return null; // kubectl prints <none>
  if (column.type === "date" && typeof value === "string") {
    const at = Date.parse(value);
    return Number.isNaN(at) ? value : humanDuration((now - at) / 1000);
  }
  if (typeof value === "object") return JSON.stringify(value);
  return value;
}

const NAME_COLUMN = {
  name: "Name",
  type: "string",
  format: "name",
  description: "Name must be unique within a namespace.",
  priority: 0,
};

/** A Table of these objects; `includeObject` as the request's (None, Metadata by default, Object). */
export function toTable(
  objects: Json[],
  columns: PrinterColumn[],
  options: { includeObject?: string; metadata?: Json; now?: number } = {},
): Json {
  const now = options.now ?? Date.now();
  const include = options.includeObject ?? "Metadata";
  return {
    kind: "Table",
    apiVersion: "meta.k8s.io/v1",
    metadata: options.metadata ?? {},
    columnDefinitions: [
      NAME_COLUMN,
      ...columns.map((c) => ({
        name: c.name,
        type: c.type,
        format: c.format ?? "",
        description: c.description ?? "",
        priority: c.priority ?? 0,
      })),
    ],
    rows: objects.map((object) => ({
      cells: [
        (object.metadata as Json | undefined)?.name ?? "",
        ...columns.map((c) => cell(object, c, now)),
      ],
      ...(include === "None"
        ? {}
        : {
            object:
              include === "Object"
                ? object
                : {
                    kind: "PartialObjectMetadata",
                    apiVersion: "meta.k8s.io/v1",
                    metadata: object.metadata ?? {},
                  },
          }),
    })),
  };
}

/** A response body (an object or a list) as a Table. */
export function bodyToTable(body: Json, columns: PrinterColumn[], includeObject?: string): Json {
  if (Array.isArray(body.items)) {
    const { resourceVersion, continue: next } = (body.metadata ?? {}) as Json;
    return toTable(body.items as Json[], columns, {
      ...(includeObject ? { includeObject } : {}),
      metadata: {
        ...(resourceVersion ? { resourceVersion } : {}),
        ...(next ? { continue: next } : {}),
      },
    });
  }
  const resourceVersion = (body.metadata as Json | undefined)?.resourceVersion;
  return toTable([body], columns, {
    ...(includeObject ? { includeObject } : {}),
    metadata: resourceVersion ? { resourceVersion } : {},
  });
}

/** A custom resource's collection or object path: `/apis/<group>/<version>/[namespaces/<ns>/]<plural>[/<name>]`. */
export function customResourcePath(
  path: string,
): { group: string; version: string; plural: string } | undefined {
  const match =
    /^\/apis\/([^/]+\.[^/]+)\/([^/]+)\/(?:namespaces\/[^/]+\/)?([^/]+)(?:\/[^/]+)?$/.exec(path);
  if (!match) return undefined;
  const [, group, version, plural] = match as unknown as [string, string, string, string];
  // A namespaced path's plural can be "namespaces" only for a collection of namespaces: not ours.
  if (group.endsWith(".k8s.io") || plural === "namespaces") return undefined;
  return { group, version, plural };
}
