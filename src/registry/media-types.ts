// Media types of the manifests and configs that `assemble` reads and writes.

export const MEDIA_TYPES = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  dockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
} as const;

export type IndexMediaType = typeof MEDIA_TYPES.ociIndex | typeof MEDIA_TYPES.dockerManifestList;
export type ImageManifestMediaType =
  | typeof MEDIA_TYPES.ociManifest
  | typeof MEDIA_TYPES.dockerManifest;

/**
 * The Accept list of every manifest GET and HEAD. Without it a registry may answer with a
 * schema 1 manifest or pick one platform of an index for us.
 */
export const MANIFEST_ACCEPT = [
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.dockerManifestList,
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.dockerManifest,
].join(", ");

export function isIndexMediaType(mediaType: string): mediaType is IndexMediaType {
  return mediaType === MEDIA_TYPES.ociIndex || mediaType === MEDIA_TYPES.dockerManifestList;
}

export function isImageManifestMediaType(mediaType: string): mediaType is ImageManifestMediaType {
  return mediaType === MEDIA_TYPES.ociManifest || mediaType === MEDIA_TYPES.dockerManifest;
}

export function isImageConfigMediaType(mediaType: string): boolean {
  return mediaType === MEDIA_TYPES.ociConfig || mediaType === MEDIA_TYPES.dockerConfig;
}

/** Docker v2 (schema 2) media types: the only ones a Docker manifest list may point at. */
export function isDockerMediaType(mediaType: string): boolean {
  return mediaType === MEDIA_TYPES.dockerManifest || mediaType === MEDIA_TYPES.dockerManifestList;
}

/** BuildKit's annotations that tie an attestation manifest to the image it describes. */
export const REFERENCE_ANNOTATIONS = {
  type: "vnd.docker.reference.type",
  digest: "vnd.docker.reference.digest",
  attestationManifest: "attestation-manifest",
} as const;
