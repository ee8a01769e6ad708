// The metadata half of the Reflect API that @peculiar/x509 needs. The library registers its
// algorithm providers through tsyringe, and tsyringe refuses to load unless `Reflect.getMetadata`
// exists ("tsyringe requires a reflect polyfill"). It only stores and reads constructor parameter
// types, so a WeakMap is enough; the full `reflect-metadata` package would do the same.
// Imported for its side effect by x509.ts, before the library, and installed only when no other
// polyfill is present.

type Key = unknown;
type Property = string | symbol | undefined;

const store = new WeakMap<object, Map<Property, Map<Key, unknown>>>();

function table(target: object, property: Property, create: boolean): Map<Key, unknown> | undefined {
  let byProperty = store.get(target);
  if (!byProperty) {
    if (!create) return undefined;
    byProperty = new Map();
    store.set(target, byProperty);
  }
  let entries = byProperty.get(property);
  if (!entries && create) {
    entries = new Map();
    byProperty.set(property, entries);
  }
  return entries;
}

function getOwnMetadata(key: Key, target: object, property?: Property): unknown {
  return table(target, property, false)?.get(key);
}

function hasOwnMetadata(key: Key, target: object, property?: Property): boolean {
  return table(target, property, false)?.has(key) ?? false;
}

function getMetadata(key: Key, target: object, property?: Property): unknown {
  for (let at: object | null = target; at; at = Object.getPrototypeOf(at)) {
    if (hasOwnMetadata(key, at, property)) return getOwnMetadata(key, at, property);
  }
  return undefined;
}

function hasMetadata(key: Key, target: object, property?: Property): boolean {
  for (let at: object | null = target; at; at = Object.getPrototypeOf(at)) {
    if (hasOwnMetadata(key, at, property)) return true;
  }
  return false;
}

function defineMetadata(key: Key, value: unknown, target: object, property?: Property): void {
  table(target, property, true)?.set(key, value);
}

function metadata(key: Key, value: unknown) {
  return (target: object, property?: Property): void =>
    defineMetadata(key, value, target, property);
}

const reflect = Reflect as unknown as Record<string, unknown>;
if (typeof reflect.getMetadata !== "function") {
  Object.assign(reflect, {
    defineMetadata,
    getMetadata,
    getOwnMetadata,
    hasMetadata,
    hasOwnMetadata,
    metadata,
  });
}
