// Image references: [registry/]path[:tag][@digest], with Docker Hub's normalisation
// (`alpine` is docker.io/library/alpine, served by registry-1.docker.io).
import { PATH_COMPONENT, REGISTRY_HOST, splitHost, TAG } from "../api/reference.ts";
import { SHA256_DIGEST } from "./digest.ts";

export const DOCKER_HUB = "docker.io";
/** Where Docker Hub's registry API is served. */
export const DOCKER_HUB_API = "registry-1.docker.io";
const DOCKER_HUB_ALIASES = new Set([
  DOCKER_HUB,
  "index.docker.io",
  DOCKER_HUB_API,
  "registry.hub.docker.com",
]);

export interface Repository {
  /** The registry as credentials are keyed: `docker.io` for Docker Hub, else host[:port]. */
  registry: string;
  /** Where requests go: `registry-1.docker.io` for Docker Hub, else the registry itself. */
  host: string;
  /** The repository path inside the registry: `library/alpine`, `team/app`. */
  path: string;
  /** The canonical name, `registry/path`. */
  name: string;
}

export interface Reference {
  repository: Repository;
  tag?: string;
  digest?: string;
}

export class InvalidReferenceError extends Error {
  override name = "InvalidReferenceError";
}

/** Lower-cased host[:port], with Docker Hub's aliases folded into `docker.io`. */
export function normalizeRegistry(host: string): string {
  const lower = host.toLowerCase();
  return DOCKER_HUB_ALIASES.has(lower) ? DOCKER_HUB : lower;
}

/** The host[:port] that serves a registry's API. */
export function apiHost(registry: string): string {
  const normalized = normalizeRegistry(registry);
  return normalized === DOCKER_HUB ? DOCKER_HUB_API : normalized;
}

/** A repository without tag or digest. */
export function parseRepository(text: string): Repository {
  const reference = parseReference(text);
  if (reference.tag !== undefined || reference.digest !== undefined) {
    throw new InvalidReferenceError(
      `${JSON.stringify(text)} must be a repository without tag or digest, e.g. registry.example.com/team/app`,
    );
  }
  return reference.repository;
}

export function parseReference(text: string): Reference {
  const fail = (why: string): never => {
    throw new InvalidReferenceError(`${JSON.stringify(text)} is not an image reference: ${why}`);
  };
  if (text.length === 0) fail("it is empty");
  if (text.length > 512) fail("it is longer than 512 characters");
  if (/[\s]/.test(text)) fail("it contains whitespace");

  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!SHA256_DIGEST.test(digest)) fail("the digest must be sha256: followed by 64 hex digits");
  }

  const split = splitHost(rest);
  let registry = DOCKER_HUB;
  if (split.host !== undefined) {
    if (!REGISTRY_HOST.test(split.host)) {
      fail(`${JSON.stringify(split.host)} is not a registry host[:port]`);
    }
    registry = normalizeRegistry(split.host);
    rest = split.remainder;
  }

  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) fail("the tag must be at most 128 letters, digits, '.', '_' or '-'");
  }

  const components = rest.split("/");
  for (const component of components) {
    if (!PATH_COMPONENT.test(component)) {
      fail(
        `path component ${JSON.stringify(component)} must be lower-case letters and digits, separated by '.', '_', '__' or '-'`,
      );
    }
  }
  const path = registry === DOCKER_HUB && components.length === 1 ? `library/${rest}` : rest;
  if (`${registry}/${path}`.length > 255) fail("the name is longer than 255 characters");

  const repository: Repository = {
    registry,
    host: apiHost(registry),
    path,
    name: `${registry}/${path}`,
  };
  const reference: Reference = { repository };
  if (tag !== undefined) reference.tag = tag;
  if (digest !== undefined) reference.digest = digest;
  return reference;
}

export function sameRepository(a: Repository, b: Repository): boolean {
  return a.registry === b.registry && a.path === b.path;
}
