/**
 * Local development: when DEV_API_KEY is set (edge/.dev.vars, never in
 * production), the first request of each isolate makes sure the "dev" tenant
 * and that key exist, and prints the key.
 */
import type { Env } from "../env.js";
import { isWellFormedKey, sha256Hex } from "./keys.js";
import { putKey, putTenant, type Tenant } from "./store.js";

export const DEV_TENANT: Tenant = {
  id: "dev",
  name: "local development",
  limits: { requestsPerMinute: 600, tokensPerMinute: 1_000_000, concurrentStreams: 8 },
  models: [],
};

let seeded: Promise<void> | undefined;

export function seedDevTenant(env: Env): Promise<void> {
  const key = env.DEV_API_KEY;
  if (!key) return Promise.resolve();
  seeded ??= (async () => {
    if (!isWellFormedKey(key)) throw new Error("DEV_API_KEY must look like sk-twig- and 43 base64url characters");
    await putTenant(env.DB, DEV_TENANT, true);
    const hash = await sha256Hex(key);
    await putKey(
      env.DB,
      {
        id: `key_dev_${hash.slice(0, 16)}`,
        tenantId: DEV_TENANT.id,
        prefix: key.slice(0, 12),
        createdAt: Date.now(),
        hash,
      },
      true,
    );
    console.log(`TwigServe dev tenant "dev" is ready; its API key is ${key}`);
  })().catch((err) => {
    seeded = undefined;
    throw err;
  });
  return seeded;
}
