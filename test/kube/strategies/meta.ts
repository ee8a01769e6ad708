// ValidateObjectMeta: names, labels, annotations, owner references, and the finalizer rule
// of objects being deleted.
import type { ObjectMeta, OwnerReference } from "../objects.ts";
import type { ResourceInfo } from "../resources.ts";
import { type FieldError, fieldError, forbidden, invalidValue, requiredValue } from "../status.ts";
import { obj } from "./strategy.ts";

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;

const SUBDOMAIN_MESSAGE =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MESSAGE =
  "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MESSAGE =
  "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MESSAGE =
  "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MESSAGE =
  "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/** The fields of metav1.ObjectMeta; the decoder drops any other key of `metadata`. */
const OBJECT_META_FIELDS = new Set([
  "name",
  "generateName",
  "namespace",
  "selfLink",
  "uid",
  "resourceVersion",
  "generation",
  "creationTimestamp",
  "deletionTimestamp",
  "deletionGracePeriodSeconds",
  "labels",
  "annotations",
  "ownerReferences",
  "finalizers",
  "managedFields",
]);

/** Drops unknown metadata fields, as decoding into ObjectMeta (or CRD pruning) does. */
export function pruneObjectMeta(meta: Record<string, unknown>): void {
  for (const key of Object.keys(meta)) if (!OBJECT_META_FIELDS.has(key)) delete meta[key];
}

export function validateName(
  name: string,
  rule: ResourceInfo["nameRule"],
  field: string,
): FieldError[] {
  const [pattern, message, max] =
    rule === "label"
      ? [DNS1123_LABEL, LABEL_MESSAGE, 63]
      : rule === "dns1035"
        ? [DNS1035_LABEL, DNS1035_MESSAGE, 63]
        : [DNS1123_SUBDOMAIN, SUBDOMAIN_MESSAGE, 253];
  const errors: FieldError[] = [];
  if (name.length > max)
    errors.push(invalidValue(field, name, `must be no more than ${max} characters`));
  if (!pattern.test(name)) errors.push(invalidValue(field, name, message));
  return errors;
}

function validateQualifiedName(key: string, field: string): FieldError[] {
  const slash = key.lastIndexOf("/");
  const prefix = slash >= 0 ? key.slice(0, slash) : "";
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  const errors: FieldError[] = [];
  if (slash >= 0 && (prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix)))
    errors.push(invalidValue(field, key, `prefix part ${SUBDOMAIN_MESSAGE}`));
  if (name.length === 0) errors.push(invalidValue(field, key, "name part must be non-empty"));
  else if (name.length > 63)
    errors.push(invalidValue(field, key, "name part must be no more than 63 characters"));
  else if (!QUALIFIED_NAME.test(name))
    errors.push(invalidValue(field, key, QUALIFIED_NAME_MESSAGE));
  return errors;
}

export function validateLabels(labels: unknown, field: string): FieldError[] {
  const errors: FieldError[] = [];
  for (const [key, value] of Object.entries(obj(labels))) {
    errors.push(...validateQualifiedName(key, field));
    const text = String(value);
    if (text.length > 63)
      errors.push(invalidValue(field, text, "must be no more than 63 characters"));
    if (!LABEL_VALUE.test(text)) errors.push(invalidValue(field, text, LABEL_VALUE_MESSAGE));
  }
  return errors;
}

function validateOwnerReferences(refs: readonly OwnerReference[], field: string): FieldError[] {
  const errors: FieldError[] = [];
  const controllers: string[] = [];
  for (const ref of refs) {
    if (!ref.apiVersion)
      errors.push(invalidValue(`${field}.apiVersion`, "", "version must not be empty"));
    if (!ref.kind) errors.push(invalidValue(`${field}.kind`, "", "kind must not be empty"));
    if (!ref.name) errors.push(invalidValue(`${field}.name`, "", "name must not be empty"));
    if (!ref.uid) errors.push(invalidValue(`${field}.uid`, "", "uid must not be empty"));
    if (ref.controller) controllers.push(`${ref.kind}/${ref.name}`);
  }
  if (controllers.length > 1)
    errors.push(
      invalidValue(
        field,
        refs,
        `Only one reference can have Controller set to true. Found "true" in references for ${controllers.join(" and ")}`,
      ),
    );
  return errors;
}

/** ValidateObjectMeta for every kind (name, labels, annotations, owner references). */
export function validateObjectMeta(meta: ObjectMeta, info: ResourceInfo): FieldError[] {
  const errors: FieldError[] = [];
  if (!meta.name) errors.push(requiredValue("metadata.name", "name or generateName is required"));
  else errors.push(...validateName(meta.name, info.nameRule, "metadata.name"));
  if (info.namespaced && !meta.namespace) errors.push(requiredValue("metadata.namespace"));
  errors.push(...validateLabels(meta.labels, "metadata.labels"));
  for (const key of Object.keys(meta.annotations ?? {}))
    errors.push(...validateQualifiedName(key.toLowerCase(), "metadata.annotations"));
  const size = Object.entries(meta.annotations ?? {}).reduce(
    (n, [k, v]) => n + k.length + v.length,
    0,
  );
  if (size > 256 * 1024)
    errors.push(
      fieldError(
        "FieldValueTooLong",
        "metadata.annotations",
        `Too long: must have at most 262144 bytes`,
      ),
    );
  errors.push(...validateOwnerReferences(meta.ownerReferences ?? [], "metadata.ownerReferences"));
  return errors;
}

export function validateObjectMetaUpdate(meta: ObjectMeta, old: ObjectMeta): FieldError[] {
  if (!old.deletionTimestamp) return [];
  const added = (meta.finalizers ?? []).filter((f) => !(old.finalizers ?? []).includes(f));
  return added.length
    ? [
        forbidden(
          "metadata.finalizers",
          `no new finalizers can be added if the object is being deleted, found new finalizers []string{${added.map((f) => `"${f}"`).join(", ")}}`,
        ),
      ]
    : [];
}
