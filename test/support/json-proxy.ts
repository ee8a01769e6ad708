// A loopback proxy in front of test/kube for Go clients (the real helm and kubectl of
// tools.ts). client-go's typed clients send some bodies as Kubernetes protobuf (helm's release
// Secrets, `kubectl create namespace`, `kubectl create secret`) and accept JSON back; test/kube
// reads JSON only. The proxy decodes exactly the protobuf messages those commands send
// (Secret, Namespace, ConfigMap with their ObjectMeta) into the JSON the API server would have
// decoded, and passes everything else through untouched. A protobuf body of any other kind, or
// with a field this decoder does not know, is refused with 415 naming it, so nothing is
// silently dropped.
//
// It also answers /openapi/v3 with the one fact `kubectl apply` looks up there before it sends
// a custom resource: that the server validates fields itself (the PATCH operations take
// `fieldValidation`, as kube-apiserver publishes since 1.27; kubectl checks Namespace's for
// CRDs). Without it kubectl falls back to client-side validation with /openapi/v2, which
// test/kube does not serve, and refuses to apply.
//
// And it prints custom resources on the server's side as kube-apiserver does: when kubectl asks
// for a Table (`get`, `get -w`), the JSON test/kube answers (an object, a list, or each watch
// event) becomes a Table of the CRD's printer columns (tables.ts), so `kubectl get ib` shows
// PHASE, IMAGE, DIGEST rather than only NAME and AGE. Built-in kinds pass through untouched.
import {
  createServer,
  type IncomingMessage,
  request,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import { bodyToTable, customResourcePath, type PrinterColumn } from "./tables.ts";

const MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]); // "k8s\0"

type Field = { number: number; wire: number; value: bigint | Buffer };

function varint(buffer: Buffer, at: number): [bigint, number] {
  let result = 0n;
  let shift = 0n;
  for (let i = at; i < buffer.length; i++) {
    const byte = buffer[i] as number;
    result |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [result, i + 1];
    shift += 7n;
  }
  throw new Error("truncated varint");
}

function fields(buffer: Buffer): Field[] {
  const out: Field[] = [];
  let at = 0;
  while (at < buffer.length) {
    const [key, next] = varint(buffer, at);
    at = next;
    const number = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (wire === 0) {
      const [value, after] = varint(buffer, at);
      out.push({ number, wire, value });
      at = after;
    } else if (wire === 2) {
      const [length, after] = varint(buffer, at);
      const end = after + Number(length);
      out.push({ number, wire, value: buffer.subarray(after, end) });
      at = end;
    } else {
      throw new Error(`wire type ${wire} (field ${number}) is not used by these messages`);
    }
  }
  return out;
}

const text = (field: Field) => (field.value as Buffer).toString("utf8");

function unknownField(message: string, field: Field): never {
  throw new Error(`${message} field ${field.number} is not decoded by test/support/json-proxy.ts`);
}

function mapEntry(buffer: Buffer, asBytes: boolean): [string, string] {
  let key = "";
  let value = "";
  for (const field of fields(buffer)) {
    if (field.number === 1) key = text(field);
    else if (field.number === 2)
      value = asBytes ? (field.value as Buffer).toString("base64") : text(field);
  }
  return [key, value];
}

