// Small real images, pushed through the Distribution API: a gzip'd tar layer holding one
// file, an image config whose diff_ids match it, and a Docker v2 or OCI manifest; and
// BuildKit-style attestation indexes (the image plus an attestation manifest whose layer is
// an in-toto statement about it).
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import type { RunningRegistry } from "../support/registry.ts";

export interface Blob {
  mediaType: string;
  bytes: Uint8Array;
  digest: string;
  size: number;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  "os.version"?: string;
}

export interface ImageFixture {
  platform: Platform;
  format: "oci" | "docker";
  config: Blob;
  layers: Blob[];
  manifest: Blob;
}

export interface AttestationIndexFixture {
  image: ImageFixture;
  attestation: { config: Blob; layers: Blob[]; manifest: Blob };
  index: Blob;
}

const TYPES = {
  oci: {
    manifest: "application/vnd.oci.image.manifest.v1+json",
    config: "application/vnd.oci.image.config.v1+json",
    layer: "application/vnd.oci.image.layer.v1.tar+gzip",
    index: "application/vnd.oci.image.index.v1+json",
  },
  docker: {
    manifest: "application/vnd.docker.distribution.manifest.v2+json",
    config: "application/vnd.docker.container.image.v1+json",
    layer: "application/vnd.docker.image.rootfs.diff.tar.gzip",
    index: "application/vnd.docker.distribution.manifest.list.v2+json",
  },
} as const;

const sha256 = (bytes: Uint8Array) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

export function blob(mediaType: string, content: Uint8Array | string | object): Blob {
  const bytes =
    content instanceof Uint8Array
      ? content
      : new TextEncoder().encode(typeof content === "string" ? content : JSON.stringify(content));
  return { mediaType, bytes, digest: sha256(bytes), size: bytes.byteLength };
}

export function descriptor(b: Blob, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { mediaType: b.mediaType, digest: b.digest, size: b.size, ...extra };
}

/** A one-file ustar archive. */
export function tar(name: string, content: string): Uint8Array {
  const data = Buffer.from(content, "utf8");
  const header = Buffer.alloc(512);
  const put = (offset: number, length: number, value: string) =>
    header.write(value, offset, length, "ascii");
  put(0, 100, name);
  put(100, 8, "0000644\0");
  put(108, 8, "0000000\0");
  put(116, 8, "0000000\0");
  put(124, 12, `${data.length.toString(8).padStart(11, "0")}\0`);
  put(136, 12, "00000000000\0");
  put(148, 8, "        ");
  put(156, 1, "0");
  put(257, 6, "ustar\0");
  put(263, 2, "00");
  let sum = 0;
  for (const byte of header) sum += byte;
  put(148, 8, `${sum.toString(8).padStart(6, "0")}\0 `);
  const padding = Buffer.alloc((512 - (data.length % 512)) % 512);
  return Buffer.concat([header, data, padding, Buffer.alloc(1024)]);
}

export interface ImageOptions {
  platform: Platform;
  format: "oci" | "docker";
  /** Makes images of the same platform differ. */
  content?: string;
  /** Leave os/architecture out of the config (an artifact, or a broken image). */
  configPlatform?: Platform | null;
}

export function makeImage(options: ImageOptions): ImageFixture {
  const types = TYPES[options.format];
  const archive = tar(
    "hello.txt",
    `hello from ${platformText(options.platform)} ${options.content ?? ""}\n`,
  );
  const layer = blob(types.layer, gzipSync(archive, { level: 9 }));
  const configPlatform =
    options.configPlatform === undefined ? options.platform : options.configPlatform;
  const config = blob(types.config, {
    ...(configPlatform ?? {}),
    created: "2025-01-01T00:00:00Z",
    config: { Cmd: ["/bin/cat", "/hello.txt"] },
    rootfs: { type: "layers", diff_ids: [sha256(archive)] },
    history: [{ created: "2025-01-01T00:00:00Z", created_by: "COPY hello.txt /" }],
  });
  const manifest = blob(types.manifest, {
    schemaVersion: 2,
    mediaType: types.manifest,
    config: descriptor(config),
    layers: [descriptor(layer)],
  });
  return { platform: options.platform, format: options.format, config, layers: [layer], manifest };
}

