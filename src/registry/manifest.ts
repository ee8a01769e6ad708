// The parts of OCI and Docker v2 manifests, indexes and image configs that `assemble` reads.
// Unknown fields are kept (loose), so a descriptor copied into the index loses nothing.
import { z } from "zod";
import { SHA256_DIGEST } from "./digest.ts";

export const platformSchema = z
  .object({
    architecture: z.string().min(1),
    os: z.string().min(1),
    variant: z.string().optional(),
    "os.version": z.string().optional(),
    "os.features": z.array(z.string()).optional(),
  })
  .loose();

export const descriptorSchema = z
  .object({
    mediaType: z.string().min(1),
    digest: z.string().regex(SHA256_DIGEST, { message: "must be a sha256 digest" }),
    size: z.number().int().nonnegative(),
    urls: z.array(z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
    platform: platformSchema.optional(),
  })
  .loose();
export type Descriptor = z.infer<typeof descriptorSchema>;

export const imageManifestSchema = z
  .object({
    schemaVersion: z.literal(2),
    mediaType: z.string().optional(),
    config: descriptorSchema,
    layers: z.array(descriptorSchema),
    annotations: z.record(z.string(), z.string()).optional(),
  })
  .loose();
export type ImageManifest = z.infer<typeof imageManifestSchema>;

export const imageIndexSchema = z
  .object({
    schemaVersion: z.literal(2),
    mediaType: z.string().optional(),
    manifests: z.array(descriptorSchema),
    annotations: z.record(z.string(), z.string()).optional(),
  })
  .loose();
export type ImageIndex = z.infer<typeof imageIndexSchema>;

/** The platform fields of an image config (the rest of the config is not read). */
export const imageConfigSchema = z
  .object({
    architecture: z.string().optional(),
    os: z.string().optional(),
    variant: z.string().optional(),
    "os.version": z.string().optional(),
    "os.features": z.array(z.string()).optional(),
  })
  .loose();
export type ImageConfig = z.infer<typeof imageConfigSchema>;

/** The first problem zod found, as `path: message`, for error messages. */
export function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return "invalid";
  const path = issue.path.join(".");
  return path ? `${path}: ${issue.message}` : issue.message;
}
