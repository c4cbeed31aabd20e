/**
 * `Authorization: Bearer <key>` on the public API: missing, malformed,
 * unknown and revoked keys are 401s in OpenAI's shape; a good key puts its
 * tenant on the context.
 */
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../app-types.js";
import { ApiError } from "../http/errors.js";
import { seedDevTenant } from "./dev-seed.js";
import { isWellFormedKey, sha256Hex } from "./keys.js";
import { tenantByKeyHash } from "./store.js";

export function requireApiKey(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    await seedDevTenant(c.env);
    const header = c.req.header("authorization");
    if (!header)
      throw new ApiError(401, "missing API key: send it as 'Authorization: Bearer <key>'", "missing_api_key");
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match || !isWellFormedKey(match[1]))
      throw new ApiError(401, "malformed API key: expected 'Authorization: Bearer sk-twig-...'", "invalid_api_key");
    const tenant = await tenantByKeyHash(c.env.DB, await sha256Hex(match[1]));
    if (!tenant) throw new ApiError(401, "incorrect or revoked API key", "invalid_api_key");
    c.set("tenant", tenant);
    await next();
  };
}
