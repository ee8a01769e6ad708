import type { BuilderPool } from "../../src/api/resources.ts";
import { parseBuilderPool } from "../../src/api/resources.ts";
import type { PoolContext } from "../../src/builderpool/context.ts";
import { readYaml } from "../support/files.ts";

export const POOL_UID = "7d1f2b1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b";

type Raw = Record<string, unknown> & {
  metadata: Record<string, unknown>;
  spec: Record<string, unknown>;
};

/** examples/builderpool.yaml as the API server would return it, optionally changed first. */
export function examplePool(change: (raw: Raw) => void = () => {}): BuilderPool {
  const raw = structuredClone(readYaml("examples/builderpool.yaml")) as Raw;
  raw.metadata.uid = POOL_UID;
  raw.metadata.generation = 3;
  change(raw);
  return parseBuilderPool(raw);
}

export function poolContext(overrides: Partial<PoolContext> = {}): PoolContext {
  return {
    serverVersion: { major: 1, minor: 31 },
    certHash: "0123456789abcdef",
    ...overrides,
  };
}
