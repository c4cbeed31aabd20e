/**
 * The admin API, guarded by `Authorization: Bearer <ADMIN_TOKEN>` (compared in
 * constant time; off while ADMIN_TOKEN is unset):
 *
 *   POST   /admin/tenants                 {name, requests_per_minute?, tokens_per_minute?,
 *                                          concurrent_streams?, storage_bytes?, storage_files?,
 *                                          models?}  -> the tenant
 *   POST   /admin/tenants/:id/keys        -> {id, key, ...}: the key is shown only here
 *   DELETE /admin/keys/:id                -> revokes the key; it fails from the next request on
 *
 * The shard lists under /admin/routes are in gpu/routes-admin.ts.
 */
import { Hono, type MiddlewareHandler } from "hono";
import type { AppEnv } from "../app-types.js";
import { readJson } from "../http/body.js";
import { ApiError, invalidParam } from "../http/errors.js";
import { newApiKey, secretsEqual, sha256Hex } from "./keys.js";
import { getTenant, putKey, putTenant, revokeKey, type Tenant } from "./store.js";

export const DEFAULT_LIMITS = { requestsPerMinute: 60, tokensPerMinute: 100_000, concurrentStreams: 4 };

/** True when the request carries `Authorization: Bearer <ADMIN_TOKEN>` (false while ADMIN_TOKEN is unset). */
export async function hasAdminToken(
  env: { ADMIN_TOKEN?: string },
  authorization: string | undefined,
): Promise<boolean> {
  const token = env.ADMIN_TOKEN;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
  return !!token && !!match && (await secretsEqual(match[1], token));
}

/** Refuses a request without the admin token (404 while ADMIN_TOKEN is unset, 401 otherwise). */
export function requireAdmin(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (!c.env.ADMIN_TOKEN)
      throw new ApiError(404, "the admin API is disabled (ADMIN_TOKEN is not set)", "admin_disabled");
    if (!(await hasAdminToken(c.env, c.req.header("authorization"))))
      throw new ApiError(401, "missing or incorrect admin token", "invalid_admin_token");
    await next();
  };
}

function positiveInt<T>(body: Record<string, unknown>, name: string, fallback: T, max = 1e9): number | T {
  const v = body[name];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > max)
    throw invalidParam(name, `${name} must be an integer between 1 and ${max}`);
  return v;
}

/** Admin bodies are small: a tenant's settings. */
const ADMIN_BODY_BYTES = 64 * 1024;

/** The request's body: a JSON object of at most 64 KiB, or a 400/413. */
export async function jsonObject(req: Request): Promise<Record<string, unknown>> {
  const body = await readJson(req, ADMIN_BODY_BYTES, "the admin API's limit");
  if (!body || typeof body !== "object" || Array.isArray(body))
    throw new ApiError(400, "the body must be a JSON object", "invalid_json");
  return body as Record<string, unknown>;
}

export const adminRoutes = new Hono<AppEnv>();
adminRoutes.use("*", requireAdmin());

adminRoutes.post("/tenants", async (c) => {
  const body = await jsonObject(c.req.raw);
  const name = body.name ?? "";
  if (typeof name !== "string" || name.length > 200) throw invalidParam("name", "name must be a string (at most 200)");
  const models = body.models ?? [];
  if (!Array.isArray(models) || models.some((m) => typeof m !== "string"))
    throw invalidParam("models", "models must be an array of model names ([] allows every model)");
  const tenant: Tenant = {
    id: `tenant_${crypto.randomUUID().replaceAll("-", "")}`,
    name,
    limits: {
      requestsPerMinute: positiveInt(body, "requests_per_minute", DEFAULT_LIMITS.requestsPerMinute),
      tokensPerMinute: positiveInt(body, "tokens_per_minute", DEFAULT_LIMITS.tokensPerMinute),
      concurrentStreams: positiveInt(body, "concurrent_streams", DEFAULT_LIMITS.concurrentStreams),
    },
    storage: {
      bytes: positiveInt(body, "storage_bytes", null, 2 ** 50),
      files: positiveInt(body, "storage_files", null, 1e6),
    },
    models: models as string[],
  };
  await putTenant(c.env.DB, tenant);
  return c.json(tenant, 201);
});

adminRoutes.post("/tenants/:id/keys", async (c) => {
  const tenantId = c.req.param("id");
  if (!(await getTenant(c.env.DB, tenantId))) throw new ApiError(404, `no tenant ${tenantId}`, "tenant_not_found");
  const key = newApiKey();
  const issued = {
    id: `key_${crypto.randomUUID().replaceAll("-", "")}`,
    tenantId,
    prefix: key.slice(0, 12),
    createdAt: Date.now(),
  };
  await putKey(c.env.DB, { ...issued, hash: await sha256Hex(key) });
  return c.json({ ...issued, key }, 201);
});

adminRoutes.delete("/keys/:id", async (c) => {
  const id = c.req.param("id");
  if (!(await revokeKey(c.env.DB, id))) throw new ApiError(404, `no active key ${id}`, "key_not_found");
  return c.json({ id, revoked: true });
});
