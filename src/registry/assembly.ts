// The multi-arch index as a pure function of what was fetched: per-platform images (or
// BuildKit's attestation indexes) in, one OCI image index or Docker manifest list out.
// Every problem is collected, so one run reports all of them, and nothing is pushed when
// there is any.

import {
  formatPlatform,
  isUnknownPlatform,
  type Platform,
  platformKey,
  samePlatform,
} from "../api/platform.ts";
import { sha256Digest } from "./digest.ts";
import type { Descriptor, ImageConfig, ImageIndex, ImageManifest } from "./manifest.ts";
import {
  isDockerMediaType,
  isImageConfigMediaType,
  MEDIA_TYPES,
  REFERENCE_ANNOTATIONS,
} from "./media-types.ts";

/** A manifest as fetched, with the descriptor that pointed at it. */
export type ManifestNode =
  | { kind: "image"; descriptor: Descriptor; manifest: ImageManifest; config?: ImageConfig }
  | { kind: "index"; descriptor: Descriptor; index: ImageIndex; children: ManifestNode[] }
  /** Anything else an index may point at (an artifact, a schema 1 manifest...). */
  | { kind: "other"; descriptor: Descriptor };

/** One `--digest platform=digest`: the platform claimed and what the digest named. */
export interface AssemblyInput {
  platform: Platform;
  digest: string;
  node: ManifestNode;
}

export type IndexFormat = "oci" | "docker";

export interface AssemblyOptions {
  format: IndexFormat;
  annotations?: Record<string, string>;
}

export interface AssembledIndex {
  mediaType: string;
  document: Record<string, unknown>;
  /** The exact bytes to push; `digest` is their sha256. */
  bytes: Uint8Array;
  digest: string;
  /** The runnable platforms, in index order; attestations are not among them. */
  platforms: string[];
  /** The attestation manifests, each with the platform of the image it describes. */
  attestations: IndexAttestation[];
}

/** One attestation manifest of the index, as `assemble` reports it. */
export interface IndexAttestation {
  platform: string;
  digest: string;
  /** Its layers' in-toto.io/predicate-type annotations (SLSA provenance, SPDX...). */
  predicateTypes: string[];
}

const PREDICATE_TYPE = "in-toto.io/predicate-type";

/** What an attestation manifest attests, from its layers' annotations. */
function predicateTypes(node: ManifestNode & { kind: "image" }): string[] {
  const types = node.manifest.layers.flatMap((layer) => {
    const type = layer.annotations?.[PREDICATE_TYPE];
    return type ? [type] : [];
  });
  return [...new Set(types)];
}

export class AssemblyError extends Error {
  override name = "AssemblyError";
  readonly problems: string[];

  constructor(problems: string[]) {
    super(problems.join("; "));
    this.problems = problems;
  }
}

export function isAttestation(descriptor: Descriptor): boolean {
  return (
    descriptor.annotations?.[REFERENCE_ANNOTATIONS.type] ===
    REFERENCE_ANNOTATIONS.attestationManifest
  );
}

/** The platform an image config declares, when it declares os and architecture. */
export function platformOfConfig(config: ImageConfig | undefined): Platform | undefined {
  if (!config?.os || !config.architecture) return undefined;
  const platform: Platform = { architecture: config.architecture, os: config.os };
  if (config["os.version"]) platform["os.version"] = config["os.version"];
  if (config["os.features"]?.length) platform["os.features"] = config["os.features"];
  if (config.variant) platform.variant = config.variant;
  return platform;
}

interface Picked {
  descriptor: Descriptor;
  platform: Platform;
  label: string;
}

