// A pod's sandbox on the host: its volumes materialized as directories the way the kubelet
// lays them out (secret, configMap, projected and downwardAPI volumes through the atomic
// writer's `..data` symlink, with file modes), PVCs as directories that outlive the pod, and
// for each container a private root plus the file behind its terminationMessagePath.
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { join, posix } from "node:path";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IPod } from "kubernetes-models/v1/Pod";
import type { IVolume } from "kubernetes-models/v1/Volume";
import type { KubeObject, Stored } from "../objects.ts";
import type { Store } from "../store.ts";
import type { MountedVolume } from "./executor.ts";

/** A volume the kubelet cannot set up yet (missing Secret, ConfigMap or claim). */
export class MountError extends Error {}

type Files = Map<string, { data: Buffer; mode: number }>;

interface KeyToPath {
  key: string;
  path: string;
  mode?: number;
}

export class PodSandbox {
  readonly dir: string;
  private readonly volumes = new Map<string, string>();
  private readonly persistent: string;

  private constructor(dir: string, persistent: string) {
    this.dir = dir;
    this.persistent = persistent;
  }

  /** Creates the pod's directory and its volumes; throws MountError while one cannot be set up. */
  static async create(root: string, pod: Stored<IPod>, store: Store): Promise<PodSandbox> {
    const meta = pod.metadata!;
    const dir = await mkdtemp(join(root, `${meta.namespace}_${meta.name}_`));
    const sandbox = new PodSandbox(dir, join(root, "persistent"));
    try {
      for (const volume of pod.spec?.volumes ?? []) await sandbox.mount(volume, pod, store);
    } catch (error) {
      await sandbox.destroy();
      throw error;
    }
    return sandbox;
  }

  private async mount(volume: Stored<IVolume>, pod: Stored<IPod>, store: Store): Promise<void> {
    const namespace = pod.metadata!.namespace!;
    const target = join(this.dir, "volumes", volume.name);
    if (volume.persistentVolumeClaim) {
      const claimName = volume.persistentVolumeClaim.claimName;
      const claim = store.get("persistentvolumeclaims", namespace, claimName);
      if (!claim) throw new MountError(`persistentvolumeclaim "${claimName}" not found`);
      const dir = join(this.persistent, "pvc", claim.metadata.uid!);
      await mkdir(dir, { recursive: true });
      this.volumes.set(volume.name, dir);
      return;
    }
    if (volume.hostPath) {
      const dir = join(this.persistent, "hostpath", pod.spec?.nodeName ?? "", volume.hostPath.path);
      await mkdir(dir, { recursive: true });
      this.volumes.set(volume.name, dir);
      return;
    }
    await mkdir(target, { recursive: true });
    this.volumes.set(volume.name, target);
    let files: Files | undefined;
    if (volume.secret) {
      files = secretFiles(
        store,
        namespace,
        volume.secret.secretName ?? "",
        volume.secret.items,
        volume.secret.defaultMode,
        volume.secret.optional,
        volume.name,
      );
    } else if (volume.configMap) {
      files = configMapFiles(
        store,
        namespace,
        volume.configMap.name ?? "",
        volume.configMap.items,
        volume.configMap.defaultMode,
        volume.configMap.optional,
        volume.name,
      );
    } else if (volume.downwardAPI) {
      files = downwardFiles(pod, volume.downwardAPI.items ?? [], volume.downwardAPI.defaultMode);
    } else if (volume.projected) {
      files = new Map();
      const mode = volume.projected.defaultMode;
      for (const source of volume.projected.sources ?? []) {
        const more = source.secret
          ? secretFiles(
              store,
              namespace,
              source.secret.name ?? "",
              source.secret.items,
              mode,
              source.secret.optional,
              volume.name,
            )
          : source.configMap
            ? configMapFiles(
                store,
                namespace,
                source.configMap.name ?? "",
                source.configMap.items,
                mode,
                source.configMap.optional,
                volume.name,
              )
            : source.downwardAPI
              ? downwardFiles(pod, source.downwardAPI.items ?? [], mode)
              : source.serviceAccountToken
                ? new Map([
                    [
                      source.serviceAccountToken.path,
                      { data: Buffer.from("test-kube-token"), mode: mode ?? 0o644 },
                    ],
                  ])
                : new Map();
        for (const [path, file] of more) files.set(path, file);
      }
    }
    if (files) await writeAtomic(target, files);
  }

  /** The host directory of a volume. */
  volumeDir(name: string): string | undefined {
    return this.volumes.get(name);
  }

  containerRoot(container: string): string {
    return join(this.dir, "containers", container, "rootfs");
  }

  terminationMessageFile(container: string): string {
    return join(this.dir, "containers", container, "termination-log");
  }

  /** Prepares a container's private root and an empty termination message file. */
  async prepareContainer(container: string): Promise<void> {
    await mkdir(this.containerRoot(container), { recursive: true });
    await writeFile(this.terminationMessageFile(container), "");
  }

  mounts(container: Stored<IContainer>): MountedVolume[] {
    return (container.volumeMounts ?? []).map((mount) => {
      const base = this.volumes.get(mount.name) ?? join(this.dir, "volumes", mount.name);
      return {
        volume: mount.name,
        containerPath: posix.normalize(mount.mountPath),
        hostPath: mount.subPath ? join(base, mount.subPath) : base,
        readOnly: mount.readOnly ?? false,
      };
    });
  }

