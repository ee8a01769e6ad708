// What is said of a thrown value: JavaScript lets anything be thrown, and a log line or a
// condition message needs text.

/** An Error's message, or the string form of anything else that was thrown. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
