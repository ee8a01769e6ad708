// Waiting on conditions with deadlines, so tests never sleep.

export interface WaitOptions {
  /** Milliseconds before giving up (default 30 s: a deadline is a cap for a hang, and a busy
   * machine stretches what a quiet one does in a second). */
  timeout?: number;
  /** Milliseconds between checks (default 10). */
  interval?: number;
  /** Said in the error when the deadline passes. */
  message?: string;
}

/**
 * Resolves with the first truthy value `check` returns (sync or async); rejects after the
 * timeout with the last error `check` threw, if any.
 */
export type Truthy<T> = Exclude<T, false | null | undefined | 0 | "">;

export async function waitFor<T>(
  check: () => T | Promise<T>,
  options: WaitOptions = {},
): Promise<Truthy<T>> {
  const timeout = options.timeout ?? 30_000;
  const interval = options.interval ?? 10;
  const deadline = Date.now() + timeout;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as Truthy<T>;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) {
      const why = lastError instanceof Error ? `: ${lastError.message}` : "";
      throw new Error(`${options.message ?? "condition not met"} within ${timeout} ms${why}`);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}
