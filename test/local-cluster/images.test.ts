// The pushed-image runtime's rules, by Kubernetes' semantics for a container's process.
import { describe, expect, it } from "vitest";
import { containerCapabilities, imageProcess, runcSpec } from "./images.ts";

const OPERATOR = {
  Entrypoint: ["/nodejs/bin/node", "/app/dist/cli.js"],
  Cmd: ["operator"],
  Env: ["PATH=/usr/bin:/bin", "NODE_ENV=production"],
  User: "65532:65532",
  WorkingDir: "/app",
};

describe("imageProcess", () => {
  it("runs ENTRYPOINT with CMD from WORKDIR as USER when the container says nothing", () => {
    expect(imageProcess(OPERATOR, {})).toEqual({
      argv: ["/nodejs/bin/node", "/app/dist/cli.js", "operator"],
      env: { PATH: "/usr/bin:/bin", NODE_ENV: "production" },
      cwd: "/app",
      uid: 65532,
      gid: 65532,
    });
  });

  it("args replace CMD only; command replaces ENTRYPOINT and drops CMD", () => {
    expect(imageProcess(OPERATOR, { args: ["assemble", "--help"] })).toMatchObject({
      argv: ["/nodejs/bin/node", "/app/dist/cli.js", "assemble", "--help"],
    });
    expect(imageProcess(OPERATOR, { command: ["/nodejs/bin/node"] })).toMatchObject({
      argv: ["/nodejs/bin/node"],
    });
    expect(imageProcess(OPERATOR, { command: ["/bin/sh"], args: ["-c", "true"] })).toMatchObject({
      argv: ["/bin/sh", "-c", "true"],
    });
  });

  it("the container's user and workingDir, then the pod's, win over the image's; env over ENV", () => {
    const proc = imageProcess(
      OPERATOR,
      { workingDir: "/tmp", securityContext: { runAsUser: 1001 } },
      { runAsUser: 2000, runAsGroup: 3000 },
      { NODE_ENV: "test", HOME: "/tmp" },
    );
    expect(proc).toMatchObject({
      cwd: "/tmp",
      uid: 1001,
      gid: 3000,
      env: { PATH: "/usr/bin:/bin", NODE_ENV: "test", HOME: "/tmp" },
    });
  });

  it("refuses runAsNonRoot for an image that runs as root, a named user, and no command", () => {
    expect(imageProcess({ Cmd: ["/bin/sh"] }, { securityContext: { runAsNonRoot: true } })).toEqual(
      {
        reason: "CreateContainerConfigError",
        error: "container has runAsNonRoot and image will run as root",
      },
    );
    expect(imageProcess({ Cmd: ["x"], User: "nonroot" }, {})).toMatchObject({
      reason: "CreateContainerConfigError",
    });
    expect(imageProcess({}, {})).toMatchObject({ reason: "CreateContainerError" });
  });
});

describe("containerCapabilities", () => {
  it("is the runtime's default set less drop plus add; drop ALL leaves only what is added", () => {
    const all = containerCapabilities();
    expect(all).toContain("CAP_CHOWN");
    expect(all).toContain("CAP_NET_BIND_SERVICE");
    expect(all).not.toContain("CAP_SYS_ADMIN");
    expect(containerCapabilities({ drop: ["NET_RAW"] })).toEqual(
      all.filter((cap) => cap !== "CAP_NET_RAW"),
    );
    expect(containerCapabilities({ drop: ["ALL"] })).toEqual([]);
    expect(containerCapabilities({ drop: ["ALL"], add: ["NET_BIND_SERVICE"] })).toEqual([
      "CAP_NET_BIND_SERVICE",
    ]);
  });
});

describe("runcSpec", () => {
  it("binds the volumes and the termination message file, sets the capabilities and no_new_privs given, shares only the network", () => {
    const spec = runcSpec({
      process: { argv: ["/x"], env: { A: "1" }, cwd: "/app", uid: 65532, gid: 65532 },
      groups: [65532],
      capabilities: [],
      noNewPrivileges: true,
      root: "/rootfs",
      readonlyRoot: true,
      hostname: "pod",
      mounts: [{ containerPath: "/tmp", hostPath: "/host/tmp", readOnly: false }],
      terminationMessage: { containerPath: "/dev/termination-log", hostPath: "/host/log" },
    }) as {
      process: { user: unknown; capabilities: Record<string, string[]>; noNewPrivileges: boolean };
      root: unknown;
      mounts: { destination: string; source: string; options?: string[] }[];
      linux: { namespaces: { type: string }[] };
    };
    expect(spec.root).toEqual({ path: "/rootfs", readonly: true });
    expect(spec.process.user).toEqual({ uid: 65532, gid: 65532, additionalGids: [65532] });
    expect(Object.values(spec.process.capabilities).flat()).toEqual([]);
    expect(spec.process.noNewPrivileges).toBe(true);
    expect(spec.mounts.slice(-2)).toEqual([
      { destination: "/tmp", type: "bind", source: "/host/tmp", options: ["rbind", "rw"] },
      {
        destination: "/dev/termination-log",
        type: "bind",
        source: "/host/log",
        options: ["rbind", "rw"],
      },
    ]);
    expect(spec.linux.namespaces.map((n) => n.type).sort()).toEqual(["ipc", "mount", "pid", "uts"]);
  });
});
