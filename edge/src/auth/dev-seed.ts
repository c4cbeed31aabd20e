/**
 * Local development: the generated edge/.dev.vars sets DEV_API_KEY (a random
 * key) and ENVIRONMENT=development; the first request of an isolate then makes
 * sure the "dev" tenant and that key exist, and prints the key.
 *
 * The seed refuses to run unless both hold: ENVIRONMENT is "development" (only
 * local configuration sets it; wrangler.jsonc does not), and the D1 binding is
 * wrangler's local emulation (its query results say `served_by:
 * "miniflare.db"`; the hosted D1 names its own servers), so a key that leaks
 * into a deployment's secrets still creates nothing in a production database.
 * A malformed DEV_API_KEY is reported in the log (at startup, and with the
 * first request) and ignored; no request fails because of it.
 */
import type { Env } from "../env.js";
import { isWellFormedKey, sha256Hex } from "./keys.js";
import { putKey, putTenant, type Tenant } from "./store.js";

export const DEV_TENANT: Tenant = {
  id: "dev",
  name: "local development",
  limits: { requestsPerMinute: 600, tokensPerMinute: 1_000_000, concurrentStreams: 8 },
  storage: { bytes: null, files: null },
  models: [],
};

/** What the local D1 emulation reports as the server of every query. */
export const LOCAL_D1_SERVER = "miniflare.db";

/** True when `db` is wrangler's local emulation of D1. */
export async function isLocalD1(db: D1Database): Promise<boolean> {
  const res = await db.prepare("SELECT 1").run();
  return (res.meta as { served_by?: string }).served_by === LOCAL_D1_SERVER;
}

/** Why DEV_API_KEY, when set, will not seed the dev tenant, as far as the variables alone tell (no D1 query). */
export function devKeyRefusal(env: Pick<Env, "DEV_API_KEY" | "ENVIRONMENT">): string | undefined {
  const key = env.DEV_API_KEY;
  if (!key) return undefined;
  if (env.ENVIRONMENT !== "development")
    return `DEV_API_KEY is set but ENVIRONMENT is ${JSON.stringify(env.ENVIRONMENT ?? null)}, not "development": no dev tenant`;
  if (!isWellFormedKey(key))
    return "DEV_API_KEY is malformed (expected sk-twig- and 43 base64url characters): ignored, no dev tenant";
  return undefined;
}

/** Why the dev tenant may not be seeded from `env`, or undefined when it may. */
async function refusal(env: Env): Promise<string | undefined> {
  const refused = devKeyRefusal(env);
  if (refused) return refused;
  if (!(await isLocalD1(env.DB)))
    return "DEV_API_KEY is set but the D1 binding is not the local emulation: no dev tenant";
  return undefined;
}

const seeded = new Map<string, Promise<void>>();

/** Seeds the dev tenant once per isolate and setting (nothing when DEV_API_KEY is unset or refused). */
export function seedDevTenant(env: Env): Promise<void> {
  const key = env.DEV_API_KEY;
  if (!key) return Promise.resolve();
  const memo = `${env.ENVIRONMENT}|${key}`;
  let done = seeded.get(memo);
  if (!done) {
    done = (async () => {
      const refused = await refusal(env);
      if (refused) {
        console.warn(`TwigServe: ${refused}`);
        return;
      }
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
      seeded.delete(memo);
      throw err;
    });
    seeded.set(memo, done);
  }
  return done;
}
