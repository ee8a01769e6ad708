import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Integration tests start servers on loopback; forks keep each file's sockets and
    // child processes apart.
    pool: "forks",
  },
});