  /** Maps an absolute in-container path to the host, as the container's mounts resolve it. */
  hostPath(container: Stored<IContainer>, path: string): string {
    const normalized = posix.normalize(posix.isAbsolute(path) ? path : `/${path}`);
    const terminationPath = container.terminationMessagePath ?? "/dev/termination-log";
    if (normalized === posix.normalize(terminationPath))
      return this.terminationMessageFile(container.name);
    const mounts = this.mounts(container).sort(
      (a, b) => b.containerPath.length - a.containerPath.length,
    );
    for (const mount of mounts) {
      if (normalized === mount.containerPath) return mount.hostPath;
      const prefix = mount.containerPath.endsWith("/")
        ? mount.containerPath
        : `${mount.containerPath}/`;
      if (normalized.startsWith(prefix))
        return join(mount.hostPath, normalized.slice(prefix.length));
    }
    return join(this.containerRoot(container.name), normalized);
  }

  async destroy(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

function modeOf(mode: number | undefined, fallback: number | undefined): number {
  return mode ?? fallback ?? 0o644;
}

function pick(
  entries: Map<string, Buffer>,
  items: readonly KeyToPath[] | undefined,
  defaultMode: number | undefined,
  what: string,
  volume: string,
): Files {
  const files: Files = new Map();
  if (items?.length) {
    for (const item of items) {
      const data = entries.get(item.key);
      if (!data)
        throw new MountError(
          `MountVolume.SetUp failed for volume "${volume}" : configmap references non-existent config key: ${item.key} (${what})`,
        );
      files.set(item.path, { data, mode: modeOf(item.mode, defaultMode) });
    }
  } else {
    for (const [key, data] of entries)
      files.set(key, { data, mode: modeOf(undefined, defaultMode) });
  }
  return files;
}

function secretFiles(
  store: Store,
  namespace: string,
  name: string,
  items: readonly KeyToPath[] | undefined,
  defaultMode: number | undefined,
  optional: boolean | undefined,
  volume: string,
): Files {
  const secret = store.get<KubeObject & { data?: Record<string, string> }>(
    "secrets",
    namespace,
    name,
  );
  if (!secret) {
    if (optional) return new Map();
    throw new MountError(
      `MountVolume.SetUp failed for volume "${volume}" : secret "${name}" not found`,
    );
  }
  const entries = new Map(
    Object.entries(secret.data ?? {}).map(([key, value]) => [key, Buffer.from(value, "base64")]),
  );
  return pick(entries, items, defaultMode, `secret ${name}`, volume);
}

function configMapFiles(
  store: Store,
  namespace: string,
  name: string,
  items: readonly KeyToPath[] | undefined,
  defaultMode: number | undefined,
  optional: boolean | undefined,
  volume: string,
): Files {
  const configMap = store.get<
    KubeObject & { data?: Record<string, string>; binaryData?: Record<string, string> }
  >("configmaps", namespace, name);
  if (!configMap) {
    if (optional) return new Map();
    throw new MountError(
      `MountVolume.SetUp failed for volume "${volume}" : configmap "${name}" not found`,
    );
  }
  const entries = new Map<string, Buffer>();
  for (const [key, value] of Object.entries(configMap.data ?? {}))
    entries.set(key, Buffer.from(value, "utf8"));
  for (const [key, value] of Object.entries(configMap.binaryData ?? {}))
    entries.set(key, Buffer.from(value, "base64"));
  return pick(entries, items, defaultMode, `configmap ${name}`, volume);
}

function downwardFiles(
  pod: Stored<IPod>,
  items: readonly { path: string; fieldRef?: { fieldPath: string }; mode?: number }[],
  defaultMode: number | undefined,
): Files {
  const files: Files = new Map();
  for (const item of items) {
    const value = item.fieldRef ? fieldRefValue(pod, item.fieldRef.fieldPath) : "";
    files.set(item.path, { data: Buffer.from(value), mode: modeOf(item.mode, defaultMode) });
  }
  return files;
}

/** The value of a downward API fieldRef (metadata.name, metadata.labels['x'], status.podIP...). */
export function fieldRefValue(pod: Stored<IPod>, fieldPath: string): string {
  const meta = pod.metadata ?? {};
  const mapMatch = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
  if (mapMatch) return meta[mapMatch[1] as "labels"]?.[mapMatch[2]!] ?? "";
  switch (fieldPath) {
    case "metadata.name":
      return meta.name ?? "";
    case "metadata.namespace":
      return meta.namespace ?? "";
    case "metadata.uid":
      return meta.uid ?? "";
    case "metadata.labels":
    case "metadata.annotations":
      return Object.entries(meta[fieldPath.slice(9) as "labels"] ?? {})
        .map(([key, value]) => `${key}="${value}"`)
        .join("\n");
    case "spec.nodeName":
      return pod.spec?.nodeName ?? "";
    case "spec.serviceAccountName":
      return pod.spec?.serviceAccountName ?? "";
    case "status.podIP":
      return pod.status?.podIP ?? "";
    case "status.hostIP":
      return pod.status?.hostIP ?? "";
    default:
      return "";
  }
}

/** The atomic writer's layout: `..<stamp>/` holds the files, `..data` points at it, top-level links. */
async function writeAtomic(target: string, files: Files): Promise<void> {
  const stamp = `..${new Date().toISOString().replace(/[-:]/g, "_").replace("T", "_").slice(0, 19)}.${Math.floor(Math.random() * 1e9)}`;
  const dataDir = join(target, stamp);
  await mkdir(dataDir, { recursive: true });
  const top = new Set<string>();
  for (const [path, { data, mode }] of files) {
    const file = join(dataDir, path);
    await mkdir(join(file, ".."), { recursive: true });
    await writeFile(file, data);
    await chmod(file, mode & 0o777);
    top.add(path.split("/")[0]!);
  }
  await symlink(stamp, join(target, "..data"));
  for (const name of top) await symlink(join("..data", name), join(target, name));
}
