// The ImageBuild the `buildfarm status` tests print, as KubeClient hands it on.
import type { StoredImageBuild } from "../../src/api/resources.ts";

export const BUILD: StoredImageBuild = {
  apiVersion: "buildfarm.dev/v1alpha1",
  kind: "ImageBuild",
  // KubeClient hands objects on as the JSON the server sent: timestamps are strings, although
  // client-node's V1ObjectMeta types them as Date.
  metadata: {
    name: "app-1",
    namespace: "team",
    creationTimestamp: "2026-01-01T00:00:00Z" as unknown as Date,
  },
  spec: {
    source: { git: { url: "https://example.com/app.git", revision: "main" } },
    output: { image: "registry.example.com/app", tags: ["v1"] },
    platforms: ["linux/amd64", "linux/arm64"],
    poolRef: { name: "default" },
  },
};
