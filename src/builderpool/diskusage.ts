// buildkitd's DiskUsage, asked over its mTLS gRPC control API, as `buildctl du` asks it: one
// unary call, /moby.buildkit.v1.Control/DiskUsage with an empty request, over HTTP/2 (node:http2;
// gRPC's framing is a 5-byte prefix per message and the status in the trailers). The response
// is decoded by hand: only UsageRecord's ID (1), InUse (3) and Size (4) are read, from
// api/services/control/control.proto of BuildKit v0.24, whose field numbers are stable.
// `buildctl du` sums its summary the same way (cmd/buildctl/diskusage.go printSummary): every
// record's size, and as reclaimable those not in use.
import { connect as http2Connect } from "node:http2";
import { connect as tlsConnect } from "node:tls";

export interface UsageRecord {
  id: string;
  inUse: boolean;
  size: number;
}

export interface CacheUsage {
  /** Bytes the builder's cache records hold. */
  used: number;
  /** Of those, bytes no running build uses: what a prune could free. */
  reclaimable: number;
  records: number;
}

export class DiskUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DiskUsageError";
  }
}

/** A protobuf varint at `offset`: [value, next offset]. Sizes fit a double (< 2^53). */
function varint(bytes: Uint8Array, offset: number): [number, number] {
  let value = 0;
  let scale = 1;
  for (let at = offset; at < bytes.length && at < offset + 10; at++) {
    const byte = bytes[at] as number;
    value += (byte & 0x7f) * scale;
    scale *= 128;
    if ((byte & 0x80) === 0) return [value, at + 1];
  }
  throw new DiskUsageError("a protobuf varint runs past the message");
}

type Field = { number: number; varint: number } | { number: number; bytes: Uint8Array };

/** The fields of one protobuf message, in order (fixed-width ones skipped). */
function fields(bytes: Uint8Array): Field[] {
  const out: Field[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const [key, next] = varint(bytes, offset);
    offset = next;
    const number = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) {
      const [value, after] = varint(bytes, offset);
      out.push({ number, varint: value });
      offset = after;
    } else if (wire === 2) {
      const [length, after] = varint(bytes, offset);
      if (after + length > bytes.length)
        throw new DiskUsageError("a protobuf field runs past the message");
      out.push({ number, bytes: bytes.subarray(after, after + length) });
      offset = after + length;
    } else if (wire === 1) offset += 8;
    else if (wire === 5) offset += 4;
    else throw new DiskUsageError(`unexpected protobuf wire type ${wire}`);
  }
  return out;
}

/** DiskUsageResponse { repeated UsageRecord record = 1; } → the records. */
export function decodeDiskUsage(message: Uint8Array): UsageRecord[] {
  return fields(message)
    .filter((field): field is { number: number; bytes: Uint8Array } => field.number === 1)
    .map((field) => {
      const record: UsageRecord = { id: "", inUse: false, size: 0 };
      for (const part of fields(field.bytes)) {
        if (part.number === 1 && "bytes" in part)
          record.id = Buffer.from(part.bytes).toString("utf8");
        if (part.number === 3 && "varint" in part) record.inUse = part.varint !== 0;
        if (part.number === 4 && "varint" in part) record.size = part.varint;
      }
      return record;
    });
}

/** buildctl du's summary: Total and Reclaimable, counting records with a size. */
export function cacheUsage(records: readonly UsageRecord[]): CacheUsage {
  let used = 0;
  let reclaimable = 0;
  for (const record of records) {
    if (record.size <= 0) continue;
    used += record.size;
    if (!record.inUse) reclaimable += record.size;
  }
  return { used, reclaimable, records: records.length };
}

/** The one message of a unary gRPC response body: 1 byte compressed flag, 4 bytes length. */
export function grpcMessage(body: Uint8Array): Uint8Array {
  if (body.length < 5) throw new DiskUsageError("the gRPC response has no message");
  if (body[0] !== 0) throw new DiskUsageError("the gRPC response is compressed");
  const length = Buffer.from(body).readUInt32BE(1);
  if (body.length < 5 + length) throw new DiskUsageError("the gRPC response is cut");
  return body.subarray(5, 5 + length);
}

export interface BuilderTarget {
  /** Where to connect: the builder pod's IP (or, in tests, what stands for it). */
  host: string;
  port: number;
  /** The name the builder's server certificate must carry (its architecture's Service). */
  serverName: string;
  /** PEM: the pool's CA, and the operator's client certificate and key issued by it. */
  ca: string;
  cert: string;
  key: string;
}

/** Asks one buildkitd for its disk usage; rejects with why within `timeoutMs`. */
export async function diskUsage(target: BuilderTarget, timeoutMs = 10_000): Promise<CacheUsage> {
  const signal = AbortSignal.timeout(timeoutMs);
  const session = http2Connect(`https://${target.serverName}:${target.port}`, {
    createConnection: () =>
      tlsConnect({
        host: target.host,
        port: target.port,
        servername: target.serverName,
        ca: target.ca,
        cert: target.cert,
        key: target.key,
        ALPNProtocols: ["h2"],
      }),
  });
  try {
    return await new Promise<CacheUsage>((resolve, reject) => {
      const fail = (error: unknown) =>
        reject(
          error instanceof DiskUsageError
            ? error
            : new DiskUsageError(
                `DiskUsage of ${target.serverName} at ${target.host}: ${error instanceof Error ? error.message : String(error)}`,
              ),
        );
      signal.addEventListener("abort", () => fail(new Error(`no answer in ${timeoutMs} ms`)));
      session.on("error", fail);
      const request = session.request({
        ":method": "POST",
        ":path": "/moby.buildkit.v1.Control/DiskUsage",
        "content-type": "application/grpc",
        te: "trailers",
      });
      const chunks: Buffer[] = [];
      let status: string | undefined;
      let message = "";
      request.on("response", (headers) => {
        if (headers["grpc-status"] !== undefined) status = String(headers["grpc-status"]);
        if (headers[":status"] !== 200) fail(new Error(`HTTP ${headers[":status"]}`));
      });
      request.on("trailers", (trailers) => {
        status = String(trailers["grpc-status"] ?? status ?? "");
        message = decodeURIComponent(String(trailers["grpc-message"] ?? ""));
      });
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("error", fail);
      request.on("end", () => {
        if (status !== "0") {
          fail(new Error(`gRPC status ${status ?? "missing"}${message ? `: ${message}` : ""}`));
          return;
        }
        try {
          resolve(cacheUsage(decodeDiskUsage(grpcMessage(Buffer.concat(chunks)))));
        } catch (error) {
          fail(error);
        }
      });
      // DiskUsageRequest with no filter: an empty message.
      request.end(Buffer.from([0, 0, 0, 0, 0]));
    });
  } finally {
    session.destroy();
  }
}
