// The build context as BuildKit's dockerfile frontend reads it. A git context is the
// `context` frontend option `<url>#<ref>:<subdir>` (moby/buildkit util/gitutil/git_url.go,
// splitGitFragment); an http(s) URL counts as a git repository only when its path ends in
// `.git` (gitutil.ParseGitRef), which the schema requires (src/api/imagebuild.ts). Private
// repositories authenticate with the build secret `GIT_AUTH_TOKEN.<host>` (source/git/source.go,
// authSecretNames: the URL's host exactly as Go's url.Parse returns it, port included) or with
// the SSH agent socket `default` (client/llb/source.go mounts it for ssh URLs).
import type { GitSource } from "../api/imagebuild.ts";

export type GitScheme = "https" | "http" | "git" | "ssh";

/** The transport of a URL the schema accepted; `user@host:path` is ssh. */
export function gitScheme(url: string): GitScheme {
  const match = /^(https?|git|ssh):\/\//.exec(url);
  return match ? (match[1] as GitScheme) : "ssh";
}

interface UrlParts {
  userinfo?: string;
  host: string;
  path: string;
}

/** Splits `scheme://[userinfo@]host[:port]/path` the way Go's url.Parse does for these characters. */
function splitUrl(url: string): UrlParts | undefined {
  const match = /^[a-z]+:\/\/([^/]*)(.*)$/.exec(url);
  if (!match) return undefined;
  const authority = match[1] as string;
  const path = match[2] as string;
  const at = authority.lastIndexOf("@");
  return at === -1
    ? { host: authority, path }
    : { userinfo: authority.slice(0, at), host: authority.slice(at + 1), path };
}

/** A host BuildKit's secret lookup and buildctl's CSV flags both take as it is. */
export const TOKEN_HOST = /^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$/;

/** The host of an http(s) URL, port included, as BuildKit names the token secret after it. */
export function gitHost(url: string): string | undefined {
  return splitUrl(url)?.host;
}

/** The build secret id BuildKit reads a token for this URL from. */
export function gitTokenSecretId(host: string): string {
  return `GIT_AUTH_TOKEN.${host}`;
}

/**
 * The dockerfile frontend's `context` value: `<url>#<revision>` and `:<subPath>` when set.
 * The default revision HEAD (the remote's default branch) is left out of the fragment:
 * BuildKit v0.24 resolves an empty ref to the default branch, but fails on a literal `#HEAD`
 * ("repository does not contain ref HEAD", seen against git daemon).
 */
export function gitContext(git: GitSource): string {
  const ref = git.revision === "HEAD" ? "" : git.revision;
  const fragment = `${ref}${git.subPath ? `:${git.subPath}` : ""}`;
  return fragment === "" ? git.url : `${git.url}#${fragment}`;
}
