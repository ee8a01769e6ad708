// When to retry a registry request and how long to wait: 429 and 5xx answers and network
// errors, with exponential backoff, honouring Retry-After within a bound.

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  /** The first backoff; each next one doubles. */
  baseDelayMs: number;
  /** No wait is longer than this, whatever the registry's Retry-After says. */
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 500, maxDelayMs: 15_000 };

export function isRetryableStatus(status: number): boolean {
  return status === 429 || (status >= 500 && status <= 599 && status !== 501 && status !== 505);
}

/** Retry-After as milliseconds: delta-seconds or an HTTP-date; undefined when absent or bad. */
export function parseRetryAfter(
  value: string | null | undefined,
  now: number = Date.now(),
): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (/^[0-9]+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/**
 * The wait before attempt `attempt + 1` (attempt counts from 1): the registry's Retry-After
 * when it gave one, else base·2^(attempt-1) with jitter in [50%, 100%]; never above the cap.
 */
export function retryDelay(
  policy: RetryPolicy,
  attempt: number,
  retryAfterMs: number | undefined,
  random: () => number = Math.random,
): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, policy.maxDelayMs);
  const exponential = policy.baseDelayMs * 2 ** Math.max(0, attempt - 1);
  const jittered = exponential * (0.5 + random() / 2);
  return Math.min(Math.round(jittered), policy.maxDelayMs);
}