/** An index like BuildKit's with attestations on: the image and its provenance manifest. */
export function makeAttestationIndex(
  image: ImageFixture,
  options: { subject?: string; attestationPlatform?: Platform; sbom?: boolean } = {},
): AttestationIndexFixture {
  // With attest:sbom, BuildKit's attestation manifest carries the scanner's SPDX document as
  // one more in-toto layer beside the provenance (docs/attestations/attestation-storage.md).
  const sbom = blob("application/vnd.in-toto+json", {
    _type: "https://in-toto.io/Statement/v0.1",
    predicateType: "https://spdx.dev/Document",
    subject: [{ name: "pkg:docker/fixture", digest: { sha256: image.manifest.digest.slice(7) } }],
    predicate: { spdxVersion: "SPDX-2.3", name: "sbom", packages: [{ name: "busybox" }] },
  });
  const statement = blob("application/vnd.in-toto+json", {
    _type: "https://in-toto.io/Statement/v0.1",
    predicateType: "https://slsa.dev/provenance/v0.2",
    subject: [{ name: "pkg:docker/fixture", digest: { sha256: image.manifest.digest.slice(7) } }],
    predicate: {
      builder: { id: "https://github.com/moby/buildkit" },
      buildType: "https://mobyproject.org/buildkit@v1",
    },
  });
  const config = blob(TYPES.oci.config, {
    architecture: "unknown",
    os: "unknown",
    config: {},
    rootfs: {
      type: "layers",
      diff_ids: [...(options.sbom ? [sbom.digest] : []), statement.digest],
    },
  });
  const manifest = blob(TYPES.oci.manifest, {
    schemaVersion: 2,
    mediaType: TYPES.oci.manifest,
    config: descriptor(config),
    layers: [
      ...(options.sbom
        ? [
            descriptor(sbom, {
              annotations: { "in-toto.io/predicate-type": "https://spdx.dev/Document" },
            }),
          ]
        : []),
      descriptor(statement, {
        annotations: { "in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2" },
      }),
    ],
  });
  const index = blob(TYPES.oci.index, {
    schemaVersion: 2,
    mediaType: TYPES.oci.index,
    manifests: [
      descriptor(image.manifest, { platform: image.platform }),
      descriptor(manifest, {
        platform: options.attestationPlatform ?? { architecture: "unknown", os: "unknown" },
        annotations: {
          "vnd.docker.reference.digest": options.subject ?? image.manifest.digest,
          "vnd.docker.reference.type": "attestation-manifest",
        },
      }),
    ],
  });
  const layers = options.sbom ? [sbom, statement] : [statement];
  return { image, attestation: { config, layers, manifest }, index };
}

function platformText(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join("/");
}

async function expectStatus(
  response: Response | Awaited<ReturnType<RunningRegistry["fetch"]>>,
  ok: number[],
  what: string,
) {
  if (!ok.includes(response.status)) {
    throw new Error(`${what}: ${response.status} ${await response.text()}`);
  }
  await response.body?.cancel();
}

export async function pushBlob(
  registry: RunningRegistry,
  repository: string,
  b: Blob,
): Promise<void> {
  const head = await registry.fetch(`/v2/${repository}/blobs/${b.digest}`, { method: "HEAD" });
  await head.body?.cancel();
  if (head.status === 200) return;
  const start = await registry.fetch(`/v2/${repository}/blobs/uploads/`, { method: "POST" });
  const location = start.headers.get("location");
  await expectStatus(start, [202], `starting the upload of ${b.digest}`);
  if (!location) throw new Error("the registry gave no upload location");
  const url = new URL(location, registry.url);
  url.searchParams.set("digest", b.digest);
  const put = await registry.fetch(url.toString(), {
    method: "PUT",
    headers: { "content-type": "application/octet-stream" },
    body: b.bytes,
  });
  await expectStatus(put, [201], `uploading ${b.digest}`);
}

export async function pushManifest(
  registry: RunningRegistry,
  repository: string,
  reference: string,
  manifest: Blob,
): Promise<void> {
  const put = await registry.fetch(`/v2/${repository}/manifests/${reference}`, {
    method: "PUT",
    headers: { "content-type": manifest.mediaType },
    body: manifest.bytes,
  });
  await expectStatus(put, [201], `pushing manifest ${reference}`);
}

/** Pushes an image by digest (as BuildKit does with push-by-digest) and returns the digest. */
export async function pushImage(
  registry: RunningRegistry,
  repository: string,
  image: ImageFixture,
): Promise<string> {
  for (const b of [image.config, ...image.layers]) await pushBlob(registry, repository, b);
  await pushManifest(registry, repository, image.manifest.digest, image.manifest);
  return image.manifest.digest;
}

/** Pushes the image, the attestation manifest and the index, and returns the index digest. */
export async function pushAttestationIndex(
  registry: RunningRegistry,
  repository: string,
  fixture: AttestationIndexFixture,
): Promise<string> {
  await pushImage(registry, repository, fixture.image);
  for (const b of [fixture.attestation.config, ...fixture.attestation.layers])
    await pushBlob(registry, repository, b);
  await pushManifest(
    registry,
    repository,
    fixture.attestation.manifest.digest,
    fixture.attestation.manifest,
  );
  await pushManifest(registry, repository, fixture.index.digest, fixture.index);
  return fixture.index.digest;
}
