// An ImageBuild's conditions, kstatus-compatible (sigs.k8s.io/cli-utils pkg/kstatus, the
// rules Flux and Argo CD read): `Reconciling=True` while the build is under way (InProgress),
// `Stalled=True` once it failed (Failed), neither once it succeeded (Current). `Succeeded` is
// what `kubectl wait --for=condition=Succeeded` waits on: Unknown while under way, True or
// False at the end. `Ready` mirrors it. `CacheExported` reports the registry cache on its own,
// so a refused cache export is visible while the image still ships.
import { type BuildPhase, isTerminal } from "../api/imagebuild-status.ts";
import { type Condition, findCondition, setCondition } from "../runtime/conditions.ts";

export const CONDITIONS = {
  ready: "Ready",
  succeeded: "Succeeded",
  cacheExported: "CacheExported",
  reconciling: "Reconciling",
  stalled: "Stalled",
} as const;

const MANAGED = new Set<string>(Object.values(CONDITIONS));

export interface Outcome {
  phase: BuildPhase;
  /** CamelCase: the phase, or why the build waits or failed (PoolNotFound, Timeout, …). */
  reason: string;
  message: string;
}

export interface CacheCondition {
  status: "True" | "False" | "Unknown";
  reason: string;
  message: string;
}

/**
 * The conditions for an outcome. lastTransitionTime moves only when a condition's status
 * flips; conditions of other writers are kept after ours.
 */
export function buildConditions(
  previous: readonly Condition[] | undefined,
  outcome: Outcome,
  cache: CacheCondition | undefined,
  generation: number | undefined,
  now: Date,
): Condition[] {
  const withGeneration = generation === undefined ? {} : { observedGeneration: generation };
  const status =
    outcome.phase === "Succeeded" ? "True" : isTerminal(outcome.phase) ? "False" : "Unknown";
  const result = {
    status,
    reason: outcome.reason,
    message: outcome.message,
    ...withGeneration,
  } as const;
  const desired = [
    { type: CONDITIONS.ready, ...result },
    { type: CONDITIONS.succeeded, ...result },
    ...(cache ? [{ type: CONDITIONS.cacheExported, ...cache, ...withGeneration }] : []),
    ...(isTerminal(outcome.phase)
      ? []
      : [
          {
            type: CONDITIONS.reconciling,
            status: "True" as const,
            reason: outcome.reason,
            message: outcome.message,
            ...withGeneration,
          },
        ]),
    ...(outcome.phase === "Failed"
      ? [
          {
            type: CONDITIONS.stalled,
            status: "True" as const,
            reason: outcome.reason,
            message: outcome.message,
            ...withGeneration,
          },
        ]
      : []),
  ];
  const ours = desired.map((update) => {
    const entry = findCondition(setCondition(previous, update, now), update.type);
    return entry as Condition;
  });
  const theirs = (previous ?? []).filter((condition) => !MANAGED.has(condition.type));
  return [...ours, ...theirs];
}
