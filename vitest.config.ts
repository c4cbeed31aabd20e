process.env.WRANGLER_SEND_METRICS ??= "false";
process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= "false";

import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "node",
          include: ["test/node/**/*.test.ts", "gpu-service/**/*.test.ts"],
          environment: "node",
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
      {
        plugins: [
          cloudflareTest(async ({ inject }) => ({
            wrangler: { configPath: "./edge/wrangler.jsonc" },
            miniflare: {
              bindings: {
                GPU_SERVICE_URL: inject("gpuServiceUrl"),
                MODEL_ROUTES: inject("modelRoutes"),
                ADMIN_TOKEN: "test-admin-token",
                GPU_SERVICE_TOKEN: "test-gpu-token",
                MAX_IMAGE_BYTES: "1048576",
                MAX_REQUEST_BYTES: "2097152",
                // longer than any test: no watchdog may end what a test waits for (tests of the
                // timeouts set their own through edgeWith)
                GPU_CONNECT_TIMEOUT_MS: "120000",
                GPU_STALL_TIMEOUT_MS: "120000",
                DEV_API_KEY: "",
                ENVIRONMENT: "test",
                TEST_MIGRATIONS: await readD1Migrations("./edge/migrations"),
              },
            },
          })),
        ],
        test: {
          name: "workers",
          include: ["test/workers/**/*.test.ts", "edge/**/*.test.ts"],
          globalSetup: ["test/workers/global-setup.ts"],
          setupFiles: ["test/workers/apply-migrations.ts"],
          testTimeout: 30_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