export function assembleIndex(
  inputs: readonly AssemblyInput[],
  options: AssemblyOptions,
): AssembledIndex {
  const problems: string[] = [];
  const images: Picked[] = [];
  const attestations: Descriptor[] = [];
  const reported: IndexAttestation[] = [];

  if (inputs.length === 0) problems.push("no --digest given: nothing to assemble");

  for (const input of inputs) {
    const claimed = formatPlatform(input.platform);
    const label = `${claimed}=${input.digest}`;
    const mismatch = (actual: Platform, what: string) =>
      `${label}: ${what} is ${formatPlatform(actual)}, not ${claimed}`;
    const node = input.node;

    if (node.kind === "other") {
      problems.push(`${label}: ${node.descriptor.mediaType} is not an image manifest or index`);
      continue;
    }

    if (node.kind === "image") {
      const platform = imagePlatform(node, label, problems, "the image");
      if (!platform) continue;
      if (!samePlatform(platform, input.platform)) {
        problems.push(mismatch(platform, "the image"));
        continue;
      }
      images.push({ descriptor: descriptorOf(node.descriptor, platform), platform, label });
      continue;
    }

    // An index, as BuildKit pushes one when it adds attestations: one runnable image and
    // the attestation manifests that describe it.
    const runnable: { node: ManifestNode & { kind: "image" }; platform: Platform }[] = [];
    const attached: (ManifestNode & { kind: "image" })[] = [];
    for (const child of node.children) {
      const where = `its manifest ${child.descriptor.digest}`;
      if (child.kind === "index") {
        problems.push(`${label}: ${where} is itself an index; nested indexes are not flattened`);
      } else if (child.kind === "other") {
        problems.push(
          `${label}: ${where} has media type ${child.descriptor.mediaType}, not an image manifest`,
        );
      } else if (isAttestation(child.descriptor)) {
        attached.push(child);
      } else {
        const platform = imagePlatform(child, label, problems, where);
        if (platform) runnable.push({ node: child, platform });
      }
    }
    if (runnable.length === 0) {
      problems.push(`${label}: the index holds no runnable image`);
      continue;
    }
    if (runnable.length > 1) {
      const found = runnable.map((r) => formatPlatform(r.platform)).join(", ");
      problems.push(
        `${label}: the index holds ${runnable.length} images (${found}); pass each platform's own manifest`,
      );
      continue;
    }
    const [only] = runnable as [(typeof runnable)[number]];
    if (!samePlatform(only.platform, input.platform)) {
      problems.push(mismatch(only.platform, "the image in the index"));
      continue;
    }
    images.push({
      descriptor: descriptorOf(only.node.descriptor, only.platform),
      platform: only.platform,
      label,
    });
    for (const node of attached) {
      const attestation = node.descriptor;
      const subject = attestation.annotations?.[REFERENCE_ANNOTATIONS.digest];
      if (subject !== only.node.descriptor.digest) {
        problems.push(
          `${label}: attestation manifest ${attestation.digest} refers to ${subject ?? "nothing"}, not to the image ${only.node.descriptor.digest}`,
        );
        continue;
      }
      attestations.push(attestationDescriptorOf(attestation));
      reported.push({
        platform: formatPlatform(only.platform),
        digest: attestation.digest,
        predicateTypes: predicateTypes(node),
      });
    }
  }

  problems.push(
    ...duplicatePlatforms(images),
    ...duplicateDigests([...images.map((i) => i.descriptor), ...attestations]),
  );

  const annotations = options.annotations ?? {};
  if (options.format === "docker") {
    for (const descriptor of [...images.map((i) => i.descriptor), ...attestations]) {
      if (!isDockerMediaType(descriptor.mediaType)) {
        problems.push(
          `--format docker needs Docker v2 images only, but ${descriptor.digest} is ${descriptor.mediaType}${isAttestation(descriptor) ? " (an attestation manifest)" : ""}; use --format oci`,
        );
      }
    }
    if (Object.keys(annotations).length > 0) {
      problems.push(
        "--format docker: a Docker manifest list cannot carry --annotation; use --format oci",
      );
    }
  }

  if (problems.length > 0) throw new AssemblyError(problems);

  const mediaType =
    options.format === "docker" ? MEDIA_TYPES.dockerManifestList : MEDIA_TYPES.ociIndex;
  const manifests = [...images.map((i) => i.descriptor), ...attestations].map((descriptor) =>
    options.format === "docker" ? withoutAnnotations(descriptor) : descriptor,
  );
  const document: Record<string, unknown> = { schemaVersion: 2, mediaType, manifests };
  if (Object.keys(annotations).length > 0) document.annotations = sortedRecord(annotations);
  const bytes = new TextEncoder().encode(JSON.stringify(document));
  return {
    mediaType,
    document,
    bytes,
    digest: sha256Digest(bytes),
    platforms: images.map((i) => formatPlatform(i.platform)),
    attestations: reported,
  };
}

