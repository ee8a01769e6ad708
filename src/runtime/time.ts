// The two time formats the API server writes and reads: Time (RFC 3339, whole seconds) for
// conditions, status and core Events, and MicroTime (six fractional digits, exactly) for Leases
// and events.k8s.io Events, which a real server refuses in any other precision.

/** RFC 3339 without fractions, as Kubernetes writes `metav1.Time`. */
export function rfc3339(date: Date | number): string {
  return new Date(date).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** RFC 3339 with exactly six fractional digits, as Kubernetes writes `metav1.MicroTime`. */
export function microTime(date: Date | number): string {
  return new Date(date).toISOString().replace("Z", "000Z");
}
