// `assemble` as a library call: fetch and check every input, build the index, push it by
// digest, then apply each tag and check that it resolves to the index. Nothing is pushed
// unless every input is right, and no tag is written before the index exists by digest.

import { errorMessage } from "../errors.ts";
import { type AssembledIndex, AssemblyError, assembleIndex, type IndexFormat } from "./assembly.ts";
import type { RegistryClient } from "./client.ts";
import { isRegistryWide, RegistryError } from "./errors.ts";
import type { Logger } from "./logger.ts";
import { MEDIA_TYPES } from "./media-types.ts";
import type { Repository } from "./reference.ts";
import { type DigestClaim, resolveInput } from "./resolve.ts";

export interface AssembleRequest {
  repository: Repository;
  inputs: DigestClaim[];
  tags: string[];
  format: IndexFormat;
  annotations: Record<string, string>;
  /**
   * The digest the index must have (one assembled and checked earlier, e.g. by spec.verify):
   * any other index is refused before anything is pushed or tagged.
   */
  expectDigest?: string;
}

/** What `assemble` did: the index it pushed by digest, and the tags it applied and checked. */
export interface PushedIndex {
  index: AssembledIndex;
  tags: string[];
}

export async function assemble(
  client: RegistryClient,
  request: AssembleRequest,
  logger: Logger,
): Promise<PushedIndex> {
  const repo = request.repository;
  const settled = await Promise.allSettled(
    request.inputs.map((claim) => resolveInput(client, repo, claim)),
  );
  const failures = settled.flatMap((result) =>
    result.status === "rejected" ? [result.reason] : [],
  );
  if (failures.length > 0) {
    // A failure that is about the registry (unreachable, credentials) is the same for every
    // input: report it once. Failures about the inputs themselves are all worth reading.
    const registryWide = failures.find((f) => f instanceof RegistryError && isRegistryWide(f.kind));
    if (registryWide) throw registryWide;
    const first = failures[0];
    const message = failures.map((f) => errorMessage(f)).join("; ");
    throw first instanceof RegistryError
      ? new RegistryError(first.kind, message, first.status)
      : new Error(message);
  }
  const inputs = settled.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
  for (const input of inputs) {
    logger.info(
      { digest: input.digest, kind: input.node.kind, mediaType: input.node.descriptor.mediaType },
      `resolved ${input.platform.os}/${input.platform.architecture}${input.platform.variant ? `/${input.platform.variant}` : ""}`,
    );
  }

  const index = assembleIndex(inputs, { format: request.format, annotations: request.annotations });
  if (request.expectDigest !== undefined && index.digest !== request.expectDigest) {
    throw new AssemblyError([
      `the index assembled from these inputs is ${index.digest}, not the expected ${request.expectDigest}; nothing was pushed or tagged`,
    ]);
  }

  try {
    await client.putManifest(repo, index.digest, index.bytes, index.mediaType);
  } catch (error) {
    // Some registries still refuse OCI indexes; the Docker manifest list is the way out.
    const refused =
      error instanceof RegistryError && (error.status === 400 || error.status === 415);
    if (refused && index.mediaType === MEDIA_TYPES.ociIndex && request.format === "oci") {
      throw new RegistryError(
        error.kind,
        `${error.message}; if this registry does not take OCI image indexes, try --format docker`,
        error.status,
      );
    }
    throw error;
  }
  logger.info(
    { digest: index.digest, mediaType: index.mediaType, platforms: index.platforms },
    `pushed the index ${repo.name}@${index.digest}`,
  );

  for (const tag of request.tags) {
    await client.putManifest(repo, tag, index.bytes, index.mediaType);
    logger.info({ tag, digest: index.digest }, `tagged ${repo.name}:${tag}`);
  }
  for (const tag of request.tags) {
    const resolved = await client.resolveDigest(repo, tag);
    if (resolved !== index.digest) {
      throw new RegistryError(
        "protocol",
        `${repo.name}:${tag} resolves to ${resolved ?? "nothing"} after tagging, not to the index ${index.digest}; did another push move it?`,
      );
    }
  }
  return { index, tags: request.tags };
}
