// `buildfarm status` and spec.attestations (issue 21): the attestation manifests of the index,
// once assembled, or what was asked for until then; nothing for a build without attestations.
import { describe, expect, it } from "vitest";
import { formatStatus } from "../../src/commands/status.ts";
import { BUILD } from "./fixtures.ts";

const NOW = new Date("2026-01-01T00:05:00Z");
describe("buildfarm status lists the attestations", () => {
  it("of the index, one line per attestation manifest with what it attests", () => {
    const text = formatStatus(
      {
        ...BUILD,
        spec: { ...BUILD.spec, attestations: { provenance: { mode: "max" }, sbom: {} } },
        status: {
          phase: "Succeeded",
          image: `registry.example.com/app@sha256:${"a".repeat(64)}`,
          attestations: [
            {
              platform: "linux/amd64",
              digest: `sha256:${"1".repeat(64)}`,
              predicateTypes: ["https://spdx.dev/Document", "https://slsa.dev/provenance/v0.2"],
            },
            {
              platform: "linux/arm64",
              digest: `sha256:${"2".repeat(64)}`,
              predicateTypes: ["https://slsa.dev/provenance/v0.2"],
            },
          ],
        },
      },
      NOW,
    );
    expect(text).toContain(
      [
        "Attestations:",
        `  linux/amd64  https://spdx.dev/Document, https://slsa.dev/provenance/v0.2  sha256:111111111111…`,
        `  linux/arm64  https://slsa.dev/provenance/v0.2  sha256:222222222222…`,
      ].join("\n"),
    );
  });

  it("asked for, while the index is not assembled yet", () => {
    const text = formatStatus(
      {
        ...BUILD,
        spec: { ...BUILD.spec, attestations: { provenance: {}, sbom: {} } },
        status: { phase: "Building" },
      },
      NOW,
    );
    expect(text).toContain("Attestations: provenance (mode=min), sbom requested");
  });

  it("not at all for a build without spec.attestations", () => {
    expect(formatStatus({ ...BUILD, status: { phase: "Succeeded" } }, NOW)).not.toContain(
      "Attestations",
    );
  });
});
