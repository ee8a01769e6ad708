// ImageBuild spec.attestations: what BuildKit attaches to each platform's image (SLSA
// provenance, an SPDX SBOM), requested as the frontend's attest:* options (src/imagebuild/argv.ts).
import { z } from "zod";
import { cel } from "./meta.ts";

const NO_ATTESTATION_MESSAGE = "set provenance, sbom or both: an empty attestations requests none";

export const attestationsSpec = cel(
  z
    .object({
      provenance: z
        .object({
          mode: z
            .enum(["min", "max"])
            .default("min")
            .describe(
              "min records the build's materials and timing; max adds the full build definition (every build argument's value, the Dockerfile's steps). Build argument values become readable by whoever can pull the image.",
            ),
        })
        .optional()
        .describe(
          "A SLSA provenance attestation per platform, made by BuildKit itself (attest:provenance); no extra image runs.",
        ),
      sbom: z
        .object({})
        .optional()
        .describe(
          "An SPDX SBOM attestation per platform (attest:sbom). BuildKit runs the pool's spec.buildkit.sbomGenerator image on the builder to scan the result, so builders must be able to pull it.",
        ),
    })
    .refine((a) => a.provenance !== undefined || a.sbom !== undefined, {
      message: NO_ATTESTATION_MESSAGE,
    })
    .describe(
      "Attestations BuildKit attaches to each platform's image: the index then holds, per platform, an attestation manifest (platform unknown/unknown, annotated vnd.docker.reference.digest with the image's digest). None when absent.",
    ),
  { rule: "has(self.provenance) || has(self.sbom)", message: NO_ATTESTATION_MESSAGE },
);
export type AttestationsSpec = z.infer<typeof attestationsSpec>;
