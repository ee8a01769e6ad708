// Every request test/kube answered, described the way RBAC sees it (verb, API group,
// resource, subresource, namespace, name), so a test can compare what the operator did with
// what its ClusterRole allows, and count calls by verb and resource.

export type Verb =
  | "get"
  | "list"
  | "watch"
  | "create"
  | "update"
  | "patch"
  | "delete"
  | "deletecollection";

export interface RequestRecord {
  /** Milliseconds since the epoch when the request arrived. */
  time: number;
  method: string;
  path: string;
  query: string;
  /** The RBAC verb; for non-resource URLs the lower-case HTTP method. */
  verb: Verb | string;
  apiGroup: string;
  apiVersion: string;
  resource?: string;
  subresource?: string;
  namespace?: string;
  name?: string;
  /** Set for /api, /apis, /version and other non-resource URLs. */
  nonResourceURL?: string;
  code: number;
  /** Time to the response headers (for a watch: to the start of the stream). */
  durationMs: number;
  userAgent?: string;
  /** What fault injection did to this request, if anything. */
  fault?: string;
}

export interface RecordFilter {
  verb?: string | string[];
  apiGroup?: string;
  resource?: string;
  subresource?: string | null;
  namespace?: string;
  name?: string;
  code?: number;
}

export function matchesRecord(record: RequestRecord, filter: RecordFilter): boolean {
  if (filter.verb !== undefined) {
    const verbs = Array.isArray(filter.verb) ? filter.verb : [filter.verb];
    if (!verbs.includes(record.verb)) return false;
  }
  if (filter.apiGroup !== undefined && record.apiGroup !== filter.apiGroup) return false;
  if (filter.resource !== undefined) {
    const [resource, group] = splitResource(filter.resource);
    if (record.resource !== resource) return false;
    if (group !== undefined && record.apiGroup !== group) return false;
  }
  if (filter.subresource !== undefined && (record.subresource ?? null) !== filter.subresource)
    return false;
  if (filter.namespace !== undefined && record.namespace !== filter.namespace) return false;
  if (filter.name !== undefined && record.name !== filter.name) return false;
  if (filter.code !== undefined && record.code !== filter.code) return false;
  return true;
}

/** `jobs.batch` → [jobs, batch]; `pods` → [pods, undefined]; `pods/log` keeps the slash. */
function splitResource(text: string): [string, string | undefined] {
  const dot = text.indexOf(".");
  return dot < 0 ? [text, undefined] : [text.slice(0, dot), text.slice(dot + 1)];
}

export interface RbacUse {
  apiGroup: string;
  /** `pods` or `pods/log`, as a Role's `resources` lists them. */
  resource: string;
  verb: string;
  count: number;
}

export class RequestLog {
  private records: RequestRecord[] = [];
  private readonly maxEntries: number;
  private dropped = 0;

  constructor(maxEntries = 200_000) {
    this.maxEntries = maxEntries;
  }

  add(record: RequestRecord): void {
    this.records.push(record);
    if (this.records.length > this.maxEntries) {
      const excess = this.records.length - this.maxEntries;
      this.records.splice(0, excess);
      this.dropped += excess;
    }
  }

  /** A copy of the records, optionally filtered. */
  entries(filter: RecordFilter = {}): RequestRecord[] {
    return this.records.filter((record) => matchesRecord(record, filter));
  }

  count(filter: RecordFilter = {}): number {
    let n = 0;
    for (const record of this.records) if (matchesRecord(record, filter)) n++;
    return n;
  }

  /** Counts keyed `<verb> <resource>[.<group>][/<subresource>]`, e.g. `list jobs.batch`. */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const record of this.records) {
      const what = record.resource
        ? `${record.resource}${record.apiGroup ? `.${record.apiGroup}` : ""}${record.subresource ? `/${record.subresource}` : ""}`
        : (record.nonResourceURL ?? record.path);
      const key = `${record.verb} ${what}`;
      out[key] = (out[key] ?? 0) + 1;
    }
    return out;
  }

  /** Distinct (apiGroup, resource[/subresource], verb) uses: what a ClusterRole must allow. */
  rbac(): RbacUse[] {
    const uses = new Map<string, RbacUse>();
    for (const record of this.records) {
      if (!record.resource) continue;
      const resource = record.subresource
        ? `${record.resource}/${record.subresource}`
        : record.resource;
      const key = `${record.apiGroup}|${resource}|${record.verb}`;
      const use = uses.get(key);
      if (use) use.count++;
      else uses.set(key, { apiGroup: record.apiGroup, resource, verb: record.verb, count: 1 });
    }
    const order = (use: RbacUse) => [use.apiGroup, use.resource, use.verb].join("\u0000");
    return [...uses.values()].sort((a, b) =>
      order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0,
    );
  }

  /** A mark to pass to `since`. */
  mark(): number {
    return this.dropped + this.records.length;
  }

  /** Records added after `mark()`. */
  since(mark: number, filter: RecordFilter = {}): RequestRecord[] {
    const start = Math.max(0, mark - this.dropped);
    return this.records.slice(start).filter((record) => matchesRecord(record, filter));
  }

  reset(): void {
    this.dropped += this.records.length;
    this.records = [];
  }

  get size(): number {
    return this.records.length;
  }
}
