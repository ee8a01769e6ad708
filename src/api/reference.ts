// The image reference grammar (distribution/reference, as Docker and BuildKit read names),
// written once for every field that names a registry, a repository or an image, and for the
// registry client that `assemble` parses its flags with (src/registry/reference.ts).

const PATH_COMPONENT_PART = "[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*";
/**
 * A DNS label as the reference grammar (distribution/reference) has it: no leading or trailing
 * '-'. A leading '-' would also turn `--image <repository>` into an option for `assemble`.
 */
const HOST_LABEL = "[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?";
/**
 * An IPv6 literal in brackets, without the zone identifiers and IPv4-mapped forms (no '.')
 * the reference grammar leaves out on purpose.
 */
const IPV6 = "\\[[0-9a-fA-F:]+\\]";
const PORT = "[0-9]{1,5}";
/**
 * host[:port] of a registry as the first component of a reference names it: splitHost's rule
 * (a dotted name, localhost or an IPv6 literal, with an optional port, or any name with a
 * port) over the grammar's domain and port.
 */
const HOST = `((localhost|${HOST_LABEL}(\\.${HOST_LABEL})+|${IPV6})(:${PORT})?|${HOST_LABEL}:${PORT})`;
/** A first path component without '.': Docker reads the `a.b` of `a.b/c` as a registry host. */
const FIRST_COMPONENT = "[a-z0-9]+((_|__|-+)[a-z0-9]+)*";
/** [host[:port]/]path as the reference grammar splits it: a host, or no '.' before the first '/'. */
const NAME = `(${HOST}/${PATH_COMPONENT_PART}(/${PATH_COMPONENT_PART})*|${FIRST_COMPONENT}(/${PATH_COMPONENT_PART})+|${PATH_COMPONENT_PART})`;
const TAG_PART = "[A-Za-z0-9_][A-Za-z0-9._-]{0,127}";
const DIGEST_PART = "sha256:[a-f0-9]{64}";

/** A repository without tag or digest: [host[:port]/]path, lower-case path components. */
export const REPOSITORY = new RegExp(`^${NAME}$`);
export const TAG = new RegExp(`^${TAG_PART}$`);
/** One component of a repository's path: lower-case letters and digits, '.', '_', '__', '-'. */
export const PATH_COMPONENT = new RegExp(`^${PATH_COMPONENT_PART}$`);
/** A repository with an optional tag, as registry cache refs are written. */
export const CACHE_REF = new RegExp(`^${NAME}(:${TAG_PART})?$`);

/** An image to run: repository, optional tag, optional sha256 digest. */
export const IMAGE_REFERENCE = new RegExp(`^${NAME}(:${TAG_PART})?(@${DIGEST_PART})?$`);

/**
 * host or host:port of a registry, as an image reference names it: a dotted name, localhost or
 * an IPv6 literal, with an optional port, or a single-label name with a port (kind-registry:5000).
 */
export const REGISTRY_HOST = new RegExp(`^${HOST}$`);

/**
 * Any host[:port] the grammar's domain allows, a single label without a port included: what a
 * URL may name (a token service's realm), not only the first component of a reference.
 */
export const HOST_AND_PORT = new RegExp(`^(${HOST_LABEL}(\\.${HOST_LABEL})*|${IPV6})(:${PORT})?$`);

/**
 * Splits the registry host off a reference as Docker reads it (distribution/reference's
 * splitDockerDomain): the first of two or more components names a registry when it has a '.'
 * or a ':', is `localhost`, or is an IPv6 literal; otherwise the whole name is a path on Docker
 * Hub. The host is not checked here: REGISTRY_HOST says whether it is a valid one.
 */
export function splitHost(reference: string): { host?: string; remainder: string } {
  const slash = reference.indexOf("/");
  if (slash < 0) return { remainder: reference };
  const first = reference.slice(0, slash);
  const isHost =
    first.includes(".") || first.includes(":") || first === "localhost" || first.startsWith("[");
  return isHost ? { host: first, remainder: reference.slice(slash + 1) } : { remainder: reference };
}