/** A metav1.Time; undefined for the zero time, which gogo-protobuf writes for an unset one. */
function time(buffer: Buffer): string | undefined {
  let seconds = 0n;
  for (const field of fields(buffer)) if (field.number === 1) seconds = field.value as bigint;
  return seconds === 0n
    ? undefined
    : new Date(Number(seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function objectMeta(buffer: Buffer): Record<string, unknown> {
  // Kubernetes' protobuf writes every non-pointer field, empty or not: "" and 0 mean unset.
  const meta: Record<string, unknown> = {};
  const set = (key: string, value: unknown) => {
    if (value !== "" && value !== 0 && value !== undefined) meta[key] = value;
  };
  const map = (key: string, field: Field) => {
    const [k, v] = mapEntry(field.value as Buffer, false);
    meta[key] = { ...(meta[key] as Record<string, string> | undefined), [k]: v };
  };
  for (const field of fields(buffer)) {
    switch (field.number) {
      case 1:
        set("name", text(field));
        break;
      case 2:
        set("generateName", text(field));
        break;
      case 3:
        set("namespace", text(field));
        break;
      case 5:
        set("uid", text(field));
        break;
      case 6:
        set("resourceVersion", text(field));
        break;
      case 7:
        set("generation", Number(field.value as bigint));
        break;
      case 8:
        set("creationTimestamp", time(field.value as Buffer));
        break;
      case 4: // selfLink: never set by a client
        break;
      case 11:
        map("labels", field);
        break;
      case 12:
        map("annotations", field);
        break;
      case 14:
        meta.finalizers = [...((meta.finalizers as string[] | undefined) ?? []), text(field)];
        break;
      default:
        unknownField("ObjectMeta", field);
    }
  }
  return meta;
}

/** The object inside a protobuf body, as the JSON the API server would have decoded. */
export function decodeKubeProtobuf(body: Buffer): Record<string, unknown> {
  if (!body.subarray(0, 4).equals(MAGIC)) throw new Error("not a Kubernetes protobuf body");
  let apiVersion = "";
  let kind = "";
  let raw: Buffer = Buffer.alloc(0);
  for (const field of fields(body.subarray(4))) {
    if (field.number === 1) {
      for (const meta of fields(field.value as Buffer)) {
        if (meta.number === 1) apiVersion = text(meta);
        if (meta.number === 2) kind = text(meta);
      }
    } else if (field.number === 2) raw = field.value as Buffer;
  }
  const object: Record<string, unknown> = { apiVersion, kind };
  const add = (key: string, entry: [string, string]) => {
    object[key] = { ...(object[key] as Record<string, string> | undefined), [entry[0]]: entry[1] };
  };
  const set = (key: string, value: string) => {
    if (value !== "") object[key] = value;
  };
  const decoders: Record<string, (field: Field) => void> = {
    Secret: (field) => {
      if (field.number === 1) object.metadata = objectMeta(field.value as Buffer);
      else if (field.number === 2) add("data", mapEntry(field.value as Buffer, true));
      else if (field.number === 3) set("type", text(field));
      else if (field.number === 4) add("stringData", mapEntry(field.value as Buffer, false));
      else if (field.number === 5) object.immutable = field.value === 1n;
      else unknownField("Secret", field);
    },
    ConfigMap: (field) => {
      if (field.number === 1) object.metadata = objectMeta(field.value as Buffer);
      else if (field.number === 2) add("data", mapEntry(field.value as Buffer, false));
      else if (field.number === 3) add("binaryData", mapEntry(field.value as Buffer, true));
      else if (field.number === 4) object.immutable = field.value === 1n;
      else unknownField("ConfigMap", field);
    },
    Namespace: (field) => {
      if (field.number === 1) object.metadata = objectMeta(field.value as Buffer);
      // spec (finalizers) and status are the server's to set on create.
      else if (field.number !== 2 && field.number !== 3) unknownField("Namespace", field);
    },
    DeleteOptions: (field) => {
      if (field.number === 1) object.gracePeriodSeconds = Number(field.value as bigint);
      else if (field.number === 4) set("propagationPolicy", text(field));
      else unknownField("DeleteOptions", field);
    },
  };
  const decode = decoders[kind];
  if (!decode)
    throw new Error(
      `a protobuf ${apiVersion} ${kind} is not decoded by test/support/json-proxy.ts`,
    );
  for (const field of fields(raw)) decode(field);
  return object;
}

const OPENAPI_ROOT = { paths: { "api/v1": { serverRelativeURL: "/openapi/v3/api/v1?hash=1" } } };
const OPENAPI_CORE = {
  openapi: "3.0.0",
  info: { title: "Kubernetes", version: "v1" },
  paths: {
    "/api/v1/namespaces/{name}": {
      patch: {
        "x-kubernetes-group-version-kind": { group: "", version: "v1", kind: "Namespace" },
        parameters: [{ name: "fieldValidation", in: "query", schema: { type: "string" } }],
        responses: {},
      },
    },
  },
};

/** The printer columns of a custom resource's version, read from its CRD; undefined for none. */
async function printerColumns(
  upstream: string,
  resource: { group: string; version: string; plural: string },
): Promise<PrinterColumn[] | undefined> {
  try {
    const response = await fetch(
      new URL(
        `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${resource.plural}.${resource.group}`,
        upstream,
      ),
    );
    if (!response.ok) return undefined;
    const crd = (await response.json()) as {
      spec?: { versions?: { name: string; additionalPrinterColumns?: PrinterColumn[] }[] };
    };
    const columns = crd.spec?.versions?.find(
      (v) => v.name === resource.version,
    )?.additionalPrinterColumns;
    return columns?.length ? columns : undefined;
  } catch {
    return undefined;
  }
}

/** Writes the answer as a Table: the whole body, or each line of a watch as its event's Table. */
function tableAnswer(
  response: IncomingMessage,
  res: ServerResponse,
  columns: PrinterColumn[],
  options: { watch: boolean; includeObject?: string },
): void {
  const convert = (body: Record<string, unknown>) =>
    bodyToTable(body, columns, options.includeObject);
  let pending = "";
  response.setEncoding("utf8");
  response.on("data", (text: string) => {
    if (!options.watch) {
      pending += text;
      return;
    }
    pending += text;
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    for (const line of lines) {
      if (!line.trim()) continue;
      const event = JSON.parse(line) as { type: string; object: Record<string, unknown> };
      // BOOKMARK and ERROR carry no row: passed on as they are.
      const object =
        event.type === "ADDED" || event.type === "MODIFIED" || event.type === "DELETED"
          ? convert(event.object)
          : event.object;
      res.write(`${JSON.stringify({ type: event.type, object })}\n`);
    }
  });
  response.on("end", () => {
    if (!options.watch) res.end(JSON.stringify(convert(JSON.parse(pending))));
    else res.end();
  });
  response.on("error", () => res.destroy());
  res.on("close", () => response.destroy());
}

export interface JsonProxy {
  url: string;
  /** The protobuf requests it translated: `POST /api/v1/namespaces/x/secrets Secret`. */
  translated: string[];
  stop(): Promise<void>;
}

/** Starts the proxy in front of `upstream` (test/kube's url) on 127.0.0.1. */
export async function startJsonProxy(upstream: string): Promise<JsonProxy> {
  const target = new URL(upstream);
  const translated: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = req.url?.split("?")[0];
    if (req.method === "GET" && (path === "/openapi/v3" || path === "/openapi/v3/api/v1")) {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify(path === "/openapi/v3" ? OPENAPI_ROOT : OPENAPI_CORE));
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", async () => {
      let body = Buffer.concat(chunks);
      const headers = { ...req.headers };
      const resource =
        req.method === "GET" && String(headers.accept ?? "").includes("as=Table")
          ? customResourcePath(path ?? "")
          : undefined;
      const columns = resource ? await printerColumns(upstream, resource) : undefined;
      if (columns) headers.accept = "application/json";
      if (String(headers["content-type"] ?? "").includes("application/vnd.kubernetes.protobuf")) {
        try {
          const object = decodeKubeProtobuf(body);
          body = Buffer.from(JSON.stringify(object));
          headers["content-type"] = "application/json";
          translated.push(`${req.method} ${req.url?.split("?")[0]} ${object.kind}`);
        } catch (error) {
          const message = (error as Error).message;
          res.writeHead(415, { "Content-Type": "application/json" });
          res.end(
            JSON.stringify({
              kind: "Status",
              apiVersion: "v1",
              status: "Failure",
              reason: "UnsupportedMediaType",
              code: 415,
              message,
            }),
          );
          return;
        }
      }
      headers["content-length"] = String(body.length);
      const upstreamRequest = request(
        {
          host: target.hostname,
          port: target.port,
          method: req.method,
          path: req.url,
          headers,
        },
        (response) => {
          if (!columns || response.statusCode !== 200) {
            res.writeHead(response.statusCode ?? 502, response.headers);
            response.pipe(res);
            return;
          }
          const query = new URL(req.url ?? "/", "http://proxy").searchParams;
          const includeObject = query.get("includeObject") ?? undefined;
          const { "content-length": _, ...answer } = response.headers;
          res.writeHead(200, { ...answer, "content-type": "application/json" });
          // A watch is established once its headers arrive, before any event, as from the API server.
          res.flushHeaders();
          tableAnswer(response, res, columns, {
            watch: query.get("watch") === "true" || query.get("watch") === "1",
            ...(includeObject ? { includeObject } : {}),
          });
        },
      );
      upstreamRequest.on("error", () => res.destroy());
      upstreamRequest.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    translated,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
