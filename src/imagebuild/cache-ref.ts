// One registry cache ref per platform: a ref shared by several platforms keeps only the cache
// of whichever platform exported last. The platform's slug goes on the tag
// (`app:buildcache` → `app:buildcache-arm64`); a ref without a tag gets the slug as its tag
// (`cache` → `cache:arm64`), so every platform's cache stays in the one repository the user named.

const MAX_TAG = 128;

/** Splits `[host[:port]/]path[:tag]` at the tag's colon, which only follows the last slash. */
export function splitTag(ref: string): { repository: string; tag?: string } {
  const slash = ref.lastIndexOf("/");
  const colon = ref.lastIndexOf(":");
  if (colon <= slash) return { repository: ref };
  return { repository: ref.slice(0, colon), tag: ref.slice(colon + 1) };
}

/** The ref one platform's cache lives at. */
export function cacheRefForPlatform(ref: string, slug: string): string {
  const { repository, tag } = splitTag(ref);
  return tag === undefined ? `${repository}:${slug}` : `${repository}:${tag}-${slug}`;
}

/** Why a platform's cache ref would not be a valid reference, if it would not. */
export function cacheRefProblem(ref: string, slug: string): string | undefined {
  const { tag } = splitTag(cacheRefForPlatform(ref, slug));
  if (tag !== undefined && tag.length > MAX_TAG) {
    return `tag of ${JSON.stringify(ref)} is too long to add the platform suffix -${slug} (tags hold at most ${MAX_TAG} characters)`;
  }
  return undefined;
}
