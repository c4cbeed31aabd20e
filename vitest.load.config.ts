/**
 * Load and fault tests (test/load/): the real edge under `wrangler dev` and real GPU service
 * processes on loopback, under bursts and with shards killed and restarted. Each is bounded in
 * requests and time; they run one file at a time (the figures they print mean more without a
 * neighbour on the same cores). `npm run test:load`; CI runs them after `npm test`.
 */
import { defineConfig } from "vitest/config";

process.env.WRANGLER_SEND_METRICS ??= "false";
process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= "false";

export default defineConfig({
  test: {
    include: ["test/load/**/*.test.ts"],
    environment: "node",
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 300_000,
  },
});
