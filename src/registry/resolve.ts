// Fetches what each `--digest` names, down to what assembleIndex needs: the manifest, the
// image config when the platform must be read from it, and for an index each child manifest.
// Every fetch is by digest and checked, so a child that is not in the repository, or whose
// size or media type differs from its descriptor, is an error here, before anything is pushed.

import { formatPlatform, type Platform } from "../api/platform.ts";
import type { AssemblyInput, ManifestNode } from "./assembly.ts";
import { isAttestation } from "./assembly.ts";
import type { Manifest, RegistryClient } from "./client.ts";
import { isRegistryWide, RegistryError } from "./errors.ts";
import {
  type Descriptor,
  firstIssue,
  imageConfigSchema,
  imageIndexSchema,
  imageManifestSchema,
} from "./manifest.ts";
import {
  isImageConfigMediaType,
  isImageManifestMediaType,
  isIndexMediaType,
} from "./media-types.ts";
import type { Repository } from "./reference.ts";

export interface DigestClaim {
  platform: Platform;
  digest: string;
}

export async function resolveInput(
  client: RegistryClient,
  repo: Repository,
  claim: DigestClaim,
): Promise<AssemblyInput> {
  const label = `${formatPlatform(claim.platform)}=${claim.digest}`;
  try {
    const manifest = await fetchManifest(client, repo, claim.digest, `the manifest`);
    const descriptor: Descriptor = {
      mediaType: manifest.mediaType,
      digest: manifest.digest,
      size: manifest.size,
    };
    return { ...claim, node: await toNode(client, repo, descriptor, manifest, true) };
  } catch (error) {
    if (error instanceof RegistryError && !isRegistryWide(error.kind)) {
      throw new RegistryError(error.kind, `${label}: ${error.message}`, error.status);
    }
    throw error;
  }
}

async function fetchManifest(
  client: RegistryClient,
  repo: Repository,
  digest: string,
  what: string,
): Promise<Manifest> {
  try {
    return await client.getManifest(repo, digest);
  } catch (error) {
    if (error instanceof RegistryError && error.kind === "not-found") {
      throw new RegistryError(
        "not-found",
        `${what} ${digest} is not in ${repo.name}; every platform must have been pushed by digest to this repository`,
        404,
      );
    }
    throw error;
  }
}

async function toNode(
  client: RegistryClient,
  repo: Repository,
  descriptor: Descriptor,
  manifest: Manifest,
  topLevel: boolean,
): Promise<ManifestNode> {
  if (isIndexMediaType(manifest.mediaType)) {
    const parsed = imageIndexSchema.safeParse(manifest.json);
    if (!parsed.success) {
      throw new RegistryError(
        "protocol",
        `the index ${manifest.digest} is malformed (${firstIssue(parsed.error)})`,
      );
    }
    if (!topLevel) return { kind: "index", descriptor, index: parsed.data, children: [] };
    const children: ManifestNode[] = [];
    for (const child of parsed.data.manifests) children.push(await childNode(client, repo, child));
    return { kind: "index", descriptor, index: parsed.data, children };
  }

  const parsed = imageManifestSchema.safeParse(manifest.json);
  if (!parsed.success) {
    throw new RegistryError(
      "protocol",
      `the manifest ${manifest.digest} is malformed (${firstIssue(parsed.error)})`,
    );
  }
  const node: ManifestNode = { kind: "image", descriptor, manifest: parsed.data };
  // The platform comes from the descriptor when it has one; otherwise from the config.
  const needsConfig = !descriptor.platform && !isAttestation(descriptor);
  if (needsConfig && isImageConfigMediaType(parsed.data.config.mediaType)) {
    const bytes = await client.getBlob(repo, parsed.data.config.digest);
    let json: unknown;
    try {
      json = JSON.parse(Buffer.from(bytes).toString("utf8"));
    } catch {
      throw new RegistryError(
        "protocol",
        `the image config ${parsed.data.config.digest} is not JSON`,
      );
    }
    const config = imageConfigSchema.safeParse(json);
    if (!config.success) {
      throw new RegistryError(
        "protocol",
        `the image config ${parsed.data.config.digest} is malformed (${firstIssue(config.error)})`,
      );
    }
    node.config = config.data;
  }
  return node;
}

async function childNode(
  client: RegistryClient,
  repo: Repository,
  child: Descriptor,
): Promise<ManifestNode> {
  if (!isIndexMediaType(child.mediaType) && !isImageManifestMediaType(child.mediaType)) {
    return { kind: "other", descriptor: child };
  }
  const what = isAttestation(child) ? "its attestation manifest" : "its manifest";
  const manifest = await fetchManifest(client, repo, child.digest, what);
  if (manifest.size !== child.size) {
    throw new RegistryError(
      "digest",
      `${what} ${child.digest} is ${manifest.size} bytes, but the index says ${child.size}`,
    );
  }
  if (manifest.mediaType !== child.mediaType) {
    throw new RegistryError(
      "protocol",
      `${what} ${child.digest} is ${manifest.mediaType}, but the index says ${child.mediaType}`,
    );
  }
  return toNode(client, repo, child, manifest, false);
}