/** An image's platform from its descriptor, else its config; records why when there is none. */
function imagePlatform(
  node: ManifestNode & { kind: "image" },
  label: string,
  problems: string[],
  what: string,
): Platform | undefined {
  const configType = node.manifest.config.mediaType;
  if (!isImageConfigMediaType(configType)) {
    problems.push(`${label}: ${what} is not a container image (its config is ${configType})`);
    return undefined;
  }
  const platform = node.descriptor.platform ?? platformOfConfig(node.config);
  if (!platform) {
    problems.push(
      `${label}: ${what} has no platform: neither its descriptor nor its config names os and architecture`,
    );
    return undefined;
  }
  if (isUnknownPlatform(platform)) {
    problems.push(
      `${label}: ${what} is ${formatPlatform(platform)} (an attestation or artifact), not a runnable image`,
    );
    return undefined;
  }
  return platform;
}

/** The index entry of an image: media type, digest, size, platform, and its own annotations. */
function descriptorOf(source: Descriptor, platform: Platform): Descriptor {
  const descriptor: Descriptor = {
    mediaType: source.mediaType,
    digest: source.digest,
    size: source.size,
    platform: orderedPlatform(platform),
  };
  if (source.annotations && Object.keys(source.annotations).length > 0) {
    descriptor.annotations = sortedRecord(source.annotations);
  }
  return descriptor;
}

/** An attestation entry as BuildKit wrote it, platform unknown/unknown if it had none. */
function attestationDescriptorOf(source: Descriptor): Descriptor {
  return {
    mediaType: source.mediaType,
    digest: source.digest,
    size: source.size,
    platform: source.platform
      ? orderedPlatform(source.platform)
      : { architecture: "unknown", os: "unknown" },
    annotations: sortedRecord(source.annotations ?? {}),
  };
}

function orderedPlatform(platform: Platform): Platform {
  const out: Platform = { architecture: platform.architecture, os: platform.os };
  if (platform["os.version"]) out["os.version"] = platform["os.version"];
  if (platform["os.features"]?.length) out["os.features"] = [...platform["os.features"]];
  if (platform.variant) out.variant = platform.variant;
  return out;
}

function withoutAnnotations(descriptor: Descriptor): Descriptor {
  const { annotations: _dropped, ...rest } = descriptor;
  return rest;
}

function sortedRecord(record: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );
}

function duplicatePlatforms(images: Picked[]): string[] {
  const seen = new Map<string, Picked>();
  const problems: string[] = [];
  for (const image of images) {
    const first = seen.get(platformKey(image.platform));
    if (first) {
      problems.push(
        `${formatPlatform(image.platform)} appears twice (${first.label} and ${image.label}); an index holds one image per platform`,
      );
    } else {
      seen.set(platformKey(image.platform), image);
    }
  }
  return problems;
}

function duplicateDigests(descriptors: Descriptor[]): string[] {
  const seen = new Set<string>();
  const problems: string[] = [];
  for (const descriptor of descriptors) {
    if (seen.has(descriptor.digest))
      problems.push(`${descriptor.digest} would appear twice in the index`);
    seen.add(descriptor.digest);
  }
  return problems;
}
