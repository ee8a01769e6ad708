// metav1.Status bodies with the API server's reasons, codes and message wording
// (k8s.io/apimachinery/pkg/api/errors), and the error type that carries them to the wire.
import type { FieldCause } from "./crd-validation.ts";

export interface StatusCause {
  reason?: string;
  message?: string;
  field?: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: StatusCause[];
  retryAfterSeconds?: number;
}

export interface Status {
  kind: "Status";
  apiVersion: "v1";
  metadata: Record<string, never>;
  status: "Failure" | "Success";
  message?: string;
  reason?: string;
  details?: StatusDetails;
  code: number;
}

/** A group and resource (plural), as in `imagebuilds.buildfarm.dev`. */
export interface GroupResource {
  group: string;
  resource: string;
}

/** A group and kind, as in `ImageBuild.buildfarm.dev`. */
export interface GroupKind {
  group: string;
  kind: string;
}

const qualified = (name: string, group: string) => (group ? `${name}.${group}` : name);

/** An error the server answers with a Status body (and optional headers). */
export class KubeError extends Error {
  readonly status: Status;
  readonly headers: Record<string, string>;

  constructor(status: Omit<Status, "kind" | "apiVersion" | "metadata" | "status">, headers = {}) {
    super(status.message ?? status.reason ?? `HTTP ${status.code}`);
    this.status = { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", ...status };
    this.headers = headers;
  }

  get code(): number {
    return this.status.code;
  }
}

function details(gr: GroupResource, name: string): StatusDetails {
  return { name, ...(gr.group ? { group: gr.group } : {}), kind: gr.resource };
}

export function notFound(gr: GroupResource, name: string): KubeError {
  return new KubeError({
    message: `${qualified(gr.resource, gr.group)} "${name}" not found`,
    reason: "NotFound",
    details: details(gr, name),
    code: 404,
  });
}

export function alreadyExists(gr: GroupResource, name: string): KubeError {
  return new KubeError({
    message: `${qualified(gr.resource, gr.group)} "${name}" already exists`,
    reason: "AlreadyExists",
    details: details(gr, name),
    code: 409,
  });
}

export const OPTIMISTIC_LOCK_MESSAGE =
  "the object has been modified; please apply your changes to the latest version and try again";

export function conflict(gr: GroupResource, name: string, why = OPTIMISTIC_LOCK_MESSAGE) {
  return new KubeError({
    message: `Operation cannot be fulfilled on ${qualified(gr.resource, gr.group)} "${name}": ${why}`,
    reason: "Conflict",
    details: details(gr, name),
    code: 409,
  });
}

/** One field error, as field.Error: `Error()` is `<field>: <body>`. */
export interface FieldError {
  reason: FieldCause["reason"] | "FieldValueNotFound";
  field: string;
  message: string;
}

export function fieldError(
  reason: FieldError["reason"],
  field: string,
  message: string,
): FieldError {
  return { reason, field, message };
}

/** `field.Invalid`: the body quotes the value the way Go's %#v does for strings and numbers. */
export function invalidValue(field: string, value: unknown, detail: string): FieldError {
  return fieldError("FieldValueInvalid", field, `Invalid value: ${goValue(value)}: ${detail}`);
}

export function requiredValue(field: string, detail = ""): FieldError {
  return fieldError(
    "FieldValueRequired",
    field,
    detail ? `Required value: ${detail}` : "Required value",
  );
}

export function forbidden(field: string, detail: string): FieldError {
  return fieldError("FieldValueForbidden", field, `Forbidden: ${detail}`);
}

export function notSupported(field: string, value: unknown, supported: string[]): FieldError {
  return fieldError(
    "FieldValueNotSupported",
    field,
    `Unsupported value: ${goValue(value)}: supported values: ${supported.map((v) => `"${v}"`).join(", ")}`,
  );
}

export function goValue(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (value === undefined || value === null) return "null";
  return JSON.stringify(value);
}

/** StatusReasonInvalid: `<Kind>.<group> "<name>" is invalid: [<field>: <body>, ...]`. */
export function invalid(gk: GroupKind, name: string, errors: FieldError[]): KubeError {
  const rendered = errors.map((e) => (e.field ? `${e.field}: ${e.message}` : e.message));
  const aggregate = rendered.length === 1 ? rendered[0] : `[${rendered.join(", ")}]`;
  return new KubeError({
    message:
      errors.length === 0
        ? `${qualified(gk.kind, gk.group)} "${name}" is invalid`
        : `${qualified(gk.kind, gk.group)} "${name}" is invalid: ${aggregate}`,
    reason: "Invalid",
    details: {
      name,
      ...(gk.group ? { group: gk.group } : {}),
      kind: gk.kind,
      causes: errors.map((e) => ({ reason: e.reason, message: e.message, field: e.field })),
    },
    code: 422,
  });
}

export function badRequest(message: string): KubeError {
  return new KubeError({ message, reason: "BadRequest", code: 400 });
}

export function forbiddenRequest(gr: GroupResource, name: string, why: string): KubeError {
  const what = name
    ? `${qualified(gr.resource, gr.group)} "${name}"`
    : qualified(gr.resource, gr.group);
  return new KubeError({
    message: `${what} is forbidden: ${why}`,
    reason: "Forbidden",
    details: details(gr, name),
    code: 403,
  });
}

export function methodNotAllowed(gr: GroupResource): KubeError {
  return new KubeError({
    message: "the server does not allow this method on the requested resource",
    reason: "MethodNotAllowed",
    details: { ...(gr.group ? { group: gr.group } : {}), kind: gr.resource },
    code: 405,
  });
}

export function resourceNotFound(): KubeError {
  return new KubeError({
    message: "the server could not find the requested resource",
    reason: "NotFound",
    details: { causes: [{ reason: "UnexpectedServerResponse", message: "404 page not found" }] },
    code: 404,
  });
}

export function expired(message: string): KubeError {
  return new KubeError({ message, reason: "Expired", code: 410 });
}

export function internalError(message: string): KubeError {
  return new KubeError({
    message: `Internal error occurred: ${message}`,
    reason: "InternalError",
    details: { causes: [{ message }] },
    code: 500,
  });
}

/** An error the storage layer returns unconverted: code 500, no reason. */
export function unknownError(message: string, code = 500): KubeError {
  return new KubeError({ message, code });
}

export function tooManyRequests(retryAfterSeconds: number): KubeError {
  return new KubeError(
    {
      message: "Too many requests, please try again later.",
      reason: "TooManyRequests",
      details: { retryAfterSeconds },
      code: 429,
    },
    { "Retry-After": String(retryAfterSeconds) },
  );
}

export function serviceUnavailable(
  message = "the server is currently unable to handle the request",
) {
  return new KubeError({ message, reason: "ServiceUnavailable", code: 503 });
}

export function unsupportedMediaType(accepted: string[], note = ""): KubeError {
  return new KubeError({
    message: `the body of the request was in an unknown format - accepted media types include: ${accepted.join(", ")}${note}`,
    reason: "UnsupportedMediaType",
    code: 415,
  });
}

export function timeoutError(message: string, retryAfterSeconds: number): KubeError {
  return new KubeError({
    message,
    reason: "Timeout",
    details: { retryAfterSeconds },
    code: 504,
  });
}

/** The Status a successful delete returns for kinds that do not return the deleted object. */
export function deletedStatus(gr: GroupResource, name: string, uid: string) {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Success",
    details: { name, ...(gr.group ? { group: gr.group } : {}), kind: gr.resource, uid },
  };
}

/** A Status for any error code, with the reason the API server uses for it. */
export function statusForCode(code: number, gr: GroupResource, name: string, message?: string) {
  switch (code) {
    case 404:
      return notFound(gr, name);
    case 409:
      return conflict(gr, name);
    case 410:
      return expired(message ?? "too old resource version");
    case 429:
      return tooManyRequests(1);
    case 500:
      return internalError(message ?? "injected fault");
    case 503:
      return serviceUnavailable(message);
    case 504:
      return timeoutError(
        message ??
          "the server was unable to return a response in the time allotted, but may still be processing the request",
        1,
      );
    default:
      return new KubeError({ message: message ?? `injected fault ${code}`, code });
  }
}
