// The image reference grammar (distribution/reference, as Docker and BuildKit read names),
// written once for every field that names a registry, a repository or an image.

const PATH_COMPONENT = "[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*";
/**
 * A DNS label as the reference grammar (distribution/reference) has it: no leading or trailing
 * '-'. A leading '-' would also turn `--image <repository>` into an option for `assemble`.
 */
const HOST_LABEL = "[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?";
/** host[:port] of a registry (the first component of a reference that names one). */
const HOST = `((localhost|${HOST_LABEL}(\\.${HOST_LABEL})+|\\[[0-9a-fA-F:]+\\])(:[0-9]{1,5})?|${HOST_LABEL}:[0-9]{1,5})`;
/** A first path component without '.': Docker reads the `a.b` of `a.b/c` as a registry host. */
const FIRST_COMPONENT = "[a-z0-9]+((_|__|-+)[a-z0-9]+)*";
/** [host[:port]/]path as the reference grammar splits it: a host, or no '.' before the first '/'. */
const NAME = `(${HOST}/${PATH_COMPONENT}(/${PATH_COMPONENT})*|${FIRST_COMPONENT}(/${PATH_COMPONENT})+|${PATH_COMPONENT})`;
/** A repository without tag or digest: [host[:port]/]path, lower-case path components. */
export const REPOSITORY = new RegExp(`^${NAME}$`);
export const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
/** A repository with an optional tag, as registry cache refs are written. */
export const CACHE_REF = new RegExp(`^${NAME}(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$`);

/** An image to run: repository, optional tag, optional sha256 digest. */
export const IMAGE_REFERENCE = new RegExp(
  `^${NAME}(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(@sha256:[a-f0-9]{64})?$`,
);

/**
 * host or host:port of a registry, as an image reference names it: a dotted name, localhost or
 * an IPv6 literal, with an optional port, or a single-label name with a port (kind-registry:5000).
 */
export const REGISTRY_HOST = new RegExp(`^${HOST}$`);
