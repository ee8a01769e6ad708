// Reading what the builds left in the registry: files inside pushed images (layer tars, top
// layer first), the repository's tags, and every blob in the registry's storage for scans.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import type { RunningRegistry } from "../support/registry.ts";

const MANIFEST_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
].join(", ");

export interface Manifest {
  mediaType?: string;
  manifests?: {
    digest: string;
    mediaType: string;
    platform?: { os: string; architecture: string };
  }[];
  layers?: { digest: string; mediaType: string }[];
}

export async function getManifest(
  registry: RunningRegistry,
  repository: string,
  reference: string,
): Promise<Manifest> {
  const response = await registry.fetch(`/v2/${repository}/manifests/${reference}`, {
    headers: { accept: MANIFEST_TYPES },
  });
  if (response.status !== 200)
    throw new Error(
      `manifest ${repository}:${reference}: ${response.status} ${await response.text()}`,
    );
  return (await response.json()) as Manifest;
}

export async function getBlob(
  registry: RunningRegistry,
  repository: string,
  digest: string,
): Promise<Buffer> {
  const response = await registry.fetch(`/v2/${repository}/blobs/${digest}`);
  if (response.status !== 200) throw new Error(`blob ${digest}: ${response.status}`);
  return Buffer.from(await response.arrayBuffer());
}

/** The regular files of a tar archive, by path without a leading "./" or "/". */
export function tarFiles(archive: Buffer): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const text = (start: number, length: number) =>
    archive.toString("utf8", start, start + length).replace(/\0.*$/s, "");
  for (let offset = 0; offset + 512 <= archive.length; ) {
    const name = text(offset, 100);
    if (!name) break;
    const prefix =
      archive.toString("utf8", offset + 257, offset + 262) === "ustar"
        ? text(offset + 345, 155)
        : "";
    const size = Number.parseInt(text(offset + 124, 12).trim() || "0", 8);
    const type = text(offset + 156, 1) || "0";
    const path = (prefix ? `${prefix}/${name}` : name).replace(/^\.?\//, "");
    if (type === "0") files.set(path, archive.subarray(offset + 512, offset + 512 + size));
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

const isGzip = (bytes: Buffer) => bytes[0] === 0x1f && bytes[1] === 0x8b;
const gunzipIfGzip = (bytes: Buffer): Buffer => (isGzip(bytes) ? gunzipSync(bytes) : bytes);

/** A file of an image (a manifest digest), as its top-most layer has it. */
export async function imageFile(
  registry: RunningRegistry,
  repository: string,
  manifestDigest: string,
  path: string,
): Promise<string | undefined> {
  const manifest = await getManifest(registry, repository, manifestDigest);
  for (const layer of [...(manifest.layers ?? [])].reverse()) {
    const archive = gunzipIfGzip(await getBlob(registry, repository, layer.digest));
    const file = tarFiles(archive).get(path.replace(/^\//, ""));
    if (file) return file.toString("utf8");
  }
  return undefined;
}

/** The repository's tags via the Distribution API ([] while it has none). */
export async function tagList(registry: RunningRegistry, repository: string): Promise<string[]> {
  const response = await registry.fetch(`/v2/${repository}/tags/list`);
  if (response.status === 404) {
    await response.body?.cancel();
    return [];
  }
  const body = (await response.json()) as { tags?: string[] | null };
  return [...(body.tags ?? [])].sort();
}

export interface StoredBlob {
  digest: string;
  /** The blob as stored, and gunzipped when it is gzip (layers). */
  contents: Buffer[];
}

/** Every blob in the registry's storage, whichever manifest (image, index, cache) holds it. */
export async function everyBlob(registry: RunningRegistry): Promise<StoredBlob[]> {
  const root = join(registry.storageDir, "docker", "registry", "v2", "blobs", "sha256");
  const blobs: StoredBlob[] = [];
  for (const prefix of await readdir(root).catch(() => [])) {
    for (const hex of await readdir(join(root, prefix))) {
      const bytes = await readFile(join(root, prefix, hex, "data"));
      const contents: Buffer[] = [bytes];
      if (isGzip(bytes)) contents.push(gunzipSync(bytes));
      blobs.push({ digest: `sha256:${hex}`, contents });
    }
  }
  return blobs;
}
